//! Training endpoints (PROTOCOL.md section 6). Every ordered request goes through the model's
//! sequencer; semantic problems fail the future in its turn (so the `seq_id` is consumed).

use super::AppRef;
use crate::checkpoints::RunMeta;
use crate::encode;
use crate::futures::Outcome;
use crate::model::{self, ModelConfig, TinyModel};
use crate::training::{ModelSlot, TrainOp};
use crate::util::{json_response, parse_json, unix_now, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use prost::Message;
use std::io::Read;
use tinkex::core::proto;
use tinkex::core::types::{
    CreateModelRequest, ForwardBackwardJsonRequest, GetInfoRequest, GetInfoResponse,
    LoadWeightsRequest, ModelData, OptimStepRequest, OptimizerConfig, SaveWeightsForSamplerRequest,
    SaveWeightsRequest, TinkerPath, UntypedApiFuture,
};

fn future_response(request_id: String, model_id: &str) -> Response {
    json_response(
        StatusCode::OK,
        &UntypedApiFuture {
            request_id,
            model_id: Some(model_id.to_string()),
            sample_sequence_ids: None,
        },
    )
}

fn submit(
    app: &AppRef,
    model_id: &str,
    seq_id: Option<i64>,
    kind: &'static str,
    op: TrainOp,
) -> Result<Response, ApiError> {
    let slot = app.model(model_id)?;
    app.check_session_open(&slot.session_id)?;
    let request_id = slot.submit(app, seq_id, kind, op);
    Ok(future_response(request_id, model_id))
}

fn check_base_model(app: &AppRef, base_model: &str) -> Result<(), ApiError> {
    if app.config.context_length(base_model).is_none() {
        let names: Vec<&str> = app
            .config
            .base_models
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(ApiError::bad_request(format!(
            "base model {base_model:?} is not supported; supported models: {}",
            names.join(", ")
        )));
    }
    Ok(())
}

/// Returns the request id of an earlier identical creation request, if any.
fn existing_creation(
    app: &AppRef,
    session_id: &str,
    model_seq_id: i64,
) -> Result<Option<String>, ApiError> {
    app.check_session_open(session_id)?;
    let sessions = app.sessions.lock().unwrap();
    Ok(sessions[session_id]
        .model_requests
        .get(&model_seq_id)
        .cloned())
}

fn remember_creation(app: &AppRef, session_id: &str, model_seq_id: i64, request_id: &str) {
    if let Some(s) = app.sessions.lock().unwrap().get_mut(session_id) {
        s.model_requests
            .insert(model_seq_id, request_id.to_string());
    }
}

fn start_model(
    app: &AppRef,
    model_id: &str,
    session_id: &str,
    run: RunMeta,
    seed: Option<u64>,
    next_seq: i64,
) -> Result<std::sync::Arc<ModelSlot>, ApiError> {
    app.checkpoints
        .save_run(&run)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let model = TinyModel::new(ModelConfig {
        base_model: run.base_model.clone(),
        lora_rank: run.lora_rank,
        seed,
        train_unembed: run.train_unembed,
        train_mlp: run.train_mlp,
        train_attn: run.train_attn,
    });
    let slot = ModelSlot::start(
        app,
        model_id.to_string(),
        session_id.to_string(),
        run,
        model,
        next_seq,
    );
    app.models
        .lock()
        .unwrap()
        .insert(model_id.to_string(), slot.clone());
    Ok(slot)
}

pub async fn create_model(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateModelRequest = parse_json(&body)?;
    let model_id = format!("{}:train:{}", req.session_id, req.model_seq_id);
    if let Some(request_id) = existing_creation(&app, &req.session_id, req.model_seq_id)? {
        return Ok(future_response(request_id, &model_id));
    }
    check_base_model(&app, &req.base_model)?;
    let lora = req.lora_config.clone().unwrap_or_default();
    if !(lora.train_unembed || lora.train_mlp || lora.train_attn) {
        return Err(ApiError::bad_request(
            "at least one of train_unembed, train_mlp, train_attn must be true",
        ));
    }
    check_optimizer_config(&req.optimizer_config)?;
    let run = RunMeta {
        training_run_id: model_id.clone(),
        base_model: req.base_model.clone(),
        lora_rank: lora.rank,
        train_unembed: lora.train_unembed,
        train_mlp: lora.train_mlp,
        train_attn: lora.train_attn,
        optimizer_config: req.optimizer_config.clone(),
        user_metadata: req.user_metadata.as_ref().map(string_map),
        created: unix_now(),
    };
    start_model(
        &app,
        &model_id,
        &req.session_id,
        run,
        lora.seed.map(|s| s as u64),
        1,
    )?;
    let request_id = app.ids.next("req");
    app.futures.register_done(
        &request_id,
        "CreateModel",
        Outcome::Json(serde_json::json!({"model_id": model_id, "type": "create_model"})),
    );
    remember_creation(&app, &req.session_id, req.model_seq_id, &request_id);
    Ok(future_response(request_id, &model_id))
}

/// The optimizer families the emulator trains with: `adamw` and `dimuon` version 1.
fn check_optimizer_config(c: &OptimizerConfig) -> Result<(), ApiError> {
    match c.kind.as_str() {
        "adamw" if c.extra.is_empty() => Ok(()),
        "dimuon"
            if c.extra.len() == 1 && c.extra.get("version").and_then(|v| v.as_i64()) == Some(1) =>
        {
            Ok(())
        }
        "adamw" | "dimuon" => Err(ApiError::bad_request(format!(
            "invalid optimizer_config {}: adamw takes no field, dimuon takes only version 1",
            serde_json::to_string(c).unwrap_or_default()
        ))),
        other => Err(ApiError::bad_request(format!(
            "optimizer {other:?} is not supported by tinkex-emulator (adamw, dimuon)"
        ))),
    }
}

/// Checks a `weights_access_token` (PROTOCOL.md 6.8): the emulator has one account, so any
/// non-empty token of at most 4096 bytes is accepted and grants nothing more.
fn check_access_token(token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(t) if t.is_empty() || t.len() > 4096 => Err(ApiError::bad_request(
            "weights_access_token must be 1 to 4096 bytes",
        )),
        _ => Ok(()),
    }
}

