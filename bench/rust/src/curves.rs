//! The growth-curve workloads that need more than the W1/W3 ones (docs/benchmarks.md,
//! "Growth curves"): `rss`, the client's memory with N sample futures in flight, whichever
//! way the client polls them (per-future `retrieve_future` or the batched `retrieve_futures`
//! poller; the server's `client/config` flag `sample_use_retrieve_futures` decides, so the
//! driver starts the emulator with `--client-config`).

use crate::sample::Client;
use crate::util::{mono, rss_kb, Args, Control};
use serde_json::{json, Value};
use std::time::Duration;

/// `retrieve_future` (per-future polls).
pub const RETRIEVE: &str = "/api/v1/retrieve_future";
/// `retrieve_futures` (the batched poller, PROTOCOL.md 8.2).
pub const RETRIEVE_BATCHED: &str = "/api/v1/retrieve_futures";

/// Open file descriptors of this process, and how many of them are sockets.
pub fn fds() -> (u64, u64) {
    let (mut all, mut sockets) = (0, 0);
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            all += 1;
            if std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
            {
                sockets += 1;
            }
        }
    }
    (all, sockets)
}

/// Pending futures of the emulator (`GET /_emulator/futures`).
async fn pending(ctl: &Control) -> u64 {
    ctl.get("futures").await["pending"].as_u64().unwrap_or(0)
}

/// `rss --client rust|ffi|raw --base-url URL --n N [--hold-ms MS --expect K --stall-ms MS]`:
/// N samples submitted at once while every sample takes `hold-ms` on the server
/// (`/_emulator/delays {"Sample": MS}`), so all stay pending whether polled one by one or in
/// batches. The RSS is read once the emulator holds K (default N; fewer when the client
/// bounds its concurrent calls) more pending futures and — with per-future polling — has
/// received K first polls, or when those counts stopped growing for `stall-ms` (default
/// 5 s: a machine limit). The process exits right after the reading (the driver then kills
/// the emulator).
pub async fn rss(a: &Args) -> Value {
    let base = a.req("base-url");
    let kind = a.req("client");
    let n: u64 = a.num("n", 10_000);
    let hold_ms: u64 = a.num("hold-ms", 60_000);
    let expect: u64 = a.num("expect", n);
    let stall = Duration::from_millis(a.num("stall-ms", 5_000));
    let c = Client::new(&kind, &base, false, a).await;
    c.closed_loop(100, 100).await; // warm-up (connections, sessions, the poller's start)
    let ctl = Control::new(&base);
    let batched = ctl.get("flags").await["client_config"]["sample_use_retrieve_futures"]
        .as_bool()
        .unwrap_or(false);
    ctl.post("delays", json!({ "Sample": hold_ms })).await;
    let p0 = pending(&ctl).await;
    let polls0 = ctl.requests(RETRIEVE).await;
    let batch0 = ctl.requests(RETRIEVE_BATCHED).await;
    let (rss0, _) = rss_kb();
    let (fd0, sock0) = fds();
    let t0 = mono();
    let pending_ops = c.start_all(n as usize);
    let submitted = mono() - t0;
    // Wait for the server to hold them all (and their first polls), or for the counts to
    // stop growing.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hold_ms * 3 / 4);
    let (mut last, mut since) = ((0, 0), tokio::time::Instant::now());
    let all_held = loop {
        let p = pending(&ctl).await.saturating_sub(p0);
        let polls = if batched {
            expect
        } else {
            ctl.requests(RETRIEVE).await.saturating_sub(polls0)
        };
        if p >= expect && polls >= expect {
            break true;
        }
        let now = tokio::time::Instant::now();
        if (p, polls) != last {
            (last, since) = ((p, polls), now);
        }
        if now > deadline || now.duration_since(since) > stall {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let held_s = mono() - t0;
    let (rss1, hwm) = rss_kb();
    let (fd1, sock1) = fds();
    let out = json!({
        "n": n, "batched": batched, "all_held": all_held,
        "server_pending": pending(&ctl).await.saturating_sub(p0),
        "polls_seen": ctl.requests(RETRIEVE).await.saturating_sub(polls0),
        "batched_polls_seen": ctl.requests(RETRIEVE_BATCHED).await.saturating_sub(batch0),
        "rss_before_kb": rss0, "rss_inflight_kb": rss1, "hwm_kb": hwm,
        "fds_before": fd0, "fds_inflight": fd1, "sockets_before": sock0, "sockets_inflight": sock1,
        "submit_s": submitted, "held_s": held_s,
    });
    std::mem::forget(pending_ops);
    out
}
