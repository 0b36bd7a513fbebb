//! Sampling workloads for the Rust API, the C ABI and the raw loop: closed-loop throughput
//! (N requests, K in flight), open-loop rate (telemetry workload), memory with N futures in
//! flight, and recovery after an outage.

use crate::ffi_client::{self, FfiSampler};
use crate::raw::RawSampler;
use crate::util::{cpu, latency_summary, mono, rss_kb, Args, Control};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::core::types::{ModelInput, SamplingParams};
use tinkex::core::{Config, SampleOptions, SamplingClient, ServiceClient};

pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";
const RETRIEVE: &str = "/api/v1/retrieve_future";

fn prompt(len: usize) -> ModelInput {
    ModelInput::from_ints((0..len as i64).map(|i| 1000 + i).collect())
}

fn params(max_tokens: i64) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// The JSON body a C host passes to `tinkex_sampling_client_sample` for the same request.
fn ffi_body(p: &ModelInput, sp: &SamplingParams) -> Vec<u8> {
    serde_json::to_vec(&json!({"prompt": p, "num_samples": 1, "sampling_params": sp})).unwrap()
}

/// One of the three Rust-side clients.
#[derive(Clone)]
pub enum Client {
    Rust {
        _service: ServiceClient,
        sampler: SamplingClient,
        prompt: ModelInput,
        params: SamplingParams,
    },
    Raw(RawSampler),
    Ffi(Arc<FfiSampler>),
}

impl Client {
    pub async fn new(kind: &str, base: &str, telemetry: bool, a: &Args) -> Client {
        let p = prompt(a.num("prompt-tokens", 16));
        let sp = params(a.num("max-tokens", 16));
        match kind {
            "rust" => {
                let cfg = Config::builder()
                    .api_key(crate::raw::API_KEY)
                    .base_url(base)
                    .telemetry(telemetry)
                    .build()
                    .expect("config");
                let service = ServiceClient::new(cfg).expect("service client");
                let sampler = service
                    .create_sampling_client_for_base_model(BASE_MODEL)
                    .await
                    .expect("sampling client");
                Client::Rust {
                    _service: service,
                    sampler,
                    prompt: p,
                    params: sp,
                }
            }
            "raw" => Client::Raw(RawSampler::new(base, BASE_MODEL, p, sp).await),
            "ffi" => {
                let body = ffi_body(&p, &sp);
                let base = base.to_string();
                Client::Ffi(Arc::new(
                    // tinkex_future_wait must not run on a tokio thread: a plain thread.
                    tokio::task::spawn_blocking(move || {
                        std::thread::spawn(move || {
                            FfiSampler::new(&base, telemetry, BASE_MODEL, body)
                        })
                        .join()
                        .unwrap()
                    })
                    .await
                    .unwrap(),
                ))
            }
            other => panic!("unknown client {other}"),
        }
    }

    /// One sample, start to result; false on error.
    async fn one(&self) -> bool {
        match self {
            Client::Rust {
                sampler,
                prompt,
                params,
                ..
            } => sampler
                .sample(prompt.clone(), 1, params.clone(), SampleOptions::default())
                .await
                .is_ok(),
            Client::Raw(r) => {
                r.sample().await;
                true
            }
            Client::Ffi(_) => unreachable!("the C ABI client is callback-driven"),
        }
    }

