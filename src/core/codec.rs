//! Protobuf conversion of training data and results (PROTOCOL.md 14.3-14.4).

use crate::core::error::{Error, Result};
use crate::core::proto::{self, pack_le, unpack_le};
use crate::core::types::{
    Chunk, Datum, ForwardBackwardOutput, LossConfigValue, SampleResponse, SampledSequence,
    StopReason, TensorData, TensorDtype, TensorValues,
};
use base64::Engine;
use std::collections::BTreeMap;

fn chunk_to_proto(chunk: &Chunk, datum: usize) -> Result<proto::Chunk> {
    let kind = match chunk {
        Chunk::EncodedText { tokens } => {
            let t32: Vec<i32> = tokens
                .iter()
                .map(|&t| {
                    i32::try_from(t).map_err(|_| Error::user(format!("datum {datum}: token id {t} does not fit in int32")))
                })
                .collect::<Result<_>>()?;
            proto::ChunkKind::EncodedText(proto::EncodedTextChunk { tokens: pack_le(&t32) })
        }
        Chunk::Image { data, format, expected_tokens } => proto::ChunkKind::Image(proto::ImageChunk {
            data: base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Error::user(format!("datum {datum}: image data is not valid base64: {e}")))?,
            format: format.as_str().to_string(),
            expected_tokens: expected_tokens.map(|n| n as i32),
            override_dimensions: None,
        }),
        Chunk::Dmel { dmel } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(dmel)
                .map_err(|e| Error::user(format!("datum {datum}: dmel is not valid base64: {e}")))?;
            // The token length must be readable from the header (PROTOCOL.md 20.1).
            crate::core::types::tensor_container_dim(&bytes, 0)
                .map_err(|e| Error::user(format!("datum {datum}: dmel chunk: {e}")))?;
            proto::ChunkKind::Dmel(proto::DmelChunk { dmel: bytes })
        }
        Chunk::ImageAssetPointer { .. } => {
            return Err(Error::user(format!(
                "datum {datum}: Unsupported model input chunk type image_asset_pointer in forward_backward"
            )))
        }
    };
    Ok(proto::Chunk { chunk: Some(kind) })
}

/// Converts a tensor to its protobuf form (dense or CSR).
pub fn tensor_to_proto(t: &TensorData) -> proto::Tensor {
    let (values, dtype) = match &t.data {
        TensorValues::Int64(v) => (pack_le(v), proto::DType::Int64),
        TensorValues::Float32(v) => (pack_le(v), proto::DType::Float32),
    };
    let encoding = match (&t.sparse_crow_indices, &t.sparse_col_indices) {
        (Some(crow), Some(col)) => proto::TensorEncoding::SparseCsr(proto::SparseCsr {
            values,
            crow_indices: pack_le(crow),
            col_indices: pack_le(col),
        }),
        _ => proto::TensorEncoding::Dense(values),
    };
    proto::Tensor {
        encoding: Some(encoding),
        dtype: dtype as i32,
        shape: t.shape_or_1d(),
    }
}

/// Converts a datum to its protobuf form.
pub fn datum_to_proto(d: &Datum, index: usize) -> Result<proto::Datum> {
    Ok(proto::Datum {
        model_input: d
            .model_input
            .chunks
            .iter()
            .map(|c| chunk_to_proto(c, index))
            .collect::<Result<_>>()?,
        loss_fn_inputs: d
            .loss_fn_inputs
            .iter()
            .map(|(k, v)| (k.clone(), tensor_to_proto(v)))
            .collect(),
        model_input_spans: Vec::new(),
        loss_fn_input_spans: Vec::new(),
    })
}

