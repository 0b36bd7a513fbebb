//! The hostile-server suite through the Rust API (issue 11).
//!
//! Every case runs one client operation in a CHILD process (this test binary re-executed
//! with `HOSTILE_OP` set, running only `child_entry`) against the hostile server of
//! `tests/hostile/server` (embedded below with `#[path]`), which forwards the preamble to
//! an in-process emulator and gives the hostile answer to the operation under test. The
//! parent asserts, per case:
//!   * the child is alive at the end (exit status 0: no abort, no signal) — a process abort
//!     is what kills a Python interpreter or a BEAM;
//!   * the operation ended with a typed error (or, where the mode is harmless, success)
//!     within the configured time;
//!   * the child's peak RSS growth during the operation stayed below
//!     `RSS_GROWTH_BOUND` (measured with /proc/self/clear_refs + VmHWM in the child);
//!   * the error text is bounded (`MAX_ERROR_TEXT`) and holds neither the key nor a signed
//!     URL's query;
//!   * the other origin (where cross-origin redirects point) never received the API key
//!     or the Cloudflare access secret.
//!
//! Each test prints one line per case (`mode target -> kind elapsed rss`) for the report.

#[path = "hostile/server/src/lib.rs"]
mod server;
mod support;

#[path = "hostile/common.rs"]
mod common;

#[path = "hostile/secrets.rs"]
mod secrets;

use common::*;
use server::{Mode, Target};

/// Runs every child case; the parent tests never call this path without `HOSTILE_OP`.
#[test]
fn child_entry() {
    common::child_main();
}

/// The child of the secrets test (does nothing unless `SECRETS_CHILD` is set).
#[test]
fn secrets_child_entry() {
    secrets::run_child();
}

/// A full session at debug log level with telemetry on: the canary key appears in no log
/// line, event, error, panic message or telemetry batch; nor in errors from a base URL with
/// credentials, wrongly-typed config values or `Debug` of the config builder.
#[test]
fn secrets_the_key_appears_nowhere() {
    secrets::run_parent();
}

macro_rules! mode_tests {
    ($($name:ident => $mode:expr;)*) => {$(
        #[test]
        fn $name() {
            run_mode($mode);
        }
    )*};
}

mode_tests! {
    mode_malformed_json => Mode::MalformedJson;
    mode_wrong_content_type => Mode::WrongContentType;
    mode_truncated => Mode::Truncated;
    mode_lying_topk => Mode::LyingTopk;
    mode_lying_num_datums => Mode::LyingNumDatums;
    mode_lying_offsets => Mode::LyingOffsets;
    mode_huge_announced => Mode::HugeAnnounced;
    mode_endless_chunked => Mode::EndlessChunked;
    mode_big_detail => Mode::BigDetail;
    mode_slow_drip => Mode::SlowDrip;
    mode_header_bomb => Mode::HeaderBomb;
    mode_huge_header => Mode::HugeHeader;
    mode_redirect_same_301 => Mode::RedirectSame(301);
    mode_redirect_same_302 => Mode::RedirectSame(302);
    mode_redirect_same_303 => Mode::RedirectSame(303);
    mode_redirect_same_307 => Mode::RedirectSame(307);
    mode_redirect_same_308 => Mode::RedirectSame(308);
    mode_redirect_other_301 => Mode::RedirectOther(301);
    mode_redirect_other_302 => Mode::RedirectOther(302);
    mode_redirect_other_303 => Mode::RedirectOther(303);
    mode_redirect_other_307 => Mode::RedirectOther(307);
    mode_redirect_other_308 => Mode::RedirectOther(308);
    mode_redirect_loop => Mode::RedirectLoop;
    mode_deep_json => Mode::DeepJson;
    mode_invalid_utf8_json => Mode::InvalidUtf8Json;
    mode_invalid_utf8_header => Mode::InvalidUtf8Header;
    mode_gzip_bomb => Mode::GzipBomb;
    mode_zstd_bomb => Mode::ZstdBomb;
}

macro_rules! op_tests {
    ($($name:ident => $op:expr;)*) => {$(
        #[test]
        fn $name() {
            run_op($op);
        }
    )*};
}

op_tests! {
    op_get_server_capabilities => "get_server_capabilities";
    op_client_config => "client_config";
    op_create_session => "create_session";
    op_create_model_submit => "create_model_submit";
    op_create_model_result => "create_model_result";
    op_get_info => "get_info";
    op_forward_backward_submit => "forward_backward_submit";
    op_forward_backward_result => "forward_backward_result";
    op_forward_result => "forward_result";
    op_optim_step_result => "optim_step_result";
    op_save_state_result => "save_state_result";
    op_save_weights_for_sampler_result => "save_weights_for_sampler_result";
    op_load_state_result => "load_state_result";
    op_save_weights_and_get_sampling_client => "save_weights_and_get_sampling_client";
    op_create_sampling_client => "create_sampling_client";
    op_sample_submit => "sample_submit";
    op_sample_result => "sample_result";
    op_compute_logprobs_result => "compute_logprobs_result";
    op_list_training_runs => "list_training_runs";
    op_get_training_run => "get_training_run";
    op_list_checkpoints => "list_checkpoints";
    op_list_user_checkpoints => "list_user_checkpoints";
    op_delete_checkpoint => "delete_checkpoint";
    op_get_weights_info => "get_weights_info";
    op_close_session => "close_session";
}

/// The server helpers themselves: the bombs are what they claim (so a client that decodes
/// them would really face `BOMB_BYTES`), the lying messages are as small as described.
#[test]
fn server_payloads_are_what_they_claim() {
    assert_eq!(server::lying_topk().len(), 10, "the 10-byte top-k lie");
    let z = server::zstd_bomb(server::BOMB_BYTES);
    assert!(z.len() < 16 * 1024, "zstd bomb is {} bytes", z.len());
    let g = server::gzip_bomb(1 << 20);
    // The trailer's ISIZE is the inflated size.
    let isize = u32::from_le_bytes(g[g.len() - 4..].try_into().unwrap());
    assert_eq!(isize as u64, 1 + ((1u64 << 20) - 1) / 258 * 258);
    assert!(g.len() < (1 << 20) / 100, "gzip ratio > 100: {}", g.len());
    for m in Mode::all() {
        assert_eq!(Mode::parse(&m.name()), Some(m));
    }
    assert_eq!(
        Target::parse("result:/api/v1/asample"),
        Target::Result("/api/v1/asample".into())
    );
}
