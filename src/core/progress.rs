//! Automatic progress tracking, shared by every operation of one ServiceClient.
//!
//! Rule (see `docs/reliability.md`): progress is recorded when an operation completes, when a
//! submission is accepted, and when an operation starts while nothing else is in flight. A
//! try-again answer is not progress. When nothing progressed for the progress timeout, every
//! in-flight operation of the client fails with [`ErrorKind::NoProgress`], and its in-flight
//! HTTP attempt is dropped.

use crate::core::error::{Error, ErrorKind, Result};
use crate::core::events::Event;
use crate::core::types::QueueState;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Live status of one operation, reported by progress events.
pub struct OpStatus {
    /// Request kind, e.g. `OptimStep`.
    pub request_type: &'static str,
    /// When the operation started.
    pub started: Instant,
    /// The server's request id, once known.
    pub request_id: Mutex<Option<String>>,
    /// Submission attempts so far.
    pub attempts: AtomicU32,
    /// `retrieve_future` polls so far.
    pub polls: AtomicU32,
    /// Last queue state reported for it.
    pub queue_state: Mutex<Option<QueueState>>,
}

impl OpStatus {
    /// A status for an operation starting now.
    pub fn new(request_type: &'static str) -> Self {
        OpStatus {
            request_type,
            started: Instant::now(),
            request_id: Mutex::new(None),
            attempts: AtomicU32::new(0),
            polls: AtomicU32::new(0),
            queue_state: Mutex::new(None),
        }
    }

    /// The progress event describing this operation now.
    pub fn event(&self, deadline_in: Duration) -> Event {
        Event::Progress {
            request_id: self.request_id.lock().unwrap().clone(),
            request_type: self.request_type.to_string(),
            elapsed_secs: self.started.elapsed().as_secs_f64(),
            attempts: self.attempts.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
            queue_state: *self.queue_state.lock().unwrap(),
            deadline_in_secs: deadline_in.as_secs_f64(),
        }
    }
}

/// A point-in-time view of a client's progress (see `ServiceClient::status`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProgressSnapshot {
    /// Operations waiting for their submission turn.
    pub waiting: u64,
    /// Operations started and not finished.
    pub in_flight: u64,
    /// Operations finished successfully.
    pub completed: u64,
    /// Seconds since progress was last recorded.
    pub since_last_progress_secs: f64,
    /// Seconds left before in-flight operations fail with `NoProgress`.
    pub deadline_in_secs: f64,
    /// Seconds left of the longest retry backoff currently being waited out.
    pub backoff_remaining_secs: f64,
    /// The last error any retry loop saw.
    pub last_error: Option<String>,
    /// The last queue state reported by the server, its reason and how long it has lasted.
    pub queue_state: Option<(QueueState, Option<String>, f64)>,
}

/// Progress state of one client.
pub struct ProgressTracker {
    timeout: Duration,
    last_progress: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    in_flight: AtomicU64,
    waiting: AtomicU64,
    completed: AtomicU64,
    backoff_until: Mutex<Option<Instant>>,
    queue_state: Mutex<Option<(QueueState, Option<String>, Instant)>>,
}

/// Counts an operation as waiting for its turn until dropped.
pub struct Waiting<'a> {
    tracker: &'a ProgressTracker,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.tracker.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts an operation as in flight until dropped.
pub struct InFlight<'a> {
    tracker: &'a ProgressTracker,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.tracker.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProgressTracker {
    /// A tracker failing operations after `timeout` without progress.
    pub fn new(timeout: Duration) -> Self {
        ProgressTracker {
            timeout,
            last_progress: Mutex::new(Instant::now()),
            last_error: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            backoff_until: Mutex::new(None),
            queue_state: Mutex::new(None),
        }
    }

    /// Counts an operation as waiting for its send turn while the guard lives.
    pub fn enter_waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting { tracker: self }
    }

    /// Sleeps a retry backoff, recording it for introspection.
    pub async fn sleep_backoff(&self, d: Duration) {
        let until = Instant::now() + d;
        {
            let mut b = self.backoff_until.lock().unwrap();
            if b.is_none_or(|t| t < until) {
                *b = Some(until);
            }
        }
        tokio::time::sleep(d).await;
    }

    /// Records the latest queue state the server reported.
    pub fn note_queue_state(&self, state: QueueState, reason: Option<String>) {
        let mut q = self.queue_state.lock().unwrap();
        let since = match &*q {
            Some((s, _, t)) if *s == state => *t,
            _ => Instant::now(),
        };
        *q = Some((state, reason, since));
    }

    /// The client's progress now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let now = Instant::now();
        ProgressSnapshot {
            waiting: self.waiting.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::Relaxed),
            since_last_progress_secs: now
                .saturating_duration_since(self.last_progress())
                .as_secs_f64(),
            deadline_in_secs: self.remaining().as_secs_f64(),
            backoff_remaining_secs: self
                .backoff_until
                .lock()
                .unwrap()
                .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
            last_error: self.last_error.lock().unwrap().clone(),
            queue_state: self
                .queue_state
                .lock()
                .unwrap()
                .clone()
                .map(|(s, r, since)| (s, r, now.saturating_duration_since(since).as_secs_f64())),
        }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records progress now.
    pub fn record(&self) {
        *self.last_progress.lock().unwrap() = Instant::now();
    }

    /// Records a completed operation (progress).
    pub fn record_completion(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.record();
    }

    /// Remembers the last error seen, for the `NoProgress` message.
    pub fn note_error(&self, e: &Error) {
        *self.last_error.lock().unwrap() = Some(e.to_string());
    }

    /// When progress was last recorded.
    pub fn last_progress(&self) -> Instant {
        *self.last_progress.lock().unwrap()
    }

    /// Time left before the deadline (zero if passed).
    pub fn remaining(&self) -> Duration {
        (self.last_progress() + self.timeout).saturating_duration_since(Instant::now())
    }

    /// Operations currently in flight and completed so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.in_flight.load(Ordering::SeqCst),
            self.completed.load(Ordering::Relaxed),
        )
    }

    /// Marks an operation as started; an operation starting on an idle client is progress
    /// (so a client idle for hours does not fail its next call at once).
    pub fn enter(&self) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.record();
        }
        InFlight { tracker: self }
    }

    /// Resolves once nothing has progressed for the timeout.
    pub async fn stalled(&self) {
        loop {
            let deadline = self.last_progress() + self.timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Runs `op`, failing it with `NoProgress` if the client stalls first (dropping `op`,
    /// and with it any in-flight HTTP attempt).
    pub async fn guard<T>(
        &self,
        started: Instant,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            r = op => r,
            _ = self.stalled() => Err(self.no_progress_error(started)),
        }
    }

    fn no_progress_error(&self, started: Instant) -> Error {
        let last = self.last_error.lock().unwrap().clone();
        let mut msg = format!(
            "no progress for {:.1} s (the progress timeout); the operation ran for {:.1} s",
            self.timeout.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        if let Some(e) = last {
            msg.push_str(&format!("; last error: {e}"));
        }
        Error::new(ErrorKind::NoProgress, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stalls_after_timeout_and_progress_pushes_the_deadline() {
        let t = ProgressTracker::new(Duration::from_secs(100));
        let started = Instant::now();
        let _g = t.enter();
        let never = std::future::pending::<Result<()>>();
        let tracker = &t;
        let bump = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            tracker.record_completion();
            std::future::pending::<()>().await
        };
        let res = tokio::select! {
            r = t.guard(started, never) => r,
            _ = bump => unreachable!(),
        };
        let e = res.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoProgress);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(160),
            "deadline moved by the completion"
        );
    }
}
