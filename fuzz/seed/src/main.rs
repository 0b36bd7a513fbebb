//! Seeds the fuzz corpora from real traffic: runs a training + sampling + REST loop of the
//! Rust client against the in-process emulator through a recording TCP proxy, then writes
//! the response bodies it saw (protobuf results, JSON bodies), the `tinker://` paths in
//! them and a few C ABI inputs as `fuzz/seeds/<target>/seed-<hash>` files.
//!
//! Usage: `fuzz/seed/run.sh` (or `cargo run --release --manifest-path fuzz/seed/Cargo.toml
//! -- <seeds dir>`).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::core::types::*;
use tinkex::core::{Config, LoraOptions, SampleOptions, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Copies `from` to `to`, appending every byte to `tee`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    tee: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tee.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A recording proxy to `upstream`; each connection's two byte streams end up in the log.
async fn proxy(upstream: std::net::SocketAddr) -> (String, Arc<Mutex<Vec<ConnLog>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            let up = Arc::new(Mutex::new(Vec::new()));
            let down = Arc::new(Mutex::new(Vec::new()));
            c.lock().unwrap().push(ConnLog {
                up: up.clone(),
                down: down.clone(),
            });
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, up));
            tokio::spawn(pipe(sr, cw, down));
        }
    });
    (url, conns)
}

struct ConnLog {
    up: Arc<Mutex<Vec<u8>>>,
    down: Arc<Mutex<Vec<u8>>>,
}

/// One HTTP/1.1 message: first line, lower-cased headers, body (de-chunked).
struct Msg {
    first: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Msg {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses consecutive HTTP/1.1 messages of one direction of a connection.
fn parse_stream(mut s: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(end) = find(s, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&s[..end]).into_owned();
        s = &s[end + 4..];
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut msg = Msg {
            first,
            headers,
            body: Vec::new(),
        };
        if msg.header("transfer-encoding") == Some("chunked") {
            loop {
                let Some(e) = find(s, b"\r\n") else {
                    return out;
                };
                let size_text = String::from_utf8_lossy(&s[..e]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .unwrap_or(0);
                s = &s[e + 2..];
                if size == 0 {
                    s = &s[find(s, b"\r\n").map_or(s.len(), |i| i + 2)..];
                    break;
                }
                if s.len() < size + 2 {
                    return out;
                }
                msg.body.extend_from_slice(&s[..size]);
                s = &s[size + 2..];
            }
        } else if let Some(n) = msg.header("content-length").and_then(|v| v.parse().ok()) {
            let n: usize = n;
            if s.len() < n {
                return out;
            }
            msg.body = s[..n].to_vec();
            s = &s[n..];
        }
        out.push(msg);
    }
    out
}

fn save(dir: &Path, target: &str, bytes: &[u8], seen: &mut BTreeSet<(String, u64)>) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let hash = h.finish();
    if !seen.insert((target.to_string(), hash)) {
        return;
    }
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("seed-{hash:016x}")), bytes).unwrap();
}

fn tinker_paths(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) if s.starts_with("tinker://") => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| tinker_paths(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| tinker_paths(x, out)),
        _ => {}
    }
}

fn datum(d: i64) -> Datum {
    let tokens: Vec<i64> = (0..13).map(|i| 100 + (d * 31 + i * 7) % 500).collect();
    let mut datum = Datum {
        model_input: ModelInput::from_ints(tokens[..12].to_vec()),
        ..Default::default()
    };
    datum.loss_fn_inputs.insert(
        "target_tokens".into(),
        TensorData::from_i64(tokens[1..].to_vec()),
    );
    datum
        .loss_fn_inputs
        .insert("weights".into(), TensorData::from_f32(vec![1.0; 12]));
    datum
}

