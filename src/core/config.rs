//! Client configuration: explicit arguments > environment > defaults (PROTOCOL.md 1.1, 2.1,
//! 18). Every timeout, interval and backoff is a [`Duration`] so long scenarios can be run
//! time-scaled in tests.

use crate::core::error::{Error, Result};
use std::fmt;
use std::time::Duration;

/// The official default base URL.
pub const DEFAULT_BASE_URL: &str = "https://tinker.thinkingmachines.dev/services/tinker-prod";

/// An API key (or JWT credential). Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Validates the format: `tml-…` API keys or `eyJ…` JWTs (PROTOCOL.md 2.2).
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let key = key.trim().to_string();
        if key.starts_with("tml-") && key.len() > 4 || key.starts_with("eyJ") {
            Ok(ApiKey(key))
        } else {
            Err(Error::user(
                "The api_key must start with the 'tml-' prefix (or be a JWT starting with 'eyJ')",
            ))
        }
    }

    /// The secret, for the `X-API-Key` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Per-purpose HTTP timeouts (PROTOCOL.md 1.4).
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect: Duration,
    /// Default read timeout of a request.
    pub request: Duration,
    /// `retrieve_future` read timeout (must exceed the server's long-poll hold).
    pub retrieve_future: Duration,
    /// `session_heartbeat`.
    pub heartbeat: Duration,
    /// `client/dynamic_config`.
    pub dynamic_config: Duration,
    /// `telemetry`.
    pub telemetry: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(60),
            retrieve_future: Duration::from_secs(45),
            heartbeat: Duration::from_secs(10),
            dynamic_config: Duration::from_secs(10),
            telemetry: Duration::from_secs(5),
        }
    }
}

/// The one retry policy used by every operation: submissions, polls and REST calls.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Fail every in-flight operation of a client when nothing progressed for this long.
    pub progress_timeout: Duration,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// ± jitter fraction applied to each delay (0.25 = ±25 %).
    pub jitter: f64,
    /// Cap on attempts of one request; `None` = unbounded (the progress timeout bounds it).
    pub max_attempts: Option<u32>,
    /// Longest `Retry-After` honoured; longer or non-positive values are ignored.
    pub max_retry_after: Duration,
    /// Sleep between retries while billing is paused (HTTP 402).
    pub billing_pause_step: Duration,
    /// How long a billing pause is waited out before 402 becomes an error.
    pub billing_max_pause: Duration,
    /// A 5xx/408 poll answer faster than this is treated as a broken proxy and backed off.
    pub min_poll_duration: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            progress_timeout: Duration::from_secs(7200),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            jitter: 0.25,
            max_attempts: None,
            max_retry_after: Duration::from_secs(60),
            billing_pause_step: Duration::from_secs(5),
            billing_max_pause: Duration::from_secs(3600),
            min_poll_duration: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `attempt` (0-based): `min(base × 2^attempt, max)` with
    /// `unit` in [0, 1) mapped to ±`jitter`, clamped to [0, max].
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay.as_secs_f64() * 2f64.powi(attempt.min(62) as i32);
        let d = base.min(self.max_delay.as_secs_f64());
        let jittered = d * (1.0 + self.jitter * (2.0 * unit - 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.max_delay.as_secs_f64()))
    }
}

/// Session heartbeat settings (PROTOCOL.md 5.6).
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatConfig {
    /// Time between beats.
    pub interval: Duration,
    /// Continuous failure after which a warning is logged (once per interval).
    pub warn_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(10),
            warn_after: Duration::from_secs(120),
        }
    }
}

/// Everything a [`ServiceClient`](crate::core::ServiceClient) needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The credential.
    pub api_key: ApiKey,
    /// Base URL, trailing `/` removed.
    pub base_url: String,
    /// Session tags.
    pub tags: Vec<String>,
    /// Project id for create_session.
    pub project_id: Option<String>,
    /// Human-readable session name.
    pub display_name: Option<String>,
    /// Send telemetry batches.
    pub telemetry: bool,
    /// Telemetry batching, queue and timeouts (`enabled` follows `telemetry`).
    pub telemetry_settings: crate::core::telemetry::TelemetryConfig,
    /// HTTP timeouts.
    pub timeouts: Timeouts,
    /// Retry and progress policy.
    pub retry: RetryPolicy,
    /// Heartbeat settings.
    pub heartbeat: HeartbeatConfig,
    /// Interval of progress events for pending operations.
    pub progress_event_interval: Duration,
}

/// Builds a [`Config`]; unset fields fall back to the environment, then to defaults.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    api_key: Option<String>,
    base_url: Option<String>,
    tags: Option<Vec<String>>,
    project_id: Option<String>,
    display_name: Option<String>,
    telemetry: Option<bool>,
    telemetry_settings: Option<crate::core::telemetry::TelemetryConfig>,
    allow_insecure_http: bool,
    timeouts: Option<Timeouts>,
    retry: Option<RetryPolicy>,
    heartbeat: Option<HeartbeatConfig>,
    progress_event_interval: Option<Duration>,
}

