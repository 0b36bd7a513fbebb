//! Credentials and authentication (PROTOCOL.md 2.1–2.7, 3.2, 5.3).
//!
//! * [`Credentials`]: the credential sources as configured — the `api_key` argument or
//!   `TINKER_API_KEY`, the credential command (`TINKER_CREDENTIAL_CMD`, run through `sh -c`)
//!   and the stored default key of the credentials file (`~/.tinker/credentials.json`) — with
//!   the precedence of 2.3 ([`Credentials::resolve`]).
//! * [`Auth`]: the per-client state. `client/config` (and `auth/token`) always carry the raw
//!   credential; the flags of `client/config` choose the mode for everything else (2.5): the
//!   plain API key, or short-lived JWTs from `POST /api/v1/auth/token`, cached, refreshed in
//!   the background at half their lifetime and replaced once when the server rejects one
//!   with `WWW-Authenticate: … error="invalid_token"` (2.7).
//!
//! Secrets (the raw credential, JWTs, the command's output) never appear in a log line, an
//! error, an event or a `Debug` output; they travel only in the `X-API-Key` header to the
//! base URL's origin ([`crate::core::transport::Transport`]).

use crate::core::config::ApiKey;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::transport::{Pool, Request, Response, Transport};
use crate::core::types::ClientConfig;
use crate::core::ClientCore;
use reqwest::header::HeaderValue;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// 2.3: no credential source at all.
pub const MISSING_API_KEY_MESSAGE: &str = "The api_key client option must be set by passing api_key to the client, by setting the TINKER_API_KEY environment variable, or by storing a key with `tinker auth login`";

/// 2.2: a credential that is neither a `tml-` key nor a JWT.
pub const PREFIX_MESSAGE: &str = "The api_key must start with the 'tml-' prefix";

/// 2.3: the server requires the credential command and none is set.
pub const ENFORCE_CMD_MESSAGE: &str = "Your organization requires dynamic credentials — set TINKER_CREDENTIAL_CMD to a command that prints a valid credential.";

/// 2.2: a static JWT credential whose `exp` has passed.
pub const STATIC_JWT_EXPIRED_MESSAGE: &str = "The api_key JWT has expired. Pass a fresh one, or remove it and set TINKER_CREDENTIAL_CMD to a command that prints one.";

/// 2.6: the command printed nothing.
pub const CMD_EMPTY_MESSAGE: &str = "TINKER_CREDENTIAL_CMD returned an empty credential.";

/// 2.6: the command printed a JWT whose `exp` has passed.
pub const CMD_EXPIRED_MESSAGE: &str = "TINKER_CREDENTIAL_CMD printed an expired JWT.";

/// The path of `client/config`, always sent with the raw credential (5.3).
pub const CLIENT_CONFIG_PATH: &str = "/api/v1/client/config";

/// The path of the JWT exchange, always sent with the raw credential (2.7).
pub const AUTH_TOKEN_PATH: &str = "/api/v1/auth/token";

/// A boxed future (breaks the transport ↔ auth async recursion).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Most bytes read from the credential command's stdout.
const MAX_CMD_OUTPUT: u64 = 64 * 1024;

/// Tunables of the authentication flow. Defaults are the official SDK's where it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSettings {
    /// Longest run of the credential command (the SDK has none: a hanging command would hang
    /// the client). Default 60 s.
    pub credential_cmd_timeout: Duration,
    /// A cached JWT is used while more than this remains before its `exp` (SDK: 60 s).
    pub refresh_margin: Duration,
    /// Delay before retrying a failed background refresh, and the refresh delay of a JWT
    /// whose `iat`/`exp` cannot be read (SDK: 60 s).
    pub refresh_retry: Duration,
    /// HTTP-layer retries of one `auth/token` exchange (SDK: 10).
    pub exchange_max_retries: u32,
    /// Read timeout of one `auth/token` attempt (SDK: 60 s).
    pub exchange_timeout: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            credential_cmd_timeout: Duration::from_secs(60),
            refresh_margin: Duration::from_secs(60),
            refresh_retry: Duration::from_secs(60),
            exchange_max_retries: 10,
            exchange_timeout: Duration::from_secs(60),
        }
    }
}

