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
        Chunk::Dmel { dmel } => proto::ChunkKind::Dmel(proto::DmelChunk {
            dmel: base64::engine::general_purpose::STANDARD
                .decode(dmel)
                .map_err(|e| Error::user(format!("datum {datum}: dmel is not valid base64: {e}")))?,
        }),
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

/// Decodes a field of a `BatchedTensor` into per-datum tensors.
fn batched_to_tensors(t: &proto::BatchedTensor) -> Result<Vec<TensorData>> {
    let dtype =
        proto::DType::try_from(t.dtype).map_err(|_| bad(format!("unknown dtype {}", t.dtype)))?;
    let width = match dtype {
        proto::DType::Float32 | proto::DType::Int32 => 4,
        proto::DType::Int64 => 8,
        proto::DType::Bfloat16 => 2,
        proto::DType::Unspecified => return Err(bad("Unsupported proto dtype UNSPECIFIED")),
    };
    let offsets = unpack_le::<i64>(&t.offsets).map_err(bad)?;
    let trailing: i64 = t.trailing_shape.iter().product();
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if a > b || b > t.data.len() || (b - a) % width != 0 {
            return Err(bad("batched tensor offsets out of range"));
        }
        let bytes = &t.data[a..b];
        let values = match dtype {
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
            proto::DType::Unspecified => unreachable!(),
        };
        let n = values.len() as i64;
        let lead = if trailing == 0 { 0 } else { n / trailing };
        let mut shape = vec![lead];
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
    let msg = proto::ForwardBackwardOutput::decode(bytes).map_err(bad)?;
    let output_type = msg
        .loss_fn_output_type
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    let mut outputs: Vec<BTreeMap<String, TensorData>> = Vec::new();
    for record in &msg.loss_fn_outputs {
        let base = outputs.len();
        let mut count = record.num_datums.max(0) as usize;
        for (name, field) in &record.fields {
            let tensors = batched_to_tensors(field)?;
            if count == 0 {
                count = tensors.len();
            }
            for (i, t) in tensors.into_iter().enumerate() {
                while outputs.len() <= base + i {
                    outputs.push(BTreeMap::new());
                }
                outputs[base + i].insert(name.clone(), t);
            }
        }
        while outputs.len() < base + count {
            outputs.push(BTreeMap::new());
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

fn topk_rows(t: &proto::TopkLogprobs) -> Result<Vec<Option<Vec<(i64, f32)>>>> {
    let ids = unpack_le::<i32>(&t.token_ids).map_err(bad)?;
    let lps = unpack_le::<f32>(&t.logprobs).map_err(bad)?;
    let (k, n) = (t.k as usize, t.length as usize);
    if ids.len() != k * n || lps.len() != k * n {
        return Err(bad("top-k matrix size does not match length x k"));
    }
    Ok((0..n)
        .map(|row| {
            let cells: Vec<(i64, f32)> = (0..k)
                .map(|j| (i64::from(ids[row * k + j]), lps[row * k + j]))
                .filter(|&(id, lp)| !(id == 0 && lp == -99_999.0))
                .collect();
            (!cells.is_empty()).then_some(cells)
        })
        .collect())
}

/// Decodes a protobuf `SampleResponse`, stamping the submit answer's sequence ids.
pub fn decode_sample(bytes: &[u8], sequence_ids: &[String]) -> Result<SampleResponse> {
    use prost::Message;
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
                topk_logprobs: s
                    .topk_sampled_logprobs
                    .as_ref()
                    .map(topk_rows)
                    .transpose()?,
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
        topk_prompt_logprobs: msg
            .topk_prompt_logprobs
            .as_ref()
            .map(topk_rows)
            .transpose()?,
        prompt_cache_hit_tokens: i64::from(msg.prompt_cache_hit_tokens),
        kind: "sample".into(),
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
            Chunk::Image { data, .. } => data.len(),
            Chunk::ImageAssetPointer { location, .. } => location.len(),
            Chunk::Dmel { dmel } => dmel.len(),
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
