//! HTTP routing: the Tinker API under `/api/v1`, plus the emulator's own `/_emulator` routes.

mod admin;
mod control;
mod futures;
mod rest;
mod sampling;
mod session;
mod sessions;
mod training;
mod weights_export;

use crate::state::AppState;
use crate::util::ApiError;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Shared state as handlers see it.
pub type AppRef = Arc<AppState>;

/// Builds the router.
pub fn router(app: AppRef) -> Router {
    let limit = app.config.max_body_bytes;
    let api = Router::new()
        .route("/healthz", get(session::healthz))
        .route("/get_server_capabilities", get(session::capabilities))
        .route("/client/config", post(session::client_config))
        .route("/client/dynamic_config", post(session::dynamic_config))
        .route("/auth/token", post(crate::auth::auth_token))
        .route("/create_session", post(session::create_session))
        .route("/session_heartbeat", post(session::heartbeat))
        .route("/sessions/{session_id}/finish", post(session::finish))
        .route(
            "/create_sampling_session",
            post(sampling::create_sampling_session),
        )
        .route(
            "/join_sampling_session",
            post(session::join_sampling_session),
        )
        .route("/samplers/{*sampler_id}", get(sampling::get_sampler))
        .route("/asample", post(sampling::asample))
        .route("/create_model", post(training::create_model))
        .route("/create_custom_loss", post(training::create_custom_loss))
        .route("/get_info", post(training::get_info))
        .route("/forward_backward", post(training::forward_backward))
        .route("/forward", post(training::forward_legacy))
        .route("/optim_step", post(training::optim_step))
        .route("/save_weights", post(training::save_weights))
        .route(
            "/save_weights_for_sampler",
            post(training::save_weights_for_sampler),
        )
        .route("/load_weights", post(training::load_weights))
        .route(
            "/save_weights_external",
            post(training::save_weights_external),
        )
        .route("/sessions", get(sessions::list_sessions))
        .route("/sessions/search", post(sessions::search))
        .route("/sessions/{session_id}", get(sessions::get_session))
        .route(
            "/sessions/{session_id}/project",
            axum::routing::put(sessions::assign_project),
        )
        .route(
            "/sessions/{session_id}/trace_export",
            get(sessions::trace_export),
        )
        .route("/copy_weights", post(weights_export::copy_weights))
        .route("/audit", get(admin::audit))
        .route("/billing/usage/events", get(admin::billing_usage))
        .route(
            "/billing/usage/checkpoints/current",
            get(admin::storage_usage),
        )
        .route(
            "/auth/apikey/me",
            get(admin::apikey_me).delete(admin::apikey_delete),
        )
        .route("/retrieve_future", post(futures::retrieve_future))
        .route("/retrieve_futures", post(futures::retrieve_futures))
        .route("/cancel_future", post(futures::cancel_future))
        .route("/telemetry", post(session::telemetry))
        .route("/weights_info", post(rest::weights_info))
        .route("/training_runs", get(rest::training_runs))
        .route("/training_runs/{run_id}", get(rest::training_run))
        .route(
            "/training_runs/{run_id}/checkpoints",
            get(rest::run_checkpoints),
        )
        .route(
            "/training_runs/{run_id}/checkpoints/{*rest}",
            get(rest::checkpoint_get)
                .delete(rest::checkpoint_delete)
                .post(rest::checkpoint_post)
                .put(rest::checkpoint_put),
        )
        .route("/checkpoints", get(rest::all_checkpoints))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), json_errors))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::auth::require_credential,
        ));
    // Faults, request counts and the journal: once per request, on the full path (the outer
    // layer below). A second layer here would see the path without `/api/v1` and apply
    // every probabilistic rule twice.
    Router::new()
        .nest("/api/v1", api)
        .route("/_signed/{*path}", get(crate::signed_urls::serve))
        .nest(
            "/_emulator",
            control::router()
                .merge(crate::auth::control_routes())
                .layer(middleware::from_fn_with_state(app.clone(), json_errors))
                .layer(middleware::from_fn_with_state(app.clone(), require_control)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::faults::apply,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// The `/_emulator` control routes alone, for in-process calls
/// ([`crate::RunningEmulator::control`]): no listener, no fault middleware and no control
/// token (the caller holds the emulator itself), so an outage or fault rule the caller
/// injected can never break them.
pub fn control_router(app: AppRef) -> Router {
    control::router()
        .merge(crate::auth::control_routes())
        .layer(middleware::from_fn_with_state(app.clone(), json_errors))
        .with_state(app)
}

async fn not_found(req: Request<Body>) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Guards the `/_emulator` control routes (see [`crate::EmulatorConfig::control_access`]).
async fn require_control(State(app): State<AppRef>, req: Request<Body>, next: Next) -> Response {
    use crate::config::{ControlDenied, CONTROL_TOKEN_HEADER};
    let given = req
        .headers()
        .get(CONTROL_TOKEN_HEADER)
        .map(|v| v.as_bytes());
    match app.config.control_access(given) {
        Ok(()) => next.run(req).await,
        Err(ControlDenied::MissingToken) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("missing {CONTROL_TOKEN_HEADER} header (the emulator has a control token)"),
        )
        .into_response(),
        Err(ControlDenied::WrongToken) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("wrong {CONTROL_TOKEN_HEADER}"),
        )
        .into_response(),
        Err(ControlDenied::NotLoopback) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the /_emulator control routes are disabled: the emulator listens on {}, \
                 not a loopback address, and has no control token \
                 (--control-token or TINKEX_EMULATOR_CONTROL_TOKEN)",
                app.config.host
            ),
        )
        .into_response(),
    }
}

/// Longest error text kept from a framework-generated answer.
const MAX_ERROR_TEXT: usize = 4096;

/// Gives framework-generated errors (an over-long body, a bad query string or path, a wrong
/// method) the JSON `{"detail": …}` body every other error has (PROTOCOL.md 17.15).
async fn json_errors(State(app): State<AppRef>, req: Request<Body>, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if resp.status().as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let detail = if parts.status == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "request body too large: the limit is {} bytes (--max-body-bytes)",
            app.config.max_body_bytes
        )
    } else {
        let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        if text.is_empty() {
            parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string()
        } else {
            text
        }
    };
    let mut out = ApiError::new(parts.status, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