// ------------------------------------------------------------------------------------------
// JWT claims
// ------------------------------------------------------------------------------------------

/// The claims of a JWT (payload decoded without verifying the signature, 2.2), or `None`
/// when it is not three dot-separated segments with a base64url JSON object in the middle.
pub fn jwt_claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let mut parts = jwt.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A numeric claim (a JSON number, or a string holding one), as the SDK's `float(...)`.
fn numeric_claim(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<f64> {
    match claims.get(name)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// The `exp` claim of a JWT, seconds since the epoch.
pub fn jwt_expiry(jwt: &str) -> Option<f64> {
    numeric_claim(&jwt_claims(jwt)?, "exp")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------
// The credentials file (2.4)
// ------------------------------------------------------------------------------------------

/// One stored key of the credentials file. `Debug` never shows the key.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KeyRecord {
    /// A key pasted in by `tinker auth login`.
    Manual {
        /// The API key.
        key: String,
        /// Its name.
        name: String,
        /// A note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Organisation and user details.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<serde_json::Value>,
    },
    /// A key minted for the CLI by an old CLI.
    Generated {
        /// The API key.
        key: String,
        /// Its name.
        name: String,
        /// Organisation and user details.
        details: serde_json::Value,
    },
}

impl KeyRecord {
    /// The stored key.
    pub fn key(&self) -> &str {
        match self {
            KeyRecord::Manual { key, .. } | KeyRecord::Generated { key, .. } => key,
        }
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match self {
            KeyRecord::Manual { name, .. } => ("manual", name),
            KeyRecord::Generated { name, .. } => ("generated", name),
        };
        f.debug_struct("KeyRecord")
            .field("type", &kind)
            .field("name", name)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The credentials file `~/.tinker/credentials.json` (PROTOCOL.md 2.4).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CredentialsFile {
    /// Always 1.
    pub version: u32,
    /// The name of the default entry of `keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Stored keys by name.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, KeyRecord>,
}

impl CredentialsFile {
    /// `$HOME/.tinker/credentials.json`, or `None` without a home directory.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".tinker").join("credentials.json"))
    }

    /// Reads a credentials file; a missing file is an empty one. A file that is not a
    /// version-1 credentials document is an error naming the path (never its content).
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialsFile {
                    version: 1,
                    ..Default::default()
                })
            }
            Err(e) => {
                return Err(Error::user(format!(
                    "cannot read the credentials file {}: {e}",
                    path.display()
                )))
            }
        };
        let bad = |why: String| {
            Error::user(format!(
                "the credentials file {} is not valid: {why}",
                path.display()
            ))
        };
        // The serde error may quote a value of the file: only its position is kept.
        let file: CredentialsFile = serde_json::from_slice(&text).map_err(|e| {
            bad(format!(
                "not a credentials document (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if file.version != 1 {
            return Err(bad(format!("unsupported version {}", file.version)));
        }
        Ok(file)
    }

    /// The default key, used only when `default` names an existing entry.
    pub fn default_key(&self) -> Option<&KeyRecord> {
        self.keys.get(self.default.as_deref()?)
    }

    /// Writes the file as the SDK's CLI does: JSON with 2-space indentation and no null
    /// fields, the directory created with mode 0700 and the file with 0600, through a
    /// temporary file renamed over the destination (never seen half-written or readable by
    /// others).
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let io = |what: &str, e: std::io::Error| {
            Error::user(format!(
                "cannot write the credentials file {} ({what}): {e}",
                path.display()
            ))
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| io("directory mode", e))?;
            }
        }
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::fatal(e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "credentials.json".into());
        let tmp = dir.join(format!(".{name}.{}", crate::core::rand::uuid4()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut f = options.open(&tmp).map_err(|e| io("create", e))?;
            f.write_all(json.as_bytes()).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("sync", e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io("file mode", e))?;
            }
            std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

// ------------------------------------------------------------------------------------------
// Credential sources (2.3) and raw credentials
// ------------------------------------------------------------------------------------------

/// The credential sources of a client, resolved from its configuration and the environment
/// when the configuration is built. `Debug` shows which sources are set, never a secret.
#[derive(Clone)]
pub struct Credentials {
    /// The `api_key` argument, else `TINKER_API_KEY` (trimmed, non-empty).
    api_key: Option<String>,
    /// The credential command (argument, else `TINKER_CREDENTIAL_CMD`).
    credential_cmd: Option<String>,
    /// The stored default key, read only when neither of the above is set (the SDK reads
    /// the file only then).
    stored_default: Option<String>,
    /// Tunables.
    settings: AuthSettings,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| o.as_ref().map(|_| "<set>");
        f.debug_struct("Credentials")
            .field("api_key", &set(&self.api_key))
            .field("credential_cmd", &set(&self.credential_cmd))
            .field("stored_default", &set(&self.stored_default))
            .field("settings", &self.settings)
            .finish()
    }
}

/// A raw credential: a fixed one (an API key or a JWT) or the credential command.
#[derive(Clone, Debug)]
pub enum RawCredential {
    /// A fixed `tml-` key or JWT (`Debug` redacted by [`ApiKey`]).
    Static(ApiKey),
    /// `sh -c <command>`, run for every request that needs the credential.
    Command(CredentialCommand),
}

/// The credential command. `Debug` does not show the command line (it may embed a secret).
#[derive(Clone)]
pub struct CredentialCommand {
    command: String,
    timeout: Duration,
}

impl fmt::Debug for CredentialCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCommand")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn auth_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Auth, message)
}

