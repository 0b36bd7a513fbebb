//! `ModelInput` and its chunks (PROTOCOL.md 10.1), and `Datum` (10.3).

use super::TensorData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Image encodings accepted in image chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
}

impl ImageFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

/// One piece of a model input, discriminated by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Chunk {
    /// Token ids.
    EncodedText {
        /// The token ids.
        tokens: Vec<i64>,
    },
    /// An inline image, base64 with padding.
    Image {
        /// Standard base64 of the image bytes.
        data: String,
        /// Encoding of the image.
        format: ImageFormat,
        /// Token count the caller expects the image to take.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<i64>,
    },
    /// An image referenced by location (sampling only; not encodable in protobuf).
    ImageAssetPointer {
        /// Encoding of the image.
        format: ImageFormat,
        /// Path or URL of the image.
        location: String,
        /// Token count the caller expects the image to take.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<i64>,
    },
    /// A serialized TensorContainer (base64).
    Dmel {
        /// Standard base64 of the TensorContainer bytes.
        dmel: String,
    },
}

impl Chunk {
    /// Token length of the chunk, when it can be known without decoding media.
    pub fn length(&self) -> Option<usize> {
        match self {
            Chunk::EncodedText { tokens } => Some(tokens.len()),
            Chunk::Image {
                expected_tokens, ..
            }
            | Chunk::ImageAssetPointer {
                expected_tokens, ..
            } => expected_tokens.map(|n| n.max(0) as usize),
            Chunk::Dmel { .. } => None,
        }
    }
}

/// The input of a model: a list of chunks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelInput {
    /// The chunks, in order.
    pub chunks: Vec<Chunk>,
}

impl ModelInput {
    /// A single text chunk of the given token ids.
    pub fn from_ints(tokens: Vec<i64>) -> Self {
        ModelInput {
            chunks: vec![Chunk::EncodedText { tokens }],
        }
    }

    /// All token ids of the text chunks, in order (media chunks are skipped).
    pub fn text_tokens(&self) -> Vec<i64> {
        self.chunks
            .iter()
            .flat_map(|c| match c {
                Chunk::EncodedText { tokens } => tokens.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Total token length, if every chunk's length is known.
    pub fn length(&self) -> Option<usize> {
        self.chunks.iter().map(Chunk::length).sum()
    }
}

/// One training example: a model input and named loss inputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Datum {
    /// The tokens fed to the model.
    pub model_input: ModelInput,
    /// Named loss inputs, e.g. `target_tokens`, `weights`, `advantages`.
    #[serde(default)]
    pub loss_fn_inputs: BTreeMap<String, TensorData>,
}
