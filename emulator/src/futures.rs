//! The future store: every future endpoint registers a request id here at once; the work
//! completes it later; `retrieve_future` long-polls it.

use crate::model::{DatumOutput, SampledSequence};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::core::types::{QueueState, RequestErrorCategory};
use tokio::sync::watch;

/// The stored result of a finished request.
#[derive(Debug)]
pub enum Outcome {
    /// A JSON result object (create_model, optim_step, save/load weights).
    Json(Value),
    /// Result of forward / forward_backward.
    ForwardBackward {
        /// Per-datum outputs.
        outputs: Vec<DatumOutput>,
        /// Metrics keyed `name:reduction`.
        metrics: Vec<(String, f64)>,
    },
    /// Result of asample.
    Sample(SampleOutcome),
    /// The request failed (`{"error", "category"}`).
    Failed {
        /// Message.
        error: String,
        /// Fault category.
        category: RequestErrorCategory,
    },
}

impl Outcome {
    /// A user-category failure.
    pub fn user_error(msg: impl Into<String>) -> Self {
        Outcome::Failed {
            error: msg.into(),
            category: RequestErrorCategory::User,
        }
    }
}

/// The payload of a finished sample.
#[derive(Debug)]
pub struct SampleOutcome {
    /// One per requested sample.
    pub sequences: Vec<SampledSequence>,
    /// Logprobs of the requested `target_prompt_logprobs` ids (float32, the request's
    /// layout, 0.0 in -1 cells).
    pub target_prompt_logprobs: Option<tinkex::core::types::TensorData>,
    /// `prompt_alt_tokens_k` draws: `(k, tokens, logprobs)`, row-major `[len(prompt) - 1, k]`.
    pub prompt_alt_tokens: Option<(usize, Vec<i64>, Vec<f32>)>,
    /// Per-sequence top-k lists (when `topk_sample_logprobs > 0`).
    pub topk_sampled: Option<Vec<Vec<Vec<(i64, f32)>>>>,
    /// Prompt logprobs when requested.
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// Top-k prompt logprobs when requested (k, rows).
    pub topk_prompt: Option<(usize, Vec<Vec<(i64, f32)>>)>,
    /// Top-k of sampled tokens: k.
    pub topk_sample_k: usize,
}

/// One registered future.
pub struct FutureEntry {
    /// The request kind, e.g. `ForwardBackward` (for logs and introspection).
    pub kind: &'static str,
    outcome: watch::Sender<Option<Arc<Outcome>>>,
    /// Whether a metadata-only answer was already given for this future.
    pub metadata_announced: Mutex<bool>,
    hidden: Mutex<Option<Arc<Outcome>>>,
    /// Set by `cancel_future`: the work's own outcome is discarded.
    cancelled: std::sync::atomic::AtomicBool,
}

impl FutureEntry {
    /// The outcome, if finished (including one stored but not yet revealed).
    pub fn outcome(&self) -> Option<Arc<Outcome>> {
        self.outcome
            .borrow()
            .clone()
            .or_else(|| self.hidden.lock().unwrap().clone())
    }
}

/// All futures of the emulator, by request id.
#[derive(Default)]
pub struct FutureStore {
    entries: Mutex<HashMap<String, Arc<FutureEntry>>>,
    queue_state: Mutex<Option<(QueueState, Option<String>)>>,
    /// Completion events of sampling requests, per (sampling session, clone id), for
    /// `retrieve_futures` (PROTOCOL.md 8.2).
    completion_logs: Mutex<HashMap<(String, i64), Arc<CompletionLog>>>,
    /// `cancel_future` requests that cancelled a pending future.
    cancelled: std::sync::atomic::AtomicU64,
    /// The newest `retrieve_futures` request bodies (for tests of the poller's cursor, acks
    /// and long/ack-only polls; `/_emulator/retrieve_futures`).
    pub poller_requests: Mutex<std::collections::VecDeque<Value>>,
}

/// `retrieve_futures` request bodies kept for introspection.
pub const MAX_POLLER_REQUESTS: usize = 10_000;

/// Completion events kept per target when no client acknowledges them.
pub const MAX_COMPLETION_EVENTS: usize = 10_000;

/// The completion events of one (sampling session, clone id), numbered from 1 (the cursor).
#[derive(Default)]
pub struct CompletionLog {
    inner: Mutex<LogInner>,
    /// Whether a client ever polled this target: only then is the payload size of a
    /// finished sample computed (an extra encoding per sample otherwise wasted).
    pub polled: std::sync::atomic::AtomicBool,
    /// Bumped on every new event; long polls wait on it.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct LogInner {
    last: i64,
    events: std::collections::VecDeque<(i64, Value)>,
}

