//! Sampling endpoints (PROTOCOL.md 5.8, 7.1, 7.2).

use super::AppRef;
use crate::model::TinyModel;
use crate::util::{json_response, parse_json, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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

pub async fn asample(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: SampleRequest = parse_json(&body)?;
    let id = req.sampling_session_id.as_deref().ok_or_else(|| {
        ApiError::bad_request("asample needs sampling_session_id (legacy base_model/model_path addressing is not supported)")
    })?;
    let slot = app.sampler(id)?;
    app.check_session_open(&slot.session_id)?;
    // Limits are checked before the sequence ids (one per sample) are made.
    crate::sampling::check_limits(&req, &app.config).map_err(ApiError::bad_request)?;
    let (request_id, ids) = slot.submit(&app, &req);
    Ok(json_response(
        StatusCode::OK,
        &UntypedApiFuture {
            request_id,
            model_id: None,
            sample_sequence_ids: Some(ids),
        },
    ))
}
