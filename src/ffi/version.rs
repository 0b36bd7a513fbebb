//! Library and ABI versions. The header's `TINKEX_VERSION_*` macros are generated from the
//! same `CARGO_PKG_VERSION` by `build.rs`; `TINKEX_ABI_VERSION_MAJOR`/`_MINOR` are the
//! constants below.
//!
//! The ABI rule (docs/c-api.md, "ABI versions"): adding a declaration bumps the minor;
//! changing or removing one bumps the major and resets the minor (the shared library's
//! soname follows the major). `abi/tinkex.abi.sha256` records the digest of the header's
//! declarations with the version; `tests/abi_digest.rs` fails when the declarations change
//! and the version does not.

use super::boundary;
use std::ffi::c_char;

/// The C ABI major version: bumped by a change or removal of a declaration (the shared
/// library's soname follows it). A binding accepts a library whose major equals the one it
/// was built against and whose minor is at least the one it was built against.
pub const TINKEX_ABI_VERSION_MAJOR: u32 = 3;

/// The C ABI minor version: bumped by an addition of a declaration (reset to 0 by a major
/// bump).
pub const TINKEX_ABI_VERSION_MINOR: u32 = 1;

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

/// `MAJOR * 1000000 + MINOR * 1000 + PATCH` of the crate version.
pub(crate) const VERSION_NUMBER: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR")) * 1_000_000
    + parse_u32(env!("CARGO_PKG_VERSION_MINOR")) * 1_000
    + parse_u32(env!("CARGO_PKG_VERSION_PATCH"));

const VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version, e.g. `"0.1.0"` (equal to `TINKEX_VERSION` of a matching header).
///
/// Static NUL-terminated string: never free it. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_version() -> *const c_char {
    boundary!(value std::ptr::null(), { VERSION_C.as_ptr() as *const c_char })
}

/// `MAJOR * 1000000 + MINOR * 1000 + PATCH` (equal to `TINKEX_VERSION_NUMBER` of a
/// matching header).
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_version_number() -> u32 {
    boundary!(value 0, { VERSION_NUMBER })
}

/// The ABI major version of the library (compare with `TINKEX_ABI_VERSION_MAJOR` at load
/// time: they must be equal).
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_abi_version_major() -> u32 {
    boundary!(value 0, { TINKEX_ABI_VERSION_MAJOR })
}

/// The ABI minor version of the library (must be at least the `TINKEX_ABI_VERSION_MINOR` the
/// caller was built against).
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_abi_version_minor() -> u32 {
    boundary!(value 0, { TINKEX_ABI_VERSION_MINOR })
}
