//! Holder-wide sampling dispatch gates and the back-pressure protocol (PROTOCOL.md 12.3-12.5).
//!
//! One [`SampleDispatch`] per [`ServiceClient`](crate::core::ServiceClient), shared by all of
//! its sampling clients. A sample holds a [`DispatchPermit`] only while its `asample` is being
//! sent (including the back-off waits after a 429); the permit is dropped before polling.
//!
//! * a count semaphore of 400 concurrent dispatches;
//! * while a back-off was requested recently (`now − backoff_until < 10 s`), additionally a
//!   count semaphore of 10;
//! * a byte budget of `sample_dispatch_bytes_semaphore_size` ([`ByteBudget`] semantics),
//!   charging the prompt's byte estimate, ×20 while a back-off was requested recently.
//!
//! Back-pressure: an `asample` answered 429 (or 402 inside the billing pause) sets the
//! holder-wide `backoff_until` to now + 1 s (estimate ≤ 128 KiB) or now + 5 s, or to the
//! server's `Retry-After` when it gives one in (0, max_retry_after] (a deliberate difference:
//! the official SDK ignores it). A sample about to be sent waits in steps of 1 s while
//! `now < backoff_until`, then sends the same body (same `seq_id`).
//!
//! The state is per ServiceClient, so one API key's 429s never slow another key's samples.

use crate::core::byte_budget::{ByteBudget, BytePermit};
use crate::core::queue_state::QueueStateConfig;
use crate::core::types::{Chunk, ModelInput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Concurrent `asample` dispatches of one holder (12.4).
pub const DISPATCH_CONCURRENCY: usize = 400;
/// Concurrent dispatches while a back-off was requested recently (12.4).
pub const THROTTLED_DISPATCH_CONCURRENCY: usize = 10;
/// Byte-estimate multiplier while a back-off was requested recently (12.4).
pub const THROTTLED_BYTES_MULTIPLIER: u64 = 20;
/// Prompts estimated above this many bytes back off for the long delay (12.5).
pub const LARGE_PROMPT_BYTES: u64 = 128 * 1024;
/// Bytes charged per text token (12.3).
pub const BYTES_PER_TOKEN: u64 = 10;

/// Timings of the sampling dispatch, back-pressure and queue-state logging. The defaults are
/// the official SDK's; every one is configurable so scenarios run in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSettings {
    /// Back-off after a 429 for a prompt estimated at ≤ 128 KiB (1 s).
    pub backoff_short: Duration,
    /// Back-off after a 429 for a larger prompt (5 s).
    pub backoff_long: Duration,
    /// Step of the wait while backing off (1 s).
    pub backoff_step: Duration,
    /// How long after `backoff_until` the back-off still counts as "recent" (10 s).
    pub recent_backoff_window: Duration,
    /// Honour a 429's `Retry-After` (in (0, max_retry_after]) instead of the fixed back-off.
    pub honour_retry_after: bool,
    /// Interval of the sampling retry handler's debug progress line (2 s).
    pub progress_log_interval: Duration,
    /// Queue-state log debouncing (60 s; training grace 900 s).
    pub queue_state: QueueStateConfig,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            backoff_short: Duration::from_secs(1),
            backoff_long: Duration::from_secs(5),
            backoff_step: Duration::from_secs(1),
            recent_backoff_window: Duration::from_secs(10),
            honour_retry_after: true,
            progress_log_interval: Duration::from_secs(2),
            queue_state: QueueStateConfig::default(),
        }
    }
}

impl SamplingSettings {
    /// Every duration must be above zero (zero never means "off").
    pub fn validate(&self) -> crate::core::error::Result<()> {
        let q = &self.queue_state;
        for (name, d) in [
            ("sampling.backoff_short", self.backoff_short),
            ("sampling.backoff_long", self.backoff_long),
            ("sampling.backoff_step", self.backoff_step),
            ("sampling.recent_backoff_window", self.recent_backoff_window),
            ("sampling.progress_log_interval", self.progress_log_interval),
            ("sampling.queue_state_log_interval", q.log_interval),
            ("sampling.queue_state_grace", q.training_grace),
        ] {
            if d.is_zero() {
                return Err(crate::core::error::Error::user(format!(
                    "{name} must be above zero"
                )));
            }
        }
        Ok(())
    }
}

/// JSON form of [`SamplingSettings`] (durations in ms); unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SamplingSettingsInput {
    /// Back-off after a 429 for a prompt of ≤ 128 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_short_ms: Option<u64>,
    /// Back-off after a 429 for a larger prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_long_ms: Option<u64>,
    /// Step of the wait while backing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_step_ms: Option<u64>,
    /// How long after the back-off ends it still counts as recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_backoff_window_ms: Option<u64>,
    /// Honour a 429's `Retry-After` instead of the fixed back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honour_retry_after: Option<bool>,
    /// Interval of the retry handler's debug progress line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_log_interval_ms: Option<u64>,
    /// Minimum time between two queue-state log lines of one client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_state_log_interval_ms: Option<u64>,
    /// Training/model-creation pauses shorter than this are not logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_state_grace_ms: Option<u64>,
}

