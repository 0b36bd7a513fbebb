//! Emulator settings. Every duration is configurable so long scenarios run in seconds.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Base model names the emulator advertises and accepts; each is backed by the tiny model.
pub const DEFAULT_BASE_MODELS: &[(&str, i64)] = &[
    ("Qwen/Qwen3-8B", 32_768),
    ("Qwen/Qwen3-8B-Base", 32_768),
    ("Qwen/Qwen3-4B-Instruct-2507", 32_768),
    ("Qwen/Qwen3-30B-A3B", 32_768),
    ("Qwen/Qwen3-30B-A3B-Base", 32_768),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", 32_768),
    ("Qwen/Qwen3-32B", 32_768),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507", 32_768),
    ("meta-llama/Llama-3.2-1B", 131_072),
    ("meta-llama/Llama-3.2-3B", 131_072),
    ("meta-llama/Llama-3.1-8B", 131_072),
    ("meta-llama/Llama-3.1-8B-Instruct", 131_072),
    ("meta-llama/Llama-3.1-70B", 131_072),
    ("meta-llama/Llama-3.3-70B-Instruct", 131_072),
    ("openai/gpt-oss-20b", 131_072),
    ("openai/gpt-oss-120b", 131_072),
    ("deepseek-ai/DeepSeek-V3.1", 131_072),
];

/// How the emulator listens and behaves.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Address to bind (loopback by default).
    pub host: IpAddr,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Where checkpoints live; survives restarts.
    pub state_dir: PathBuf,
    /// How long `retrieve_future` holds a request open before answering try_again.
    /// Must stay below the client's 45 s read timeout.
    pub poll_hold: Duration,
    /// How long a model waits for a missing `seq_id` before skipping it.
    pub seq_gap_timeout: Duration,
    /// Results larger than this are announced as metadata-only when the poll allows it.
    pub inline_result_limit: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Advertised base models with their context lengths.
    pub base_models: Vec<(String, i64)>,
    /// Skip the model: canned results (zero logprobs, repeated tokens), for benchmarking a
    /// client without the server being the bottleneck.
    pub zero_compute: bool,
    /// Write live state (sessions, models) so a killed emulator can be restarted.
    pub persist_live_state: bool,
}

impl EmulatorConfig {
    /// Defaults for a state dir: 127.0.0.1, any port, 20 s long poll.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        EmulatorConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            state_dir: state_dir.into(),
            poll_hold: Duration::from_secs(20),
            seq_gap_timeout: Duration::from_secs(60),
            inline_result_limit: 64 * 1024 * 1024,
            max_body_bytes: 512 * 1024 * 1024,
            base_models: DEFAULT_BASE_MODELS
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            zero_compute: false,
            persist_live_state: true,
        }
    }

    /// The context length of an advertised base model.
    pub fn context_length(&self, base_model: &str) -> Option<i64> {
        self.base_models
            .iter()
            .find(|(n, _)| n == base_model)
            .map(|(_, c)| *c)
    }
}