impl CompletionLog {
    fn push(&self, event: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.last += 1;
        let n = inner.last;
        inner.events.push_back((n, event));
        while inner.events.len() > MAX_COMPLETION_EVENTS {
            inner.events.pop_front();
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Drops the events at or before `cursor`; returns the later ones and the new cursor.
    pub fn read_after(&self, cursor: i64) -> (Vec<Value>, i64) {
        let mut inner = self.inner.lock().unwrap();
        while inner.events.front().is_some_and(|(n, _)| *n <= cursor) {
            inner.events.pop_front();
        }
        let events: Vec<Value> = inner.events.iter().map(|(_, e)| e.clone()).collect();
        let next = inner.events.back().map(|(n, _)| *n).unwrap_or(cursor);
        (events, next.max(cursor))
    }

    /// Waits up to `hold` for an event after `cursor` (a long poll); returns what
    /// [`read_after`](Self::read_after) returns at the end.
    pub async fn wait_after(&self, cursor: i64, hold: Duration) -> (Vec<Value>, i64) {
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (events, next) = self.read_after(cursor);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return (events, next);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.read_after(cursor);
            }
        }
    }
}

/// The sampling session and clone id of a sample request id (`{sampler}:{seq}`).
pub fn sample_target(request_id: &str) -> Option<(String, i64)> {
    let (sampler, seq) = request_id.rsplit_once(':')?;
    let seq: i64 = seq.parse().ok()?;
    Some((sampler.to_string(), seq.max(0) / 1_000_000_000))
}

/// What `cancel_future` found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// No such future.
    Unknown,
    /// It was still pending: now cancelled (later polls read a failed result).
    Cancelled,
    /// It had already finished: nothing to do.
    AlreadyDone,
}

/// What a long poll observed.
pub enum PollResult {
    /// No future with that id.
    Unknown,
    /// Still running after the hold.
    Pending,
    /// Finished.
    Done(Arc<FutureEntry>, Arc<Outcome>),
}

impl FutureStore {
    /// Registers a pending future.
    pub fn register(&self, request_id: &str, kind: &'static str) -> Arc<FutureEntry> {
        let (tx, _rx) = watch::channel(None);
        let entry = Arc::new(FutureEntry {
            kind,
            outcome: tx,
            metadata_announced: Mutex::new(false),
            hidden: Mutex::new(None),
            cancelled: Default::default(),
        });
        self.entries
            .lock()
            .unwrap()
            .insert(request_id.to_string(), entry.clone());
        entry
    }

    /// Registers a future that is already finished.
    pub fn register_done(&self, request_id: &str, kind: &'static str, outcome: Outcome) {
        self.register(request_id, kind);
        self.complete(request_id, outcome);
    }

    /// Stores the outcome of a request and wakes its pollers. Results stay retrievable. A
    /// cancelled future keeps its cancellation. A sample's completion is also recorded as a
    /// `retrieve_futures` event of its sampling session.
    pub fn complete(&self, request_id: &str, outcome: Outcome) {
        if let Some(entry) = self.get(request_id) {
            if entry.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let outcome = Arc::new(outcome);
            if entry.kind == "Sample" {
                self.record_completion(request_id, &outcome);
            }
            entry.outcome.send_replace(Some(outcome));
        }
    }

    fn record_completion(&self, request_id: &str, outcome: &Outcome) {
        let Some(target) = sample_target(request_id) else {
            return;
        };
        let log = self.completion_log(&target);
        let event = match outcome {
            Outcome::Failed { .. } => {
                serde_json::json!({"state": "failed", "request_id": request_id})
            }
            Outcome::Sample(s) if log.polled.load(std::sync::atomic::Ordering::Relaxed) => {
                serde_json::json!({
                    "state": "finished",
                    "request_id": request_id,
                    "response_payload_uncompressed_size": crate::encode::sample_proto(s).len(),
                })
            }
            _ => serde_json::json!({"state": "finished", "request_id": request_id,
                                    "response_payload_uncompressed_size": null}),
        };
        log.push(event);
    }

    /// The completion log of a (sampling session, clone id), created on first use.
    pub fn completion_log(&self, target: &(String, i64)) -> Arc<CompletionLog> {
        self.completion_logs
            .lock()
            .unwrap()
            .entry(target.clone())
            .or_default()
            .clone()
    }