/// Builds a `ForwardBackwardRequest` (numbers of `loss_fn_config` are written to both maps).
pub fn forward_backward_request(
    model_id: &str,
    seq_id: i64,
    data: &[Datum],
    first_index: usize,
    loss_fn: &str,
    config: &BTreeMap<String, LossConfigValue>,
    forward_only: bool,
) -> Result<proto::ForwardBackwardRequest> {
    let mut legacy = BTreeMap::new();
    let mut v2 = BTreeMap::new();
    for (k, v) in config {
        let value = match v {
            LossConfigValue::Number(x) => {
                legacy.insert(k.clone(), *x);
                proto::LossConfigValueKind::Number(*x)
            }
            LossConfigValue::Text(s) => proto::LossConfigValueKind::Text(s.clone()),
        };
        v2.insert(k.clone(), proto::LossConfigValue { value: Some(value) });
    }
    Ok(proto::ForwardBackwardRequest {
        model_id: model_id.to_string(),
        seq_id: i32::try_from(seq_id).map_err(|_| Error::user("seq_id exceeds int32"))?,
        data: data
            .iter()
            .enumerate()
            .map(|(i, d)| datum_to_proto(d, first_index + i))
            .collect::<Result<_>>()?,
        loss_fn: loss_fn.to_string(),
        loss_fn_config: legacy,
        forward_only,
        loss_fn_config_v2: v2,
    })
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::fatal(format!("malformed protobuf result from the server: {msg}"))
}

// Hostile input (issue 11 item 1): every count, length and shape below comes from the
// server. Each is checked against the bytes actually present, with checked arithmetic,
// before anything is allocated from it; a violation is a typed `bad(..)` error, never an
// allocation the message cannot pay for.

/// Most memory a decoded result may take per byte of its protobuf message (plus
/// [`DECODE_SLACK`]). Dense numbers take 1-2x their wire size; per-datum bookkeeping (a
/// `TensorData`, its shape, the field name) is what can amplify, and is charged here.
const DECODE_FACTOR: usize = 16;
/// Fixed allowance on top of [`DECODE_FACTOR`] x message size, so that small messages with
/// many empty datums (legal) still decode.
const DECODE_SLACK: usize = 1 << 20;
/// Bookkeeping charged per decoded tensor and per datum (approximate heap + struct size).
const TENSOR_OVERHEAD: usize = 128;
const DATUM_OVERHEAD: usize = 32;

/// A running allowance for the memory a decode may allocate, sized from the message.
struct Budget {
    left: usize,
}

impl Budget {
    fn for_message(bytes: &[u8]) -> Self {
        Budget {
            left: bytes
                .len()
                .saturating_mul(DECODE_FACTOR)
                .saturating_add(DECODE_SLACK),
        }
    }

    /// Charges `n` units (`None` = an overflowed computation) or fails.
    fn charge(&mut self, n: Option<usize>, what: &str) -> Result<()> {
        match n.and_then(|n| self.left.checked_sub(n)) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(bad(format!(
                "{what} would decode to more memory than the message can describe"
            ))),
        }
    }
}

/// Element width in bytes of a wire dtype (`UNSPECIFIED` and unknown values are errors).
fn dtype_width(dtype: i32) -> Result<(proto::DType, usize)> {
    let d = proto::DType::try_from(dtype).map_err(|_| bad(format!("unknown dtype {dtype}")))?;
    let width = match d {
        proto::DType::Float32 | proto::DType::Int32 => 4,
        proto::DType::Int64 => 8,
        proto::DType::Bfloat16 => 2,
        proto::DType::Unspecified => return Err(bad("Unsupported proto dtype UNSPECIFIED")),
    };
    Ok((d, width))
}

/// The product of a trailing shape: every dimension non-negative, no overflow.
fn trailing_product(trailing: &[i64]) -> Result<i64> {
    trailing.iter().try_fold(1i64, |acc, &d| {
        if d < 0 {
            return Err(bad(format!("negative dimension {d} in trailing_shape")));
        }
        acc.checked_mul(d)
            .ok_or_else(|| bad("trailing_shape product overflows int64"))
    })
}

