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
    /// Validates the format (PROTOCOL.md 2.2): a `tml-…` API key, or a JWT (`eyJ…`, three
    /// base64url segments) whose `exp` claim is readable and in the future. Either must be
    /// a valid header value of visible ASCII characters (no spaces or control characters),
    /// at most 16 KiB: a key that could never be sent is rejected here, not retried later.
    /// Surrounding whitespace is trimmed. Error messages (the SDK's, 2.2) never contain the
    /// key.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        use crate::core::auth;
        let key = key.into();
        let key = key.trim().to_string();
        let auth = |msg: &str| Error::user(msg);
        if !(key.starts_with("tml-") && key.len() > 4 || key.starts_with("eyJ")) {
            return Err(auth(auth::PREFIX_MESSAGE));
        }
        if key.len() > MAX_CREDENTIAL_BYTES {
            return Err(auth("The api_key is longer than 16 KiB"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(auth(
                "The api_key contains a space, a control character or a non-ASCII character",
            ));
        }
        if key.starts_with("eyJ") {
            let exp = auth::jwt_expiry(&key).ok_or_else(|| {
                auth("Failed to parse JWT expiry: the api_key looks like a JWT but has no readable exp claim")
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if exp <= now {
                return Err(auth(auth::STATIC_JWT_EXPIRED_MESSAGE));
            }
        }
        Ok(ApiKey(key))
    }

    /// The secret, for the `X-API-Key` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// The longest credential accepted.
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

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

/// The retry policy of every operation: the layers of PROTOCOL.md 13.1 (HTTP layer, holder
/// loop, billing pause), the backoff of polls, and the progress timeout that bounds them all.
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
    /// Optional cap on the total HTTP attempts of one send, over both retry layers; `None`
    /// (the default) = only the layers' own bounds (`http_max_retries`, `holder_window`).
    pub max_attempts: Option<u32>,
    /// HTTP-layer retries of one call (PROTOCOL.md 13.2; the SDK's `max_retries`, 10). The
    /// endpoints the SDK calls with `max_retries=0` (save_weights, save_weights_for_sampler,
    /// save_weights_external, asample, …; section 4) always get 0.
    pub http_max_retries: u32,
    /// How long the holder retry loop (13.4) re-issues a failed send: 300 s.
    pub holder_window: Duration,
    /// First wait of the holder loop (`min(base × 2^attempt, max)`): 1 s.
    pub holder_base_delay: Duration,
    /// Longest wait of the holder loop: 30 s.
    pub holder_max_delay: Duration,
    /// Longest `Retry-After` honoured; longer or non-positive values are ignored.
    pub max_retry_after: Duration,
    /// Sleep between retries while billing is paused (HTTP 402).
    pub billing_pause_step: Duration,
    /// How long a billing pause is waited out before 402 becomes an error; the effective
    /// maximum is the smaller of this and the server's
    /// `billing_exception_max_pause_duration_sec` (13.7).
    pub billing_max_pause: Duration,
    /// Shortest time between two billing-pause WARNING lines: 60 s.
    pub billing_log_interval: Duration,
    /// A billing incident ends when no 402 was logged for this long: 300 s.
    pub billing_incident_reset: Duration,
    /// A poll answer that took at least this long was held by the server (a long poll): it
    /// resets the poll backoff and the next poll goes out at once. A faster error answer
    /// (a 5xx or 408 from a proxy, not a long poll) grows the backoff instead (8.1.3).
    pub min_poll_duration: Duration,
    /// First delay after a poll that failed without being held (instant 5xx/408/429,
    /// connection error), and the pacing of a try-again answered without a hold.
    pub poll_backoff_initial: Duration,
    /// Cap of the poll backoff: bounds how late a result is seen after a fault ends.
    pub poll_backoff_max: Duration,
    /// Growth factor of the poll backoff per consecutive unheld failure (≥ 1).
    pub poll_backoff_growth: f64,
    /// Sleep of the `retrieve_futures` poller after a retryable error (8.2.3: 1 s).
    pub futures_poller_retry_delay: Duration,
    /// HTTP timeout of an ack-only `retrieve_futures` poll (`timeout: 0`; 1.4: 5 s). The long
    /// poll uses [`Timeouts::retrieve_future`].
    pub futures_ack_timeout: Duration,
    /// HTTP timeout of one `cancel_future` request (1.4: 30 s).
    pub cancel_future_timeout: Duration,
    /// Sleep between two polls of `export_session_trace` while the export is `pending`
    /// (9.10: 5 s).
    pub trace_export_poll_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            progress_timeout: Duration::from_secs(7200),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            jitter: 0.25,
            max_attempts: None,
            http_max_retries: 10,
            holder_window: Duration::from_secs(300),
            holder_base_delay: Duration::from_secs(1),
            holder_max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            billing_pause_step: Duration::from_secs(5),
            billing_max_pause: Duration::from_secs(3600),
            billing_log_interval: Duration::from_secs(60),
            billing_incident_reset: Duration::from_secs(300),
            min_poll_duration: Duration::from_secs(1),
            poll_backoff_initial: Duration::from_millis(100),
            poll_backoff_max: Duration::from_millis(1500),
            poll_backoff_growth: 2.0,
            futures_poller_retry_delay: Duration::from_secs(1),
            futures_ack_timeout: Duration::from_secs(5),
            cancel_future_timeout: Duration::from_secs(30),
            trace_export_poll_interval: Duration::from_secs(5),
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

    /// The HTTP layer's delay before retry number `n` (PROTOCOL.md 13.2):
    /// `min(base × 2^n, max) × (1 − jitter × unit)` with `unit` in [0, 1), i.e. the jitter
    /// only shortens the delay.
    pub fn http_backoff(&self, n: u32, unit: f64) -> Duration {
        let base = self.base_delay.as_secs_f64() * 2f64.powi(n.min(62) as i32);
        let d = base.min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64((d * (1.0 - self.jitter * unit.clamp(0.0, 1.0))).max(0.0))
    }

    /// The holder loop's wait before re-issuing after attempt `attempt` (13.4):
    /// `min(holder_base_delay × 2^attempt, holder_max_delay)`, no jitter.
    pub fn holder_backoff(&self, attempt: u32) -> Duration {
        let d = self.holder_base_delay.as_secs_f64() * 2f64.powi(attempt.min(62) as i32);
        Duration::from_secs_f64(d.min(self.holder_max_delay.as_secs_f64()))
    }

    /// Delay before the next poll after `streak` consecutive unheld poll failures (≥ 1):
    /// `min(initial × growth^(streak-1), max)`, reduced by up to `jitter` (`unit` in [0, 1))
    /// so concurrent futures spread out instead of polling in lockstep.
    pub fn poll_backoff(&self, streak: u32, unit: f64) -> Duration {
        let n = streak.saturating_sub(1).min(64) as i32;
        let d = self.poll_backoff_initial.as_secs_f64() * self.poll_backoff_growth.max(1.0).powi(n);
        let d = d.min(self.poll_backoff_max.as_secs_f64());
        let jittered = d * (1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// Session heartbeat settings (PROTOCOL.md 5.6).
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatConfig {
    /// Time between beats.
    pub interval: Duration,
    /// Continuous failure after which each failed heartbeat emits a `HeartbeatWarning` event.
    pub warn_after: Duration,
    /// Shortest time between two heartbeat WARNING log lines (60 s).
    pub warn_log_interval: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(10),
            warn_after: Duration::from_secs(120),
            warn_log_interval: Duration::from_secs(60),
        }
    }
}

/// Everything a [`ServiceClient`](crate::core::ServiceClient) needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The credential sources (PROTOCOL.md 2.3): API key, credential command, credentials
    /// file; `Debug` shows none of them.
    pub credentials: crate::core::auth::Credentials,
    /// Base URL, trailing `/` removed.
    pub base_url: String,
    /// Session tags.
    pub tags: Vec<String>,
    /// Project id for create_session.
    pub project_id: Option<String>,
    /// Human-readable session name.
    pub display_name: Option<String>,
    /// Metadata of the session, sent with create_session (PROTOCOL.md 5.5).
    pub user_metadata: std::collections::BTreeMap<String, String>,
    /// Headers sent on every request to the base URL's origin, applied over the Cloudflare
    /// access headers (1.6.1, `default_headers_overrides`); `Debug` shows only their names.
    pub default_headers_overrides: HeaderOverrides,
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
    /// Bounds on what is read from the server.
    pub limits: Limits,
    /// Sampling back-off and queue-state log timings (PROTOCOL.md 12.5, 15.2).
    pub sampling: crate::core::dispatch::SamplingSettings,
}

/// Builds a [`Config`]; unset fields fall back to the environment, then to defaults.
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    api_key: Option<String>,
    credential_cmd: Option<String>,
    credentials_file: Option<std::path::PathBuf>,
    auth: Option<crate::core::auth::AuthSettings>,
    base_url: Option<String>,
    tags: Option<Vec<String>>,
    project_id: Option<String>,
    display_name: Option<String>,
    user_metadata: Option<std::collections::BTreeMap<String, String>>,
    default_headers_overrides: Option<std::collections::BTreeMap<String, String>>,
    telemetry: Option<bool>,
    telemetry_settings: Option<crate::core::telemetry::TelemetryConfig>,
    allow_insecure_http: bool,
    timeouts: Option<Timeouts>,
    retry: Option<RetryPolicy>,
    heartbeat: Option<HeartbeatConfig>,
    progress_event_interval: Option<Duration>,
    limits: Option<Limits>,
    sampling: Option<crate::core::dispatch::SamplingSettings>,
}

impl fmt::Debug for ConfigBuilder {
    /// Shows which fields are set; never the key, and the base URL without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "credential_cmd",
                &self.credential_cmd.as_ref().map(|_| "<redacted>"),
            )
            .field("credentials_file", &self.credentials_file)
            .field("auth", &self.auth)
            .field(
                "base_url",
                &self
                    .base_url
                    .as_deref()
                    .map(crate::core::sanitize::redact_url),
            )
            .field("tags", &self.tags)
            .field("project_id", &self.project_id)
            .field("display_name", &self.display_name)
            .field("user_metadata", &self.user_metadata)
            .field(
                "default_headers_overrides",
                &self
                    .default_headers_overrides
                    .as_ref()
                    .map(|h| h.keys().collect::<Vec<_>>()),
            )
            .field("telemetry", &self.telemetry)
            .field("telemetry_settings", &self.telemetry_settings)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .field("heartbeat", &self.heartbeat)
            .field("progress_event_interval", &self.progress_event_interval)
            .field("limits", &self.limits)
            .field("sampling", &self.sampling)
            .finish()
    }
}