fn string_map(
    m: &serde_json::Map<String, serde_json::Value>,
) -> std::collections::BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect()
}

pub async fn get_info(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: GetInfoRequest = parse_json(&body)?;
    let slot = app.model(&req.model_id)?;
    let run = &slot.run;
    Ok(json_response(
        StatusCode::OK,
        &GetInfoResponse {
            model_data: ModelData {
                arch: Some("tinkex-emulator-tiny".into()),
                model_name: Some(run.base_model.clone()),
                tokenizer_id: Some(run.base_model.clone()),
            },
            model_id: req.model_id.clone(),
            optimizer_config: run.optimizer_config.clone(),
            is_lora: Some(true),
            lora_rank: Some(run.lora_rank),
            model_name: Some(run.base_model.clone()),
            kind: Some("get_info".into()),
        },
    ))
}

/// A forward_backward body in either encoding.
enum FbBody {
    Proto(proto::ForwardBackwardRequest),
    Json(ForwardBackwardJsonRequest),
}

/// Decodes the body per `Content-Type` / `Content-Encoding`: protobuf (optionally zstd) or JSON.
fn decode_forward_backward(
    headers: &HeaderMap,
    body: &[u8],
    max_decompressed: usize,
) -> Result<FbBody, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if !header("content-type").contains("application/x-protobuf") {
        return parse_json(body).map(FbBody::Json);
    }
    let decompressed;
    let bytes = match header("content-encoding") {
        "" | "identity" => body,
        "zstd" => {
            decompressed = zstd_decode(body, max_decompressed)?;
            &decompressed
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?} (expected zstd or none)"),
            ))
        }
    };
    proto::ForwardBackwardRequest::decode(bytes)
        .map(FbBody::Proto)
        .map_err(|e| ApiError::bad_request(format!("invalid ForwardBackwardRequest protobuf: {e}")))
}

fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "zstd request body {what}: the limit is {limit} bytes after decompression \
             (--max-decompressed-bytes)"
        ),
    )
}

