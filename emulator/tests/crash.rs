//! The emulator binary killed with SIGKILL in the middle of a save_state and restarted on the
//! same port and state dir. The requests the server had accepted but not finished are gone
//! (their futures answer 410): as in the official SDK (PROTOCOL.md 8.1.3, 13.9), each such
//! training call reaches its caller as `Expired` — never resubmitted behind the caller's back
//! and never silently dropped. Re-issuing them works, the checkpoint saved again is complete,
//! and no optimizer step is applied twice (issue 4 acceptance 4, issue 13).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tinkex::core::types::{AdamParams, Datum, ModelInput, TensorData};
use tinkex::core::{Config, ErrorKind, LoraOptions, RetryPolicy, ServiceClient};

/// The emulator process; killed when dropped, so a failing assertion never leaves it running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_emulator(port: u16, state: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinkex-emulator"))
        .args(["--port", &port.to_string(), "--state-dir"])
        .arg(state)
        .args(["--poll-hold-ms", "200", "--seq-gap-timeout-ms", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("emulator binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Process(child), line.trim().to_string())
}

async fn control(
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let url = format!("{base}/_emulator/{path}");
    let req = match (method, body) {
        ("POST", Some(b)) => client
            .post(url)
            .header("content-type", "application/json")
            .body(b.to_string()),
        _ => client.get(url),
    };
    req.send().await.unwrap().json().await.unwrap()
}

fn batch() -> Vec<Datum> {
    (0..4i64)
        .map(|d| {
            let seq: Vec<i64> = (0..25)
                .map(|i: i64| 100_000 + (d * 7919 + i * 104_729) % 50_000)
                .collect();
            let mut datum = Datum {
                model_input: ModelInput::from_ints(seq[..24].to_vec()),
                ..Default::default()
            };
            datum.loss_fn_inputs.insert(
                "target_tokens".into(),
                TensorData::from_i64(seq[1..].to_vec()),
            );
            datum
        })
        .collect()
}

#[tokio::test]
async fn sigkill_during_save_state_then_restart_loses_and_duplicates_nothing() {
    let state = std::env::temp_dir().join(format!("tinkex-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let (mut child, base) = spawn_emulator(0, &state);
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();

    let config = Config::builder()
        .api_key("tml-crash-test")
        .base_url(&base)
        .telemetry(false)
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            min_poll_duration: Duration::from_millis(20),
            progress_timeout: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let service = ServiceClient::new(config).unwrap();
    let training = service
        .create_lora_training_client("Qwen/Qwen3-8B", LoraOptions::default())
        .await
        .unwrap();
    let adam = AdamParams {
        learning_rate: 1e-3,
        ..Default::default()
    };
    for _ in 0..3 {
        training.forward_backward(batch(), "cross_entropy", None);
        training.optim_step(adam).await.unwrap();
    }
    // The save takes 1.5 s on the server; kill the server while it is in progress.
    control(
        &base,
        "POST",
        "delays",
        Some(serde_json::json!({"SaveWeights": 1500})),
    )
    .await;
    let save = training.save_state("at-crash");
    let after_save = (
        training.forward_backward(batch(), "cross_entropy", None),
        training.optim_step(adam),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = control(&base, "GET", "requests", None).await;
        if seen["requests"]["/api/v1/save_weights"]
            .as_u64()
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "the save reached the server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    let (child, base2) = spawn_emulator(port, &state);
    assert_eq!(base2, base, "restarted on the same port");
    // The save was executing when the server died: its future is gone.
    let lost = save
        .await
        .expect_err("the interrupted save is reported, not hidden");
    assert_eq!(lost.kind, ErrorKind::Expired, "{lost}");
    // Work queued behind it was never executed: each call says so (or, if the restarted
    // server had already run it, succeeds) — it is never silently dropped.
    if let Err(e) = after_save.0.await {
        assert_eq!(e.kind, ErrorKind::Expired, "{e}");
    }
    let step_lost = match after_save.1.await {
        Ok(_) => false,
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Expired, "{e}");
            true
        }
    };
    // The caller re-issues what was lost; the server skips the lost seq_ids after its gap
    // timeout and carries on.
    let path = training
        .save_state("after-crash")
        .await
        .expect("a new save works");
    if step_lost {
        training.forward_backward(batch(), "cross_entropy", None);
        training.optim_step(adam).await.unwrap();
    }
    training.optim_step(adam).await.unwrap();
    let stats = control(
        &base,
        "GET",
        &format!("models/{}", training.model_id()),
        None,
    )
    .await;
    assert_eq!(
        stats["optimizer_steps"], 5,
        "3 before the crash + 2 after, none lost or doubled: {stats}"
    );

    // The checkpoint is complete and loadable.
    let resumed = service
        .create_training_client_from_state_with_optimizer(&path)
        .await
        .unwrap();
    resumed
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    drop(child);
    let _ = std::fs::remove_dir_all(&state);
}
