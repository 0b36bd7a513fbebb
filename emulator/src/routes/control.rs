//! The emulator's own control and introspection API under `/_emulator` (not part of Tinker).

use super::AppRef;
use crate::util::{json_response, parse_json, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tinkex::core::types::QueueState;

/// Routes under `/_emulator`.
pub fn router() -> Router<AppRef> {
    Router::new()
        .route("/models/{*model_id}", get(model_stats))
        .route("/sessions", get(sessions))
        .route("/telemetry", get(telemetry))
        .route("/futures", get(futures))
        .route("/queue_state", post(set_queue_state))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/polls", get(polls))
        .route("/requests", get(requests))
        .route("/outage", post(outage))
        .route("/delays", post(delays))
        .route("/flags", get(flags).post(set_flags))
        .route("/journal", get(journal).delete(clear_journal))
        .route("/retrieve_futures", get(super::futures::poller_log))
        .route("/clock", get(super::admin::clock).post(super::admin::clock))
        .route(
            "/projects",
            get(super::admin::projects).post(super::admin::projects),
        )
        .route("/trace_export", post(super::sessions::set_export))
        .route("/signed_downloads", get(crate::signed_urls::downloads))
        .route(
            "/sampling_capacity",
            get(super::sampling::capacity_stats).post(super::sampling::set_capacity),
        )
}

/// The current `client/config` and `client/dynamic_config` answers.
async fn flags(State(app): State<AppRef>) -> Response {
    json_response(StatusCode::OK, &app.flags.snapshot())
}

/// Changes flags: `{"client_config": {"sample_use_retrieve_futures": true}, "dynamic_config":
/// {...}}`; a `null` value restores the client's default (the flag is no longer sent).
/// Answers the new flags.
async fn set_flags(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let body: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
    app.flags
        .update(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(json_response(StatusCode::OK, &app.flags.snapshot()))
}

/// Every API request received, in order: method, path, idempotency key, retry count,
/// content encoding, `x-sdk-method` and the answer's status (0: connection broken).
async fn journal(State(app): State<AppRef>) -> Response {
    let entries: Vec<_> = app.journal.lock().unwrap().iter().cloned().collect();
    json_response(StatusCode::OK, &json!({ "journal": entries }))
}

async fn clear_journal(State(app): State<AppRef>) -> Response {
    app.journal.lock().unwrap().clear();
    json_response(StatusCode::OK, &json!({}))
}

/// Installs a fault rule (JSON [`crate::faults::FaultRule`]); answers `{"id": n}`.
async fn add_fault(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let rule: crate::faults::FaultRule = parse_json(&body)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "id": app.faults.add(rule) }),
    ))
}

async fn list_faults(State(app): State<AppRef>) -> Response {
    json_response(StatusCode::OK, &json!({ "faults": app.faults.list() }))
}

async fn clear_faults(State(app): State<AppRef>) -> Response {
    app.faults.clear();
    json_response(StatusCode::OK, &json!({}))
}

#[derive(Deserialize)]
struct OutageBody {
    duration_ms: u64,
}

/// Starts an outage of `duration_ms` (0 ends one in progress).
async fn outage(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let body: OutageBody = parse_json(&body)?;
    if body.duration_ms == 0 {
        app.outage.end();
    } else {
        app.outage
            .start(std::time::Duration::from_millis(body.duration_ms));
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// Sets server-side operation durations: `{"SaveWeights": 60000, "OptimStep": null}` (ms; null removes).
async fn delays(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let body: std::collections::HashMap<String, Option<u64>> = parse_json(&body)?;
    let mut delays = app.op_delays.lock().unwrap();
    for (kind, ms) in body {
        match ms {
            Some(ms) => delays.insert(kind, std::time::Duration::from_millis(ms)),
            None => delays.remove(&kind),
        };
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// Requests received per path (including those answered by fault rules).
async fn requests(State(app): State<AppRef>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "requests": *app.requests.lock().unwrap() }),
    )
}

/// retrieve_future polls that reached the handler, by request id.
async fn polls(State(app): State<AppRef>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "polls": *app.polls.lock().unwrap() }),
    )
}

/// Optimizer steps, next seq_id, buffered and skipped requests of one model.
async fn model_stats(
    State(app): State<AppRef>,
    Path(model_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &app.model(&model_id)?.stats(),
    ))
}

async fn sessions(State(app): State<AppRef>) -> Response {
    let sessions: Vec<_> = app
        .sessions
        .lock()
        .unwrap()
        .values()
        .map(|s| {
            json!({
                "session_id": s.session_id,
                "tags": s.tags,
                "user_metadata": s.user_metadata,
                "heartbeats": s.heartbeats,
                "last_heartbeat": s.last_heartbeat,
                "created": s.created,
                "finished": s.finished.as_ref().map(|(k, d)| json!({"type": k, "detail": d})),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "sessions": sessions }))
}

async fn telemetry(State(app): State<AppRef>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "batches": *app.telemetry.lock().unwrap() }),
    )
}

async fn futures(State(app): State<AppRef>) -> Response {
    let (total, pending) = app.futures.counts();
    json_response(
        StatusCode::OK,
        &json!({ "total": total, "pending": pending }),
    )
}

#[derive(Deserialize)]
struct QueueStateBody {
    queue_state: Option<QueueState>,
    #[serde(default)]
    reason: Option<String>,
}

/// Forces the queue state of try-again answers; `{"queue_state": null}` restores `active`.
async fn set_queue_state(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let body: QueueStateBody = parse_json(&body)?;
    app.futures
        .set_queue_state(body.queue_state.map(|s| (s, body.reason)));
    Ok(json_response(StatusCode::OK, &json!({})))
}
