//! The `tinker_public` protobuf messages (PROTOCOL.md section 14.2), written by hand with
//! `prost` derives so that no `protoc` or build step is needed.
//!
//! Field numbers, types, `optional` presence, `oneof`s and maps follow the schema embedded
//! in the official SDK. Numeric arrays inside `bytes` fields are little-endian; the helpers
//! at the bottom of this module pack and unpack them. Maps are `BTreeMap`s so that a message
//! always encodes to the same bytes.

#![allow(missing_docs)] // field-level docs live in PROTOCOL.md section 14.2

use std::collections::BTreeMap;

/// Why a sampled sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StopReason {
    Stop = 0,
    Length = 1,
}

/// Element type of a [`Tensor`] or [`BatchedTensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DType {
    Unspecified = 0,
    Float32 = 1,
    Int64 = 2,
    Int32 = 3,
    Bfloat16 = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SampleResponse {
    #[prost(message, repeated, tag = "1")]
    pub sequences: Vec<SampledSequence>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub prompt_logprobs: Option<Vec<u8>>,
    #[prost(message, optional, tag = "3")]
    pub topk_prompt_logprobs: Option<TopkLogprobs>,
    #[prost(int32, tag = "4")]
    pub prompt_cache_hit_tokens: i32,
    #[prost(message, optional, tag = "5")]
    pub target_prompt_logprobs: Option<Tensor>,
    #[prost(message, optional, tag = "6")]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PromptAltTokens {
    #[prost(message, optional, tag = "1")]
    pub tokens: Option<Tensor>,
    #[prost(message, optional, tag = "2")]
    pub logprobs: Option<Tensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SampledSequence {
    #[prost(enumeration = "StopReason", tag = "1")]
    pub stop_reason: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub tokens: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub logprobs: Option<Vec<u8>>,
    #[prost(message, optional, tag = "4")]
    pub topk_sampled_logprobs: Option<TopkLogprobs>,
}

/// Dense row-major `length x k` matrices; an empty cell is `(0, -99999.0)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopkLogprobs {
    #[prost(bytes = "vec", tag = "1")]
    pub token_ids: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub logprobs: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub k: u32,
    #[prost(uint32, tag = "4")]
    pub length: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SparseCsr {
    #[prost(bytes = "vec", tag = "1")]
    pub values: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub crow_indices: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub col_indices: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Tensor {
    #[prost(oneof = "TensorEncoding", tags = "1, 2")]
    pub encoding: Option<TensorEncoding>,
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    #[prost(int64, repeated, tag = "4")]
    pub shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TensorEncoding {
    #[prost(bytes, tag = "1")]
    Dense(Vec<u8>),
    #[prost(message, tag = "2")]
    SparseCsr(SparseCsr),
}

/// One field of many datums, concatenated; `offsets` are `num_datums + 1` int64 byte offsets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchedTensor {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub offsets: Vec<u8>,
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    #[prost(int64, repeated, tag = "4")]
    pub trailing_shape: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayRecord {
    #[prost(string, tag = "1")]
    pub type_tag: String,
    #[prost(btree_map = "string, message", tag = "2")]
    pub fields: BTreeMap<String, BatchedTensor>,
    #[prost(int64, tag = "3")]
    pub num_datums: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardBackwardOutput {
    #[prost(string, tag = "1")]
    pub loss_fn_output_type: String,
    #[prost(message, repeated, tag = "2")]
    pub loss_fn_outputs: Vec<ArrayRecord>,
    #[prost(btree_map = "string, double", tag = "3")]
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardBackwardRequest {
    #[prost(string, tag = "1")]
    pub model_id: String,
    #[prost(int32, tag = "2")]
    pub seq_id: i32,
    #[prost(message, repeated, tag = "3")]
    pub data: Vec<Datum>,
    #[prost(string, tag = "4")]
    pub loss_fn: String,
    #[prost(btree_map = "string, double", tag = "5")]
    pub loss_fn_config: BTreeMap<String, f64>,
    #[prost(bool, tag = "6")]
    pub forward_only: bool,
    #[prost(btree_map = "string, message", tag = "7")]
    pub loss_fn_config_v2: BTreeMap<String, LossConfigValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LossConfigValue {
    #[prost(oneof = "LossConfigValueKind", tags = "1, 2")]
    pub value: Option<LossConfigValueKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum LossConfigValueKind {
    #[prost(double, tag = "1")]
    Number(f64),
    #[prost(string, tag = "2")]
    Text(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Datum {
    #[prost(message, repeated, tag = "1")]
    pub model_input: Vec<Chunk>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub loss_fn_inputs: BTreeMap<String, Tensor>,
    #[prost(message, repeated, tag = "3")]
    pub model_input_spans: Vec<ProvenanceSpan>,
    #[prost(message, repeated, tag = "4")]
    pub loss_fn_input_spans: Vec<ProvenanceSpan>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProvenanceSpan {
    #[prost(oneof = "ProvenanceSpanKind", tags = "1, 2")]
    pub span: Option<ProvenanceSpanKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ProvenanceSpanKind {
    #[prost(message, tag = "1")]
    PromptTokens(PromptProvenanceSpan),
    #[prost(message, tag = "2")]
    SampledTokens(SampledProvenanceSpan),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PromptProvenanceSpan {
    #[prost(string, tag = "1")]
    pub sequence_id: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    #[prost(int64, tag = "3")]
    pub length: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SampledProvenanceSpan {
    #[prost(string, tag = "1")]
    pub sequence_id: String,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    #[prost(int64, tag = "3")]
    pub length: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    #[prost(oneof = "ChunkKind", tags = "1, 2, 3")]
    pub chunk: Option<ChunkKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ChunkKind {
    #[prost(message, tag = "1")]
    EncodedText(EncodedTextChunk),
    #[prost(message, tag = "2")]
    Image(ImageChunk),
    #[prost(message, tag = "3")]
    Dmel(DmelChunk),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedTextChunk {
    /// int32 little-endian token ids.
    #[prost(bytes = "vec", tag = "1")]
    pub tokens: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageChunk {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(int32, optional, tag = "3")]
    pub expected_tokens: Option<i32>,
    #[prost(message, optional, tag = "4")]
    pub override_dimensions: Option<ImageDimensions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageDimensions {
    #[prost(uint32, tag = "1")]
    pub width: u32,
    #[prost(uint32, tag = "2")]
    pub height: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DmelChunk {
    #[prost(bytes = "vec", tag = "1")]
    pub dmel: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingParams {
    #[prost(int32, optional, tag = "1")]
    pub max_tokens: Option<i32>,
    #[prost(uint64, optional, tag = "2")]
    pub seed: Option<u64>,
    #[prost(float, optional, tag = "3")]
    pub temperature: Option<f32>,
    #[prost(int32, optional, tag = "4")]
    pub top_k: Option<i32>,
    #[prost(float, optional, tag = "5")]
    pub top_p: Option<f32>,
    #[prost(oneof = "SamplingStop", tags = "6, 7")]
    pub stop: Option<SamplingStop>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SamplingStop {
    #[prost(message, tag = "6")]
    StopStrs(StopStrings),
    #[prost(message, tag = "7")]
    StopTokens(StopTokens),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopStrings {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopTokens {
    #[prost(int32, repeated, tag = "1")]
    pub values: Vec<i32>,
}

/// Packs values as little-endian bytes (the layout of every numeric `bytes` field).
pub fn pack_le<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.put(&mut out);
    }
    out
}

/// Unpacks little-endian bytes; fails when the length is not a multiple of the element size.
pub fn unpack_le<T: LeBytes>(bytes: &[u8]) -> Result<Vec<T>, String> {
    if bytes.len() % T::SIZE != 0 {
        return Err(format!(
            "byte length {} is not a multiple of the element size {}",
            bytes.len(),
            T::SIZE
        ));
    }
    Ok(bytes.chunks_exact(T::SIZE).map(T::get).collect())
}

/// A fixed-width number stored little-endian in protobuf `bytes` fields.
pub trait LeBytes: Copy {
    /// Width in bytes.
    const SIZE: usize;
    /// Appends the little-endian encoding.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads from exactly `SIZE` bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunk has the element size"))
            }
        }
    )*};
}
le_bytes!(i32, i64, f32, f64, u16);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prost::Message;

    /// Decodes a hex string (test vectors).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// PROTOCOL.md 14.5, first vector: composed with the SDK's own protobuf classes.
    #[test]
    fn sample_response_test_vector_round_trips() {
        let bytes =
            hex("0a160801120805000000060000001a08000000bf0000a0bf120c0000c07f000000c0000040c0");
        let msg = SampleResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(msg.sequences.len(), 1);
        let seq = &msg.sequences[0];
        assert_eq!(seq.stop_reason, StopReason::Length as i32);
        assert_eq!(unpack_le::<i32>(&seq.tokens).unwrap(), vec![5, 6]);
        assert_eq!(
            unpack_le::<f32>(seq.logprobs.as_ref().unwrap()).unwrap(),
            vec![-0.5, -1.25]
        );
        let prompt = unpack_le::<f32>(msg.prompt_logprobs.as_ref().unwrap()).unwrap();
        assert!(prompt[0].is_nan());
        assert_eq!(&prompt[1..], &[-2.0, -3.0]);
        assert_eq!(msg.encode_to_vec(), bytes, "re-encodes byte for byte");
    }

    /// PROTOCOL.md 14.5, second vector.
    #[test]
    fn forward_backward_output_test_vector_decodes() {
        let bytes = hex("0a1e74696e6b65722e41727261795265636f72643a41727261795265636f726412350a0178122e0a086c6f6770726f627312220a0c000080bf000000c0000040c0121000000000000000000c00000000000000180118011a130a086c6f73733a73756d110000000000001840");
        let msg = ForwardBackwardOutput::decode(bytes.as_slice()).unwrap();
        assert_eq!(msg.loss_fn_output_type, "tinker.ArrayRecord:ArrayRecord");
        assert_eq!(msg.metrics["loss:sum"], 6.0);
        let record = &msg.loss_fn_outputs[0];
        assert_eq!(record.type_tag, "x");
        assert_eq!(record.num_datums, 1);
        let field = &record.fields["logprobs"];
        assert_eq!(field.dtype, DType::Float32 as i32);
        assert_eq!(unpack_le::<i64>(&field.offsets).unwrap(), vec![0, 12]);
        assert_eq!(
            unpack_le::<f32>(&field.data).unwrap(),
            vec![-1.0, -2.0, -3.0]
        );
        assert_eq!(msg.encode_to_vec(), bytes);
    }

    #[test]
    fn unpack_rejects_ragged_bytes() {
        assert!(unpack_le::<i32>(&[1, 2, 3]).is_err());
    }
}
