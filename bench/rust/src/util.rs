//! Clocks, OS counters, argument parsing and emulator-control helpers shared by the workloads.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// CLOCK_MONOTONIC in seconds: the same clock as Python's `time.monotonic()`, so times taken
/// in different processes on this machine (client, proxy, driver) can be compared.
pub fn mono() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// User and system CPU seconds of this whole process (all threads), from getrusage.
pub fn cpu() -> (f64, f64) {
    // SAFETY: zeroed rusage is a valid out value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// (VmRSS, VmHWM) of this process in KiB, from /proc/self/status.
pub fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `--key value` flags (and bare `--flag` switches, value "1").
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(args: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i].trim_start_matches("--").to_string();
            if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                map.insert(key, args[i + 1].clone());
                i += 2;
            } else {
                map.insert(key, "1".into());
                i += 1;
            }
        }
        Args(map)
    }

    pub fn req(&self, key: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("missing --{key}"))
    }

    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("--{key}: {v:?} is not a number")),
            None => default,
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| v != "0" && v != "off")
    }
}

/// Sorted-sample percentile (nearest rank), in the samples' unit.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency summary in milliseconds.
pub fn latency_summary(mut secs: Vec<f64>) -> Value {
    secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = if secs.is_empty() {
        f64::NAN
    } else {
        secs.iter().sum::<f64>() / secs.len() as f64
    };
    json!({
        "lat_p50_ms": percentile(&secs, 50.0) * 1e3,
        "lat_p99_ms": percentile(&secs, 99.0) * 1e3,
        "lat_max_ms": secs.last().copied().unwrap_or(f64::NAN) * 1e3,
        "lat_mean_ms": mean * 1e3,
    })
}

/// The emulator's control API (`/_emulator/...`), with its own small HTTP client.
pub struct Control {
    base: String,
    http: reqwest::Client,
}

impl Control {
    pub fn new(base: &str) -> Control {
        Control {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_emulator/{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("control POST {path}: {e}"));
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/_emulator/{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("control GET {path}: {e}"));
        serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// Requests the emulator received on `path` so far (fault-answered ones included).
    pub async fn requests(&self, path: &str) -> u64 {
        self.get("requests").await["requests"][path]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until `path` has seen at least `target` requests (true), or until the count
    /// stopped growing for 2 s or `timeout` passed (false).
    pub async fn wait_requests(&self, path: &str, target: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut last, mut since) = (0, tokio::time::Instant::now());
        loop {
            let seen = self.requests(path).await;
            if seen >= target {
                return true;
            }
            let now = tokio::time::Instant::now();
            if seen != last {
                (last, since) = (seen, now);
            }
            if now > deadline || now.duration_since(since) > Duration::from_secs(2) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The runtime of every workload: tokio's default multi-thread runtime (one worker per CPU),
/// as a libtinkex user would have.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
