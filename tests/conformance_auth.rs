//! Authentication conformance (PROTOCOL.md 2.1–2.7, 3.2, 5.3, 1.6.4, 13.1/13.9): credential
//! sources and precedence, the credentials file, the credential command, the server-driven
//! JWT mode (lazy exchange, cache, shared exchange, background refresh, invalid_token replay,
//! exchange failures), against the in-process emulator. Which credential each request
//! carried is read from the emulator's `/_emulator/auth` log (kinds and JWT serial numbers,
//! never a secret) and `/_emulator/journal`.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::auth::{
    self, AuthSettings, Credentials, CredentialsFile, KeyRecord, RawCredential,
};
use tinkex::core::types::FinishReasonKind;
use tinkex::core::{Config, ErrorKind, LoraOptions, ServiceClient};

/// Serialises the tests that read or change `TINKER_API_KEY` / `TINKER_CREDENTIAL_CMD`.
static ENV: Mutex<()> = Mutex::new(());

/// Holds the env lock with both variables removed (restored on drop).
struct CleanEnv {
    saved: Vec<(&'static str, Option<String>)>,
    _guard: std::sync::MutexGuard<'static, ()>,
}

fn clean_env() -> CleanEnv {
    let guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let saved = ["TINKER_API_KEY", "TINKER_CREDENTIAL_CMD"]
        .into_iter()
        .map(|v| {
            let old = std::env::var(v).ok();
            std::env::remove_var(v);
            (v, old)
        })
        .collect();
    CleanEnv {
        saved,
        _guard: guard,
    }
}

impl Drop for CleanEnv {
    fn drop(&mut self) {
        for (v, old) in &self.saved {
            match old {
                Some(x) => std::env::set_var(v, x),
                None => std::env::remove_var(v),
            }
        }
    }
}

fn tmp_dir(tag: &str) -> PathBuf {
    state_dir(&format!("auth-{tag}"))
}

/// A JWT (unsigned) with the given claims.
fn jwt(claims: Value) -> String {
    use base64::Engine;
    let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        enc(br#"{"alg":"none"}"#),
        enc(&serde_json::to_vec(&claims).unwrap())
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn credentials_file(dir: &std::path::Path, default: Option<&str>, key: &str) -> PathBuf {
    let path = dir.join("credentials.json");
    let mut file = CredentialsFile {
        version: 1,
        default: default.map(str::to_string),
        ..Default::default()
    };
    file.keys.insert(
        "tinker-cli-host".into(),
        KeyRecord::Manual {
            key: key.into(),
            name: "tinker-cli-host".into(),
            note: None,
            details: None,
        },
    );
    file.write(&path).unwrap();
    path
}

/// The value a raw credential sends.
async fn sent(raw: &RawCredential) -> String {
    raw.token().await.unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn precedence_follows_2_3() {
    let _env = clean_env();
    let dir = tmp_dir("precedence");
    let file = credentials_file(&dir, Some("tinker-cli-host"), "tml-from-file");
    let no_default = credentials_file(&tmp_dir("nodefault"), Some("other"), "tml-unused");
    let missing_file = dir.join("absent.json");
    let good_jwt = jwt(json!({"exp": now() + 3600, "iat": now()}));
    let cmd = "printf '  tml-from-cmd\\n'";
    let creds = |key: Option<&str>, cmd: Option<&str>, file: &PathBuf| {
        Credentials::from_sources(
            key.map(str::to_string),
            cmd.map(str::to_string),
            Some(file.clone()),
            AuthSettings::default(),
        )
        .unwrap()
    };
    // (api_key, command, file, enforce_cmd) → what is sent, or the error's start.
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        Option<&str>,
        Option<&str>,
        &PathBuf,
        bool,
        Result<&str, &str>,
    )> = vec![
        (Some("tml-arg"), Some(cmd), &file, false, Ok("tml-arg")),
        (Some(&good_jwt), Some(cmd), &file, true, Ok(&good_jwt)),
        (Some("tml-arg"), Some(cmd), &file, true, Ok("tml-from-cmd")),
        (
            Some("tml-arg"),
            None,
            &file,
            true,
            Err(auth::ENFORCE_CMD_MESSAGE),
        ),
        (Some("sk-bad"), Some(cmd), &file, false, Ok("tml-from-cmd")),
        (
            Some("sk-bad"),
            None,
            &file,
            false,
            Err(auth::PREFIX_MESSAGE),
        ),
        (None, Some(cmd), &file, false, Ok("tml-from-cmd")),
        (None, None, &file, false, Ok("tml-from-file")),
        (
            None,
            None,
            &no_default,
            false,
            Err(auth::MISSING_API_KEY_MESSAGE),
        ),
        (
            None,
            None,
            &missing_file,
            false,
            Err(auth::MISSING_API_KEY_MESSAGE),
        ),
    ];
    for (i, (key, cmd, file, enforce, want)) in cases.into_iter().enumerate() {
        let got = creds(key, cmd, file).resolve(enforce);
        match (want, got) {
            (Ok(v), Ok(raw)) => assert_eq!(sent(&raw).await, v, "case {i}"),
            (Err(m), Err(e)) => assert!(e.message.starts_with(m), "case {i}: {e}"),
            (want, got) => panic!("case {i}: wanted {want:?}, got {got:?}"),
        }
    }
    // A missing source is an auth error; a malformed key a caller error (2.2).
    let e = creds(None, None, &missing_file).resolve(false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(
        creds(Some("sk-bad"), None, &file)
            .resolve(false)
            .unwrap_err()
            .kind,
        ErrorKind::User
    );
    // Static JWTs: expiry checked, an unreadable exp is an error.
    let expired = jwt(json!({"exp": now() - 10}));
    let e = creds(Some(&expired), None, &file)
        .resolve(false)
        .unwrap_err();
    assert_eq!(e.message, auth::STATIC_JWT_EXPIRED_MESSAGE);
    let e = creds(Some("eyJnot-a-jwt"), None, &file)
        .resolve(false)
        .unwrap_err();
    assert!(e.message.starts_with("Failed to parse JWT expiry"), "{e}");
    // The holder's plain key: argument, else the stored default (not with a command).
    assert!(creds(None, Some(cmd), &file).plain_key().is_err());
    assert!(creds(None, None, &file).plain_key().is_ok());

    // The environment: TINKER_API_KEY when no argument; the argument wins.
    std::env::set_var("TINKER_API_KEY", "tml-from-env");
    assert_eq!(
        sent(&creds(None, None, &file).resolve(false).unwrap()).await,
        "tml-from-env"
    );
    assert_eq!(
        sent(&creds(Some("tml-arg"), None, &file).resolve(false).unwrap()).await,
        "tml-arg"
    );
    std::env::remove_var("TINKER_API_KEY");
    std::env::set_var("TINKER_CREDENTIAL_CMD", "echo tml-env-cmd");
    assert_eq!(
        sent(&creds(None, None, &file).resolve(false).unwrap()).await,
        "tml-env-cmd",
        "TINKER_CREDENTIAL_CMD shadows the stored default"
    );
    std::env::remove_var("TINKER_CREDENTIAL_CMD");

    // Config::build fails early with the same messages.
    let e = Config::builder()
        .base_url("http://127.0.0.1:9")
        .credentials_file(&missing_file)
        .build()
        .unwrap_err();
    assert_eq!(e.message, auth::MISSING_API_KEY_MESSAGE);
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(Config::builder()
        .base_url("http://127.0.0.1:9")
        .credentials_file(&file)
        .build()
        .is_ok());
}

#[test]
fn credentials_file_is_read_and_written_as_2_4() {
    let dir = tmp_dir("file");
    let path = dir.join("nested").join(".tinker").join("credentials.json");
    let mut f = CredentialsFile {
        version: 1,
        default: Some("a".into()),
        ..Default::default()
    };
    f.keys.insert(
        "a".into(),
        KeyRecord::Manual {
            key: "tml-SECRET-a".into(),
            name: "a".into(),
            note: Some("laptop".into()),
            details: None,
        },
    );
    f.keys.insert(
        "g".into(),
        KeyRecord::Generated {
            key: "tml-SECRET-g".into(),
            name: "g".into(),
            details: json!({"org_details": {"name": "O"}, "user_details": {"email": "e@x"}}),
        },
    );
    f.write(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\n  \"version\": 1"),
        "2-space indent: {text}"
    );
    assert!(!text.contains("null"), "None fields omitted: {text}");
    assert!(text.contains("\"type\": \"manual\""));
    // No temporary file is left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
    let back = CredentialsFile::read(&path).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.default_key().unwrap().key(), "tml-SECRET-a");
    assert!(!format!("{back:?}").contains("SECRET"), "Debug hides keys");
    // Rewriting replaces atomically.
    f.default = Some("g".into());
    f.write(&path).unwrap();
    assert_eq!(
        CredentialsFile::read(&path)
            .unwrap()
            .default_key()
            .unwrap()
            .key(),
        "tml-SECRET-g"
    );
    // A default naming no entry means no default key.
    f.default = Some("nope".into());
    assert!(f.default_key().is_none());
    // A malformed file or another version is an error naming the path, not the content.
    std::fs::write(
        &path,
        "{\"version\": 1, \"keys\": {\"a\": {\"type\": \"manual\", \"key\": \"tml-SECRET-x\"}}}",
    )
    .unwrap();
    let e = CredentialsFile::read(&path).unwrap_err();
    assert!(
        e.message.contains("credentials.json") && !e.message.contains("SECRET"),
        "{e}"
    );
    std::fs::write(&path, "{\"version\": 2, \"keys\": {}}").unwrap();
    assert!(CredentialsFile::read(&path)
        .unwrap_err()
        .message
        .contains("version 2"));
}

#[tokio::test]
async fn credential_command_runs_on_every_request_and_fails_cleanly() {
    let dir = tmp_dir("cmd");
    let counter = dir.join("n");
    let settings = AuthSettings {
        credential_cmd_timeout: Duration::from_millis(500),
        ..AuthSettings::default()
    };
    let command = |cmd: String| {
        Credentials::from_sources(None, Some(cmd), None, settings.clone())
            .unwrap()
            .resolve(false)
            .unwrap()
    };
    // Runs through sh on every call; output stripped.
    let raw = command(format!(
        "echo x >> {0}; printf '\\t tml-n%s \\n' $(wc -l < {0})",
        counter.display()
    ));
    assert_eq!(sent(&raw).await, "tml-n1");
    assert_eq!(sent(&raw).await, "tml-n2");
    // Empty output, an expired JWT, a timeout: errors that never show the output or stderr.
    let e = command("echo SECRET-stderr >&2; exit 3".into())
        .token()
        .await
        .unwrap_err();
    assert!(e.message.starts_with(auth::CMD_EMPTY_MESSAGE), "{e}");
    assert!(!e.message.contains("SECRET"));
    assert_eq!(e.kind, ErrorKind::Auth);
    let expired = jwt(json!({"exp": now() - 5}));
    let e = command(format!("echo {expired}"))
        .token()
        .await
        .unwrap_err();
    assert_eq!(e.message, auth::CMD_EXPIRED_MESSAGE);
    let started = Instant::now();
    let e = command("sleep 30; echo tml-late".into())
        .token()
        .await
        .unwrap_err();
    assert!(e.message.contains("did not finish"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout bounds a hanging command"
    );
    let e = command("echo 'tml-SECRET with space'".into())
        .token()
        .await
        .unwrap_err();
    assert!(!e.message.contains("SECRET"), "{e}");
    let raw = command("echo tml-SECRET-cmd".into());
    assert!(
        !format!("{raw:?}").contains("SECRET"),
        "Debug hides the command"
    );
}

// ---- JWT mode against the emulator -------------------------------------------------------

async fn jwt_emulator(tag: &str, lifetime: Duration) -> tinkex_emulator::RunningEmulator {
    emulator_with(tag, |c| {
        c.client_config
            .insert("pjwt_auth_enabled".into(), Value::Bool(true));
        c.jwt_lifetime = lifetime;
    })
    .await
}

fn jwt_client(emu: &tinkex_emulator::RunningEmulator, settings: AuthSettings) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-auth-test")
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(fast_retry())
        .auth_settings(settings)
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

fn fast_auth() -> AuthSettings {
    AuthSettings {
        refresh_margin: Duration::from_millis(500),
        refresh_retry: Duration::from_millis(200),
        ..AuthSettings::default()
    }
}

/// The emulator's auth log: (path, credential kind, jti, status).
async fn auth_log(
    emu: &tinkex_emulator::RunningEmulator,
) -> Vec<(String, String, Option<u64>, u64)> {
    control_get(emu, "auth").await["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["credential"].as_str().unwrap().to_string(),
                e["jti"].as_u64(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn exchanges(emu: &tinkex_emulator::RunningEmulator) -> usize {
    journal_paths(emu)
        .await
        .iter()
        .filter(|p| p.as_str() == "/api/v1/auth/token")
        .count()
}

async fn journal_paths(emu: &tinkex_emulator::RunningEmulator) -> Vec<String> {
    control_get(emu, "journal").await["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for `cond` with a deadline (no fixed sleep decides anything).
async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn client_config_uses_the_raw_key_and_everything_else_a_lazy_jwt() {
    let emu = jwt_emulator("jwt-session", Duration::from_secs(3600)).await;
    let service = jwt_client(&emu, AuthSettings::default());
    assert_eq!(exchanges(&emu).await, 0, "no I/O at construction");
    let training = service
        .create_lora_training_client(
            BASE_MODEL,
            LoraOptions {
                rank: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let log = auth_log(&emu).await;
    assert_eq!(log[0].0, "/api/v1/client/config");
    assert_eq!(
        log[0].1, "api_key",
        "client/config carries the raw credential"
    );
    assert_eq!(
        log[1].0, "/api/v1/auth/token",
        "the exchange is lazy: right after client/config, for dynamic_config"
    );
    assert_eq!(log[1].1, "api_key");
    assert_eq!(log[2].0, "/api/v1/client/dynamic_config");
    let exchanges_seen = log.iter().filter(|e| e.0 == "/api/v1/auth/token").count();
    assert_eq!(
        exchanges_seen, 1,
        "one exchange, then the cached JWT: {log:?}"
    );
    for (path, kind, jti, status) in &log[2..] {
        assert_eq!(
            (kind.as_str(), *jti, *status),
            ("jwt", Some(1), 200),
            "{path}"
        );
    }
    assert!(log.iter().any(|e| e.0.ends_with("/finish")));

    // The default mode: the plain key everywhere, no exchange.
    let plain = emulator("jwt-off").await;
    let service = jwt_client(&plain, AuthSettings::default());
    service.get_server_capabilities().await.unwrap();
    let log = auth_log(&plain).await;
    assert_eq!(log.len(), 2, "client/config first, then the call: {log:?}");
    assert!(log.iter().all(|e| e.1 == "api_key"));
}

#[tokio::test]
async fn concurrent_callers_share_one_exchange_and_the_cache() {
    let emu = jwt_emulator("jwt-concurrent", Duration::from_secs(3600)).await;
    let service = jwt_client(&emu, AuthSettings::default());
    let calls: Vec<_> = (0..16).map(|_| service.get_server_capabilities()).collect();
    for c in calls {
        c.await.unwrap();
    }
    for _ in 0..4 {
        service.get_server_capabilities().await.unwrap();
    }
    assert_eq!(exchanges(&emu).await, 1);
    let log = auth_log(&emu).await;
    assert_eq!(log.iter().filter(|e| e.1 == "jwt").count(), 20);
    assert_eq!(
        log.iter()
            .filter(|e| e.0 == "/api/v1/client/config")
            .count(),
        1,
        "client/config once per client"
    );
}

#[tokio::test]
async fn background_refresh_runs_at_half_the_lifetime() {
    let emu = jwt_emulator("jwt-refresh", Duration::from_secs(4)).await;
    let service = jwt_client(&emu, fast_auth());
    service.get_server_capabilities().await.unwrap();
    let first = Instant::now();
    assert_eq!(exchanges(&emu).await, 1);
    // (exp − iat) × U(0.45, 0.55) = 1.8–2.2 s after the first exchange, with no request.
    assert!(
        wait_until(Duration::from_secs(8), || async {
            exchanges(&emu).await >= 2
        })
        .await
    );
    let after = first.elapsed();
    assert!(
        after >= Duration::from_millis(1700),
        "refreshed after {after:?}"
    );
    assert!(
        after <= Duration::from_millis(3500),
        "refreshed after {after:?}"
    );
    // Requests use the new JWT without another exchange.
    service.get_server_capabilities().await.unwrap();
    let log = auth_log(&emu).await;
    assert_eq!(log.last().unwrap().2, Some(2));
    assert_eq!(exchanges(&emu).await, 2);
    // Close stops the loop; tokens are still served (telemetry after close).
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    service.get_server_capabilities().await.unwrap();
}

#[tokio::test]
async fn invalid_token_is_replayed_once_with_a_new_jwt() {
    let emu = jwt_emulator("jwt-replay", Duration::from_secs(3600)).await;
    let service = jwt_client(&emu, AuthSettings::default());
    service.get_server_capabilities().await.unwrap();
    // The server forgets every token: each rejected request is replayed once, and eight
    // concurrent rejections of one token cost one exchange.
    control_post(&emu, "auth", json!({"revoke_all": true})).await;
    control_get(&emu, "auth").await;
    let calls: Vec<_> = (0..8).map(|_| service.get_server_capabilities()).collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(exchanges(&emu).await, 2);
    let log = auth_log(&emu).await;
    let caps: Vec<_> = log
        .iter()
        .filter(|e| e.0 == "/api/v1/get_server_capabilities")
        .collect();
    assert_eq!(
        caps.len(),
        1 + 8 + 8,
        "each rejected request replayed exactly once: {log:?}"
    );
    assert_eq!(caps.iter().filter(|e| e.3 == 401).count(), 8);
    assert!(caps
        .iter()
        .filter(|e| e.3 == 200)
        .all(|e| e.2 != Some(1) || e == &caps[0]));

    // A replay rejected again is an ordinary 401: no third attempt, no retry.
    control_post(
        &emu,
        "faults",
        json!({"path": "/api/v1/get_server_capabilities", "status": 401, "count": 2,
               "headers": {"WWW-Authenticate": "Bearer error=\"invalid_token\""},
               "body": {"detail": "token rejected"}}),
    )
    .await;
    let before = journal_paths(&emu).await.len();
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!((e.kind, e.http_status), (ErrorKind::Auth, Some(401)));
    let sent: Vec<_> = journal_paths(&emu).await[before..].to_vec();
    assert_eq!(
        sent,
        [
            "/api/v1/get_server_capabilities",
            "/api/v1/auth/token",
            "/api/v1/get_server_capabilities"
        ]
    );
    // A 401 without invalid_token is not replayed.
    control_post(
        &emu,
        "faults",
        json!({"path": "/api/v1/get_server_capabilities", "status": 401, "count": 1}),
    )
    .await;
    let before = journal_paths(&emu).await.len();
    assert!(service.get_server_capabilities().await.is_err());
    assert_eq!(journal_paths(&emu).await.len() - before, 1);
}

#[tokio::test]
async fn exchange_failures_401_propagates_others_retry_or_fall_back() {
    let emu = jwt_emulator("jwt-failures", Duration::from_secs(3600)).await;
    // A 401 from the exchange reaches the caller as it is, not retried; the call is not sent.
    fault(
        &emu,
        json!({"path": "/api/v1/auth/token", "status": 401, "count": 1,
               "body": {"detail": "bad key"}}),
    )
    .await;
    let service = jwt_client(&emu, AuthSettings::default());
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!((e.kind, e.http_status), (ErrorKind::Auth, Some(401)), "{e}");
    assert_eq!(
        journal_paths(&emu).await,
        ["/api/v1/client/config", "/api/v1/auth/token"]
    );
    // 5xx answers of the exchange are retried at the HTTP layer.
    fault(
        &emu,
        json!({"path": "/api/v1/auth/token", "status": 503, "count": 2}),
    )
    .await;
    service.get_server_capabilities().await.unwrap();
    assert_eq!(exchanges(&emu).await, 4);

    // A client whose cached JWT is always due for refresh (margin ≥ lifetime): a failed
    // refresh falls back to the unexpired cached JWT; a 401 refresh fails the call.
    let settings = AuthSettings {
        refresh_margin: Duration::from_secs(7200),
        exchange_max_retries: 0,
        ..AuthSettings::default()
    };
    let service = jwt_client(&emu, settings);
    service.get_server_capabilities().await.unwrap();
    let jti = auth_log(&emu).await.last().unwrap().2.unwrap();
    fault(
        &emu,
        json!({"path": "/api/v1/auth/token", "status": 503, "count": 1}),
    )
    .await;
    service.get_server_capabilities().await.unwrap();
    assert_eq!(
        auth_log(&emu).await.last().unwrap().2,
        Some(jti),
        "cached JWT used"
    );
    fault(
        &emu,
        json!({"path": "/api/v1/auth/token", "status": 401, "count": 1}),
    )
    .await;
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!(e.http_status, Some(401));
}

#[tokio::test]
async fn credential_command_in_enforced_jwt_mode() {
    let emu = emulator_with("jwt-cmd", |c| {
        c.client_config
            .insert("pjwt_auth_enabled".into(), Value::Bool(true));
        c.client_config.insert(
            "credential_default_source".into(),
            Value::String("credential_cmd".into()),
        );
    })
    .await;
    let dir = tmp_dir("jwt-cmd");
    let counter = dir.join("runs");
    let config = |cmd: String| {
        Config::builder()
            .api_key("tml-direct")
            .credential_cmd(cmd)
            .base_url(emu.base_url())
            .telemetry(false)
            .retry(fast_retry())
            .build()
            .unwrap()
    };
    // The command is run for every raw-credential request: here only the exchange (the
    // api_key, valid, authenticates client/config).
    let service = ServiceClient::new(config(format!(
        "echo run >> {}; echo tml-from-command",
        counter.display()
    )))
    .unwrap();
    service.get_server_capabilities().await.unwrap();
    service.get_server_capabilities().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );
    // A failing command is an auth error surfaced at once, never retried as a connection
    // error: the journal shows no exchange and no call.
    let service = ServiceClient::new(config("exit 1".into())).unwrap();
    let before = journal_paths(&emu).await.len();
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.starts_with(auth::CMD_EMPTY_MESSAGE), "{e}");
    assert!(e.transport.is_none());
    assert_eq!(
        journal_paths(&emu).await[before..],
        ["/api/v1/client/config"]
    );
}

#[tokio::test]
async fn without_jwt_mode_a_command_alone_is_the_missing_key_error() {
    let _env = clean_env();
    let emu = emulator("cmd-only").await;
    let config = Config::builder()
        .credential_cmd("echo tml-cmd-only")
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(fast_retry())
        .build()
        .unwrap();
    let service = ServiceClient::new(config).unwrap();
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!(e.message, auth::MISSING_API_KEY_MESSAGE);
    let log = auth_log(&emu).await;
    assert_eq!(
        log.len(),
        1,
        "client/config (with the command's key) only: {log:?}"
    );
    assert_eq!(
        (log[0].0.as_str(), log[0].1.as_str()),
        ("/api/v1/client/config", "api_key")
    );
}

#[tokio::test]
async fn telemetry_after_close_still_gets_a_jwt() {
    let emu = jwt_emulator("jwt-telemetry", Duration::from_secs(3600)).await;
    let config = Config::builder()
        .api_key("tml-auth-telemetry")
        .base_url(emu.base_url())
        .telemetry(true)
        .retry(fast_retry())
        .build()
        .unwrap();
    let service = ServiceClient::new(config).unwrap();
    service
        .create_lora_training_client(
            BASE_MODEL,
            LoraOptions {
                rank: 4,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let log = auth_log(&emu).await;
    let telemetry: Vec<_> = log.iter().filter(|e| e.0 == "/api/v1/telemetry").collect();
    assert!(!telemetry.is_empty(), "{log:?}");
    assert!(
        telemetry.iter().all(|e| e.1 == "jwt" && e.3 == 200),
        "{telemetry:?}"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let _env = clean_env();
    let cfg = Config::builder()
        .api_key("tml-SECRET-key")
        .credential_cmd("echo tml-SECRET-cmd")
        .base_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    assert!(!format!("{cfg:?}").contains("SECRET"), "{cfg:?}");
    let b = Config::builder().credential_cmd("echo SECRET");
    assert!(!format!("{b:?}").contains("SECRET"));
}

#[tokio::test]
async fn background_refresh_retries_then_stops_on_401_near_expiry() {
    let emu = jwt_emulator("jwt-refresh-401", Duration::from_secs(4)).await;
    let settings = AuthSettings {
        refresh_margin: Duration::from_millis(500),
        refresh_retry: Duration::from_millis(300),
        ..AuthSettings::default()
    };
    let service = jwt_client(&emu, settings);
    service.get_server_capabilities().await.unwrap();
    // The emulator's lifetime is whole seconds from a floored iat: the JWT expires within
    // 4 s from now.
    let claims_exp = Instant::now() + Duration::from_secs(4);
    fault(
        &emu,
        json!({"path": "/api/v1/auth/token", "status": 401, "body": {"detail": "revoked key"}}),
    )
    .await;
    // The first background refresh (~2 s) is rejected; it is retried every 300 ms until the
    // JWT is within retry + margin (0.8 s) of expiry, then the loop stops.
    assert!(
        wait_until(Duration::from_secs(8), || async {
            exchanges(&emu).await >= 3
        })
        .await
    );
    // Observe until well after expiry: no attempt after the stop.
    let end = claims_exp + Duration::from_millis(1500);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_at = exchanges(&emu).await;
    assert!(stopped_at <= 1 + 8, "bounded retries: {stopped_at}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(exchanges(&emu).await, stopped_at, "the loop stopped");
    // On demand: the expired JWT cannot be renewed, the 401 reaches the caller.
    let e = service.get_server_capabilities().await.unwrap_err();
    assert_eq!(e.http_status, Some(401));
    // The credential works again: the on-demand exchange restarts the background loop.
    emu.control("DELETE", "faults", None).await;
    service.get_server_capabilities().await.unwrap();
    let n = exchanges(&emu).await;
    assert!(
        wait_until(Duration::from_secs(8), || async {
            exchanges(&emu).await > n
        })
        .await,
        "a new background loop refreshes the new JWT"
    );
}