impl Credentials {
    /// Reads the sources: `api_key` (else `TINKER_API_KEY`), `credential_cmd` (else
    /// `TINKER_CREDENTIAL_CMD`), and — only when both are unset — the default key of the
    /// credentials file at `credentials_file` (else `$HOME/.tinker/credentials.json`).
    pub fn from_sources(
        api_key: Option<String>,
        credential_cmd: Option<String>,
        credentials_file: Option<PathBuf>,
        settings: AuthSettings,
    ) -> Result<Self> {
        let nonempty =
            |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let api_key = nonempty(api_key).or_else(|| nonempty(std::env::var("TINKER_API_KEY").ok()));
        let credential_cmd = credential_cmd.filter(|c| !c.trim().is_empty()).or_else(|| {
            std::env::var("TINKER_CREDENTIAL_CMD")
                .ok()
                .filter(|c| !c.trim().is_empty())
        });
        let stored_default = if api_key.is_none() && credential_cmd.is_none() {
            match credentials_file.or_else(CredentialsFile::default_path) {
                Some(path) => CredentialsFile::read(&path)?
                    .default_key()
                    .map(|r| r.key().trim().to_string()),
                None => None,
            }
        } else {
            None
        };
        Ok(Credentials {
            api_key,
            credential_cmd,
            stored_default,
            settings,
        })
    }

    /// The tunables.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    fn command(&self) -> Option<RawCredential> {
        self.credential_cmd.as_ref().map(|c| {
            RawCredential::Command(CredentialCommand {
                command: c.clone(),
                timeout: self.settings.credential_cmd_timeout,
            })
        })
    }

    /// The raw credential by the precedence of 2.3 (`resolve_auth_provider`):
    /// a JWT `api_key` is used as it is; with `enforce_cmd` the command is mandatory;
    /// otherwise the `api_key` (falling back to the command when its prefix is wrong), the
    /// command, the stored default key, or the missing-key error.
    pub fn resolve(&self, enforce_cmd: bool) -> Result<RawCredential> {
        if let Some(k) = self.api_key.as_deref().filter(|k| k.starts_with("eyJ")) {
            return Ok(RawCredential::Static(ApiKey::new(k)?));
        }
        if enforce_cmd {
            return self
                .command()
                .ok_or_else(|| auth_error(ENFORCE_CMD_MESSAGE));
        }
        if let Some(k) = &self.api_key {
            return match ApiKey::new(k.clone()) {
                Ok(key) => Ok(RawCredential::Static(key)),
                Err(e) => self.command().ok_or(e),
            };
        }
        if let Some(cmd) = self.command() {
            return Ok(cmd);
        }
        match &self.stored_default {
            Some(k) => Ok(RawCredential::Static(ApiKey::new(k.clone())?)),
            None => Err(auth_error(MISSING_API_KEY_MESSAGE)),
        }
    }

    /// The plain API key of a client whose server does not use JWTs (2.5): the `api_key`,
    /// else the stored default key (only read when no command is set). Only the credential
    /// command set: the missing-key error.
    pub fn plain_key(&self) -> Result<ApiKey> {
        match self.api_key.as_ref().or(self.stored_default.as_ref()) {
            Some(k) => ApiKey::new(k.clone()),
            None => Err(auth_error(MISSING_API_KEY_MESSAGE)),
        }
    }
}