/// C ABI inputs (selector byte of `ffi_json` + JSON), as the bindings send them.
fn ffi_inputs(base_url: &str, path: &str) -> Vec<(u8, serde_json::Value)> {
    use serde_json::json;
    let datum_json = serde_json::to_value(datum(1)).unwrap();
    let fb = json!({"data": [datum_json.clone(), serde_json::to_value(datum(2)).unwrap()],
                    "loss_fn": "cross_entropy"});
    let prompt = json!({"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]});
    vec![
        (
            0,
            json!({"api_key": "tml-seed", "base_url": base_url, "telemetry": false,
                   "timeouts": {"connect_ms": 5000}, "retry": {"jitter": 0.25, "max_attempts": 3},
                   "heartbeat": {"interval_ms": 10000}, "tags": ["a"], "project_id": "p"}),
        ),
        (
            1,
            json!({"base_model": "Qwen/Qwen3-8B", "lora_config": {"rank": 8}}),
        ),
        (2, json!({"path": path, "with_optimizer": true})),
        (3, json!({"base_model": "Qwen/Qwen3-8B"})),
        (3, json!({"model_path": path})),
        (4, fb.clone()),
        (5, fb),
        (
            6,
            json!({"loss_fn": "ppo", "loss_fn_config": {"clip_low_threshold": 0.8}}),
        ),
        (7, json!({"loss_fn": "cross_entropy"})),
        (
            8,
            json!({"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12}),
        ),
        (9, json!({"name": "ckpt", "ttl_seconds": 3600})),
        (10, json!({"name": "s1"})),
        (11, json!({})),
        (12, json!({"path": path, "with_optimizer": false})),
        (
            13,
            json!({"prompt": prompt.clone(), "num_samples": 2,
                    "sampling_params": {"max_tokens": 4, "temperature": 1.0, "seed": 7,
                                        "stop": [13]},
                    "prompt_logprobs": true, "topk_prompt_logprobs": 3,
                    "topk_sample_logprobs": 2}),
        ),
        (14, json!({"prompt": prompt})),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seeds: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../seeds"));
    let state = std::env::temp_dir().join(format!("tinkex-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let mut cfg = tinkex_emulator::EmulatorConfig::new(&state);
    cfg.poll_hold = Duration::from_millis(100);
    let emu = tinkex_emulator::Emulator::start(cfg).await.unwrap();
    let (url, conns) = proxy(emu.addr()).await;

    let config = Config::builder()
        .api_key("tml-fuzz-seed-not-a-secret")
        .base_url(url.clone())
        .telemetry(false)
        .build()
        .unwrap();
    let svc = ServiceClient::new(config).unwrap();
    let caps = svc.get_server_capabilities().result().await.unwrap();
    println!("{} models", caps.supported_models.len());
    let training = svc
        .create_lora_training_client("Qwen/Qwen3-8B", LoraOptions::default())
        .result()
        .await
        .unwrap();
    for step in 0..3 {
        let data: Vec<Datum> = (0..3 + step).map(datum).collect();
        let fb = training
            .forward_backward(data.clone(), "cross_entropy", None)
            .result()
            .await
            .unwrap();
        println!("step {step}: {:?}", fb.metrics);
        training
            .optim_step(AdamParams::default())
            .result()
            .await
            .unwrap();
        let _ = training
            .forward(data, "cross_entropy", None)
            .result()
            .await
            .unwrap();
    }
    let state_path = training.save_state("seed-state").result().await.unwrap();
    let sampler_path = training
        .save_weights_for_sampler("seed-sampler")
        .result()
        .await
        .unwrap();
    let sampling = svc
        .create_sampling_client(&sampler_path)
        .result()
        .await
        .unwrap();
    for (n, topk) in [(1u32, 0u32), (2, 3), (3, 5)] {
        let r = sampling
            .sample(
                ModelInput::from_ints(vec![1, 2, 3, 4]),
                n,
                SamplingParams {
                    max_tokens: Some(6),
                    seed: Some(7),
                    ..Default::default()
                },
                SampleOptions {
                    prompt_logprobs: topk > 0,
                    topk_prompt_logprobs: topk,
                    topk_sample_logprobs: topk,
                    prompt_logprobs_last_n: None,
                },
            )
            .result()
            .await
            .unwrap();
        println!("sampled {} sequences", r.sequences.len());
    }
    let _ = sampling
        .compute_logprobs(ModelInput::from_ints(vec![5, 6, 7]))
        .result()
        .await
        .unwrap();
    let rest = svc.create_rest_client();
    let runs = rest
        .list_training_runs(10, 0, Default::default(), None)
        .result()
        .await
        .unwrap();
    let id = training.model_id().to_string();
    let _ = rest
        .get_training_run(&id, Default::default())
        .result()
        .await
        .unwrap();
    let _ = rest.list_checkpoints(&id).result().await.unwrap();
    let _ = rest.list_user_checkpoints(10, 0).result().await.unwrap();
    let _ = rest
        .get_weights_info_by_tinker_path(&sampler_path)
        .result()
        .await
        .unwrap();
    let _ = rest
        .get_training_run("no-such-run", Default::default())
        .result()
        .await; // an error body
    println!("{} runs", runs.training_runs.len());
    svc.close(FinishReasonKind::Success, None).await.ok();
    tokio::time::sleep(Duration::from_millis(200)).await; // let the proxy pipes drain
    emu.shutdown().await;

    let mut seen = BTreeSet::new();
    let mut paths: BTreeSet<String> = [state_path.clone(), sampler_path.clone()].into();
    let (mut proto, mut json) = (0, 0);
    for c in conns.lock().unwrap().iter() {
        let up = c.up.lock().unwrap();
        let down = c.down.lock().unwrap();
        for resp in parse_stream(&down) {
            let ct = resp.header("content-type").unwrap_or("");
            if resp.body.is_empty() || resp.body.len() > 32 * 1024 {
                continue;
            }
            if ct.contains("protobuf") {
                use prost::Message;
                let is_fb = tinkex::core::proto::ForwardBackwardOutput::decode(&resp.body[..])
                    .is_ok_and(|m| !m.loss_fn_outputs.is_empty());
                let target = if is_fb {
                    "decode_forward_backward"
                } else {
                    "decode_sample"
                };
                save(&seeds, target, &resp.body, &mut seen);
                proto += 1;
            } else {
                save(&seeds, "json_responses", &resp.body, &mut seen);
                if let Ok(v) = serde_json::from_slice(&resp.body) {
                    tinker_paths(&v, &mut paths);
                }
                json += 1;
            }
            let _ = &resp.first;
        }
        // JSON request bodies are JSON inputs too (REST and session parsers see the same
        // shapes); keep them as json_responses seeds.
        for req in parse_stream(&up) {
            if req.header("content-type").unwrap_or("").contains("json")
                && !req.body.is_empty()
                && req.body.len() <= 32 * 1024
            {
                save(&seeds, "json_responses", &req.body, &mut seen);
            }
        }
    }
    // Error bodies in the shapes servers send them.
    for body in [
        r#"{"detail": "Invalid API key"}"#,
        r#"{"detail": [{"loc": ["body", "x"], "msg": "field required"}]}"#,
        r#"{"error": "boom", "category": "user"}"#,
        r#"{"type": "try_again", "request_id": "r", "queue_state": "paused_capacity"}"#,
    ] {
        save(&seeds, "json_responses", body.as_bytes(), &mut seen);
    }
    for p in &paths {
        save(&seeds, "tinker_path", p.as_bytes(), &mut seen);
    }
    for (which, v) in ffi_inputs(&url, &sampler_path) {
        let mut b = vec![which];
        b.extend(serde_json::to_vec(&v).unwrap());
        save(&seeds, "ffi_json", &b, &mut seen);
    }
    for p in &paths {
        for which in [15u8, 16, 17, 18] {
            let text = if which <= 16 { id.clone() } else { p.clone() };
            let mut b = vec![which];
            b.extend(text.as_bytes());
            save(&seeds, "ffi_json", &b, &mut seen);
        }
    }
    for (u, k) in [
        (url.as_str(), "tml-fuzz-seed-not-a-secret"),
        (
            "https://tinker.thinkingmachines.dev/services/tinker-prod",
            "tml-abcdefghijklmnop",
        ),
        ("http://localhost:x@attacker.example/", "tml-k"),
        ("http://[::1]:8000", "eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    ] {
        let mut b = u.as_bytes().to_vec();
        b.push(0xff);
        b.push(1);
        b.extend(k.as_bytes());
        save(&seeds, "config_url", &b, &mut seen);
    }
    // The datum batch target reads structure from raw bytes: deterministic pseudo-random
    // seeds of a few sizes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for n in [16usize, 64, 256, 1024] {
        let b: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        save(&seeds, "datum_batch", &b, &mut seen);
    }
    let _ = std::fs::remove_dir_all(&state);
    println!(
        "recorded {proto} protobuf and {json} JSON responses; {} seed files in {}",
        seen.len(),
        seeds.display()
    );
}
