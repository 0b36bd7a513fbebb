//! Conversions between wire bodies (JSON and protobuf) and the tiny model's inputs/outputs.

use crate::futures::SampleOutcome;
use crate::model::{DatumInput, DatumOutput, LossFn};
use base64::Engine;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use tinkex::core::proto;
use tinkex::core::types::{Chunk, Datum, LossConfigValue, ModelInput, TensorData};

/// Most tokens one model input (a prompt or a datum) may flatten to: above every advertised
/// context length, so a legal input always fits and a longer one fails with the model's
/// context error; it bounds what a media chunk's `expected_tokens` can make the emulator
/// allocate.
pub const MAX_MODEL_INPUT_TOKENS: u64 = 1 << 20;

/// Most values (tokens plus dense tensor values) one forward_backward request may expand to,
/// counted before anything is expanded (2^25, i.e. 256 MiB of 64-bit values).
pub const MAX_REQUEST_VALUES: u64 = 1 << 25;

/// Most datums in one forward_backward request (clients send at most 1024 per request,
/// PROTOCOL.md 5.3).
pub const MAX_DATUMS: usize = 1 << 16;

fn input_too_long(n: u64) -> String {
    format!(
        "model input of {n} tokens exceeds tinkex-emulator's limit of {MAX_MODEL_INPUT_TOKENS} tokens"
    )
}

/// Tokens a JSON model input flattens to, counted without flattening it.
pub fn model_input_len_json(input: &ModelInput) -> u64 {
    input
        .chunks
        .iter()
        .map(|c| match c {
            Chunk::EncodedText { tokens } => tokens.len() as u64,
            Chunk::Image {
                expected_tokens, ..
            }
            | Chunk::ImageAssetPointer {
                expected_tokens, ..
            } => expected_tokens.unwrap_or(0).max(0) as u64,
            Chunk::Dmel { dmel } => {
                tinkex::core::types::dmel_token_length(dmel).unwrap_or(0) as u64
            }
        })
        .fold(0u64, u64::saturating_add)
}

