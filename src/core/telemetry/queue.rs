//! The bounded in-memory event queue shared by a [`Telemetry`](super::Telemetry) handle
//! and its background flusher: a non-blocking `push` (drops and counts when full), batched
//! sequential sends capped at `http_timeout`, and the overflow report.

use super::{
    platform, process_uuid, redact_secrets, TelemetryBatch, TelemetryConfig, TelemetrySink,
};
use crate::core::types::SDK_VERSION;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

/// The events waiting to be sent.
pub(super) struct Queue {
    pub(super) events: VecDeque<Value>,
    /// Events accepted so far (the drain target).
    pub(super) enqueued: u64,
    /// `event_session_index` of the next accepted event.
    pub(super) next_index: u64,
}

/// State shared by the [`Telemetry`] handle and its flusher task.
pub(super) struct Shared {
    pub(super) config: TelemetryConfig,
    pub(super) sink: Arc<dyn TelemetrySink>,
    pub(super) session_id: String,
    pub(super) queue: Mutex<Queue>,
    /// Wakes the flusher (batch full, exception, flush_now, drain).
    pub(super) wake: Notify,
    /// Set when the flusher is stopped (drained, dropped, disabled): nothing is queued after.
    pub(super) closed: AtomicBool,
    pub(super) dropped: AtomicU64,
    /// The largest dropped count passed to `on_overflow`.
    pub(super) reported_dropped: AtomicU64,
    pub(super) sent: AtomicU64,
    /// Events taken from the queue and sent or dropped, in queue order.
    pub(super) completed: watch::Sender<u64>,
    pub(super) on_overflow: Box<dyn Fn(u64) + Send + Sync>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn max_batch(&self) -> usize {
        self.config.max_batch.max(1)
    }

    /// Queues one event, assigning its `event_session_index`; never awaits.
    pub(super) fn push(&self, mut event: Value) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let (accepted, batch_full) = {
            let mut q = self.lock();
            if q.events.len() >= self.config.max_queue {
                (false, false)
            } else {
                if let Value::Object(m) = &mut event {
                    m.insert("event_session_index".into(), Value::from(q.next_index));
                }
                q.next_index += 1;
                q.enqueued += 1;
                q.events.push_back(event);
                (true, q.events.len() % self.max_batch() == 0)
            }
        };
        if batch_full {
            self.wake.notify_one();
        }
        if !accepted && self.dropped.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::warn!(
                max_queue = self.config.max_queue,
                "Telemetry queue full; dropping events (further drops are counted, not logged)"
            );
            if self.reported_dropped.fetch_max(1, Ordering::AcqRel) == 0 {
                (self.on_overflow)(1);
            }
        }
    }

    /// Calls `on_overflow` if events were dropped since the last call.
    pub(super) fn report_overflow(&self) {
        let dropped = self.dropped.load(Ordering::Acquire);
        if dropped > 0 && self.reported_dropped.fetch_max(dropped, Ordering::AcqRel) < dropped {
            (self.on_overflow)(dropped);
        }
    }

    /// Sends everything queued, in order, in batches of at most `max_batch`, one at a time.
    pub(super) async fn flush_all(&self) {
        loop {
            let events: Vec<Value> = {
                let mut q = self.lock();
                let n = q.events.len().min(self.max_batch());
                q.events.drain(..n).collect()
            };
            if events.is_empty() {
                return;
            }
            let n = events.len() as u64;
            let batch = TelemetryBatch {
                events,
                platform: platform().to_string(),
                sdk_version: SDK_VERSION.to_string(),
                session_id: self.session_id.clone(),
                process_uuid: process_uuid().to_string(),
            };
            let timeout = self.config.http_timeout;
            match tokio::time::timeout(timeout, self.sink.send(batch, timeout)).await {
                Ok(Ok(())) => {
                    self.sent.fetch_add(n, Ordering::AcqRel);
                }
                Ok(Err(e)) => tracing::warn!(
                    events = n,
                    error = %redact_secrets(&e.to_string()),
                    "Failed to send telemetry batch; dropping it"
                ),
                Err(_) => tracing::warn!(
                    events = n,
                    timeout_secs = timeout.as_secs_f64(),
                    "Telemetry batch send timed out; dropping it"
                ),
            }
            self.completed.send_modify(|c| *c += n);
        }
    }
}

/// The background flusher: wakes every `flush_interval` or when notified. Ends when aborted
/// (drain, drop) or when `closed` is set.
pub(super) async fn run_flusher(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.flush_interval) => {}
        }
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        shared.flush_all().await;
        shared.report_overflow();
    }
}
