//! The batched completion poller of PROTOCOL.md 8.2 (`POST /api/v1/retrieve_futures`), used
//! by sampling when the startup flag `sample_use_retrieve_futures` is on.
//!
//! One [`FuturesPoller`] per (sampling session, clone id), started lazily by the first sample
//! and kept in the [`ClientCore`]'s registry. A sample future first waits for the poller to
//! report its request complete ([`FuturesPoller::wait_for`]), then fetches the result with
//! `retrieve_future` (8.2.4), then reports the id as retrieved
//! ([`FuturesPoller::mark_retrieved`]). The loop long-polls (timeout omitted) while someone
//! waits and sends ack-only polls (`timeout: 0`) while only acknowledgements are pending;
//! otherwise it idles. Failure rules (8.2.3): 402 inside the billing window → pause; a
//! retryable error (transport, 408, 409, 429, 5xx) → [`RetryPolicy::futures_poller_retry_delay`]
//! (1 s); 400 → up to 3 consecutive retries after that delay; anything else is terminal and
//! fails every current and future waiter (a completion already recorded is still returned).
//! On close the loop sends one final best-effort ack-only poll when anything is
//! unacknowledged (8.2.5).
//!
//! [`RetryPolicy::futures_poller_retry_delay`]: crate::core::config::RetryPolicy::futures_poller_retry_delay

use crate::core::config::RetryPolicy;
use crate::core::error::{Error, Result};
use crate::core::polling::RequestType;
use crate::core::polling::{poll_until_done, poll_with, Payload, PollStart, QueueObserver};
use crate::core::transport::{Pool, Request};
use crate::core::ClientCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// The size of a clone's `seq_id` block (12.2): `cloned_sampler_id = seq_id / 1e9`.
pub const CLONE_SEQ_BLOCK: i64 = 1_000_000_000;

/// `target` of a `retrieve_futures` request (8.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuturesTarget {
    /// Always `sampling_session`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The sampling session.
    pub sampling_session_id: String,
    /// 0 for the original client; `seq_id / 1_000_000_000` for clones.
    #[serde(default)]
    pub cloned_sampler_id: i64,
}

/// `POST /api/v1/retrieve_futures` body (8.2.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuturesRetrieveRequest {
    /// Whose completions.
    pub target: FuturesTarget,
    /// The cursor of the previous answer (0: from the beginning); events at or before it
    /// count as seen.
    #[serde(default)]
    pub prev_cursor: i64,
    /// Seconds to hold the poll; absent = the server's default long poll; 0 = ack-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Requests of this target whose results were fully read.
    #[serde(default)]
    pub retrieved_request_ids: Vec<String>,
}

/// One completion event (8.2.2), discriminated by `state` (`finished` or `failed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FutureCompletion {
    /// `finished` or `failed`.
    pub state: String,
    /// The completed request.
    pub request_id: String,
    /// Uncompressed payload size of a finished request, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload_uncompressed_size: Option<u64>,
}

/// `retrieve_futures` answer (8.2.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuturesRetrieveResponse {
    /// New completions.
    #[serde(default)]
    pub completions: Vec<FutureCompletion>,
    /// Pass back as `prev_cursor`.
    pub cursor: i64,
}

#[derive(Default)]
struct PollerState {
    cursor: i64,
    acked_cursor: i64,
    waiters: HashMap<String, oneshot::Sender<()>>,
    completions: HashMap<String, FutureCompletion>,
    retrieved: BTreeSet<String>,
    failure: Option<String>,
}

impl PollerState {
    fn idle(&self) -> bool {
        self.waiters.is_empty() && self.retrieved.is_empty() && self.cursor <= self.acked_cursor
    }

    fn unacked(&self) -> bool {
        !self.retrieved.is_empty() || self.cursor > self.acked_cursor
    }
}

/// The completion poller of one (sampling session, clone id). See the module docs.
pub struct FuturesPoller {
    sampling_session_id: String,
    cloned_sampler_id: i64,
    state: Mutex<PollerState>,
    work: Notify,
    /// Polls sent (for tests and introspection).
    polls: AtomicU32,
}

impl FuturesPoller {
    /// The sampling session polled.
    pub fn sampling_session_id(&self) -> &str {
        &self.sampling_session_id
    }

    /// The clone id polled.
    pub fn cloned_sampler_id(&self) -> i64 {
        self.cloned_sampler_id
    }

