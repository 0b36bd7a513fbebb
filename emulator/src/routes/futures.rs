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