/// The window a zstd frame needs (RFC 8878 3.1.1.1), read from its header without decoding:
/// the decoder keeps that much output buffered, so a frame declaring a huge window (or a huge
/// single-segment content size) could make it allocate without bound.
fn zstd_window_or_size(frame: &[u8]) -> Result<u64, String> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    if frame.get(..4) != Some(&MAGIC[..]) {
        return Err("not a zstd frame (bad magic number)".into());
    }
    let fhd = *frame.get(4).ok_or("truncated zstd frame header")?;
    let single_segment = fhd & 0x20 != 0;
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 0x3)];
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut pos = 5;
    let window_from_descriptor = if single_segment {
        None
    } else {
        let wd = *frame.get(pos).ok_or("truncated zstd frame header")?;
        pos += 1;
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    pos += dict_len;
    let fcs = frame
        .get(pos..pos + fcs_len)
        .ok_or("truncated zstd frame header")?;
    let mut le = [0u8; 8];
    le[..fcs_len].copy_from_slice(fcs);
    let content_size = u64::from_le_bytes(le) + if fcs_len == 2 { 256 } else { 0 };
    // With a window descriptor the decoder keeps up to that much, whatever the declared
    // content size; a single-segment frame's window is its content size. A declared content
    // size above the limit is a bomb announced in advance.
    Ok(window_from_descriptor.unwrap_or(0).max(content_size))
}

/// Decodes one zstd frame, never holding more than `limit` bytes of output: the frame's
/// window is checked first, then output is read in pieces and decoding stops (413) as soon as
/// it passes the limit.
fn zstd_decode(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let invalid = |e: String| ApiError::bad_request(format!("invalid zstd body: {e}"));
    let window = zstd_window_or_size(body).map_err(invalid)?;
    if window > limit as u64 {
        return Err(too_large(
            limit,
            &format!("declares a window or content size of {window} bytes"),
        ));
    }
    let mut reader = body;
    let mut decoder =
        ruzstd::decoding::StreamingDecoder::new(&mut reader).map_err(|e| invalid(e.to_string()))?;
    const PIECE: usize = 64 * 1024;
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Grow by doubling, but never past limit + 1 (one byte over proves the bomb).
        if out.len() == out.capacity() {
            let cap = out
                .capacity()
                .max(PIECE)
                .min(limit.saturating_add(1) - out.len());
            out.try_reserve_exact(cap)
                .map_err(|e| invalid(format!("cannot allocate: {e}")))?;
        }
        let len = out.len();
        let room = (out.capacity() - len).min(PIECE);
        if room == 0 {
            return Err(too_large(limit, "decodes to more"));
        }
        out.resize(len + room, 0);
        let n = decoder
            .read(&mut out[len..])
            .map_err(|e| invalid(e.to_string()))?;
        out.truncate(len + n);
        if n == 0 {
            return Ok(out);
        }
        if out.len() > limit {
            return Err(too_large(limit, "decodes to more"));
        }
    }
}

pub async fn forward_backward(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    fb_common(&app, &headers, &body, false)
}

/// Legacy `POST /api/v1/forward` (JSON, forward only).
pub async fn forward_legacy(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    fb_common(&app, &headers, &body, true)
}