/// A header value for `X-API-Key`, marked sensitive.
fn header_value(secret: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(secret).map_err(|_| {
        auth_error("the credential contains characters that cannot be sent in a header")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl RawCredential {
    /// The credential to send now: a static one (a JWT only while unexpired), or the
    /// command's stripped output.
    pub async fn token(&self) -> Result<HeaderValue> {
        match self {
            RawCredential::Static(k) => {
                if k.expose().starts_with("eyJ")
                    && jwt_expiry(k.expose()).is_none_or(|exp| now_secs() >= exp)
                {
                    return Err(auth_error(STATIC_JWT_EXPIRED_MESSAGE));
                }
                header_value(k.expose())
            }
            RawCredential::Command(c) => header_value(&c.run().await?),
        }
    }
}

impl CredentialCommand {
    /// Runs `sh -c <command>` (stdin closed, stderr discarded, killed after the timeout);
    /// stdout stripped is the credential. Empty output, an expired JWT, a credential that
    /// cannot be sent in a header, a failure to start or a timeout are errors. Neither the
    /// command nor its output appears in an error.
    pub async fn run(&self) -> Result<String> {
        use tokio::io::AsyncReadExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| auth_error(format!("TINKER_CREDENTIAL_CMD could not be started: {e}")))?;
        let Some(stdout) = child.stdout.take() else {
            return Err(auth_error("TINKER_CREDENTIAL_CMD: no stdout"));
        };
        let work = async {
            let mut out = Vec::new();
            stdout
                .take(MAX_CMD_OUTPUT + 1)
                .read_to_end(&mut out)
                .await
                .map_err(|e| {
                    auth_error(format!(
                        "TINKER_CREDENTIAL_CMD: reading its output failed: {e}"
                    ))
                })?;
            let status = child.wait().await.ok();
            Ok::<_, Error>((out, status))
        };
        let (out, status) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(auth_error(format!(
                    "TINKER_CREDENTIAL_CMD did not finish within {:.1} s",
                    self.timeout.as_secs_f64()
                )))
            }
        };
        if out.len() as u64 > MAX_CMD_OUTPUT {
            return Err(auth_error("TINKER_CREDENTIAL_CMD printed more than 64 KiB"));
        }
        let text = String::from_utf8(out)
            .map_err(|_| auth_error("TINKER_CREDENTIAL_CMD printed something that is not UTF-8"))?;
        let credential = text.trim();
        if credential.is_empty() {
            let status = status
                .map(|s| format!(" (exit status {s})"))
                .unwrap_or_default();
            return Err(auth_error(format!("{CMD_EMPTY_MESSAGE}{status}")));
        }
        if credential.starts_with("eyJ") && jwt_expiry(credential).is_none_or(|e| now_secs() >= e) {
            return Err(auth_error(CMD_EXPIRED_MESSAGE));
        }
        if !credential.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(auth_error(
                "TINKER_CREDENTIAL_CMD printed a credential with spaces, control or non-ASCII characters",
            ));
        }
        Ok(credential.to_string())
    }
}

// ------------------------------------------------------------------------------------------
// The per-client state: mode, JWT cache, refresh loop, replay
// ------------------------------------------------------------------------------------------