/// Decodes one slice of wire values (length already a multiple of the element width).
fn slice_values(dtype: proto::DType, bytes: &[u8]) -> Result<TensorValues> {
    Ok(match dtype {
        proto::DType::Float32 => TensorValues::Float32(unpack_le::<f32>(bytes).map_err(bad)?),
        proto::DType::Bfloat16 => TensorValues::Float32(
            unpack_le::<u16>(bytes)
                .map_err(bad)?
                .into_iter()
                .map(|b| f32::from_bits(u32::from(b) << 16))
                .collect(),
        ),
        proto::DType::Int64 => TensorValues::Int64(unpack_le::<i64>(bytes).map_err(bad)?),
        proto::DType::Int32 => TensorValues::Int64(
            unpack_le::<i32>(bytes)
                .map_err(bad)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        proto::DType::Unspecified => return Err(bad("Unsupported proto dtype UNSPECIFIED")),
    })
}

/// Decodes a field of a `BatchedTensor` into per-datum tensors, charging `budget` for
/// everything it allocates (`name_len`: the field name, cloned into every datum).
fn batched_to_tensors(
    t: &proto::BatchedTensor,
    name_len: usize,
    budget: &mut Budget,
) -> Result<Vec<TensorData>> {
    let (dtype, width) = dtype_width(t.dtype)?;
    // Validate every offset and the shape before decoding anything.
    let offsets = unpack_le::<i64>(&t.offsets).map_err(bad)?;
    let mut slices = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let a = usize::try_from(w[0]).ok();
        let b = usize::try_from(w[1]).ok();
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) if a <= b && b <= t.data.len() && (b - a) % width == 0 => (a, b),
            _ => {
                return Err(bad(format!(
                "batched tensor offsets [{}, {}] out of range for {} data bytes of width {width}",
                w[0],
                w[1],
                t.data.len()
            )))
            }
        };
        slices.push((a, b));
    }
    let trailing = trailing_product(&t.trailing_shape)?;
    // Output per slice: widened values (at most 2x the wire bytes, i32/bf16 -> 8/4 bytes),
    // the shape, the field name and the bookkeeping.
    let shape_bytes = t
        .trailing_shape
        .len()
        .checked_add(1)
        .and_then(|n| n.checked_mul(8));
    for &(a, b) in &slices {
        let cost = (b - a)
            .checked_mul(2)
            .and_then(|v| v.checked_add(shape_bytes?))
            .and_then(|v| v.checked_add(name_len))
            .and_then(|v| v.checked_add(TENSOR_OVERHEAD));
        budget.charge(cost, "a batched tensor")?;
    }
    let mut out = Vec::with_capacity(slices.len());
    for (a, b) in slices {
        let values = slice_values(dtype, &t.data[a..b])?;
        let n = i64::try_from(values.len()).map_err(|_| bad("slice too long"))?;
        let lead = if trailing == 0 {
            0
        } else if n % trailing != 0 {
            return Err(bad(format!(
                "{n} elements do not fill whole rows of trailing_shape {:?}",
                t.trailing_shape
            )));
        } else {
            n / trailing
        };
        let mut shape = Vec::with_capacity(t.trailing_shape.len() + 1);
        shape.push(lead);
        shape.extend_from_slice(&t.trailing_shape);
        let dtype = values.dtype();
        out.push(TensorData {
            data: values,
            dtype,
            shape: Some(shape),
            sparse_crow_indices: None,
            sparse_col_indices: None,
        });
    }
    Ok(out)
}

/// Decodes a protobuf `ForwardBackwardOutput`.
pub fn decode_forward_backward(bytes: &[u8]) -> Result<ForwardBackwardOutput> {
    use prost::Message;
    let mut budget = Budget::for_message(bytes);
    let msg = proto::ForwardBackwardOutput::decode(bytes).map_err(bad)?;
    let output_type = msg
        .loss_fn_output_type
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    let mut outputs: Vec<BTreeMap<String, TensorData>> = Vec::new();
    for (r, record) in msg.loss_fn_outputs.iter().enumerate() {
        let base = outputs.len();
        // 0 means "count from the offsets" (14.4); a negative count is malformed.
        let mut count = usize::try_from(record.num_datums).map_err(|_| {
            bad(format!(
                "record {r}: negative num_datums {}",
                record.num_datums
            ))
        })?;
        for (name, field) in &record.fields {
            let tensors = batched_to_tensors(field, name.len(), &mut budget)?;
            if count == 0 {
                count = tensors.len();
            }
            let end = base
                .checked_add(tensors.len())
                .ok_or_else(|| bad("too many datums"))?;
            if end > outputs.len() {
                budget.charge(
                    (end - outputs.len()).checked_mul(DATUM_OVERHEAD),
                    "num_datums",
                )?;
                outputs.resize_with(end, BTreeMap::new);
            }
            for (i, t) in tensors.into_iter().enumerate() {
                outputs[base + i].insert(name.clone(), t);
            }
        }
        // A record's datums without fields cost no wire bytes: charge them before growing.
        let end = base
            .checked_add(count)
            .ok_or_else(|| bad("too many datums"))?;
        if end > outputs.len() {
            budget.charge(
                (end - outputs.len()).checked_mul(DATUM_OVERHEAD),
                "num_datums",
            )?;
            outputs.resize_with(end, BTreeMap::new);
        }
    }
    Ok(ForwardBackwardOutput {
        loss_fn_output_type: if output_type.is_empty() {
            "ArrayRecord".into()
        } else {
            output_type
        },
        loss_fn_outputs: outputs,
        metrics: msg.metrics.into_iter().collect(),
    })
}