/// Bounds on what the client reads from the server (see `docs/security.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most bytes read of a response body whose size the server did not announce ahead
    /// (every response but a result fetched after a `response_payload_size` announcement).
    /// A longer body fails the attempt with a typed error instead of growing memory.
    pub max_response_bytes: u64,
    /// Hard cap on any body, announced or not: a `response_payload_size` above it fails.
    pub max_announced_response_bytes: u64,
    /// Most redirects followed for one request (same origin; another origin is fetched
    /// without credentials and counts too).
    pub max_redirects: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_announced_response_bytes: 2 * 1024 * 1024 * 1024,
            max_redirects: 10,
        }
    }
}

/// Default of [`Limits::max_response_bytes`]: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

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

/// Parses and checks a base URL: `https://`, or `http://` to a loopback host (or any host
/// when `allow_insecure_http`); no user name or password (credentials go in the API key);
/// no query or fragment (paths are appended to it). Error messages show the URL without
/// credentials or query.
pub fn parse_base_url(raw: &str, allow_insecure_http: bool) -> Result<url::Url> {
    use crate::core::sanitize::redact_url;
    let shown = || redact_url(raw);
    if raw.len() > 2048 {
        return Err(Error::user("base URL is longer than 2048 bytes"));
    }
    // The URL parser would quietly percent-encode or drop these; a base URL that needs
    // them is a mistake (or an attack), not something to repair.
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::user(
            "base URL contains whitespace or control characters",
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| Error::user(format!("base URL {} is not a valid URL: {e}", shown())))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(Error::user(format!(
            "base URL {} must start with https:// (or http:// for loopback)",
            shown()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::user(format!(
            "base URL {} must not contain a user name or password; pass the API key instead",
            shown()
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::user(format!(
            "base URL {} must not contain a query or fragment",
            shown()
        )));
    }
    let Some(host) = url.host() else {
        return Err(Error::user(format!("base URL {} has no host", shown())));
    };
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback_host(&host) {
        return Err(Error::user(format!(
            "refusing plain http:// to a non-loopback host ({}); use https:// or allow_insecure_http(true)",
            shown()
        )));
    }
    Ok(url)
}

/// Whether a parsed host is this machine: `localhost` or a loopback address (IPv4 or IPv6,
/// including IPv4-mapped IPv6).
fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Rejects a zero (or absurdly long) duration for a setting that drives a loop or a wait.
fn check_interval(name: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::user(format!(
            "{name} must be greater than zero (a zero interval would spin)"
        )));
    }
    if d > Duration::from_secs(365 * 24 * 3600) {
        return Err(Error::user(format!("{name} must be at most a year")));
    }
    Ok(())
}

impl Config {
    /// Checks every duration and bound: no zero interval, timeout or delay anywhere (zero
    /// never means "off": to turn telemetry off use `telemetry(false)`), the jitter in
    /// [0, 1], the backoff cap not below its base, limits above zero. Called by
    /// [`ConfigBuilder::build`].
    pub fn validate(&self) -> Result<()> {
        let t = &self.timeouts;
        for (name, d) in [
            ("timeouts.connect", t.connect),
            ("timeouts.request", t.request),
            ("timeouts.retrieve_future", t.retrieve_future),
            ("timeouts.heartbeat", t.heartbeat),
            ("timeouts.dynamic_config", t.dynamic_config),
            ("timeouts.telemetry", t.telemetry),
            ("heartbeat.interval", self.heartbeat.interval),
            ("heartbeat.warn_after", self.heartbeat.warn_after),
            ("progress_event_interval", self.progress_event_interval),
            ("retry.progress_timeout", self.retry.progress_timeout),
            ("retry.base_delay", self.retry.base_delay),
            ("retry.max_delay", self.retry.max_delay),
            ("retry.billing_pause_step", self.retry.billing_pause_step),
            ("retry.holder_window", self.retry.holder_window),
            ("retry.holder_base_delay", self.retry.holder_base_delay),
            ("retry.holder_max_delay", self.retry.holder_max_delay),
            (
                "retry.billing_log_interval",
                self.retry.billing_log_interval,
            ),
            (
                "retry.billing_incident_reset",
                self.retry.billing_incident_reset,
            ),
            (
                "heartbeat.warn_log_interval",
                self.heartbeat.warn_log_interval,
            ),
            (
                "auth.credential_cmd_timeout",
                self.credentials.settings().credential_cmd_timeout,
            ),
            (
                "auth.refresh_retry",
                self.credentials.settings().refresh_retry,
            ),
            (
                "auth.exchange_timeout",
                self.credentials.settings().exchange_timeout,
            ),
            (
                "retry.poll_backoff_initial",
                self.retry.poll_backoff_initial,
            ),
            ("retry.poll_backoff_max", self.retry.poll_backoff_max),
            (
                "retry.futures_poller_retry_delay",
                self.retry.futures_poller_retry_delay,
            ),
            ("retry.futures_ack_timeout", self.retry.futures_ack_timeout),
            (
                "retry.cancel_future_timeout",
                self.retry.cancel_future_timeout,
            ),
            (
                "retry.trace_export_poll_interval",
                self.retry.trace_export_poll_interval,
            ),
        ] {
            check_interval(name, d)?;
        }
        self.telemetry_settings.validate()?;
        self.sampling.validate()?;
        let r = &self.retry;
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(Error::user(format!(
                "retry.jitter must be in [0, 1], got {}",
                r.jitter
            )));
        }
        if r.max_delay < r.base_delay {
            return Err(Error::user(
                "retry.max_delay must not be below retry.base_delay",
            ));
        }
        if !(r.poll_backoff_growth >= 1.0 && r.poll_backoff_growth <= 100.0) {
            return Err(Error::user(format!(
                "retry.poll_backoff_growth must be in [1, 100], got {}",
                r.poll_backoff_growth
            )));
        }
        if r.poll_backoff_max < r.poll_backoff_initial {
            return Err(Error::user(
                "retry.poll_backoff_max must not be below retry.poll_backoff_initial",
            ));
        }
        if r.max_attempts == Some(0) {
            return Err(Error::user(
                "retry.max_attempts must be at least 1 (or unset)",
            ));
        }
        let l = &self.limits;
        if l.max_response_bytes == 0 || l.max_announced_response_bytes < l.max_response_bytes {
            return Err(Error::user(
                "limits.max_response_bytes must be above zero and not above limits.max_announced_response_bytes",
            ));
        }
        Ok(())
    }
}

