//! Session management endpoints (PROTOCOL.md 9.10, 9.11): list, get, assign a project,
//! export a trace, search.

use super::AppRef;
use crate::auth::Identity;
use crate::sessions::{Denied, Scope, DEFAULT_PROJECT, MAX_NAME};
use crate::util::{json_response, parse_json, rfc3339, ApiError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tinkex::core::types::FinishReasonKind;

/// Largest `limit` of `GET /sessions`.
const MAX_LIST: i64 = 10_000;

fn denied(e: Denied) -> ApiError {
    match e {
        Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        Denied::Invalid(m) => ApiError::bad_request(m),
    }
}

/// A session as the list endpoints see it.
struct Row {
    id: String,
    created: f64,
    owner: Option<String>,
    project: Option<String>,
    display_name: Option<String>,
    user_metadata: Map<String, Value>,
    finished: Option<(FinishReasonKind, Option<String>)>,
}

fn rows(app: &AppRef) -> Vec<Row> {
    let sessions = app.sessions.lock().unwrap();
    let mut out: Vec<Row> = sessions
        .values()
        .map(|s| {
            let info = app.registry.session(&s.session_id);
            Row {
                id: s.session_id.clone(),
                created: s.created,
                owner: info.as_ref().map(|i| i.owner.clone()),
                project: info.as_ref().and_then(|i| i.project_id.clone()),
                display_name: info.and_then(|i| i.display_name),
                user_metadata: s.user_metadata.clone(),
                finished: s.finished.clone(),
            }
        })
        .collect();
    // Newest first; ties broken by id so paging is stable.
    out.sort_by(|a, b| {
        micros(b.created)
            .cmp(&micros(a.created))
            .then(b.id.cmp(&a.id))
    });
    out
}

fn visible(app: &AppRef, r: &Row, who: &Identity, scope: Scope) -> bool {
    app.registry.visible(
        r.owner.as_deref(),
        r.project.as_deref(),
        &who.user_urn,
        scope,
    )
}

/// Query of the session endpoints.
#[derive(Deserialize)]
pub struct SessionQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    access_scope: Option<String>,
}

/// `GET /api/v1/sessions?limit&offset&access_scope`: session ids, newest first.
pub async fn list_sessions(
    State(app): State<AppRef>,
    Query(q): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let scope = Scope::parse(q.access_scope.as_deref()).map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(20);
    let offset = q.offset.unwrap_or(0);
    if !(0..=MAX_LIST).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request(format!(
            "limit must be in 0..={MAX_LIST} and offset not negative"
        )));
    }
    let ids: Vec<String> = rows(&app)
        .into_iter()
        .filter(|r| visible(&app, r, &who, scope))
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|r| r.id)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "sessions": ids })))
}

fn find_visible(app: &AppRef, id: &str, who: &Identity, scope: Scope) -> Result<Row, ApiError> {
    rows(app)
        .into_iter()
        .find(|r| r.id == id && visible(app, r, who, scope))
        .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))
}

/// Training runs of a session: live models and runs on disk (copies into it included).
fn session_runs(app: &AppRef, session_id: &str) -> Vec<String> {
    let prefix = format!("{session_id}:train:");
    let mut runs: Vec<String> = app
        .models
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .chain(
            app.checkpoints
                .runs()
                .into_iter()
                .map(|r| r.training_run_id)
                .filter(|k| k.starts_with(&prefix)),
        )
        .collect();
    runs.sort();
    runs.dedup();
    runs
}

/// `GET /api/v1/sessions/{id}?access_scope`: its training runs and samplers.
pub async fn get_session(
    State(app): State<AppRef>,
    Path(session_id): Path<String>,
    Query(q): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let scope = Scope::parse(q.access_scope.as_deref()).map_err(ApiError::bad_request)?;
    let row = find_visible(&app, &session_id, &who, scope)?;
    let prefix = format!("{session_id}:sample:");
    let mut samplers: Vec<String> = app
        .samplers
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect();
    samplers.sort();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "training_run_ids": session_runs(&app, &session_id),
            "sampler_ids": samplers,
            "user_metadata": string_map(&row.user_metadata),
            "display_name": row.display_name,
        }),
    ))
}

/// Metadata as `{str: str}` (non-string values as their JSON text).
fn string_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect()
}

/// Hook of `create_session`: refuses (403/400) a project the caller may not use.
pub fn check_create(app: &AppRef, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(d) = v.get("display_name").and_then(Value::as_str) {
        if d.len() > MAX_NAME {
            return Err(ApiError::bad_request(format!(
                "display_name is longer than {MAX_NAME} bytes"
            )));
        }
    }
    app.registry
        .check_new_session(
            &Identity::of_headers(headers),
            v.get("project_id").and_then(Value::as_str),
        )
        .map_err(denied)
}

