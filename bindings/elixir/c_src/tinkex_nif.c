/*
 * tinkex_nif.c: the Erlang NIF of the Elixir binding, a thin layer over the C ABI of
 * libtinkex (include/tinkex.h).
 *
 * Rules kept here (see bindings/elixir/README.md, "How it works"):
 * - Every handle lives in a NIF resource whose destructor calls tinkex_<noun>_free. The C ABI
 *   makes frees order-independent and non-blocking, so the garbage collector may run the
 *   destructors in any order, on any thread.
 * - Every network operation is a submit call that returns at once. Its completion callback
 *   runs on libtinkex's dispatcher thread; it takes the result there and posts
 *   {tinkex, Ref, Result} to the submitting process with enif_send(NULL, ...). Nothing ever
 *   blocks a scheduler: there is no wait NIF.
 * - Only runtime_new and runtime_shutdown are dirty NIFs. Inputs that are unusually large for
 *   a single call (a JSON text or a typed array over 256 KiB) are copied
 *   by libtinkex on a dirty CPU scheduler instead (enif_schedule_nif), because the C ABI
 *   copies them synchronously.
 * - Built with -DTINKEX_NIF_TIMING (the test build: `make TINKEX_NIF_TIMING=1`, which
 *   `mix test` and run_tests.sh do), every NIF is timed while it runs on a normal scheduler
 *   (wall clock, thread CPU time, time spent blocked; see timed_body); nif_stats/0 and
 *   nif_slow_calls/0 report them, so the tests can assert the scheduler bound. Without it a
 *   call does no timing and those two return {error, not_compiled}.
 * - Live resources and pending callback contexts are counted (resource_counts/0), so the
 *   tests can assert that nothing leaks.
 * - Every fallible allocation (enif_alloc, enif_alloc_env, enif_alloc_resource,
 *   enif_make_new_binary, enif_thread_create) goes through a try_*
 *   wrapper and is checked: a NIF returns {error, {900, out_of_memory, ...}}, a completion
 *   delivers that error instead of its result, an event is dropped. Everything that must exist
 *   for a submitted operation (its callback context, its future's resource) is allocated
 *   *before* the submit call, so nothing can fail once libtinkex owns the callback.
 * - Built with -DTINKEX_NIF_TESTING (the test build only: `make TINKEX_NIF_TESTING=1`, which
 *   `mix test` does), testing_fail_alloc/1 makes the Nth of those allocations made on behalf
 *   of the calling process fail, so the tests walk every failure path.
 */

#define _GNU_SOURCE
#include <erl_nif.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TINKEX_TESTING 1
#include "tinkex.h"


static uint64_t clock_ns(clockid_t id);

/* ------------------------------------------------------------------------------------ */
/* Fallible allocations (and the test build's fault injection)                           */
/* ------------------------------------------------------------------------------------ */

#ifdef TINKEX_NIF_TESTING
/* The process on whose behalf this thread is working: the caller of the running NIF (set by
 * timed()) or the receiver of the completion or event being built (set by the callbacks). */
static _Thread_local const ErlNifPid *fault_who;
static ErlNifPid fault_pid;          /* the armed process */
static atomic_long fault_countdown;  /* > 0: the allocation that brings it to 0 fails */
static atomic_long fault_injected;   /* failures injected so far */

static int fault_now(void) {
    if (!fault_who) return 0;
    long c = atomic_load(&fault_countdown);
    if (c <= 0 || enif_compare_pids(fault_who, &fault_pid) != 0) return 0;
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fault_countdown, &c, c - 1)) {
            if (c == 1) {
                atomic_fetch_add(&fault_injected, 1);
                return 1;
            }
            return 0;
        }
    }
    return 0;
}
#define FAULT_SCOPE(pid_ptr)                                                                   \
    const ErlNifPid *fault_saved = fault_who;                                                  \
    fault_who = (pid_ptr)
#define FAULT_SCOPE_END() (fault_who = fault_saved)
#else
#define fault_now() 0
#define FAULT_SCOPE(pid_ptr) (void)(pid_ptr)
#define FAULT_SCOPE_END() ((void)0)
#endif

static void *try_alloc(size_t n) { return fault_now() ? NULL : enif_alloc(n); }

static ErlNifEnv *try_alloc_env(void) { return fault_now() ? NULL : enif_alloc_env(); }

static void *try_alloc_resource(ErlNifResourceType *type, size_t n) {
    return fault_now() ? NULL : enif_alloc_resource(type, n);
}

static unsigned char *try_new_binary(ErlNifEnv *env, size_t n, ERL_NIF_TERM *t) {
    return fault_now() ? NULL : enif_make_new_binary(env, n, t);
}

static int try_thread_create(char *name, ErlNifTid *tid, void *(*fn)(void *), void *arg) {
    return fault_now() ? ENOMEM : enif_thread_create(name, tid, fn, arg, NULL);
}

/* The test-only exports exist only in a library built with the cargo feature `testing`.
 * Weak references resolve to NULL otherwise, so the NIF loads against either build. */
#pragma weak tinkex_testing_panic_in_export
#pragma weak tinkex_testing_panic_in_task

/* Inputs above these sizes are handed to libtinkex on a dirty CPU scheduler. */
#define DIRTY_JSON_BYTES (256u * 1024u)
#define DIRTY_ARRAY_BYTES (256u * 1024u)
#define DIRTY_BATCH_BYTES (256u * 1024u)
#define SMALL_RESULT_BYTES 4096u
#define MAX_NDIM 8

/* ------------------------------------------------------------------------------------ */
/* The function list                                                                     */
/* ------------------------------------------------------------------------------------ */

/* X(name, arity, flags): every NIF of the module. */
#define NIF_LIST(X)                                                                            \
    X(runtime_new, 3, ERL_NIF_DIRTY_JOB_IO_BOUND)                                              \
    X(runtime_shutdown, 2, ERL_NIF_DIRTY_JOB_IO_BOUND)                                         \
    X(runtime_set_log_sink, 3, 0)                                                              \
    X(service_client_new, 2, 0)                                                                \
    X(service_client_session_id, 1, 0)                                                         \
    X(service_client_get_server_capabilities, 1, 0)                                            \
    X(service_client_create_lora_training_client, 2, 0)                                        \
    X(service_client_create_training_client_from_state, 2, 0)                                  \
    X(service_client_create_sampling_client, 2, 0)                                             \
    X(service_client_create_rest_client, 1, 0)                                                 \
    X(service_client_close, 2, 0)                                                              \
    X(service_client_subscribe, 2, 0)                                                          \
    X(subscription_free, 1, 0)                                                                 \
    X(training_client_get_info, 1, 0)                                                          \
    X(training_client_forward_backward, 2, 0)                                                  \
    X(training_client_forward, 2, 0)                                                           \
    X(training_client_forward_backward_batch, 3, 0)                                            \
    X(training_client_forward_batch, 3, 0)                                                     \
    X(training_client_optim_step, 2, 0)                                                        \
    X(training_client_save_state, 2, 0)                                                        \
    X(training_client_save_weights_for_sampler, 2, 0)                                          \
    X(training_client_save_weights_and_get_sampling_client, 2, 0)                              \
    X(training_client_load_state, 2, 0)                                                        \
    X(training_client_forward_backward_custom, 2, 0)                                           \
    X(custom_loss_set_metrics, 2, 0)                                                           \
    X(custom_loss_backward, 2, 0)                                                              \
    X(custom_loss_abort, 2, 0)                                                                 \
    X(datum_batch_new, 0, 0)                                                                   \
    X(datum_batch_push, 3, 0)                                                                  \
    X(datum_batch_push_json, 2, 0)                                                             \
    X(datum_batch_set_loss_input, 5, 0)                                                        \
    X(datum_batch_len, 1, 0)                                                                   \
    X(sampling_client_get_info, 1, 0)                                                          \
    X(sampling_client_sample, 2, 0)                                                            \
    X(sampling_client_compute_logprobs, 2, 0)                                                  \
    X(rest_client_new, 2, 0)                                                                   \
    X(rest_client_call, 3, 0)                                                                  \
    X(admin_client_new, 2, 0)                                                                  \
    X(admin_client_call, 3, 0)                                                                 \
    X(service_client_copy_weights, 2, 0)                                                       \
    X(service_client_create_custom_loss, 2, 0)                                                 \
    X(service_client_resume_training_run, 2, 0)                                                \
    X(service_client_get_console_url, 1, 0)                                                    \
    X(service_client_status, 1, 0)                                                             \
    X(training_client_get_console_url, 1, 0)                                                   \
    X(training_client_status, 1, 0)                                                            \
    X(training_client_save_weights_external, 2, 0)                                             \
    X(sampling_client_get_sampler_handle, 1, 0)                                                \
    X(sampling_client_from_sampler_handle, 3, 0)                                               \
    X(sampling_client_status, 1, 0)                                                            \
    X(future_cancel, 1, 0)                                                                     \
    X(future_is_done, 1, 0)                                                                    \
    X(testing_available, 0, 0)                                                                 \
    X(testing_panic_in_export, 0, 0)                                                           \
    X(testing_panic_in_task, 2, 0)                                                             \
    X(testing_spin, 1, 0)                                                                      \
    X(testing_block, 1, 0)                                                                     \
    X(testing_fail_alloc, 1, 0)                                                                \
    X(testing_fault_state, 0, 0)                                                               \
    X(version, 0, 0)                                                                           \
    X(status_name, 1, 0)                                                                       \
    X(resource_counts, 0, 0)

#define X_INDEX(name, arity, flags) I_##name,
enum { NIF_LIST(X_INDEX) I_COUNT };

#define X_DECL(name, arity, flags)                                                             \
    static ERL_NIF_TERM timed_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
NIF_LIST(X_DECL)

/* ------------------------------------------------------------------------------------ */
/* Atoms                                                                                 */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM a_ok, a_error, a_nil, a_true, a_false, a_tinkex, a_tinkex_event, a_tinkex_log,
    a_training_client, a_sampling_client, a_struct, a_event_mod, a_type, a_request_id,
    a_json, a_data, a_wrong_state, a_invalid_arg, a_internal, a_out_of_memory;

static ERL_NIF_TERM a_ev_other, a_ev_queue_state, a_ev_progress, a_ev_retry,
    a_ev_heartbeat_warning, a_ev_session_expired, a_ev_telemetry_overflow, a_ev_summary;

