//! Typed JSON request and response bodies of the Tinker API (PROTOCOL.md sections 5-10).
//!
//! Serialization follows the official SDK's rules (1.7): `None` fields are omitted, fields
//! holding defaults are written, discriminators (`type`) are always present.
//!
//! Deserialization: response models are lenient (1.8: unknown fields are ignored, optional
//! fields default; tensors inside responses are read with [`LenientTensorData`]). The closed
//! models that are also the client's inputs reject unknown fields, naming them (1.7):
//! [`ModelInput`] and its [`Chunk`]s, [`Datum`], [`TensorData`], [`ForwardBackwardInput`],
//! [`AdamParams`], [`SamplingParams`], [`LoraConfig`], [`FinishReason`] — so the emulator,
//! which reads requests with these types, rejects a misspelled field inside them too, while
//! tolerating additions at the top level of a request body. Open maps stay open:
//! `loss_fn_config`, `loss_fn_inputs`, `user_metadata`, [`OptimizerConfig`]'s extra fields.

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
