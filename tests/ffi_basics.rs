//! The C ABI without a server: versions and the header, statuses, `_free(NULL)`, NULL /
//! invalid-UTF-8 / invalid-JSON arguments, runtime options, the datum batch's checks.

mod ffi_support;

use ffi_support::*;
use std::ffi::CStr;
use std::process::Command;
use tinkex::ffi::bytes::*;
use tinkex::ffi::custom_loss::*;
use tinkex::ffi::datum::*;
use tinkex::ffi::error::*;
use tinkex::ffi::event::*;
use tinkex::ffi::future::*;
use tinkex::ffi::rest::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::*;
use tinkex::ffi::training::*;
use tinkex::ffi::version::*;

const HEADER: &str = include_str!("../include/tinkex.h");

fn header_define(name: &str) -> String {
    let prefix = format!("#define {name} ");
    HEADER
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} is not defined in include/tinkex.h"))
        .trim()
        .to_string()
}

#[test]
fn version_macros_match_cargo_and_the_library() {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap();
    assert_eq!(header_define("TINKEX_VERSION_MAJOR"), major.to_string());
    assert_eq!(header_define("TINKEX_VERSION_MINOR"), minor.to_string());
    assert_eq!(header_define("TINKEX_VERSION_PATCH"), patch.to_string());
    let number = major * 1_000_000 + minor * 1_000 + patch;
    assert_eq!(header_define("TINKEX_VERSION_NUMBER"), number.to_string());
    assert_eq!(
        header_define("TINKEX_VERSION"),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(tinkex_version_number(), number);
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(tinkex_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        header_define("TINKEX_ABI_VERSION_MAJOR"),
        TINKEX_ABI_VERSION_MAJOR.to_string()
    );
    assert_eq!(
        header_define("TINKEX_ABI_VERSION_MINOR"),
        TINKEX_ABI_VERSION_MINOR.to_string()
    );
    assert_eq!(tinkex_abi_version_major(), TINKEX_ABI_VERSION_MAJOR);
    assert_eq!(tinkex_abi_version_minor(), TINKEX_ABI_VERSION_MINOR);
    assert_eq!(header_define("TINKEX_WAIT_FOREVER"), "UINT64_MAX");
}

#[test]
fn the_committed_header_is_the_generated_one() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/tinkex.h"))
        .expect("build.rs writes $OUT_DIR/tinkex.h");
    assert!(
        generated == HEADER,
        "include/tinkex.h is stale: run TINKEX_WRITE_HEADER=1 cargo build"
    );
}

/// Whether a missing compiler fails the header test instead of skipping it: in CI (`CI`
/// set and non-empty) or when `TINKEX_REQUIRE_CC=1`.
fn compiler_required(ci: Option<&str>, require_cc: Option<&str>) -> bool {
    ci.is_some_and(|v| !v.is_empty()) || require_cc == Some("1")
}

#[test]
fn a_missing_compiler_is_required_in_ci_or_on_request() {
    assert!(!compiler_required(None, None));
    assert!(!compiler_required(Some(""), None));
    assert!(!compiler_required(None, Some("0")));
    assert!(compiler_required(Some("true"), None));
    assert!(compiler_required(Some("1"), Some("0")));
    assert!(compiler_required(None, Some("1")));
}

/// Compiles `src` with `compiler`. A compiler that is not installed skips (`None`, with the
/// reason printed) on a developer machine but fails the test in CI or with
/// `TINKEX_REQUIRE_CC=1` ([`compiler_required`]).
fn compiles(compiler: &str, args: &[&str], file: &str, src: &str) -> Option<bool> {
    if let Err(e) = Command::new(compiler).arg("--version").output() {
        let ci = std::env::var("CI").ok();
        let require_cc = std::env::var("TINKEX_REQUIRE_CC").ok();
        assert!(
            !compiler_required(ci.as_deref(), require_cc.as_deref()),
            "{compiler} cannot run ({e}) but the header must be compiled here \
             (CI={ci:?}, TINKEX_REQUIRE_CC={require_cc:?})"
        );
        eprintln!(
            "SKIPPED: {compiler} cannot run ({e}); the header was not compiled with it \
             (set CI or TINKEX_REQUIRE_CC=1 to make this a failure)"
        );
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tinkex-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, src).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let out = Command::new(compiler)
        .args(args)
        .arg("-I")
        .arg(include)
        .arg("-fsyntax-only")
        .arg(&path)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Some(out.status.success())
}