    /// `retrieve_futures` polls sent so far.
    pub fn polls(&self) -> u32 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `request_id` is reported complete and returns (consumes) its completion.
    /// Fails with the poller's terminal failure, unless the completion was already recorded.
    /// Dropping the wait unregisters it.
    pub async fn wait_for(&self, request_id: &str) -> Result<FutureCompletion> {
        let rx = {
            let mut st = self.state.lock().unwrap();
            if let Some(c) = st.completions.remove(request_id) {
                return Ok(c);
            }
            if let Some(f) = &st.failure {
                return Err(Error::fatal(f.clone()).with_request_id(request_id));
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(request_id.to_string(), tx);
            rx
        };
        self.work.notify_one();
        struct Unregister<'a>(&'a FuturesPoller, &'a str);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap().waiters.remove(self.1);
            }
        }
        let _unregister = Unregister(self, request_id);
        let _ = rx.await;
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.completions.remove(request_id) {
            return Ok(c);
        }
        let failure = st
            .failure
            .clone()
            .unwrap_or_else(|| "the retrieve_futures poller stopped".into());
        Err(Error::fatal(failure).with_request_id(request_id))
    }

    /// Reports `request_id`'s result as read on the next poll.
    pub fn mark_retrieved(&self, request_id: &str) {
        self.state
            .lock()
            .unwrap()
            .retrieved
            .insert(request_id.to_string());
        self.work.notify_one();
    }

    fn fail(&self, message: String) {
        let mut st = self.state.lock().unwrap();
        st.failure = Some(message);
        // Dropping the senders wakes every waiter, which then reads the failure.
        st.waiters.clear();
    }
}

impl ClientCore {
    /// Whether sampling uses the batched poller (`sample_use_retrieve_futures`, 8.2). While
    /// it is on, the sampling retry handler's concurrency limit is lifted (12.6).
    pub fn futures_poller_enabled(&self) -> bool {
        self.server_config
            .read()
            .unwrap()
            .sample_use_retrieve_futures
    }

    /// The poller of (`sampling_session_id`, `cloned_sampler_id`), started on first use.
    pub fn futures_poller(
        self: &Arc<Self>,
        sampling_session_id: &str,
        cloned_sampler_id: i64,
    ) -> Arc<FuturesPoller> {
        let key = (sampling_session_id.to_string(), cloned_sampler_id);
        let mut pollers = self.futures_pollers.lock().unwrap();
        if let Some(p) = pollers.get(&key) {
            return p.clone();
        }
        let poller = Arc::new(FuturesPoller {
            sampling_session_id: sampling_session_id.to_string(),
            cloned_sampler_id,
            state: Mutex::new(PollerState::default()),
            work: Notify::new(),
            polls: AtomicU32::new(0),
        });
        pollers.insert(key, poller.clone());
        self.runtime
            .spawn(poll_loop(Arc::downgrade(self), poller.clone()));
        poller
    }
}

/// Fetches the result of sample `request_id` (submitted by the client whose clone id is
/// `cloned_sampler_id`, 12.2): through the batched poller of (sampling session, clone id)
/// when it is on (wait for the completion, then one `retrieve_future` loop starting as 8.2.4
/// says, then report the id retrieved), else with the plain polling loop.
#[allow(clippy::too_many_arguments)]
pub async fn retrieve_sample(
    core: &Arc<ClientCore>,
    policy: &RetryPolicy,
    sampling_session_id: &str,
    cloned_sampler_id: i64,
    request_id: &str,
    submit_roundtrip: Duration,
    observe: QueueObserver<'_>,
    polls: &AtomicU32,
) -> Result<Payload> {
    // The poll loops are boxed: their state is large, and inline it would size every
    // pending sample's task for them while it only waits for the poller's completion.
    if !core.futures_poller_enabled() {
        return Box::pin(poll_until_done(
            core,
            policy,
            request_id,
            RequestType::Sample,
            submit_roundtrip,
            observe,
            polls,
        ))
        .await;
    }
    let poller = core.futures_poller(sampling_session_id, cloned_sampler_id);
    let completion = poller.wait_for(request_id).await?;
    let start = match completion.response_payload_uncompressed_size {
        Some(n) if n > 0 && completion.state == "finished" => PollStart {
            allow_metadata_only: false,
            reserve_bytes: n,
        },
        _ => PollStart::default(),
    };
    let result = Box::pin(poll_with(
        core,
        policy,
        request_id,
        RequestType::Sample,
        submit_roundtrip,
        observe,
        polls,
        start,
    ))
    .await;
    // A result, or a failure read from the server, is final: its payload may go.
    match &result {
        Ok(_) => poller.mark_retrieved(request_id),
        Err(e) if e.category.is_some() => poller.mark_retrieved(request_id),
        Err(_) => {}
    }
    result
}

enum Sent {
    Ok(FuturesRetrieveResponse),
    Err(Error),
    Closed,
}