/// The auth mode chosen from `client/config` (2.5).
#[derive(Debug)]
enum Mode {
    /// Every request carries the plain API key.
    Plain(ApiKey),
    /// Every request but `client/config` and `auth/token` carries a JWT from the exchange,
    /// which is authenticated with this raw credential.
    Jwt(RawCredential),
    /// The mode could not be set up (e.g. only a credential command and no JWT mode).
    Failed(Error),
}

/// A JWT held by the cache. `Debug` never shows it.
#[derive(Clone)]
struct Jwt {
    value: Arc<str>,
    exp: Option<f64>,
    iat: Option<f64>,
}

impl Jwt {
    fn parse(value: &str) -> Self {
        let claims = jwt_claims(value);
        Jwt {
            value: value.into(),
            exp: claims.as_ref().and_then(|c| numeric_claim(c, "exp")),
            iat: claims.as_ref().and_then(|c| numeric_claim(c, "iat")),
        }
    }

    /// Seconds until `exp`; 0 when it cannot be read.
    fn secs_left(&self) -> f64 {
        self.exp.map(|e| e - now_secs()).unwrap_or(0.0)
    }
}

/// The credential put on one request, kept to tell which JWT a rejection was about.
pub struct SentCredential {
    value: HeaderValue,
    jwt: Option<Arc<str>>,
}

impl SentCredential {
    /// The `X-API-Key` value.
    pub fn header(&self) -> &HeaderValue {
        &self.value
    }
}

/// Whether a response is the server rejecting the request's token itself (RFC 6750).
pub fn is_invalid_token(resp: &Response) -> bool {
    resp.status == 401
        && resp
            .headers
            .get_all("www-authenticate")
            .iter()
            .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("error=\"invalid_token\""))
}

/// Per-client authentication state (see the module docs).
pub struct Auth {
    credentials: Credentials,
    /// `resolve(false)`: the credential of `client/config`.
    config_credential: RawCredential,
    retry: crate::core::config::RetryPolicy,
    /// `client/config`, fetched once (raw credential).
    client_config: tokio::sync::OnceCell<ClientConfig>,
    mode: OnceLock<Mode>,
    token: Mutex<Option<Jwt>>,
    /// Serialises exchanges: concurrent callers share one.
    exchange: tokio::sync::Mutex<()>,
    refresh_running: AtomicBool,
    /// The client, for the background refresh loop.
    core: OnceLock<Weak<ClientCore>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("credentials", &self.credentials)
            .field("mode", &self.mode.get())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The state of a new client; fails with the errors of 2.3 when no usable credential
    /// source is configured.
    pub fn new(credentials: Credentials, retry: crate::core::config::RetryPolicy) -> Result<Self> {
        let config_credential = credentials.resolve(false)?;
        Ok(Auth {
            credentials,
            config_credential,
            retry,
            client_config: tokio::sync::OnceCell::new(),
            mode: OnceLock::new(),
            token: Mutex::new(None),
            exchange: tokio::sync::Mutex::new(()),
            refresh_running: AtomicBool::new(false),
            core: OnceLock::new(),
        })
    }

    /// Lets the refresh loop reach the client (set once by [`ClientCore`]'s constructor).
    pub(crate) fn attach(&self, core: Weak<ClientCore>) {
        let _ = self.core.set(core);
    }

    fn settings(&self) -> &AuthSettings {
        &self.credentials.settings
    }

    /// Whether JWT mode is on (false until `client/config` was fetched).
    pub fn jwt_mode(&self) -> bool {
        matches!(self.mode.get(), Some(Mode::Jwt(_)))
    }

    /// Chooses the mode from the `client/config` flags (2.5), once.
    fn choose_mode(&self, flags: &ClientConfig) -> &Mode {
        self.mode.get_or_init(|| {
            let mode = if flags.pjwt_auth_enabled {
                self.credentials
                    .resolve(flags.credential_default_source == "credential_cmd")
                    .map(Mode::Jwt)
            } else {
                self.credentials.plain_key().map(Mode::Plain)
            };
            mode.unwrap_or_else(Mode::Failed)
        })
    }

