//! Exactly-once under a race: `tinkex_runtime_shutdown` on one thread while another submits
//! operations. Every submit that returned OK gets exactly one callback; every submit that
//! returned a status gets none. Before the fix a future became visible to shutdown before
//! its callback was attached, so shutdown could complete it silently (the submit said OK and
//! the callback never came).
//!
//! `TINKEX_RACE_ITERATIONS` sets the number of rounds (default 1000).

mod ffi_support;

use ffi_support::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tinkex::ffi::future::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;

unsafe extern "C" fn count(user_data: *mut c_void, _fut: *mut tinkex_future) {
    // SAFETY: user_data points at an AtomicU32 that outlives the runtime (see below).
    unsafe { &*(user_data as *const AtomicU32) }.fetch_add(1, Ordering::SeqCst);
}

const PER_ROUND: usize = 16;

#[test]
fn shutdown_racing_submissions_fires_every_accepted_callback_exactly_once() {
    let rounds: usize = std::env::var("TINKEX_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut accepted_total = 0usize;
    let mut refused_total = 0usize;
    for round in 0..rounds {
        let mut opts = tinkex_runtime_options_default();
        opts.worker_threads = 1;
        let mut rt = std::ptr::null_mut();
        assert_eq!(
            tinkex_runtime_new(&opts, &mut rt, std::ptr::null_mut()),
            tinkex_status::Ok
        );
        // Nothing listens on port 9: operations stay pending (retrying) until shutdown.
        let cfg = j(&config("http://127.0.0.1:9"));
        let mut svc = std::ptr::null_mut();
        assert_eq!(
            tinkex_service_client_new(rt, cfg.as_ptr(), cfg.len(), &mut svc, std::ptr::null_mut()),
            tinkex_status::Ok
        );
        let counters: Arc<Vec<AtomicU32>> =
            Arc::new((0..PER_ROUND).map(|_| AtomicU32::new(0)).collect());
        let barrier = Arc::new(Barrier::new(2));
        let (svc_addr, rt_addr) = (svc as usize, rt as usize);
        let submitter = {
            let counters = counters.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let svc = svc_addr as *mut tinkex_service_client;
                barrier.wait();
                let mut statuses = Vec::with_capacity(PER_ROUND);
                for c in counters.iter() {
                    let mut fut = std::ptr::null_mut();
                    let s = tinkex_service_client_get_server_capabilities(
                        svc,
                        Some(count),
                        c as *const AtomicU32 as *mut c_void,
                        &mut fut,
                        std::ptr::null_mut(),
                    );
                    assert_eq!(s == tinkex_status::Ok, !fut.is_null());
                    tinkex_future_free(fut);
                    statuses.push(s);
                }
                statuses
            })
        };
        barrier.wait();
        // Vary where in the burst shutdown lands.
        for _ in 0..(round % 7) * 50 {
            std::hint::spin_loop();
        }
        assert_eq!(
            tinkex_runtime_shutdown(rt_addr as *mut tinkex_runtime, 0, std::ptr::null_mut()),
            tinkex_status::Ok
        );
        let statuses = submitter.join().unwrap();
        for s in &statuses {
            assert!(
                matches!(s, tinkex_status::Ok | tinkex_status::ShutDown),
                "round {round}: unexpected status {s:?}"
            );
        }
        // Submissions that raced past shutdown's sweep are completed by the runtime's
        // teardown; wait (bounded) for every accepted callback.
        tinkex_service_client_free(svc);
        tinkex_runtime_free(rt);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let missing = statuses
                .iter()
                .zip(counters.iter())
                .filter(|(s, c)| **s == tinkex_status::Ok && c.load(Ordering::SeqCst) == 0)
                .count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {missing} accepted submissions never got their callback"
            );
            std::thread::yield_now();
        }
        for (i, (s, c)) in statuses.iter().zip(counters.iter()).enumerate() {
            let calls = c.load(Ordering::SeqCst);
            match s {
                tinkex_status::Ok => {
                    accepted_total += 1;
                    assert_eq!(calls, 1, "round {round}, submission {i}: {calls} callbacks")
                }
                _ => {
                    refused_total += 1;
                    assert_eq!(
                        calls, 0,
                        "round {round}, submission {i}: refused but called back"
                    )
                }
            }
        }
        // The counters outlive every callback: the runtime is freed and all fired.
        drop(counters);
    }
    eprintln!(
        "{rounds} rounds: {accepted_total} accepted submissions called back once each, {refused_total} refused with no callback"
    );
    assert!(
        accepted_total > 0 && refused_total > 0,
        "the race was exercised both ways"
    );
}
