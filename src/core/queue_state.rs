//! Queue-state reporting (PROTOCOL.md 15): every change is an event; log lines are
//! debounced — sampling at most one per `log_interval`; training and model creation say
//! nothing for the first `training_grace` of a pause, then at most one per `log_interval`.

use crate::core::types::QueueState;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Debounce settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueStateConfig {
    /// Minimum time between two pause log lines of one observer.
    pub log_interval: Duration,
    /// Training/model-creation pauses shorter than this are not logged.
    pub training_grace: Duration,
}

impl Default for QueueStateConfig {
    fn default() -> Self {
        QueueStateConfig {
            log_interval: Duration::from_secs(60),
            training_grace: Duration::from_secs(900),
        }
    }
}

/// Who is observing, which decides wording and debounce.
#[derive(Clone, Debug, PartialEq)]
pub enum ObserverKind {
    /// A sampling client (by sampling session id).
    Sampling(String),
    /// A training client (by model id).
    Training(String),
    /// Model creation (by base model or model id).
    ModelCreation(String),
}

/// The current queue state of one observer, for introspection.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSnapshot {
    /// Last state reported.
    pub state: QueueState,
    /// Its reason.
    pub reason: Option<String>,
    /// How long the observer has been in a non-active state.
    pub paused_for: Option<Duration>,
}

struct Inner {
    state: QueueState,
    reason: Option<String>,
    since: Instant,
    last_log: Option<Instant>,
}

/// Tracks one client's queue state and decides when to log.
pub struct QueueObserver {
    kind: ObserverKind,
    config: QueueStateConfig,
    inner: Mutex<Inner>,
}

fn default_reason(kind: &ObserverKind, state: QueueState) -> String {
    match (kind, state) {
        (ObserverKind::Sampling(_), QueueState::PausedRateLimit) => {
            "concurrent sampler weights limit hit".into()
        }
        (_, QueueState::PausedRateLimit) => "concurrent training clients rate limit hit".into(),
        (_, QueueState::PausedCapacity) => {
            "Tinker backend is running short on capacity, please wait".into()
        }
        _ => "unknown".into(),
    }
}

impl QueueObserver {
    /// A new observer, initially active.
    pub fn new(kind: ObserverKind, config: QueueStateConfig) -> Self {
        QueueObserver {
            kind,
            config,
            inner: Mutex::new(Inner {
                state: QueueState::Active,
                reason: None,
                since: Instant::now(),
                last_log: None,
            }),
        }
    }

    /// Records a report at `now` with the observer's own debounce settings. Returns
    /// `(changed, log_line)`: whether the state changed (an event is due) and the warning to
    /// log, if the debounce allows one.
    pub fn observe_at(
        &self,
        state: QueueState,
        reason: Option<String>,
        now: Instant,
    ) -> (bool, Option<String>) {
        self.observe_with(state, reason, now, &self.config)
    }

    /// [`observe_at`](Self::observe_at) with explicit debounce settings (the client's
    /// configured ones, [`crate::core::dispatch::SamplingSettings::queue_state`]).
    pub fn observe_with(
        &self,
        state: QueueState,
        reason: Option<String>,
        now: Instant,
        config: &QueueStateConfig,
    ) -> (bool, Option<String>) {
        let mut inner = self.inner.lock().unwrap();
        let changed = inner.state != state || inner.reason != reason;
        if inner.state != state {
            inner.since = now;
        }
        inner.state = state;
        inner.reason = reason.clone();
        if state == QueueState::Active {
            return (changed, None);
        }
        let grace = match self.kind {
            ObserverKind::Sampling(_) => Duration::ZERO,
            _ => config.training_grace,
        };
        let paused_for = now.saturating_duration_since(inner.since);
        let due = paused_for >= grace
            && inner
                .last_log
                .is_none_or(|t| now.saturating_duration_since(t) >= config.log_interval);
        if !due {
            return (changed, None);
        }
        inner.last_log = Some(now);
        let reason = reason.unwrap_or_else(|| default_reason(&self.kind, state));
        let line = match &self.kind {
            ObserverKind::Sampling(id) => {
                format!("Sampling is paused for sampler {id}. Reason: {reason}")
            }
            ObserverKind::Training(id) => format!("Training for {id} is paused. Reason: {reason}."),
            ObserverKind::ModelCreation(id) => {
                format!("Model creation for {id} is paused. Reason: {reason}.")
            }
        };
        (changed, Some(line))
    }

    /// Handles a queue-state answer of one of this client's requests: records it in the
    /// client's progress status, emits an event when it changed, logs (WARNING) when the
    /// debounce of the client's configuration (`Config::sampling.queue_state`) allows.
    pub fn report(
        &self,
        core: &crate::core::ClientCore,
        request_id: &str,
        request_type: &str,
        state: QueueState,
        reason: Option<String>,
    ) {
        core.progress.note_queue_state(state, reason.clone());
        let (changed, line) = self.observe_with(
            state,
            reason.clone(),
            Instant::now(),
            &core.config.sampling.queue_state,
        );
        if let Some(line) = line {
            tracing::warn!("{line}");
        }
        if changed {
            let client_id = match &self.kind {
                ObserverKind::Sampling(id)
                | ObserverKind::Training(id)
                | ObserverKind::ModelCreation(id) => id.clone(),
            };
            core.events.emit(crate::core::events::Event::QueueState {
                request_id: request_id.to_string(),
                client_id,
                request_type: request_type.to_string(),
                state,
                reason,
            });
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> QueueSnapshot {
        let inner = self.inner.lock().unwrap();
        QueueSnapshot {
            state: inner.state,
            reason: inner.reason.clone(),
            paused_for: (inner.state != QueueState::Active).then(|| inner.since.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_logs_at_most_once_per_interval() {
        let o = QueueObserver::new(
            ObserverKind::Sampling("s".into()),
            QueueStateConfig::default(),
        );
        let t0 = Instant::now();
        let (changed, line) = o.observe_at(QueueState::PausedCapacity, None, t0);
        assert!(changed);
        assert!(line.unwrap().contains("running short on capacity"));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            o.observe_at(QueueState::PausedCapacity, None, at(30)),
            (false, None)
        );
        assert!(o
            .observe_at(QueueState::PausedCapacity, None, at(61))
            .1
            .is_some());
        assert_eq!(o.observe_at(QueueState::Active, None, at(62)), (true, None));
    }

    #[test]
    fn training_waits_for_the_grace_period() {
        let o = QueueObserver::new(
            ObserverKind::Training("m".into()),
            QueueStateConfig::default(),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            o.observe_at(QueueState::PausedRateLimit, None, t0),
            (true, None)
        );
        assert_eq!(
            o.observe_at(QueueState::PausedRateLimit, None, at(899)).1,
            None
        );
        let line = o
            .observe_at(QueueState::PausedRateLimit, None, at(900))
            .1
            .unwrap();
        assert!(line.contains("Training for m is paused") && line.contains("rate limit"));
        assert_eq!(
            o.observe_at(QueueState::PausedRateLimit, None, at(959)).1,
            None
        );
        assert!(o
            .observe_at(QueueState::PausedRateLimit, None, at(960))
            .1
            .is_some());
    }
}