static void make_atoms(ErlNifEnv *env) {
    a_ok = enif_make_atom(env, "ok");
    a_error = enif_make_atom(env, "error");
    a_nil = enif_make_atom(env, "nil");
    a_true = enif_make_atom(env, "true");
    a_false = enif_make_atom(env, "false");
    a_tinkex = enif_make_atom(env, "tinkex");
    a_tinkex_event = enif_make_atom(env, "tinkex_event");
    a_tinkex_log = enif_make_atom(env, "tinkex_log");
    a_training_client = enif_make_atom(env, "training_client");
    a_sampling_client = enif_make_atom(env, "sampling_client");
    a_struct = enif_make_atom(env, "__struct__");
    a_event_mod = enif_make_atom(env, "Elixir.Tinkex.Event");
    a_type = enif_make_atom(env, "type");
    a_request_id = enif_make_atom(env, "request_id");
    a_json = enif_make_atom(env, "json");
    a_data = enif_make_atom(env, "data");
    a_wrong_state = enif_make_atom(env, "wrong_state");
    a_invalid_arg = enif_make_atom(env, "invalid_arg");
    a_internal = enif_make_atom(env, "internal");
    a_out_of_memory = enif_make_atom(env, "out_of_memory");
    a_ev_other = enif_make_atom(env, "other");
    a_ev_queue_state = enif_make_atom(env, "queue_state");
    a_ev_progress = enif_make_atom(env, "progress");
    a_ev_retry = enif_make_atom(env, "retry");
    a_ev_heartbeat_warning = enif_make_atom(env, "heartbeat_warning");
    a_ev_session_expired = enif_make_atom(env, "session_expired");
    a_ev_telemetry_overflow = enif_make_atom(env, "telemetry_overflow");
    a_ev_summary = enif_make_atom(env, "summary");
}

/* ------------------------------------------------------------------------------------ */
/* Live counts                                                                           */
/* ------------------------------------------------------------------------------------ */

enum {
    K_RUNTIME,
    K_SERVICE,
    K_TRAINING,
    K_SAMPLING,
    K_REST,
    K_ADMIN,
    K_FUTURE,
    K_SUBSCRIPTION,
    K_BATCH,
    K_BYTES,
    K_DONE_CTX, /* completion contexts whose callback has not run yet */
    K_SUB_CTX,  /* subscription contexts whose user_data_free has not run yet */
    K_LOG_CTX,  /* log sink contexts whose user_data_free has not run yet */
    K_PASS,     /* custom loss passes (tinkex_custom_loss) */
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "runtime", "service_client", "training_client", "sampling_client", "rest_client", "admin_client",
    "future",  "subscription",   "datum_batch",     "result_binary",   "pending_callback",
    "subscription_context", "log_sink_context", "custom_loss_pass"};

static atomic_long live[K_COUNT];
static atomic_long total[K_COUNT];

static void count_up(int k) {
    atomic_fetch_add(&live[k], 1);
    atomic_fetch_add(&total[k], 1);
}

static void count_down(int k) { atomic_fetch_sub(&live[k], 1); }

/* ------------------------------------------------------------------------------------ */
/* Resource types                                                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    void *ptr; /* the libtinkex handle; one reference owned by this resource */
} handle_t;

/* A subscription is active from subscribe until unsubscribe or the death of the subscriber
 * process (a monitor), not until garbage collection: while active, the resource holds an
 * extra reference to itself (enif_keep_resource), released exactly once by whoever takes
 * `sub` out first. */
typedef struct {
    _Atomic(tinkex_subscription *) sub;
    ErlNifMonitor mon;
} sub_t;

typedef struct {
    tinkex_datum_batch *batch; /* one reference, owned by this resource (NULL if never created) */
    atomic_size_t bytes;       /* bytes pushed so far: what a submit call copies */
} batch_t;

typedef struct {
    tinkex_bytes *bytes;
} bytes_t;

static ErlNifResourceType *rt_type, *svc_type, *train_type, *samp_type, *rest_type, *fut_type,
    *sub_type, *batch_type, *bytes_type, *pass_type, *admin_type;

static void dtor_runtime(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_runtime_free(((handle_t *)obj)->ptr);
    count_down(K_RUNTIME);
}
static void dtor_service(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_service_client_free(((handle_t *)obj)->ptr);
    count_down(K_SERVICE);
}
static void dtor_training(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_training_client_free(((handle_t *)obj)->ptr);
    count_down(K_TRAINING);
}
static void dtor_sampling(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_sampling_client_free(((handle_t *)obj)->ptr);
    count_down(K_SAMPLING);
}
static void dtor_rest(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_rest_client_free(((handle_t *)obj)->ptr);
    count_down(K_REST);
}
static void dtor_admin(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_admin_client_free(((handle_t *)obj)->ptr);
    count_down(K_ADMIN);
}
static void dtor_future(ErlNifEnv *env, void *obj) {
    (void)env;
    /* Never cancels: the operation completes and its callback releases its context. */
    tinkex_future_free(((handle_t *)obj)->ptr);
    count_down(K_FUTURE);
}
static void dtor_subscription(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_subscription *s = atomic_exchange(&((sub_t *)obj)->sub, NULL);
    tinkex_subscription_free(s);
    count_down(K_SUBSCRIPTION);
}

/* The subscriber process died: unsubscribe and drop the self-reference. */
static void down_subscription(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon) {
    (void)env;
    (void)pid;
    (void)mon;
    tinkex_subscription *s = atomic_exchange(&((sub_t *)obj)->sub, NULL);
    if (s) {
        tinkex_subscription_free(s);
        enif_release_resource(obj);
    }
}
static void dtor_batch(ErlNifEnv *env, void *obj) {
    (void)env;
    batch_t *b = obj;
    tinkex_datum_batch_free(b->batch); /* NULL: never created */
    b->batch = NULL;
    count_down(K_BATCH);
}
/* Freeing a pass that neither sent its backward nor aborted aborts it (the C ABI's rule):
 * a pass dropped by a dead process poisons its training client instead of hanging it. */
static void dtor_pass(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_custom_loss_free(((handle_t *)obj)->ptr);
    count_down(K_PASS);
}
static void dtor_bytes(ErlNifEnv *env, void *obj) {
    (void)env;
    tinkex_bytes_free(((bytes_t *)obj)->bytes);
    count_down(K_BYTES);
}

/* Resources are counted from their allocation to their destructor (a handle resource may be
 * allocated before the libtinkex object it will own, and released empty if that call fails:
 * every destructor accepts an empty resource, the C ABI's frees accept NULL). */

/* An empty handle resource of `kind`, or NULL when out of memory. */
static handle_t *alloc_handle(ErlNifResourceType *type, int kind) {
    handle_t *h = try_alloc_resource(type, sizeof *h);
    if (!h) return NULL;
    h->ptr = NULL;
    count_up(kind);
    return h;
}

/* Fills a handle resource with `ptr` and returns its term; the term holds the only
 * reference afterwards. */
static ERL_NIF_TERM fill_handle(ErlNifEnv *env, handle_t *h, void *ptr) {
    h->ptr = ptr;
    ERL_NIF_TERM t = enif_make_resource(env, h);
    enif_release_resource(h);
    return t;
}

/* Releases the libtinkex object of `kind` that could not be wrapped. */
static void free_unwrapped(int kind, void *ptr) {
    switch (kind) {
    case K_RUNTIME: tinkex_runtime_free(ptr); break;
    case K_SERVICE: tinkex_service_client_free(ptr); break;
    case K_TRAINING: tinkex_training_client_free(ptr); break;
    case K_SAMPLING: tinkex_sampling_client_free(ptr); break;
    case K_REST: tinkex_rest_client_free(ptr); break;
    case K_ADMIN: tinkex_admin_client_free(ptr); break;
    case K_FUTURE: tinkex_future_free(ptr); break;
    case K_PASS: tinkex_custom_loss_free(ptr); break;
    default: break;
    }
}

/* Wraps `ptr` in a new handle resource; when out of memory, frees `ptr` and returns 0. */
static int make_handle(ErlNifEnv *env, ErlNifResourceType *type, int kind, void *ptr,
                       ERL_NIF_TERM *out) {
    handle_t *h = alloc_handle(type, kind);
    if (!h) {
        free_unwrapped(kind, ptr);
        return 0;
    }
    *out = fill_handle(env, h, ptr);
    return 1;
}