fn fb_common(
    app: &AppRef,
    headers: &HeaderMap,
    body: &[u8],
    force_forward: bool,
) -> Result<Response, ApiError> {
    let (model_id, seq_id, loss_name, config, forward_only, data) =
        match decode_forward_backward(headers, body, app.config.max_decompressed_bytes)? {
            FbBody::Proto(r) => {
                let config = encode::proto_loss_config(&r);
                let data: Result<Vec<_>, String> =
                    encode::check_batch_proto(&r.data).and_then(|()| {
                        r.data
                            .iter()
                            .enumerate()
                            .map(|(i, d)| encode::datum_from_proto(d, i))
                            .collect()
                    });
                // proto3 writes no seq_id when it is 0; training seq_ids start at 1.
                let seq = (r.seq_id != 0).then_some(i64::from(r.seq_id));
                (r.model_id, seq, r.loss_fn, config, r.forward_only, data)
            }
            FbBody::Json(r) => {
                let input = r.forward_backward_input;
                let data: Result<Vec<_>, String> =
                    encode::check_batch_json(&input.data).and_then(|()| {
                        input
                            .data
                            .iter()
                            .enumerate()
                            .map(|(i, d)| encode::datum_from_json(d, i))
                            .collect()
                    });
                (
                    r.model_id,
                    r.seq_id,
                    input.loss_fn,
                    input.loss_fn_config.unwrap_or_default(),
                    false,
                    data,
                )
            }
        };
    let forward_only = forward_only || force_forward;
    let context = app
        .models
        .lock()
        .unwrap()
        .get(&model_id)
        .and_then(|m| app.config.context_length(&m.run.base_model));
    let too_long = |data: &[crate::model::DatumInput]| {
        let limit = context?;
        data.iter()
            .enumerate()
            .find(|(_, d)| d.tokens.len() as i64 > limit)
            .map(|(i, d)| {
                format!(
                    "datum {i}: sequence length {} exceeds the model's max context length {limit}",
                    d.tokens.len()
                )
            })
    };
    let custom = |id: &str| app.custom_losses.lock().unwrap().get(id).cloned();
    let op = match (data, encode::loss_fn(&loss_name, &config, &custom)) {
        (Ok(data), _) if data.is_empty() => TrainOp::Fail("No data provided".into()),
        (Ok(data), _) if too_long(&data).is_some() => {
            TrainOp::Fail(too_long(&data).unwrap_or_default())
        }
        (Ok(data), Ok(loss)) => TrainOp::ForwardBackward {
            data,
            loss,
            forward_only,
        },
        (Err(e), _) | (_, Err(e)) => TrainOp::Fail(e),
    };
    let kind = if forward_only {
        "Forward"
    } else {
        "ForwardBackward"
    };
    submit(app, &model_id, seq_id, kind, op)
}

pub async fn optim_step(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    // The official SDK reads the parameters under any of three names (6.4).
    let mut value: serde_json::Value = parse_json(&body)?;
    if let Some(obj) = value.as_object_mut() {
        if let Some(p) = obj.remove("optim_params") {
            let key = if p
                .get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t != "adam" && t != "adamw")
            {
                "optimizer_params"
            } else {
                "adam_params"
            };
            obj.entry(key).or_insert(p);
        }
    }
    let req: OptimStepRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid optim_step body: {e}")))?;
    let family = app
        .models
        .lock()
        .unwrap()
        .get(&req.model_id)
        .map(|m| m.run.optimizer_config.kind.clone())
        .unwrap_or_else(|| "adamw".into());
    let op = match (&req.adam_params, &req.optimizer_params) {
        (Some(_), None) if family != "adamw" => TrainOp::Fail(format!(
            "model {} was created with optimizer {family:?}; optim_step needs its parameters in optimizer_params, not adam_params",
            req.model_id
        )),
        (Some(p), None) => TrainOp::OptimStep(model::AdamParams {
            learning_rate: p.learning_rate,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            grad_clip_norm: p.grad_clip_norm,
        }),
        (None, Some(p)) => {
            let kind = p.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if kind != family {
                TrainOp::Fail(format!(
                    "optimizer_params of type {kind:?} do not match model {}'s optimizer {family:?}",
                    req.model_id
                ))
            } else {
                match serde_json::from_value::<tinkex::core::types::DimuonParams>(
                    serde_json::Value::Object(p.iter().filter(|(k, _)| *k != "type").map(|(k, v)| (k.clone(), v.clone())).collect()),
                ) {
                    Ok(d) => TrainOp::OptimDimuon(model::DimuonParams {
                        learning_rate: d.learning_rate,
                        grad_clip_norm: d.grad_clip_norm,
                        beta1: d.beta1,
                    }),
                    Err(e) => TrainOp::Fail(format!("invalid dimuon optimizer_params: {e}")),
                }
            }
        }
        (Some(_), Some(_)) => {
            TrainOp::Fail("give either adam_params or optimizer_params, not both".into())
        }
        (None, None) => TrainOp::Fail("optim_step needs adam_params or optimizer_params".into()),
    };
    submit(&app, &req.model_id, req.seq_id, "OptimStep", op)
}

/// Checks a checkpoint name is usable in a `tinker://` path.
fn checkpoint_name(name: Option<&str>) -> Result<String, String> {
    let name = name.ok_or("a checkpoint name (path) is required")?;
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "invalid checkpoint name {name:?}: it must be non-empty and contain no '/'"
        ));
    }
    Ok(name.to_string())
}

