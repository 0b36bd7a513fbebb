//! Sampling endpoints (PROTOCOL.md 5.8, 7.1, 7.2).

use super::AppRef;
use crate::model::TinyModel;
use crate::sampling::{Admission, CapacitySettings};
use crate::util::{json_response, parse_json, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::sync::Arc;
use tinkex::core::types::{
    CreateSamplingSessionRequest, CreateSamplingSessionResponse, GetSamplerResponse, SampleRequest,
    TinkerPath, UntypedApiFuture,
};

pub async fn create_sampling_session(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateSamplingSessionRequest = parse_json(&body)?;
    app.check_session_open(&req.session_id)?;
    let (base_model, model) = match (&req.model_path, &req.base_model) {
        (Some(path), _) => {
            let path = TinkerPath::parse(path).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let (_, bytes) = app
                .checkpoints
                .load(&path)
                .map_err(|e| ApiError::not_found(e.to_string()))?;
            let model = TinyModel::from_bytes(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("checkpoint {path} is corrupt: {e}"),
                )
            })?;
            if let Some(b) = &req.base_model {
                if b != &model.config().base_model {
                    return Err(ApiError::bad_request(format!(
                        "base_model {b:?} does not match checkpoint {path} (trained from {:?})",
                        model.config().base_model
                    )));
                }
            }
            (model.config().base_model.clone(), Arc::new(model))
        }
        (None, Some(base)) => {
            if app.config.context_length(base).is_none() {
                return Err(ApiError::bad_request(format!(
                    "base model {base:?} is not supported"
                )));
            }
            (base.clone(), app.base_model(base))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "create_sampling_session needs base_model or model_path",
            ))
        }
    };
    let id = app.create_sampler(
        &req.session_id,
        req.sampling_session_seq_id,
        base_model,
        req.model_path.clone(),
        model,
    );
    Ok(json_response(
        StatusCode::OK,
        &CreateSamplingSessionResponse {
            sampling_session_id: id,
            kind: "create_sampling_session".into(),
        },
    ))
}

pub async fn get_sampler(
    State(app): State<AppRef>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let slot = app.sampler(&id)?;
    Ok(json_response(
        StatusCode::OK,
        &GetSamplerResponse {
            sampler_id: slot.id.clone(),
            base_model: slot.base_model.clone(),
            model_path: slot.model_path.clone(),
        },
    ))
}

pub async fn asample(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let _in_handler = app.sampling_capacity.enter(&key).await;
    let mut req: SampleRequest = parse_json(&body)?;
    let control = app.sampling_capacity.settings();
    if control.ignore_prompt_logprobs_last_n {
        req.prompt_logprobs_last_n = None;
    }
    let id = req.sampling_session_id.as_deref().ok_or_else(|| {
        ApiError::bad_request("asample needs sampling_session_id (legacy base_model/model_path addressing is not supported)")
    })?;
    let slot = app.sampler(id)?;
    app.check_session_open(&slot.session_id)?;
    // Limits are checked before the sequence ids (one per sample) are made.
    crate::sampling::check_limits(&req, &app.config).map_err(ApiError::bad_request)?;
    // A resend of a submitted seq_id is the same request: no new capacity is taken.
    let capacity = if slot.is_submitted(req.seq_id) {
        None
    } else {
        match app.sampling_capacity.admit(&key) {
            Admission::Accepted(c) => Some(c),
            Admission::Rejected(retry_after) => {
                app.sampling_capacity.record(&key, &req, 429);
                let mut resp = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &serde_json::json!({
                        "detail": "sampling capacity of this API key exceeded; back off"
                    }),
                );
                if let Some(ra) = retry_after {
                    if let Ok(v) = HeaderValue::from_str(&ra.to_string()) {
                        resp.headers_mut().insert("retry-after", v);
                    }
                }
                return Ok(resp);
            }
        }
    };
    let (request_id, ids) = slot.submit(&app, &req, capacity);
    app.sampling_capacity.record(&key, &req, 200);
    Ok(json_response(
        StatusCode::OK,
        &UntypedApiFuture {
            request_id,
            model_id: None,
            sample_sequence_ids: (!control.omit_sample_sequence_ids).then_some(ids),
        },
    ))
}

/// `GET /_emulator/sampling_capacity`: the settings and, per API-key fingerprint
/// ([`crate::sampling::key_fingerprint`]), what was seen: samples running and their maximum,
/// concurrent `asample` requests and their maximum, accepted and rejected (429) counts; and
/// every `asample` that reached the handler (`arrivals`: time, key fingerprint, sampling
/// session, `seq_id`, status).
pub async fn capacity_stats(State(app): State<AppRef>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "settings": app.sampling_capacity.settings(),
            "keys": app.sampling_capacity.stats(),
            "arrivals": app.sampling_capacity.arrivals(),
        }),
    )
}

/// `POST /_emulator/sampling_capacity`: sets [`CapacitySettings`] (`{"per_key": 2,
/// "retry_after_secs": 0.2, "sample_hold_ms": 300, "asample_latency_ms": 0}`) and resets the
/// maxima and counters.
pub async fn set_capacity(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let settings: CapacitySettings = parse_json(&body)?;
    app.sampling_capacity.configure(settings);
    app.sampling_capacity.reset_stats();
    Ok(capacity_stats(State(app)).await)
}
