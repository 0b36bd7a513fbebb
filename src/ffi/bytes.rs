//! `tinkex_bytes` (Box-owned): an owned output buffer.

use super::boundary;
use super::BoxHandle;

/// An owned byte buffer returned by the library (results are UTF-8 JSON).
///
/// Box-owned: the caller releases it with `tinkex_bytes_free` (never with libc `free`).
/// The data is followed by a NUL byte that `tinkex_bytes_len` does not count, so JSON text
/// can be used as a C string. Immutable, so any thread may read it.
pub struct tinkex_bytes {
    /// The bytes plus a trailing NUL.
    data: Vec<u8>,
}

impl tinkex_bytes {
    /// A buffer holding `data` (a NUL is appended).
    pub fn new(mut data: Vec<u8>) -> Self {
        data.push(0);
        tinkex_bytes { data }
    }

    /// The bytes without the trailing NUL.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.data.len() - 1]
    }
}

/// The first byte (followed, after `tinkex_bytes_len` bytes, by a NUL).
///
/// Borrowed; valid until `tinkex_bytes_free(bytes)`. NULL when `bytes` is NULL. Blocks:
/// never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_bytes_data(bytes: *const tinkex_bytes) -> *const u8 {
    boundary!(value std::ptr::null(), {
        // SAFETY: a non-NULL `bytes` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(bytes, "bytes") } {
            Ok(b) => b.data.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The number of bytes, not counting the trailing NUL; 0 when `bytes` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_bytes_len(bytes: *const tinkex_bytes) -> usize {
    boundary!(value 0, {
        // SAFETY: as in `tinkex_bytes_data`.
        match unsafe { BoxHandle::from_ptr(bytes, "bytes") } {
            Ok(b) => b.data.len() - 1,
            Err(_) => 0,
        }
    })
}

/// Releases a buffer. NULL does nothing.
///
/// Consumes: `bytes`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_bytes_free(bytes: *mut tinkex_bytes) {
    // SAFETY: a non-NULL `bytes` came from this library; the host gives up this reference.
    unsafe { super::free_box_export(bytes) }
}
