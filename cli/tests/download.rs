//! `tinkex checkpoint download` against an in-process emulator (PROTOCOL.md 9.8): a download
//! interrupted mid-body resumes with a Range request (and restarts when the server cannot
//! prove the bytes are the same file), an interrupted command resumes on its next run, an
//! expired URL is signed again, URLs are re-signed before they expire, and a training
//! checkpoint goes through a temporary export in a session that is closed and whose export
//! is deleted.

mod support;

use serde_json::json;
use std::path::PathBuf;
use support::*;

fn dest_of(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v["destination"].as_str().unwrap())
}

/// An emulator with the fixture, the served files of its external checkpoint and a CLI.
async fn setup(
    tag: &str,
) -> (
    tinkex_emulator::RunningEmulator,
    Fixture,
    std::collections::BTreeMap<String, Vec<u8>>,
    Cli,
) {
    let emu = emulator_with(tag, |_| {}).await;
    let fx = fixture(&emu).await;
    let want = external_files(&emu, &fx.external).await;
    let cli = Cli::new(&emu, tag);
    (emu, fx, want, cli)
}

/// The download attempts of the weights file: (status) in order.
fn weight_downloads(emu: &tinkex_emulator::RunningEmulator) -> Vec<u16> {
    downloads(emu)
        .into_iter()
        .filter(|(p, _)| p.ends_with("adapter_model.safetensors"))
        .map(|(_, s)| s)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_download_resumes_where_it_stopped() {
    let (emu, fx, want, cli) = setup("dl-resume").await;
    let weights = want["adapter_model.safetensors"].len() as u64;
    assert!(weights > 1000, "a file worth cutting: {weights} bytes");
    let served_before = weight_downloads(&emu).len();

    // The connection resets after 1000 real bytes: the next attempt asks for the rest.
    emu.state()
        .signer
        .cut_downloads("adapter_model.safetensors", 1000, 1);
    let r = cli.run(&["checkpoint", "download", &fx.external]).await;
    r.expect(0);
    assert!(r.stderr.contains("resuming from byte 1000"), "{r:#?}");
    assert!(r.stdout.starts_with("Checkpoint Download:"), "{r:#?}");
    let dest = cli
        .cwd
        .join(format!("{}_external_weights_ext-1", fx.run_id));
    assert_eq!(files_under(&dest), want, "resumed bytes make the same file");
    assert_eq!(
        weight_downloads(&emu)[served_before..],
        [200, 206],
        "one cut answer, then the tail"
    );

    // The generic fault rule's reset sends made-up bytes without an entity tag: nothing can
    // be resumed, the file restarts, and the result is still right.
    let served_before = weight_downloads(&emu).len();
    fault(
        &emu,
        json!({"path": "adapter_model.safetensors", "reset": true, "count": 1}),
    )
    .await;
    let r = cli
        .run(&[
            "-f",
            "json",
            "checkpoint",
            "download",
            "--force",
            &fx.external,
        ])
        .await;
    let dest = dest_of(&r.expect(0).json());
    assert_eq!(files_under(&dest), want);
    assert_eq!(
        weight_downloads(&emu)[served_before..],
        [200],
        "the retry got it whole"
    );
    assert_eq!(
        requests(&emu, "/api/v1/create_session"),
        1,
        "an external download is session-less"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_command_resumes_on_its_next_run() {
    let (emu, fx, want, cli) = setup("dl-rerun").await;
    let out = cli.cwd.join("models");

    // One attempt only, and the connection breaks after 700 bytes: the command fails as a
    // network error and keeps what it has.
    emu.state()
        .signer
        .cut_downloads("adapter_model.safetensors", 700, 1);
    let r = cli
        .run(&[
            "checkpoint",
            "download",
            &fx.external,
            "-o",
            out.to_str().unwrap(),
            "--attempts",
            "1",
        ])
        .await;
    r.expect(EXIT_SERVICE);
    assert!(
        r.stderr.contains("run the same command again to resume"),
        "{r:#?}"
    );
    let dest = out.join(format!("{}_external_weights_ext-1", fx.run_id));
    let part = dest.join("adapter_model.safetensors.tinkex-part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 700);
    assert!(dest.join(".tinkex-download.json").exists());

    // Another checkpoint into the same directory is refused; the same one resumes.
    let before = weight_downloads(&emu).len();
    let r = cli
        .run(&[
            "-f",
            "json",
            "checkpoint",
            "download",
            &fx.external,
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    r.expect(0);
    assert!(r.stderr.is_empty() || !r.stderr.contains("Error"), "{r:#?}");
    assert_eq!(
        weight_downloads(&emu)[before..],
        [206],
        "only the tail was fetched"
    );
    assert_eq!(files_under(&dest_of(&r.json())), want);
    assert!(
        !dest.join(".tinkex-download.json").exists(),
        "the marker goes when done"
    );

    // Done: a third run finds a finished directory and refuses without --force.
    let r = cli
        .run(&[
            "checkpoint",
            "download",
            &fx.external,
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("Target directory already exists"),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_signed_again_when_refused_or_about_to_expire() {
    let (emu, fx, want, cli) = setup("dl-sign").await;
    let signs = || {
        requests(
            &emu,
            &format!(
                "/api/v1/training_runs/{}/checkpoints/external_weights/ext-1/external_weights_urls",
                fx.run_id
            ),
        )
    };

    // A refused URL (403, as when it expired) is signed again once.
    let before = signs();
    fault(
        &emu,
        json!({"path": "/_signed/", "status": 403, "count": 1}),
    )
    .await;
    let r = cli
        .run(&["-f", "json", "checkpoint", "download", &fx.external])
        .await;
    assert_eq!(files_under(&dest_of(&r.expect(0).json())), want);
    assert_eq!(signs() - before, 2);

    // URLs that expire within the margin are signed again before each file (the emulator's
    // URLs live an hour: a margin above that re-signs every time).
    let before = signs();
    let r = cli
        .run(&[
            "-f",
            "json",
            "checkpoint",
            "download",
            "--force",
            "--resign-margin-secs",
            "4000",
            &fx.external,
        ])
        .await;
    assert_eq!(files_under(&dest_of(&r.expect(0).json())), want);
    assert_eq!(signs() - before, 1 + want.len() as u64);

    // Always refused: a user error after one re-sign, not a loop.
    fault(&emu, json!({"path": "/_signed/", "status": 403})).await;
    let r = cli
        .run(&["checkpoint", "download", "--force", &fx.external])
        .await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("refused twice"),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_checkpoint_goes_through_a_temporary_export() {
    let emu = emulator_with("dl-train", |_| {}).await;
    let fx = fixture(&emu).await;
    let cli = Cli::new(&emu, "dl-train");
    let sessions_before = requests(&emu, "/api/v1/create_session");

    let r = cli
        .run(&["-f", "json", "checkpoint", "download", &fx.training])
        .await;
    let v = r.expect(0).json();
    let dest = dest_of(&v);
    assert_eq!(
        dest.file_name().unwrap().to_str().unwrap(),
        format!("{}_weights_step-1", fx.run_id)
    );
    let files = files_under(&dest);
    assert!(
        files.contains_key("config.json") && files.contains_key("adapter_model.safetensors"),
        "{:?}",
        files.keys()
    );
    let config: serde_json::Value = serde_json::from_slice(&files["config.json"]).unwrap();
    assert_eq!(config["base_model"], json!(BASE_MODEL));
    assert_eq!(
        v["file_size_bytes"],
        json!(files.values().map(Vec::len).sum::<usize>())
    );

    // As the official CLI: one session for the export (and only for this kind of path),
    // the export loaded with save_weights_external under a TTL, renewed when signing,
    // deleted afterwards; the session finished as a success.
    assert_eq!(
        requests(&emu, "/api/v1/create_session"),
        sessions_before + 1
    );
    assert_eq!(requests(&emu, "/api/v1/load_weights"), 1);
    let journal = emu.state().journal.lock().unwrap().clone();
    let export_run = journal
        .iter()
        .find(|e| {
            e.method == "DELETE" && e.path.ends_with("/checkpoints/external_weights/download")
        })
        .map(|e| e.path.clone())
        .expect("the temporary export was deleted");
    assert!(journal
        .iter()
        .any(|e| e.method == "PUT" && e.path.ends_with("/external_weights/download/ttl")));
    let run = export_run
        .trim_start_matches("/api/v1/training_runs/")
        .split("/checkpoints/")
        .next()
        .unwrap()
        .to_string();
    assert_ne!(run, fx.run_id, "the export lives in a new training run");
    let listed = cli
        .run(&["-f", "json", "checkpoint", "list", "--run-id", &run])
        .await
        .expect(0)
        .json();
    assert_eq!(listed["checkpoints"], json!([]), "no export left behind");
    let sessions = emu.state().sessions.lock().unwrap();
    let finished: Vec<_> = sessions
        .values()
        .filter(|s| s.session_id != fx.session_id)
        .map(|s| s.finished.as_ref().map(|f| f.0))
        .collect();
    assert_eq!(
        finished,
        vec![Some(tinkex::core::types::FinishReasonKind::Success)]
    );
    drop(sessions);

    // Sampler checkpoints are refused before anything is created.
    let r = cli.run(&["checkpoint", "download", &fx.sampler]).await;
    r.expect(EXIT_USER);
    assert_eq!(
        requests(&emu, "/api/v1/create_session"),
        sessions_before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_training_download_cleans_up_and_keeps_the_partial_directory() {
    let emu = emulator_with("dl-int", |_| {}).await;
    let fx = fixture(&emu).await;
    let cli = Cli::new(&emu, "dl-int");
    // Signed downloads hang, so the interrupt arrives mid-download.
    fault(&emu, json!({"path": "/_signed/", "latency_ms": 120000})).await;
    let child = cli.spawn(&["checkpoint", "download", &fx.training]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while requests_under(&emu, "/_signed/") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let r = tokio::task::spawn_blocking(move || finished(child))
        .await
        .unwrap();
    r.expect(130);
    assert!(
        r.stderr.contains("run the same command again to resume"),
        "{r:#?}"
    );
    let dest = cli.cwd.join(format!("{}_weights_step-1", fx.run_id));
    assert!(
        dest.join(".tinkex-download.json").exists(),
        "kept for a resume"
    );

    // The temporary export is deleted and the session finished as interrupted.
    let journal = emu.state().journal.lock().unwrap().clone();
    assert!(
        journal.iter().any(|e| e.method == "DELETE"
            && e.path.ends_with("/checkpoints/external_weights/download")
            && e.status == 200),
        "the export was deleted"
    );
    let sessions = emu.state().sessions.lock().unwrap();
    let finished: Vec<_> = sessions
        .values()
        .filter(|s| s.session_id != fx.session_id)
        .map(|s| s.finished.as_ref().map(|f| f.0))
        .collect();
    assert_eq!(
        finished,
        vec![Some(tinkex::core::types::FinishReasonKind::Interrupted)]
    );
}
