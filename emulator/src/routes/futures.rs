//! `retrieve_future`: long poll, then try_again; results in protobuf or JSON (PROTOCOL.md 8.1).

use super::AppRef;
use crate::encode;
use crate::futures::{FutureEntry, Outcome, PollResult};
use crate::util::{json_response, parse_json, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tinkex::core::types::{FutureRetrieveRequest, TryAgainResponse};

pub async fn retrieve_future(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: FutureRetrieveRequest = parse_json(&body)?;
    *app.polls
        .lock()
        .unwrap()
        .entry(req.request_id.clone())
        .or_default() += 1;
    let wants_proto = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-protobuf"));
    match app
        .futures
        .poll(&req.request_id, app.config.poll_hold)
        .await
    {
        PollResult::Unknown => Err(ApiError::new(
            StatusCode::GONE,
            format!("future {} not found or expired", req.request_id),
        )),
        PollResult::Pending => {
            let (state, reason) = app.futures.queue_state();
            Ok(json_response(
                StatusCode::OK,
                &TryAgainResponse {
                    kind: "try_again".into(),
                    request_id: req.request_id,
                    queue_state: Some(state),
                    queue_state_reason: reason,
                },
            ))
        }
        PollResult::Done(entry, outcome) => Ok(render(
            &app,
            &entry,
            &outcome,
            wants_proto,
            req.allow_metadata_only,
        )),
    }
}

fn render(
    app: &AppRef,
    entry: &FutureEntry,
    outcome: &Outcome,
    wants_proto: bool,
    allow_metadata_only: bool,
) -> Response {
    let (proto_bytes, json_body) = match outcome {
        Outcome::Failed { error, category } => {
            return json_response(
                StatusCode::OK,
                &json!({"error": error, "category": category}),
            )
        }
        Outcome::Json(v) => return json_response(StatusCode::OK, v),
        Outcome::ForwardBackward { outputs, metrics } if wants_proto => {
            (Some(encode::forward_backward_proto(outputs, metrics)), None)
        }
        Outcome::ForwardBackward { outputs, metrics } => {
            (None, Some(encode::forward_backward_json(outputs, metrics)))
        }
        Outcome::Sample(s) if wants_proto => (Some(encode::sample_proto(s)), None),
        Outcome::Sample(s) => (None, Some(encode::sample_json(s))),
    };
    let body = match (proto_bytes, json_body) {
        (Some(b), _) => b,
        (None, Some(v)) => serde_json::to_vec(&v).expect("result serializes"),
        (None, None) => unreachable!("one encoding is chosen"),
    };
    if allow_metadata_only && body.len() > app.config.inline_result_limit {
        let mut announced = entry.metadata_announced.lock().unwrap();
        if !*announced {
            *announced = true;
            return json_response(
                StatusCode::OK,
                &json!({"status": "complete_metadata", "response_payload_size": body.len()}),
            );
        }
    }
    let content_type = if wants_proto {
        "application/x-protobuf"
    } else {
        "application/json"
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `retrieve_futures` (PROTOCOL.md 8.2): the completion events of one sampling session and
/// clone after `prev_cursor` (earlier ones are trimmed), long-polled up to the emulator's
/// poll hold (or the request's `timeout`, if shorter; `0` answers at once: an ack-only
/// poll). The payloads of `retrieved_request_ids` belonging to the target are deleted (later
/// `retrieve_future` polls of them answer 410).
pub async fn retrieve_futures(
    State(app): State<AppRef>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use tinkex::core::futures_poller::FuturesRetrieveRequest;
    let req: FuturesRetrieveRequest = parse_json(&body)?;
    if let Ok(v) = serde_json::from_slice(&body) {
        app.futures.note_poller_request(v);
    }
    if req.target.kind != "sampling_session" {
        return Err(ApiError::bad_request(format!(
            "target.type must be \"sampling_session\", got {:?}",
            req.target.kind
        )));
    }
    let sampler = app.sampler(&req.target.sampling_session_id)?;
    if req.prev_cursor < 0 || req.target.cloned_sampler_id < 0 {
        return Err(ApiError::bad_request(
            "prev_cursor and cloned_sampler_id must not be negative",
        ));
    }
    let prefix = format!("{}:", sampler.id);
    for id in &req.retrieved_request_ids {
        if id.starts_with(&prefix) {
            app.futures.forget(id);
        }
    }
    let hold = match req.timeout {
        Some(t) if t.is_finite() && t <= 0.0 => std::time::Duration::ZERO,
        Some(t) if t.is_finite() => app
            .config
            .poll_hold
            .min(std::time::Duration::from_secs_f64(t.min(3600.0))),
        _ => app.config.poll_hold,
    };
    let log = app
        .futures
        .completion_log(&(sampler.id.clone(), req.target.cloned_sampler_id));
    log.polled.store(true, std::sync::atomic::Ordering::Relaxed);
    let (completions, cursor) = log.wait_after(req.prev_cursor, hold).await;
    Ok(json_response(
        StatusCode::OK,
        &json!({"completions": completions, "cursor": cursor}),
    ))
}

/// `cancel_future` (PROTOCOL.md 8.3): a pending future finishes as failed ("cancelled",
/// category `user`; a `failed` completion event for `retrieve_futures`) and its work's result
/// is discarded. A finished future is left alone. Unknown ids answer 404.
pub async fn cancel_future(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct CancelBody {
        request_id: String,
    }
    let req: CancelBody = parse_json(&body)?;
    match app.futures.cancel(&req.request_id) {
        crate::futures::CancelResult::Unknown => Err(ApiError::not_found(format!(
            "future {} not found",
            req.request_id
        ))),
        crate::futures::CancelResult::Cancelled => Ok(json_response(
            StatusCode::OK,
            &json!({"request_id": req.request_id, "cancelled": true}),
        )),
        crate::futures::CancelResult::AlreadyDone => Ok(json_response(
            StatusCode::OK,
            &json!({"request_id": req.request_id, "cancelled": false}),
        )),
    }
}

/// `GET /_emulator/retrieve_futures`: the `retrieve_futures` request bodies received (newest
/// 10,000) and how many pending futures `cancel_future` cancelled.
pub async fn poller_log(State(app): State<AppRef>) -> Response {
    let requests: Vec<_> = app
        .futures
        .poller_requests
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"requests": requests, "cancelled": app.futures.cancelled_count()}),
    )
}
