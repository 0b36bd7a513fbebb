//! `cancel_future` (PROTOCOL.md 8.3): when a *sampling* future is abandoned (its
//! [`ApiFuture`](crate::core::api_future::ApiFuture) cancelled, the progress watchdog giving
//! up, or — in the bindings — an async wait timing out) and the dynamic flag
//! `sample_cancel_enabled` is on, its request id is queued; a background drain sends up to
//! `sample_cancel_max_batch_size` queued cancels concurrently, each
//! `POST /api/v1/cancel_future {"request_id"}` through the retry loop (HTTP retries 0: our
//! transport never retries by itself) with [`RetryPolicy::cancel_future_timeout`]
//! (30 s). Failures are logged at ERROR and dropped. Both flags are read at each use.
//!
//! [`RetryPolicy::cancel_future_timeout`]: crate::core::config::RetryPolicy::cancel_future_timeout

use crate::core::transport::{Pool, Request};
use crate::core::ClientCore;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// The `cancel_future` body.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CancelFutureRequest {
    /// The abandoned request.
    pub request_id: String,
}

/// The queue of request ids to cancel, drained by [`drain_loop`].
pub struct CancelQueue {
    tx: mpsc::UnboundedSender<String>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for CancelQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        CancelQueue {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl CancelQueue {
    /// Takes the receiving end (once: the drain loop owns it).
    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.rx.lock().unwrap().take()
    }
}

impl ClientCore {
    /// Queues a `cancel_future` for an abandoned sampling request when the dynamic flag
    /// `sample_cancel_enabled` is on (read now); otherwise does nothing.
    pub fn enqueue_cancel(&self, request_id: &str) {
        if !self.dynamic_config.read().unwrap().sample_cancel_enabled {
            return;
        }
        tracing::debug!("queueing cancel_future for abandoned sampling request {request_id}");
        let _ = self.cancels.tx.send(request_id.to_string());
    }
}

/// Arms a cancel for a sampling request while its result is being waited for: dropped
/// before [`disarm`](CancelOnDrop::disarm) (the waiting operation was dropped, i.e.
/// cancelled or given up), it queues the request's `cancel_future`.
pub struct CancelOnDrop {
    core: Weak<ClientCore>,
    request_id: Option<String>,
}

impl CancelOnDrop {
    /// Arms a cancel of `request_id`.
    pub fn new(core: &Arc<ClientCore>, request_id: &str) -> Self {
        CancelOnDrop {
            core: Arc::downgrade(core),
            request_id: Some(request_id.to_string()),
        }
    }

    /// The wait finished (with a result or an error): nothing to cancel.
    pub fn disarm(mut self) {
        self.request_id = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(id), Some(core)) = (self.request_id.take(), self.core.upgrade()) {
            core.enqueue_cancel(&id);
        }
    }
}

/// Sends queued cancels until the client closes or is dropped: waits for one id, takes up
/// to `sample_cancel_max_batch_size` (read per batch) more that are already queued, and
/// sends them concurrently.
pub(crate) async fn drain_loop(core: Weak<ClientCore>) {
    let (mut rx, mut shutdown) = match core.upgrade() {
        Some(c) => match c.cancels.take_receiver() {
            Some(rx) => (rx, c.shutdown.subscribe()),
            None => return,
        },
        None => return,
    };
    loop {
        let first = tokio::select! {
            id = rx.recv() => match id { Some(id) => id, None => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Some(core) = core.upgrade() else { return };
        let max = core
            .dynamic_config
            .read()
            .unwrap()
            .sample_cancel_max_batch_size
            .max(1) as usize;
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        let mut sends = tokio::task::JoinSet::new();
        for id in batch {
            sends.spawn(send_one(core.clone(), id));
        }
        drop(core);
        while sends.join_next().await.is_some() {}
    }
}

async fn send_one(core: Arc<ClientCore>, request_id: String) {
    let policy = &core.config.retry;
    let req = Request::post_json(
        "/api/v1/cancel_future",
        &CancelFutureRequest {
            request_id: request_id.clone(),
        },
        Pool::Retrieve,
        policy.cancel_future_timeout,
    );
    // Through the holder loop (section 4: HTTP-layer retries 0, holder retry yes), whose
    // window bounds it, so a dead server does not keep a cancel alive for hours. Not recorded
    // as progress: a cancel is not work done.
    let ctx = crate::core::retry::SendContext {
        transport: &core.transport,
        policy,
        progress: &core.progress,
        events: &core.events,
        billing: &core.billing,
        attempts: None,
        telemetry: core.telemetry.get().map(|t| &**t),
    };
    let bounded = tokio::time::timeout(
        policy.holder_window + policy.cancel_future_timeout,
        crate::core::retry::send_with_retry(&ctx, &req, None),
    )
    .await;
    match bounded {
        Ok(Ok(_)) => tracing::debug!("cancelled sampling request {request_id}"),
        Ok(Err(e)) => tracing::error!("Failed to cancel sampling request {request_id}: {e}"),
        Err(_) => tracing::error!(
            "Failed to cancel sampling request {request_id}: no answer within {:?}",
            policy.holder_window + policy.cancel_future_timeout
        ),
    }
}