static int get_handle(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifResourceType *type, void **out) {
    handle_t *h;
    if (!enif_get_resource(env, t, type, (void **)&h) || !h->ptr) return 0;
    *out = h->ptr;
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Terms                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* A binary copy of (s, n) in *out; 0 when out of memory. */
static int make_buf(ErlNifEnv *env, const uint8_t *s, size_t n, ERL_NIF_TERM *out) {
    unsigned char *p = try_new_binary(env, n, out);
    if (!p) return 0;
    if (n) memcpy(p, s, n);
    return 1;
}

/* A string as a binary; nil for NULL, and nil when out of memory (only ever used for
 * messages, ids and names, where nil is the safe degradation). */
static ERL_NIF_TERM make_str(ErlNifEnv *env, const char *s) {
    ERL_NIF_TERM t;
    if (!s || !make_buf(env, (const uint8_t *)s, strlen(s), &t)) return a_nil;
    return t;
}

/* {StatusInt, KindAtom, Message, HttpStatus, Retryable, RequestId | nil, Category | nil};
 * consumes err. Category: the server's category of a failed future (`tinkex_error_category`). */
static ERL_NIF_TERM make_error(ErlNifEnv *env, tinkex_status st, tinkex_error *err) {
    ERL_NIF_TERM kind, msg, rid, retry, cat;
    unsigned http = 0;
    if (err) {
        const char *k = tinkex_error_kind(err);
        kind = k ? enif_make_atom(env, k) : a_internal;
        msg = make_str(env, tinkex_error_message(err));
        rid = make_str(env, tinkex_error_request_id(err));
        cat = make_str(env, tinkex_error_category(err));
        http = tinkex_error_http_status(err);
        retry = tinkex_error_is_retryable(err) ? a_true : a_false;
        st = tinkex_error_status(err);
        tinkex_error_free(err);
    } else {
        kind = a_internal;
        msg = make_str(env, tinkex_status_name(st));
        rid = a_nil;
        cat = a_nil;
        retry = a_false;
    }
    ERL_NIF_TERM items[7] = {enif_make_int(env, st), kind, msg, enif_make_uint(env, http),
                             retry, rid, cat};
    return enif_make_tuple_from_array(env, items, 7);
}

static ERL_NIF_TERM error_tuple(ErlNifEnv *env, tinkex_status st, tinkex_error *err) {
    return enif_make_tuple2(env, a_error, make_error(env, st, err));
}

static ERL_NIF_TERM local_error(ErlNifEnv *env, tinkex_status st, ERL_NIF_TERM kind,
                                const char *msg);

/* {error, {900, out_of_memory, Message, 0, false, nil, nil}}: an allocation of the NIF failed. */
static ERL_NIF_TERM oom_error(ErlNifEnv *env, const char *what) {
    char msg[160];
    snprintf(msg, sizeof msg, "tinkex_nif: out of memory (%s)", what);
    return local_error(env, TINKEX_STATUS_INTERNAL, a_out_of_memory, msg);
}

/* A binding-side error (no libtinkex error object). */
static ERL_NIF_TERM local_error(ErlNifEnv *env, tinkex_status st, ERL_NIF_TERM kind,
                                const char *msg) {
    return enif_make_tuple2(
        env, a_error,
        enif_make_tuple7(env, enif_make_int(env, st), kind, make_str(env, msg),
                         enif_make_uint(env, 0), a_false, a_nil, a_nil));
}

/* The JSON result as a binary in *out; consumes b; 0 when out of memory. Large results are
 * not copied: the binary points into the libtinkex buffer, owned by a resource that frees it
 * when the binary is collected. */
static int make_result_binary(ErlNifEnv *env, tinkex_bytes *b, ERL_NIF_TERM *out) {
    size_t n = tinkex_bytes_len(b);
    if (n < SMALL_RESULT_BYTES) {
        int ok = make_buf(env, tinkex_bytes_data(b), n, out);
        tinkex_bytes_free(b);
        return ok;
    }
    bytes_t *r = try_alloc_resource(bytes_type, sizeof *r);
    if (!r) {
        tinkex_bytes_free(b);
        return 0;
    }
    r->bytes = b;
    count_up(K_BYTES);
    *out = enif_make_resource_binary(env, r, tinkex_bytes_data(b), n);
    enif_release_resource(r);
    return 1;
}

/* {ok, Binary} of a synchronous JSON result (consumes b), or the OOM error. */
static ERL_NIF_TERM ok_bytes(ErlNifEnv *env, tinkex_bytes *b) {
    ERL_NIF_TERM t;
    int ok = make_buf(env, tinkex_bytes_data(b), tinkex_bytes_len(b), &t);
    tinkex_bytes_free(b);
    if (!ok) return oom_error(env, "result binary");
    return enif_make_tuple2(env, a_ok, t);
}

/* Binary argument (NULL, 0 for an empty one). */
static int get_bin(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *bin) {
    return enif_inspect_binary(env, t, bin);
}

/* ------------------------------------------------------------------------------------ */
/* Completions                                                                           */
/* ------------------------------------------------------------------------------------ */

enum take_kind { TAKE_JSON, TAKE_TRAINING, TAKE_SAMPLING };

typedef struct {
    ErlNifPid pid;
    ErlNifEnv *env; /* process-independent; holds ref until the message is sent */
    ERL_NIF_TERM ref;
    enum take_kind take;
} done_ctx;

/* {ok, {Tag, Client}} for a client taken from a completed future, or the OOM error. */
static ERL_NIF_TERM ok_client(ErlNifEnv *env, ERL_NIF_TERM tag, ErlNifResourceType *type,
                              int kind, void *client) {
    ERL_NIF_TERM t;
    if (!make_handle(env, type, kind, client, &t)) return oom_error(env, "client resource");
    return enif_make_tuple2(env, a_ok, enif_make_tuple2(env, tag, t));
}

/* Runs on libtinkex's dispatcher thread, exactly once per submitted operation. Allocates
 * only the result's own terms; when one of them fails, the submitter gets the OOM error
 * instead of the result (the libtinkex object that could not be wrapped is freed). */
static void on_done(void *user_data, const tinkex_future *fut) {
    done_ctx *ctx = user_data;
    FAULT_SCOPE(&ctx->pid);
    ErlNifEnv *env = ctx->env;
    tinkex_error *err = NULL;
    tinkex_status st;
    ERL_NIF_TERM result;
    switch (ctx->take) {
    case TAKE_TRAINING: {
        tinkex_training_client *c = NULL;
        st = tinkex_future_take_training_client(fut, &c, &err);
        result = st == TINKEX_STATUS_OK
                     ? ok_client(env, a_training_client, train_type, K_TRAINING, c)
                     : error_tuple(env, st, err);
        break;
    }
    case TAKE_SAMPLING: {
        tinkex_sampling_client *c = NULL;
        st = tinkex_future_take_sampling_client(fut, &c, &err);
        result = st == TINKEX_STATUS_OK
                     ? ok_client(env, a_sampling_client, samp_type, K_SAMPLING, c)
                     : error_tuple(env, st, err);
        break;
    }
    default: {
        tinkex_bytes *b = NULL;
        ERL_NIF_TERM bin;
        st = tinkex_future_take_result(fut, &b, &err);
        if (st != TINKEX_STATUS_OK)
            result = error_tuple(env, st, err);
        else if (make_result_binary(env, b, &bin))
            result = enif_make_tuple2(env, a_ok, bin);
        else
            result = oom_error(env, "result binary");
        break;
    }
    }
    ERL_NIF_TERM msg = enif_make_tuple3(env, a_tinkex, ctx->ref, result);
    /* Fails only if the process is gone; the message (and any client in it) is then freed
     * with the environment. */
    (void)enif_send(NULL, &ctx->pid, env, msg);
    enif_free_env(env);
    FAULT_SCOPE_END();
    enif_free(ctx);
    count_down(K_DONE_CTX);
}

static void drop_ctx(done_ctx *ctx) {
    enif_free_env(ctx->env);
    enif_free(ctx);
    count_down(K_DONE_CTX);
}

/* Everything a submit call needs, allocated before it: once libtinkex has accepted the
 * callback, on_done may run (and free ctx) at any moment, so nothing may fail after it. */
typedef struct {
    done_ctx *ctx;
    handle_t *fut; /* the future's resource, filled after the submit call */
    ERL_NIF_TERM ref;
} submit_t;

/* 0 (nothing allocated) when out of memory. */
static int submit_begin(ErlNifEnv *env, enum take_kind take, submit_t *s) {
    s->ctx = NULL;
    s->fut = alloc_handle(fut_type, K_FUTURE);
    if (!s->fut) return 0;
    done_ctx *ctx = try_alloc(sizeof *ctx);
    if (!ctx) goto fail;
    ctx->env = try_alloc_env();
    if (!ctx->env) {
        enif_free(ctx);
        goto fail;
    }
    enif_self(env, &ctx->pid);
    ctx->take = take;
    s->ref = enif_make_ref(env);
    ctx->ref = enif_make_copy(ctx->env, s->ref);
    count_up(K_DONE_CTX);
    s->ctx = ctx;
    return 1;
fail:
    enif_release_resource(s->fut);
    s->fut = NULL;
    return 0;
}

/* Undoes submit_begin when the submit call is not made. */
static void submit_abort(submit_t *s) {
    drop_ctx(s->ctx);
    enif_release_resource(s->fut);
}

/* After a submit call: {ok, Ref, Future} or {error, E}. The callback may already have run
 * (on the dispatcher) when this executes, so only `ref` (a term of `env`) is used. */
static ERL_NIF_TERM submit_end(ErlNifEnv *env, submit_t *s, tinkex_status st,
                               tinkex_future *fut, tinkex_error *err) {
    if (st != TINKEX_STATUS_OK) {
        submit_abort(s); /* on a non-OK status on_done never fires */
        return error_tuple(env, st, err);
    }
    return enif_make_tuple3(env, a_ok, s->ref, fill_handle(env, s->fut, fut));
}

/* ------------------------------------------------------------------------------------ */
/* Runtime                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    tinkex_runtime_options opts;
    int nice; /* added to the niceness of libtinkex's threads */
    tinkex_runtime *rt;
    tinkex_error *err;
    tinkex_status st;
} rt_start;

/* Creates the runtime on a short-lived thread whose niceness is raised first: the tokio
 * workers and the dispatcher thread inherit it, so on a busy machine they yield the CPU to
 * the BEAM's scheduler threads instead of preempting them. */
static void *rt_start_thread(void *p) {
    rt_start *a = p;
    if (a->nice > 0) {
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, 0); /* Linux: the calling thread */
        if (errno == 0) (void)setpriority(PRIO_PROCESS, 0, cur + a->nice);
    }
    a->st = tinkex_runtime_new(&a->opts, &a->rt, &a->err);
    return NULL;
}

/* runtime_new(WorkerThreads, LogLevel, ThreadNice): dirty IO (starts threads). */
static ERL_NIF_TERM nif_runtime_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned workers;
    int level, nice;
    if (!enif_get_uint(env, argv[0], &workers) || !enif_get_int(env, argv[1], &level) ||
        !enif_get_int(env, argv[2], &nice))
        return enif_make_badarg(env);
    handle_t *h = alloc_handle(rt_type, K_RUNTIME);
    if (!h) return oom_error(env, "runtime resource");
    rt_start a = {.opts = tinkex_runtime_options_default(), .nice = nice};
    a.opts.worker_threads = workers;
    a.opts.log_level = level;
    ErlNifTid tid;
    if (nice > 0 && try_thread_create("tinkex_rt_start", &tid, rt_start_thread, &a) == 0) {
        enif_thread_join(tid, NULL);
    } else {
        /* No thread (or none needed): start it here, without the niceness. */
        a.nice = 0;
        rt_start_thread(&a);
    }
    if (a.st != TINKEX_STATUS_OK) {
        enif_release_resource(h);
        return error_tuple(env, a.st, a.err);
    }
    return enif_make_tuple2(env, a_ok, fill_handle(env, h, a.rt));
}

