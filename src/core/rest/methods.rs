//! The REST/admin method table (`methods.json`, embedded) and the generic call: argument
//! validation from the table, then dispatch by name to the typed methods of
//! [`RestClient`](super::RestClient).
//!
//! Arguments are a JSON object keyed by the table's param names: a missing param takes the
//! table's default; a required one missing, a wrong type or an unknown method is
//! [`ArgErrorKind::InvalidArg`]; an unknown key (or a non-object) is
//! [`ArgErrorKind::InvalidJson`]. Range checks are only those the official SDK makes on the
//! client side (the `SessionSearchRequest` model); everything else is the server's to judge.

use super::RestClient;
use crate::core::api_future::ApiFuture;
use crate::core::error::{Error, Result};
use crate::core::types::{AccessScope, SessionSearchRequest};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The table, as committed in `src/core/rest/methods.json`.
pub const METHODS_JSON: &str = include_str!("methods.json");

/// The most bytes of one string argument (ids, paths, tokens, dates).
const MAX_STR_ARG_BYTES: usize = 64 * 1024;

/// The whole table.
#[derive(Clone, Debug, Deserialize)]
pub struct MethodTable {
    /// Format version.
    pub version: u32,
    /// Every method.
    pub methods: Vec<MethodSpec>,
}

/// One method of the table.
#[derive(Clone, Debug, Deserialize)]
pub struct MethodSpec {
    /// The official method name.
    pub name: String,
    /// `rest` and/or `admin`.
    pub clients: Vec<String>,
    /// Parameters, in the official order.
    pub params: Vec<ParamSpec>,
    /// The result model (`None`, `str` or a type name).
    pub result: String,
    /// The request it sends (documentation).
    pub http: String,
    /// Whether the SDK has an `_async` twin.
    #[serde(default)]
    pub official_async: bool,
    /// One-line description.
    pub doc: String,
}

/// One parameter of a method.
#[derive(Clone, Debug, Deserialize)]
pub struct ParamSpec {
    /// Official name.
    pub name: String,
    /// Type (see the table's `$comment`).
    #[serde(rename = "type")]
    pub ty: String,
    /// Default (`Some(Value::Null)` for a `null` default); `None` = required.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<Value>,
    /// Keyword-only in Python.
    #[serde(default)]
    pub keyword_only: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl MethodSpec {
    /// Whether `client` (`rest` or `admin`) offers this method.
    pub fn offered_by(&self, client: &str) -> bool {
        self.clients.iter().any(|c| c == client)
    }
}

/// The parsed table (parsed once; a unit test checks it parses).
pub fn table() -> &'static MethodTable {
    static TABLE: OnceLock<MethodTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(METHODS_JSON).unwrap_or(MethodTable {
            version: 0,
            methods: Vec::new(),
        })
    })
}

/// The method named `name`.
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    table().methods.iter().find(|m| m.name == name)
}

/// How an argument error maps to the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgErrorKind {
    /// Unknown method, required param missing, wrong type or value (`INVALID_ARG`).
    InvalidArg,
    /// Not a JSON object, or an unknown key (`INVALID_JSON`).
    InvalidJson,
}

/// A rejected generic call (nothing was sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError {
    /// Its class.
    pub kind: ArgErrorKind,
    /// What is wrong; never repeats a rejected value.
    pub message: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ArgError> for Error {
    fn from(e: ArgError) -> Self {
        Error::user(e.message)
    }
}

fn invalid_arg(message: String) -> ArgError {
    ArgError {
        kind: ArgErrorKind::InvalidArg,
        message,
    }
}

fn invalid_json(message: String) -> ArgError {
    ArgError {
        kind: ArgErrorKind::InvalidJson,
        message,
    }
}

/// Validated arguments: every param of the method present (defaults filled in).
#[derive(Clone, Debug)]
pub struct Args {
    values: Map<String, Value>,
}

impl Args {
    fn get(&self, name: &str) -> &Value {
        self.values.get(name).unwrap_or(&Value::Null)
    }

    fn str(&self, name: &str) -> &str {
        self.get(name).as_str().unwrap_or_default()
    }

    fn opt_str(&self, name: &str) -> Option<&str> {
        self.get(name).as_str()
    }

    fn int(&self, name: &str) -> i64 {
        self.get(name).as_i64().unwrap_or_default()
    }

    fn opt_int(&self, name: &str) -> Option<i64> {
        self.get(name).as_i64()
    }

