//! Service, configuration, session and telemetry endpoints (PROTOCOL.md 5, 16).

use super::AppRef;
use crate::util::{json_response, parse_json, unix_now, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tinkex::core::types::{
    CreateSessionRequest, CreateSessionResponse, FinishSessionRequest, ServerCapabilities,
    SessionHeartbeatRequest, SupportedModel,
};

pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn capabilities(State(app): State<AppRef>) -> Response {
    let supported_models = app
        .config
        .base_models
        .iter()
        .map(|(name, ctx)| SupportedModel {
            model_name: Some(name.clone()),
            max_context_length: Some(*ctx),
            trainable: Some(true),
            sampleable: Some(true),
        })
        .collect();
    json_response(StatusCode::OK, &ServerCapabilities { supported_models })
}

/// Startup flags: the official defaults, with JWT auth off (the emulator takes API keys).
/// The configured `client/config` flags (see [`crate::flags`]).
pub async fn client_config(State(app): State<AppRef>) -> Response {
    json_response(StatusCode::OK, &app.flags.client_config())
}

/// The configured `client/dynamic_config` flags.
pub async fn dynamic_config(State(app): State<AppRef>) -> Response {
    json_response(StatusCode::OK, &app.flags.dynamic_config())
}

pub async fn create_session(
    State(app): State<AppRef>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateSessionRequest = parse_json(&body)?;
    super::sessions::check_create(&app, &headers, &body)?;
    let session_id = app.create_session(req.tags, req.user_metadata);
    super::sessions::on_create(&app, &session_id, &headers, &body);
    Ok(json_response(
        StatusCode::OK,
        &CreateSessionResponse {
            session_id,
            kind: "create_session".into(),
            info_message: None,
            warning_message: None,
            error_message: None,
        },
    ))
}

/// 410 once the session has finished; 404 for an unknown session.
pub async fn heartbeat(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: SessionHeartbeatRequest = parse_json(&body)?;
    let mut sessions = app.sessions.lock().unwrap();
    let s = sessions
        .get_mut(&req.session_id)
        .ok_or_else(|| ApiError::not_found(format!("session {} not found", req.session_id)))?;
    if s.finished.is_some() {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("session {} has finished", req.session_id),
        ));
    }
    s.last_heartbeat = unix_now();
    s.heartbeats += 1;
    Ok(json_response(
        StatusCode::OK,
        &json!({"type": "session_heartbeat"}),
    ))
}

/// First finish reason wins.
pub async fn finish(
    State(app): State<AppRef>,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: FinishSessionRequest = parse_json(&body)?;
    let mut sessions = app.sessions.lock().unwrap();
    let s = sessions
        .get_mut(&session_id)
        .ok_or_else(|| ApiError::not_found(format!("session {session_id} not found")))?;
    if s.finished.is_none() {
        s.finished = Some((req.reason.kind, req.detail));
    }
    drop(sessions);
    app.persist_session(&session_id);
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// Records the batch (keeping the newest [`crate::state::MAX_TELEMETRY_BATCHES`]); always answers `{"status": "accepted"}` for a well-formed batch.
pub async fn telemetry(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let batch: serde_json::Value = parse_json(&body)?;
    if !batch.get("events").is_some_and(|e| e.is_array()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "telemetry batch needs an \"events\" array",
        ));
    }
    let mut kept = app.telemetry.lock().unwrap();
    if kept.len() >= crate::state::MAX_TELEMETRY_BATCHES {
        // Keep the newest batches: memory stays bounded however long a client runs.
        let excess = kept.len() + 1 - crate::state::MAX_TELEMETRY_BATCHES;
        kept.drain(..excess);
    }
    kept.push(batch);
    drop(kept);
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "accepted"}),
    ))
}

/// `POST /api/v1/join_sampling_session` (5.9): a `client_counter` unique among the sampling
/// session's clients (the original is 0, joins get 1, 2, …). 404 for an unknown sampling
/// session; the owning session must be open.
pub async fn join_sampling_session(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: tinkex::core::types::JoinSamplingSessionRequest = parse_json(&body)?;
    let slot = app.sampler(&req.sampling_session_id)?;
    app.check_session_open(&slot.session_id)?;
    Ok(json_response(
        StatusCode::OK,
        &tinkex::core::types::JoinSamplingSessionResponse {
            client_counter: slot.join(),
            kind: "join_sampling_session".into(),
        },
    ))
}
