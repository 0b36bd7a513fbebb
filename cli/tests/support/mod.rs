//! Shared helpers of the CLI tests: an in-process emulator with a training run and its
//! checkpoints, and a runner of the built `tinkex` binary against it.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tinkex::core::{Config, LoraOptions, RestClient, RetryPolicy, ServiceClient};
use tinkex_emulator::{Emulator, EmulatorConfig, RunningEmulator};

/// The API key of the test user (the emulator's owner of the runs the tests create).
pub const KEY: &str = "tml-cli-test-user";

pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// Exit codes of docs/cli.md.
pub const EXIT_USER: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_SERVICE: i32 = 3;

/// The library configuration the CLI runs with in tests: fast retries, so a failing
/// server ends a command in well under a second instead of the SDK's five minutes.
pub const FAST_CLIENT_CONFIG: &str = r#"{"telemetry": false, "retry": {"base_delay_ms": 5, "max_delay_ms": 20, "http_max_retries": 2, "holder_window_ms": 300, "holder_base_delay_ms": 5, "holder_max_delay_ms": 20, "billing_max_pause_ms": 0, "trace_export_poll_interval_ms": 50}, "timeouts": {"connect_ms": 2000, "request_ms": 20000}}"#;

/// A fresh directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("tinkex-cli-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An emulator with settings changed by `f`.
pub async fn emulator_with(tag: &str, f: impl FnOnce(&mut EmulatorConfig)) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(temp_dir(&format!("{tag}-state")));
    cfg.poll_hold = Duration::from_millis(200);
    f(&mut cfg);
    Emulator::start(cfg).await.expect("emulator starts")
}

/// The library configuration of the test's own clients (same user as the CLI).
pub fn config(emu: &RunningEmulator) -> Config {
    Config::builder()
        .api_key(KEY)
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            holder_base_delay: Duration::from_millis(10),
            holder_max_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

/// What the set-up created.
pub struct Fixture {
    pub session_id: String,
    pub run_id: String,
    pub training: String,
    pub sampler: String,
    pub external: String,
}

/// A training run with a training, a sampler and an external checkpoint (the test's own
/// session: the CLI's commands are checked to add none).
pub async fn fixture(emu: &RunningEmulator) -> Fixture {
    let service = ServiceClient::new(config(emu)).unwrap();
    let tc = service
        .create_lora_training_client(
            BASE_MODEL,
            LoraOptions {
                rank: 8,
                ..LoraOptions::default()
            },
        )
        .await
        .unwrap();
    let training = tc.save_state("step-1").await.unwrap();
    let sampler = tc.save_weights_for_sampler("s-1").await.unwrap();
    let external = tc
        .save_weights_external("ext-1", None, None)
        .await
        .unwrap()
        .path;
    let session_id = service.session_id().expect("a session was created");
    service
        .close(tinkex::core::types::FinishReasonKind::Success, None)
        .await
        .unwrap();
    Fixture {
        session_id,
        run_id: tc.model_id().to_string(),
        training,
        sampler,
        external,
    }
}

/// The files of an external checkpoint as the server serves them (name → bytes).
pub async fn external_files(
    emu: &RunningEmulator,
    path: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let rest = RestClient::new(config(emu)).unwrap();
    let urls = rest.get_external_weights_urls(path).await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (name, url) in urls.urls {
        let mut resp = tinkex::core::rest::plain::open_signed_url(
            &url,
            0,
            None,
            Duration::from_secs(5),
            false,
        )
        .await
        .unwrap();
        let mut bytes = Vec::new();
        while let Some(c) = resp.chunk().await.unwrap() {
            bytes.extend_from_slice(&c);
        }
        out.insert(name, bytes);
    }
    out
}

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts the exit code, showing the run otherwise.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// How the binary is run: environment and stdin.
#[derive(Clone, Debug)]
pub struct Cli {
    pub base_url: String,
    pub home: PathBuf,
    pub api_key: Option<String>,
    pub cwd: PathBuf,
    pub client_config: String,
}

impl Cli {
    /// A runner against `emu` as the test user, with a fresh home and working directory.
    pub fn new(emu: &RunningEmulator, tag: &str) -> Cli {
        Cli {
            base_url: emu.base_url().to_string(),
            home: temp_dir(&format!("{tag}-home")),
            api_key: Some(KEY.to_string()),
            cwd: temp_dir(&format!("{tag}-cwd")),
            client_config: FAST_CLIENT_CONFIG.to_string(),
        }
    }

    /// Runs `tinkex args…` with `stdin`, off the test's runtime threads (the emulator
    /// keeps serving meanwhile).
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let me = self.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let stdin = stdin.to_string();
        tokio::task::spawn_blocking(move || me.run_blocking(&args, &stdin))
            .await
            .unwrap()
    }

    /// Runs `tinkex args…` with an empty stdin.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "").await
    }

    fn command(&self, args: &[String]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tinkex"));
        cmd.args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("TINKER_BASE_URL", &self.base_url)
            .env("TINKER_TELEMETRY", "0")
            .env("TINKEX_CLIENT_CONFIG", &self.client_config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(k) = &self.api_key {
            cmd.env("TINKER_API_KEY", k);
        }
        cmd
    }

    /// Starts `tinkex args…` without waiting (stdin closed).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut child = self.command(&args).spawn().expect("the tinkex binary runs");
        drop(child.stdin.take());
        child
    }

    fn run_blocking(&self, args: &[String], stdin: &str) -> Run {
        use std::io::Write;
        let mut child = self.command(args).spawn().expect("the tinkex binary runs");
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        finished(child)
    }
}

/// Waits for a child and collects its output.
pub fn finished(child: std::process::Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Requests the emulator received on paths starting with `prefix`.
pub fn requests_under(emu: &RunningEmulator, prefix: &str) -> u64 {
    emu.state()
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

/// Requests the emulator received on `path`.
pub fn requests(emu: &RunningEmulator, path: &str) -> u64 {
    emu.state()
        .requests
        .lock()
        .unwrap()
        .get(path)
        .copied()
        .unwrap_or(0)
}

/// Installs a fault rule.
pub async fn fault(emu: &RunningEmulator, rule: Value) {
    let (status, answer) = emu.control("POST", "faults", Some(&rule)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The signed downloads the emulator served (path, status).
pub fn downloads(emu: &RunningEmulator) -> Vec<(String, u16)> {
    emu.state()
        .signer
        .downloads()
        .into_iter()
        .map(|d| (d.path, d.status))
        .collect()
}

/// Every file under `dir` (relative name → bytes), skipping nothing.
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `YYYY-MM-DDT00:00:00Z` of today (UTC) plus `days`.
pub fn utc_midnight(days: i64) -> String {
    let day = Duration::from_secs(86400 * days.unsigned_abs());
    let now = std::time::SystemTime::now();
    let at = if days >= 0 { now + day } else { now - day };
    format!(
        "{}T00:00:00Z",
        &tinkex::core::telemetry::format_timestamp(at)[..10]
    )
}
