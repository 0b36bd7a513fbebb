//! Automatic progress tracking, shared by every operation of one ServiceClient.
//!
//! Rule (see `docs/reliability.md`): progress is recorded when an operation completes, when a
//! submission is accepted, and when an operation starts while nothing else is in flight. A
//! try-again answer is not progress. When nothing progressed for the progress timeout, every
//! in-flight operation of the client fails with [`ErrorKind::NoProgress`], and its in-flight
//! HTTP attempt is dropped.

use crate::core::error::{Error, ErrorKind, Result};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Progress state of one client.
pub struct ProgressTracker {
    timeout: Duration,
    last_progress: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    in_flight: AtomicU64,
    completed: AtomicU64,
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
            completed: AtomicU64::new(0),
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
