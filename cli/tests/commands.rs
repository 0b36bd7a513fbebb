//! The `tinkex` binary against an in-process emulator: `--help` on every command, usage
//! errors, every REST command in both formats, the exit codes of user and service errors,
//! and that none of these commands creates a session (PROTOCOL.md 3.3).

mod support;

use serde_json::{json, Value};
use support::*;

/// Every command path of the tree.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["auth"],
    &["auth", "login"],
    &["auth", "logout"],
    &["auth", "status"],
    &["auth", "whoami"],
    &["billing"],
    &["billing", "usage"],
    &["billing", "checkpoint-storage"],
    &["checkpoint"],
    &["checkpoint", "list"],
    &["checkpoint", "info"],
    &["checkpoint", "publish"],
    &["checkpoint", "unpublish"],
    &["checkpoint", "set-ttl"],
    &["checkpoint", "delete"],
    &["checkpoint", "download"],
    &["checkpoint", "push-hf"],
    &["model"],
    &["model", "list"],
    &["run"],
    &["run", "list"],
    &["run", "info"],
    &["session"],
    &["session", "export-trace"],
    &["version"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_on_every_command_and_usage_errors_exit_2() {
    let cli = Cli {
        base_url: "http://127.0.0.1:9".into(),
        home: temp_dir("help-home"),
        api_key: None,
        cwd: temp_dir("help-cwd"),
        client_config: FAST_CLIENT_CONFIG.into(),
    };
    for path in COMMANDS {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let r = cli.run(&args).await;
        r.expect(0);
        assert!(r.stdout.contains("Usage: tinkex"), "{args:?}: {r:#?}");
    }
    let top = cli.run(&["--help"]).await;
    for group in [
        "auth",
        "billing",
        "checkpoint",
        "model",
        "run",
        "session",
        "version",
    ] {
        assert!(top.stdout.contains(group), "{group}: {top:#?}");
    }
    assert!(top.stdout.contains("--format"), "{top:#?}");
    let ck = cli.run(&["checkpoint", "--help"]).await;
    assert!(ck.stdout.contains("push-hf"), "{ck:#?}");
    assert!(ck.stdout.contains("Hugging Face"), "{ck:#?}");

    let v = cli.run(&["version"]).await;
    v.expect(0);
    assert!(v.stdout.starts_with("tinkex 0.1.0"), "{v:#?}");
    let v = cli.run(&["--format", "json", "version"]).await;
    assert_eq!(v.expect(0).json()["tinkex"], json!("0.1.0"));

    for bad in [
        &["bogus"][..],
        &["run", "list", "--columns", "id,bogus"],
        &["run", "info"],
        &["checkpoint", "set-ttl", "tinker://r/weights/a"],
        &[
            "checkpoint",
            "set-ttl",
            "tinker://r/weights/a",
            "--ttl",
            "7200",
            "--remove",
        ],
        &["checkpoint", "delete"],
        &[
            "checkpoint",
            "download",
            "tinker://r/weights/a",
            "--attempts",
            "0",
        ],
        &["--format", "xml", "version"],
    ] {
        let r = cli.run(bad).await;
        r.expect(EXIT_USAGE);
        assert!(r.stdout.is_empty(), "{bad:?}: {r:#?}");
    }
    let r = cli.run(&["run", "list", "--columns", "id,bogus"]).await;
    assert!(r.stderr.contains("Unknown column(s): bogus"), "{r:#?}");
    // As the official CLI: filters without --run-id are a user error (before any request).
    let r = cli
        .run(&[
            "checkpoint",
            "delete",
            "--type",
            "weights",
            "tinker://r/weights/a",
        ])
        .await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("require --run-id"),
        "{r:#?}"
    );
    // push-hf is listed but not available: a user error saying why.
    let r = cli
        .run(&["checkpoint", "push-hf", "tinker://r/weights/a"])
        .await;
    r.expect(EXIT_USER);
    assert!(r.stderr.contains("not available"), "{r:#?}");
}

fn paths_of(v: &Value) -> Vec<String> {
    v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tinker_path"].as_str().unwrap().to_string())
        .collect()
}