impl ConfigBuilder {
    /// The API key (else `TINKER_API_KEY`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The credential command, run through `sh -c` (else `TINKER_CREDENTIAL_CMD`, 2.6).
    pub fn credential_cmd(mut self, command: impl Into<String>) -> Self {
        self.credential_cmd = Some(command.into());
        self
    }

    /// The credentials file (else `$HOME/.tinker/credentials.json`, 2.4).
    pub fn credentials_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Timeouts and intervals of the authentication flow (defaults as the official SDK's).
    pub fn auth_settings(mut self, settings: crate::core::auth::AuthSettings) -> Self {
        self.auth = Some(settings);
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

    /// Metadata of the session (create_session's `user_metadata`, PROTOCOL.md 5.5).
    pub fn user_metadata(mut self, metadata: std::collections::BTreeMap<String, String>) -> Self {
        self.user_metadata = Some(metadata);
        self
    }

    /// Headers sent on every request to the base URL's origin, over the Cloudflare access
    /// headers (PROTOCOL.md 1.6.1). At most [`MAX_HEADER_OVERRIDES`] entries; a name or value
    /// that cannot be sent, or an attempt to set the credential header, fails `build`.
    pub fn default_headers_overrides(
        mut self,
        headers: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.default_headers_overrides = Some(headers);
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

    /// Bounds on what is read from the server.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Sampling back-off and queue-state log timings.
    pub fn sampling(mut self, s: crate::core::dispatch::SamplingSettings) -> Self {
        self.sampling = Some(s);
        self
    }

    /// Resolves and validates; fails before any request on a missing or malformed key or URL.
    pub fn build(self) -> Result<Config> {
        let credentials = crate::core::auth::Credentials::from_sources(
            self.api_key,
            self.credential_cmd,
            self.credentials_file,
            self.auth.unwrap_or_default(),
        )?;
        // Fails now (before any request) when no usable source is configured (2.3).
        credentials.resolve(false)?;
        let base_url = self
            .base_url
            .filter(|u| !u.trim().is_empty())
            .or_else(|| env_nonempty("TINKER_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        // Kept in the parser's normalized form (what is actually requested).
        let base_url = parse_base_url(&base_url, self.allow_insecure_http)?
            .as_str()
            .trim_end_matches('/')
            .to_string();
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
        let config = Config {
            credentials,
            base_url,
            tags,
            project_id: self
                .project_id
                .or_else(|| env_nonempty("TINKER_PROJECT_ID")),
            display_name: self.display_name,
            user_metadata: check_user_metadata(self.user_metadata.unwrap_or_default())?,
            default_headers_overrides: HeaderOverrides(check_header_overrides(
                self.default_headers_overrides.unwrap_or_default(),
            )?),
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
            limits: self.limits.unwrap_or_default(),
            sampling: self.sampling.unwrap_or_default(),
        };
        config.validate()?;
        Ok(config)
    }
}

// ------------------------------------------------------------------------------------------
// JSON form (the C ABI's `tinkex_service_client_new` input)
// ------------------------------------------------------------------------------------------

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

/// The JSON form of a configuration: every field optional; durations in milliseconds
/// (`*_ms`). Unset fields fall back to the `TINKER_*` environment variables, then to the
/// defaults. [`ConfigInput::into_builder`] applies it; [`Config::try_from`] also validates.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConfigInput {
    /// API key or JWT (else `TINKER_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Shell command printing a credential (else `TINKER_CREDENTIAL_CMD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_cmd: Option<String>,
    /// Path of the credentials file (else `$HOME/.tinker/credentials.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// Timeouts and intervals of the authentication flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthInput>,
    /// Base URL (else `TINKER_BASE_URL`, else the official service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Session tags (else `TINKER_TAGS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Project to bill and group under (else `TINKER_PROJECT_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Human-readable session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Metadata of the session (create_session's `user_metadata`, PROTOCOL.md 5.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Headers sent on every request to the base URL's origin (PROTOCOL.md 1.6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_headers_overrides: Option<std::collections::BTreeMap<String, String>>,
    /// Send telemetry (else `TINKER_TELEMETRY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<bool>,
    /// Telemetry queue and batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_settings: Option<TelemetryInput>,
    /// Allow a plain `http://` base URL for a non-loopback host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_http: Option<bool>,
    /// Per-request timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsInput>,
    /// Retry and progress policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryInput>,
    /// Session heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatInput>,
    /// Period of progress events for pending operations, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_event_interval_ms: Option<u64>,
    /// Response size and redirect limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsInput>,
    /// Sampling back-off and queue-state log timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::core::dispatch::SamplingSettingsInput>,
}

/// JSON form of [`crate::core::auth::AuthSettings`], ms; unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuthInput {
    /// Longest run of the credential command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_cmd_timeout_ms: Option<u64>,
    /// A cached JWT is used while more than this remains before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_margin_ms: Option<u64>,
    /// Delay before retrying a failed background JWT refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_retry_ms: Option<u64>,
    /// HTTP-layer retries of one JWT exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_max_retries: Option<u32>,
    /// Read timeout of one JWT exchange attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_timeout_ms: Option<u64>,
}

/// JSON form of [`Timeouts`], ms; unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TimeoutsInput {
    /// TCP/TLS connect timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Whole-request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// Timeout of one `retrieve_future` long-poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieve_future_ms: Option<u64>,
    /// Timeout of one heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Timeout of a `client/dynamic_config` refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_config_ms: Option<u64>,
    /// Timeout of a telemetry send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_ms: Option<u64>,
}

/// JSON form of [`RetryPolicy`], ms; unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetryInput {
    /// Fail when nothing progressed for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_timeout_ms: Option<u64>,
    /// First backoff delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay_ms: Option<u64>,
    /// Backoff cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Random share of each delay, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Cap on the total HTTP attempts of one send over both retry layers; absent or null =
    /// none (the layers' own bounds apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// HTTP-layer retries per call (default 10; some endpoints always 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_max_retries: Option<u32>,
    /// Window of the holder retry loop (default 300 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_window_ms: Option<u64>,
    /// First wait of the holder retry loop (default 1 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_base_delay_ms: Option<u64>,
    /// Longest wait of the holder retry loop (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_max_delay_ms: Option<u64>,
    /// Longest server-requested `Retry-After` honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u64>,
    /// Step of the billing (402) pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_pause_step_ms: Option<u64>,
    /// Longest billing pause (the server's value applies when smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_max_pause_ms: Option<u64>,
    /// Shortest time between two billing-pause warnings (default 60 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_log_interval_ms: Option<u64>,
    /// Quiet time after which a new 402 starts a new billing incident (default 300 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_incident_reset_ms: Option<u64>,
    /// A poll answered after at least this long was held (resets the poll backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_poll_duration_ms: Option<u64>,
    /// Sleep between two polls of `export_session_trace` (default 5 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_export_poll_interval_ms: Option<u64>,
    /// First delay after an unheld poll failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_backoff_initial_ms: Option<u64>,
    /// Cap of the poll backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_backoff_max_ms: Option<u64>,
    /// Growth factor of the poll backoff, in [1, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_backoff_growth: Option<f64>,
    /// Sleep of the `retrieve_futures` poller after a retryable error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futures_poller_retry_delay_ms: Option<u64>,
    /// HTTP timeout of an ack-only `retrieve_futures` poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futures_ack_timeout_ms: Option<u64>,
    /// HTTP timeout of one `cancel_future` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_future_timeout_ms: Option<u64>,
}

/// JSON form of [`HeartbeatConfig`], ms; unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HeartbeatInput {
    /// Time between heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Warn (event) after heartbeats failed for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_after_ms: Option<u64>,
    /// Shortest time between two heartbeat warning log lines (default 60 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_log_interval_ms: Option<u64>,
}