/// Hook of `create_session`: records the new session's owner, project and display name.
pub fn on_create(app: &AppRef, session_id: &str, headers: &HeaderMap, body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    app.registry.add_session(
        session_id,
        &Identity::of_headers(headers),
        text("project_id"),
        text("display_name"),
        app.checkpoints.now(),
    );
}

/// `PUT /api/v1/sessions/{id}/project` `{"project_id"}`: 400 missing or invalid project or a
/// move out of a project, 403 no access to the project, 404 unknown session.
pub async fn assign_project(
    State(app): State<AppRef>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let project = match v.get("project_id") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        _ => return Err(ApiError::bad_request("project_id is required")),
    };
    let row = find_visible(&app, &session_id, &who, Scope::Owned)?;
    app.registry
        .assign_project(&row.id, &who.user_urn, &project, app.checkpoints.now())
        .map_err(denied)?;
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// `GET /api/v1/sessions/{id}/trace_export`: `pending` for the configured number of polls,
/// then `ready` with a signed URL of a Chrome-trace JSON of the session's requests (or
/// `failed` when `POST /_emulator/trace_export {"fail": "…"}` says so).
pub async fn trace_export(
    State(app): State<AppRef>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    find_visible(&app, &session_id, &who, Scope::Accessible)?;
    let settings = app.registry.export_settings.lock().unwrap().clone();
    let before = app.registry.export_poll(&session_id);
    if before < settings.pending_polls {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "pending", "url": null, "error": null}),
        ));
    }
    if let Some(error) = settings.fail {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "failed", "url": null, "error": error}),
        ));
    }
    let trace = build_trace(&app, &session_id);
    let rel = format!("rest/exports/{}.json", file_safe(&session_id));
    let file = app.config.state_dir.join(&rel);
    let written = file
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&file, serde_json::to_vec(&trace).unwrap_or_default()));
    if let Err(e) = written {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the trace: {e}"),
        ));
    }
    let (url, _) = crate::signed_urls::sign(&app, &headers, &rel);
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "ready", "url": url, "error": null}),
    ))
}

/// A file name for an id (anything but `[A-Za-z0-9_.-]` becomes `_`).
pub fn file_safe(id: &str) -> String {
    id.chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The session's requests as a Chrome trace (`traceEvents`, instant events, microseconds),
/// which Perfetto opens.
fn build_trace(app: &AppRef, session_id: &str) -> Value {
    let events: Vec<Value> = app
        .usage
        .events()
        .into_iter()
        .filter(|e| e.session_id == session_id)
        .map(|e| {
            json!({
                "name": e.request_type,
                "cat": e.usage,
                "ph": "i",
                "s": "t",
                "ts": (e.time * 1e6).round() as i64,
                "pid": 1,
                "tid": e.target,
                "args": {"request_id": e.request_id, "tokens": e.tokens, "base_model": e.base_model},
            })
        })
        .collect();
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "metadata": {"session_id": session_id, "source": "tinkex-emulator"},
    })
}

/// Micro-second timestamp of a session's creation (the search cursor's unit).
fn micros(t: f64) -> i64 {
    (t * 1e6).floor() as i64
}

fn status_of(finished: &Option<(FinishReasonKind, Option<String>)>) -> Value {
    match finished {
        None => json!({"type": "active"}),
        Some((kind, detail)) => {
            json!({"type": "client_finished", "reason": {"type": reason_name(*kind)}, "detail": detail})
        }
    }
}

fn reason_name(kind: FinishReasonKind) -> &'static str {
    match kind {
        FinishReasonKind::Success => "success",
        FinishReasonKind::Errored => "errored",
        FinishReasonKind::Interrupted => "interrupted",
    }
}

/// A parsed search (PROTOCOL.md 9.11).
struct Search {
    session_id: Option<String>,
    project_ids: Option<Vec<String>>,
    user_metadata: Map<String, Value>,
    display_words: Option<Vec<String>>,
    owner: Owner,
    statuses: Option<Vec<StatusQuery>>,
    limit: usize,
    cursor: Option<(i64, String)>,
}

enum Owner {
    Own,
    Accessible,
    Users(Vec<String>),
}

enum StatusQuery {
    Active,
    Cancelled,
    Failed,
    ClientFinished(Option<Vec<String>>),
}