impl From<SamplingSettingsInput> for SamplingSettings {
    fn from(i: SamplingSettingsInput) -> Self {
        let d = SamplingSettings::default();
        let ms = |v: Option<u64>, dflt: Duration| v.map(Duration::from_millis).unwrap_or(dflt);
        SamplingSettings {
            backoff_short: ms(i.backoff_short_ms, d.backoff_short),
            backoff_long: ms(i.backoff_long_ms, d.backoff_long),
            backoff_step: ms(i.backoff_step_ms, d.backoff_step),
            recent_backoff_window: ms(i.recent_backoff_window_ms, d.recent_backoff_window),
            honour_retry_after: i.honour_retry_after.unwrap_or(d.honour_retry_after),
            progress_log_interval: ms(i.progress_log_interval_ms, d.progress_log_interval),
            queue_state: QueueStateConfig {
                log_interval: ms(i.queue_state_log_interval_ms, d.queue_state.log_interval),
                training_grace: ms(i.queue_state_grace_ms, d.queue_state.training_grace),
            },
        }
    }
}

/// The byte estimate of a prompt (12.3): 10 bytes per text token, the decoded length of an
/// image's data and of a dmel chunk (base64 on the wire, `bytes` in the SDK), the length of
/// an asset pointer's location.
pub fn estimate_bytes(prompt: &ModelInput) -> u64 {
    prompt
        .chunks
        .iter()
        .map(|c| match c {
            Chunk::EncodedText { tokens } => BYTES_PER_TOKEN * tokens.len() as u64,
            Chunk::Image { data, .. } => crate::core::types::base64_decoded_len(data) as u64,
            Chunk::ImageAssetPointer { location, .. } => location.len() as u64,
            Chunk::Dmel { dmel } => crate::core::types::base64_decoded_len(dmel) as u64,
        })
        .sum()
}

/// Counters of one holder's dispatch, for tests and introspection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Dispatch permits held now.
    pub in_flight: u64,
    /// The most permits held at once.
    pub max_in_flight: u64,
    /// Back-offs requested (429 or 402 answers to `asample`).
    pub backoffs: u64,
    /// Permits taken while a back-off was recent (throttled gates).
    pub throttled_dispatches: u64,
}

/// The dispatch gates and back-off state of one holder.
pub struct SampleDispatch {
    settings: SamplingSettings,
    count: Arc<Semaphore>,
    throttled: Arc<Semaphore>,
    bytes: ByteBudget,
    backoff_until: Mutex<Option<Instant>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    backoffs: AtomicU64,
    throttled_dispatches: AtomicU64,
}

/// Held while one `asample` is being sent; releases every gate on drop.
pub struct DispatchPermit {
    _count: OwnedSemaphorePermit,
    _throttled: Option<OwnedSemaphorePermit>,
    _bytes: BytePermit,
    owner: Arc<SampleDispatch>,
}

