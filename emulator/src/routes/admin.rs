//! Admin and account endpoints (PROTOCOL.md 9.12, 2.9): the audit log (answered with a 302
//! to a signed URL serving the JSON), billing usage counted from the operations the
//! emulator processed, current checkpoint storage computed from the state dir, and the
//! CLI's `auth/apikey/me`. Plus the control routes `/_emulator/clock` and
//! `/_emulator/projects`.
//!
//! The emulator is one organisation for these endpoints: every caller sees every entry.

use super::rest::run_project;
use super::AppRef;
use crate::auth::{AuthState, Identity};
use crate::billing::{check_window, days_from_civil};
use crate::sessions::{Registry, DEFAULT_PROJECT};
use crate::util::{json_response, parse_json, rfc3339, ApiError};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tinkex::core::types::TinkerPath;

/// Audit query.
#[derive(Deserialize)]
pub struct AuditQuery {
    event_type: Option<String>,
    day: Option<String>,
}

const EVENT_TYPES: [&str; 5] = ["all", "checkpoints", "projects", "teams", "organizations"];

/// Parses `YYYY-MM-DD` to the Unix seconds of its UTC midnight.
fn parse_day(day: &str) -> Option<f64> {
    let b = day.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        day[0..4].parse::<i64>().ok()?,
        day[5..7].parse::<i64>().ok()?,
        day[8..10].parse::<i64>().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400) as f64)
}

static AUDIT_FILES: AtomicU64 = AtomicU64::new(0);

/// Audit answers kept on disk (older files are overwritten).
const AUDIT_RING: u64 = 256;