    /// The credential for a request to `path`: the raw one for `client/config` and
    /// `auth/token`, else by mode (a JWT in JWT mode, exchanged if needed). Before the mode
    /// is known (no `client/config` yet) the plain key.
    pub fn credential<'a>(
        &'a self,
        transport: &'a Transport,
        path: &'a str,
    ) -> BoxFuture<'a, Result<SentCredential>> {
        // Boxed: the exchange sends through the transport, which asks for credentials here.
        Box::pin(self.credential_inner(transport, path))
    }

    async fn credential_inner(&self, transport: &Transport, path: &str) -> Result<SentCredential> {
        let plain = |v: HeaderValue| SentCredential {
            value: v,
            jwt: None,
        };
        if path == CLIENT_CONFIG_PATH {
            return self.config_credential.token().await.map(plain);
        }
        match self.mode.get() {
            Some(Mode::Jwt(raw)) if path == AUTH_TOKEN_PATH => raw.token().await.map(plain),
            Some(Mode::Jwt(_)) => {
                let jwt = self.get_token(transport).await?;
                Ok(SentCredential {
                    value: header_value(&jwt.value)?,
                    jwt: Some(jwt.value),
                })
            }
            Some(Mode::Plain(k)) => RawCredential::Static(k.clone()).token().await.map(plain),
            Some(Mode::Failed(e)) => Err(e.clone()),
            None => {
                let key = self.credentials.plain_key()?;
                RawCredential::Static(key).token().await.map(plain)
            }
        }
    }

    /// After a 401 `invalid_token` answer to a request sent with `rejected`: a JWT other
    /// than the rejected one (one exchange shared by concurrent rejections), or `None` when
    /// the request did not carry a JWT (no replay).
    pub fn replacement<'a>(
        &'a self,
        transport: &'a Transport,
        rejected: &'a SentCredential,
    ) -> BoxFuture<'a, Result<Option<SentCredential>>> {
        Box::pin(self.replacement_inner(transport, rejected))
    }

    async fn replacement_inner(
        &self,
        transport: &Transport,
        rejected: &SentCredential,
    ) -> Result<Option<SentCredential>> {
        let Some(rejected) = &rejected.jwt else {
            return Ok(None);
        };
        let differs = |auth: &Self| {
            auth.cached()
                .filter(|t| t.value != *rejected)
                .map(|t| t.value)
        };
        let fresh = match differs(self) {
            Some(v) => v,
            None => {
                let _guard = self.exchange.lock().await;
                match differs(self) {
                    Some(v) => v,
                    None => self.fetch(transport).await?.value,
                }
            }
        };
        Ok(Some(SentCredential {
            value: header_value(&fresh)?,
            jwt: Some(fresh),
        }))
    }

    /// The JWT carrying the caller's identity (2.8): in JWT mode the exchanged token
    /// (exchanged now if none is fresh), else the configured credential when it is a JWT
    /// whose `iss` claim starts with `passport-`, else `None`. Call after `client/config`.
    pub(crate) async fn identity_jwt(&self, transport: &Transport) -> Result<Option<Arc<str>>> {
        if let Some(Mode::Jwt(_)) = self.mode.get() {
            return Ok(Some(self.get_token(transport).await?.value));
        }
        let Ok(key) = self.credentials.plain_key() else {
            return Ok(None);
        };
        let key = key.expose();
        let passport = key.starts_with("eyJ")
            && jwt_claims(key).is_some_and(|c| {
                c.get("iss")
                    .and_then(|v| v.as_str())
                    .is_some_and(|iss| iss.starts_with("passport-"))
            });
        Ok(passport.then(|| Arc::from(key)))
    }

    fn cached(&self) -> Option<Jwt> {
        self.token.lock().unwrap().clone()
    }

    fn fresh_enough(&self, jwt: &Jwt) -> bool {
        jwt.secs_left() > self.settings().refresh_margin.as_secs_f64()
    }

    /// The cached JWT while it has more than the margin left; otherwise a refresh under the
    /// exchange lock. A refresh rejected with 401 fails; any other failure falls back to the
    /// cached JWT while it has not expired (2.7).
    async fn get_token(&self, transport: &Transport) -> Result<Jwt> {
        if let Some(t) = self.cached().filter(|t| self.fresh_enough(t)) {
            return Ok(t);
        }
        let _guard = self.exchange.lock().await;
        let cached = self.cached();
        if let Some(t) = cached.clone().filter(|t| self.fresh_enough(t)) {
            return Ok(t);
        }
        match self.fetch(transport).await {
            Ok(t) => {
                self.start_refresh_loop(&t);
                Ok(t)
            }
            Err(e) if e.http_status == Some(401) => Err(e),
            Err(e) => match cached.filter(|t| t.secs_left() > 0.0) {
                Some(t) => {
                    tracing::warn!("On-demand JWT refresh failed: {e}");
                    Ok(t)
                }
                None => Err(e),
            },
        }
    }

    /// One `POST /api/v1/auth/token {}` with HTTP-layer retries (13.2); the JWT is cached.
    async fn fetch(&self, transport: &Transport) -> Result<Jwt> {
        let req = Request::post_json(
            AUTH_TOKEN_PATH,
            &serde_json::json!({}),
            Pool::Session,
            self.settings().exchange_timeout,
        );
        let mut attempt = 0u32;
        let resp = loop {
            let outcome = transport.send(&req, attempt).await;
            if let Ok(r) = &outcome {
                if r.is_success() {
                    break outcome?;
                }
            }
            let verdict = crate::core::retry::classify(&self.retry, attempt, &outcome);
            let error = match outcome {
                Ok(r) => r.to_error(),
                Err(e) => e,
            };
            match verdict {
                crate::core::retry::Verdict::RetryAfter(d)
                    if attempt < self.settings().exchange_max_retries =>
                {
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                _ => return Err(error),
            }
        };
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            jwt: String,
        }
        // The body holds the secret: errors never quote it.
        let parsed: TokenResponse = serde_json::from_slice(&resp.body).map_err(|_| {
            Error::fatal("malformed auth/token response from the server (expected {\"jwt\": …})")
        })?;
        let jwt = parsed.jwt.trim();
        if jwt.is_empty() || jwt.len() > 16 * 1024 || !jwt.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::fatal(
                "malformed auth/token response from the server: the jwt is empty, too long or not printable ASCII",
            ));
        }
        let jwt = Jwt::parse(jwt);
        *self.token.lock().unwrap() = Some(jwt.clone());
        Ok(jwt)
    }

    /// `(exp − iat) × U(0.45, 0.55)`, or the retry delay when the claims cannot be read.
    fn refresh_delay(&self, jwt: &Jwt) -> Duration {
        match (jwt.exp, jwt.iat) {
            (Some(exp), Some(iat)) if exp - iat > 0.0 => {
                let factor = 0.45 + 0.1 * crate::core::rand::unit();
                Duration::from_secs_f64(((exp - iat) * factor).min(365.0 * 24.0 * 3600.0))
            }
            _ => {
                tracing::debug!(
                    "Failed to parse JWT lifetime, retrying in {:.0}s",
                    self.settings().refresh_retry.as_secs_f64()
                );
                self.settings().refresh_retry
            }
        }
    }

    fn start_refresh_loop(&self, first: &Jwt) {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return;
        };
        // After close, tokens are still served (telemetry) but no loop is started.
        if *core.shutdown.borrow() || self.refresh_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let delay = self.refresh_delay(first);
        core.runtime
            .spawn(refresh_loop(Arc::downgrade(&core), delay));
    }
}

