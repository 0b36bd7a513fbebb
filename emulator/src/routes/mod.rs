//! HTTP routing: the Tinker API under `/api/v1`, plus the emulator's own `/_emulator` routes.

mod control;
mod futures;
mod rest;
mod sampling;
mod session;
mod training;

use crate::state::AppState;
use crate::util::ApiError;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
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
        .route("/create_session", post(session::create_session))
        .route("/session_heartbeat", post(session::heartbeat))
        .route("/sessions/{session_id}/finish", post(session::finish))
        .route(
            "/create_sampling_session",
            post(sampling::create_sampling_session),
        )
        .route("/samplers/{*sampler_id}", get(sampling::get_sampler))
        .route("/asample", post(sampling::asample))
        .route("/create_model", post(training::create_model))
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
        .route("/sessions", get(session::list_sessions))
        .route("/sessions/{session_id}", get(session::get_session))
        .route("/retrieve_future", post(futures::retrieve_future))
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
        .layer(middleware::from_fn(require_api_key))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::faults::apply,
        ));
    Router::new()
        .nest("/api/v1", api)
        .nest("/_emulator", control::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::faults::apply,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn not_found(req: Request<Body>) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Accepts any `X-API-Key` starting with `tml-`; otherwise 401 with a JSON body.
async fn require_api_key(req: Request<Body>, next: Next) -> Response {
    if req.uri().path().ends_with("/healthz") {
        return next.run(req).await;
    }
    match req.headers().get("x-api-key").map(|v| v.to_str()) {
        Some(Ok(key)) if key.starts_with("tml-") && key.len() > 4 => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid API key: keys start with 'tml-'",
        )
        .into_response(),
        None => ApiError::new(StatusCode::UNAUTHORIZED, "missing X-API-Key header").into_response(),
    }
}