impl Config {
    /// A builder with nothing set.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Everything from the environment and defaults.
    pub fn from_env() -> Result<Self> {
        ConfigBuilder::default().build()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `TINKER_TELEMETRY` truthiness (PROTOCOL.md 2.1): on unless set to something other than
/// 1/true/yes/on.
fn telemetry_from_env() -> bool {
    match std::env::var("TINKER_TELEMETRY") {
        Ok(v) => matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ),
        Err(_) => true,
    }
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ConfigBuilder {
    /// The API key (else `TINKER_API_KEY`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The base URL (else `TINKER_BASE_URL`, else the official default).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Session tags (else `TINKER_TAGS`, comma-separated).
    pub fn tags(mut self, tags: Vec<String>) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Project id (else `TINKER_PROJECT_ID`).
    pub fn project_id(mut self, id: impl Into<String>) -> Self {
        self.project_id = Some(id.into());
        self
    }

    /// Human-readable session name.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Telemetry on or off (else `TINKER_TELEMETRY`, default on).
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = Some(on);
        self
    }

    /// Telemetry batching, queue bound and timeouts (defaults as the official SDK's).
    pub fn telemetry_settings(mut self, settings: crate::core::telemetry::TelemetryConfig) -> Self {
        self.telemetry_settings = Some(settings);
        self
    }

    /// Allows `http://` to non-loopback hosts (plain HTTP to loopback is always allowed).
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// HTTP timeouts.
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = Some(t);
        self
    }

    /// Retry and progress policy.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = Some(r);
        self
    }

    /// Heartbeat settings.
    pub fn heartbeat(mut self, h: HeartbeatConfig) -> Self {
        self.heartbeat = Some(h);
        self
    }

    /// Interval of progress events for pending operations (default 10 s).
    pub fn progress_event_interval(mut self, d: Duration) -> Self {
        self.progress_event_interval = Some(d);
        self
    }

    /// Resolves and validates; fails before any request on a missing or malformed key or URL.
    pub fn build(self) -> Result<Config> {
        let key = self
            .api_key
            .filter(|k| !k.trim().is_empty())
            .or_else(|| env_nonempty("TINKER_API_KEY"))
            .ok_or_else(|| {
                Error::new(
                    crate::core::error::ErrorKind::Auth,
                    "no API key: pass one explicitly or set TINKER_API_KEY",
                )
            })?;
        let api_key = ApiKey::new(key)?;
        let base_url = self
            .base_url
            .filter(|u| !u.trim().is_empty())
            .or_else(|| env_nonempty("TINKER_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(Error::user(format!(
                "base URL {base_url:?} must start with https:// (or http:// for loopback)"
            )));
        }
        if base_url.starts_with("http://")
            && !self.allow_insecure_http
            && !is_loopback_url(&base_url)
        {
            return Err(Error::user(format!(
                "refusing plain http:// to a non-loopback host ({base_url}); use https:// or allow_insecure_http(true)"
            )));
        }
        let tags = self.tags.unwrap_or_else(|| {
            let mut tags: Vec<String> = env_nonempty("TINKER_TAGS")
                .map(|t| {
                    t.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tags.sort();
            tags.dedup();
            tags
        });
        let telemetry_on = self.telemetry.unwrap_or_else(telemetry_from_env);
        Ok(Config {
            api_key,
            base_url,
            tags,
            project_id: self
                .project_id
                .or_else(|| env_nonempty("TINKER_PROJECT_ID")),
            display_name: self.display_name,
            telemetry: telemetry_on,
            telemetry_settings: crate::core::telemetry::TelemetryConfig {
                enabled: telemetry_on,
                ..self.telemetry_settings.unwrap_or_default()
            },
            timeouts: self.timeouts.unwrap_or_default(),
            retry: self.retry.unwrap_or_default(),
            heartbeat: self.heartbeat.unwrap_or_default(),
            progress_event_interval: self
                .progress_event_interval
                .unwrap_or(Duration::from_secs(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_validated_and_never_printed() {
        assert!(ApiKey::new("sk-123").is_err());
        let k = ApiKey::new("tml-secret-value").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
        let cfg = Config::builder()
            .api_key("tml-secret-value")
            .base_url("http://127.0.0.1:9/")
            .build()
            .unwrap();
        assert!(!format!("{cfg:?}").contains("secret-value"));
        assert_eq!(cfg.base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let b = || Config::builder().api_key("tml-x1");
        assert!(b().base_url("http://example.com").build().is_err());
        assert!(b()
            .base_url("http://example.com")
            .allow_insecure_http(true)
            .build()
            .is_ok());
        assert!(b().base_url("http://localhost:8000").build().is_ok());
        assert!(b().base_url("http://[::1]:8000/x").build().is_ok());
        assert!(b().base_url("ftp://x").build().is_err());
    }

    /// Property test over random policies, attempts and jitter draws: the delay stays within
    /// ±jitter of min(base·2ⁿ, max), never exceeds the cap, and is never negative.
    #[test]
    fn backoff_properties_hold_for_random_inputs() {
        for _ in 0..20_000 {
            let base = 0.001 + crate::core::rand::unit() * 2.0;
            let max = base + crate::core::rand::unit() * 30.0;
            let jitter = crate::core::rand::unit() * 0.5;
            let p = RetryPolicy {
                base_delay: Duration::from_secs_f64(base),
                max_delay: Duration::from_secs_f64(max),
                jitter,
                ..RetryPolicy::default()
            };
            let attempt = (crate::core::rand::next_u64() % 80) as u32;
            let unit = crate::core::rand::unit();
            let d = p.backoff(attempt, unit).as_secs_f64();
            let nominal = (base * 2f64.powi(attempt as i32)).min(max);
            assert!(d <= max + 1e-9, "capped: {d} > {max}");
            assert!(
                d >= nominal * (1.0 - jitter) - 1e-9,
                "{d} below the jitter range of {nominal}"
            );
            assert!(
                d <= nominal * (1.0 + jitter) + 1e-9,
                "{d} above the jitter range of {nominal}"
            );
        }
        // The jitter spans the whole ±25 % range of the default policy.
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(375));
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(625));
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.5), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(p.backoff(10, 0.5), Duration::from_secs(10));
        assert_eq!(
            p.backoff(10, 0.999),
            Duration::from_secs(10),
            "never above the cap"
        );
        assert!(p.backoff(0, 0.0) >= Duration::from_millis(375));
    }
}