/// Tokens protobuf chunks flatten to, counted without flattening them.
pub fn model_input_len_proto(chunks: &[proto::Chunk]) -> u64 {
    chunks
        .iter()
        .map(|c| match &c.chunk {
            Some(proto::ChunkKind::EncodedText(t)) => t.tokens.len() as u64 / 4,
            Some(proto::ChunkKind::Image(img)) => img.expected_tokens.unwrap_or(0).max(0) as u64,
            Some(proto::ChunkKind::Dmel(d)) => {
                tinkex::core::types::tensor_container_dim(&d.dmel, 0).unwrap_or(0)
            }
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// Values a tensor becomes when made dense, without making it dense (saturating).
fn dense_len(shape: &[i64], values: usize, sparse: bool) -> u64 {
    if !sparse {
        return values as u64;
    }
    shape
        .iter()
        .map(|&d| d.max(0) as u64)
        .fold(1u64, u64::saturating_mul)
}

/// Checks a forward_backward batch against [`MAX_DATUMS`], [`MAX_MODEL_INPUT_TOKENS`] and
/// [`MAX_REQUEST_VALUES`] before any datum is expanded.
fn check_batch<D>(
    data: &[D],
    input_len: impl Fn(&D) -> u64,
    tensor_lens: impl Fn(&D) -> Vec<u64>,
) -> Result<(), String> {
    if data.len() > MAX_DATUMS {
        return Err(format!(
            "data: {} datums exceed tinkex-emulator's limit of {MAX_DATUMS} per request",
            data.len()
        ));
    }
    let mut total = 0u64;
    for (i, d) in data.iter().enumerate() {
        let n = input_len(d);
        if n > MAX_MODEL_INPUT_TOKENS {
            return Err(format!("datum {i}: model_input: {}", input_too_long(n)));
        }
        total = tensor_lens(d)
            .into_iter()
            .fold(total.saturating_add(n), u64::saturating_add);
    }
    if total > MAX_REQUEST_VALUES {
        return Err(format!(
            "data: the batch expands to {total} tokens and tensor values, more than \
             tinkex-emulator's limit of {MAX_REQUEST_VALUES} per request"
        ));
    }
    Ok(())
}

/// Size limits of a JSON forward_backward batch.
pub fn check_batch_json(data: &[Datum]) -> Result<(), String> {
    check_batch(
        data,
        |d| model_input_len_json(&d.model_input),
        |d| {
            d.loss_fn_inputs
                .values()
                .map(|t| {
                    dense_len(
                        t.shape.as_deref().unwrap_or(&[]),
                        t.data.len(),
                        t.is_sparse(),
                    )
                })
                .collect()
        },
    )
}

/// Size limits of a protobuf forward_backward batch.
pub fn check_batch_proto(data: &[proto::Datum]) -> Result<(), String> {
    check_batch(
        data,
        |d| model_input_len_proto(&d.model_input),
        |d| {
            d.loss_fn_inputs
                .values()
                .map(|t| match &t.encoding {
                    Some(proto::TensorEncoding::Dense(b)) => dense_len(&t.shape, b.len(), false),
                    Some(proto::TensorEncoding::SparseCsr(_)) => dense_len(&t.shape, 0, true),
                    None => 0,
                })
                .collect()
        },
    )
}

/// Token ids standing for a media chunk: the emulator has no vision model, so an image
/// becomes `expected_tokens` copies of a token derived from its bytes.
fn media_tokens(
    kind: &str,
    bytes: &[u8],
    expected: Option<i64>,
    idx: usize,
) -> Result<Vec<i64>, String> {
    let n = expected.ok_or_else(|| {
        format!("chunk {idx}: {kind} chunks need expected_tokens in tinkex-emulator (it has no image encoder)")
    })?;
    if !(0..=1_000_000).contains(&n) {
        return Err(format!("chunk {idx}: expected_tokens {n} out of range"));
    }
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Ok(vec![(h >> 1) as i64 & 0x7fff_ffff; n as usize])
}

/// The token ids of a `dmel` chunk (PROTOCOL.md 10.1, 20.1). The tiny model has no audio
/// front end, so each of the `T = shape[0]` frames becomes one token: the TensorContainer
/// header (optional constant marker 254, dtype byte 0..=7, varint `ndim`, `ndim` varint
/// dimensions) is decoded, the payload after it is cut into `T` equal frames (or, when it
/// does not divide, each frame is its index), and frame `t`'s token is an FNV-1a hash of its
/// bytes and `t` (31 bits).
pub fn dmel_tokens(bytes: &[u8], idx: usize) -> Result<Vec<i64>, String> {
    let bad = |e: String| format!("chunk {idx}: dmel chunk: {e}");
    let t = tinkex::core::types::tensor_container_dim(bytes, 0).map_err(bad)?;
    if t > MAX_MODEL_INPUT_TOKENS {
        return Err(bad(input_too_long(t)));
    }
    // Header length: marker?, dtype, ndim varint, ndim varints.
    let mut pos = usize::from(bytes.first() == Some(&254)) + 1;
    let read = |pos: &mut usize| -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*pos).ok_or("Truncated TensorContainer header")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("TensorContainer varint is too long".into())
    };
    let ndim = read(&mut pos).map_err(bad)?;
    if ndim > 64 {
        return Err(bad(format!(
            "TensorContainer has {ndim} dimensions (tinkex-emulator reads at most 64)"
        )));
    }
    for _ in 0..ndim {
        read(&mut pos).map_err(bad)?;
    }
    let payload = &bytes[pos.min(bytes.len())..];
    let t = t as usize;
    let frame = if t > 0 && payload.len() % t == 0 {
        payload.len() / t
    } else {
        0
    };
    Ok((0..t)
        .map(|i| {
            let data = if frame > 0 {
                &payload[i * frame..(i + 1) * frame]
            } else {
                &[][..]
            };
            let h = data
                .iter()
                .chain((i as u64).to_le_bytes().iter())
                .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            (h >> 1) as i64 & 0x7fff_ffff
        })
        .collect())
}

/// Flattens a JSON model input into token ids.
pub fn model_input_tokens_json(input: &ModelInput) -> Result<Vec<i64>, String> {
    let n = model_input_len_json(input);
    if n > MAX_MODEL_INPUT_TOKENS {
        return Err(input_too_long(n));
    }
    let mut out = Vec::new();
    for (i, chunk) in input.chunks.iter().enumerate() {
        match chunk {
            Chunk::EncodedText { tokens } => out.extend_from_slice(tokens),
            Chunk::Image {
                data,
                expected_tokens,
                ..
            } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("chunk {i}: image data is not valid base64: {e}"))?;
                out.extend(media_tokens("image", &bytes, *expected_tokens, i)?);
            }
            Chunk::ImageAssetPointer {
                location,
                expected_tokens,
                ..
            } => out.extend(media_tokens(
                "image_asset_pointer",
                location.as_bytes(),
                *expected_tokens,
                i,
            )?),
            Chunk::Dmel { dmel } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(dmel)
                    .map_err(|e| format!("chunk {i}: dmel is not valid base64: {e}"))?;
                out.extend(dmel_tokens(&bytes, i)?);
            }
        }
    }
    Ok(out)
}

