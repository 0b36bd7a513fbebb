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
            Chunk::Dmel { dmel } => dmel_token_length(dmel).ok(),
        }
    }

    /// Token length of the chunk, with the reason when a `dmel` header cannot be read
    /// (PROTOCOL.md 20.1); `Ok(None)` for an image without `expected_tokens`.
    pub fn checked_length(&self) -> Result<Option<usize>, String> {
        match self {
            Chunk::Dmel { dmel } => dmel_token_length(dmel).map(Some),
            other => Ok(other.length()),
        }
    }
}

/// Number of bytes a standard base64 string decodes to (padding excluded), without
/// decoding it: the `len(bytes)` the official SDK uses in its size estimate (11.4).
pub fn base64_decoded_len(b64: &str) -> usize {
    let b = b64.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let n = b.len() - pad;
    n / 4 * 3 + (n % 4 * 3) / 4
}

/// Marker byte of a constant tensor in a serialized TensorContainer (20.1).
const CONSTANT_TENSOR_MARKER: u8 = 254;

/// Reads one unsigned LEB128 varint at `*pos` (at most 63 bits).
fn read_varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *data
            .get(*pos)
            .ok_or_else(|| "Truncated TensorContainer header".to_string())?;
        *pos += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            return Err("TensorContainer varint is too long".into());
        }
    }
}

/// Dimension `dim` of a serialized TensorContainer's shape, read from its header without
/// decoding the payload (PROTOCOL.md 20.1): optional constant marker 254, a dtype byte in
/// 0..=7, the varint `ndim`, then `ndim` varints. Errors: empty input, truncated header,
/// unknown dtype byte, varint longer than 63 bits, missing dimension. Reads at most the
/// varints up to `dim` (a huge declared `ndim` costs nothing).
pub fn tensor_container_dim(data: &[u8], dim: usize) -> Result<u64, String> {
    if data.is_empty() {
        return Err("TensorContainer bytes are empty".into());
    }
    let mut pos = 0;
    if data[0] == CONSTANT_TENSOR_MARKER {
        pos = 1;
        if pos >= data.len() {
            return Err("Truncated TensorContainer header".into());
        }
    }
    let dtype = data[pos];
    if dtype > 7 {
        return Err(format!("Unknown TensorContainer dtype byte: {dtype}"));
    }
    pos += 1;
    let ndim = read_varint(data, &mut pos)?;
    if (dim as u64) >= ndim {
        return Err(format!("TensorContainer tensor has no dimension {dim}"));
    }
    let mut value = 0;
    for _ in 0..=dim {
        value = read_varint(data, &mut pos)?;
    }
    Ok(value)
}

/// Token length of a `dmel` chunk: dimension 0 of its TensorContainer (20.1). Only the
/// first 32 base64 characters (24 bytes, enough for the marker, dtype, `ndim` and dimension
/// 0) are decoded.
pub fn dmel_token_length(dmel_b64: &str) -> Result<usize, String> {
    use base64::Engine;
    // Longest header needed: marker + dtype + two 10-byte varints = 22 bytes.
    let prefix = if dmel_b64.len() > 32 {
        &dmel_b64[..32]
    } else {
        dmel_b64
    };
    if !prefix.is_ascii() {
        return Err("dmel is not valid base64".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(prefix)
        .map_err(|e| format!("dmel is not valid base64: {e}"))?;
    let n = tensor_container_dim(&bytes, 0)?;
    usize::try_from(n).map_err(|_| format!("dmel token length {n} is too large"))
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