/// Refreshes the JWT after `delay`, then after each new JWT's refresh delay; a failure is
/// retried after `refresh_retry` (first failure a warning, later ones debug); a 401 stops
/// the loop once the cached JWT is within `refresh_retry + refresh_margin` of expiry (the
/// on-demand refresh takes over and restarts the loop). Stops on close or when the client
/// is gone.
async fn refresh_loop(core: Weak<ClientCore>, mut delay: Duration) {
    let mut shutdown = match core.upgrade() {
        Some(c) => c.shutdown.subscribe(),
        None => return,
    };
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let Some(core) = core.upgrade() else { return };
        let auth = &core.auth;
        let result = {
            let _guard = auth.exchange.lock().await;
            auth.fetch(&core.transport).await
        };
        let settings = auth.settings();
        match result {
            Ok(t) => {
                delay = auth.refresh_delay(&t);
                failing = false;
            }
            Err(e) => {
                let left = auth.cached().map(|t| t.secs_left()).unwrap_or(0.0);
                if e.http_status == Some(401)
                    && left - settings.refresh_retry.as_secs_f64()
                        <= settings.refresh_margin.as_secs_f64()
                {
                    tracing::warn!("JWT refresh rejected, stopping background refresh: {e}");
                    break;
                }
                if failing {
                    tracing::debug!(
                        "JWT refresh failed, retrying in {:.0}s: {e}",
                        settings.refresh_retry.as_secs_f64()
                    );
                } else {
                    tracing::warn!(
                        "JWT refresh failed, retrying in {:.0}s: {e}",
                        settings.refresh_retry.as_secs_f64()
                    );
                }
                delay = settings.refresh_retry;
                failing = true;
            }
        }
    }
    if let Some(core) = core.upgrade() {
        core.auth.refresh_running.store(false, Ordering::SeqCst);
    }
}