/// Flattens protobuf chunks into token ids.
pub fn model_input_tokens_proto(chunks: &[proto::Chunk]) -> Result<Vec<i64>, String> {
    let n = model_input_len_proto(chunks);
    if n > MAX_MODEL_INPUT_TOKENS {
        return Err(input_too_long(n));
    }
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        match &chunk.chunk {
            Some(proto::ChunkKind::EncodedText(t)) => out.extend(
                proto::unpack_le::<i32>(&t.tokens)
                    .map_err(|e| format!("chunk {i}: tokens: {e}"))?
                    .into_iter()
                    .map(i64::from),
            ),
            Some(proto::ChunkKind::Image(img)) => out.extend(media_tokens(
                "image",
                &img.data,
                img.expected_tokens.map(i64::from),
                i,
            )?),
            Some(proto::ChunkKind::Dmel(d)) => out.extend(dmel_tokens(&d.dmel, i)?),
            None => return Err(format!("chunk {i} is empty")),
        }
    }
    Ok(out)
}

/// Dense values of a protobuf tensor as f64.
fn proto_tensor_dense(t: &proto::Tensor) -> Result<Vec<f64>, String> {
    let dtype =
        proto::DType::try_from(t.dtype).map_err(|_| format!("unknown dtype {}", t.dtype))?;
    let decode = |bytes: &[u8]| -> Result<Vec<f64>, String> {
        Ok(match dtype {
            proto::DType::Float32 => proto::unpack_le::<f32>(bytes)?
                .into_iter()
                .map(f64::from)
                .collect(),
            proto::DType::Int64 => proto::unpack_le::<i64>(bytes)?
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            proto::DType::Int32 => proto::unpack_le::<i32>(bytes)?
                .into_iter()
                .map(f64::from)
                .collect(),
            proto::DType::Bfloat16 => proto::unpack_le::<u16>(bytes)?
                .into_iter()
                .map(|b| f64::from(f32::from_bits(u32::from(b) << 16)))
                .collect(),
            proto::DType::Unspecified => return Err("dtype is unspecified".into()),
        })
    };
    match &t.encoding {
        Some(proto::TensorEncoding::Dense(bytes)) => {
            let values = decode(bytes)?;
            if !t.shape.is_empty() {
                let n = t
                    .shape
                    .iter()
                    .try_fold(1i64, |acc, &d| acc.checked_mul(d))
                    .unwrap_or(-1);
                if n != values.len() as i64 {
                    return Err(format!(
                        "shape {:?} needs {n} values, got {}",
                        t.shape,
                        values.len()
                    ));
                }
            }
            Ok(values)
        }
        Some(proto::TensorEncoding::SparseCsr(csr)) => {
            check_sparse_shape(&t.shape)?;
            let td = TensorData {
                data: tinkex::core::types::TensorValues::Float32(
                    decode(&csr.values)?.into_iter().map(|x| x as f32).collect(),
                ),
                dtype: tinkex::core::types::TensorDtype::Float32,
                shape: Some(t.shape.clone()),
                sparse_crow_indices: Some(proto::unpack_le::<i64>(&csr.crow_indices)?),
                sparse_col_indices: Some(proto::unpack_le::<i64>(&csr.col_indices)?),
            };
            td.dense_f64(0.0)
        }
        None => Err("tensor has no data".into()),
    }
}

/// A sparse tensor becomes `rows × cols` dense values: refuse shapes no datum needs before
/// anything that size is allocated.
fn check_sparse_shape(shape: &[i64]) -> Result<(), String> {
    let n = dense_len(shape, 0, true);
    if n > MAX_MODEL_INPUT_TOKENS {
        return Err(format!(
            "sparse shape {shape:?} has {n} dense values, more than tinkex-emulator's limit of {MAX_MODEL_INPUT_TOKENS}"
        ));
    }
    Ok(())
}

