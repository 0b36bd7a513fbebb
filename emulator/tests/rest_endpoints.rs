//! The REST management endpoints with real state (issue 14; PROTOCOL.md 2.8, 2.9, 6.7, 6.9,
//! 9): sessions and their search, projects, trace export, runs, checkpoints (publish, TTL
//! with real expiry), external weights URLs, copy_weights, audit, billing, storage, API key.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tinkex_emulator::auth::Identity;

const OTHER: &str = "tml-someone-else";

struct Http {
    http: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Self {
        Http {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    /// A request with a key (`None`: no credential) to an absolute URL or an API path.
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/api/v1/{path}", self.base)
        };
        let mut rb = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(k) = key {
            rb = rb.header("X-API-Key", k);
        }
        for (h, v) in extra {
            rb = rb.header(*h, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn as_(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, v, _) = self.call(method, path, Some(key), body, &[]).await;
        (s, v)
    }

    async fn session(&self, key: &str, extra: Value) -> String {
        let mut body = json!({"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = self.as_(key, "POST", "create_session", Some(body)).await;
        assert_eq!(s, 200, "{v}");
        v["session_id"].as_str().unwrap().to_string()
    }

    async fn control(&self, method: &str, path: &str, body: Value) -> Value {
        self.http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/_emulator/{path}", self.base),
            )
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn setup(tag: &str) -> (tinkex_emulator::RunningEmulator, Api, Http) {
    let dir = state_dir(tag);
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let http = Http::new(emu.base_url());
    (emu, api, http)
}

/// A model of a new session of [`KEY`] with one training checkpoint `ckpt`.
async fn model_with_checkpoint(api: &Api) -> (String, String, String) {
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    api.result_json(&api.forward_backward(&model, 1, &batch(), false).await)
        .await;
    let f = api
        .ok(
            "save_weights",
            json!({"model_id": model, "path": "ckpt", "seq_id": 2, "type": "save_weights"}),
        )
        .await;
    let r = api.result_json(f["request_id"].as_str().unwrap()).await;
    let path = r["path"].as_str().unwrap().to_string();
    (session, model, path)
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x["session_id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn sessions_are_owned_scoped_and_assigned_to_projects() {
    let (_emu, _api, h) = setup("rest-sessions").await;
    let a1 = h
        .session(
            KEY,
            json!({"project_id": "proj-a", "display_name": "nightly run"}),
        )
        .await;
    let a2 = h.session(KEY, json!({})).await;
    let b1 = h.session(OTHER, json!({})).await;

    let (s, v) = h.as_(KEY, "GET", "sessions", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        ids(&v, "sessions"),
        vec![a2.clone(), a1.clone()],
        "own, newest first"
    );
    let (_, v) = h.as_(KEY, "GET", "sessions?limit=1&offset=1", None).await;
    assert_eq!(ids(&v, "sessions"), vec![a1.clone()]);
    assert_eq!(
        h.as_(KEY, "GET", "sessions?access_scope=mine", None)
            .await
            .0,
        400
    );
    assert_eq!(h.as_(KEY, "GET", "sessions?limit=-1", None).await.0, 400);

    let (s, v) = h.as_(KEY, "GET", &format!("sessions/{a1}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["display_name"], "nightly run");
    assert_eq!(
        h.as_(OTHER, "GET", &format!("sessions/{a1}"), None).await.0,
        404
    );

    // proj-a belongs to KEY's user: a foreign user may neither create into it nor assign.
    let (s, _) = h
        .as_(OTHER, "POST", "create_session", Some(json!({"tags": [], "user_metadata": {}, "sdk_version": "x", "project_id": "proj-a"})))
        .await;
    assert_eq!(s, 403);
    let assign = |p: &str| json!({ "project_id": p });
    assert_eq!(
        h.as_(
            OTHER,
            "PUT",
            &format!("sessions/{b1}/project"),
            Some(assign("proj-a"))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        h.as_(
            KEY,
            "PUT",
            &format!("sessions/{a2}/project"),
            Some(json!({}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        h.as_(KEY, "PUT", "sessions/nope/project", Some(assign("proj-a")))
            .await
            .0,
        404
    );
    assert_eq!(
        h.as_(
            OTHER,
            "PUT",
            &format!("sessions/{a2}/project"),
            Some(assign("x"))
        )
        .await
        .0,
        404,
        "not the owner"
    );
    assert_eq!(
        h.as_(
            KEY,
            "PUT",
            &format!("sessions/{a2}/project"),
            Some(assign("proj-a"))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.as_(
            KEY,
            "PUT",
            &format!("sessions/{a2}/project"),
            Some(assign("proj-a"))
        )
        .await
        .0,
        200,
        "same project: no-op"
    );
    let (s, v) = h
        .as_(
            KEY,
            "PUT",
            &format!("sessions/{a2}/project"),
            Some(assign("proj-z")),
        )
        .await;
    assert_eq!(s, 400, "a session cannot be moved out of a project: {v}");

    // Membership makes proj-a's sessions accessible (not owned) to the other user.
    let other_urn = Identity::of_key(OTHER).user_urn;
    h.control(
        "POST",
        "projects",
        json!({"project_id": "proj-a", "members": [other_urn]}),
    )
    .await;
    let (_, owned) = h.as_(OTHER, "GET", "sessions", None).await;
    assert_eq!(ids(&owned, "sessions"), vec![b1.clone()]);
    let (_, acc) = h
        .as_(OTHER, "GET", "sessions?access_scope=accessible", None)
        .await;
    assert_eq!(
        ids(&acc, "sessions"),
        vec![b1.clone(), a2.clone(), a1.clone()]
    );
    assert_eq!(
        h.as_(
            OTHER,
            "GET",
            &format!("sessions/{a1}?access_scope=accessible"),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn session_search_applies_every_filter_and_pages_newest_first() {
    let (_emu, _api, h) = setup("rest-search").await;
    let mut made = Vec::new();
    for i in 0..5 {
        let meta = json!({"team": if i % 2 == 0 { "rl" } else { "sft" }, "i": i.to_string()});
        let name = format!("Nightly Run {i}");
        made.push(
            h.session(KEY, json!({"user_metadata": meta, "display_name": name}))
                .await,
        );
    }
    let other = h
        .session(OTHER, json!({"display_name": "nightly other"}))
        .await;
    let finish = |id: &str, reason: &str| {
        (
            format!("sessions/{id}/finish"),
            json!({"reason": {"type": reason}, "detail": null}),
        )
    };
    let (p, b) = finish(&made[1], "errored");
    assert_eq!(h.as_(KEY, "POST", &p, Some(b)).await.0, 200);
    let (p, b) = finish(&made[3], "success");
    assert_eq!(h.as_(KEY, "POST", &p, Some(b)).await.0, 200);

    let search = |body: Value| async { h.as_(KEY, "POST", "sessions/search", Some(body)).await };
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let (s, v) = search(json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&v, "sessions"), newest_first, "own only, newest first");
    assert_eq!(v["next_cursor"], Value::Null);
    assert_eq!(v["sessions"][0]["status"]["type"], "active");
    assert_eq!(v["sessions"][0]["project_id"], "default");

    let (_, v) = search(json!({"user_metadata": {"team": "rl"}})).await;
    assert_eq!(
        ids(&v, "sessions"),
        vec![made[4].clone(), made[2].clone(), made[0].clone()]
    );
    let (_, v) = search(json!({"display_name": "run NIGHTLY 3"})).await;
    assert_eq!(
        ids(&v, "sessions"),
        vec![made[3].clone()],
        "every word, any case"
    );
    let (_, v) = search(json!({"display_name": "run 3", "session_id": made[0]})).await;
    assert_eq!(
        ids(&v, "sessions"),
        vec![made[3].clone(), made[0].clone()],
        "id OR name"
    );
    let (_, v) =
        search(json!({"statuses": [{"type": "client_finished", "reasons": ["errored"]}]})).await;
    assert_eq!(ids(&v, "sessions"), vec![made[1].clone()]);
    assert_eq!(v["sessions"][0]["status"]["reason"]["type"], "errored");
    let (_, v) = search(json!({"statuses": [{"type": "client_finished"}]})).await;
    assert_eq!(ids(&v, "sessions"), vec![made[3].clone(), made[1].clone()]);
    let (_, v) = search(json!({"statuses": [{"type": "active"}, {"type": "cancelled"}]})).await;
    assert_eq!(ids(&v, "sessions").len(), 3);
    let (_, v) = search(json!({"owner": {"type": "accessible"}, "display_name": "nightly"})).await;
    assert!(
        !ids(&v, "sessions").contains(&other),
        "another user's default-project session is not accessible"
    );
    let (_, v) = search(json!({"project_ids": ["default"]})).await;
    assert_eq!(ids(&v, "sessions").len(), 5);

    // Cursor paging, limit 2: every session once, newest first.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..10 {
        let mut body = json!({"limit": 2});
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let (s, v) = search(body).await;
        assert_eq!(s, 200, "{v}");
        seen.extend(ids(&v, "sessions"));
        cursor = v["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, newest_first);

    for bad in [
        json!({"limit": 0}),
        json!({"limit": 201}),
        json!({"statuses": []}),
        json!({"display_name": ""}),
        json!({"bogus": 1}),
        json!({"owner": {"type": "user", "owner_urns": []}}),
        json!({"owner": {"type": "user", "owner_urns": vec!["u"; 11]}}),
        json!({"statuses": [{"type": "client_finished", "reasons": ["meh"]}]}),
        json!({"cursor": {"last_created_at": "yesterday", "last_session_id": "x"}}),
        json!({"user_metadata": {"k": 1}}),
    ] {
        let (s, v) = search(bad.clone()).await;
        assert_eq!(s, 400, "{bad} → {v}");
    }
    h.session(OTHER, json!({"project_id": "secret"})).await;
    assert_eq!(search(json!({"project_ids": ["secret"]})).await.0, 403);
}

#[tokio::test]
async fn trace_export_is_pending_then_ready_with_a_signed_trace_or_failed() {
    let (_emu, api, h) = setup("rest-trace").await;
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let fb = api.forward_backward(&model, 1, &batch(), false).await;
    api.result_json(&fb).await;
    let path = format!("sessions/{session}/trace_export");
    let (s, v) = h.as_(KEY, "GET", &path, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("pending")));
    let (_, v) = h.as_(KEY, "GET", &path, None).await;
    assert_eq!(v["status"], "ready", "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let (s, trace, _) = h.call("GET", &url, None, None, &[]).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ForwardBackward"), "{trace}");
    let fb_event = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["args"]["request_id"] == fb.as_str())
        .expect("the forward_backward request is in the trace");
    let tokens: usize = batch().iter().map(|(x, _)| x.len()).sum();
    assert_eq!(fb_event["args"]["tokens"], tokens);
    let downloads = h.control("GET", "signed_downloads", json!(null)).await;
    let last = downloads["downloads"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["authorization_header"], false);
    assert_eq!(last["api_key_header"], false);
    // A tampered signature is refused.
    let tampered = url.replace("sig=", "sig=0");
    assert_eq!(h.call("GET", &tampered, None, None, &[]).await.0, 403);
    // An unknown session: 404; the failure control.
    assert_eq!(
        h.as_(KEY, "GET", "sessions/nope/trace_export", None)
            .await
            .0,
        404
    );
    h.control(
        "POST",
        "trace_export",
        json!({"pending_polls": 0, "fail": "disk full"}),
    )
    .await;
    let (_, v) = h.as_(KEY, "GET", &path, None).await;
    assert_eq!(
        (v["status"].as_str(), v["error"].as_str()),
        (Some("failed"), Some("disk full"))
    );
}

#[tokio::test]
async fn checkpoints_publish_ttl_and_expire_for_their_owner_only() {
    let (_emu, api, h) = setup("rest-ckpt").await;
    let (_session, model, path) = model_with_checkpoint(&api).await;
    let base = format!("training_runs/{model}/checkpoints/weights/ckpt");

    // Runs: owner and scope.
    let (_, runs) = h.as_(KEY, "GET", "training_runs", None).await;
    assert_eq!(runs["training_runs"][0]["training_run_id"], model.as_str());
    assert_eq!(
        runs["training_runs"][0]["model_owner"],
        Identity::of_key(KEY).user_urn
    );
    let (_, runs) = h.as_(OTHER, "GET", "training_runs", None).await;
    assert_eq!(runs["training_runs"], json!([]), "another user owns no run");
    assert_eq!(runs["cursor"]["total_count"], 0);
    assert_eq!(
        h.as_(OTHER, "GET", &format!("training_runs/{model}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        h.as_(
            KEY,
            "GET",
            &format!("training_runs/{model}?access_scope=x"),
            None
        )
        .await
        .0,
        400
    );
    let (_, runs) = h
        .as_(KEY, "GET", "training_runs?project_id=default", None)
        .await;
    assert_eq!(runs["training_runs"].as_array().unwrap().len(), 1);
    let (_, runs) = h
        .as_(KEY, "GET", "training_runs?project_id=elsewhere", None)
        .await;
    assert_eq!(runs["training_runs"].as_array().unwrap().len(), 0);

    // Publish / unpublish: 404 for a non-owner, 409 when already in that state.
    assert_eq!(
        h.as_(OTHER, "POST", &format!("{base}/publish"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        h.as_(KEY, "POST", &format!("{base}/publish"), None).await.0,
        200
    );
    assert_eq!(
        h.as_(KEY, "POST", &format!("{base}/publish"), None).await.0,
        409
    );
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints"),
            None,
        )
        .await;
    assert_eq!(v["checkpoints"][0]["public"], true);
    // Public: another user may read its weights info.
    let info = json!({"tinker_path": path});
    assert_eq!(
        h.as_(OTHER, "POST", "weights_info", Some(info.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        h.as_(KEY, "DELETE", &format!("{base}/publish"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        h.as_(KEY, "DELETE", &format!("{base}/publish"), None)
            .await
            .0,
        409
    );
    assert_eq!(
        h.as_(OTHER, "POST", "weights_info", Some(info.clone()))
            .await
            .0,
        404
    );
    assert_eq!(
        h.as_(
            KEY,
            "POST",
            &format!("training_runs/{model}/checkpoints/bogus/x/publish"),
            None
        )
        .await
        .0,
        400
    );

    // TTL: range, set, clear, real expiry on the emulator's clock.
    let ttl = |t: Value| Some(json!({ "ttl_seconds": t }));
    assert_eq!(
        h.as_(KEY, "PUT", &format!("{base}/ttl"), ttl(json!(3599)))
            .await
            .0,
        400
    );
    assert_eq!(
        h.as_(
            KEY,
            "PUT",
            &format!("{base}/ttl"),
            ttl(json!(10 * 366 * 86400))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        h.as_(OTHER, "PUT", &format!("{base}/ttl"), ttl(json!(3600)))
            .await
            .0,
        404
    );
    assert_eq!(
        h.as_(KEY, "PUT", &format!("{base}/ttl"), ttl(json!(7200)))
            .await
            .0,
        200
    );
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints"),
            None,
        )
        .await;
    assert!(v["checkpoints"][0]["expires_at"].is_string(), "{v}");
    assert_eq!(
        h.as_(KEY, "PUT", &format!("{base}/ttl"), ttl(Value::Null))
            .await
            .0,
        200
    );
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints"),
            None,
        )
        .await;
    assert_eq!(v["checkpoints"][0]["expires_at"], Value::Null);
    h.control("POST", "clock", json!({"advance_seconds": 8000}))
        .await;
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints"),
            None,
        )
        .await;
    assert_eq!(
        v["checkpoints"].as_array().unwrap().len(),
        1,
        "cleared TTL: still there"
    );
    assert_eq!(
        h.as_(KEY, "PUT", &format!("{base}/ttl"), ttl(json!(3600)))
            .await
            .0,
        200
    );
    h.control("POST", "clock", json!({"advance_seconds": 3599}))
        .await;
    assert_eq!(
        h.as_(KEY, "POST", "weights_info", Some(info.clone()))
            .await
            .0,
        200,
        "not yet"
    );
    h.control("POST", "clock", json!({"advance_seconds": 2}))
        .await;
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints"),
            None,
        )
        .await;
    assert_eq!(v["checkpoints"], json!([]), "expired checkpoints disappear");
    assert_eq!(h.as_(KEY, "POST", "weights_info", Some(info)).await.0, 404);
    assert_eq!(h.as_(KEY, "DELETE", &base, None).await.0, 404);
    let (_, all) = h.as_(KEY, "GET", "checkpoints", None).await;
    assert_eq!(all["checkpoints"], json!([]));
}

#[tokio::test]
async fn external_weights_are_real_files_behind_signed_expiring_urls() {
    let (_emu, api, h) = setup("rest-external").await;
    let (_session, model, _path) = model_with_checkpoint(&api).await;
    let save = |seq: i64, name: &str, recipients: Value| json!({"model_id": model, "path": name, "seq_id": seq, "age_encryption_recipients": recipients, "type": "save_weights_external"});
    let f = api
        .ok("save_weights_external", save(3, "hf", Value::Null))
        .await;
    let r = api.result_json(f["request_id"].as_str().unwrap()).await;
    assert_eq!(r["path"], format!("tinker://{model}/external_weights/hf"));
    let size = r["size_bytes"].as_u64().unwrap();
    assert!(size > 100, "{r}");

    let (s, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints/external_weights/hf/external_weights_urls"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let urls = v["urls"].as_object().unwrap();
    let mut names: Vec<&String> = urls.keys().collect();
    names.sort();
    assert_eq!(names, ["adapter_model.safetensors", "config.json"]);
    let mut total = 0;
    for (name, url) in urls {
        let resp = reqwest::get(url.as_str().unwrap()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        let bytes = resp.bytes().await.unwrap();
        total += bytes.len() as u64;
        if name == "config.json" {
            let c: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(c["base_model"], BASE_MODEL);
        } else {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let head: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            assert_eq!(head["tinkex.tiny_model"]["dtype"], "U8");
        }
    }
    assert_eq!(total, size, "size_bytes is the files' total");
    let downloads = h.control("GET", "signed_downloads", json!(null)).await;
    assert!(downloads["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["api_key_header"] == false && d["authorization_header"] == false));

    // Not an external checkpoint: 400; unknown: 404; another user: 404.
    assert_eq!(
        h.as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints/weights/ckpt/external_weights_urls"),
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        h.as_(
            KEY,
            "GET",
            &format!(
                "training_runs/{model}/checkpoints/external_weights/nope/external_weights_urls"
            ),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        h.as_(
            OTHER,
            "GET",
            &format!("training_runs/{model}/checkpoints/external_weights/hf/external_weights_urls"),
            None
        )
        .await
        .0,
        404
    );

    // age recipients: `.age` files; bad recipients fail the future.
    let f = api
        .ok(
            "save_weights_external",
            save(4, "enc", json!(["age1qqqexample"])),
        )
        .await;
    api.result_json(f["request_id"].as_str().unwrap()).await;
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!(
                "training_runs/{model}/checkpoints/external_weights/enc/external_weights_urls"
            ),
            None,
        )
        .await;
    let mut names: Vec<&String> = v["urls"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["adapter_model.safetensors.age", "config.json.age"]);
    let f = api
        .ok(
            "save_weights_external",
            save(5, "bad", json!(["not-a-key"])),
        )
        .await;
    let r = api.result_json(f["request_id"].as_str().unwrap()).await;
    assert!(
        r["error"].as_str().unwrap().contains("age recipient"),
        "{r}"
    );

    // URLs expire (on the emulator's clock); a fresh request re-signs.
    let url = urls["config.json"].as_str().unwrap().to_string();
    h.control("POST", "clock", json!({"advance_seconds": 3601}))
        .await;
    assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 403);
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{model}/checkpoints/external_weights/hf/external_weights_urls"),
            None,
        )
        .await;
    assert_eq!(
        reqwest::get(v["urls"]["config.json"].as_str().unwrap())
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn copy_weights_makes_an_untrainable_run_once_per_idempotency_key() {
    let (_emu, api, h) = setup("rest-copy").await;
    let (_session, _model, path) = model_with_checkpoint(&api).await;
    let copy = |body: Value, key: &str| {
        let key = key.to_string();
        let h = &h;
        async move {
            let (s, v, _) = h
                .call(
                    "POST",
                    "copy_weights",
                    Some(KEY),
                    Some(body),
                    &[("X-Idempotency-Key", key.as_str())],
                )
                .await;
            (s, v)
        }
    };
    let body =
        json!({"source_path": path, "destination_project_id": "archive", "ttl_seconds": 86400});
    let (s, v) = copy(body.clone(), "k1").await;
    assert_eq!(s, 200, "{v}");
    let copied = v["tinker_path"].as_str().unwrap().to_string();
    assert!(
        copied.starts_with("tinker://copy-") && copied.ends_with("/weights/ckpt"),
        "{copied}"
    );
    let (_, again) = copy(body.clone(), "k1").await;
    assert_eq!(again["tinker_path"], copied.as_str(), "same key, same copy");
    let (_, runs) = h
        .as_(KEY, "GET", "training_runs?project_id=archive", None)
        .await;
    assert_eq!(
        runs["training_runs"].as_array().unwrap().len(),
        1,
        "one copy: {runs}"
    );
    let (_, other) = copy(body.clone(), "k2").await;
    assert_ne!(
        other["tinker_path"],
        copied.as_str(),
        "a new key copies again"
    );

    // The copy is a checkpoint with the new TTL, not trainable, and survives the source.
    let run = copied
        .trim_start_matches("tinker://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            &format!("training_runs/{run}/checkpoints"),
            None,
        )
        .await;
    assert!(v["checkpoints"][0]["expires_at"].is_string());
    let (s, _) = api
        .post("optim_step", json!({"model_id": run, "seq_id": 1, "type": "optim_step", "adam_params": {"learning_rate": 0.1}}))
        .await;
    assert_eq!(s, 404, "a copied run is untrainable");
    let src = path
        .trim_start_matches("tinker://")
        .split_once('/')
        .unwrap();
    assert_eq!(
        h.as_(
            KEY,
            "DELETE",
            &format!("training_runs/{}/checkpoints/{}", src.0, src.1),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.as_(
            KEY,
            "POST",
            "weights_info",
            Some(json!({"tinker_path": copied}))
        )
        .await
        .0,
        200
    );

    // Errors.
    assert_eq!(
        copy(
            json!({"source_path": path, "destination_project_id": "p"}),
            "k3"
        )
        .await
        .0,
        404,
        "source deleted"
    );
    assert_eq!(
        copy(json!({"source_path": copied}), "k4").await.0,
        400,
        "no destination"
    );
    assert_eq!(
        copy(
            json!({"source_path": "nonsense", "destination_project_id": "p"}),
            "k5"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        copy(
            json!({"source_path": copied, "destination_project_id": "p", "ttl_seconds": 60}),
            "k6"
        )
        .await
        .0,
        400
    );
    h.session(OTHER, json!({"project_id": "theirs"})).await;
    assert_eq!(
        copy(
            json!({"source_path": copied, "destination_project_id": "theirs"}),
            "k7"
        )
        .await
        .0,
        403
    );
    let (s, _, _) = h
        .call(
            "POST",
            "copy_weights",
            Some(OTHER),
            Some(json!({"source_path": copied, "destination_project_id": "mine"})),
            &[],
        )
        .await;
    assert_eq!(s, 404, "another user's private checkpoint");
    // session + model_seq_id: the run id is fixed, so a second copy there is a conflict.
    let session = api.session().await;
    let (s, v) = copy(
        json!({"source_path": copied, "session_id": session, "model_seq_id": 5}),
        "k8",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["tinker_path"],
        format!("tinker://{session}:train:5/weights/ckpt")
    );
    assert_eq!(
        copy(
            json!({"source_path": copied, "session_id": session, "model_seq_id": 5}),
            "k9"
        )
        .await
        .0,
        409
    );
    assert_eq!(
        copy(
            json!({"source_path": copied, "session_id": "nope", "model_seq_id": 1}),
            "k10"
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn audit_log_redirects_to_a_signed_json_of_what_happened() {
    let (_emu, api, h) = setup("rest-audit").await;
    let (_session, model, _path) = model_with_checkpoint(&api).await;
    let base = format!("training_runs/{model}/checkpoints/weights/ckpt");
    assert_eq!(
        h.as_(KEY, "POST", &format!("{base}/publish"), None).await.0,
        200
    );
    h.session(KEY, json!({"project_id": "team-x"})).await;

    let (s, _, headers) = h
        .call("GET", "audit?event_type=all", Some(KEY), None, &[])
        .await;
    assert_eq!(s, 302);
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(location.contains("/_signed/"), "{location}");
    let (s, log, _) = h.call("GET", &location, None, None, &[]).await;
    assert_eq!(s, 200);
    let events: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"checkpoint_created") && events.contains(&"checkpoint_published"),
        "{events:?}"
    );
    assert!(events.contains(&"project_created"), "{events:?}");
    let created = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "checkpoint_created")
        .unwrap();
    assert_eq!(created["model_id"], model.as_str());
    assert_eq!(
        created["event_details"]["actor"],
        Identity::of_key(KEY).user_urn
    );

    // The SDK's redirect-following client sees the JSON directly.
    let log2: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/audit?event_type=projects", h.base))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        log2["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"].as_str().unwrap().starts_with("project_")),
        "{log2}"
    );
    assert!(!log2["entries"].as_array().unwrap().is_empty());
    let (_, _, hd) = h
        .call(
            "GET",
            "audit?event_type=all&day=1999-01-01",
            Some(KEY),
            None,
            &[],
        )
        .await;
    let (_, old, _) = h
        .call("GET", hd["location"].to_str().unwrap(), None, None, &[])
        .await;
    assert_eq!(old["entries"], json!([]), "another day");
    assert_eq!(
        h.as_(KEY, "GET", "audit?event_type=everything", None)
            .await
            .0,
        400
    );
    assert_eq!(h.as_(KEY, "GET", "audit?day=2026-13-01", None).await.0, 400);
}

fn hour_floor(t: f64) -> f64 {
    (t / 3600.0).floor() * 3600.0
}

fn rfc(t: f64) -> String {
    tinkex_emulator::util::rfc3339(t).replace(".000000Z", "Z")
}

#[tokio::test]
async fn billing_usage_counts_tokens_and_checkpoints_and_validates_the_window() {
    let (_emu, api, h) = setup("rest-billing").await;
    let (session, _model, _path) = model_with_checkpoint(&api).await;
    let sampler = api
        .ok("create_sampling_session", json!({"session_id": session, "sampling_session_seq_id": 0, "base_model": BASE_MODEL, "type": "create_sampling_session"}))
        .await["sampling_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = api
        .ok("asample", json!({"num_samples": 4, "prompt": {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]},
            "sampling_params": {"max_tokens": 5, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
            "sampling_session_id": sampler, "seq_id": 0, "type": "sample"}))
        .await;
    let sampled = api.result_json(f["request_id"].as_str().unwrap()).await;
    let sampled_tokens: usize = sampled["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["tokens"].as_array().unwrap().len())
        .sum();
    assert!(sampled_tokens > 0);
    let now = tinkex_emulator::util::unix_now();
    // Two hours around now: no flake when an hour boundary passes during the test.
    let start = hour_floor(now) - 3600.0;
    let q = |s: f64, e: f64| {
        format!(
            "billing/usage/events?starting_on={}&ending_before={}",
            rfc(s),
            rfc(e)
        )
    };
    let (s, v) = h.as_(KEY, "GET", &q(start, start + 7200.0), None).await;
    assert_eq!(s, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    let of = |t: &str| data.iter().find(|e| e["event_info"]["type"] == t).cloned();
    let training = of("training").expect("training usage");
    let tokens: usize = batch().iter().map(|(x, _)| x.len()).sum();
    assert_eq!(training["event_info"]["token_count"], tokens);
    assert_eq!(training["session_id"], session.as_str());
    assert_eq!(training["base_model"], BASE_MODEL);
    assert_eq!(
        of("sampling_prefill").expect("prefill usage")["event_info"]["token_count"],
        3
    );
    assert_eq!(
        of("sampling_sample").expect("sample usage")["event_info"]["token_count"],
        sampled_tokens
    );
    assert_eq!(
        of("checkpoint").expect("checkpoint usage")["event_info"]["count"],
        1
    );
    assert!(v["sessions"][&session].is_object());
    // An earlier window holds nothing.
    let (_, v) = h.as_(KEY, "GET", &q(start - 7200.0, start), None).await;
    assert_eq!(v["data"], json!([]));
    for (s, e) in [
        (start + 60.0, start + 3600.0),     // not hour-aligned
        (start, start),                     // empty
        (start - 15.0 * 86400.0, start),    // more than 14 days
        (start + 10800.0, start + 14400.0), // in the future
    ] {
        assert_eq!(h.as_(KEY, "GET", &q(s, e), None).await.0, 400, "{s} {e}");
    }
    assert_eq!(
        h.as_(
            KEY,
            "GET",
            "billing/usage/events?starting_on=x&ending_before=y",
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(h.as_(KEY, "GET", "billing/usage/events", None).await.0, 400);
}

#[tokio::test]
async fn storage_usage_is_measured_per_project_from_the_state_dir() {
    let (_emu, api, h) = setup("rest-storage").await;
    let (_session, _model, path) = model_with_checkpoint(&api).await;
    let (s, v, _) = h
        .call(
            "POST",
            "copy_weights",
            Some(KEY),
            Some(json!({"source_path": path, "destination_project_id": "arch"})),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = h
        .as_(KEY, "GET", "billing/usage/checkpoints/current", None)
        .await;
    assert_eq!(s, 200);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    let size = |p: &str| {
        data.iter().find(|d| d["project_id"] == p).unwrap()["size_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(size("default") > 0);
    assert!(
        size("default").abs_diff(size("arch")) < 1024,
        "a copy holds the same weights (only meta.json differs)"
    );
    let (_, v) = h
        .as_(
            KEY,
            "GET",
            "billing/usage/checkpoints/current?project_id=arch",
            None,
        )
        .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["checkpoint_count"], 1);
    assert_eq!(v["data"][0]["org_user_urn"], Identity::of_key(KEY).user_urn);
}

#[tokio::test]
async fn apikey_me_describes_and_deletes_the_key_and_jwts_carry_identity_claims() {
    let (_emu, _api, h) = setup("rest-apikey").await;
    let key = "tml-to-be-deleted";
    let (s, v) = h.as_(key, "GET", "auth/apikey/me", None).await;
    assert_eq!(s, 200);
    assert!(v["key_id"].is_u64());
    assert_eq!(
        v["details"]["user_details"]["email"],
        Identity::of_key(key).email
    );
    let (s, jwt) = h.as_(key, "POST", "auth/token", Some(json!({}))).await;
    assert_eq!(s, 200);
    let claims = tinkex::core::auth::jwt_claims(jwt["jwt"].as_str().unwrap()).unwrap();
    let who = Identity::of_key(key);
    assert_eq!(claims["sub"], who.user_urn.as_str());
    assert_eq!(claims["org_id"], who.org_id.as_str());
    assert_eq!(claims["email"], who.email.as_str());
    // A JWT caller is the same owner as its key.
    let s1 = h.session(jwt["jwt"].as_str().unwrap(), json!({})).await;
    let (_, v) = h.as_(key, "GET", "sessions", None).await;
    assert_eq!(ids(&v, "sessions"), vec![s1]);
    assert_eq!(h.as_(key, "DELETE", "auth/apikey/me", None).await.0, 200);
    assert_eq!(
        h.as_(key, "GET", "sessions", None).await.0,
        401,
        "a deleted key is refused"
    );
    assert_eq!(
        h.as_(KEY, "GET", "sessions", None).await.0,
        200,
        "other keys still work"
    );
}