/// The loop of one poller (8.2.3). Ends on a terminal failure, on close (after a final ack),
/// or when the client is gone.
async fn poll_loop(core: Weak<ClientCore>, poller: Arc<FuturesPoller>) {
    let Some(mut shutdown) = core.upgrade().map(|c| c.shutdown.subscribe()) else {
        return;
    };
    let target = FuturesTarget {
        kind: "sampling_session".into(),
        sampling_session_id: poller.sampling_session_id.clone(),
        cloned_sampler_id: poller.cloned_sampler_id,
    };
    let mut bad_request_retries = 0;
    let mut closing = false;
    loop {
        if !closing {
            closing = *shutdown.borrow();
        }
        // Idle while nobody waits and nothing is left to report.
        let idle = poller.state.lock().unwrap().idle();
        if idle {
            if closing {
                return;
            }
            tokio::select! {
                _ = poller.work.notified() => {}
                _ = shutdown.wait_for(|s| *s) => closing = true,
            }
            continue;
        }
        let (body, ack_only, retrieved) = {
            let st = poller.state.lock().unwrap();
            if closing && !st.unacked() {
                return;
            }
            let ack_only = closing || st.waiters.is_empty();
            let retrieved: Vec<String> = st.retrieved.iter().cloned().collect();
            (
                FuturesRetrieveRequest {
                    target: target.clone(),
                    prev_cursor: st.cursor,
                    timeout: ack_only.then_some(0.0),
                    retrieved_request_ids: retrieved.clone(),
                },
                ack_only,
                retrieved,
            )
        };
        let Some(c) = core.upgrade() else { return };
        let policy = c.config.retry.clone();
        let timeout = if ack_only {
            policy.futures_ack_timeout
        } else {
            c.config.timeouts.retrieve_future
        };
        let req = Request::post_json("/api/v1/retrieve_futures", &body, Pool::Retrieve, timeout);
        poller
            .polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let send = async {
            match c.transport.send(&req, 0).await {
                Ok(r) if r.is_success() => {
                    match r.json::<FuturesRetrieveResponse>("retrieve_futures") {
                        Ok(v) => Sent::Ok(v),
                        Err(e) => Sent::Err(e),
                    }
                }
                Ok(r) => Sent::Err(r.to_error()),
                Err(e) => Sent::Err(e),
            }
        };
        let sent = if closing {
            // The final ack: one best-effort shot.
            send.await
        } else {
            tokio::select! {
                s = send => s,
                // Closing during a long poll: drop it and send the final ack instead.
                _ = shutdown.wait_for(|s| *s) => Sent::Closed,
            }
        };
        drop(c);
        let error = match sent {
            Sent::Closed => {
                closing = true;
                continue;
            }
            Sent::Ok(resp) => {
                bad_request_retries = 0;
                let mut st = poller.state.lock().unwrap();
                for id in &retrieved {
                    st.retrieved.remove(id);
                }
                st.acked_cursor = st.acked_cursor.max(body.prev_cursor);
                st.cursor = resp.cursor;
                for completion in resp.completions {
                    let id = completion.request_id.clone();
                    st.completions.insert(id.clone(), completion);
                    if let Some(tx) = st.waiters.remove(&id) {
                        let _ = tx.send(());
                    }
                }
                if closing {
                    return;
                }
                continue;
            }
            Sent::Err(e) => e,
        };
        if closing {
            return;
        }
        let status = error.http_status;
        if status == Some(402) {
            let pause = core.upgrade().and_then(|c| {
                matches!(
                    c.billing.on_402(&error),
                    crate::core::billing::BillingVerdict::Pause
                )
                .then(|| c.billing.pause_step())
            });
            if let Some(step) = pause {
                sleep_or_close(&mut shutdown, step, &mut closing).await;
                continue;
            }
        }
        let retryable = match status {
            None => error.is_retryable(),
            Some(s) => matches!(s, 408 | 409 | 429 | 500..=599),
        };
        if retryable {
            sleep_or_close(
                &mut shutdown,
                policy.futures_poller_retry_delay,
                &mut closing,
            )
            .await;
            continue;
        }
        if status == Some(400) && bad_request_retries < 3 {
            bad_request_retries += 1;
            sleep_or_close(
                &mut shutdown,
                policy.futures_poller_retry_delay,
                &mut closing,
            )
            .await;
            continue;
        }
        let message = format!(
            "retrieve_futures polling failed for sampling session {} (clone {}): {error}",
            poller.sampling_session_id, poller.cloned_sampler_id
        );
        tracing::error!("{message}");
        poller.fail(message);
        return;
    }
}

async fn sleep_or_close(
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    d: Duration,
    closing: &mut bool,
) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.wait_for(|s| *s) => *closing = true,
    }
}