/// Builds a model datum from token ids and named dense inputs.
fn datum_input(
    tokens: Vec<i64>,
    mut inputs: HashMap<String, Vec<f64>>,
    shapes: HashMap<String, Vec<usize>>,
    idx: usize,
) -> Result<DatumInput, String> {
    let all = inputs
        .iter()
        .map(|(k, v)| {
            let shape = shapes.get(k).cloned().unwrap_or_else(|| vec![v.len()]);
            (k.clone(), (v.iter().map(|&x| x as f32).collect(), shape))
        })
        .collect();
    let target = inputs
        .remove("target_tokens")
        .ok_or_else(|| format!("datum {idx}: loss_fn_inputs[\"target_tokens\"] is required"))?;
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    Ok(DatumInput {
        tokens,
        target_tokens: target.into_iter().map(|x| x as i64).collect(),
        weights: inputs.remove("weights").map(f32s),
        sampling_logprobs: inputs.remove("logprobs").map(f32s),
        advantages: inputs.remove("advantages").map(f32s),
        inputs: all,
    })
}

/// Converts a JSON datum.
pub fn datum_from_json(d: &Datum, idx: usize) -> Result<DatumInput, String> {
    let tokens =
        model_input_tokens_json(&d.model_input).map_err(|e| format!("datum {idx}: {e}"))?;
    let mut inputs = HashMap::new();
    let mut shapes = HashMap::new();
    for (name, t) in &d.loss_fn_inputs {
        if let Some(shape) = &t.shape {
            shapes.insert(
                name.clone(),
                shape.iter().map(|&d| d.max(0) as usize).collect(),
            );
        }
        if t.is_sparse() {
            check_sparse_shape(t.shape.as_deref().unwrap_or(&[]))
                .map_err(|e| format!("datum {idx}: loss_fn_inputs[{name:?}]: {e}"))?;
        }
        inputs.insert(
            name.clone(),
            t.dense_f64(0.0)
                .map_err(|e| format!("datum {idx}: loss_fn_inputs[{name:?}]: {e}"))?,
        );
    }
    datum_input(tokens, inputs, shapes, idx)
}

/// Converts a protobuf datum.
pub fn datum_from_proto(d: &proto::Datum, idx: usize) -> Result<DatumInput, String> {
    let tokens =
        model_input_tokens_proto(&d.model_input).map_err(|e| format!("datum {idx}: {e}"))?;
    let mut inputs = HashMap::new();
    let mut shapes = HashMap::new();
    for (name, t) in &d.loss_fn_inputs {
        if !t.shape.is_empty() {
            shapes.insert(
                name.clone(),
                t.shape.iter().map(|&d| d.max(0) as usize).collect(),
            );
        }
        inputs.insert(
            name.clone(),
            proto_tensor_dense(t)
                .map_err(|e| format!("datum {idx}: loss_fn_inputs[{name:?}]: {e}"))?,
        );
    }
    datum_input(tokens, inputs, shapes, idx)
}

/// Maps a loss name and config to the model's loss, or says why not.
pub fn loss_fn(
    name: &str,
    config: &BTreeMap<String, LossConfigValue>,
    custom: &dyn Fn(&str) -> Option<std::sync::Arc<crate::model::graph::LossGraph>>,
) -> Result<LossFn, String> {
    let number = |key: &str, default: f32| -> Result<f32, String> {
        match config.get(key) {
            None => Ok(default),
            Some(LossConfigValue::Number(x)) => Ok(*x as f32),
            Some(LossConfigValue::Text(t)) => Err(format!(
                "loss_fn_config[{key:?}] must be a number, got {t:?}"
            )),
        }
    };
    match name {
        "cross_entropy" => Ok(LossFn::CrossEntropy),
        "importance_sampling" => Ok(LossFn::ImportanceSampling),
        "ppo" => Ok(LossFn::Ppo {
            clip_low: number("clip_low_threshold", 0.8)?,
            clip_high: number("clip_high_threshold", 1.2)?,
        }),
        "cispo" => Ok(LossFn::Cispo {
            clip_low: number("clip_low_threshold", 0.8)?,
            clip_high: number("clip_high_threshold", 1.2)?,
        }),
        "dro" => Ok(LossFn::Dro {
            beta: number("beta", 0.05)?,
        }),
        "gspo" => Ok(LossFn::Gspo {
            clip_low: number("clip_low_threshold", 1.0 - 3e-4)?,
            clip_high: number("clip_high_threshold", 1.0 + 4e-4)?,
        }),
        "custom" => match config.get("loss_id") {
            Some(LossConfigValue::Text(id)) => custom(id).map(LossFn::Custom).ok_or_else(|| {
                format!("loss_fn \"custom\": unknown loss_id {id:?} (create it with create_custom_loss)")
            }),
            _ => Err("loss_fn \"custom\" needs loss_fn_config {\"loss_id\": <id from create_custom_loss>}".into()),
        },
        "stable_reinforce" => Err(format!(
            "loss_fn {name:?} is not supported by tinkex-emulator: its formula is not public \
             (supported: cross_entropy, importance_sampling, ppo, cispo, dro, gspo, custom)"
        )),
        other => Err(format!(
            "unknown loss_fn {other:?} (expected one of cross_entropy, importance_sampling, ppo, cispo, dro, gspo, stable_reinforce, custom)"
        )),
    }
}