pub async fn save_weights(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: SaveWeightsRequest = parse_json(&body)?;
    if let (Some(name), false) = (&req.path, req.overwrite) {
        // A name conflict is a 409 on the request itself (PROTOCOL.md 6.5).
        let path = TinkerPath {
            training_run_id: req.model_id.clone(),
            kind: tinkex::core::types::CheckpointKind::Training,
            name: name.clone(),
        };
        if checkpoint_name(Some(name)).is_ok() && app.checkpoints.meta(&path).is_ok() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("checkpoint {path} already exists (pass overwrite=true to replace it)"),
            ));
        }
    }
    let op = match checkpoint_name(req.path.as_deref()) {
        Ok(name) => TrainOp::SaveState {
            name,
            overwrite: req.overwrite,
            ttl_seconds: req.ttl_seconds,
            user_metadata: req.user_metadata.clone(),
        },
        Err(e) => TrainOp::Fail(e),
    };
    submit(&app, &req.model_id, req.seq_id, "SaveWeights", op)
}

pub async fn save_weights_for_sampler(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SaveWeightsForSamplerRequest = parse_json(&body)?;
    let op = if req.kind != "snapshot" && req.kind != "inflight" {
        TrainOp::Fail(format!(
            "kind must be \"snapshot\" or \"inflight\", got {:?}",
            req.kind
        ))
    } else if req.path.is_none() && req.sampling_session_seq_id.is_none() {
        TrainOp::Fail(
            "save_weights_for_sampler needs a path (named save) or a sampling_session_seq_id"
                .into(),
        )
    } else {
        match req
            .path
            .as_deref()
            .map(|p| checkpoint_name(Some(p)))
            .transpose()
        {
            Ok(name) => TrainOp::SaveForSampler {
                kind: req.kind.clone(),
                name,
                sampling_session_seq_id: req.sampling_session_seq_id,
                ttl_seconds: req.ttl_seconds,
                user_metadata: req.user_metadata.clone(),
            },
            Err(e) => TrainOp::Fail(e),
        }
    };
    submit(&app, &req.model_id, req.seq_id, "SaveWeightsForSampler", op)
}

pub async fn save_weights_external(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Req {
        model_id: String,
        path: Option<String>,
        seq_id: Option<i64>,
        ttl_seconds: Option<i64>,
        age_encryption_recipients: Option<Vec<String>>,
    }
    let req: Req = parse_json(&body)?;
    let recipients = req.age_encryption_recipients.unwrap_or_default();
    let bad_recipient = recipients.iter().find(|r| {
        !(r.starts_with("age1") || r.starts_with("ssh-ed25519 ") || r.starts_with("ssh-rsa "))
    });
    let op = match checkpoint_name(req.path.as_deref()) {
        _ if recipients.len() > 10 => TrainOp::Fail(format!(
            "age_encryption_recipients takes at most 10 recipients, got {}",
            recipients.len()
        )),
        _ if bad_recipient.is_some() => TrainOp::Fail(format!(
            "age recipient {:?} is neither an age1... key nor an SSH public key",
            bad_recipient
                .map(|r| r.chars().take(16).collect::<String>())
                .unwrap_or_default()
        )),
        Ok(name) => TrainOp::SaveExternal {
            name,
            ttl_seconds: req.ttl_seconds,
            age_encryption_recipients: recipients,
        },
        Err(e) => TrainOp::Fail(e),
    };
    submit(&app, &req.model_id, req.seq_id, "SaveWeightsExternal", op)
}

