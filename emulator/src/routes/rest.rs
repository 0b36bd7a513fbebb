//! REST management endpoints: training runs, checkpoints, weights info (PROTOCOL.md section 9).

use super::AppRef;
use crate::checkpoints::{CheckpointMeta, RunMeta, StoreError};
use crate::util::{json_response, parse_json, rfc3339, unix_now, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tinkex::core::types::{
    CheckpointKind, CheckpointsListResponse, Cursor, TinkerPath, TrainingRun, TrainingRunsResponse,
    WeightsInfoRequest, WeightsInfoResponse,
};

/// Pagination query.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

const OWNER: &str = "tml:organization_user:tinkex-emulator";
const TEN_YEARS: i64 = 10 * 365 * 24 * 3600;

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
        StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        StoreError::InvalidName(_) => ApiError::bad_request(e.to_string()),
        StoreError::Io(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn describe_run(app: &AppRef, run: RunMeta) -> TrainingRun {
    let checkpoints = app.checkpoints.list_run(&run.training_run_id);
    let latest = |kind: &str| {
        checkpoints
            .iter()
            .rev()
            .find(|c| c.checkpoint.checkpoint_type == kind)
            .map(|c| c.checkpoint.clone())
    };
    let last_request = app
        .models
        .lock()
        .unwrap()
        .get(&run.training_run_id)
        .map(|m| m.last_request_time())
        .unwrap_or(run.created);
    TrainingRun {
        training_run_id: run.training_run_id.clone(),
        base_model: run.base_model.clone(),
        model_owner: OWNER.into(),
        is_lora: true,
        corrupted: false,
        lora_rank: Some(run.lora_rank),
        last_request_time: rfc3339(last_request),
        last_checkpoint: latest("training"),
        last_sampler_checkpoint: latest("sampler"),
        user_metadata: run.user_metadata,
    }
}

/// Largest page a list endpoint answers.
const MAX_PAGE: i64 = 10_000;

fn page<T: Clone>(
    items: &[T],
    page: &Page,
    default_limit: i64,
) -> Result<(Vec<T>, Cursor), ApiError> {
    let limit = page.limit.unwrap_or(default_limit);
    if !(0..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be in 0..={MAX_PAGE}, got {limit}"
        )));
    }
    let offset = page.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request(format!(
            "offset must not be negative, got {offset}"
        )));
    }
    let slice = items
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .cloned()
        .collect();
    Ok((
        slice,
        Cursor {
            offset,
            limit,
            total_count: items.len() as i64,
        },
    ))
}

pub async fn training_runs(
    State(app): State<AppRef>,
    Query(q): Query<Page>,
) -> Result<Response, ApiError> {
    let mut runs = app.checkpoints.runs();
    runs.reverse();
    let (runs, cursor) = page(&runs, &q, 20)?;
    let training_runs = runs.into_iter().map(|r| describe_run(&app, r)).collect();
    Ok(json_response(
        StatusCode::OK,
        &TrainingRunsResponse {
            training_runs,
            cursor,
        },
    ))
}

pub async fn training_run(
    State(app): State<AppRef>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let run = app
        .checkpoints
        .run(&run_id)
        .ok_or_else(|| ApiError::not_found(format!("training run {run_id} not found")))?;
    Ok(json_response(StatusCode::OK, &describe_run(&app, run)))
}

pub async fn run_checkpoints(
    State(app): State<AppRef>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    if app.checkpoints.run(&run_id).is_none() {
        return Err(ApiError::not_found(format!(
            "training run {run_id} not found"
        )));
    }
    let checkpoints = app
        .checkpoints
        .list_run(&run_id)
        .into_iter()
        .map(|c| c.checkpoint)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &CheckpointsListResponse {
            checkpoints,
            cursor: None,
        },
    ))
}

pub async fn all_checkpoints(
    State(app): State<AppRef>,
    Query(q): Query<Page>,
) -> Result<Response, ApiError> {
    let all: Vec<CheckpointMeta> = app.checkpoints.list_all();
    let (items, cursor) = page(&all, &q, 100)?;
    let checkpoints = items.into_iter().map(|c| c.checkpoint).collect();
    Ok(json_response(
        StatusCode::OK,
        &CheckpointsListResponse {
            checkpoints,
            cursor: Some(cursor),
        },
    ))
}