/// Reads the loss config of a protobuf request (v2 preferred, legacy numbers otherwise).
pub fn proto_loss_config(req: &proto::ForwardBackwardRequest) -> BTreeMap<String, LossConfigValue> {
    let mut out: BTreeMap<String, LossConfigValue> = req
        .loss_fn_config
        .iter()
        .map(|(k, v)| (k.clone(), LossConfigValue::Number(*v)))
        .collect();
    for (k, v) in &req.loss_fn_config_v2 {
        match &v.value {
            Some(proto::LossConfigValueKind::Number(x)) => {
                out.insert(k.clone(), LossConfigValue::Number(*x))
            }
            Some(proto::LossConfigValueKind::Text(t)) => {
                out.insert(k.clone(), LossConfigValue::Text(t.clone()))
            }
            None => None,
        };
    }
    out
}

fn batched_f32(rows: impl Iterator<Item = Vec<f32>>) -> proto::BatchedTensor {
    let mut data = Vec::new();
    let mut offsets = vec![0i64];
    for row in rows {
        data.extend(proto::pack_le(&row));
        offsets.push(data.len() as i64);
    }
    proto::BatchedTensor {
        data,
        offsets: proto::pack_le(&offsets),
        dtype: proto::DType::Float32 as i32,
        trailing_shape: Vec::new(),
    }
}

/// ForwardBackwardOutput as protobuf bytes (14.2).
pub fn forward_backward_proto(outputs: &[DatumOutput], metrics: &[(String, f64)]) -> Vec<u8> {
    let mut fields = BTreeMap::new();
    fields.insert(
        "logprobs".to_string(),
        batched_f32(outputs.iter().map(|o| o.logprobs.clone())),
    );
    fields.insert(
        "elementwise_loss".to_string(),
        batched_f32(outputs.iter().map(|o| o.elementwise_loss.clone())),
    );
    proto::ForwardBackwardOutput {
        loss_fn_output_type: "ArrayRecord".into(),
        loss_fn_outputs: vec![proto::ArrayRecord {
            type_tag: "ArrayRecord".into(),
            fields,
            num_datums: outputs.len() as i64,
        }],
        metrics: metrics.iter().cloned().collect(),
    }
    .encode_to_vec()
}

/// ForwardBackwardOutput as JSON (14.6 legacy shape).
pub fn forward_backward_json(outputs: &[DatumOutput], metrics: &[(String, f64)]) -> Value {
    let outs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            json!({
                "logprobs": TensorData::from_f32(o.logprobs.clone()),
                "elementwise_loss": TensorData::from_f32(o.elementwise_loss.clone()),
            })
        })
        .collect();
    let metrics: BTreeMap<&str, f64> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    json!({"loss_fn_output_type": "ArrayRecord", "loss_fn_outputs": outs, "metrics": metrics})
}

const TOPK_EMPTY: (i64, f32) = (0, -99_999.0);

fn topk_proto(rows: &[Vec<(i64, f32)>], k: usize) -> proto::TopkLogprobs {
    let mut ids = Vec::with_capacity(rows.len() * k);
    let mut lps = Vec::with_capacity(rows.len() * k);
    for row in rows {
        for j in 0..k {
            let (t, lp) = row.get(j).copied().unwrap_or(TOPK_EMPTY);
            ids.push(t as i32);
            lps.push(lp);
        }
    }
    proto::TopkLogprobs {
        token_ids: proto::pack_le(&ids),
        logprobs: proto::pack_le(&lps),
        k: k as u32,
        length: rows.len() as u32,
    }
}

