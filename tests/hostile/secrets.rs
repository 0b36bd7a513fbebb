//! The secrets test through the Rust API (issue 11, item 8 and "A secrets test").
//!
//! A CHILD process (this test binary re-executed with `SECRETS_CHILD` set) runs a full
//! training + sampling + REST session against the in-process emulator of the parent with
//! the library's log level at DEBUG (the C ABI's stderr subscriber, the one every binding
//! uses), telemetry on with a short flush interval, every event printed, every error
//! printed (Display and Debug), a caught panic, `Debug` of the config and its builder, and
//! errors from bad input (a base URL with credentials, wrongly-typed config values through
//! the C ABI). The parent then asserts the canary key appears in no byte of the child's
//! stdout/stderr and in no telemetry batch the emulator received.

use crate::common::CANARY_KEY;
use crate::support;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::core::telemetry::TelemetryConfig;
use tinkex::core::types::{AdamParams, FinishReasonKind, ModelInput, SamplingParams};
use tinkex::core::{Config, LoraOptions, SampleOptions, ServiceClient};

/// The parent: runs the child and checks everything it printed and every telemetry batch.
pub fn run_parent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(support::emulator("secrets"));
    // Some retries (their events and log lines carry server text) and slow operations
    // (progress events) in an otherwise normal run.
    rt.block_on(async {
        support::fault(
            &emu,
            serde_json::json!({"path": "/api/v1/optim_step", "status": 503, "count": 2,
                               "body": {"detail": "overloaded, retry"}}),
        )
        .await;
        support::control_post(&emu, "delays", serde_json::json!({"ForwardBackward": 300})).await;
    });
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "secrets_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SECRETS_CHILD", "1")
        .env("SECRETS_URL", emu.base_url())
        .env("RUST_BACKTRACE", "1")
        .env_remove("TINKER_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let mut stdout = Vec::new();
    let _ = out.read_to_end(&mut stdout);
    let status = child.wait().unwrap();
    let stderr = t.join().unwrap();
    let telemetry = rt.block_on(support::control_get(&emu, "telemetry"));
    rt.block_on(emu.shutdown());

    let all = [stdout.as_slice(), b"\n", stderr.as_slice()].concat();
    let text = String::from_utf8_lossy(&all);
    let log_lines = text.lines().filter(|l| l.starts_with("[tinkex ")).count();
    let events = text.lines().filter(|l| l.starts_with("EVENT ")).count();
    let errors = text.lines().filter(|l| l.starts_with("ERROR ")).count();
    let batches = telemetry["batches"].as_array().map_or(0, Vec::len);
    println!(
        "secrets: child exit {status}; {} bytes of output: {log_lines} log lines, {events} events, {errors} errors; {batches} telemetry batches",
        all.len()
    );
    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!("the child failed: {status}"));
    }
    if !text.contains("SECRETS-DONE") {
        problems.push("the child did not finish its scenario".to_string());
    }
    if events == 0 || errors == 0 {
        problems.push(format!(
            "nothing captured: {events} events, {errors} errors"
        ));
    }
    if batches == 0 {
        problems.push("the emulator received no telemetry batch".into());
    }
    for line in text
        .lines()
        .filter(|l| l.contains(CANARY_KEY) || l.contains("SECRET-CANARY"))
    {
        problems.push(format!(
            "the canary is in the output: {}",
            line.chars().take(300).collect::<String>()
        ));
    }
    let tel = telemetry.to_string();
    if tel.contains(CANARY_KEY) || tel.contains("SECRET-CANARY") {
        problems.push("the canary is in a telemetry batch".into());
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn print_err(what: &str, e: &tinkex::core::Error) {
    // One line each (Debug can span lines only through escapes).
    println!("ERROR {what}: {e} | {e:?}");
}

/// The child's scenario.
pub fn run_child() {
    let Ok(url) = std::env::var("SECRETS_URL") else {
        return;
    };
    if std::env::var("SECRETS_CHILD").is_err() {
        return;
    }
    println!(); // after libtest's "test secrets_child_entry ... "
                // Panic messages are captured too (the default hook writes them to stderr).
                // Debug level through the C ABI's runtime option: installs the library's stderr
                // subscriber, as the bindings do.
    use tinkex::ffi::error::*;
    use tinkex::ffi::runtime::*;
    use tinkex::ffi::service::*;
    let mut opts = tinkex_runtime_options_default();
    opts.worker_threads = 2;
    opts.log_level = tinkex_log_level::Debug as i32;
    let mut ffi_rt = std::ptr::null_mut();
    let mut ffi_err = std::ptr::null_mut();
    assert_eq!(
        tinkex_runtime_new(&opts, &mut ffi_rt, &mut ffi_err),
        tinkex::ffi::status::tinkex_status::Ok
    );

    // Bad input through the C ABI: wrongly-typed values holding the key.
    for cfg in [
        format!(r#"{{"api_key":"{CANARY_KEY}","base_url":"{url}","telemetry":"{CANARY_KEY}"}}"#),
        format!(r#"{{"api_key":{{"value":"{CANARY_KEY}"}},"base_url":"{url}"}}"#),
        format!(r#"{{"api_key":"{CANARY_KEY}","base_url":"{url}","timeouts":"{CANARY_KEY}"}}"#),
        format!(
            r#"{{"api_key":"{CANARY_KEY}","base_url":"http://user:{CANARY_KEY}@127.0.0.1:9/"}}"#
        ),
        format!(r#"{{"api_key":"{CANARY_KEY}\u0007","base_url":"{url}"}}"#),
        format!(r#"{{"api_key":"{CANARY_KEY}","base_url":"{url}","#), // cut JSON
    ] {
        let mut svc = std::ptr::null_mut();
        let mut e = std::ptr::null_mut();
        let s = tinkex_service_client_new(ffi_rt, cfg.as_ptr(), cfg.len(), &mut svc, &mut e);
        let msg = if e.is_null() {
            String::new()
        } else {
            unsafe { std::ffi::CStr::from_ptr(tinkex_error_message(e)) }
                .to_string_lossy()
                .into_owned()
        };
        println!("ERROR ffi config: {s:?}: {msg}");
        tinkex_error_free(e);
        if !svc.is_null() {
            tinkex_service_client_free(svc);
        }
    }

    // Bad input through the Rust API.
    let builder = Config::builder().api_key(CANARY_KEY).base_url(&url);
    println!("DEBUG builder: {builder:?}");
    for bad in [
        format!("http://user:{CANARY_KEY}@127.0.0.1:9/"),
        format!("https://user:{CANARY_KEY}@example.com/"),
        format!("ftp://{CANARY_KEY}@example.com/"),
        format!("http://localhost:{CANARY_KEY}@attacker.example/"),
    ] {
        match Config::builder().api_key(CANARY_KEY).base_url(bad).build() {
            Ok(c) => println!("CONFIG accepted: {c:?}"),
            Err(e) => print_err("bad base url", &e),
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config::builder()
        .api_key(CANARY_KEY)
        .base_url(&url)
        .telemetry(true)
        .telemetry_settings(TelemetryConfig {
            flush_interval: Duration::from_millis(100),
            ..TelemetryConfig::default()
        })
        .retry(support::fast_retry())
        .progress_event_interval(Duration::from_millis(50))
        .build()
        .expect("config");
    println!("DEBUG config: {config:?}");
    let service = ServiceClient::with_runtime(config, rt.handle().clone()).expect("client");
    let seen = Arc::new(Mutex::new(0usize));
    let s2 = seen.clone();
    service.events().subscribe(move |ev| {
        *s2.lock().unwrap() += 1;
        println!("EVENT {ev:?}");
    });
    rt.block_on(async {
        let training = service
            .create_lora_training_client(
                support::BASE_MODEL,
                LoraOptions {
                    rank: 8,
                    ..Default::default()
                },
            )
            .await
            .expect("training client");
        for _ in 0..3 {
            let fb = training.forward_backward(support::batch(), "cross_entropy", None);
            let opt = training.optim_step(AdamParams {
                learning_rate: 1e-3,
                ..Default::default()
            });
            println!("RESULT fb {:?}", fb.await.map(|o| o.metrics));
            println!("RESULT opt {:?}", opt.await.map(|o| o.metrics));
        }
        let path = training.save_state("secrets").await.expect("save");
        println!("RESULT save {path}");
        let sampler = training
            .save_weights_and_get_sampling_client()
            .await
            .expect("sampler");
        let out = sampler
            .sample(
                ModelInput::from_ints(vec![100_000, 100_001]),
                2,
                SamplingParams {
                    max_tokens: Some(4),
                    ..Default::default()
                },
                SampleOptions::default(),
            )
            .await;
        println!("RESULT sample {:?}", out.map(|o| o.sequences.len()));
        println!(
            "RESULT logprobs {:?}",
            sampler
                .compute_logprobs(ModelInput::from_ints(vec![1, 2, 3]))
                .await
        );
        let rest = service.create_rest_client();
        println!(
            "RESULT runs {:?}",
            rest.list_training_runs(10, 0, Default::default(), None)
                .await
        );
        println!(
            "RESULT run {:?}",
            rest.get_training_run(training.model_id(), Default::default())
                .await
        );
        println!(
            "RESULT checkpoints {:?}",
            rest.list_checkpoints(training.model_id()).await
        );
        println!("RESULT user {:?}", rest.list_user_checkpoints(10, 0).await);
        println!(
            "RESULT info {:?}",
            rest.get_weights_info_by_tinker_path(&path).await
        );
        // Errors from the server and from bad arguments.
        if let Err(e) = rest
            .get_training_run("no-such-run", Default::default())
            .await
        {
            print_err("get_training_run", &e);
        }
        if let Err(e) = training
            .forward_backward(support::batch(), "no_such_loss", None)
            .await
        {
            print_err("bad loss", &e);
        }
        if let Err(e) = service
            .create_sampling_client("tinker://no-such/sampler_weights/x")
            .await
        {
            print_err("bad sampler path", &e);
        }
        if let Err(e) = rest
            .delete_checkpoint_from_tinker_path("not-a-tinker-path")
            .await
        {
            print_err("bad delete", &e);
        }
        if let Err(e) = training.load_state("tinker://nope/weights/nope").await {
            print_err("bad load", &e);
        }
        // A panic inside the library (caught at the C ABI boundary).
        let mut e = std::ptr::null_mut();
        let s = tinkex::ffi::testing::tinkex_testing_panic_in_export(&mut e);
        if !e.is_null() {
            let msg = unsafe { std::ffi::CStr::from_ptr(tinkex_error_message(e)) };
            println!("ERROR panic: {s:?}: {}", msg.to_string_lossy());
            tinkex_error_free(e);
        }
        service
            .close(FinishReasonKind::Success, None)
            .await
            .expect("close");
    });
    println!("EVENTS seen {}", seen.lock().unwrap());
    drop(service);
    rt.shutdown_timeout(Duration::from_secs(5));
    let mut e = std::ptr::null_mut();
    let _ = tinkex_runtime_shutdown(ffi_rt, 2000, &mut e);
    tinkex_error_free(e);
    tinkex_runtime_free(ffi_rt);
    println!("SECRETS-DONE");
}
