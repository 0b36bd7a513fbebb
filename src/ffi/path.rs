//! `tinker://` paths, parsed by the core (`TinkerPath`): bindings do not re-implement the
//! rules.

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::status::tinkex_status;
use super::{boundary, input_str, out_ptr, write_out, BoxHandle};
use crate::core::types::TinkerPath;

/// Parses a `tinker://{training_run_id}/{kind}/{name}` checkpoint path with the official
/// SDK's rules. Result (UTF-8 JSON): `{"training_run_id": "...", "kind": "weights" |
/// "sampler_weights" | "external_weights", "name": "...", "checkpoint_id": "{kind}/{name}"}`.
///
/// Errors: `NULL_ARG`, `INVALID_UTF8`, `INVALID_ARG` (not a valid path; the message says
/// why). Blocks: never. Callback-safe. Caller owns `*out_json`; release with
/// `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_tinker_path_parse(
    path: *const u8,
    path_len: usize,
    out_json: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        out_ptr(out_json, "out_json")?;
        // SAFETY: `(path, path_len)` is a readable input (caller contract).
        let text = unsafe { input_str(path, path_len, "path") }?;
        let parsed = TinkerPath::parse(text).map_err(|e| Failure::invalid_arg(e.to_string()))?;
        let info = crate::core::requests::TinkerPathInfo::from(&parsed);
        let json = serde_json::to_vec(&info).map_err(|e| Failure::internal(e.to_string()))?;
        let bytes = tinkex_bytes::new(json);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_json, BoxHandle::into_ptr(bytes)) };
        Ok(tinkex_status::Ok)
    })
}