/* runtime_shutdown(Runtime, TimeoutMs): dirty IO (blocks for the drain). */
static ERL_NIF_TERM nif_runtime_shutdown(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *rt;
    ErlNifUInt64 ms;
    if (!get_handle(env, argv[0], rt_type, &rt) || !enif_get_uint64(env, argv[1], &ms))
        return enif_make_badarg(env);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_runtime_shutdown(rt, ms, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

/* The log sink: the core's own log lines (already debounced) go to one Erlang process, the
 * binding's Tinkex.LogForwarder, which hands them to Logger. on_log runs on the dispatcher
 * thread and only sends a message ({tinkex_log, Level, Target, Message}, Level the
 * tinkex_log_level value): it never waits for Logger. A line that cannot be built for lack
 * of memory is dropped (counted in testing_fault_state/0). */
typedef struct {
    ErlNifPid pid;
} log_ctx;

static atomic_long dropped_logs;

static void on_log(void *user_data, tinkex_log_level level, const uint8_t *target,
                   size_t target_len, const uint8_t *message, size_t message_len) {
    log_ctx *ctx = user_data;
    ErlNifEnv *env = try_alloc_env();
    if (!env) {
        atomic_fetch_add(&dropped_logs, 1);
        return;
    }
    ERL_NIF_TERM t, m;
    if (make_buf(env, target, target ? target_len : 0, &t) &&
        make_buf(env, message, message ? message_len : 0, &m)) {
        ERL_NIF_TERM msg = enif_make_tuple4(env, a_tinkex_log, enif_make_int(env, (int)level), t, m);
        (void)enif_send(NULL, &ctx->pid, env, msg);
    } else {
        atomic_fetch_add(&dropped_logs, 1);
    }
    enif_free_env(env);
}

static void on_log_free(void *user_data) {
    enif_free(user_data);
    count_down(K_LOG_CTX);
}

/* runtime_set_log_sink(Runtime, Pid | nil, MaxLevel): Pid receives the log lines of at most
 * MaxLevel (a tinkex_log_level); nil removes the sink. */
static ERL_NIF_TERM nif_runtime_set_log_sink(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *rt;
    ErlNifPid pid;
    int level;
    int remove = enif_is_identical(argv[1], a_nil);
    if (!get_handle(env, argv[0], rt_type, &rt) || (!remove && !enif_get_local_pid(env, argv[1], &pid)) ||
        !enif_get_int(env, argv[2], &level))
        return enif_make_badarg(env);
    tinkex_error *err = NULL;
    tinkex_status st;
    if (remove) {
        st = tinkex_runtime_set_log_sink(rt, NULL, NULL, NULL, level, &err);
    } else {
        log_ctx *ctx = try_alloc(sizeof *ctx);
        if (!ctx) return oom_error(env, "log sink context");
        ctx->pid = pid;
        count_up(K_LOG_CTX);
        st = tinkex_runtime_set_log_sink(rt, on_log, ctx, on_log_free, level, &err);
        if (st != TINKEX_STATUS_OK) on_log_free(ctx); /* nothing registered */
    }
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

/* ------------------------------------------------------------------------------------ */
/* Service client                                                                        */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_service_client_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *rt;
    ErlNifBinary cfg;
    if (!get_handle(env, argv[0], rt_type, &rt) || !get_bin(env, argv[1], &cfg))
        return enif_make_badarg(env);
    handle_t *h = alloc_handle(svc_type, K_SERVICE);
    if (!h) return oom_error(env, "service client resource");
    tinkex_service_client *svc = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_service_client_new(rt, cfg.data, cfg.size, &svc, &err);
    if (st != TINKEX_STATUS_OK) {
        enif_release_resource(h);
        return error_tuple(env, st, err);
    }
    return enif_make_tuple2(env, a_ok, fill_handle(env, h, svc));
}

static ERL_NIF_TERM nif_service_client_session_id(ErlNifEnv *env, int argc,
                                                  const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *svc;
    if (!get_handle(env, argv[0], svc_type, &svc)) return enif_make_badarg(env);
    tinkex_bytes *b = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_service_client_session_id(svc, &b, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return ok_bytes(env, b);
}

static ERL_NIF_TERM nif_service_client_get_server_capabilities(ErlNifEnv *env, int argc,
                                                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *svc;
    if (!get_handle(env, argv[0], svc_type, &svc)) return enif_make_badarg(env);
    submit_t s;
    if (!submit_begin(env, TAKE_JSON, &s)) return oom_error(env, "submit");
    tinkex_future *fut = NULL;
    tinkex_error *err = NULL;
    tinkex_status st =
        tinkex_service_client_get_server_capabilities(svc, on_done, s.ctx, &fut, &err);
    return submit_end(env, &s, st, fut, err);
}

static ERL_NIF_TERM nif_service_client_create_rest_client(ErlNifEnv *env, int argc,
                                                          const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *svc;
    if (!get_handle(env, argv[0], svc_type, &svc)) return enif_make_badarg(env);
    handle_t *h = alloc_handle(rest_type, K_REST);
    if (!h) return oom_error(env, "rest client resource");
    tinkex_rest_client *rest = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_service_client_create_rest_client(svc, &rest, &err);
    if (st != TINKEX_STATUS_OK) {
        enif_release_resource(h);
        return error_tuple(env, st, err);
    }
    return enif_make_tuple2(env, a_ok, fill_handle(env, h, rest));
}

/* The part shared by every "(handle, json) -> future" NIF: reads the arguments and allocates
 * the submission; a JSON text over DIRTY_JSON_BYTES is handed to a dirty CPU scheduler first
 * because libtinkex parses it synchronously. Returns 0 with *early set when the NIF must
 * return *early (bad argument, rescheduled, out of memory). */
static int json_submit_begin(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[],
                             ErlNifResourceType *type, enum take_kind take, const char *name,
                             ERL_NIF_TERM (*self)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                             void **h, ErlNifBinary *json, submit_t *s, ERL_NIF_TERM *early) {
    if (!get_handle(env, argv[0], type, h) || !get_bin(env, argv[1], json)) {
        *early = enif_make_badarg(env);
        return 0;
    }
    if (json->size > DIRTY_JSON_BYTES && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
        *early = enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, self, argc, argv);
        return 0;
    }
    if (!submit_begin(env, take, s)) {
        *early = oom_error(env, "submit");
        return 0;
    }
    return 1;
}

/* One NIF per JSON submit export, calling `tinkex_<name>` by name with its own prototype (no
 * function-pointer casts: calling through a pointer of another type is undefined behaviour).
 * The handle's `void *` converts implicitly to the export's handle type. */
#define JSON_SUBMIT(name, type, take)                                                          \
    static ERL_NIF_TERM nif_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {    \
        void *h;                                                                               \
        ErlNifBinary json;                                                                     \
        submit_t s;                                                                            \
        ERL_NIF_TERM early;                                                                    \
        if (!json_submit_begin(env, argc, argv, type, take, #name, timed_##name, &h, &json,   \
                               &s, &early))                                                    \
            return early;                                                                      \
        tinkex_future *fut = NULL;                                                             \
        tinkex_error *err = NULL;                                                              \
        tinkex_status st = tinkex_##name(h, json.data, json.size, on_done, s.ctx, &fut, &err); \
        return submit_end(env, &s, st, fut, err);                                              \
    }

JSON_SUBMIT(service_client_create_lora_training_client, svc_type, TAKE_TRAINING)
JSON_SUBMIT(service_client_create_training_client_from_state, svc_type, TAKE_TRAINING)
JSON_SUBMIT(service_client_create_sampling_client, svc_type, TAKE_SAMPLING)
JSON_SUBMIT(service_client_close, svc_type, TAKE_JSON)
JSON_SUBMIT(training_client_forward_backward, train_type, TAKE_JSON)
JSON_SUBMIT(training_client_forward, train_type, TAKE_JSON)
JSON_SUBMIT(training_client_optim_step, train_type, TAKE_JSON)
JSON_SUBMIT(training_client_save_state, train_type, TAKE_JSON)
JSON_SUBMIT(training_client_save_weights_for_sampler, train_type, TAKE_JSON)
JSON_SUBMIT(training_client_load_state, train_type, TAKE_JSON)
JSON_SUBMIT(sampling_client_sample, samp_type, TAKE_JSON)
JSON_SUBMIT(sampling_client_compute_logprobs, samp_type, TAKE_JSON)

JSON_SUBMIT(service_client_copy_weights, svc_type, TAKE_JSON)
JSON_SUBMIT(service_client_create_custom_loss, svc_type, TAKE_JSON)
JSON_SUBMIT(service_client_resume_training_run, svc_type, TAKE_TRAINING)
JSON_SUBMIT(training_client_save_weights_external, train_type, TAKE_JSON)

/* One NIF per synchronous JSON getter `tinkex_<name>(handle, &bytes, &err)` (console URLs,
 * status() introspection, the sampler handle): {ok, Json}. */
#define SYNC_BYTES(name, type)                                                                 \
    static ERL_NIF_TERM nif_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {    \
        (void)argc;                                                                            \
        void *h;                                                                               \
        if (!get_handle(env, argv[0], type, &h)) return enif_make_badarg(env);                 \
        tinkex_bytes *b = NULL;                                                                \
        tinkex_error *err = NULL;                                                              \
        tinkex_status st = tinkex_##name(h, &b, &err);                                         \
        if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);                          \
        return ok_bytes(env, b);                                                               \
    }

SYNC_BYTES(service_client_get_console_url, svc_type)
SYNC_BYTES(service_client_status, svc_type)
SYNC_BYTES(training_client_get_console_url, train_type)
SYNC_BYTES(training_client_status, train_type)
SYNC_BYTES(sampling_client_get_sampler_handle, samp_type)
SYNC_BYTES(sampling_client_status, samp_type)

/* sampling_client_from_sampler_handle(Runtime, Handle, ConfigJson) -> {ok, SamplingClient}:
 * a clone of a sampler from its handle string (3.4, 12.2); no I/O at creation. */
static ERL_NIF_TERM nif_sampling_client_from_sampler_handle(ErlNifEnv *env, int argc,
                                                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *rt;
    ErlNifBinary handle, cfg;
    if (!get_handle(env, argv[0], rt_type, &rt) || !get_bin(env, argv[1], &handle) ||
        !get_bin(env, argv[2], &cfg))
        return enif_make_badarg(env);
    handle_t *h = alloc_handle(samp_type, K_SAMPLING);
    if (!h) return oom_error(env, "sampling client resource");
    tinkex_sampling_client *sc = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_sampling_client_from_sampler_handle(rt, handle.data, handle.size,
                                                                 cfg.data, cfg.size, &sc, &err);
    if (st != TINKEX_STATUS_OK) {
        enif_release_resource(h);
        return error_tuple(env, st, err);
    }
    return enif_make_tuple2(env, a_ok, fill_handle(env, h, sc));
}

/* ------------------------------------------------------------------------------------ */
/* Events                                                                                */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    ErlNifPid pid;
    ErlNifEnv *env; /* holds ref */
    ERL_NIF_TERM ref;
} sub_ctx;