const SEARCH_FIELDS: [&str; 8] = [
    "session_id",
    "project_ids",
    "user_metadata",
    "display_name",
    "owner",
    "statuses",
    "limit",
    "cursor",
];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn short_string(v: &Value, what: &str) -> Result<String, ApiError> {
    match v.as_str() {
        Some(s) if s.len() <= MAX_NAME => Ok(s.to_string()),
        Some(_) => Err(bad(format!("{what} is longer than {MAX_NAME} bytes"))),
        None => Err(bad(format!("{what} must be a string"))),
    }
}

fn parse_search(body: &[u8]) -> Result<Search, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !SEARCH_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field {:?}",
            k.chars().take(40).collect::<String>()
        )));
    }
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let session_id = present("session_id")
        .map(|v| short_string(v, "session_id"))
        .transpose()?;
    let project_ids = present("project_ids")
        .map(|v| {
            let a = v
                .as_array()
                .ok_or_else(|| bad("project_ids must be an array"))?;
            if a.len() > 100 {
                return Err(bad("at most 100 project_ids"));
            }
            a.iter().map(|p| short_string(p, "project_ids[]")).collect()
        })
        .transpose()?;
    let user_metadata = match present("user_metadata") {
        None => Map::new(),
        Some(Value::Object(m)) if m.len() <= 100 => {
            for (k, v) in m {
                if k.len() > MAX_NAME {
                    return Err(bad("user_metadata keys are at most 256 bytes"));
                }
                short_string(v, "user_metadata values")?;
            }
            m.clone()
        }
        Some(_) => {
            return Err(bad(
                "user_metadata must be an object of at most 100 strings",
            ))
        }
    };
    let display_words = present("display_name")
        .map(|v| {
            let s = short_string(v, "display_name")?;
            if s.is_empty() {
                return Err(bad("display_name must have at least 1 character"));
            }
            Ok(s.to_lowercase()
                .split_whitespace()
                .map(str::to_string)
                .collect())
        })
        .transpose()?;
    let owner = match present("owner") {
        None => Owner::Own,
        Some(o) => match o.get("type").and_then(Value::as_str) {
            Some("own") => Owner::Own,
            Some("accessible") => Owner::Accessible,
            Some("user") => {
                let urns = o
                    .get("owner_urns")
                    .and_then(Value::as_array)
                    .filter(|a| (1..=10).contains(&a.len()))
                    .ok_or_else(|| bad("owner.owner_urns must list 1 to 10 owners"))?;
                Owner::Users(
                    urns.iter()
                        .map(|u| short_string(u, "owner_urns[]"))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => return Err(bad("owner.type must be own, accessible or user")),
        },
    };
    let statuses = present("statuses")
        .map(|v| {
            let a = v
                .as_array()
                .ok_or_else(|| bad("statuses must be an array"))?;
            if a.is_empty() || a.len() > 10 {
                return Err(bad("statuses must list 1 to 10 statuses"));
            }
            a.iter().map(parse_status).collect()
        })
        .transpose()?;
    let limit = match present("limit") {
        None => 50,
        Some(l) => match l.as_i64() {
            Some(n) if (1..=200).contains(&n) => n as usize,
            _ => return Err(bad("limit must be an integer in 1..=200")),
        },
    };
    let cursor = present("cursor")
        .map(|c| {
            let at = c
                .get("last_created_at")
                .and_then(Value::as_str)
                .and_then(crate::billing::parse_rfc3339)
                .ok_or_else(|| {
                    bad("cursor.last_created_at must be an RFC 3339 date-time with a zone")
                })?;
            let id = c
                .get("last_session_id")
                .ok_or_else(|| bad("cursor.last_session_id is required"))
                .and_then(|v| short_string(v, "cursor.last_session_id"))?;
            Ok::<_, ApiError>((micros(at + 5e-7), id))
        })
        .transpose()?;
    Ok(Search {
        session_id,
        project_ids,
        user_metadata,
        display_words,
        owner,
        statuses,
        limit,
        cursor,
    })
}

fn parse_status(v: &Value) -> Result<StatusQuery, ApiError> {
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("active") => StatusQuery::Active,
        Some("cancelled") => StatusQuery::Cancelled,
        Some("failed") => StatusQuery::Failed,
        Some("client_finished") => StatusQuery::ClientFinished(match v.get("reasons") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if (1..=3).contains(&a.len()) => Some(
                a.iter()
                    .map(|r| match r.as_str() {
                        Some(s @ ("success" | "errored" | "interrupted")) => Ok(s.to_string()),
                        _ => Err(bad("reasons are success, errored or interrupted")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(bad("reasons must list 1 to 3 reasons")),
        }),
        _ => {
            return Err(bad(
                "status type must be active, cancelled, failed or client_finished",
            ))
        }
    })
}

fn matches(app: &AppRef, s: &Search, r: &Row, who: &Identity) -> bool {
    let project = r.project.as_deref().unwrap_or(DEFAULT_PROJECT);
    let owner_ok = match &s.owner {
        Owner::Own => crate::sessions::Registry::owns(r.owner.as_deref(), &who.user_urn),
        Owner::Accessible => visible(app, r, who, Scope::Accessible),
        Owner::Users(urns) => {
            r.owner.as_ref().is_some_and(|o| urns.contains(o))
                && visible(app, r, who, Scope::Accessible)
        }
    };
    let id_or_name = match (&s.session_id, &s.display_words) {
        (None, None) => true,
        (id, words) => {
            id.as_ref().is_some_and(|i| *i == r.id)
                || words.as_ref().is_some_and(|w| {
                    let name = r.display_name.clone().unwrap_or_default().to_lowercase();
                    w.iter().all(|word| name.contains(word.as_str()))
                })
        }
    };
    let project_ok = s
        .project_ids
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p == project));
    let meta_ok = s
        .user_metadata
        .iter()
        .all(|(k, v)| r.user_metadata.get(k).is_some_and(|x| x == v));
    let status_ok = s.statuses.as_ref().is_none_or(|qs| {
        qs.iter().any(|q| match (q, &r.finished) {
            (StatusQuery::Active, None) => true,
            (StatusQuery::ClientFinished(None), Some(_)) => true,
            (StatusQuery::ClientFinished(Some(reasons)), Some((kind, _))) => {
                reasons.iter().any(|x| x == reason_name(*kind))
            }
            _ => false,
        })
    });
    let cursor_ok = s.cursor.as_ref().is_none_or(|(at, id)| {
        let t = micros(r.created);
        t < *at || (t == *at && r.id < *id)
    });
    owner_ok && id_or_name && project_ok && meta_ok && status_ok && cursor_ok
}