    /// `total` samples with `inflight` outstanding; returns (latencies, errors).
    pub async fn closed_loop(&self, total: usize, inflight: usize) -> (Vec<f64>, u64) {
        if let Client::Ffi(f) = self {
            let f = f.clone();
            let (lat, errors, _) =
                tokio::task::spawn_blocking(move || ffi_client::run(&f, total, inflight))
                    .await
                    .unwrap();
            return (lat, errors);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let workers: Vec<_> = (0..inflight.min(total))
            .map(|_| {
                let (c, next, errors, lat) =
                    (self.clone(), next.clone(), errors.clone(), lat.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < total {
                        let t = mono();
                        if !c.one().await {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(mono() - t);
                    }
                    lat.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let lat = std::mem::take(&mut *lat.lock().unwrap());
        (lat, errors.load(Ordering::Relaxed) + self.raw_errors())
    }

    fn raw_errors(&self) -> u64 {
        match self {
            Client::Raw(r) => r.raw.errors.swap(0, Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Open loop: `total` samples started at `rate` per second regardless of completions.
    pub async fn open_loop(&self, total: usize, rate: f64) -> (Vec<f64>, u64) {
        let errors = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let (c, errors) = (self.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let t = mono();
                if !c.one().await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                mono() - t
            }));
        }
        let mut lat = Vec::with_capacity(total);
        for t in tasks {
            lat.push(t.await.unwrap());
        }
        (lat, errors.load(Ordering::Relaxed) + self.raw_errors())
    }

    /// Submits `n` samples at once; the returned handle waits for all of them and gives
    /// (errors, completion time of each).
    pub fn start_all(&self, n: usize) -> Pending {
        match self {
            Client::Rust {
                sampler,
                prompt,
                params,
                ..
            } => Pending::Rust(
                (0..n)
                    .map(|_| {
                        sampler.sample(prompt.clone(), 1, params.clone(), SampleOptions::default())
                    })
                    .collect(),
            ),
            Client::Raw(r) => Pending::Tasks(
                (0..n)
                    .map(|_| {
                        let r = r.clone();
                        tokio::spawn(async move {
                            r.sample().await;
                            (true, mono())
                        })
                    })
                    .collect(),
            ),
            Client::Ffi(f) => Pending::Ffi(ffi_client::start_all(f, n) as usize),
        }
    }
}

/// Operations submitted by [`Client::start_all`].
pub enum Pending {
    Rust(Vec<tinkex::core::ApiFuture<tinkex::core::types::SampleResponse>>),
    Tasks(Vec<tokio::task::JoinHandle<(bool, f64)>>),
    Ffi(usize),
}

impl Pending {
    /// Watches every operation and records its completion time (for the recovery workload;
    /// the memory workload awaits in order).
    pub async fn wait(self) -> (u64, Vec<f64>) {
        match self {
            Pending::Rust(futs) => {
                let tasks: Vec<_> = futs
                    .into_iter()
                    .map(|f| {
                        tokio::spawn(async move {
                            let ok = f.await.is_ok();
                            (ok, mono())
                        })
                    })
                    .collect();
                collect(tasks).await
            }
            Pending::Tasks(tasks) => collect(tasks).await,
            Pending::Ffi(ptr) => tokio::task::spawn_blocking(move || {
                ffi_client::wait_all(ptr as *mut ffi_client::Batch)
            })
            .await
            .unwrap(),
        }
    }
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<(bool, f64)>>) -> (u64, Vec<f64>) {
    let mut errors = 0;
    let mut ends = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (ok, at) = t.await.unwrap();
        errors += u64::from(!ok);
        ends.push(at);
    }
    (errors, ends)
}

/// `sample`: throughput (closed loop) or a fixed rate (open loop).
pub async fn throughput(a: &Args) -> Value {
    let base = a.req("base-url");
    let kind = a.req("client");
    let total: usize = a.num("total", 20_000);
    let inflight: usize = a.num("inflight", 1_000);
    let warmup: usize = a.num("warmup", 200);
    let rate: f64 = a.num("rate", 0.0);
    let telemetry = a.flag("telemetry");
    let c = Client::new(&kind, &base, telemetry, a).await;
    if warmup > 0 {
        c.closed_loop(warmup, inflight.min(warmup)).await;
    }
    let (u0, s0) = cpu();
    let t0 = mono();
    let (lat, errors) = if rate > 0.0 {
        c.open_loop(total, rate).await
    } else {
        c.closed_loop(total, inflight).await
    };
    let wall = mono() - t0;
    let (u1, s1) = cpu();
    let (rss, hwm) = rss_kb();
    let mut out = json!({
        "requests": total, "inflight": inflight, "rate": rate, "errors": errors,
        "wall_s": wall, "rps": total as f64 / wall,
        "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0,
        "cpu_per_req_us": (u1 - u0 + s1 - s0) / total as f64 * 1e6,
        "rss_kb": rss, "hwm_kb": hwm, "telemetry": telemetry,
    });
    merge(&mut out, latency_summary(lat));
    out
}

/// `memory`: RSS with N futures in flight. Every first poll is held by a latency fault so
/// the N operations stay pending while the RSS is read. With `--no-wait` the process exits
/// right after the reading (the driver kills the emulator with the held polls).
pub async fn memory(a: &Args) -> Value {
    let base = a.req("base-url");
    let kind = a.req("client");
    let n: usize = a.num("n", 10_000);
    let hold_ms: u64 = a.num("hold-ms", 15_000);
    let c = Client::new(&kind, &base, false, a).await;
    c.closed_loop(100, 100).await; // warm-up
    let ctl = Control::new(&base);
    let before = ctl.requests(RETRIEVE).await;
    ctl.post(
        "faults",
        json!({"path": RETRIEVE, "latency_ms": hold_ms, "count": n}),
    )
    .await;
    let (rss0, _) = rss_kb();
    let t0 = mono();
    let pending = c.start_all(n);
    let submitted = mono() - t0;
    let held = ctl
        .wait_requests(
            RETRIEVE,
            before + n as u64,
            Duration::from_millis(hold_ms.saturating_sub(2_000)),
        )
        .await;
    let held_at = mono() - t0;
    let (rss1, _) = rss_kb();
    let seen = ctl.requests(RETRIEVE).await - before;
    let mut out = json!({
        "n": n, "all_polls_held": held, "polls_seen": seen,
        "rss_before_kb": rss0, "rss_inflight_kb": rss1,
        "submit_s": submitted, "held_s": held_at,
    });
    if !a.flag("no-wait") {
        let (errors, _) = pending.wait().await;
        let (rss2, hwm) = rss_kb();
        merge(
            &mut out,
            json!({"errors": errors, "rss_after_kb": rss2, "hwm_kb": hwm, "done_s": mono() - t0}),
        );
    } else {
        merge(&mut out, json!({"hwm_kb": rss_kb().1}));
        std::mem::forget(pending);
    }
    out
}

/// Reads one line of the driver's stdin (coordinated runs).
async fn read_line() -> String {
    tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        std::io::stdin().read_line(&mut l).unwrap();
        l.trim().to_string()
    })
    .await
    .unwrap()
}

/// `recovery`: N operations pending (their first polls held by a latency fault), a server
/// outage, then the time from the end of the outage until the last operation completed.
///
/// Alone it installs the fault and starts the outage itself. With `--coordinated` the driver
/// does both for several clients at once: this prints `READY` (set up) and waits for
/// `SUBMIT`, submits and prints `SUBMITTED`, then waits for `OUTAGE <t0> <seconds>`
/// (t0: CLOCK_MONOTONIC just before the driver's POST).
pub async fn recovery(a: &Args) -> Value {
    let base = a.req("base-url");
    let kind = a.req("client");
    let n: usize = a.num("n", 1_000);
    let hold_ms: u64 = a.num("hold-ms", 8_000);
    let outage_ms: u64 = a.num("outage-ms", 30_000);
    let coordinated = a.flag("coordinated");
    let c = Client::new(&kind, &base, false, a).await;
    c.closed_loop(100, 100).await; // warm-up
    let ctl = Control::new(&base);
    let (pending, end, held, extra) = if coordinated {
        println!("READY");
        assert_eq!(read_line().await, "SUBMIT");
        let pending = c.start_all(n);
        println!("SUBMITTED");
        let line = read_line().await;
        let mut it = line.split_whitespace().skip(1);
        let t0: f64 = it.next().unwrap().parse().unwrap();
        let secs: f64 = it.next().unwrap().parse().unwrap();
        (pending, t0 + secs, true, json!({}))
    } else {
        let before = ctl.requests(RETRIEVE).await;
        ctl.post(
            "faults",
            json!({"path": RETRIEVE, "latency_ms": hold_ms, "count": n}),
        )
        .await;
        let pending = c.start_all(n);
        let held = ctl
            .wait_requests(
                RETRIEVE,
                before + n as u64,
                Duration::from_millis(hold_ms.saturating_sub(2_000)),
            )
            .await;
        let o0 = mono();
        ctl.post("outage", json!({"duration_ms": outage_ms})).await;
        let o1 = mono();
        // The outage ends `outage_ms` after the server handled the POST (between o0 and
        // o1): measuring from o0 + outage is the conservative choice.
        (
            pending,
            o0 + outage_ms as f64 / 1e3,
            held,
            json!({"outage_post_rtt_ms": (o1 - o0) * 1e3}),
        )
    };
    let (errors, ends) = pending.wait().await;
    let mut after: Vec<f64> = ends.iter().map(|t| t - end).collect();
    after.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let early = after.iter().filter(|d| **d < 0.0).count();
    let mut out = json!({
        "n": n, "errors": errors, "all_polls_held": held,
        "completed_during_outage": early,
        "recovery_first_s": after.first().copied().unwrap_or(f64::NAN),
        "recovery_p50_s": crate::util::percentile(&after, 50.0),
        "recovery_max_s": after.last().copied().unwrap_or(f64::NAN),
    });
    merge(&mut out, extra);
    out
}

pub fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}