static ERL_NIF_TERM event_kind_atom(tinkex_event_kind k) {
    switch (k) {
    case TINKEX_EVENT_KIND_QUEUE_STATE: return a_ev_queue_state;
    case TINKEX_EVENT_KIND_PROGRESS: return a_ev_progress;
    case TINKEX_EVENT_KIND_RETRY: return a_ev_retry;
    case TINKEX_EVENT_KIND_HEARTBEAT_WARNING: return a_ev_heartbeat_warning;
    case TINKEX_EVENT_KIND_SESSION_EXPIRED: return a_ev_session_expired;
    case TINKEX_EVENT_KIND_TELEMETRY_OVERFLOW: return a_ev_telemetry_overflow;
    case TINKEX_EVENT_KIND_SUMMARY: return a_ev_summary;
    default: return a_ev_other;
    }
}

/* Runs on the dispatcher thread: posts {tinkex_event, Ref, %Tinkex.Event{}}. */
/* When out of memory the event is dropped (counted; testing_fault_state/0 reports it):
 * events are advisory, and there is no one to return an error to. */
static atomic_long dropped_events;

static void on_event(void *user_data, const tinkex_event *ev) {
    sub_ctx *ctx = user_data;
    FAULT_SCOPE(&ctx->pid);
    ErlNifEnv *env = try_alloc_env();
    if (!env) {
        atomic_fetch_add(&dropped_events, 1);
        FAULT_SCOPE_END();
        return;
    }
    size_t len = 0;
    const uint8_t *json = tinkex_event_json(ev, &len);
    ERL_NIF_TERM json_t, map;
    if (!make_buf(env, json, json ? len : 0, &json_t)) {
        atomic_fetch_add(&dropped_events, 1);
    } else {
        ERL_NIF_TERM keys[5] = {a_struct, a_type, a_request_id, a_json, a_data};
        ERL_NIF_TERM vals[5] = {a_event_mod, event_kind_atom(tinkex_event_get_kind(ev)),
                                make_str(env, tinkex_event_request_id(ev)), json_t, a_nil};
        if (enif_make_map_from_arrays(env, keys, vals, 5, &map)) {
            ERL_NIF_TERM msg =
                enif_make_tuple3(env, a_tinkex_event, enif_make_copy(env, ctx->ref), map);
            (void)enif_send(NULL, &ctx->pid, env, msg);
        }
    }
    enif_free_env(env);
    FAULT_SCOPE_END();
}

static void on_sub_free(void *user_data) {
    sub_ctx *ctx = user_data;
    enif_free_env(ctx->env);
    enif_free(ctx);
    count_down(K_SUB_CTX);
}

/* service_client_subscribe(Svc, Pid) -> {ok, Ref, Subscription} */
static ERL_NIF_TERM nif_service_client_subscribe(ErlNifEnv *env, int argc,
                                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *svc;
    ErlNifPid pid;
    if (!get_handle(env, argv[0], svc_type, &svc) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);
    /* Everything is allocated before subscribing: nothing may fail once it is active. */
    sub_t *r = try_alloc_resource(sub_type, sizeof *r);
    if (!r) return oom_error(env, "subscription resource");
    atomic_init(&r->sub, NULL);
    count_up(K_SUBSCRIPTION);
    sub_ctx *ctx = try_alloc(sizeof *ctx);
    if (!ctx) {
        enif_release_resource(r);
        return oom_error(env, "subscription context");
    }
    ctx->pid = pid;
    ctx->env = try_alloc_env();
    if (!ctx->env) {
        enif_free(ctx);
        enif_release_resource(r);
        return oom_error(env, "subscription environment");
    }
    ERL_NIF_TERM ref = enif_make_ref(env);
    ctx->ref = enif_make_copy(ctx->env, ref);
    count_up(K_SUB_CTX);
    tinkex_subscription *s = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_service_client_subscribe(svc, on_event, ctx, on_sub_free, &s, &err);
    if (st != TINKEX_STATUS_OK) {
        on_sub_free(ctx); /* nothing registered: neither callback will run */
        enif_release_resource(r);
        return error_tuple(env, st, err);
    }
    atomic_store(&r->sub, s);
    ERL_NIF_TERM t = enif_make_resource(env, r);
    /* Active until unsubscribe or the subscriber's death: keep the resource (the reference
     * from alloc is that one) and monitor the process. */
    if (enif_monitor_process(env, r, &pid, &r->mon) != 0) {
        /* Already dead: nothing to deliver to. */
        tinkex_subscription_free(atomic_exchange(&r->sub, NULL));
        enif_release_resource(r);
    }
    return enif_make_tuple3(env, a_ok, ref, t);
}

static ERL_NIF_TERM nif_subscription_free(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    sub_t *r;
    if (!enif_get_resource(env, argv[0], sub_type, (void **)&r)) return enif_make_badarg(env);
    tinkex_subscription *s = atomic_exchange(&r->sub, NULL);
    if (s) {
        tinkex_subscription_free(s);
        (void)enif_demonitor_process(env, r, &r->mon);
        enif_release_resource(r);
    }
    return a_ok;
}

/* ------------------------------------------------------------------------------------ */
/* Training client                                                                       */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM info_json(ErlNifEnv *env, tinkex_status st, tinkex_bytes *b,
                              tinkex_error *err) {
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return ok_bytes(env, b);
}

static ERL_NIF_TERM nif_training_client_get_info(ErlNifEnv *env, int argc,
                                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *tc;
    if (!get_handle(env, argv[0], train_type, &tc)) return enif_make_badarg(env);
    tinkex_bytes *b = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_training_client_get_info(tc, &b, &err);
    return info_json(env, st, b, err);
}

static ERL_NIF_TERM nif_training_client_save_weights_and_get_sampling_client(
    ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *tc;
    ErlNifBinary json;
    if (!get_handle(env, argv[0], train_type, &tc) || !get_bin(env, argv[1], &json))
        return enif_make_badarg(env);
    submit_t s;
    if (!submit_begin(env, TAKE_SAMPLING, &s)) return oom_error(env, "submit");
    tinkex_future *fut = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_training_client_save_weights_and_get_sampling_client(
        tc, json.size ? json.data : NULL, json.size, on_done, s.ctx, &fut, &err);
    return submit_end(env, &s, st, fut, err);
}

/* The arguments of a batch submit NIF. The submit call borrows the batch: it copies the
 * datums synchronously, so a batch of more than DIRTY_BATCH_BYTES is submitted from a dirty
 * CPU scheduler (a 1M-token batch takes some 10 ms to copy). The batch stays with its
 * resource and may be submitted again. Returns 0 with *early set when the NIF must return
 * *early. */
static int batch_submit_begin(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[],
                              const char *name,
                              ERL_NIF_TERM (*self)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                              void **tc, ErlNifBinary *json, submit_t *s,
                              tinkex_datum_batch **batch, ERL_NIF_TERM *early) {
    batch_t *b;
    if (!get_handle(env, argv[0], train_type, tc) ||
        !enif_get_resource(env, argv[1], batch_type, (void **)&b) || !b->batch ||
        !get_bin(env, argv[2], json)) {
        *early = enif_make_badarg(env);
        return 0;
    }
    if (atomic_load(&b->bytes) + json->size > DIRTY_BATCH_BYTES &&
        enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
        *early = enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, self, argc, argv);
        return 0;
    }
    if (!submit_begin(env, TAKE_JSON, s)) {
        *early = oom_error(env, "submit");
        return 0;
    }
    *batch = b->batch;
    return 1;
}

/* One NIF per batch submit export, calling it by name with its own prototype. */
#define BATCH_SUBMIT(name)                                                                     \
    static ERL_NIF_TERM nif_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {    \
        void *tc;                                                                              \
        ErlNifBinary json;                                                                     \
        submit_t s;                                                                            \
        tinkex_datum_batch *batch;                                                             \
        ERL_NIF_TERM early;                                                                    \
        if (!batch_submit_begin(env, argc, argv, #name, timed_##name, &tc, &json, &s, &batch,  \
                                &early))                                                       \
            return early;                                                                      \
        tinkex_future *fut = NULL;                                                             \
        tinkex_error *err = NULL;                                                              \
        tinkex_status st =                                                                     \
            tinkex_##name(tc, batch, json.data, json.size, on_done, s.ctx, &fut, &err);        \
        return submit_end(env, &s, st, fut, err);                                              \
    }

BATCH_SUBMIT(training_client_forward_backward_batch)
BATCH_SUBMIT(training_client_forward_batch)

/* ------------------------------------------------------------------------------------ */
/* Client-side custom loss (PROTOCOL 11.6)                                               */
/* ------------------------------------------------------------------------------------ */

/* The Elixir side (Tinkex.TrainingClient.forward_backward_custom/4) runs the loss function
 * in an ordinary process: phase 1 posts the forward's result to that process like any
 * completion, the process computes the loss and answers with custom_loss_backward (or
 * custom_loss_abort). No NIF waits and no Elixir code runs on a libtinkex thread. */

/* Reads a batch resource argument; a batch of more than DIRTY_BATCH_BYTES is copied on a
 * dirty CPU scheduler (the submit calls copy it synchronously). 0 with *early set when the
 * NIF must return *early. */
static int custom_batch_arg(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], const char *name,
                            ERL_NIF_TERM (*self)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                            tinkex_datum_batch **batch, ERL_NIF_TERM *early) {
    batch_t *b;
    if (!enif_get_resource(env, argv[1], batch_type, (void **)&b) || !b->batch) {
        *early = enif_make_badarg(env);
        return 0;
    }
    if (atomic_load(&b->bytes) > DIRTY_BATCH_BYTES &&
        enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
        *early = enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, self, argc, argv);
        return 0;
    }
    *batch = b->batch;
    return 1;
}

/* training_client_forward_backward_custom(Tc, Batch) -> {ok, Ref, Future, Pass}: phase 1;
 * {tinkex, Ref, {ok, ForwardJson}} reaches the caller when the forward is done. */
