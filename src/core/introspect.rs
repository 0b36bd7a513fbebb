//! Introspection (issue 14): one JSON-shaped status per client, built from the counters the
//! core already keeps — the progress tracker ([`crate::core::progress`]), the queue-state
//! observers ([`crate::core::queue_state`], PROTOCOL.md 15), the billing pause (13.7), the
//! sampling dispatch (12.4, 12.5) and the telemetry queue (16). Every getter is synchronous
//! and performs no I/O.

use crate::core::queue_state::QueueSnapshot;
use crate::core::sampling::SamplingClient;
use crate::core::service::ServiceClient;
use crate::core::training::TrainingClient;
use crate::core::types::QueueState;
use crate::core::ClientCore;
use serde::Serialize;
use std::time::Duration;

/// Telemetry queue counters of a client's session (16).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TelemetryStatus {
    /// Events waiting to be sent.
    pub queued: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events the server accepted.
    pub sent: u64,
}

/// Counters of the holder-wide sampling dispatch (12.4, 12.5), in a sampling client's
/// status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DispatchStatus {
    /// `asample` sends holding a dispatch permit now.
    pub in_flight: u64,
    /// The most permits held at once.
    pub max_in_flight: u64,
    /// Back-offs requested (429 or paused 402 answers to `asample`).
    pub backoffs: u64,
    /// Permits taken while a back-off was recent.
    pub throttled_dispatches: u64,
}

/// The status of one client (the JSON of `tinkex_*_status`, see `/tmp/contract14.md`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatusReport {
    /// The session id, once the session exists.
    pub session_id: Option<String>,
    /// The last queue state reported for this client's requests (15.1): `active`,
    /// `paused_capacity`, `paused_rate_limit` or `unknown`.
    pub queue_state: QueueState,
    /// The server's reason for it, if any.
    pub queue_state_reason: Option<String>,
    /// How long the current billing incident has paused the client so far (13.7), ms.
    pub billing_paused_ms: u64,
    /// Time left of the longest retry or sampling back-off being waited out, ms.
    pub backoff_remaining_ms: u64,
    /// Time since progress was last recorded, ms; null before the session started.
    pub last_progress_ms_ago: Option<u64>,
    /// Operations waiting for their turn to be sent (for a sampling client: its samples
    /// not yet accepted by the server).
    pub operations_waiting: u64,
    /// Operations started and not finished (for a sampling client: its own samples).
    pub operations_in_flight: u64,
    /// Telemetry counters; null with telemetry off or before the session started.
    pub telemetry: Option<TelemetryStatus>,
    /// Sampling clients only: the holder-wide dispatch counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<DispatchStatus>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs_ms(s: f64) -> u64 {
    ms(Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX))
}

impl ClientCore {
    /// The holder-wide part of a status; `queue` is the client's own queue state (`None`:
    /// the last one any request of the holder reported).
    fn status_report(&self, queue: Option<QueueSnapshot>) -> StatusReport {
        let session = self.session_if_started();
        let progress = self.progress.snapshot();
        let (queue_state, queue_state_reason) = match queue {
            Some(q) => (q.state, q.reason),
            None => match progress.queue_state.clone() {
                Some((s, r, _)) => (s, r),
                None => (QueueState::Active, None),
            },
        };
        let backoff = secs_ms(progress.backoff_remaining_secs)
            .max(ms(self.sample_dispatch.backoff_remaining()));
        StatusReport {
            session_id: session.as_ref().map(|s| s.session_id.clone()),
            queue_state,
            queue_state_reason,
            billing_paused_ms: ms(self.billing.paused_for()),
            backoff_remaining_ms: backoff,
            last_progress_ms_ago: session
                .is_some()
                .then(|| secs_ms(progress.since_last_progress_secs)),
            operations_waiting: progress.waiting,
            operations_in_flight: progress.in_flight,
            telemetry: self
                .telemetry
                .get()
                .filter(|_| self.config.telemetry)
                .map(|t| TelemetryStatus {
                    queued: t.queued() as u64,
                    dropped: t.dropped(),
                    sent: t.sent_events(),
                }),
            dispatch: None,
        }
    }
}

impl ServiceClient {
    /// Introspection of the whole client: the last queue state any request reported, and
    /// the operations of every client it created.
    pub fn status_report(&self) -> StatusReport {
        self.core().status_report(None)
    }
}

impl TrainingClient {
    /// Introspection: this model's queue state (15.2), with the holder's pause, back-off,
    /// progress and operation counts.
    pub fn status_report(&self) -> StatusReport {
        self.inner.core.status_report(Some(self.queue_state()))
    }
}

impl SamplingClient {
    /// Introspection: this sampler's queue state (15.2), its own samples waiting and in
    /// flight, and the holder-wide dispatch counters (12.4).
    pub fn status_report(&self) -> StatusReport {
        let mut r = self.core().status_report(Some(self.queue_state()));
        let (in_flight, waiting) = self.operation_counts();
        r.operations_in_flight = in_flight;
        r.operations_waiting = waiting;
        let d = self.dispatch_stats();
        r.dispatch = Some(DispatchStatus {
            in_flight: d.in_flight,
            max_in_flight: d.max_in_flight,
            backoffs: d.backoffs,
            throttled_dispatches: d.throttled_dispatches,
        });
        r
    }
}