/// `POST /api/v1/sessions/search` (PROTOCOL.md 9.11): every filter, newest first, cursor
/// paging; 400 on bad input, 403 on a project the caller cannot list.
pub async fn search(
    State(app): State<AppRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = Identity::of_headers(&headers);
    let s = parse_search(&body)?;
    for p in s.project_ids.iter().flatten() {
        if !app.registry.can_list_project(&who.user_urn, p) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("project {p:?} is not listable"),
            ));
        }
    }
    let all = rows(&app);
    let mut hits = all.iter().filter(|r| matches(&app, &s, r, &who));
    let page: Vec<&Row> = hits.by_ref().take(s.limit).collect();
    let more = hits.next().is_some();
    let sessions: Vec<Value> = page.iter().map(|r| summary(&app, r)).collect();
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => json!({
            "last_created_at": rfc3339(micros(last.created) as f64 / 1e6),
            "last_session_id": last.id,
        }),
        _ => Value::Null,
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"sessions": sessions, "next_cursor": next_cursor}),
    ))
}

fn summary(app: &AppRef, r: &Row) -> Value {
    let runs = session_runs(app, &r.id);
    let checkpoints: Vec<_> = runs
        .iter()
        .flat_map(|run| app.checkpoints.list_run(run))
        .collect();
    let bytes: u64 = checkpoints
        .iter()
        .filter_map(|c| c.checkpoint.size_bytes)
        .sum();
    json!({
        "session_id": r.id,
        "created_at": rfc3339(micros(r.created) as f64 / 1e6),
        "owner": r.owner.clone().unwrap_or_else(|| "tml:organization_user:tinkex-emulator".into()),
        "project_id": r.project.clone().unwrap_or_else(|| DEFAULT_PROJECT.into()),
        "status": status_of(&r.finished),
        "checkpoints_count": checkpoints.len(),
        "display_name": r.display_name,
        "user_metadata": string_map(&r.user_metadata),
        "checkpoint_storage_bytes": bytes,
    })
}

/// `POST /_emulator/trace_export {"pending_polls"?: n, "fail"?: "msg"|null}`: how the next
/// exports behave; poll counts restart.
pub async fn set_export(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    let v: Value = parse_json(&body)?;
    let mut s = app.registry.export_settings.lock().unwrap();
    if let Some(n) = v.get("pending_polls") {
        s.pending_polls = n
            .as_u64()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| bad("pending_polls must be 0..=1000"))? as u32;
    }
    if let Some(f) = v.get("fail") {
        s.fail = f.as_str().map(|x| x.chars().take(1000).collect());
    }
    let out = s.clone();
    drop(s);
    app.registry.reset_exports();
    Ok(json_response(StatusCode::OK, &out))
}
