//! `tinkex-emulator`: run the emulator as a process. Prints its base URL as the first line
//! on stdout, then serves until SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tinkex_emulator::{Emulator, EmulatorConfig};

const USAGE: &str = "\
usage: tinkex-emulator [--port N] [--host IP] [--state-dir DIR]
                       [--poll-hold-ms MS] [--seq-gap-timeout-ms MS]
                       [--inline-result-limit BYTES] [--max-body-bytes BYTES]
                       [--max-decompressed-bytes BYTES] [--max-num-samples N]
                       [--max-topk-logprobs N] [--max-sample-result-entries N]
                       [--control-token TOKEN] [--zero-compute] [--no-persist]
                       [--client-config JSON] [--dynamic-config JSON]
                       [--jwt-lifetime-ms MS]

  --port N                 port to listen on; 0 (default) picks a free one
  --host IP                address to bind (default 127.0.0.1)
  --state-dir DIR          checkpoints live here and survive restarts
                           (default: ./tinkex-emulator-state)
  --poll-hold-ms MS        retrieve_future long-poll hold (default 20000)
  --seq-gap-timeout-ms MS  wait for a missing seq_id before skipping it (default 60000)
  --inline-result-limit B  larger results are announced metadata-only (default 64 MiB)
  --max-body-bytes B       largest accepted request body (default 256 MiB); larger: 413
  --max-decompressed-bytes B
                           largest zstd request body after decompression (default 256 MiB);
                           larger: 413, decoding stops at the limit
  --max-num-samples N      largest num_samples of one sample request (default 1024)
  --max-topk-logprobs N    largest topk_prompt_logprobs / topk_sample_logprobs (default 1024)
  --max-sample-result-entries N
                           largest sample result, in values (default 33554432)
  --control-token TOKEN    the /_emulator control routes require this token in the header
                           x-emulator-control-token (default: $TINKEX_EMULATOR_CONTROL_TOKEN;
                           prefer the variable: arguments are visible to other users).
                           Without a token, control routes answer only on a loopback
                           --host; on any other address they answer 403.
  --zero-compute           canned results instead of running the model (benchmarks)
  --no-persist             do not write live state (sessions, models) to the state dir
  --client-config JSON     client/config flags over the official defaults, e.g.
                           '{\"sample_use_retrieve_futures\": true}' (null removes a flag);
                           changeable later with POST /_emulator/flags
  --dynamic-config JSON    client/dynamic_config flags, e.g. '{\"sample_cancel_enabled\": true}'
  --jwt-lifetime-ms MS     lifetime of the JWTs of POST /api/v1/auth/token (default 3600000;
                           JWT mode: --client-config '{\"pjwt_auth_enabled\": true}')

The first line on stdout is the base URL, e.g. http://127.0.0.1:43127";

/// Environment variable holding the control token (used when --control-token is not given).
const CONTROL_TOKEN_ENV: &str = "TINKEX_EMULATOR_CONTROL_TOKEN";

fn json_object(
    flag: &str,
    value: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(value) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{flag}: expected a JSON object")),
        Err(e) => Err(format!("{flag}: invalid JSON: {e}")),
    }
}

fn parse_args(args: &[String], env_token: Option<String>) -> Result<EmulatorConfig, String> {
    let mut config = EmulatorConfig::new("tinkex-emulator-state");
    config.control_token = env_token.filter(|t| !t.is_empty());
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--zero-compute" => {
                config.zero_compute = true;
                continue;
            }
            "--no-persist" => {
                config.persist_live_state = false;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--port" => config.port = num(value)?.try_into().map_err(|_| "--port: out of range")?,
            "--host" => {
                config.host = value
                    .parse()
                    .map_err(|_| format!("--host: {value:?} is not an IP address"))?
            }
            "--state-dir" => config.state_dir = PathBuf::from(value),
            "--client-config" => config.client_config = json_object(flag, value)?,
            "--dynamic-config" => config.dynamic_config = json_object(flag, value)?,
            "--jwt-lifetime-ms" => config.jwt_lifetime = Duration::from_millis(num(value)?),
            "--poll-hold-ms" => config.poll_hold = Duration::from_millis(num(value)?),
            "--seq-gap-timeout-ms" => config.seq_gap_timeout = Duration::from_millis(num(value)?),
            "--inline-result-limit" => config.inline_result_limit = num(value)? as usize,
            "--max-body-bytes" => config.max_body_bytes = num(value)? as usize,
            "--max-decompressed-bytes" => config.max_decompressed_bytes = num(value)? as usize,
            "--max-num-samples" => config.max_num_samples = num(value)? as usize,
            "--max-topk-logprobs" => config.max_topk_logprobs = num(value)? as usize,
            "--max-sample-result-entries" => config.max_sample_result_entries = num(value)?,
            "--control-token" => {
                if value.is_empty() {
                    return Err("--control-token: the token must not be empty".into());
                }
                config.control_token = Some(value.clone())
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args, std::env::var(CONTROL_TOKEN_ENV).ok()) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("tinkex-emulator: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tinkex-emulator")
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let running = match Emulator::start(config.clone()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tinkex-emulator: cannot start on {}:{} with state dir {}: {e}", config.host, config.port, config.state_dir.display());
                return ExitCode::FAILURE;
            }
        };
        println!("{}", running.base_url());
        let _ = std::io::stdout().flush();
        eprintln!("tinkex-emulator: serving {} (state dir {})", running.base_url(), config.state_dir.display());
        if config.control_token.is_none() && !tinkex_emulator::config::is_loopback(config.host) {
            eprintln!("tinkex-emulator: {} is not a loopback address and no control token is set: the /_emulator control routes answer 403 (set {CONTROL_TOKEN_ENV} or --control-token to use them)", config.host);
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            r = running.serve_forever() => {
                if let Err(e) = r { eprintln!("tinkex-emulator: server error: {e}"); return ExitCode::FAILURE; }
            }
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        ExitCode::SUCCESS
    })
}