impl Drop for DispatchPermit {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SampleDispatch {
    /// Gates with the default sizes and a byte budget of `byte_capacity`.
    pub fn new(settings: SamplingSettings, byte_capacity: u64) -> Arc<Self> {
        Arc::new(SampleDispatch {
            settings,
            count: Arc::new(Semaphore::new(DISPATCH_CONCURRENCY)),
            throttled: Arc::new(Semaphore::new(THROTTLED_DISPATCH_CONCURRENCY)),
            bytes: ByteBudget::new(byte_capacity),
            backoff_until: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            backoffs: AtomicU64::new(0),
            throttled_dispatches: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SamplingSettings {
        &self.settings
    }

    /// Follows the server's `sample_dispatch_bytes_semaphore_size` (a no-op when unchanged).
    pub fn set_byte_capacity(&self, capacity: u64) {
        if self.bytes.capacity() != capacity {
            self.bytes.set_capacity(capacity);
        }
    }

    /// The byte budget (for introspection).
    pub fn byte_budget(&self) -> &ByteBudget {
        &self.bytes
    }

    /// Whether a back-off was requested recently: from when it was set until
    /// `recent_backoff_window` after it ends.
    pub fn backoff_requested_recently(&self) -> bool {
        self.backoff_requested_recently_at(Instant::now())
    }

    fn backoff_requested_recently_at(&self, now: Instant) -> bool {
        match *self.backoff_until.lock().unwrap() {
            Some(until) => {
                now < until || now.duration_since(until) < self.settings.recent_backoff_window
            }
            None => false,
        }
    }

    /// Takes the gates for a prompt estimated at `estimate` bytes (12.4).
    pub async fn acquire(self: &Arc<Self>, estimate: u64) -> DispatchPermit {
        let count = self
            .count
            .clone()
            .acquire_owned()
            .await
            .expect("the dispatch semaphore is never closed");
        let recent = self.backoff_requested_recently();
        let throttled = if recent {
            self.throttled_dispatches.fetch_add(1, Ordering::Relaxed);
            Some(
                self.throttled
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the dispatch semaphore is never closed"),
            )
        } else {
            None
        };
        let charge = if self.backoff_requested_recently() {
            estimate.saturating_mul(THROTTLED_BYTES_MULTIPLIER)
        } else {
            estimate
        };
        let bytes = self.bytes.acquire(charge).await;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        DispatchPermit {
            _count: count,
            _throttled: throttled,
            _bytes: bytes,
            owner: self.clone(),
        }
    }

    /// Waits, in steps of `backoff_step`, while `now < backoff_until`.
    pub async fn wait_backoff(&self) {
        loop {
            let until = *self.backoff_until.lock().unwrap();
            match until {
                Some(u) if Instant::now() < u => {
                    tokio::time::sleep(self.settings.backoff_step).await;
                }
                _ => return,
            }
        }
    }

    /// Records a back-off request (429 / paused 402 on `asample`) for a prompt estimated at
    /// `estimate` bytes; `retry_after` is the server's valid `Retry-After`, if any.
    pub fn request_backoff(&self, estimate: u64, retry_after: Option<Duration>) -> Duration {
        let fixed = if estimate <= LARGE_PROMPT_BYTES {
            self.settings.backoff_short
        } else {
            self.settings.backoff_long
        };
        let delay = match retry_after {
            Some(d) if self.settings.honour_retry_after => d,
            _ => fixed,
        };
        *self.backoff_until.lock().unwrap() = Some(Instant::now() + delay);
        self.backoffs.fetch_add(1, Ordering::Relaxed);
        delay
    }

    /// Time left of the holder-wide sampling back-off (12.5); zero when none is pending.
    pub fn backoff_remaining(&self) -> Duration {
        self.backoff_until
            .lock()
            .unwrap()
            .map_or(Duration::ZERO, |u| {
                u.saturating_duration_since(Instant::now())
            })
    }

    /// The counters.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            backoffs: self.backoffs.load(Ordering::Relaxed),
            throttled_dispatches: self.throttled_dispatches.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for SampleDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleDispatch")
            .field("stats", &self.stats())
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::ImageFormat;

    #[test]
    fn byte_estimate_follows_12_3() {
        let p = ModelInput {
            chunks: vec![
                Chunk::EncodedText {
                    tokens: vec![1, 2, 3],
                },
                Chunk::Image {
                    data: "abcd".into(), // base64 of 3 bytes
                    format: ImageFormat::Png,
                    expected_tokens: None,
                },
                Chunk::ImageAssetPointer {
                    format: ImageFormat::Png,
                    location: "s3://x".into(),
                    expected_tokens: Some(3),
                },
                Chunk::Dmel {
                    dmel: "AAECAw==".into(), // base64 of 4 bytes
                },
            ],
        };
        // Images and DMel count their decoded bytes, as the SDK's `len(chunk.data)` /
        // `len(chunk.dmel)` of `bytes` fields do.
        assert_eq!(estimate_bytes(&p), 30 + 3 + 6 + 4);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_recent_until_the_window_after_it_ends() {
        let d = SampleDispatch::new(SamplingSettings::default(), 1000);
        assert!(!d.backoff_requested_recently());
        assert_eq!(d.request_backoff(10, None), Duration::from_secs(1));
        assert!(d.backoff_requested_recently());
        assert_eq!(
            d.request_backoff(LARGE_PROMPT_BYTES + 1, None),
            Duration::from_secs(5)
        );
        let t0 = Instant::now();
        d.wait_backoff().await;
        assert!(t0.elapsed() >= Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert!(d.backoff_requested_recently());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!d.backoff_requested_recently());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_400_dispatches_at_once() {
        let d = SampleDispatch::new(SamplingSettings::default(), u64::MAX >> 2);
        let mut held = Vec::new();
        for _ in 0..DISPATCH_CONCURRENCY {
            held.push(d.acquire(1).await);
        }
        let d2 = d.clone();
        let next = tokio::spawn(async move { d2.acquire(1).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!next.is_finished(), "the 401st waits");
        held.pop();
        let _p = next.await.unwrap();
        assert_eq!(d.stats().max_in_flight, DISPATCH_CONCURRENCY as u64);
        assert_eq!(d.stats().throttled_dispatches, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn recent_backoff_throttles_count_and_bytes() {
        let d = SampleDispatch::new(SamplingSettings::default(), 1000);
        d.request_backoff(10, Some(Duration::from_millis(1)));
        let p = d.acquire(40).await;
        assert_eq!(d.byte_budget().remaining(), 1000 - 800, "×20 while recent");
        let mut held = vec![p];
        for _ in 1..THROTTLED_DISPATCH_CONCURRENCY {
            held.push(d.acquire(0).await);
        }
        let d2 = d.clone();
        let eleventh = tokio::spawn(async move { d2.acquire(0).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!eleventh.is_finished(), "only 10 while throttled");
        held.pop();
        let _p = eleventh.await.unwrap();
        assert_eq!(d.stats().max_in_flight, 10);
    }
}