#[test]
fn the_header_is_valid_c11_and_cpp17_and_can_be_included_twice() {
    let src = "#include \"tinkex.h\"\n#include \"tinkex.h\"\n\
               int main(void) { tinkex_status s = TINKEX_STATUS_OK; return (int)s; }\n";
    let strict = ["-Wall", "-Wextra", "-Werror", "-pedantic"];
    for (compiler, std, file) in [("cc", "-std=c11", "h.c"), ("c++", "-std=c++17", "h.cpp")] {
        for testing in [false, true] {
            let mut args = vec![std];
            args.extend(strict);
            if testing {
                args.push("-DTINKEX_TESTING");
            }
            if let Some(ok) = compiles(compiler, &args, file, src) {
                assert!(ok, "{compiler} {args:?} rejects include/tinkex.h");
            }
        }
    }
}

#[test]
fn the_guide_shows_the_tested_example_verbatim() {
    let guide = include_str!("../docs/c-api.md");
    let example = include_str!("c/example.c");
    assert!(
        guide.contains(example),
        "docs/c-api.md must embed tests/c/example.c unchanged"
    );
}

#[test]
fn status_names_are_static_and_stable() {
    let name = |s: i32| {
        // SAFETY: a static NUL-terminated string.
        unsafe { CStr::from_ptr(tinkex_status_name(s)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(0), "TINKEX_STATUS_OK");
    assert_eq!(name(100), "TINKEX_STATUS_NULL_ARG");
    assert_eq!(name(901), "TINKEX_STATUS_PANIC");
    assert_eq!(name(12345), "TINKEX_STATUS_UNKNOWN");
    for &s in tinkex_status::all() {
        let n = name(s as i32);
        assert!(HEADER.contains(&format!("{n} = {},", s as i32)), "{n}");
    }
}

#[test]
fn free_null_does_nothing_and_getters_have_fallbacks() {
    tinkex_runtime_free(std::ptr::null_mut());
    tinkex_service_client_free(std::ptr::null_mut());
    tinkex_training_client_free(std::ptr::null_mut());
    tinkex_sampling_client_free(std::ptr::null_mut());
    tinkex_rest_client_free(std::ptr::null_mut());
    tinkex_future_free(std::ptr::null_mut());
    tinkex_error_free(std::ptr::null_mut());
    tinkex_bytes_free(std::ptr::null_mut());
    tinkex_subscription_free(std::ptr::null_mut());
    tinkex_datum_batch_free(std::ptr::null_mut());
    assert!(tinkex_runtime_clone(std::ptr::null()).is_null());
    assert!(tinkex_future_clone(std::ptr::null()).is_null());
    assert!(tinkex_service_client_clone(std::ptr::null()).is_null());
    assert!(tinkex_training_client_clone(std::ptr::null()).is_null());
    assert!(tinkex_sampling_client_clone(std::ptr::null()).is_null());
    assert!(tinkex_rest_client_clone(std::ptr::null()).is_null());
    assert_eq!(
        tinkex_error_status(std::ptr::null()),
        tinkex_status::NullArg
    );
    assert!(tinkex_error_message(std::ptr::null()).is_null());
    assert!(tinkex_error_kind(std::ptr::null()).is_null());
    assert!(tinkex_error_request_id(std::ptr::null()).is_null());
    assert_eq!(tinkex_error_http_status(std::ptr::null()), 0);
    assert!(!tinkex_error_is_retryable(std::ptr::null()));
    assert!(tinkex_bytes_data(std::ptr::null()).is_null());
    assert_eq!(tinkex_bytes_len(std::ptr::null()), 0);
    assert!(!tinkex_future_is_done(std::ptr::null()));
    assert_eq!(tinkex_datum_batch_len(std::ptr::null()), 0);
    let mut len = 7usize;
    assert!(tinkex_event_json(std::ptr::null(), &mut len).is_null());
    assert_eq!(len, 0);
    assert_eq!(
        tinkex_event_get_kind(std::ptr::null()),
        tinkex_event_kind::Other
    );
    tinkex_custom_loss_free(std::ptr::null_mut());
    assert!(tinkex_datum_batch_clone(std::ptr::null()).is_null());
}

/// Runs a call that must fail with `expected`; checks the error object and returns its
/// message.
fn fails(
    expected: tinkex_status,
    f: impl FnOnce(*mut *mut tinkex_error) -> tinkex_status,
) -> String {
    let mut err = std::ptr::null_mut();
    let s = f(&mut err);
    assert_eq!(s, expected);
    assert!(!err.is_null(), "an error object is written");
    assert_eq!(tinkex_error_status(err), expected);
    // SAFETY: NUL-terminated strings owned by `err`.
    let kind = unsafe { CStr::from_ptr(tinkex_error_kind(err)) }
        .to_str()
        .unwrap()
        .to_string();
    assert!(!kind.is_empty());
    describe(err)
}

#[test]
fn null_invalid_utf8_and_invalid_json_arguments_give_typed_statuses() {
    let rt = Rt::new();
    let mut svc = std::ptr::null_mut();
    let cfg = j(&config("http://127.0.0.1:9"));
    // NULL handle, NULL output, (NULL, len > 0) input.
    fails(tinkex_status::NullArg, |e| {
        tinkex_service_client_new(std::ptr::null_mut(), cfg.as_ptr(), cfg.len(), &mut svc, e)
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_service_client_new(rt.0, cfg.as_ptr(), cfg.len(), std::ptr::null_mut(), e)
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_service_client_new(rt.0, std::ptr::null(), 5, &mut svc, e)
    });
    // Bad text and bad JSON.
    let bad_utf8 = [b'{', 0xff, 0xfe, b'}'];
    let m = fails(tinkex_status::InvalidUtf8, |e| {
        tinkex_service_client_new(rt.0, bad_utf8.as_ptr(), bad_utf8.len(), &mut svc, e)
    });
    assert!(m.contains("UTF-8"), "{m}");
    let bad_json = b"{\"api_key\": ";
    fails(tinkex_status::InvalidJson, |e| {
        tinkex_service_client_new(rt.0, bad_json.as_ptr(), bad_json.len(), &mut svc, e)
    });
    let unknown = b"{\"api_kee\": \"tml-x\"}";
    let m = fails(tinkex_status::InvalidJson, |e| {
        tinkex_service_client_new(rt.0, unknown.as_ptr(), unknown.len(), &mut svc, e)
    });
    assert!(m.contains("api_kee"), "{m}");
    // A bad key is the client's own error kind.
    let bad_key = j(&serde_json::json!({"api_key": "sk-nope", "base_url": "http://127.0.0.1:9"}));
    fails(tinkex_status::User, |e| {
        tinkex_service_client_new(rt.0, bad_key.as_ptr(), bad_key.len(), &mut svc, e)
    });
    assert!(svc.is_null(), "outputs are written only on success");

    // A good client, then bad submissions: nothing is submitted.
    let svc = Svc::new(&rt, "http://127.0.0.1:9");
    let mut fut = std::ptr::null_mut();
    fails(tinkex_status::NullArg, |e| {
        tinkex_service_client_get_server_capabilities(
            svc.0,
            ON_DONE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            e,
        )
    });
    let not_json = b"not json";
    fails(tinkex_status::InvalidJson, |e| {
        tinkex_service_client_create_sampling_client(
            svc.0,
            not_json.as_ptr(),
            not_json.len(),
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
    let both = j(&serde_json::json!({"model_path": "tinker://a/b", "base_model": "m"}));
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_service_client_create_sampling_client(
            svc.0,
            both.as_ptr(),
            both.len(),
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_training_client_optim_step(
            std::ptr::null_mut(),
            std::ptr::null(),
            0,
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_sampling_client_sample(
            std::ptr::null_mut(),
            bad_utf8.as_ptr(),
            bad_utf8.len(),
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
    fails(tinkex_status::InvalidUtf8, |e| {
        tinkex_service_client_create_lora_training_client(
            svc.0,
            bad_utf8.as_ptr(),
            bad_utf8.len(),
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
    assert!(fut.is_null());
    fails(tinkex_status::WrongState, |e| {
        let mut b = std::ptr::null_mut();
        tinkex_service_client_session_id(svc.0, &mut b, e)
    });
    // out_err may be NULL: the status still tells.
    assert_eq!(
        tinkex_service_client_new(
            rt.0,
            bad_json.as_ptr(),
            bad_json.len(),
            &mut std::ptr::null_mut(),
            std::ptr::null_mut()
        ),
        tinkex_status::InvalidJson
    );
}

#[test]
fn runtime_options_are_validated() {
    let mut rt = std::ptr::null_mut();
    let mut opts = tinkex_runtime_options_default();
    assert_eq!(
        opts.struct_size as usize,
        std::mem::size_of::<tinkex_runtime_options>()
    );
    opts.log_level = 42;
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_runtime_new(&opts, &mut rt, e)
    });
    opts.log_level = tinkex_log_level::Off as i32;
    opts.worker_threads = 5000;
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_runtime_new(&opts, &mut rt, e)
    });
    opts.worker_threads = 1;
    opts.struct_size = 4;
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_runtime_new(&opts, &mut rt, e)
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_runtime_new(std::ptr::null(), std::ptr::null_mut(), e)
    });
    assert!(rt.is_null());
    // NULL options are the defaults; clone and free in any order.
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_runtime_new(std::ptr::null(), &mut rt, &mut err),
        tinkex_status::Ok
    );
    let rt2 = tinkex_runtime_clone(rt);
    assert_eq!(rt2, rt, "a clone is the same handle");
    tinkex_runtime_free(rt);
    assert_eq!(
        tinkex_runtime_shutdown(rt2, 100, &mut err),
        tinkex_status::Ok
    );
    tinkex_runtime_free(rt2);
}

#[test]
fn the_datum_batch_checks_dtype_shape_and_order() {
    let mut b = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(tinkex_datum_batch_new(&mut b, &mut err), tinkex_status::Ok);
    let w = [1.0f32, 1.0, 1.0];
    let name = b"weights";
    fails(tinkex_status::WrongState, |e| {
        tinkex_datum_batch_set_loss_input(
            b,
            name.as_ptr(),
            name.len(),
            w.as_ptr().cast(),
            3,
            tinkex_dtype::Float32 as i32,
            std::ptr::null(),
            0,
            e,
        )
    });
    let toks = [1i32, 2, 3];
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_datum_batch_push(b, toks.as_ptr().cast(), 3, 99, e)
    });
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_datum_batch_push(b, w.as_ptr().cast(), 3, tinkex_dtype::Float32 as i32, e)
    });
    fails(tinkex_status::NullArg, |e| {
        tinkex_datum_batch_push(b, std::ptr::null(), 3, tinkex_dtype::Int32 as i32, e)
    });
    assert_eq!(
        tinkex_datum_batch_push(
            b,
            toks.as_ptr().cast(),
            3,
            tinkex_dtype::Int32 as i32,
            &mut err
        ),
        tinkex_status::Ok
    );
    let bad_shape = [2i64, 2];
    fails(tinkex_status::InvalidArg, |e| {
        tinkex_datum_batch_set_loss_input(
            b,
            name.as_ptr(),
            name.len(),
            w.as_ptr().cast(),
            3,
            tinkex_dtype::Float32 as i32,
            bad_shape.as_ptr(),
            2,
            e,
        )
    });
    let bad_name = [0xffu8];
    fails(tinkex_status::InvalidUtf8, |e| {
        tinkex_datum_batch_set_loss_input(
            b,
            bad_name.as_ptr(),
            1,
            w.as_ptr().cast(),
            3,
            tinkex_dtype::Float32 as i32,
            std::ptr::null(),
            0,
            e,
        )
    });
    let shape = [3i64];
    assert_eq!(
        tinkex_datum_batch_set_loss_input(
            b,
            name.as_ptr(),
            name.len(),
            w.as_ptr().cast(),
            3,
            tinkex_dtype::Float32 as i32,
            shape.as_ptr(),
            1,
            &mut err,
        ),
        tinkex_status::Ok
    );
    assert_eq!(tinkex_datum_batch_len(b), 1);
    // A batch submit consumes the batch even when it fails.
    let mut fut = std::ptr::null_mut();
    fails(tinkex_status::NullArg, |e| {
        tinkex_training_client_forward_backward_batch(
            std::ptr::null_mut(),
            b,
            std::ptr::null(),
            0,
            None,
            std::ptr::null_mut(),
            &mut fut,
            e,
        )
    });
}