/// Splits `{kind}/{name}[/{suffix}]` (checkpoint ids embed a `/`, PROTOCOL.md 1.2).
fn checkpoint_target(run_id: &str, rest: &str) -> Result<(TinkerPath, Option<String>), ApiError> {
    let mut parts = rest.splitn(3, '/');
    let (kind, name, suffix) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let kind = CheckpointKind::from_segment(kind)
        .ok_or_else(|| ApiError::bad_request(format!("invalid checkpoint id {rest:?}")))?;
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "invalid checkpoint id {rest:?}"
        )));
    }
    let path = TinkerPath {
        training_run_id: run_id.to_string(),
        kind,
        name: name.to_string(),
    };
    Ok((path, suffix.map(str::to_string)))
}

pub async fn checkpoint_delete(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    match suffix.as_deref() {
        None => app.checkpoints.delete(&path).map_err(store_error)?,
        Some("publish") => set_public(&app, &path, false)?,
        Some(other) => {
            return Err(ApiError::not_found(format!(
                "unknown checkpoint action {other:?}"
            )))
        }
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

pub async fn checkpoint_post(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    match suffix.as_deref() {
        Some("publish") => set_public(&app, &path, true)?,
        _ => {
            return Err(ApiError::not_found(format!(
                "no POST route for checkpoint {rest:?}"
            )))
        }
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

fn set_public(app: &AppRef, path: &TinkerPath, public: bool) -> Result<(), ApiError> {
    let meta = app.checkpoints.meta(path).map_err(store_error)?;
    if meta.checkpoint.public == public {
        let state = if public { "public" } else { "private" };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("checkpoint {path} is already {state}"),
        ));
    }
    app.checkpoints
        .update_meta(path, |m| m.checkpoint.public = public)
        .map_err(store_error)?;
    Ok(())
}

#[derive(Deserialize)]
struct TtlBody {
    ttl_seconds: Option<i64>,
}

pub async fn checkpoint_put(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    if suffix.as_deref() != Some("ttl") {
        return Err(ApiError::not_found(format!(
            "no PUT route for checkpoint {rest:?}"
        )));
    }
    let body: TtlBody = parse_json(&body)?;
    if let Some(t) = body.ttl_seconds {
        if !(3600..=TEN_YEARS).contains(&t) {
            return Err(ApiError::bad_request(format!(
                "ttl_seconds must be in 3600..={TEN_YEARS}, got {t}"
            )));
        }
    }
    let now = unix_now();
    app.checkpoints
        .update_meta(&path, |m| {
            m.checkpoint.expires_at = body.ttl_seconds.map(|t| rfc3339(now + t as f64))
        })
        .map_err(store_error)?;
    Ok(json_response(StatusCode::OK, &json!({})))
}

pub async fn checkpoint_get(Path((_run_id, rest)): Path<(String, String)>) -> ApiError {
    if rest.ends_with("/external_weights_urls") {
        return ApiError::not_found("tinkex-emulator stores no external-format weights");
    }
    ApiError::not_found(format!("no GET route for checkpoint {rest:?}"))
}

pub async fn weights_info(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let req: WeightsInfoRequest = parse_json(&body)?;
    let path =
        TinkerPath::parse(&req.tinker_path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    app.checkpoints.meta(&path).map_err(store_error)?;
    let run = app.checkpoints.run(&path.training_run_id).ok_or_else(|| {
        ApiError::not_found(format!("training run {} not found", path.training_run_id))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &WeightsInfoResponse {
            base_model: run.base_model,
            optimizer_config: run.optimizer_config,
            is_lora: true,
            lora_rank: Some(run.lora_rank),
            train_unembed: Some(run.train_unembed),
            train_mlp: Some(run.train_mlp),
            train_attn: Some(run.train_attn),
        },
    ))
}