static ERL_NIF_TERM nif_training_client_forward_backward_custom(ErlNifEnv *env, int argc,
                                                                const ERL_NIF_TERM argv[]) {
    void *tc;
    tinkex_datum_batch *batch;
    ERL_NIF_TERM early;
    if (!get_handle(env, argv[0], train_type, &tc)) return enif_make_badarg(env);
    if (!custom_batch_arg(env, argc, argv, "training_client_forward_backward_custom",
                          timed_training_client_forward_backward_custom, &batch, &early))
        return early;
    handle_t *p = alloc_handle(pass_type, K_PASS);
    if (!p) return oom_error(env, "custom loss resource");
    submit_t s;
    if (!submit_begin(env, TAKE_JSON, &s)) {
        enif_release_resource(p);
        return oom_error(env, "submit");
    }
    tinkex_custom_loss *pass = NULL;
    tinkex_future *fut = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_training_client_forward_backward_custom(tc, batch, on_done, s.ctx,
                                                                      &pass, &fut, &err);
    if (st != TINKEX_STATUS_OK) {
        enif_release_resource(p);
        return submit_end(env, &s, st, fut, err);
    }
    ERL_NIF_TERM fut_t = fill_handle(env, s.fut, fut);
    return enif_make_tuple4(env, a_ok, s.ref, fut_t, fill_handle(env, p, pass));
}