fn checkpoint<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tinker_path"] == json!(path))
        .unwrap_or_else(|| panic!("{path} not listed in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_commands_in_both_formats_create_no_session() {
    let emu = emulator_with("rest", |_| {}).await;
    let fx = fixture(&emu).await;
    let sessions_before = requests(&emu, "/api/v1/create_session");
    assert_eq!(sessions_before, 1, "the fixture's own session");
    let cli = Cli::new(&emu, "rest");

    // run list / info
    let r = cli.run(&["-f", "json", "run", "list"]).await;
    let runs = r.expect(0).json();
    assert_eq!(
        runs["runs"][0]["training_run_id"],
        json!(fx.run_id),
        "{runs}"
    );
    assert_eq!(runs["runs"][0]["lora_rank"], json!(8));
    let r = cli.run(&["run", "list"]).await;
    assert!(r.expect(0).stdout.starts_with("1 training run\n"), "{r:#?}");
    assert!(
        r.stdout.contains(&fx.run_id) && r.stdout.contains("Rank 8"),
        "{r:#?}"
    );
    let r = cli.run(&["run", "list", "-c", "id,owner,checkpoint"]).await;
    assert!(r.expect(0).stdout.contains("Owner"), "{r:#?}");
    assert!(r.stdout.contains("weights/step-1"), "{r:#?}");
    let r = cli
        .run(&["--format", "json", "run", "info", &fx.run_id])
        .await;
    let info = r.expect(0).json();
    assert_eq!(info["base_model"], json!(BASE_MODEL));
    assert_eq!(info["last_checkpoint"]["tinker_path"], json!(fx.training));
    let r = cli.run(&["run", "info", &fx.run_id]).await;
    assert!(
        r.expect(0)
            .stdout
            .starts_with(&format!("Training Run: {}\n", fx.run_id)),
        "{r:#?}"
    );
    assert!(r.stdout.contains("Yes (Rank 8)"), "{r:#?}");

    // checkpoint list / info
    let r = cli.run(&["-f", "json", "checkpoint", "list"]).await;
    let mut listed = paths_of(&r.expect(0).json());
    listed.sort();
    let mut want = vec![fx.training.clone(), fx.sampler.clone(), fx.external.clone()];
    want.sort();
    assert_eq!(listed, want);
    let r = cli.run(&["checkpoint", "list"]).await;
    assert!(r.expect(0).stdout.starts_with("3 checkpoints\n"), "{r:#?}");
    let r = cli.run(&["checkpoint", "list", "--limit", "1"]).await;
    assert!(
        r.expect(0)
            .stdout
            .starts_with("1 checkpoint (2 more not shown, use --limit to see more)\n"),
        "{r:#?}"
    );
    let r = cli
        .run(&["-f", "json", "checkpoint", "list", "--run-id", &fx.run_id])
        .await;
    let v = r.expect(0).json();
    assert_eq!(v["run_id"], json!(fx.run_id));
    assert_eq!(paths_of(&v).len(), 3);
    let r = cli
        .run(&["-f", "json", "checkpoint", "info", &fx.training])
        .await;
    let v = r.expect(0).json();
    assert_eq!(v["checkpoint_type"], json!("training"));
    assert_eq!(
        (v["is_lora"].clone(), v["lora_rank"].clone()),
        (json!(true), json!(8))
    );
    let r = cli.run(&["checkpoint", "info", &fx.sampler]).await;
    assert!(
        r.expect(0)
            .stdout
            .starts_with("Checkpoint: sampler_weights/s-1\n"),
        "{r:#?}"
    );
    let missing = format!("tinker://{}/weights/nope", fx.run_id);
    let r = cli.run(&["checkpoint", "info", &missing]).await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Checkpoint not found"),
        "{r:#?}"
    );
    let r = cli.run(&["checkpoint", "info", "not-a-path"]).await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("Invalid checkpoint path"),
        "{r:#?}"
    );

    // publish / unpublish / set-ttl, checked through the listing
    let public = |cli: Cli, path: String| async move {
        let v = cli.run(&["-f", "json", "checkpoint", "list"]).await.json();
        checkpoint(&v, &path).clone()
    };
    let r = cli.run(&["checkpoint", "publish", &fx.sampler]).await;
    assert!(r.expect(0).stdout.starts_with("Published"), "{r:#?}");
    assert_eq!(
        public(cli.clone(), fx.sampler.clone()).await["public"],
        json!(true)
    );
    let r = cli
        .run(&["-f", "json", "checkpoint", "unpublish", &fx.sampler])
        .await;
    assert_eq!(
        r.expect(0).json(),
        json!({"tinker_path": fx.sampler, "public": false})
    );
    assert_eq!(
        public(cli.clone(), fx.sampler.clone()).await["public"],
        json!(false)
    );
    cli.run(&["checkpoint", "set-ttl", &fx.sampler, "--ttl", "7200"])
        .await
        .expect(0);
    assert!(public(cli.clone(), fx.sampler.clone()).await["expires_at"].is_string());
    let r = cli
        .run(&[
            "-f",
            "json",
            "checkpoint",
            "set-ttl",
            &fx.sampler,
            "--remove",
        ])
        .await;
    assert_eq!(r.expect(0).json()["ttl_seconds"], Value::Null);
    assert!(public(cli.clone(), fx.sampler.clone()).await["expires_at"].is_null());
    let r = cli
        .run(&["checkpoint", "set-ttl", &fx.sampler, "--ttl", "5"])
        .await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Invalid request"),
        "{r:#?}"
    );

    // model list
    let r = cli.run(&["-f", "json", "model", "list"]).await;
    let models = r.expect(0).json();
    assert!(models["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model_name"] == json!(BASE_MODEL)));
    let r = cli.run(&["model", "list", "QWEN3-8b"]).await;
    assert!(r.expect(0).stdout.contains("Max Context"), "{r:#?}");
    assert!(
        r.stdout.contains(BASE_MODEL) && !r.stdout.contains("Llama"),
        "{r:#?}"
    );
    let r = cli.run(&["model", "list", "no-such-model"]).await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("No model name contains 'no-such-model'"),
        "{r:#?}"
    );

    // billing
    let (start, end) = (utc_midnight(0), utc_midnight(1));
    let r = cli
        .run(&["-f", "json", "billing", "usage", &start, &end])
        .await;
    let usage = r.expect(0).json();
    assert!(
        usage["data"].is_array() && usage["sessions"].is_object(),
        "{usage}"
    );
    let rows = usage["data"].as_array().unwrap().len();
    assert!(rows > 0, "the fixture's training is billed: {usage}");
    let r = cli.run(&["billing", "usage", &start, &end]).await;
    assert!(
        r.expect(0)
            .stdout
            .starts_with(&format!("{rows} hourly usage row(s)\n")),
        "{r:#?}"
    );
    let r = cli
        .run(&["billing", "usage", &start, &end, "--csv", "-"])
        .await;
    let csv = r.expect(0).stdout.clone();
    assert!(csv.starts_with("bucket_start,bucket_end,"), "{csv}");
    assert_eq!(csv.lines().count(), rows + 1, "{csv}");
    let r = cli
        .run(&["billing", "usage", &start, &end, "--sessions-csv", "-"])
        .await;
    assert!(
        r.expect(0).stdout.starts_with("session_id,user_metadata"),
        "{r:#?}"
    );
    assert!(r.stdout.contains(&fx.session_id), "{r:#?}");
    let r = cli
        .run(&[
            "billing",
            "usage",
            "2026-01-01T00:30:00Z",
            "2026-01-02T00:00:00Z",
        ])
        .await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Invalid request"),
        "{r:#?}"
    );
    let r = cli
        .run(&["-f", "json", "billing", "checkpoint-storage"])
        .await;
    let storage = r.expect(0).json();
    assert!(
        storage["data"].as_array().is_some_and(|d| !d.is_empty()),
        "{storage}"
    );
    let r = cli.run(&["billing", "checkpoint-storage"]).await;
    assert!(
        r.expect(0)
            .stdout
            .starts_with("Current checkpoint storage\n"),
        "{r:#?}"
    );
    let csv_path = cli.cwd.join("storage.csv");
    cli.run(&[
        "billing",
        "checkpoint-storage",
        "--csv",
        csv_path.to_str().unwrap(),
    ])
    .await
    .expect(0);
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(
        text.starts_with("effective_rate_usd_per_gigabyte_month,"),
        "{text}"
    );

    // session export-trace
    let r = cli
        .run(&[
            "-f",
            "json",
            "session",
            "export-trace",
            &fx.session_id,
            "--url-only",
        ])
        .await;
    let v = r.expect(0).json();
    assert!(v["url"].as_str().unwrap().contains("/_signed/"), "{v}");
    let r = cli
        .run(&["session", "export-trace", &fx.session_id, "--url-only"])
        .await;
    assert!(r.expect(0).stdout.trim().starts_with("http://"), "{r:#?}");
    let r = cli
        .run(&["-f", "json", "session", "export-trace", &fx.session_id])
        .await;
    let v = r.expect(0).json();
    let trace = cli.cwd.join(format!("{}.pftrace", fx.session_id));
    let len = std::fs::metadata(&trace).unwrap().len();
    assert!(len > 0 && v["file_size_bytes"] == json!(len), "{v}");
    let r = cli
        .run(&[
            "session",
            "export-trace",
            &fx.session_id,
            "-o",
            "traces/t.pftrace",
        ])
        .await;
    assert!(r.expect(0).stdout.starts_with("Trace Export:"), "{r:#?}");
    assert_eq!(
        std::fs::metadata(cli.cwd.join("traces/t.pftrace"))
            .unwrap()
            .len(),
        len
    );

    // checkpoint download of an external checkpoint: session-less
    let r = cli
        .run(&["-f", "json", "checkpoint", "download", &fx.external])
        .await;
    let v = r.expect(0).json();
    let dest = std::path::PathBuf::from(v["destination"].as_str().unwrap());
    assert_eq!(
        dest.file_name().unwrap().to_str().unwrap(),
        format!("{}_external_weights_ext-1", fx.run_id)
    );
    let want = external_files(&emu, &fx.external).await;
    assert_eq!(
        files_under(&dest),
        want,
        "the downloaded files are the served ones"
    );
    let total: usize = want.values().map(Vec::len).sum();
    assert_eq!(v["file_size_bytes"], json!(total));

    // auth status
    let r = cli.run(&["auth", "status"]).await;
    assert_eq!(
        r.expect(0).stdout,
        "Credentials available: yes\nTinker accessible: yes\n"
    );
    let r = cli.run(&["-f", "json", "auth", "status"]).await;
    assert_eq!(
        r.expect(0).json(),
        json!({"credentials_available": true, "accessible": true})
    );

    // checkpoint delete: a prompt answered no, no answer, yes; then --yes by path
    let del = [
        "checkpoint",
        "delete",
        "--run-id",
        fx.run_id.as_str(),
        "--type",
        "sampler_weights",
    ];
    let r = cli.run_with_stdin(&del, "n\n").await;
    assert!(r.expect(0).stdout.contains("Deletion cancelled."), "{r:#?}");
    assert!(r.stderr.contains("Will delete 1 checkpoint(s):"), "{r:#?}");
    let r = cli.run_with_stdin(&del, "").await;
    r.expect(EXIT_USER);
    let r = cli
        .run_with_stdin(
            &[
                "checkpoint",
                "delete",
                "--run-id",
                &fx.run_id,
                "--before",
                "2001-01-01",
            ],
            "",
        )
        .await;
    assert!(r.expect(0).stdout.contains("matching filters"), "{r:#?}");
    let r = cli.run_with_stdin(&del, "y\n").await;
    assert!(
        r.expect(0).stdout.contains("Deleted 1 checkpoint(s)"),
        "{r:#?}"
    );
    let r = cli
        .run(&["-f", "json", "checkpoint", "delete", "--yes", &fx.external])
        .await;
    assert_eq!(
        r.expect(0).json(),
        json!({"deleted_count": 1, "failed": []})
    );
    let r = cli.run(&["-f", "json", "checkpoint", "list"]).await;
    assert_eq!(paths_of(&r.expect(0).json()), vec![fx.training.clone()]);
    // A failed deletion fails the command with its class.
    let r = cli
        .run(&["-f", "json", "checkpoint", "delete", "--yes", &fx.external])
        .await;
    assert_eq!(r.expect(EXIT_USER).json()["deleted_count"], json!(0));

    assert_eq!(
        requests(&emu, "/api/v1/create_session"),
        sessions_before,
        "no CLI command above may create a session"
    );
    assert!(
        requests(&emu, "/api/v1/client/config") > 0,
        "the CLI did talk to the emulator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_user_errors_from_service_errors() {
    let emu = emulator_with("exit", |_| {}).await;
    let cli = Cli::new(&emu, "exit");

    // User errors: not found, invalid input, rejected credential.
    let r = cli.run(&["run", "info", "no-such-run"]).await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .starts_with("Error: Resource not found"),
        "{r:#?}"
    );
    let r = cli.run(&["-f", "json", "run", "info", "no-such-run"]).await;
    assert!(
        r.expect(EXIT_USER).stdout.is_empty(),
        "errors go to stderr: {r:#?}"
    );
    let r = cli
        .run(&["checkpoint", "publish", "tinker://x/bogus/y"])
        .await;
    r.expect(EXIT_USER);
    let r = cli
        .run(&["checkpoint", "download", "tinker://x/sampler_weights/y"])
        .await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("Sampler checkpoints cannot be downloaded"),
        "{r:#?}"
    );
    let mut bad_key = cli.clone();
    bad_key.api_key = Some("not-a-key".into());
    let r = bad_key.run(&["run", "list"]).await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Configuration error"),
        "{r:#?}"
    );
    assert!(
        !r.stderr.contains("not-a-key"),
        "the key is never printed: {r:#?}"
    );
    let mut no_key = cli.clone();
    no_key.api_key = None;
    let r = no_key.run(&["auth", "status"]).await;
    r.expect(EXIT_USER);
    assert!(r.stdout.contains("Credentials available: no"), "{r:#?}");

    // A 401 (a deleted key) is the user's.
    let mut deleted = cli.clone();
    deleted.api_key = Some("tml-deleted-key".into());
    emu.state().auth.delete_key("tml-deleted-key");
    let r = deleted.run(&["run", "list"]).await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Authentication failed"),
        "{r:#?}"
    );

    // Service errors: 5xx after the retries, 429, a broken connection, nobody listening.
    fault(
        &emu,
        json!({"path": "/api/v1/training_runs", "status": 503}),
    )
    .await;
    let r = cli.run(&["run", "list"]).await;
    assert!(
        r.expect(EXIT_SERVICE)
            .stderr
            .starts_with("Error: Internal server error"),
        "{r:#?}"
    );
    emu.state().faults.clear();
    fault(
        &emu,
        json!({"path": "/api/v1/get_server_capabilities", "status": 429}),
    )
    .await;
    let r = cli.run(&["model", "list"]).await;
    assert!(
        r.expect(EXIT_SERVICE)
            .stderr
            .contains("Rate limit exceeded"),
        "{r:#?}"
    );
    let r = cli.run(&["auth", "status"]).await;
    r.expect(EXIT_SERVICE);
    assert!(r.stdout.contains("Tinker accessible: no"), "{r:#?}");
    emu.state().faults.clear();
    fault(&emu, json!({"path": "/api/v1/checkpoints", "reset": true})).await;
    let r = cli.run(&["checkpoint", "list"]).await;
    r.expect(EXIT_SERVICE);
    emu.state().faults.clear();
    cli.run(&["checkpoint", "list"]).await.expect(0);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut gone = cli.clone();
    gone.base_url = closed;
    let r = gone.run(&["run", "list"]).await;
    assert!(
        r.expect(EXIT_SERVICE).stderr.contains("Connection failed"),
        "{r:#?}"
    );
}