/// JSON form of [`crate::core::telemetry::TelemetryConfig`]; unset fields keep their
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TelemetryInput {
    /// Events per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Time between periodic flushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// Events kept in memory at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    /// Cap on one batch's send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_timeout_ms: Option<u64>,
    /// How long a shutdown drain may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
}

/// JSON form of [`Limits`]; unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LimitsInput {
    /// Largest response body read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// Largest result announced by a metadata-only response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_announced_response_bytes: Option<u64>,
    /// Redirects followed at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<u32>,
}

impl ConfigInput {
    /// A builder with every given field applied (nothing is validated yet: see
    /// [`ConfigBuilder::build`]).
    pub fn into_builder(self) -> ConfigBuilder {
        let mut b = Config::builder();
        if let Some(v) = self.api_key {
            b = b.api_key(v);
        }
        if let Some(v) = self.credential_cmd {
            b = b.credential_cmd(v);
        }
        if let Some(v) = self.credentials_file {
            b = b.credentials_file(v);
        }
        if let Some(a) = self.auth {
            let d = crate::core::auth::AuthSettings::default();
            b = b.auth_settings(crate::core::auth::AuthSettings {
                credential_cmd_timeout: ms(a.credential_cmd_timeout_ms, d.credential_cmd_timeout),
                refresh_margin: ms(a.refresh_margin_ms, d.refresh_margin),
                refresh_retry: ms(a.refresh_retry_ms, d.refresh_retry),
                exchange_max_retries: a.exchange_max_retries.unwrap_or(d.exchange_max_retries),
                exchange_timeout: ms(a.exchange_timeout_ms, d.exchange_timeout),
            });
        }
        if let Some(v) = self.base_url {
            b = b.base_url(v);
        }
        if let Some(v) = self.tags {
            b = b.tags(v);
        }
        if let Some(v) = self.project_id {
            b = b.project_id(v);
        }
        if let Some(v) = self.display_name {
            b = b.display_name(v);
        }
        if let Some(v) = self.user_metadata {
            b = b.user_metadata(v);
        }
        if let Some(v) = self.default_headers_overrides {
            b = b.default_headers_overrides(v);
        }
        if let Some(v) = self.telemetry {
            b = b.telemetry(v);
        }
        if let Some(t) = self.telemetry_settings {
            let d = crate::core::telemetry::TelemetryConfig::default();
            b = b.telemetry_settings(crate::core::telemetry::TelemetryConfig {
                max_batch: t.max_batch.unwrap_or(d.max_batch),
                flush_interval: ms(t.flush_interval_ms, d.flush_interval),
                max_queue: t.max_queue.unwrap_or(d.max_queue),
                http_timeout: ms(t.http_timeout_ms, d.http_timeout),
                drain_timeout: ms(t.drain_timeout_ms, d.drain_timeout),
                ..d
            });
        }
        if let Some(v) = self.allow_insecure_http {
            b = b.allow_insecure_http(v);
        }
        if let Some(t) = self.timeouts {
            let d = Timeouts::default();
            b = b.timeouts(Timeouts {
                connect: ms(t.connect_ms, d.connect),
                request: ms(t.request_ms, d.request),
                retrieve_future: ms(t.retrieve_future_ms, d.retrieve_future),
                heartbeat: ms(t.heartbeat_ms, d.heartbeat),
                dynamic_config: ms(t.dynamic_config_ms, d.dynamic_config),
                telemetry: ms(t.telemetry_ms, d.telemetry),
            });
        }
        if let Some(r) = self.retry {
            let d = RetryPolicy::default();
            b = b.retry(RetryPolicy {
                progress_timeout: ms(r.progress_timeout_ms, d.progress_timeout),
                base_delay: ms(r.base_delay_ms, d.base_delay),
                max_delay: ms(r.max_delay_ms, d.max_delay),
                jitter: r.jitter.unwrap_or(d.jitter),
                max_attempts: r.max_attempts.or(d.max_attempts),
                http_max_retries: r.http_max_retries.unwrap_or(d.http_max_retries),
                holder_window: ms(r.holder_window_ms, d.holder_window),
                holder_base_delay: ms(r.holder_base_delay_ms, d.holder_base_delay),
                holder_max_delay: ms(r.holder_max_delay_ms, d.holder_max_delay),
                max_retry_after: ms(r.max_retry_after_ms, d.max_retry_after),
                billing_pause_step: ms(r.billing_pause_step_ms, d.billing_pause_step),
                billing_max_pause: ms(r.billing_max_pause_ms, d.billing_max_pause),
                billing_log_interval: ms(r.billing_log_interval_ms, d.billing_log_interval),
                billing_incident_reset: ms(r.billing_incident_reset_ms, d.billing_incident_reset),
                min_poll_duration: ms(r.min_poll_duration_ms, d.min_poll_duration),
                poll_backoff_initial: ms(r.poll_backoff_initial_ms, d.poll_backoff_initial),
                poll_backoff_max: ms(r.poll_backoff_max_ms, d.poll_backoff_max),
                poll_backoff_growth: r.poll_backoff_growth.unwrap_or(d.poll_backoff_growth),
                futures_poller_retry_delay: ms(
                    r.futures_poller_retry_delay_ms,
                    d.futures_poller_retry_delay,
                ),
                futures_ack_timeout: ms(r.futures_ack_timeout_ms, d.futures_ack_timeout),
                cancel_future_timeout: ms(r.cancel_future_timeout_ms, d.cancel_future_timeout),
                trace_export_poll_interval: ms(
                    r.trace_export_poll_interval_ms,
                    d.trace_export_poll_interval,
                ),
            });
        }
        if let Some(h) = self.heartbeat {
            let d = HeartbeatConfig::default();
            b = b.heartbeat(HeartbeatConfig {
                interval: ms(h.interval_ms, d.interval),
                warn_after: ms(h.warn_after_ms, d.warn_after),
                warn_log_interval: ms(h.warn_log_interval_ms, d.warn_log_interval),
            });
        }
        if let Some(v) = self.progress_event_interval_ms {
            b = b.progress_event_interval(Duration::from_millis(v));
        }
        if let Some(l) = self.limits {
            let d = Limits::default();
            b = b.limits(Limits {
                max_response_bytes: l.max_response_bytes.unwrap_or(d.max_response_bytes),
                max_announced_response_bytes: l
                    .max_announced_response_bytes
                    .unwrap_or(d.max_announced_response_bytes),
                max_redirects: l.max_redirects.unwrap_or(d.max_redirects),
            });
        }
        if let Some(s) = self.sampling {
            b = b.sampling(s.into());
        }
        b
    }
}