/// Every audit entry, oldest first.
fn audit_entries(app: &AppRef) -> Vec<(f64, &'static str, Value)> {
    let mut out = Vec::new();
    for e in app.checkpoints.events() {
        let run = TinkerPath::parse(&e.tinker_path)
            .map(|p| p.training_run_id)
            .unwrap_or_default();
        let actor = app.registry.run(&run).map(|r| r.owner);
        out.push((
            e.time,
            "checkpoints",
            json!({
                "timestamp": rfc3339(e.time),
                "event": format!("checkpoint_{}", e.action),
                "event_details": {
                    "actor": actor, "tinker_path": e.tinker_path, "model_id": run,
                    "size_bytes": e.size_bytes, "project_id": run_project(app, &run),
                },
                "model_id": run,
                "tinker_path": e.tinker_path,
            }),
        ));
    }
    for e in app.registry.project_events() {
        out.push((
            e.time,
            "projects",
            json!({
                "timestamp": rfc3339(e.time),
                "event": e.event,
                "event_details": {"actor": e.actor, "project_id": e.project_id, "session_id": e.session_id},
            }),
        ));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `GET /api/v1/audit?event_type&day`: 400 on an unknown type or a bad day; otherwise a
/// 302 to a signed URL serving `{"entries": […]}` (sorted by time).
pub async fn audit(
    State(app): State<AppRef>,
    Query(q): Query<AuditQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let kind = q.event_type.as_deref().unwrap_or("all");
    if !EVENT_TYPES.contains(&kind) {
        return Err(ApiError::bad_request(format!(
            "event_type must be one of {}",
            EVENT_TYPES.join(", ")
        )));
    }
    let window = match q.day.as_deref() {
        None => None,
        Some(d) => {
            let start = parse_day(d)
                .ok_or_else(|| ApiError::bad_request("day must be a date, YYYY-MM-DD"))?;
            Some((start, start + 86_400.0))
        }
    };
    let entries: Vec<Value> = audit_entries(&app)
        .into_iter()
        .filter(|(t, k, _)| {
            (kind == "all" || kind == *k) && window.is_none_or(|(s, e)| *t >= s && *t < e)
        })
        .map(|(_, _, v)| v)
        .collect();
    let n = AUDIT_FILES.fetch_add(1, Ordering::Relaxed);
    // A ring of files: the state dir stays bounded however often the log is fetched.
    let rel = format!("rest/audit/{}.json", n % AUDIT_RING);
    let file = app.config.state_dir.join(&rel);
    let written = std::fs::create_dir_all(file.parent().expect("audit dir")).and_then(|_| {
        std::fs::write(
            &file,
            serde_json::to_vec(&json!({"entries": entries})).unwrap_or_default(),
        )
    });
    if let Err(e) = written {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the audit log: {e}"),
        ));
    }
    let (url, _) = crate::signed_urls::sign(&app, &headers, &rel);
    let mut resp = (StatusCode::FOUND, "").into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Billing query.
#[derive(Deserialize)]
pub struct BillingQuery {
    starting_on: Option<String>,
    ending_before: Option<String>,
}

/// `GET /api/v1/billing/usage/events?starting_on&ending_before` (hour-aligned, ≤ 14 days,
/// start not in the future; 400 otherwise): hourly buckets of the training tokens, prompt
/// and sampled tokens and checkpoints the emulator processed, per session and base model.
pub async fn billing_usage(
    State(app): State<AppRef>,
    Query(q): Query<BillingQuery>,
) -> Result<Response, ApiError> {
    let (Some(start), Some(end)) = (q.starting_on.as_deref(), q.ending_before.as_deref()) else {
        return Err(ApiError::bad_request(
            "starting_on and ending_before are required",
        ));
    };
    let (start, end) = check_window(&app, start, end).map_err(ApiError::bad_request)?;
    // (bucket, session, base model, kind) → quantity
    let mut buckets: BTreeMap<(i64, String, String, &'static str), u64> = BTreeMap::new();
    let in_window = |t: f64| t >= start && t < end;
    let bucket = |t: f64| (t / 3600.0).floor() as i64;
    for e in app.usage.events() {
        if e.usage != "none" && e.tokens > 0 && in_window(e.time) {
            *buckets
                .entry((bucket(e.time), e.session_id, e.base_model, e.usage))
                .or_default() += e.tokens;
        }
    }
    for e in app.checkpoints.events() {
        if !matches!(e.action, "created" | "copied") || !in_window(e.time) {
            continue;
        }
        let run = TinkerPath::parse(&e.tinker_path)
            .map(|p| p.training_run_id)
            .unwrap_or_default();
        let session = run
            .rsplit_once(":train:")
            .map(|(s, _)| s.to_string())
            .unwrap_or_default();
        let base = app
            .checkpoints
            .run(&run)
            .map(|r| r.base_model)
            .unwrap_or_default();
        *buckets
            .entry((bucket(e.time), session, base, "checkpoint"))
            .or_default() += 1;
    }
    let mut data: Vec<(i64, u64, Value)> = Vec::new();
    let mut sessions = Map::new();
    for ((b, session, base, kind), qty) in buckets {
        let info = app.registry.session(&session);
        let event_info = match kind {
            "checkpoint" => json!({"type": "checkpoint", "count": qty}),
            "sampling_prefill" => json!({"type": kind, "cached": false, "token_count": qty}),
            _ => json!({"type": kind, "token_count": qty}),
        };
        if !session.is_empty() && !sessions.contains_key(&session) {
            let meta = app
                .sessions
                .lock()
                .unwrap()
                .get(&session)
                .map(|s| s.user_metadata.clone());
            sessions.insert(
                session.clone(),
                json!({"user_metadata": meta.map(|m| {
                    m.into_iter().map(|(k, v)| (k, Value::String(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))).collect::<Map<_, _>>()
                })}),
            );
        }
        data.push((
            b,
            qty,
            json!({
                "bucket_start": rfc3339((b * 3600) as f64),
                "bucket_end": rfc3339(((b + 1) * 3600) as f64),
                "base_model": (!base.is_empty()).then_some(base),
                "user_id": info.as_ref().map(|i| i.owner.clone()),
                "session_id": (!session.is_empty()).then_some(session.clone()),
                "project_id": info.map(|i| i.project_id.unwrap_or_else(|| DEFAULT_PROJECT.into())),
                "event_info": event_info,
            }),
        ));
    }
    // Ordered by bucket, then descending quantity.
    data.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let data: Vec<Value> = data.into_iter().map(|(_, _, v)| v).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": data, "sessions": sessions, "cost_data_through": null}),
    ))
}