pub async fn load_weights(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: LoadWeightsRequest = parse_json(&body)?;
    let path = TinkerPath::parse(&req.path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_access_token(req.weights_access_token.as_deref())?;
    if let Some(c) = &req.optimizer_config {
        if req.optimizer {
            return Err(ApiError::bad_request(
                "optimizer_config applies only to a weights-only load (optimizer: false)",
            ));
        }
        check_optimizer_config(c)?;
    }
    match (&req.model_id, &req.session_id, req.model_seq_id) {
        (Some(model_id), None, _) => {
            let op = TrainOp::Load {
                path,
                optimizer: req.optimizer,
            };
            submit(&app, model_id, req.seq_id, "LoadWeights", op)
        }
        (None, Some(session_id), Some(model_seq_id)) => {
            create_via_load(&app, &req, session_id, model_seq_id, path)
        }
        _ => Err(ApiError::bad_request(
            "load_weights needs either model_id + seq_id, or session_id + model_seq_id",
        )),
    }
}

/// `create_training_client_from_state*`: the load is the new model's request 0.
fn create_via_load(
    app: &AppRef,
    req: &LoadWeightsRequest,
    session_id: &str,
    model_seq_id: i64,
    path: TinkerPath,
) -> Result<Response, ApiError> {
    let model_id = format!("{session_id}:train:{model_seq_id}");
    if let Some(request_id) = existing_creation(app, session_id, model_seq_id)? {
        return Ok(future_response(request_id, &model_id));
    }
    let source = app.checkpoints.run(&path.training_run_id);
    let meta = app.checkpoints.meta(&path);
    let (source, _meta) = match (source, meta) {
        (Some(s), Ok(m)) => (s, m),
        _ => {
            let request_id = app.ids.next("req");
            app.futures.register_done(
                &request_id,
                "LoadWeights",
                Outcome::user_error(format!("checkpoint {path} not found")),
            );
            remember_creation(app, session_id, model_seq_id, &request_id);
            return Ok(future_response(request_id, &model_id));
        }
    };
    let base_model = req
        .base_model
        .clone()
        .unwrap_or_else(|| source.base_model.clone());
    if base_model != source.base_model {
        return Err(ApiError::bad_request(format!(
            "base_model {base_model:?} is not compatible with checkpoint {path} (trained from {:?})",
            source.base_model
        )));
    }
    let run = RunMeta {
        training_run_id: model_id.clone(),
        optimizer_config: if req.optimizer {
            source.optimizer_config.clone()
        } else {
            req.optimizer_config
                .clone()
                .unwrap_or_else(OptimizerConfig::default)
        },
        user_metadata: req.user_metadata.as_ref().map(string_map),
        created: unix_now(),
        ..source
    };
    let slot = start_model(app, &model_id, session_id, run, None, 0)?;
    let request_id = slot.submit(
        app,
        Some(0),
        "LoadWeights",
        TrainOp::Load {
            path,
            optimizer: req.optimizer,
        },
    );
    remember_creation(app, session_id, model_seq_id, &request_id);
    Ok(future_response(request_id, &model_id))
}

/// `POST /api/v1/create_custom_loss` (PROTOCOL.md 5.10): parses the graph (an unsupported op
/// fails the future with a user error naming it) and registers it under a new `loss_id`.
/// A repeated `(session_id, custom_loss_seq_id)` is the same request.
pub async fn create_custom_loss(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: tinkex::core::types::CreateCustomLossRequest = parse_json(&body)?;
    app.check_session_open(&req.session_id)?;
    let key = (req.session_id.clone(), req.custom_loss_seq_id);
    if let Some(id) = app.custom_loss_requests.lock().unwrap().get(&key) {
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"request_id": id}),
        ));
    }
    if !app.flags.client_bool("custom_loss_server_side") {
        return Err(ApiError::bad_request(
            "create_custom_loss: server-side custom losses are off (client config custom_loss_server_side is false)",
        ));
    }
    let inputs: Vec<(String, u8)> = req
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.rank))
        .collect();
    let outcome = match crate::model::graph::LossGraph::parse(&req.name, &inputs, &req.graph) {
        Ok(graph) => {
            let loss_id = app.ids.next("loss");
            app.custom_losses
                .lock()
                .unwrap()
                .insert(loss_id.clone(), std::sync::Arc::new(graph));
            Outcome::Json(serde_json::json!({"loss_id": loss_id, "type": "create_custom_loss"}))
        }
        Err(e) => Outcome::user_error(format!("create_custom_loss {:?}: {e}", req.name)),
    };
    let request_id = app.ids.next("req");
    app.futures
        .register_done(&request_id, "CreateCustomLoss", outcome);
    app.custom_loss_requests
        .lock()
        .unwrap()
        .insert(key, request_id.clone());
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"request_id": request_id}),
    ))
}