    /// `cancel_future`: a pending future finishes as failed (`category: user`, "cancelled")
    /// and the work's own outcome, when it comes, is discarded.
    pub fn cancel(&self, request_id: &str) -> CancelResult {
        let Some(entry) = self.get(request_id) else {
            return CancelResult::Unknown;
        };
        if entry.outcome().is_some() {
            return CancelResult::AlreadyDone;
        }
        let outcome = Arc::new(Outcome::Failed {
            error: format!("request {request_id} was cancelled by the client (cancel_future)"),
            category: RequestErrorCategory::User,
        });
        if entry.kind == "Sample" {
            self.record_completion(request_id, &outcome);
        }
        entry
            .cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        entry.outcome.send_replace(Some(outcome));
        self.cancelled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CancelResult::Cancelled
    }

    /// Keeps a `retrieve_futures` request body for introspection.
    pub fn note_poller_request(&self, body: Value) {
        let mut log = self.poller_requests.lock().unwrap();
        log.push_back(body);
        while log.len() > MAX_POLLER_REQUESTS {
            log.pop_front();
        }
    }

    /// How many pending futures `cancel_future` cancelled.
    pub fn cancelled_count(&self) -> u64 {
        self.cancelled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a future was cancelled by `cancel_future`.
    pub fn is_cancelled(&self, request_id: &str) -> bool {
        self.get(request_id)
            .is_some_and(|e| e.cancelled.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Deletes a finished future (its payload was retrieved, 8.2.1): later polls answer 410.
    /// Pending futures are kept.
    pub fn forget(&self, request_id: &str) -> bool {
        let mut entries = self.entries.lock().unwrap();
        if entries
            .get(request_id)
            .is_some_and(|e| e.outcome().is_some())
        {
            entries.remove(request_id);
            return true;
        }
        false
    }

    /// Stores an outcome without waking pollers yet (see [`reveal`](Self::reveal)); used to
    /// persist a result before any client can read it.
    pub fn complete_hidden(&self, request_id: &str, outcome: Outcome) {
        if let Some(entry) = self.get(request_id) {
            *entry.hidden.lock().unwrap() = Some(Arc::new(outcome));
        }
    }

    /// Publishes an outcome stored with [`complete_hidden`](Self::complete_hidden).
    pub fn reveal(&self, request_id: &str) {
        if let Some(entry) = self.get(request_id) {
            if let Some(o) = entry.hidden.lock().unwrap().take() {
                entry.outcome.send_replace(Some(o));
            }
        }
    }

    /// Looks a future up.
    pub fn get(&self, request_id: &str) -> Option<Arc<FutureEntry>> {
        self.entries.lock().unwrap().get(request_id).cloned()
    }

    /// Number of registered futures and how many are still pending.
    pub fn counts(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap();
        let pending = entries.values().filter(|e| e.outcome().is_none()).count();
        (entries.len(), pending)
    }

    /// Waits up to `hold` for the future to finish.
    pub async fn poll(&self, request_id: &str, hold: Duration) -> PollResult {
        let Some(entry) = self.get(request_id) else {
            return PollResult::Unknown;
        };
        let mut rx = entry.outcome.subscribe();
        let waited = tokio::time::timeout(hold, async {
            rx.wait_for(|o| o.is_some())
                .await
                .ok()
                .and_then(|o| o.clone())
        })
        .await;
        match waited {
            Ok(Some(outcome)) => PollResult::Done(entry, outcome),
            _ => PollResult::Pending,
        }
    }

    /// The queue state reported in try-again answers (default `active`).
    pub fn queue_state(&self) -> (QueueState, Option<String>) {
        self.queue_state
            .lock()
            .unwrap()
            .clone()
            .unwrap_or((QueueState::Active, None))
    }

    /// Forces the queue state reported by try-again answers (`None` restores `active`).
    pub fn set_queue_state(&self, state: Option<(QueueState, Option<String>)>) {
        *self.queue_state.lock().unwrap() = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn poll_returns_pending_after_hold_and_done_as_soon_as_ready() {
        let store = Arc::new(FutureStore::default());
        store.register("r1", "OptimStep");
        let t = Instant::now();
        assert!(matches!(
            store.poll("r1", Duration::from_millis(50)).await,
            PollResult::Pending
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));

        let s2 = store.clone();
        let waiter = tokio::spawn(async move { s2.poll("r1", Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        store.complete("r1", Outcome::Json(serde_json::json!({"metrics": {}})));
        let res = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("poll wakes on completion")
            .unwrap();
        assert!(matches!(res, PollResult::Done(..)));
        // Still retrievable afterwards.
        assert!(matches!(
            store.poll("r1", Duration::ZERO).await,
            PollResult::Done(..)
        ));
        assert!(matches!(
            store.poll("nope", Duration::ZERO).await,
            PollResult::Unknown
        ));
    }
}