/// Storage query.
#[derive(Deserialize)]
pub struct StorageQuery {
    project_id: Option<String>,
}

/// `GET /api/v1/billing/usage/checkpoints/current[?project_id]`: live checkpoints grouped by
/// project and owner, sizes measured on disk.
pub async fn storage_usage(
    State(app): State<AppRef>,
    Query(q): Query<StorageQuery>,
) -> Result<Response, ApiError> {
    if let Some(p) = &q.project_id {
        Registry::check_project_id(p).map_err(|_| ApiError::bad_request("invalid project_id"))?;
    }
    let mut groups: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in app.checkpoints.list_all() {
        let Ok(path) = TinkerPath::parse(&c.checkpoint.tinker_path) else {
            continue;
        };
        let project = run_project(&app, &path.training_run_id);
        if q.project_id.as_ref().is_some_and(|p| *p != project) {
            continue;
        }
        let owner = app
            .registry
            .run(&path.training_run_id)
            .map(|r| r.owner)
            .unwrap_or_default();
        let size = app
            .checkpoints
            .dir_of(&path)
            .map(|d| crate::checkpoints::dir_size(&d))
            .unwrap_or(0);
        let g = groups.entry((project, owner)).or_default();
        g.0 += 1;
        g.1 += size;
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|((project, owner), (count, bytes))| {
            json!({
                "project_id": project,
                "org_user_urn": (!owner.is_empty()).then_some(owner),
                "checkpoint_count": count,
                "size_bytes": bytes,
                "size_gigabytes": bytes as f64 / 1e9,
                "estimated_monthly_cost_usd": null,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"effective_rate_usd_per_gigabyte_month": null, "data": data}),
    ))
}

fn raw_key(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| k.starts_with("tml-"))
        .map(str::to_string)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "a raw tml- API key is required"))
}

/// `GET /api/v1/auth/apikey/me` (PROTOCOL.md 2.9): the calling key's description.
pub async fn apikey_me(headers: HeaderMap) -> Result<Response, ApiError> {
    let key = raw_key(&headers)?;
    let who = Identity::of_key(&key);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "key_id": AuthState::key_id(&key),
            "name": "tinkex-emulator-key",
            "note": "issued by tinkex-emulator",
            "details": {
                "org_details": {"name": who.org_id},
                "user_details": {"email": who.email},
            },
        }),
    ))
}

/// `DELETE /api/v1/auth/apikey/me`: deletes the calling key (later requests with it: 401).
pub async fn apikey_delete(
    State(app): State<AppRef>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = raw_key(&headers)?;
    app.auth.delete_key(&key);
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// `POST /_emulator/clock {"advance_seconds": s}`: moves the clock of checkpoint expiry,
/// signed-URL expiry and usage timestamps forward. `GET` answers the current time.
pub async fn clock(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    if !body.is_empty() {
        let v: Value = parse_json(&body)?;
        let s = v
            .get("advance_seconds")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 1e10)
            .ok_or_else(|| ApiError::bad_request("advance_seconds must be in 0..=1e10"))?;
        app.checkpoints.advance_clock(s);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"now": app.checkpoints.now(), "now_rfc3339": rfc3339(app.checkpoints.now())}),
    ))
}

/// `POST /_emulator/projects {"project_id", "owner"?, "members"?: [urn…]}`: sets up a project
/// (owner and members may use it). `GET` lists projects.
pub async fn projects(State(app): State<AppRef>, body: Bytes) -> Result<Response, ApiError> {
    if !body.is_empty() {
        let v: Value = parse_json(&body)?;
        let project = v
            .get("project_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("project_id is required"))?;
        let members: Vec<String> = v
            .get("members")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        app.registry
            .set_project(
                project,
                v.get("owner").and_then(Value::as_str),
                &members,
                app.checkpoints.now(),
            )
            .map_err(|_| ApiError::bad_request("invalid project_id"))?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"projects": app.registry.projects()}),
    ))
}