    fn scope(&self, name: &str) -> AccessScope {
        match self.str(name) {
            "accessible" => AccessScope::Accessible,
            _ => AccessScope::Owned,
        }
    }
}

/// A validated call, ready to run.
#[derive(Clone, Debug)]
pub struct PreparedCall {
    /// The method.
    pub spec: &'static MethodSpec,
    /// Its arguments.
    pub args: Args,
    search: Option<SessionSearchRequest>,
}

/// Checks `args` against method `name` of the table as offered by `client` (`rest` or
/// `admin`). `Value::Null` is `{}`.
pub fn prepare(
    client: &str,
    name: &str,
    args: Value,
) -> std::result::Result<PreparedCall, ArgError> {
    let spec = method(name)
        .filter(|m| m.offered_by(client))
        .ok_or_else(|| {
            invalid_arg(format!(
                "unknown {client} method {:?} (see src/core/rest/methods.json)",
                crate::core::sanitize::bounded(name, 64)
            ))
        })?;
    let mut given = match args {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        _ => {
            return Err(invalid_json(format!(
                "{name}: the arguments must be a JSON object keyed by parameter name"
            )))
        }
    };
    if let Some(k) = given
        .keys()
        .find(|k| !spec.params.iter().any(|p| &p.name == *k))
    {
        return Err(invalid_json(format!(
            "{name}: unknown parameter {:?} (expected one of: {})",
            crate::core::sanitize::bounded(k, 64),
            spec.params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut values = Map::new();
    let mut search = None;
    for p in &spec.params {
        let v = match given.remove(&p.name) {
            Some(v) => v,
            None => match &p.default {
                Some(d) => d.clone(),
                None => {
                    return Err(invalid_arg(format!(
                        "{name}: missing required parameter {:?} ({})",
                        p.name, p.ty
                    )))
                }
            },
        };
        if p.ty == "SessionSearchRequest" {
            search = Some(search_request(name, &p.name, v.clone())?);
        } else {
            check_type(name, p, &v)?;
        }
        values.insert(p.name.clone(), v);
    }
    Ok(PreparedCall {
        spec,
        args: Args { values },
        search,
    })
}

fn search_request(
    method: &str,
    param: &str,
    v: Value,
) -> std::result::Result<SessionSearchRequest, ArgError> {
    if !v.is_object() {
        return Err(invalid_arg(format!(
            "{method}: {param} must be a SessionSearchRequest object"
        )));
    }
    let req: SessionSearchRequest = serde_json::from_value(v).map_err(|e| {
        let raw = e.to_string();
        // Named fields and expected types only, never the rejected values.
        let text = crate::core::sanitize::serde_message(&e);
        if raw.contains("unknown field") || raw.contains("unknown variant") {
            invalid_json(format!("{method}: {param}: {text}"))
        } else {
            invalid_arg(format!("{method}: {param}: {text}"))
        }
    })?;
    req.validate()
        .map_err(|why| invalid_arg(format!("{method}: {param}: {why}")))?;
    Ok(req)
}

fn check_type(method: &str, p: &ParamSpec, v: &Value) -> std::result::Result<(), ArgError> {
    let (base, nullable) = match p.ty.strip_suffix('?') {
        Some(b) => (b, true),
        None => (p.ty.as_str(), false),
    };
    let wrong = |why: &str| invalid_arg(format!("{method}: {} must be {why}", p.name));
    if v.is_null() {
        return if nullable {
            Ok(())
        } else {
            Err(wrong(&format!("a {base}, not null")))
        };
    }
    let text = |v: &Value| -> std::result::Result<String, ArgError> {
        let s = v
            .as_str()
            .ok_or_else(|| wrong(&format!("a {base} (JSON string)")))?;
        if s.len() > MAX_STR_ARG_BYTES {
            return Err(wrong(&format!("at most {MAX_STR_ARG_BYTES} bytes")));
        }
        Ok(s.to_string())
    };
    match base {
        "str" => text(v).map(drop),
        "int" => v
            .as_i64()
            .map(drop)
            .ok_or_else(|| wrong("an integer (64-bit)")),
        "bool" => v.as_bool().map(drop).ok_or_else(|| wrong("a boolean")),
        "access_scope" => match text(v)?.as_str() {
            "owned" | "accessible" => Ok(()),
            _ => Err(wrong("\"owned\" or \"accessible\"")),
        },
        "audit_event_type" => match text(v)?.as_str() {
            "all" | "checkpoints" | "projects" | "teams" | "organizations" => Ok(()),
            _ => Err(wrong(
                "one of \"all\", \"checkpoints\", \"projects\", \"teams\", \"organizations\"",
            )),
        },
        "date" => {
            if super::is_date(&text(v)?) {
                Ok(())
            } else {
                Err(wrong("a date YYYY-MM-DD"))
            }
        }
        "datetime" => {
            if super::is_rfc3339(&text(v)?, false) {
                Ok(())
            } else {
                Err(wrong("an RFC 3339 datetime, e.g. 2026-07-01T00:00:00Z"))
            }
        }
        other => Err(invalid_arg(format!(
            "{method}: {}: unsupported parameter type {other}",
            p.name
        ))),
    }
}

fn json<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::fatal(format!("cannot serialize the result: {e}")))
}

/// Runs a prepared call on `client`; the result is the response model as JSON (`null` for
/// `None`, a JSON string for `str`).
pub(crate) fn dispatch(client: &RestClient, call: PreparedCall) -> ApiFuture<Value> {
    let a = &call.args;
    macro_rules! run {
        ($fut:expr) => {
            client.spawn_value($fut, json)
        };
    }
    match call.spec.name.as_str() {
        "list_training_runs" => run!(client.list_training_runs(
            a.int("limit"),
            a.int("offset"),
            a.scope("access_scope"),
            a.opt_str("project_id"),
        )),
        "get_training_run" => {
            run!(client.get_training_run(a.str("training_run_id"), a.scope("access_scope")))
        }
        "get_training_run_by_tinker_path" => {
            run!(client
                .get_training_run_by_tinker_path(a.str("tinker_path"), a.scope("access_scope")))
        }
        "list_checkpoints" => run!(client.list_checkpoints(a.str("training_run_id"))),
        "list_user_checkpoints" => {
            run!(client.list_user_checkpoints(a.int("limit"), a.int("offset")))
        }
        "delete_checkpoint" => {
            run!(client.delete_checkpoint(a.str("training_run_id"), a.str("checkpoint_id")))
        }
        "delete_checkpoint_from_tinker_path" => {
            run!(client.delete_checkpoint_from_tinker_path(a.str("tinker_path")))
        }
        "publish_checkpoint_from_tinker_path" => {
            run!(client.publish_checkpoint_from_tinker_path(a.str("tinker_path")))
        }
        "unpublish_checkpoint_from_tinker_path" => {
            run!(client.unpublish_checkpoint_from_tinker_path(a.str("tinker_path")))
        }
        "set_checkpoint_ttl_from_tinker_path" => run!(client
            .set_checkpoint_ttl_from_tinker_path(a.str("tinker_path"), a.opt_int("ttl_seconds"))),
        "get_external_weights_urls" => {
            run!(client.get_external_weights_urls(a.str("tinker_path")))
        }
        "get_weights_info_by_tinker_path" => {
            run!(client.get_weights_info_by_tinker_path(a.str("tinker_path")))
        }
        "list_sessions" => {
            run!(client.list_sessions(a.int("limit"), a.int("offset"), a.scope("access_scope")))
        }
        "get_session" => run!(client.get_session(a.str("session_id"), a.scope("access_scope"))),
        "assign_session_project" => {
            run!(client.assign_session_project(a.str("session_id"), a.str("project_id")))
        }
        "export_session_trace" => run!(client.export_session_trace(a.str("session_id"))),
        "search_sessions" => {
            run!(client.search_sessions(call.search.clone().unwrap_or_default()))
        }
        "copy_weights" => run!(client.copy_weights(
            a.str("path"),
            a.opt_str("destination_project_id"),
            a.opt_int("ttl_seconds"),
            a.opt_str("weights_access_token"),
        )),
        "get_sampler" => run!(client.get_sampler(a.str("sampler_id"))),
        "get_server_capabilities" => run!(client.get_server_capabilities()),
        "whoami" => run!(client.whoami()),
        "get_audit_log" => run!(client.get_audit_log(a.str("event_type"), a.opt_str("day"))),
        "get_billing_usage" => {
            run!(client.get_billing_usage(a.str("starting_on"), a.str("ending_before")))
        }
        "get_current_checkpoint_storage_usage" => {
            run!(client.get_current_checkpoint_storage_usage(a.opt_str("project_id")))
        }
        other => ApiFuture::ready(Err(Error::user(format!(
            "method {other} of the table has no implementation"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_parses_and_every_type_is_known() {
        let t = table();
        assert_eq!(t.version, 1);
        assert_eq!(t.methods.len(), 24);
        for m in &t.methods {
            for p in &m.params {
                let base = p.ty.trim_end_matches('?');
                assert!(
                    [
                        "str",
                        "int",
                        "bool",
                        "access_scope",
                        "audit_event_type",
                        "date",
                        "datetime",
                        "SessionSearchRequest"
                    ]
                    .contains(&base),
                    "{}: {}",
                    m.name,
                    p.ty
                );
            }
        }
    }

    #[test]
    fn arguments_are_checked_against_the_table() {
        let c = prepare("rest", "list_training_runs", Value::Null).unwrap();
        assert_eq!(c.args.int("limit"), 20);
        assert_eq!(c.args.str("access_scope"), "owned");
        assert_eq!(c.args.opt_str("project_id"), None);
        let e = prepare("rest", "nope", json!({})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidArg);
        assert!(e.message.contains("nope"), "{e}");
        let e = prepare("rest", "list_training_runs", json!({"limt": 1})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidJson);
        let e = prepare("rest", "list_training_runs", json!({"limit": "1"})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidArg);
        let e = prepare("rest", "get_training_run", json!({})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidArg);
        assert!(e.message.contains("training_run_id"), "{e}");
        let e = prepare("rest", "list_sessions", json!({"access_scope": "mine"})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidArg);
        let e = prepare("rest", "list_sessions", json!([1])).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidJson);
        // `ttl_seconds` is required but nullable.
        assert!(prepare(
            "rest",
            "set_checkpoint_ttl_from_tinker_path",
            json!({"tinker_path": "tinker://r/weights/a", "ttl_seconds": null})
        )
        .is_ok());
        assert!(prepare(
            "rest",
            "set_checkpoint_ttl_from_tinker_path",
            json!({"tinker_path": "tinker://r/weights/a"})
        )
        .is_err());
        let e = prepare("admin", "list_sessions", json!({})).unwrap_err();
        assert_eq!(e.kind, ArgErrorKind::InvalidArg);
        assert!(prepare("admin", "get_audit_log", json!({"day": "2026-07-01"})).is_ok());
        assert!(prepare("admin", "get_audit_log", json!({"day": "2026-13-01"})).is_err());
        assert!(prepare("admin", "get_audit_log", json!({"event_type": "x"})).is_err());
        assert!(prepare(
            "admin",
            "get_billing_usage",
            json!({"starting_on": "2026-07-01T00:00:00Z", "ending_before": "2026-07-02T00:00:00+02:00"})
        )
        .is_ok());
        assert!(prepare(
            "admin",
            "get_billing_usage",
            json!({"starting_on": "yesterday", "ending_before": "2026-07-02T00:00:00Z"})
        )
        .is_err());
    }

    #[test]
    fn search_requests_follow_the_official_model() {
        let c = prepare("rest", "search_sessions", json!({"request": {}})).unwrap();
        let body = serde_json::to_value(c.search.unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"user_metadata": {}, "owner": {"type": "own"}, "limit": 50})
        );
        let c = prepare(
            "rest",
            "search_sessions",
            json!({"request": {"display_name": "nightly",
                   "statuses": [{"type": "client_finished", "reasons": ["errored"]}]}}),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(c.search.unwrap()).unwrap(),
            json!({"user_metadata": {}, "display_name": "nightly", "owner": {"type": "own"},
                   "statuses": [{"type": "client_finished", "reasons": ["errored"]}], "limit": 50})
        );
        for (bad, kind) in [
            (json!({"limit": 0}), ArgErrorKind::InvalidArg),
            (json!({"limit": 201}), ArgErrorKind::InvalidArg),
            (json!({"display_name": ""}), ArgErrorKind::InvalidArg),
            (json!({"statuses": []}), ArgErrorKind::InvalidArg),
            (
                json!({"owner": {"type": "user", "owner_urns": []}}),
                ArgErrorKind::InvalidArg,
            ),
            (json!({"bogus": 1}), ArgErrorKind::InvalidJson),
            (
                json!({"owner": {"type": "nobody"}}),
                ArgErrorKind::InvalidJson,
            ),
        ] {
            let e = prepare("rest", "search_sessions", json!({ "request": bad })).unwrap_err();
            assert_eq!(e.kind, kind, "{bad}: {e}");
        }
    }
}