/* custom_loss_set_metrics(Pass, MetricsJson) -> ok */
static ERL_NIF_TERM nif_custom_loss_set_metrics(ErlNifEnv *env, int argc,
                                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *pass;
    ErlNifBinary json;
    if (!get_handle(env, argv[0], pass_type, &pass) || !get_bin(env, argv[1], &json))
        return enif_make_badarg(env);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_custom_loss_set_metrics(pass, json.data, json.size, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

/* custom_loss_backward(Pass, GradsBatch) -> {ok, Ref, Future}: phase 2. */
static ERL_NIF_TERM nif_custom_loss_backward(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    void *pass;
    tinkex_datum_batch *batch;
    ERL_NIF_TERM early;
    if (!get_handle(env, argv[0], pass_type, &pass)) return enif_make_badarg(env);
    if (!custom_batch_arg(env, argc, argv, "custom_loss_backward", timed_custom_loss_backward,
                          &batch, &early))
        return early;
    submit_t s;
    if (!submit_begin(env, TAKE_JSON, &s)) return oom_error(env, "submit");
    tinkex_future *fut = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_custom_loss_backward(pass, batch, on_done, s.ctx, &fut, &err);
    return submit_end(env, &s, st, fut, err);
}

/* custom_loss_abort(Pass, Reason) -> ok: releases the turn and poisons the client. */
static ERL_NIF_TERM nif_custom_loss_abort(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *pass;
    ErlNifBinary reason;
    if (!get_handle(env, argv[0], pass_type, &pass) || !get_bin(env, argv[1], &reason))
        return enif_make_badarg(env);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_custom_loss_abort(pass, reason.data, reason.size, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

/* ------------------------------------------------------------------------------------ */
/* Datum batches                                                                         */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_datum_batch_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    batch_t *b = try_alloc_resource(batch_type, sizeof *b);
    if (!b) return oom_error(env, "datum batch resource");
    b->batch = NULL;
    atomic_init(&b->bytes, 0);
    count_up(K_BATCH);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_datum_batch_new(&b->batch, &err);
    if (st != TINKEX_STATUS_OK) {
        enif_release_resource(b);
        return error_tuple(env, st, err);
    }
    ERL_NIF_TERM t = enif_make_resource(env, b);
    enif_release_resource(b);
    return enif_make_tuple2(env, a_ok, t);
}

static size_t dtype_size(int dtype) {
    switch (dtype) {
    case TINKEX_DTYPE_INT64:
    case TINKEX_DTYPE_FLOAT64: return 8;
    case TINKEX_DTYPE_INT32:
    case TINKEX_DTYPE_FLOAT32: return 4;
    default: return 0;
    }
}

/* datum_batch_push(Batch, TokensBinary, Dtype) */
static ERL_NIF_TERM nif_datum_batch_push(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    batch_t *b;
    ErlNifBinary tokens;
    int dtype;
    if (!enif_get_resource(env, argv[0], batch_type, (void **)&b) || !b->batch ||
        !get_bin(env, argv[1], &tokens) || !enif_get_int(env, argv[2], &dtype))
        return enif_make_badarg(env);
    size_t es = dtype_size(dtype);
    if (!es || tokens.size % es)
        return local_error(env, TINKEX_STATUS_INVALID_ARG, a_invalid_arg,
                           "the token binary's size is not a multiple of the dtype's size");
    size_t n = tokens.size / es;
    if (tokens.size > DIRTY_ARRAY_BYTES && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "datum_batch_push", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 timed_datum_batch_push, argc, argv);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_datum_batch_push(b->batch, n ? tokens.data : NULL, n, dtype, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    atomic_fetch_add(&b->bytes, tokens.size);
    return a_ok;
}

/* datum_batch_push_json(Batch, DatumJson): a datum of any shape (several chunks, images)
 * as JSON; a text over DIRTY_JSON_BYTES is parsed on a dirty CPU scheduler. */
static ERL_NIF_TERM nif_datum_batch_push_json(ErlNifEnv *env, int argc,
                                              const ERL_NIF_TERM argv[]) {
    batch_t *b;
    ErlNifBinary json;
    if (!enif_get_resource(env, argv[0], batch_type, (void **)&b) || !b->batch ||
        !get_bin(env, argv[1], &json))
        return enif_make_badarg(env);
    if (json.size > DIRTY_JSON_BYTES && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "datum_batch_push_json", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 timed_datum_batch_push_json, argc, argv);
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_datum_batch_push_json(b->batch, json.data, json.size, &err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    atomic_fetch_add(&b->bytes, json.size);
    return a_ok;
}

/* datum_batch_set_loss_input(Batch, Name, DataBinary, Dtype, Shape | nil) */
static ERL_NIF_TERM nif_datum_batch_set_loss_input(ErlNifEnv *env, int argc,
                                                   const ERL_NIF_TERM argv[]) {
    batch_t *b;
    ErlNifBinary name, data;
    int dtype;
    if (!enif_get_resource(env, argv[0], batch_type, (void **)&b) || !b->batch ||
        !get_bin(env, argv[1], &name) || !get_bin(env, argv[2], &data) ||
        !enif_get_int(env, argv[3], &dtype))
        return enif_make_badarg(env);
    /* Shape: nil means 1-D [len] (the C ABI's NULL shape); a list is passed through as is,
     * so [] is a scalar (ndim 0, one element), exactly as in the C ABI and the JSON path. */
    int64_t shape[MAX_NDIM];
    size_t ndim = 0;
    int has_shape = !enif_is_identical(argv[4], a_nil);
    if (has_shape) {
        ERL_NIF_TERM list = argv[4], head;
        unsigned len;
        if (!enif_get_list_length(env, list, &len) || len > MAX_NDIM) return enif_make_badarg(env);
        while (enif_get_list_cell(env, list, &head, &list)) {
            ErlNifSInt64 v;
            if (!enif_get_int64(env, head, &v)) return enif_make_badarg(env);
            shape[ndim++] = v;
        }
    }
    size_t es = dtype_size(dtype);
    if (!es || data.size % es)
        return local_error(env, TINKEX_STATUS_INVALID_ARG, a_invalid_arg,
                           "the data binary's size is not a multiple of the dtype's size");
    size_t n = data.size / es;
    if (data.size > DIRTY_ARRAY_BYTES && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "datum_batch_set_loss_input", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 timed_datum_batch_set_loss_input, argc, argv);
    tinkex_error *err = NULL;
    tinkex_status st =
        tinkex_datum_batch_set_loss_input(b->batch, name.data, name.size, n ? data.data : NULL,
                                          n, dtype, has_shape ? shape : NULL, ndim, &err);
    if (st == TINKEX_STATUS_OK) atomic_fetch_add(&b->bytes, data.size);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

static ERL_NIF_TERM nif_datum_batch_len(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    batch_t *b;
    if (!enif_get_resource(env, argv[0], batch_type, (void **)&b)) return enif_make_badarg(env);
    return enif_make_uint64(env, tinkex_datum_batch_len(b->batch));
}

/* ------------------------------------------------------------------------------------ */
/* Sampling client                                                                       */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_sampling_client_get_info(ErlNifEnv *env, int argc,
                                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *sc;
    if (!get_handle(env, argv[0], samp_type, &sc)) return enif_make_badarg(env);
    tinkex_bytes *b = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_sampling_client_get_info(sc, &b, &err);
    return info_json(env, st, b, err);
}

/* ------------------------------------------------------------------------------------ */
/* REST client                                                                           */
/* ------------------------------------------------------------------------------------ */

/* rest_client_new(Runtime, ConfigJson) / admin_client_new(...): session-less holders (no
 * I/O at creation). */
#define HOLDER_NEW(name, type, kind, ctype)                                                         \
    static ERL_NIF_TERM nif_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {    \
        (void)argc;                                                                            \
        void *rt;                                                                              \
        ErlNifBinary cfg;                                                                      \
        if (!get_handle(env, argv[0], rt_type, &rt) || !get_bin(env, argv[1], &cfg))          \
            return enif_make_badarg(env);                                                      \
        handle_t *h = alloc_handle(type, kind);                                                \
        if (!h) return oom_error(env, #name " resource");                                     \
        ctype *out = NULL;                                                                     \
        tinkex_error *err = NULL;                                                              \
        tinkex_status st = tinkex_##name(rt, cfg.data, cfg.size, &out, &err);                   \
        if (st != TINKEX_STATUS_OK) {                                                          \
            enif_release_resource(h);                                                          \
            return error_tuple(env, st, err);                                                  \
        }                                                                                      \
        return enif_make_tuple2(env, a_ok, fill_handle(env, h, out));                          \
    }

/* rest_client_call(Client, Method, ArgsJson) / admin_client_call(...) -> {ok, Ref, Future}:
 * the generic call of the method table (src/core/rest/methods.json). */
#define HOLDER_CALL(name, type)                                                                \
    static ERL_NIF_TERM nif_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {    \
        (void)argc;                                                                            \
        void *c;                                                                               \
        ErlNifBinary method, args;                                                             \
        if (!get_handle(env, argv[0], type, &c) || !get_bin(env, argv[1], &method) ||          \
            !get_bin(env, argv[2], &args))                                                     \
            return enif_make_badarg(env);                                                      \
        if (args.size > DIRTY_JSON_BYTES && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) \
            return enif_schedule_nif(env, #name, ERL_NIF_DIRTY_JOB_CPU_BOUND, timed_##name,    \
                                     argc, argv);                                              \
        submit_t s;                                                                            \
        if (!submit_begin(env, TAKE_JSON, &s)) return oom_error(env, "submit");                \
        tinkex_future *fut = NULL;                                                             \
        tinkex_error *err = NULL;                                                              \
        tinkex_status st = tinkex_##name(c, method.data, method.size, args.data, args.size,    \
                                         on_done, s.ctx, &fut, &err);                          \
        return submit_end(env, &s, st, fut, err);                                              \
    }

HOLDER_NEW(rest_client_new, rest_type, K_REST, tinkex_rest_client)
HOLDER_NEW(admin_client_new, admin_type, K_ADMIN, tinkex_admin_client)
HOLDER_CALL(rest_client_call, rest_type)
HOLDER_CALL(admin_client_call, admin_type)

/* ------------------------------------------------------------------------------------ */
/* Futures                                                                               */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_future_cancel(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *f;
    if (!get_handle(env, argv[0], fut_type, &f)) return enif_make_badarg(env);
    (void)tinkex_future_cancel(f);
    return a_ok;
}

static ERL_NIF_TERM nif_future_is_done(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *f;
    if (!get_handle(env, argv[0], fut_type, &f)) return enif_make_badarg(env);
    return tinkex_future_is_done(f) ? a_true : a_false;
}

/* ------------------------------------------------------------------------------------ */
/* Testing exports (present only in a library built with --features testing)             */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_testing_available(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)env;
    (void)argc;
    (void)argv;
    return (tinkex_testing_panic_in_export && tinkex_testing_panic_in_task) ? a_true : a_false;
}

static ERL_NIF_TERM nif_testing_panic_in_export(ErlNifEnv *env, int argc,
                                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    if (!tinkex_testing_panic_in_export)
        return local_error(env, TINKEX_STATUS_WRONG_STATE, a_wrong_state,
                           "libtinkex was built without the `testing` feature");
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_testing_panic_in_export(&err);
    if (st != TINKEX_STATUS_OK) return error_tuple(env, st, err);
    return a_ok;
}

static ERL_NIF_TERM nif_testing_panic_in_task(ErlNifEnv *env, int argc,
                                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *rt;
    int where;
    if (!get_handle(env, argv[0], rt_type, &rt) || !enif_get_int(env, argv[1], &where))
        return enif_make_badarg(env);
    if (!tinkex_testing_panic_in_task)
        return local_error(env, TINKEX_STATUS_WRONG_STATE, a_wrong_state,
                           "libtinkex was built without the `testing` feature");
    submit_t s;
    if (!submit_begin(env, TAKE_JSON, &s)) return oom_error(env, "submit");
    tinkex_future *fut = NULL;
    tinkex_error *err = NULL;
    tinkex_status st = tinkex_testing_panic_in_task(rt, where, on_done, s.ctx, &fut, &err);
    return submit_end(env, &s, st, fut, err);
}

/* testing_spin(Microseconds): burns the CPU on the calling scheduler. A negative control for
 * the scheduler checks of the test suite (it is the one NIF that breaks the bound on purpose);
 * not part of the C ABI. */
static ERL_NIF_TERM nif_testing_spin(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned us;
    if (!enif_get_uint(env, argv[0], &us) || us > 1000000) return enif_make_badarg(env);
    uint64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + (uint64_t)us * 1000u;
    volatile uint64_t x = 0;
    while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) x++;
    return a_ok;
}

/* testing_block(Microseconds): sleeps on the calling scheduler (a blocking call: the thread
 * switches out voluntarily and uses no CPU). The negative control for a NIF that blocks;
 * not part of the C ABI. */
static ERL_NIF_TERM nif_testing_block(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned us;
    if (!enif_get_uint(env, argv[0], &us) || us > 1000000) return enif_make_badarg(env);
    struct timespec ts = {.tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return a_ok;
}

/* testing_fail_alloc(N): N >= 1 makes the Nth fallible allocation made from now on behalf
 * of the calling process fail (once); 0 disarms. {error, not_compiled} unless the NIF was
 * built with -DTINKEX_NIF_TESTING (the test build). Not part of the C ABI. */
static ERL_NIF_TERM nif_testing_fail_alloc(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n)) return enif_make_badarg(env);
#ifdef TINKEX_NIF_TESTING
    atomic_store(&fault_countdown, 0);
    enif_self(env, &fault_pid);
    atomic_store(&fault_countdown, (long)n);
    return a_ok;
#else
    return enif_make_tuple2(env, a_error, enif_make_atom(env, "not_compiled"));
#endif
}

/* testing_fault_state() -> {Remaining, Injected, DroppedEvents}: the armed countdown (0:
 * fired or disarmed), the number of failures injected so far and the number of events
 * dropped for lack of memory; {error, not_compiled} outside the test build. */
static ERL_NIF_TERM nif_testing_fault_state(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
#ifdef TINKEX_NIF_TESTING
    return enif_make_tuple4(env, enif_make_long(env, atomic_load(&fault_countdown)),
                            enif_make_long(env, atomic_load(&fault_injected)),
                            enif_make_long(env, atomic_load(&dropped_events)),
                            enif_make_long(env, atomic_load(&dropped_logs)));
#else
    return enif_make_tuple2(env, a_error, enif_make_atom(env, "not_compiled"));
#endif
}

/* ------------------------------------------------------------------------------------ */
/* Introspection                                                                         */
/* ------------------------------------------------------------------------------------ */

static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_tuple4(
        env, make_str(env, tinkex_version()), enif_make_uint(env, tinkex_version_number()),
        enif_make_tuple2(env, enif_make_uint(env, tinkex_abi_version_major()),
                         enif_make_uint(env, tinkex_abi_version_minor())),
        enif_make_tuple2(env, enif_make_uint(env, TINKEX_ABI_VERSION_MAJOR),
                         enif_make_uint(env, TINKEX_ABI_VERSION_MINOR)));
}

static ERL_NIF_TERM nif_status_name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    int s;
    if (!enif_get_int(env, argv[0], &s)) return enif_make_badarg(env);
    return make_str(env, tinkex_status_name(s));
}

/* %{kind => {live, total_created}} */
static ERL_NIF_TERM nif_resource_counts(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM keys[K_COUNT], vals[K_COUNT], map;
    for (int k = 0; k < K_COUNT; k++) {
        keys[k] = enif_make_atom(env, kind_names[k]);
        vals[k] = enif_make_tuple2(env, enif_make_long(env, atomic_load(&live[k])),
                                   enif_make_long(env, atomic_load(&total[k])));
    }
    enif_make_map_from_arrays(env, keys, vals, K_COUNT, &map);
    return map;
}

/* ------------------------------------------------------------------------------------ */
/* Timing and the function table                                                         */
/* ------------------------------------------------------------------------------------ */

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#ifdef TINKEX_NIF_TIMING
/* The timing build (-DTINKEX_NIF_TIMING, used by the test suite): every NIF call on a normal
 * scheduler is measured. What holds a scheduler is the call's own work — its thread CPU time —
 * and the time it spends blocked (asleep: waiting on a lock, I/O, a sleep). Neither counts
 * the time the OS (or the hypervisor) kept a runnable thread off the CPU, which is not the
 * NIF's doing:
 * - cpu: CLOCK_THREAD_CPUTIME_ID;
 * - blocked: when the thread switched out voluntarily during the call (getrusage
 *   ru_nvcsw), wall - cpu - run-queue wait (the second field of /proc/thread-self/schedstat,
 *   the time it was runnable but not running); otherwise 0. */
typedef struct {
    atomic_ullong calls;           /* calls that ran on a normal scheduler */
    atomic_ullong max_wall_ns;     /* longest wall-clock time on a normal scheduler */
    atomic_ullong max_cpu_ns;      /* longest thread CPU time on a normal scheduler */
    atomic_ullong total_wall_ns;
    atomic_ullong dirty_calls;     /* calls (or continuations) that ran on a dirty scheduler */
    atomic_ullong blocked_calls;   /* calls during which the thread blocked (voluntary switch) */
    atomic_ullong preempted_calls; /* calls during which the OS preempted the thread */
    atomic_ullong max_blocked_ns;  /* longest time a call spent blocked (see above) */
    atomic_ullong blocked_over_calls; /* calls blocked for more than SLOW_CALL_NS */
    atomic_ullong cpu_over_calls;  /* calls that used more than SLOW_CALL_NS of thread CPU */
} nif_stat;

static nif_stat stats[I_COUNT];

/* The most recent calls on a normal scheduler that took more than SLOW_CALL_NS of wall or
 * CPU time, with the calling process, so the tests can attribute every long-schedule report
 * of the system monitor. */
#define SLOW_CALL_NS 1000000ull
#define SLOW_CALLS 512
typedef struct {
    int idx;
    ErlNifPid pid;
    uint64_t wall_ns, cpu_ns, blocked_ns, runq_ns;
    int blocked, preempted;
    long faults; /* page faults the kernel served on the thread during the call */
} slow_call;
static slow_call slow_calls[SLOW_CALLS];
static unsigned slow_count; /* total recorded; the ring keeps the last SLOW_CALLS */
static ErlNifMutex *slow_mu;

/* The calling thread's run-queue wait so far (ns), or 0 when the kernel does not report it.
 * Each scheduler thread keeps its schedstat file open (pread at 0 re-reads it). */
static _Thread_local int schedstat_fd = -2;

static uint64_t runq_wait_ns(void) {
    if (schedstat_fd == -2) schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (schedstat_fd < 0) return 0;
    char buf[128];
    ssize_t n = pread(schedstat_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    unsigned long long run, wait;
    if (sscanf(buf, "%llu %llu", &run, &wait) != 2) return 0;
    return wait;
}

static void atomic_max(atomic_ullong *slot, uint64_t v) {
    unsigned long long cur = atomic_load(slot);
    while (v > cur && !atomic_compare_exchange_weak(slot, &cur, v)) {
    }
}

static ERL_NIF_TERM timed_body(int idx,
                               ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                               ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    if (enif_thread_type() != ERL_NIF_THR_NORMAL_SCHEDULER) {
        atomic_fetch_add(&stats[idx].dirty_calls, 1);
        return fn(env, argc, argv);
    }
    struct rusage u0, u1;
    getrusage(RUSAGE_THREAD, &u0);
    uint64_t q0 = runq_wait_ns();
    uint64_t w0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    ERL_NIF_TERM r = fn(env, argc, argv);
    uint64_t c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID), w1 = clock_ns(CLOCK_MONOTONIC);
    uint64_t q1 = runq_wait_ns();
    getrusage(RUSAGE_THREAD, &u1);
    int blocked = u1.ru_nvcsw != u0.ru_nvcsw, preempted = u1.ru_nivcsw != u0.ru_nivcsw;
    long faults = (u1.ru_minflt - u0.ru_minflt) + (u1.ru_majflt - u0.ru_majflt);
    uint64_t wall = w1 - w0, cpu = c1 - c0, runq = q1 > q0 ? q1 - q0 : 0;
    uint64_t off = wall > cpu + runq ? wall - cpu - runq : 0;
    uint64_t blocked_ns = blocked ? off : 0;
    if (blocked) atomic_fetch_add(&stats[idx].blocked_calls, 1);
    if (preempted) atomic_fetch_add(&stats[idx].preempted_calls, 1);
    if ((wall > SLOW_CALL_NS || cpu > SLOW_CALL_NS) && slow_mu) {
        slow_call sc = {.idx = idx, .wall_ns = wall, .cpu_ns = cpu, .blocked_ns = blocked_ns,
                        .runq_ns = runq, .blocked = blocked, .preempted = preempted,
                        .faults = faults};
        enif_self(env, &sc.pid);
        enif_mutex_lock(slow_mu);
        slow_calls[slow_count++ % SLOW_CALLS] = sc;
        enif_mutex_unlock(slow_mu);
    }
    atomic_fetch_add(&stats[idx].calls, 1);
    atomic_fetch_add(&stats[idx].total_wall_ns, wall);
    atomic_max(&stats[idx].max_wall_ns, wall);
    atomic_max(&stats[idx].max_cpu_ns, cpu);
    atomic_max(&stats[idx].max_blocked_ns, blocked_ns);
    if (blocked_ns > SLOW_CALL_NS) atomic_fetch_add(&stats[idx].blocked_over_calls, 1);
    if (cpu > SLOW_CALL_NS) atomic_fetch_add(&stats[idx].cpu_over_calls, 1);
    return r;
}
#else
/* Without TINKEX_NIF_TIMING a NIF call does no timing at all. */
static ERL_NIF_TERM timed_body(int idx,
                               ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                               ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)idx;
    return fn(env, argc, argv);
}
#endif

