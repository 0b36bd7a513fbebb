//! Typed JSON request and response bodies of the Tinker API (PROTOCOL.md sections 5-10).
//!
//! Serialization follows the official SDK's rules (1.7): `None` fields are omitted, fields
//! holding defaults are written, discriminators (`type`) are always present. Deserialization
//! is lenient: unknown fields are ignored and optional fields default, so both the client
//! (reading responses) and the emulator (reading requests) tolerate additions.

mod model_input;
mod path;
mod rest;
mod retrieve;
mod sampling;
mod session;
mod tensor;
mod training;

pub use model_input::*;
pub use path::*;
pub use rest::*;
pub use retrieve::*;
pub use sampling::*;
pub use session::*;
pub use tensor::*;
pub use training::*;

/// The SDK version this client speaks for (sent as `sdk_version` and in headers).
pub const SDK_VERSION: &str = "0.38.0";

/// Returns `true`; used as a serde default.
pub(crate) fn default_true() -> bool {
    true
}
