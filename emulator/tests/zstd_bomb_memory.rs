//! A zstd bomb does not grow the emulator's memory past its decompression limit (issue 11,
//! item 12). Alone in its test binary so the process's peak RSS measures this test only.

mod support;

use std::time::Duration;
use support::*;
use tinkex_emulator::{Emulator, EmulatorConfig};

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

#[tokio::test]
async fn a_two_gib_zstd_bomb_is_refused_within_the_limit() {
    const LIMIT: usize = 16 << 20;
    let mut cfg = EmulatorConfig::new(state_dir("zstd-bomb-rss"));
    cfg.poll_hold = Duration::from_millis(200);
    cfg.max_decompressed_bytes = LIMIT;
    let emu = Emulator::start(cfg).await.unwrap();

    // 2 GiB of zeros in 16384 RLE blocks of 128 KiB (64 KiB compressed); window 8 MiB.
    let mut bomb = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 13 << 3];
    let blocks = 16 * 1024;
    for i in 0..blocks {
        let header = u32::from(i + 1 == blocks) | (1 << 1) | ((128 * 1024) << 3);
        bomb.extend_from_slice(&header.to_le_bytes()[..3]);
        bomb.push(0);
    }
    let before = peak_rss();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/forward_backward", emu.base_url()))
        .header("X-API-Key", KEY)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("16777216"),
        "{body}"
    );
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 4 * LIMIT as u64,
        "peak RSS grew by {grown} bytes decoding a bomb with a {LIMIT}-byte limit"
    );
}
