//! The billing pause of PROTOCOL.md 13.7, shared by every layer of one ServiceClient that
//! waits out HTTP 402 (the holder retry loop here; the poll loop and the sampling dispatch
//! call [`Billing::on_402`] too).
//!
//! An *incident* starts at the first 402; it ends when no 402 was logged for
//! `billing_incident_reset` (300 s). While the incident is younger than the maximum pause
//! (the smaller of the server's `billing_exception_max_pause_duration_sec` and the config's
//! `billing_max_pause`), a 402 means "pause": the caller sleeps `billing_pause_step` and
//! retries. A WARNING is logged at most once per `billing_log_interval` (60 s). Past the
//! maximum, the 402 becomes the caller's error (ERROR log "… Aborting.").

use crate::core::config::RetryPolicy;
use crate::core::error::{Error, ErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What a layer that saw a 402 should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillingVerdict {
    /// Sleep [`Billing::pause_step`] and retry the same attempt (not counted as a retry).
    Pause,
    /// Give up: return the 402 (`ErrorKind::Billing`, not retryable) to the caller.
    Fail,
}

#[derive(Default)]
struct Incident {
    /// When the current incident started.
    started: Option<Instant>,
    /// When a 402 of this incident was last logged (or seen).
    last_logged: Option<Instant>,
    /// When the WARNING was last written.
    last_warning: Option<Instant>,
}

/// The billing-pause state of one ServiceClient.
pub struct Billing {
    state: Mutex<Incident>,
    /// The server's maximum pause, ms (`billing_exception_max_pause_duration_sec`).
    server_max_pause_ms: AtomicU64,
    config_max_pause: Duration,
    pause_step: Duration,
    log_interval: Duration,
    incident_reset: Duration,
}

impl Billing {
    /// A pause state with the policy's durations and the server's default maximum (3600 s)
    /// until [`set_server_max_pause`](Self::set_server_max_pause) is called.
    pub fn new(policy: &RetryPolicy) -> Self {
        Billing {
            state: Mutex::new(Incident::default()),
            server_max_pause_ms: AtomicU64::new(3_600_000),
            config_max_pause: policy.billing_max_pause,
            pause_step: policy.billing_pause_step,
            log_interval: policy.billing_log_interval,
            incident_reset: policy.billing_incident_reset,
        }
    }

    /// Records the server's `billing_exception_max_pause_duration_sec` (from client/config).
    pub fn set_server_max_pause(&self, secs: u64) {
        self.server_max_pause_ms
            .store(secs.saturating_mul(1000), Ordering::Relaxed);
    }

    /// The maximum pause in effect: the smaller of the server's and the config's.
    pub fn max_pause(&self) -> Duration {
        Duration::from_millis(self.server_max_pause_ms.load(Ordering::Relaxed))
            .min(self.config_max_pause)
    }

    /// How long a paused caller sleeps before retrying (5 s).
    pub fn pause_step(&self) -> Duration {
        self.pause_step
    }

    /// How long the current billing incident has lasted (zero when there is none, or when
    /// no 402 was seen for the incident-reset time): the time paused for billing so far.
    pub fn paused_for(&self) -> Duration {
        let now = Instant::now();
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match (st.started, st.last_logged) {
            (Some(started), Some(last)) if now.duration_since(last) <= self.incident_reset => {
                now.duration_since(started)
            }
            _ => Duration::ZERO,
        }
    }

    /// Decides on one 402 (`err` is its error, quoted in the log lines).
    pub fn on_402(&self, err: &Error) -> BillingVerdict {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st
            .last_logged
            .is_some_and(|t| now.duration_since(t) > self.incident_reset)
        {
            *st = Incident::default();
        }
        let started = *st.started.get_or_insert(now);
        st.last_logged = Some(now);
        let paused = now.duration_since(started);
        if paused > self.max_pause() || self.max_pause().is_zero() {
            tracing::error!(
                "The job was paused due to billing status for {:.0} seconds, longer than the \
                 maximum of {:.0} seconds. Aborting. Error: {err}",
                paused.as_secs_f64(),
                self.max_pause().as_secs_f64()
            );
            return BillingVerdict::Fail;
        }
        if st
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= self.log_interval)
        {
            st.last_warning = Some(now);
            tracing::warn!("The job is paused due to billing status. Error: {err}");
        }
        BillingVerdict::Pause
    }

    /// The error a caller gets when the pause is over: the 402's, typed `Billing`, with the
    /// reason appended.
    pub fn exceeded(&self, mut err: Error) -> Error {
        err.kind = ErrorKind::Billing;
        err.message = format!(
            "{} (billing pause exceeded its maximum of {:.0} s; aborting)",
            err.message,
            self.max_pause().as_secs_f64()
        );
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            billing_max_pause: Duration::from_secs(100),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn incident_pauses_then_fails_and_resets() {
        let b = Billing::new(&policy());
        let e = Error::from_status(402, "{}");
        assert_eq!(b.on_402(&e), BillingVerdict::Pause);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.on_402(&e), BillingVerdict::Pause);
        tokio::time::advance(Duration::from_secs(41)).await;
        assert_eq!(b.on_402(&e), BillingVerdict::Fail, "past the maximum");
        // 300 s without a 402: a new incident.
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(b.on_402(&e), BillingVerdict::Pause);
    }

    #[tokio::test(start_paused = true)]
    async fn server_maximum_applies_when_smaller() {
        let b = Billing::new(&RetryPolicy::default());
        assert_eq!(b.max_pause(), Duration::from_secs(3600));
        b.set_server_max_pause(10);
        assert_eq!(b.max_pause(), Duration::from_secs(10));
        let e = Error::from_status(402, "{}");
        assert_eq!(b.on_402(&e), BillingVerdict::Pause);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.on_402(&e), BillingVerdict::Fail);
        assert_eq!(b.exceeded(e).kind, ErrorKind::Billing);
    }
}
