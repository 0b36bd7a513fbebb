//! `POST /api/v1/copy_weights` (PROTOCOL.md 6.9): a copy of a checkpoint (either kind) into a
//! new, untrainable training run, by reference (hard links, no bytes duplicated).
//!
//! * destination: `destination_project_id`, or `session_id` + `model_seq_id` (the run is then
//!   `{session_id}:train:{model_seq_id}` and inherits the session's project); neither → 400;
//! * `ttl_seconds` 3600 … 10 years (400 outside); the source's expiry is not inherited;
//! * 404: unknown source, or one the caller may not read (not theirs, not public, not in an
//!   accessible project), or an unknown/foreign session; 403: a project the caller may not
//!   use; 409: the destination run already exists;
//! * `X-Idempotency-Key`: the same key (per caller) answers the same copy without copying
//!   again.

use super::rest::{check_ttl, run_visible, store_error};
use super::AppRef;
use crate::auth::Identity;
use crate::checkpoints::RunMeta;
use crate::sessions::{Denied, RunInfo, Scope, MAX_NAME};
use crate::util::{json_response, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use tinkex::core::types::TinkerPath;

fn text_field(v: &Value, k: &str) -> Result<Option<String>, ApiError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME * 4 => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "{k} must be a non-empty string of at most {} bytes",
            MAX_NAME * 4
        ))),
    }
}

/// The handler.
pub async fn copy_weights(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let key = headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= MAX_NAME)
        .map(str::to_string);
    if let Some(path) = key
        .as_ref()
        .and_then(|k| app.registry.copy_for_key(&who.user_urn, k))
    {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "tinker_path": path }),
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let source = text_field(&v, "source_path")?
        .ok_or_else(|| ApiError::bad_request("source_path is required"))?;
    let source = TinkerPath::parse(&source).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ttl = match v.get("ttl_seconds") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_i64()
                .ok_or_else(|| ApiError::bad_request("ttl_seconds must be an integer"))?,
        ),
    };
    check_ttl(ttl)?;
    let project = text_field(&v, "destination_project_id")?;
    let session = text_field(&v, "session_id")?;
    let model_seq =
        match v.get("model_seq_id") {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request("model_seq_id must be a non-negative integer")
            })?),
        };
    let meta = app.checkpoints.meta(&source).map_err(store_error)?;
    if !meta.checkpoint.public
        && !run_visible(&app, &source.training_run_id, &who, Scope::Accessible)
    {
        return Err(ApiError::not_found(format!(
            "checkpoint {source} not found"
        )));
    }
    let src_run = app
        .checkpoints
        .run(&source.training_run_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("training run {} not found", source.training_run_id))
        })?;
    let (run_id, project) = match (session, model_seq, project) {
        (Some(s), Some(n), _) => {
            let info = app.registry.session(&s);
            let exists = app.sessions.lock().unwrap().contains_key(&s);
            if !exists || info.as_ref().is_some_and(|i| i.owner != who.user_urn) {
                return Err(ApiError::not_found(format!("session {s} not found")));
            }
            (format!("{s}:train:{n}"), info.and_then(|i| i.project_id))
        }
        (None, None, Some(p)) => {
            if !app.registry.can_use_project(&who.user_urn, &p) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("no access to project {p:?}"),
                ));
            }
            (format!("copy-{}", app.ids.uuid()), Some(p))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give destination_project_id, or both session_id and model_seq_id",
            ))
        }
    };
    if app.checkpoints.run(&run_id).is_some() || app.models.lock().unwrap().contains_key(&run_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("training run {run_id} already exists"),
        ));
    }
    if let Some(p) = &project {
        // Creates the project on first use (owned by the caller).
        app.registry
            .claim_project(&who.user_urn, p, app.checkpoints.now())
            .map_err(|e| match e {
                Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
                Denied::Invalid(m) => ApiError::bad_request(m),
            })?;
    }
    let dest = TinkerPath {
        training_run_id: run_id.clone(),
        kind: source.kind,
        name: source.name.clone(),
    };
    app.checkpoints
        .save_run(&RunMeta {
            training_run_id: run_id.clone(),
            created: app.checkpoints.now(),
            user_metadata: None,
            ..src_run
        })
        .map_err(store_error)?;
    app.registry.add_run(
        &run_id,
        RunInfo {
            owner: who.user_urn.clone(),
            project_id: project,
        },
    );
    app.checkpoints
        .copy(&source, &dest, ttl)
        .map_err(store_error)?;
    if let Some(k) = key {
        app.registry
            .remember_copy(&who.user_urn, &k, &dest.to_string());
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "tinker_path": dest.to_string() }),
    ))
}
