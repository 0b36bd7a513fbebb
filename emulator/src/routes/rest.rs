//! REST management endpoints: training runs, checkpoints, weights info (PROTOCOL.md section 9).

use super::AppRef;
use crate::auth::Identity;
use crate::checkpoints::{CheckpointMeta, RunMeta, StoreError};
use crate::sessions::{Registry, Scope};
use crate::util::{json_response, parse_json, rfc3339, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tinkex::core::types::{
    CheckpointKind, CheckpointsListResponse, Cursor, TinkerPath, TrainingRun, TrainingRunsResponse,
    WeightsInfoRequest, WeightsInfoResponse,
};

/// Pagination and scope query.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
    access_scope: Option<String>,
    project_id: Option<String>,
}

/// Owner reported for runs created before the registry knew their session.
const OWNER: &str = "tml:organization_user:tinkex-emulator";
use crate::weights_export::TEN_YEARS;

/// Whether the caller may see a run with `scope`.
pub fn run_visible(app: &AppRef, run_id: &str, who: &Identity, scope: Scope) -> bool {
    let info = app.registry.run(run_id);
    app.registry.visible(
        info.as_ref().map(|i| i.owner.as_str()),
        info.as_ref().and_then(|i| i.project_id.as_deref()),
        &who.user_urn,
        scope,
    )
}

/// Whether the caller owns a run (only the exact owner may publish, delete or set a TTL).
pub fn run_owned(app: &AppRef, run_id: &str, who: &Identity) -> bool {
    let info = app.registry.run(run_id);
    Registry::owns(info.as_ref().map(|i| i.owner.as_str()), &who.user_urn)
}

fn scope_of(q: Option<&str>) -> Result<Scope, ApiError> {
    Scope::parse(q).map_err(ApiError::bad_request)
}

/// The project a run is counted in.
pub fn run_project(app: &AppRef, run_id: &str) -> String {
    app.registry
        .run(run_id)
        .and_then(|i| i.project_id)
        .unwrap_or_else(|| crate::sessions::DEFAULT_PROJECT.to_string())
}

/// Maps a store error to its HTTP answer.
pub fn store_error(e: StoreError) -> ApiError {
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
        model_owner: app
            .registry
            .run(&run.training_run_id)
            .map(|i| i.owner)
            .unwrap_or_else(|| OWNER.into()),
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let scope = scope_of(q.access_scope.as_deref())?;
    let mut runs: Vec<RunMeta> = app
        .checkpoints
        .runs()
        .into_iter()
        .filter(|r| run_visible(&app, &r.training_run_id, &who, scope))
        .filter(|r| {
            q.project_id
                .as_ref()
                .is_none_or(|p| run_project(&app, &r.training_run_id) == *p)
        })
        .collect();
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
    Query(q): Query<Page>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let scope = scope_of(q.access_scope.as_deref())?;
    let run = app
        .checkpoints
        .run(&run_id)
        .filter(|_| run_visible(&app, &run_id, &who, scope))
        .ok_or_else(|| ApiError::not_found(format!("training run {run_id} not found")))?;
    Ok(json_response(StatusCode::OK, &describe_run(&app, run)))
}

pub async fn run_checkpoints(
    State(app): State<AppRef>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    if app.checkpoints.run(&run_id).is_none()
        || !run_visible(&app, &run_id, &who, Scope::Accessible)
    {
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let all: Vec<CheckpointMeta> = app
        .checkpoints
        .list_all()
        .into_iter()
        .filter(|c| {
            TinkerPath::parse(&c.checkpoint.tinker_path)
                .is_ok_and(|p| run_owned(&app, &p.training_run_id, &who))
        })
        .collect();
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

/// 404 unless the caller is the exact owner of the run (PROTOCOL.md 9.6).
fn require_owner(app: &AppRef, path: &TinkerPath, headers: &HeaderMap) -> Result<(), ApiError> {
    if run_owned(app, &path.training_run_id, &Identity::of_headers(headers)) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "checkpoint {path} not found (or you are not the owner of its training run)"
        )))
    }
}

pub async fn checkpoint_delete(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    require_owner(&app, &path, &headers)?;
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    require_owner(&app, &path, &headers)?;
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
    let action = if public { "published" } else { "unpublished" };
    app.checkpoints.record(action, &path.to_string(), None);
    Ok(())
}

pub async fn checkpoint_put(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    if suffix.as_deref() != Some("ttl") {
        return Err(ApiError::not_found(format!(
            "no PUT route for checkpoint {rest:?}"
        )));
    }
    let body: serde_json::Value = parse_json(&body)?;
    let ttl = match body.get("ttl_seconds") {
        None => {
            return Err(ApiError::bad_request(
                "ttl_seconds is required (null clears the expiry)",
            ))
        }
        Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("ttl_seconds must be an integer or null, got {v}"))
        })?),
    };
    check_ttl(ttl)?;
    require_owner(&app, &path, &headers)?;
    app.checkpoints.set_ttl(&path, ttl).map_err(store_error)?;
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// 400 unless the TTL is in 3600 s ..= 10 years (PROTOCOL.md 9.7).
pub fn check_ttl(ttl: Option<i64>) -> Result<(), ApiError> {
    match ttl {
        Some(t) if !(3600..=TEN_YEARS).contains(&t) => Err(ApiError::bad_request(format!(
            "ttl_seconds must be in 3600..={TEN_YEARS}, got {t}"
        ))),
        _ => Ok(()),
    }
}

/// `GET …/checkpoints/external_weights/{name}/external_weights_urls` (PROTOCOL.md 9.8): one
/// signed, expiring URL per file of an external checkpoint.
pub async fn checkpoint_get(
    State(app): State<AppRef>,
    Path((run_id, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (path, suffix) = checkpoint_target(&run_id, &rest)?;
    if suffix.as_deref() != Some("external_weights_urls") {
        return Err(ApiError::not_found(format!(
            "no GET route for checkpoint {rest:?}"
        )));
    }
    if path.kind != CheckpointKind::External {
        return Err(ApiError::bad_request(format!(
            "{path} is not an external checkpoint (external_weights/<name>)"
        )));
    }
    let meta = app.checkpoints.meta(&path).map_err(store_error)?;
    let who = Identity::of_headers(&headers);
    if !meta.checkpoint.public && !run_visible(&app, &run_id, &who, Scope::Accessible) {
        return Err(ApiError::not_found(format!("checkpoint {path} not found")));
    }
    let files = crate::weights_export::files_of(&app, &path).map_err(store_error)?;
    let rel_dir = app
        .checkpoints
        .dir_of(&path)
        .map_err(store_error)?
        .strip_prefix(&app.config.state_dir)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad state dir"))?;
    let mut urls = serde_json::Map::new();
    let mut expires = 0;
    for f in files {
        let (url, e) = crate::signed_urls::sign(&app, &headers, &format!("{rel_dir}/files/{f}"));
        expires = e;
        urls.insert(f, url.into());
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"urls": urls, "expires": rfc3339(expires as f64)}),
    ))
}

pub async fn weights_info(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: WeightsInfoRequest = parse_json(&body)?;
    let path =
        TinkerPath::parse(&req.tinker_path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let meta = app.checkpoints.meta(&path).map_err(store_error)?;
    let who = Identity::of_headers(&headers);
    if !meta.checkpoint.public && !run_visible(&app, &path.training_run_id, &who, Scope::Accessible)
    {
        return Err(ApiError::not_found(format!("checkpoint {path} not found")));
    }
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
