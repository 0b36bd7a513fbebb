//! Exactly-once under a race: `tinkex_runtime_shutdown` on one thread while another submits
//! operations. Every submit that returned OK gets exactly one callback; every submit that
//! returned a status gets none. Before the fix a future became visible to shutdown before
//! its callback was attached, so shutdown could complete it silently (the submit said OK and
//! the callback never came).
//!
//! Each callback takes its future's result: an accepted submission that shutdown overtook
//! must complete with `SHUT_DOWN` (or `CANCELLED`), never silently. Two submitter threads
//! race one shutdown per round.
//!
//! `TINKEX_RACE_ITERATIONS` sets the number of rounds (default 1000).

mod ffi_support;

use ffi_support::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tinkex::ffi::future::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;

/// One submission's record: how many callbacks, and the status its result had.
struct Slot {
    calls: AtomicU32,
    status: AtomicI32,
}

unsafe extern "C" fn count(user_data: *mut c_void, fut: *const tinkex_future) {
    // SAFETY: user_data points at a Slot that outlives the runtime (see below).
    let slot = unsafe { &*(user_data as *const Slot) };
    let mut bytes = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = tinkex_future_take_result(fut, &mut bytes, &mut err);
    tinkex::ffi::bytes::tinkex_bytes_free(bytes);
    tinkex::ffi::error::tinkex_error_free(err);
    slot.status.store(s as i32, Ordering::SeqCst);
    slot.calls.fetch_add(1, Ordering::SeqCst);
}

const PER_ROUND: usize = 16;
const SUBMITTERS: usize = 2;

#[test]
fn shutdown_racing_submissions_fires_every_accepted_callback_exactly_once() {
    let rounds: usize = std::env::var("TINKEX_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut accepted_total = 0usize;
    let mut refused_total = 0usize;
    let mut callbacks_total = 0usize;
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
        let counters: Arc<Vec<Slot>> = Arc::new(
            (0..PER_ROUND * SUBMITTERS)
                .map(|_| Slot {
                    calls: AtomicU32::new(0),
                    status: AtomicI32::new(-1),
                })
                .collect(),
        );
        let barrier = Arc::new(Barrier::new(SUBMITTERS + 1));
        let (svc_addr, rt_addr) = (svc as usize, rt as usize);
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let counters = counters.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let svc = svc_addr as *const tinkex_service_client;
                    barrier.wait();
                    let mut statuses = Vec::with_capacity(PER_ROUND);
                    for c in &counters[t * PER_ROUND..(t + 1) * PER_ROUND] {
                        let mut fut = std::ptr::null_mut();
                        let s = tinkex_service_client_get_server_capabilities(
                            svc,
                            Some(count),
                            c as *const Slot as *mut c_void,
                            &mut fut,
                            std::ptr::null_mut(),
                        );
                        assert_eq!(s == tinkex_status::Ok, !fut.is_null());
                        tinkex_future_free(fut);
                        statuses.push(s);
                    }
                    statuses
                })
            })
            .collect();
        barrier.wait();
        // Vary where in the burst shutdown lands.
        for _ in 0..(round % 7) * 50 {
            std::hint::spin_loop();
        }
        assert_eq!(
            tinkex_runtime_shutdown(rt_addr as *mut tinkex_runtime, 0, std::ptr::null_mut()),
            tinkex_status::Ok
        );
        let statuses: Vec<tinkex_status> = submitters
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
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
                .filter(|(s, c)| **s == tinkex_status::Ok && c.calls.load(Ordering::SeqCst) == 0)
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
            let calls = c.calls.load(Ordering::SeqCst);
            match s {
                tinkex_status::Ok => {
                    accepted_total += 1;
                    assert_eq!(calls, 1, "round {round}, submission {i}: {calls} callbacks");
                    let result = c.status.load(Ordering::SeqCst);
                    assert!(
                        result == tinkex_status::ShutDown as i32
                            || result == tinkex_status::Cancelled as i32,
                        "round {round}, submission {i}: completed with status {result}"
                    );
                    callbacks_total += 1;
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
        "{rounds} rounds: {accepted_total} accepted submissions, {callbacks_total} callbacks \
         (one each, every one SHUT_DOWN/CANCELLED), {refused_total} refused with no callback"
    );
    assert!(
        accepted_total > 0 && refused_total > 0,
        "the race was exercised both ways"
    );
}