/// Top-k rows, one per position; `None` when absent (`k` or `length` 0, 14.4).
type TopkRows = Vec<Option<Vec<(i64, f32)>>>;

fn topk_rows(t: &proto::TopkLogprobs) -> Result<Option<TopkRows>> {
    let (k, n) = (t.k as usize, t.length as usize);
    if k == 0 || n == 0 {
        return Ok(None);
    }
    // Both matrices must hold exactly length x k cells: checked before anything is built.
    let bytes = k
        .checked_mul(n)
        .and_then(|cells| cells.checked_mul(4))
        .ok_or_else(|| bad(format!("top-k matrix {n} x {k} overflows")))?;
    if t.token_ids.len() != bytes || t.logprobs.len() != bytes {
        return Err(bad(format!(
            "top-k matrix size does not match length x k ({n} x {k} needs {bytes} bytes per matrix, got {} and {})",
            t.token_ids.len(),
            t.logprobs.len()
        )));
    }
    let ids = unpack_le::<i32>(&t.token_ids).map_err(bad)?;
    let lps = unpack_le::<f32>(&t.logprobs).map_err(bad)?;
    Ok(Some(
        ids.chunks_exact(k)
            .zip(lps.chunks_exact(k))
            .map(|(ids, lps)| {
                let cells: Vec<(i64, f32)> = ids
                    .iter()
                    .zip(lps)
                    .map(|(&id, &lp)| (i64::from(id), lp))
                    .filter(|&(id, lp)| !(id == 0 && lp == -99_999.0))
                    .collect();
                (!cells.is_empty()).then_some(cells)
            })
            .collect(),
    ))
}