impl TryFrom<ConfigInput> for Config {
    type Error = Error;

    /// Applies the input over the environment and defaults and validates the result.
    fn try_from(input: ConfigInput) -> Result<Config> {
        input.into_builder().build()
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

    /// PROTOCOL.md 13.2 and 13.4: the HTTP layer's `min(0.5·2ⁿ, 10)·(1 − 0.25·U)` and the
    /// holder loop's `min(2ⁿ, 30)`.
    #[test]
    fn layer_backoffs_follow_the_sdk() {
        let p = RetryPolicy::default();
        assert_eq!(p.http_backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.http_backoff(0, 1.0), Duration::from_millis(375));
        assert_eq!(p.http_backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.http_backoff(9, 0.0), Duration::from_secs(10));
        for _ in 0..1000 {
            let d = p.http_backoff(1, crate::core::rand::unit());
            assert!(
                d > Duration::from_millis(750) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        assert_eq!(p.holder_backoff(0), Duration::from_secs(1));
        assert_eq!(p.holder_backoff(4), Duration::from_secs(16));
        assert_eq!(p.holder_backoff(5), Duration::from_secs(30));
        assert_eq!(p.holder_backoff(60), Duration::from_secs(30));
        assert_eq!(p.http_max_retries, 10);
        assert_eq!(p.holder_window, Duration::from_secs(300));
    }
}

/// The most `default_headers_overrides` entries accepted.
pub const MAX_HEADER_OVERRIDES: usize = 64;
/// The most bytes of one override's name plus value.
const MAX_HEADER_OVERRIDE_BYTES: usize = 8 * 1024;
/// The most `user_metadata` entries, and bytes of one key plus value.
const MAX_USER_METADATA: usize = 256;
const MAX_USER_METADATA_BYTES: usize = 16 * 1024;

/// Validates `default_headers_overrides`: bounded, sendable, and never the credential
/// header (the key travels only through the auth flow). Names are lower-cased. Error messages
/// name the header, never its value.
fn check_header_overrides(
    headers: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    if headers.len() > MAX_HEADER_OVERRIDES {
        return Err(Error::user(format!(
            "default_headers_overrides: at most {MAX_HEADER_OVERRIDES} headers, got {}",
            headers.len()
        )));
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let shown: String = name.chars().take(64).collect();
        if name.len() + value.len() > MAX_HEADER_OVERRIDE_BYTES
            || reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err()
        {
            return Err(Error::user(format!(
                "default_headers_overrides: {shown:?} is not a valid header name (or is too long)"
            )));
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(Error::user(format!(
                "default_headers_overrides: the value of {shown:?} cannot be sent in a header"
            )));
        }
        if matches!(
            lower.as_str(),
            "x-api-key" | "authorization" | "host" | "content-length"
        ) {
            return Err(Error::user(format!(
                "default_headers_overrides: {shown:?} is set by the client itself (pass credentials with api_key)"
            )));
        }
        out.insert(lower, value);
    }
    Ok(out)
}

/// Bounds the session's `user_metadata`.
fn check_user_metadata(
    m: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    if m.len() > MAX_USER_METADATA
        || m.iter()
            .any(|(k, v)| k.len() + v.len() > MAX_USER_METADATA_BYTES)
    {
        return Err(Error::user(format!(
            "user_metadata: at most {MAX_USER_METADATA} entries of at most {MAX_USER_METADATA_BYTES} bytes each"
        )));
    }
    Ok(m)
}

/// `default_headers_overrides` (lower-case name → value). Values may be credentials (e.g.
/// Cloudflare access tokens): `Debug` shows the names only.
#[derive(Clone, Default, PartialEq)]
pub struct HeaderOverrides(pub std::collections::BTreeMap<String, String>);

impl std::ops::Deref for HeaderOverrides {
    type Target = std::collections::BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for HeaderOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}
