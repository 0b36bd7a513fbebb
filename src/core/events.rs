//! The one event mechanism of the client: every observable condition (queue state,
//! progress, retries, heartbeat trouble, session expiry, telemetry overflow) is an [`Event`]
//! delivered to every subscriber and to `tracing`.

use crate::core::types::QueueState;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Something that happened in a client.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A pending request's queue state changed.
    QueueState {
        /// The request.
        request_id: String,
        /// Whose request: the sampling session id or the training model id (for model
        /// creation, the base model).
        client_id: String,
        /// Request kind, e.g. `ForwardBackward`.
        request_type: String,
        /// The new state.
        state: QueueState,
        /// Server-given or default reason.
        reason: Option<String>,
    },
    /// Periodic report for a pending operation.
    Progress {
        /// The request, once known.
        request_id: Option<String>,
        /// Request kind.
        request_type: String,
        /// Seconds since the operation started.
        elapsed_secs: f64,
        /// Submission attempts so far.
        attempts: u32,
        /// retrieve_future polls so far.
        polls: u32,
        /// Last queue state seen.
        queue_state: Option<QueueState>,
        /// Seconds left before the client's progress deadline.
        deadline_in_secs: f64,
    },
    /// A request failed and will be retried.
    Retry {
        /// The request (future id), if known.
        request_id: Option<String>,
        /// What was being sent, e.g. `POST /api/v1/optim_step`.
        operation: String,
        /// Attempt number that failed (0-based).
        attempt: u32,
        /// Delay before the next attempt, seconds.
        delay_secs: f64,
        /// The error.
        error: String,
    },
    /// Heartbeats have been failing for a while.
    HeartbeatWarning {
        /// The session.
        session_id: String,
        /// Seconds since the last successful heartbeat.
        failing_for_secs: f64,
        /// Last error.
        error: String,
    },
    /// The server ended the session (heartbeat answered 410).
    SessionExpired {
        /// The session.
        session_id: String,
    },
    /// Telemetry events were dropped because the queue was full.
    TelemetryOverflow {
        /// Events dropped so far.
        dropped: u64,
    },
    /// Counts of the client's operations.
    Summary {
        /// Operations waiting for their submission turn.
        waiting: u64,
        /// Operations submitted and not finished.
        in_flight: u64,
        /// Operations finished.
        completed: u64,
    },
}

impl Event {
    /// The event's type name, e.g. `queue_state`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::QueueState { .. } => "queue_state",
            Event::Progress { .. } => "progress",
            Event::Retry { .. } => "retry",
            Event::HeartbeatWarning { .. } => "heartbeat_warning",
            Event::SessionExpired { .. } => "session_expired",
            Event::TelemetryOverflow { .. } => "telemetry_overflow",
            Event::Summary { .. } => "summary",
        }
    }
}

type Handler = Arc<dyn Fn(&Event) + Send + Sync>;

/// Subscribers of one client's events.
#[derive(Default)]
pub struct EventBus {
    handlers: Mutex<Vec<(u64, Handler)>>,
    next_id: AtomicU64,
}

/// Returned by [`EventBus::subscribe`]; pass it to [`EventBus::unsubscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl EventBus {
    /// Adds a handler; it runs on the thread that emits, so it must be quick.
    pub fn subscribe(&self, handler: impl Fn(&Event) + Send + Sync + 'static) -> SubscriptionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.handlers.lock().unwrap().push((id, Arc::new(handler)));
        SubscriptionId(id)
    }

    /// Removes a handler; returns whether it was subscribed. After this returns the handler
    /// is not called again (a call already running may finish).
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let mut handlers = self.handlers.lock().unwrap();
        let before = handlers.len();
        handlers.retain(|(i, _)| *i != id.0);
        handlers.len() != before
    }

    /// Delivers an event to `tracing` and every subscriber.
    pub fn emit(&self, event: Event) {
        match &event {
            // The heartbeat loop writes its own rate-limited WARNING (PROTOCOL.md 5.6).
            Event::TelemetryOverflow { .. } => tracing::warn!(event = ?event, "tinkex event"),
            Event::SessionExpired { .. } => tracing::info!(event = ?event, "tinkex event"),
            _ => tracing::debug!(event = ?event, "tinkex event"),
        }
        let handlers: Vec<Handler> = self
            .handlers
            .lock()
            .unwrap()
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in handlers {
            h(&event);
        }
    }
}