/// SampleResponse as protobuf bytes (14.2).
pub fn sample_proto(s: &SampleOutcome) -> Vec<u8> {
    let sequences = s
        .sequences
        .iter()
        .enumerate()
        .map(|(i, seq)| proto::SampledSequence {
            stop_reason: if seq.stopped {
                proto::StopReason::Stop
            } else {
                proto::StopReason::Length
            } as i32,
            tokens: proto::pack_le(&seq.tokens.iter().map(|&t| t as i32).collect::<Vec<_>>()),
            logprobs: Some(proto::pack_le(&seq.logprobs)),
            topk_sampled_logprobs: s
                .topk_sampled
                .as_ref()
                .map(|all| topk_proto(&all[i], s.topk_sample_k)),
        })
        .collect();
    proto::SampleResponse {
        sequences,
        prompt_logprobs: s.prompt_logprobs.as_ref().map(|lp| {
            proto::pack_le(&lp.iter().map(|x| x.unwrap_or(f32::NAN)).collect::<Vec<_>>())
        }),
        topk_prompt_logprobs: s.topk_prompt.as_ref().map(|(k, rows)| topk_proto(rows, *k)),
        prompt_cache_hit_tokens: 0,
        target_prompt_logprobs: s
            .target_prompt_logprobs
            .as_ref()
            .map(tinkex::core::codec::tensor_to_proto),
        prompt_alt_tokens: s.prompt_alt_tokens.as_ref().map(|(k, tokens, logprobs)| {
            let shape = vec![(tokens.len() / (*k).max(1)) as i64, *k as i64];
            // Ids as int32, as the service sends them (the client widens them to int64).
            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            proto::PromptAltTokens {
                tokens: Some(proto::Tensor {
                    encoding: Some(proto::TensorEncoding::Dense(proto::pack_le(&ids))),
                    dtype: proto::DType::Int32 as i32,
                    shape: shape.clone(),
                }),
                logprobs: Some(proto::Tensor {
                    encoding: Some(proto::TensorEncoding::Dense(proto::pack_le(logprobs))),
                    dtype: proto::DType::Float32 as i32,
                    shape,
                }),
            }
        }),
    }
    .encode_to_vec()
}

/// SampleResponse as JSON (14.6, with the proposed top-k extension).
pub fn sample_json(s: &SampleOutcome) -> Value {
    let opt_rows = |rows: &Vec<Vec<(i64, f32)>>| -> Vec<Option<Vec<(i64, f32)>>> {
        rows.iter()
            .map(|r| (!r.is_empty()).then(|| r.clone()))
            .collect()
    };
    let sequences: Vec<Value> = s
        .sequences
        .iter()
        .enumerate()
        .map(|(i, seq)| {
            let mut v = json!({
                "stop_reason": if seq.stopped { "stop" } else { "length" },
                "tokens": seq.tokens,
                "logprobs": seq.logprobs,
            });
            if let Some(all) = &s.topk_sampled {
                v["topk_logprobs"] = json!(opt_rows(&all[i]));
            }
            v
        })
        .collect();
    let mut v = json!({"type": "sample", "sequences": sequences, "prompt_cache_hit_tokens": 0});
    if let Some(lp) = &s.prompt_logprobs {
        v["prompt_logprobs"] = json!(lp);
    }
    if let Some((_, rows)) = &s.topk_prompt {
        v["topk_prompt_logprobs"] = json!(opt_rows(rows));
    }
    if let Some(t) = &s.target_prompt_logprobs {
        v["target_prompt_logprobs"] = json!(t);
    }
    if let Some((k, tokens, logprobs)) = &s.prompt_alt_tokens {
        let shape = vec![(tokens.len() / (*k).max(1)) as i64, *k as i64];
        let tensor = |data: tinkex::core::types::TensorValues| TensorData {
            dtype: data.dtype(),
            data,
            shape: Some(shape.clone()),
            sparse_crow_indices: None,
            sparse_col_indices: None,
        };
        v["prompt_alt_tokens"] = json!({
            "tokens": tensor(tinkex::core::types::TensorValues::Int64(tokens.clone())),
            "logprobs": tensor(tinkex::core::types::TensorValues::Float32(logprobs.clone())),
        });
    }
    v
}