static ERL_NIF_TERM timed(int idx, ERL_NIF_TERM (*fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                          ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
#ifdef TINKEX_NIF_TESTING
    /* Allocations of this call are made on behalf of the calling process. */
    ErlNifPid self;
    FAULT_SCOPE(enif_self(env, &self) ? &self : NULL);
    ERL_NIF_TERM r = timed_body(idx, fn, env, argc, argv);
    FAULT_SCOPE_END();
    return r;
#else
    return timed_body(idx, fn, env, argc, argv);
#endif
}

#define X_WRAP(name, arity, flags)                                                             \
    static ERL_NIF_TERM timed_##name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {  \
        return timed(I_##name, nif_##name, env, argc, argv);                                   \
    }
NIF_LIST(X_WRAP)

#ifdef TINKEX_NIF_TIMING
#define X_NAME(name, arity, flags) #name,
static const char *const nif_names[I_COUNT] = {NIF_LIST(X_NAME)};

/* [{Name, Calls, MaxWallNs, MaxCpuNs, TotalWallNs, DirtyCalls, BlockedCalls, PreemptedCalls,
 *   MaxBlockedNs, BlockedOverCalls, CpuOverCalls}] */
static ERL_NIF_TERM nif_stats_get(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (int i = I_COUNT - 1; i >= 0; i--) {
        ERL_NIF_TERM items[11] = {enif_make_atom(env, nif_names[i]),
                                  enif_make_uint64(env, atomic_load(&stats[i].calls)),
                                  enif_make_uint64(env, atomic_load(&stats[i].max_wall_ns)),
                                  enif_make_uint64(env, atomic_load(&stats[i].max_cpu_ns)),
                                  enif_make_uint64(env, atomic_load(&stats[i].total_wall_ns)),
                                  enif_make_uint64(env, atomic_load(&stats[i].dirty_calls)),
                                  enif_make_uint64(env, atomic_load(&stats[i].blocked_calls)),
                                  enif_make_uint64(env, atomic_load(&stats[i].preempted_calls)),
                                  enif_make_uint64(env, atomic_load(&stats[i].max_blocked_ns)),
                                  enif_make_uint64(env, atomic_load(&stats[i].blocked_over_calls)),
                                  enif_make_uint64(env, atomic_load(&stats[i].cpu_over_calls))};
        list = enif_make_list_cell(env, enif_make_tuple_from_array(env, items, 11), list);
    }
    return list;
}

/* [{Name, Pid, WallNs, CpuNs, BlockedNs, RunQueueNs, Blocked, Preempted, Faults}], oldest first;
 * clears the record. */
static ERL_NIF_TERM nif_slow_calls(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    if (!slow_mu) return list; /* load() refuses to load without it; defensive */
    enif_mutex_lock(slow_mu);
    unsigned n = slow_count < SLOW_CALLS ? slow_count : SLOW_CALLS;
    for (unsigned k = 0; k < n; k++) {
        slow_call *sc = &slow_calls[(slow_count - 1 - k) % SLOW_CALLS];
        ERL_NIF_TERM items[9] = {enif_make_atom(env, nif_names[sc->idx]),
                                 enif_make_pid(env, &sc->pid),
                                 enif_make_uint64(env, sc->wall_ns),
                                 enif_make_uint64(env, sc->cpu_ns),
                                 enif_make_uint64(env, sc->blocked_ns),
                                 enif_make_uint64(env, sc->runq_ns),
                                 sc->blocked ? a_true : a_false,
                                 sc->preempted ? a_true : a_false,
                                 enif_make_uint64(env, (uint64_t)sc->faults)};
        list = enif_make_list_cell(env, enif_make_tuple_from_array(env, items, 9), list);
    }
    slow_count = 0;
    enif_mutex_unlock(slow_mu);
    return list;
}

static ERL_NIF_TERM nif_stats_reset(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)env;
    (void)argc;
    (void)argv;
    for (int i = 0; i < I_COUNT; i++) {
        atomic_store(&stats[i].calls, 0);
        atomic_store(&stats[i].max_wall_ns, 0);
        atomic_store(&stats[i].max_cpu_ns, 0);
        atomic_store(&stats[i].total_wall_ns, 0);
        atomic_store(&stats[i].dirty_calls, 0);
        atomic_store(&stats[i].blocked_calls, 0);
        atomic_store(&stats[i].preempted_calls, 0);
        atomic_store(&stats[i].max_blocked_ns, 0);
        atomic_store(&stats[i].blocked_over_calls, 0);
        atomic_store(&stats[i].cpu_over_calls, 0);
    }
    return a_ok;
}
#else
/* {error, not_compiled}: the NIF was built without TINKEX_NIF_TIMING. */
static ERL_NIF_TERM not_timed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_tuple2(env, a_error, enif_make_atom(env, "not_compiled"));
}
#define nif_stats_get not_timed
#define nif_slow_calls not_timed
#define nif_stats_reset not_timed
#endif

#define X_FUNC(name, arity, flags) {#name, arity, timed_##name, flags},
static ErlNifFunc nif_funcs[] = {NIF_LIST(X_FUNC){"nif_stats", 0, nif_stats_get, 0},
                                 {"nif_stats_reset", 0, nif_stats_reset, 0},
                                 {"nif_slow_calls", 0, nif_slow_calls, 0}};

/* ------------------------------------------------------------------------------------ */
/* Load                                                                                  */
/* ------------------------------------------------------------------------------------ */

static int open_types(ErlNifEnv *env) {
    ErlNifResourceFlags f = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
#define OPEN(var, name, dtor)                                                                  \
    if (!(var = enif_open_resource_type(env, NULL, name, dtor, f, NULL))) return 0;
    OPEN(rt_type, "tinkex_runtime", dtor_runtime)
    OPEN(svc_type, "tinkex_service_client", dtor_service)
    OPEN(train_type, "tinkex_training_client", dtor_training)
    OPEN(samp_type, "tinkex_sampling_client", dtor_sampling)
    OPEN(rest_type, "tinkex_rest_client", dtor_rest)
    OPEN(admin_type, "tinkex_admin_client", dtor_admin)
    OPEN(fut_type, "tinkex_future", dtor_future)
    {
        ErlNifResourceTypeInit init = {.dtor = dtor_subscription, .down = down_subscription};
        if (!(sub_type = enif_open_resource_type_x(env, "tinkex_subscription", &init, f, NULL)))
            return 0;
    }
    OPEN(batch_type, "tinkex_datum_batch", dtor_batch)
    OPEN(bytes_type, "tinkex_bytes", dtor_bytes)
    OPEN(pass_type, "tinkex_custom_loss", dtor_pass)
#undef OPEN
    return 1;
}

/* libtinkex keeps pointers to on_done/on_event/on_sub_free/on_log/on_log_free until the last callback has run,
 * possibly after the module was purged: pin this library so it is never unmapped. */
static void pin_self(void) {
    Dl_info info;
    /* Any address inside this library will do; a data object's avoids converting a function
     * pointer to an object pointer (not allowed by ISO C). */
    if (dladdr((const void *)&live, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

/* A library of ABI major.minor serves a binding built for want_major.want_minor when the
 * majors are equal and its minor is at least the binding's (a function, not an inline
 * expression: with a minor of 0 the comparison is constant). */
static int abi_compatible(uint32_t major, uint32_t minor, uint32_t want_major,
                          uint32_t want_minor) {
    return major == want_major && minor >= want_minor;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    pin_self();
    /* The library must have the header's major version and at least its minor version
     * (a minor bump only adds). */
    uint32_t major = tinkex_abi_version_major(), minor = tinkex_abi_version_minor();
    if (!abi_compatible(major, minor, TINKEX_ABI_VERSION_MAJOR, TINKEX_ABI_VERSION_MINOR)) {
        fprintf(stderr,
                "tinkex_nif: libtinkex ABI %u.%u is not compatible with the header's %u.%u "
                "(the major must match, the minor be at least the header's); rebuild the NIF "
                "against this library\n",
                major, minor, (unsigned)TINKEX_ABI_VERSION_MAJOR,
                (unsigned)TINKEX_ABI_VERSION_MINOR);
        return 1;
    }
    make_atoms(env);
#ifdef TINKEX_NIF_TIMING
    if (!slow_mu) slow_mu = enif_mutex_create("tinkex_slow_calls");
    if (!slow_mu) {
        fprintf(stderr, "tinkex_nif: out of memory (enif_mutex_create) while loading\n");
        return 3;
    }
#endif
    return open_types(env) ? 0 : 2;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info) {
    (void)old_priv;
    return load(env, priv, info);
}

ERL_NIF_INIT(Elixir.Tinkex.Native, nif_funcs, load, NULL, upgrade, NULL)
