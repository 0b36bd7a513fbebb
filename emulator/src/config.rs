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

/// Default limit of a request body, before and after decompression (256 MiB): far above the
/// largest forward_backward chunk a client sends (clients split batches into chunks of about
/// 5 MB, PROTOCOL.md 5.3).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// The header carrying the control token of the `/_emulator` routes.
pub const CONTROL_TOKEN_HEADER: &str = "x-emulator-control-token";

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
    /// Largest accepted request body as sent (before any decompression); larger bodies are
    /// answered 413 with a JSON error.
    pub max_body_bytes: usize,
    /// Largest accepted request body after decompression (`Content-Encoding: zstd`); a
    /// compressed body that would decode to more (a "zip bomb") is answered 413 without
    /// decoding more than this many bytes.
    pub max_decompressed_bytes: usize,
    /// Largest `num_samples` of one `asample` request (larger: HTTP 400).
    pub max_num_samples: usize,
    /// Largest `topk_prompt_logprobs` / `topk_sample_logprobs` (larger: HTTP 400).
    pub max_topk_logprobs: usize,
    /// Largest number of values one sample result may hold (sampled tokens, log-probs and
    /// top-k entries, estimated from the request before it runs; larger: HTTP 400).
    pub max_sample_result_entries: u64,
    /// Token required (header `x-emulator-control-token`) by the `/_emulator` control routes.
    /// Without one, those routes answer only when `host` is a loopback address, and 403
    /// otherwise; with one, they require it whatever the address.
    pub control_token: Option<String>,
    /// Advertised base models with their context lengths.
    pub base_models: Vec<(String, i64)>,
    /// Skip the model: canned results (zero logprobs, repeated tokens), for benchmarking a
    /// client without the server being the bottleneck.
    pub zero_compute: bool,
    /// Write live state (sessions, models) so a killed emulator can be restarted.
    pub persist_live_state: bool,
    /// Flags answered by `client/config` over the official defaults (PROTOCOL.md 5.3);
    /// changeable at run time with `POST /_emulator/flags`.
    pub client_config: serde_json::Map<String, serde_json::Value>,
    /// Flags answered by `client/dynamic_config` over the official defaults (5.4).
    pub dynamic_config: serde_json::Map<String, serde_json::Value>,
    /// Lifetime of the JWTs issued by `POST /api/v1/auth/token` (`exp − iat`, whole seconds,
    /// at least 1 s; default 3600 s as in the SDK's tests). JWT mode itself is the
    /// `client/config` flag `pjwt_auth_enabled`.
    pub jwt_lifetime: Duration,
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
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_BODY_BYTES,
            max_num_samples: 1024,
            max_topk_logprobs: 1024,
            max_sample_result_entries: 1 << 25,
            control_token: None,
            base_models: DEFAULT_BASE_MODELS
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            zero_compute: false,
            persist_live_state: true,
            client_config: serde_json::Map::new(),
            dynamic_config: serde_json::Map::new(),
            jwt_lifetime: Duration::from_secs(3600),
        }
    }

    /// Whether a request to a `/_emulator` control route may proceed, given the value of its
    /// [`CONTROL_TOKEN_HEADER`] header: with a configured token, only when the header
    /// matches it; without one, only when the emulator listens on a loopback address.
    pub fn control_access(&self, header: Option<&[u8]>) -> Result<(), ControlDenied> {
        match &self.control_token {
            Some(token) => match header {
                Some(given) if constant_time_eq(given, token.as_bytes()) => Ok(()),
                Some(_) => Err(ControlDenied::WrongToken),
                None => Err(ControlDenied::MissingToken),
            },
            None if is_loopback(self.host) => Ok(()),
            None => Err(ControlDenied::NotLoopback),
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

/// Why a control request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlDenied {
    /// A control token is configured and the request carries none (401).
    MissingToken,
    /// A control token is configured and the request carries another one (401).
    WrongToken,
    /// No control token is configured and the emulator listens on a non-loopback address
    /// (403): the unauthenticated control routes would be open to the network.
    NotLoopback,
}

/// Whether `ip` is a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
