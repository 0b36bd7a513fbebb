//! Shared helpers of the integration tests: an in-process emulator and a client with
//! time-scaled settings.

#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tinkex::core::types::{Datum, ModelInput, TensorData};
use tinkex::core::{Config, RetryPolicy, ServiceClient};
use tinkex_emulator::{Emulator, EmulatorConfig, RunningEmulator};

pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// A fresh state directory.
pub fn state_dir(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("tinkex-test-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An emulator with a 200 ms long-poll hold.
pub async fn emulator(tag: &str) -> RunningEmulator {
    emulator_with(tag, |_| {}).await
}

/// An emulator with settings changed by `f`.
pub async fn emulator_with(tag: &str, f: impl FnOnce(&mut EmulatorConfig)) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(state_dir(tag));
    cfg.poll_hold = Duration::from_millis(200);
    f(&mut cfg);
    Emulator::start(cfg).await.expect("emulator starts")
}

/// A retry policy scaled down so failure scenarios take milliseconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        billing_pause_step: Duration::from_millis(20),
        min_poll_duration: Duration::from_millis(50),
        holder_base_delay: Duration::from_millis(10),
        holder_max_delay: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

/// A client of `emu` with the fast retry policy.
pub fn client(emu: &RunningEmulator) -> ServiceClient {
    client_with(emu, fast_retry())
}

/// A client of `emu` with a given retry policy.
pub fn client_with(emu: &RunningEmulator, retry: RetryPolicy) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-integration-test")
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(retry)
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

/// Every duration of the client scaled by `scale` (e.g. 0.01: one minute becomes 0.6 s).
pub fn scaled_config(base_url: &str, scale: f64) -> tinkex::core::Config {
    let s = |secs: f64| Duration::from_secs_f64(secs * scale);
    Config::builder()
        .api_key("tml-chaos-test")
        .base_url(base_url)
        .telemetry(false)
        .retry(RetryPolicy {
            progress_timeout: s(7200.0),
            base_delay: s(0.5),
            max_delay: s(10.0),
            max_retry_after: s(60.0),
            billing_pause_step: s(5.0),
            billing_max_pause: s(3600.0),
            billing_log_interval: s(60.0),
            billing_incident_reset: s(300.0),
            min_poll_duration: s(1.0),
            holder_base_delay: s(1.0),
            holder_max_delay: s(30.0),
            // The chaos suite rides out outages of up to 10 (scaled) minutes: longer than the
            // SDK's 5-minute holder window, which would fail those sends. libtinkex lets the
            // window be raised to the progress timeout; this suite proves that configuration.
            // (tests/conformance_send.rs proves the default window bounds a failing send.)
            holder_window: s(7200.0),
            ..RetryPolicy::default()
        })
        .timeouts(tinkex::core::Timeouts {
            connect: s(5.0).max(Duration::from_millis(50)),
            request: s(60.0),
            retrieve_future: s(45.0),
            heartbeat: s(10.0),
            dynamic_config: s(10.0),
            telemetry: s(5.0),
        })
        .heartbeat(tinkex::core::HeartbeatConfig {
            interval: s(10.0),
            warn_after: s(120.0),
            warn_log_interval: s(60.0),
        })
        .progress_event_interval(s(10.0))
        .build()
        .unwrap()
}

/// An emulator whose long-poll hold is scaled like the client (20 s × `scale`).
pub async fn scaled_emulator(tag: &str, scale: f64) -> RunningEmulator {
    emulator_with(tag, |c| {
        c.poll_hold = Duration::from_secs_f64(20.0 * scale);
        c.seq_gap_timeout = Duration::from_secs_f64(600.0 * scale);
    })
    .await
}

/// Sends a control request in-process ([`RunningEmulator::control`]): no socket, listener or
/// fault middleware is involved, so an outage, partition or fault rule the test itself
/// injected can never delay, cut or fail it (test helpers must not share the fate of the
/// faults they inject).
async fn control_request(
    emu: &RunningEmulator,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    emu.control(method, path, body.as_ref()).await
}

/// POSTs JSON to a `/_emulator/...` control path.
pub async fn control_post(emu: &RunningEmulator, path: &str, body: Value) {
    let (status, answer) = control_request(emu, "POST", path, Some(body)).await;
    assert_eq!(status, 200, "{path}: {answer}");
}

/// Next-token datum over `tokens`.
pub fn datum(tokens: &[i64]) -> Datum {
    let n = tokens.len() - 1;
    let mut d = Datum {
        model_input: ModelInput::from_ints(tokens[..n].to_vec()),
        ..Default::default()
    };
    d.loss_fn_inputs.insert(
        "target_tokens".into(),
        TensorData::from_i64(tokens[1..].to_vec()),
    );
    d.loss_fn_inputs
        .insert("weights".into(), TensorData::from_f32(vec![1.0; n]));
    d
}

/// A fixed batch of 4 sequences of 24 predicted tokens with large ids.
pub fn batch() -> Vec<Datum> {
    (0..4)
        .map(|d: i64| {
            let seq: Vec<i64> = (0..25)
                .map(|i: i64| 100_000 + (d * 7919 + i * 104_729) % 50_000)
                .collect();
            datum(&seq)
        })
        .collect()
}

/// GET a `/_emulator/...` control path (in-process like [`control_post`]).
pub async fn control_get(emu: &RunningEmulator, path: &str) -> Value {
    let (status, answer) = control_request(emu, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// Installs a fault rule.
pub async fn fault(emu: &RunningEmulator, rule: Value) {
    control_post(emu, "faults", rule).await;
}

/// Optimizer steps applied by the emulator to a model.
pub async fn optimizer_steps(emu: &RunningEmulator, model_id: &str) -> u64 {
    control_get(emu, &format!("models/{model_id}")).await["optimizer_steps"]
        .as_u64()
        .unwrap()
}

/// The loss per predicted token of a forward_backward output.
pub fn mean_loss(out: &tinkex::core::types::ForwardBackwardOutput, tokens: usize) -> f64 {
    out.metrics["loss:sum"] / tokens as f64
}