impl ClientCore {
    /// Applies the flags of `client/config` that size shared state: the billing pause limit
    /// (13.7), the forward_backward dispatch budget (11.4), the in-flight response budget
    /// (8.1.3), and the copy every layer reads.
    fn apply_server_flags(&self, flags: &ClientConfig) {
        self.billing
            .set_server_max_pause(flags.billing_exception_max_pause_duration_sec);
        self.fwdbwd_budget
            .set_capacity(flags.fwdbwd_dispatch_bytes_semaphore_size);
        self.inflight_response
            .set_capacity(flags.inflight_response_bytes_semaphore_size);
        *self.server_config.write().unwrap() = flags.clone();
    }

    /// Adopts `flags` as this client's `client/config` without fetching it (a shadow
    /// holder's snapshot, PROTOCOL.md 3.4): sizes the shared state and chooses the auth mode
    /// as a fetch would. Fails when the client already has its flags.
    pub(crate) fn adopt_client_config(&self, flags: ClientConfig) -> Result<()> {
        self.apply_server_flags(&flags);
        self.auth
            .client_config
            .set(flags.clone())
            .map_err(|_| crate::core::error::Error::fatal("client/config was already set"))?;
        // Chosen now: the background loops send without waiting for client/config.
        match self.auth.choose_mode(&flags) {
            Mode::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// `client/config`, fetched once per client with the raw credential and the holder
    /// retry policy (3.2 step 2; a 404 means the official defaults), which also chooses the
    /// auth mode (2.5) and sizes the shared state it governs ([`Self::apply_server_flags`]).
    /// Every other request waits for it; after the first call this is a cached check.
    pub(crate) async fn ensure_client_config(&self) -> Result<()> {
        let flags = self
            .auth
            .client_config
            .get_or_try_init(|| async {
                let req = Request::post_json(
                    CLIENT_CONFIG_PATH,
                    &crate::core::types::SdkVersionRequest {
                        sdk_version: crate::core::types::SDK_VERSION.into(),
                    },
                    Pool::Session,
                    self.config.timeouts.dynamic_config,
                );
                let ctx = crate::core::retry::SendContext {
                    transport: &self.transport,
                    policy: &self.config.retry,
                    progress: &self.progress,
                    events: &self.events,
                    billing: &self.billing,
                    attempts: None,
                    telemetry: self.telemetry.get().map(|t| &**t),
                };
                let sent = crate::core::retry::send_with_retry(&ctx, &req, None).await;
                let flags = match sent {
                    Ok(resp) => resp.json::<ClientConfig>("client/config")?,
                    // A server without the endpoint: the official defaults.
                    Err(e) if e.http_status == Some(404) => ClientConfig::default(),
                    Err(e) => return Err(e),
                };
                self.apply_server_flags(&flags);
                Ok::<_, crate::core::error::Error>(flags)
            })
            .await?;
        match self.auth.choose_mode(flags) {
            Mode::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}
