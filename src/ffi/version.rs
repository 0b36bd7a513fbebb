//! Library and ABI versions. The header's `TINKEX_VERSION_*` macros are generated from the
//! same `CARGO_PKG_VERSION` by `build.rs`; `TINKEX_ABI_VERSION` is the constant below.

use super::boundary;
use std::ffi::c_char;

/// The C ABI revision. Before 1.0 every change of the C surface bumps it; bindings compare
/// `tinkex_abi_version()` with the value they were built against and refuse to load on a
/// mismatch.
pub const TINKEX_ABI_VERSION: u32 = 1;

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

/// The ABI revision of the library (compare with `TINKEX_ABI_VERSION` at load time).
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_abi_version() -> u32 {
    boundary!(value 0, { TINKEX_ABI_VERSION })
}