/// Decodes a protobuf `SampleResponse`, stamping the submit answer's sequence ids.
///
/// `target_prompt_logprobs` and `prompt_alt_tokens` keep their layout (sparse stays sparse),
/// bounded by the message's decode budget.
pub fn decode_sample(bytes: &[u8], sequence_ids: &[String]) -> Result<SampleResponse> {
    use prost::Message;
    let mut budget = Budget::for_message(bytes);
    let msg = proto::SampleResponse::decode(bytes).map_err(bad)?;
    let sequences = msg
        .sequences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stop_reason = match s.stop_reason {
                0 => StopReason::Stop,
                1 => StopReason::Length,
                other => return Err(bad(format!("unknown stop reason {other}"))),
            };
            let logprobs = match &s.logprobs {
                Some(b) if !b.is_empty() => Some(unpack_le::<f32>(b).map_err(bad)?),
                _ => None,
            };
            Ok(SampledSequence {
                stop_reason,
                tokens: unpack_le::<i32>(&s.tokens)
                    .map_err(bad)?
                    .into_iter()
                    .map(i64::from)
                    .collect(),
                logprobs,
                topk_logprobs: match &s.topk_sampled_logprobs {
                    Some(t) => topk_rows(t)?,
                    None => None,
                },
                sequence_id: sequence_ids.get(i).cloned(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let prompt_logprobs = match &msg.prompt_logprobs {
        Some(b) if !b.is_empty() => Some(
            unpack_le::<f32>(b)
                .map_err(bad)?
                .into_iter()
                .map(|x| (!x.is_nan()).then_some(x))
                .collect(),
        ),
        _ => None,
    };
    Ok(SampleResponse {
        sequences,
        prompt_logprobs,
        topk_prompt_logprobs: match &msg.topk_prompt_logprobs {
            Some(t) => topk_rows(t)?,
            None => None,
        },
        prompt_cache_hit_tokens: i64::from(msg.prompt_cache_hit_tokens),
        target_prompt_logprobs: match &msg.target_prompt_logprobs {
            Some(t) => Some(tensor_from_proto(t, &mut budget)?),
            None => None,
        },
        prompt_alt_tokens: match &msg.prompt_alt_tokens {
            Some(alt) => {
                let missing = || bad("prompt_alt_tokens lacks tokens or logprobs");
                Some(crate::core::types::PromptAltTokens {
                    tokens: tensor_from_proto(
                        alt.tokens.as_ref().ok_or_else(missing)?,
                        &mut budget,
                    )?,
                    logprobs: tensor_from_proto(
                        alt.logprobs.as_ref().ok_or_else(missing)?,
                        &mut budget,
                    )?,
                })
            }
            None => None,
        },
        kind: "sample".into(),
    })
}

/// Decodes a public `Tensor` (dense or sparse CSR) into a [`TensorData`], keeping a sparse
/// layout sparse (int32 widens to int64, bfloat16 to float32, as the SDK does). Every
/// length is checked against the bytes present and charged to `budget`.
fn tensor_from_proto(t: &proto::Tensor, budget: &mut Budget) -> Result<TensorData> {
    let (dtype, width) = dtype_width(t.dtype)?;
    if t.shape.iter().any(|&d| d < 0) {
        return Err(bad(format!(
            "negative dimension in tensor shape {:?}",
            t.shape
        )));
    }
    let shape_cost = t.shape.len().checked_mul(8);
    let (values, crow, col) = match &t.encoding {
        Some(proto::TensorEncoding::Dense(b)) => (b.as_slice(), None, None),
        Some(proto::TensorEncoding::SparseCsr(c)) => (
            c.values.as_slice(),
            Some(&c.crow_indices),
            Some(&c.col_indices),
        ),
        None => (&[][..], None, None),
    };
    if values.len() % width != 0 {
        return Err(bad(format!(
            "{} tensor bytes are not a whole number of {width}-byte values",
            values.len()
        )));
    }
    let index_bytes = crow.map_or(0, Vec::len) + col.map_or(0, Vec::len);
    let cost = values
        .len()
        .checked_mul(2)
        .and_then(|v| v.checked_add(index_bytes))
        .and_then(|v| v.checked_add(shape_cost?))
        .and_then(|v| v.checked_add(TENSOR_OVERHEAD));
    budget.charge(cost, "a tensor")?;
    let data = slice_values(dtype, values)?;
    let n = data.len();
    let (sparse_crow_indices, sparse_col_indices) = match (crow, col) {
        (Some(crow), Some(col)) => {
            let crow = unpack_le::<i64>(crow).map_err(bad)?;
            let col = unpack_le::<i64>(col).map_err(bad)?;
            if t.shape.len() != 2
                || col.len() != n
                || t.shape[0].checked_add(1) != Some(crow.len() as i64)
            {
                return Err(bad(
                    "sparse tensor indices do not match its shape and values",
                ));
            }
            (Some(crow), Some(col))
        }
        _ => {
            let expected = t.shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d));
            if !t.shape.is_empty() && expected != Some(n as i64) {
                return Err(bad(format!(
                    "tensor shape {:?} does not hold its {n} values",
                    t.shape
                )));
            }
            (None, None)
        }
    };
    let dtype = data.dtype();
    Ok(TensorData {
        data,
        dtype,
        shape: (!t.shape.is_empty()).then(|| t.shape.clone()),
        sparse_crow_indices,
        sparse_col_indices,
    })
}

/// Estimated serialized size of a datum for chunking (PROTOCOL.md 11.4 step 1).
pub fn estimate_datum_bytes(d: &Datum) -> usize {
    let input: usize = d
        .model_input
        .chunks
        .iter()
        .map(|c| match c {
            Chunk::EncodedText { tokens } => 4 * tokens.len(),
            Chunk::Image { data, .. } => crate::core::types::base64_decoded_len(data),
            Chunk::ImageAssetPointer { location, .. } => location.len(),
            Chunk::Dmel { dmel } => crate::core::types::base64_decoded_len(dmel),
        })
        .sum();
    let tensors: usize = d
        .loss_fn_inputs
        .values()
        .map(|t| {
            let item = if t.dtype == TensorDtype::Int64 { 8 } else { 4 };
            let idx = t.sparse_crow_indices.as_ref().map_or(0, Vec::len)
                + t.sparse_col_indices.as_ref().map_or(0, Vec::len);
            t.data.len() * item + 8 * idx
        })
        .sum();
    input + tensors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proto::tests::hex;

    #[test]
    fn decodes_the_spec_test_vectors() {
        let fb = decode_forward_backward(&hex("0a1e74696e6b65722e41727261795265636f72643a41727261795265636f726412350a0178122e0a086c6f6770726f627312220a0c000080bf000000c0000040c0121000000000000000000c00000000000000180118011a130a086c6f73733a73756d110000000000001840")).unwrap();
        assert_eq!(fb.loss_fn_output_type, "ArrayRecord");
        assert_eq!(fb.metrics["loss:sum"], 6.0);
        let lp = &fb.loss_fn_outputs[0]["logprobs"];
        assert_eq!(lp.data, TensorValues::Float32(vec![-1.0, -2.0, -3.0]));
        assert_eq!(lp.shape, Some(vec![3]));

        let s = decode_sample(
            &hex("0a160801120805000000060000001a08000000bf0000a0bf120c0000c07f000000c0000040c0"),
            &["sq-1".to_string()],
        )
        .unwrap();
        assert_eq!(s.sequences[0].stop_reason, StopReason::Length);
        assert_eq!(s.sequences[0].tokens, vec![5, 6]);
        assert_eq!(s.sequences[0].sequence_id.as_deref(), Some("sq-1"));
        assert_eq!(s.prompt_logprobs, Some(vec![None, Some(-2.0), Some(-3.0)]));
    }

    // --- hostile results (issue 11 item 1) -------------------------------------------
    // Each of these aborted or exhausted memory before the checks: run the old decoder under
    // `ulimit -v` to see it (docs/fuzzing.md).

    use prost::Message;

    fn is_decode_error(r: Result<impl std::fmt::Debug>) -> String {
        let e = r.expect_err("a hostile message must be a decode error");
        assert_eq!(e.kind, crate::core::ErrorKind::Fatal, "{e:?}");
        assert!(
            e.to_string()
                .contains("malformed protobuf result from the server"),
            "{e}"
        );
        e.to_string()
    }

    fn one_record(fields: Vec<(&str, proto::BatchedTensor)>, num_datums: i64) -> Vec<u8> {
        proto::ForwardBackwardOutput {
            loss_fn_output_type: "ArrayRecord".into(),
            loss_fn_outputs: vec![proto::ArrayRecord {
                type_tag: "x".into(),
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                num_datums,
            }],
            metrics: Default::default(),
        }
        .encode_to_vec()
    }

    fn f32_field(offsets: &[i64], data: &[f32], trailing: &[i64]) -> proto::BatchedTensor {
        proto::BatchedTensor {
            data: pack_le(data),
            offsets: pack_le(offsets),
            dtype: proto::DType::Float32 as i32,
            trailing_shape: trailing.to_vec(),
        }
    }

    fn sample_with_topk(topk: proto::TopkLogprobs) -> Vec<u8> {
        proto::SampleResponse {
            sequences: vec![proto::SampledSequence {
                stop_reason: 0,
                tokens: pack_le(&[7i32]),
                logprobs: None,
                topk_sampled_logprobs: Some(topk.clone()),
            }],
            topk_prompt_logprobs: Some(topk),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn topk_with_huge_length_and_zero_k_is_absent_not_an_allocation() {
        // The 8-byte-class reply: k = 0, length = 2^32-1 passed `0 == 0 x n` and
        // allocated 2^32 rows (~100 GB). k = 0 means "absent" (14.4).
        let bytes = sample_with_topk(proto::TopkLogprobs {
            token_ids: vec![],
            logprobs: vec![],
            k: 0,
            length: u32::MAX,
        });
        assert!(bytes.len() < 32);
        let s = decode_sample(&bytes, &["a".into()]).unwrap();
        assert_eq!(s.sequences[0].topk_logprobs, None);
        assert_eq!(s.topk_prompt_logprobs, None);
    }

    #[test]
    fn topk_with_huge_k_and_zero_length_is_absent_not_an_allocation() {
        let bytes = sample_with_topk(proto::TopkLogprobs {
            token_ids: vec![],
            logprobs: vec![],
            k: u32::MAX,
            length: 0,
        });
        let s = decode_sample(&bytes, &["a".into()]).unwrap();
        assert_eq!(s.sequences[0].topk_logprobs, None);
    }

    #[test]
    fn topk_claiming_more_cells_than_its_bytes_is_a_decode_error() {
        for (k, length) in [(u32::MAX, u32::MAX), (1 << 16, 1 << 16), (2, 3)] {
            let bytes = sample_with_topk(proto::TopkLogprobs {
                token_ids: pack_le(&[1i32, 2]),
                logprobs: pack_le(&[-1.0f32, -2.0]),
                k,
                length,
            });
            let msg = is_decode_error(decode_sample(&bytes, &[]));
            assert!(msg.contains("top-k"), "{msg}");
        }
    }

    #[test]
    fn topk_legal_matrix_still_decodes_with_sentinels_dropped() {
        let bytes = sample_with_topk(proto::TopkLogprobs {
            token_ids: pack_le(&[5i32, 0, 0, 0]),
            logprobs: pack_le(&[-0.5f32, -99_999.0, -99_999.0, -99_999.0]),
            k: 2,
            length: 2,
        });
        let s = decode_sample(&bytes, &["a".into()]).unwrap();
        assert_eq!(
            s.topk_prompt_logprobs,
            Some(vec![Some(vec![(5, -0.5)]), None])
        );
    }

    #[test]
    fn sample_legal_edge_cases_stay_legal() {
        // Absent stop_reason = stop, NaN prompt logprob = null, empty logprobs = none.
        let bytes = proto::SampleResponse {
            sequences: vec![proto::SampledSequence {
                stop_reason: 0,
                tokens: vec![],
                logprobs: Some(vec![]),
                topk_sampled_logprobs: None,
            }],
            prompt_logprobs: Some(pack_le(&[f32::NAN, -1.0])),
            ..Default::default()
        }
        .encode_to_vec();
        let s = decode_sample(&bytes, &["a".into()]).unwrap();
        assert_eq!(s.sequences[0].stop_reason, StopReason::Stop);
        assert_eq!(s.sequences[0].logprobs, None);
        assert_eq!(s.prompt_logprobs, Some(vec![None, Some(-1.0)]));
        assert_eq!(s.topk_prompt_logprobs, None);
    }

    #[test]
    fn huge_num_datums_without_fields_is_a_decode_error_not_a_push_loop() {
        // num_datums drove `while outputs.len() < count { push }`: 2^62 empty maps.
        let bytes = one_record(vec![], 1 << 62);
        assert!(bytes.len() < 40);
        let msg = is_decode_error(decode_forward_backward(&bytes));
        assert!(msg.contains("num_datums"), "{msg}");
        let bytes = one_record(vec![], i64::MAX);
        is_decode_error(decode_forward_backward(&bytes));
    }

    #[test]
    fn negative_num_datums_is_a_decode_error() {
        let bytes = one_record(vec![("logprobs", f32_field(&[0, 4], &[1.0], &[]))], -1);
        is_decode_error(decode_forward_backward(&bytes));
    }

    #[test]
    fn a_modest_num_datums_without_fields_is_still_legal() {
        let fb = decode_forward_backward(&one_record(vec![], 3)).unwrap();
        assert_eq!(fb.loss_fn_outputs.len(), 3);
        assert!(fb.loss_fn_outputs.iter().all(BTreeMap::is_empty));
    }

    #[test]
    fn zero_num_datums_counts_from_the_offsets() {
        let bytes = one_record(
            vec![("logprobs", f32_field(&[0, 4, 12], &[1.0, 2.0, 3.0], &[]))],
            0,
        );
        let fb = decode_forward_backward(&bytes).unwrap();
        assert_eq!(fb.loss_fn_outputs.len(), 2);
        assert_eq!(fb.loss_fn_outputs[1]["logprobs"].shape, Some(vec![2]));
    }

    #[test]
    fn trailing_shape_product_overflow_is_a_decode_error() {
        // 2^32 * 2^32 wraps to 0 in i64 (debug: panic; release: "leading 0").
        let field = f32_field(&[0, 4], &[1.0], &[1 << 32, 1 << 32]);
        let msg = is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
        assert!(msg.contains("overflow"), "{msg}");
        let field = f32_field(&[0, 4], &[1.0], &[i64::MAX, 2]);
        is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
    }

    #[test]
    fn negative_trailing_dims_are_a_decode_error() {
        // n / trailing with trailing = -1 gave a negative leading dimension.
        let field = f32_field(&[0, 8], &[1.0, 2.0], &[-1]);
        let msg = is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
        assert!(msg.contains("negative dimension"), "{msg}");
        let field = f32_field(&[0, 8], &[1.0, 2.0], &[-2, -1]);
        is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
    }

    #[test]
    fn zero_trailing_product_stays_legal_with_leading_zero() {
        let field = f32_field(&[0, 0], &[], &[0, 3]);
        let fb = decode_forward_backward(&one_record(vec![("x", field)], 1)).unwrap();
        assert_eq!(fb.loss_fn_outputs[0]["x"].shape, Some(vec![0, 0, 3]));
    }

    #[test]
    fn trailing_shape_must_divide_the_elements() {
        let field = f32_field(&[0, 12], &[1.0, 2.0, 3.0], &[2]);
        is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
        let field = f32_field(&[0, 16], &[1.0, 2.0, 3.0, 4.0], &[2]);
        let fb = decode_forward_backward(&one_record(vec![("x", field)], 1)).unwrap();
        assert_eq!(fb.loss_fn_outputs[0]["x"].shape, Some(vec![2, 2]));
    }

    #[test]
    fn offsets_outside_the_data_are_a_decode_error() {
        for offsets in [
            vec![0, 8],
            vec![-4, 4],
            vec![4, 0],
            vec![0, i64::MAX],
            vec![i64::MIN, 0],
            vec![0, 2],
        ] {
            let field = f32_field(&offsets, &[1.0], &[]);
            is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 0)));
        }
    }

    #[test]
    fn many_empty_slices_with_a_long_trailing_shape_is_a_decode_error_not_quadratic_memory() {
        // 20k empty slices x a 50k-dimension trailing shape (zeros) would clone the shape
        // into every slice: 20k x 400 KB = 8 GB from a ~210 KB message.
        let field = f32_field(&vec![0i64; 20_000], &[], &vec![0i64; 50_000]);
        let msg = is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 0)));
        assert!(msg.contains("more memory than the message"), "{msg}");
    }

    #[test]
    fn many_empty_slices_with_a_long_field_name_is_a_decode_error_not_quadratic_memory() {
        // The field name is cloned into every datum: 50k slices x 200 KB name = 10 GB.
        let name = "n".repeat(200_000);
        let field = f32_field(&vec![0i64; 50_000], &[], &[]);
        is_decode_error(decode_forward_backward(&one_record(
            vec![(&name, field)],
            0,
        )));
    }

    #[test]
    fn unknown_or_unspecified_dtype_is_a_decode_error() {
        for dtype in [0, 9, -1] {
            let mut field = f32_field(&[0, 4], &[1.0], &[]);
            field.dtype = dtype;
            is_decode_error(decode_forward_backward(&one_record(vec![("x", field)], 1)));
        }
    }

    #[test]
    fn widened_dtypes_decode() {
        let field = proto::BatchedTensor {
            data: pack_le(&[0x3f80u16, 0xc000]),
            offsets: pack_le(&[0i64, 4]),
            dtype: proto::DType::Bfloat16 as i32,
            trailing_shape: vec![],
        };
        let fb = decode_forward_backward(&one_record(vec![("x", field)], 1)).unwrap();
        assert_eq!(
            fb.loss_fn_outputs[0]["x"].data,
            TensorValues::Float32(vec![1.0, -2.0])
        );
    }

    #[test]
    fn estimates_follow_the_spec() {
        let mut d = Datum {
            model_input: crate::core::types::ModelInput::from_ints(vec![1, 2, 3]),
            ..Default::default()
        };
        d.loss_fn_inputs
            .insert("target_tokens".into(), TensorData::from_i64(vec![2, 3, 4]));
        d.loss_fn_inputs
            .insert("weights".into(), TensorData::from_f32(vec![1.0; 3]));
        assert_eq!(estimate_datum_bytes(&d), 12 + 24 + 12);
    }
}
