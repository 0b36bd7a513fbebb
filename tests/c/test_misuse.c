/* Misuse and lifecycle cases of the C API:
 *   test_misuse BASE_URL
 * NULL / invalid UTF-8 / invalid JSON arguments, _free(NULL), versions, second take,
 * PENDING, cancel before and after completion, free a client mid-flight, WRONG_TYPE,
 * wait on the dispatcher, shutdown with pending work, and (with TINKEX_TESTING) injected
 * panics. A local "black hole" socket (listening, never answering) keeps operations
 * pending deterministically. */
#define _GNU_SOURCE /* pthread_getname_np, before any system header */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static tinkex_runtime *new_runtime(void) {
  tinkex_runtime *rt = NULL;
  tinkex_error *err = NULL;
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  opts.worker_threads = 2;
  if (tinkex_runtime_new(&opts, &rt, &err) != TINKEX_STATUS_OK) {
    tinkex_error_free(err);
    return NULL;
  }
  return rt;
}

static tinkex_service_client *new_service(tinkex_runtime *rt, const char *url) {
  char config[512];
  tinkex_service_client *svc = NULL;
  tinkex_error *err = NULL;
  snprintf(config, sizeof config,
           "{\"api_key\":\"tml-c-test\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}",
           url);
  if (tinkex_service_client_new(rt, u8(config), strlen(config), &svc, &err) !=
      TINKEX_STATUS_OK) {
    report_error("service_client_new", TINKEX_STATUS_INTERNAL, err);
    tinkex_error_free(err);
    return NULL;
  }
  return svc;
}

/* A socket that accepts connections into its backlog but never reads or answers. */
static int black_hole(char *url, size_t cap) {
  struct sockaddr_in addr;
  socklen_t len = sizeof addr;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    perror("black hole");
    exit(2);
  }
  snprintf(url, cap, "http://127.0.0.1:%d", (int)ntohs(addr.sin_port));
  return fd;
}

static void test_versions_and_names(void) {
  CHECK(strcmp(tinkex_version(), TINKEX_VERSION) == 0);
  CHECK(tinkex_version_number() == TINKEX_VERSION_NUMBER);
  CHECK(TINKEX_VERSION_NUMBER ==
        TINKEX_VERSION_MAJOR * 1000000 + TINKEX_VERSION_MINOR * 1000 + TINKEX_VERSION_PATCH);
  CHECK(abi_matches());
  CHECK(strcmp(tinkex_status_name(TINKEX_STATUS_NULL_ARG), "TINKEX_STATUS_NULL_ARG") == 0);
  CHECK(strcmp(tinkex_status_name(-5), "TINKEX_STATUS_UNKNOWN") == 0);
  CHECK(TINKEX_STATUS_OK == 0 && TINKEX_STATUS_PENDING == 1 && TINKEX_STATUS_PANIC == 901);
}

static void test_free_null_and_fallbacks(void) {
  size_t len = 9;
  tinkex_runtime_free(NULL);
  tinkex_service_client_free(NULL);
  tinkex_training_client_free(NULL);
  tinkex_sampling_client_free(NULL);
  tinkex_rest_client_free(NULL);
  tinkex_future_free(NULL);
  tinkex_error_free(NULL);
  tinkex_bytes_free(NULL);
  tinkex_subscription_free(NULL);
  tinkex_datum_batch_free(NULL);
  CHECK(tinkex_error_message(NULL) == NULL);
  CHECK(tinkex_error_http_status(NULL) == 0);
  CHECK(!tinkex_error_is_retryable(NULL));
  CHECK(tinkex_bytes_len(NULL) == 0);
  CHECK(tinkex_future_clone(NULL) == NULL);
  CHECK(!tinkex_future_is_done(NULL));
  CHECK(tinkex_event_json(NULL, &len) == NULL && len == 0);
  CHECK_STATUS(tinkex_future_cancel(NULL), TINKEX_STATUS_NULL_ARG);
}

static void test_bad_arguments(tinkex_runtime *rt, const char *url) {
  tinkex_service_client *svc = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt2 = NULL;
  tinkex_future *fut = NULL;
  waiter w;
  static const uint8_t bad_utf8[] = {'{', 0xff, 0xfe, '}'};
  const char *bad_json = "{\"api_key\": ";
  const char *unknown = "{\"api_kee\":\"tml-x\"}";

  s = tinkex_service_client_new(NULL, u8("{}"), 2, &svc, &err);
  expect_failure("NULL runtime", s, err, TINKEX_STATUS_NULL_ARG);
  s = tinkex_service_client_new(rt, NULL, 3, &svc, &err);
  expect_failure("(NULL, 3) input", s, err, TINKEX_STATUS_NULL_ARG);
  s = tinkex_service_client_new(rt, u8("{}"), 2, NULL, &err);
  expect_failure("NULL out", s, err, TINKEX_STATUS_NULL_ARG);
  s = tinkex_service_client_new(rt, bad_utf8, sizeof bad_utf8, &svc, &err);
  expect_failure("invalid UTF-8", s, err, TINKEX_STATUS_INVALID_UTF8);
  s = tinkex_service_client_new(rt, u8(bad_json), strlen(bad_json), &svc, &err);
  expect_failure("invalid JSON", s, err, TINKEX_STATUS_INVALID_JSON);
  s = tinkex_service_client_new(rt, u8(unknown), strlen(unknown), &svc, &err);
  expect_failure("unknown field", s, err, TINKEX_STATUS_INVALID_JSON);
  CHECK(svc == NULL);
  /* out_err may be NULL. */
  CHECK_STATUS(tinkex_service_client_new(rt, u8(bad_json), strlen(bad_json), &svc, NULL),
               TINKEX_STATUS_INVALID_JSON);

  opts.log_level = 77;
  s = tinkex_runtime_new(&opts, &rt2, &err);
  expect_failure("bad log level", s, err, TINKEX_STATUS_INVALID_ARG);
  opts.log_level = TINKEX_LOG_LEVEL_OFF;
  opts.struct_size = 2;
  s = tinkex_runtime_new(&opts, &rt2, &err);
  expect_failure("small struct_size", s, err, TINKEX_STATUS_INVALID_ARG);
  CHECK(rt2 == NULL);

  svc = new_service(rt, url);
  waiter_init(&w);
  s = tinkex_service_client_create_lora_training_client(svc, u8("{\"base_model\":"), 14,
                                                        on_done, &w, &fut, &err);
  expect_failure("invalid request JSON", s, err, TINKEX_STATUS_INVALID_JSON);
  s = tinkex_service_client_create_sampling_client(svc, u8("{}"), 2, on_done, &w, &fut, &err);
  expect_failure("neither model_path nor base_model", s, err, TINKEX_STATUS_INVALID_ARG);
  s = tinkex_service_client_get_server_capabilities(svc, on_done, &w, NULL, &err);
  expect_failure("NULL out_future", s, err, TINKEX_STATUS_NULL_ARG);
  CHECK(fut == NULL);
  sleep_ms(50);
  CHECK(waiter_calls(&w) == 0); /* no callback for a refused submission */
  waiter_destroy(&w);
  tinkex_service_client_free(svc);
}

static void test_datum_batch(void) {
  tinkex_datum_batch *b = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  int64_t tokens[3] = {1, 2, 3};
  float w[3] = {1, 1, 1};
  int64_t bad_shape[2] = {2, 2};
  tinkex_future *fut = NULL;
  CHECK(tinkex_datum_batch_new(&b, &err) == TINKEX_STATUS_OK);
  s = tinkex_datum_batch_set_loss_input(b, u8("weights"), 7, w, 3, TINKEX_DTYPE_FLOAT32, NULL,
                                        0, &err);
  expect_failure("loss input before push", s, err, TINKEX_STATUS_WRONG_STATE);
  s = tinkex_datum_batch_push(b, tokens, 3, 42, &err);
  expect_failure("unknown dtype", s, err, TINKEX_STATUS_INVALID_ARG);
  s = tinkex_datum_batch_push(b, NULL, 3, TINKEX_DTYPE_INT64, &err);
  expect_failure("NULL tokens", s, err, TINKEX_STATUS_NULL_ARG);
  CHECK(tinkex_datum_batch_push(b, tokens, 3, TINKEX_DTYPE_INT64, &err) == TINKEX_STATUS_OK);
  s = tinkex_datum_batch_set_loss_input(b, u8("weights"), 7, w, 3, TINKEX_DTYPE_FLOAT32,
                                        bad_shape, 2, &err);
  expect_failure("shape mismatch", s, err, TINKEX_STATUS_INVALID_ARG);
  CHECK(tinkex_datum_batch_len(b) == 1);
  /* A batch submit borrows the batch: it stays usable and is freed by its owner. */
  s = tinkex_training_client_forward_backward_batch(NULL, b, NULL, 0, NULL, NULL, &fut, &err);
  expect_failure("NULL client", s, err, TINKEX_STATUS_NULL_ARG);
  CHECK(tinkex_datum_batch_len(b) == 1);
  /* A JSON datum joins the typed ones; a misspelled field is INVALID_JSON. */
  {
    const char *d = "{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
                    "\"loss_fn_inputs\":{}}";
    CHECK(tinkex_datum_batch_push_json(b, u8(d), strlen(d), &err) == TINKEX_STATUS_OK);
    CHECK(tinkex_datum_batch_len(b) == 2);
    s = tinkex_datum_batch_push_json(b, u8("{\"model_inptu\":{}}"), 18, &err);
    expect_failure("misspelled datum field", s, err, TINKEX_STATUS_INVALID_JSON);
  }
  {
    tinkex_datum_batch *b2 = tinkex_datum_batch_clone(b);
    CHECK(b2 == b);
    tinkex_datum_batch_free(b2);
  }
  tinkex_datum_batch_free(b);
}

static void test_futures(tinkex_runtime *rt, const char *url, const char *hole_url) {
  tinkex_service_client *svc = new_service(rt, url);
  tinkex_service_client *stuck = new_service(rt, hole_url);
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char *json;
  waiter w;

  /* Completed, then: cancel is a no-op, second take is ALREADY_TAKEN. */
  waiter_init(&w);
  s = tinkex_service_client_get_server_capabilities(svc, on_done, &w, &fut, &err);
  CHECK(s == TINKEX_STATUS_OK);
  CHECK(waiter_wait(&w, 60));
  CHECK(tinkex_future_is_done(fut));
  CHECK_STATUS(tinkex_future_cancel(fut), TINKEX_STATUS_OK);
  json = take_json(fut, &s);
  CHECK(s == TINKEX_STATUS_OK && json != NULL);
  free(json);
  {
    tinkex_bytes *b = NULL;
    s = tinkex_future_take_result(fut, &b, &err);
    expect_failure("second take", s, err, TINKEX_STATUS_ALREADY_TAKEN);
    CHECK(b == NULL);
  }
  sleep_ms(20);
  CHECK(waiter_calls(&w) == 1 && w.wrong_thread == 0);
  tinkex_future_free(fut);
  waiter_destroy(&w);

  /* Pending (black hole): PENDING, wait times out, cancel (twice) gives CANCELLED once. */
  waiter_init(&w);
  s = tinkex_service_client_get_server_capabilities(stuck, on_done, &w, &fut, &err);
  CHECK(s == TINKEX_STATUS_OK);
  json = take_json(fut, &s);
  CHECK(s == TINKEX_STATUS_PENDING && json == NULL);
  CHECK(tinkex_future_wait(fut, 30, &err) == TINKEX_STATUS_PENDING);
  CHECK_STATUS(tinkex_future_cancel(fut), TINKEX_STATUS_OK);
  CHECK_STATUS(tinkex_future_cancel(fut), TINKEX_STATUS_OK);
  /* wait returns only after the callback has returned. */
  CHECK(tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, &err) == TINKEX_STATUS_OK);
  pthread_mutex_lock(&w.mu);
  CHECK(w.calls == 1);
  pthread_mutex_unlock(&w.mu);
  CHECK(waiter_wait(&w, 10));
  {
    tinkex_bytes *b = NULL;
    s = tinkex_future_take_result(fut, &b, &err);
    expect_failure("cancelled", s, err, TINKEX_STATUS_CANCELLED);
  }
  sleep_ms(20);
  CHECK(waiter_calls(&w) == 1 && w.wrong_thread == 0);
  tinkex_future_free(fut);
  waiter_destroy(&w);

  /* Free the client (and the future) mid-flight: the operation completes, callback fires. */
  waiter_init(&w);
  {
    tinkex_service_client *temp = new_service(rt, url);
    s = tinkex_service_client_get_server_capabilities(temp, on_done, &w, &fut, &err);
    CHECK(s == TINKEX_STATUS_OK);
    tinkex_service_client_free(temp);
    tinkex_future_free(fut);
  }
  CHECK(waiter_wait(&w, 60));
  sleep_ms(20);
  CHECK(waiter_calls(&w) == 1 && w.wrong_thread == 0);
  waiter_destroy(&w);

  tinkex_service_client_free(svc);
  tinkex_service_client_free(stuck);
}

/* Calls tinkex_future_wait inside the callback: it must refuse with WRONG_STATE. */
typedef struct wait_inside {
  waiter w;
  tinkex_status seen;
} wait_inside;

static void on_done_wait_inside(void *user_data, const tinkex_future *fut) {
  wait_inside *x = (wait_inside *)user_data;
  tinkex_error *err = NULL;
  x->seen = tinkex_future_wait(fut, 1, &err);
  tinkex_error_free(err);
  on_done(&x->w, fut);
}

static void test_wait_in_callback(tinkex_runtime *rt, const char *url) {
  tinkex_service_client *svc = new_service(rt, url);
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  wait_inside x;
  waiter_init(&x.w);
  x.seen = TINKEX_STATUS_OK;
  CHECK(tinkex_service_client_get_server_capabilities(svc, on_done_wait_inside, &x, &fut,
                                                      &err) == TINKEX_STATUS_OK);
  CHECK(waiter_wait(&x.w, 60));
  CHECK(x.seen == TINKEX_STATUS_WRONG_STATE);
  tinkex_future_free(fut);
  tinkex_service_client_free(svc);
  waiter_destroy(&x.w);
}

#ifdef TINKEX_TESTING
static void test_injected_panics(tinkex_runtime *rt) {
  tinkex_error *err = NULL;
  tinkex_status s = tinkex_testing_panic_in_export(&err);
  int where;
  CHECK(s == TINKEX_STATUS_PANIC);
  CHECK(err != NULL && strstr(tinkex_error_message(err), "injected") != NULL);
  tinkex_error_free(err);
  for (where = 0; where < 2; where++) {
    tinkex_future *fut = NULL;
    tinkex_bytes *b = NULL;
    waiter w;
    waiter_init(&w);
    CHECK(tinkex_testing_panic_in_task(rt, where, on_done, &w, &fut, &err) == TINKEX_STATUS_OK);
    CHECK(waiter_wait(&w, 10));
    s = tinkex_future_take_result(fut, &b, &err);
    expect_failure("injected task panic", s, err, TINKEX_STATUS_PANIC);
    sleep_ms(20);
    CHECK(waiter_calls(&w) == 1);
    tinkex_future_free(fut);
    waiter_destroy(&w);
  }
}
#endif

static void test_shutdown_with_pending_work(const char *hole_url) {
  tinkex_runtime *rt = new_runtime();
  tinkex_service_client *svc = new_service(rt, hole_url);
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_bytes *b = NULL;
  tinkex_status s;
  waiter w;
  waiter_init(&w);
  CHECK(tinkex_service_client_get_server_capabilities(svc, on_done, &w, &fut, &err) ==
        TINKEX_STATUS_OK);
  CHECK(tinkex_runtime_shutdown(rt, 50, &err) == TINKEX_STATUS_OK);
  CHECK(waiter_calls(&w) == 1); /* the callback ran before shutdown returned */
  s = tinkex_future_take_result(fut, &b, &err);
  expect_failure("pending at shutdown", s, err, TINKEX_STATUS_SHUT_DOWN);
  s = tinkex_service_client_get_server_capabilities(svc, on_done, &w, &fut, &err);
  expect_failure("submit after shutdown", s, err, TINKEX_STATUS_SHUT_DOWN);
  CHECK(tinkex_runtime_shutdown(rt, 0, NULL) == TINKEX_STATUS_OK); /* idempotent */
  tinkex_future_free(fut);
  tinkex_runtime_free(rt);
  tinkex_service_client_free(svc);
  CHECK(waiter_calls(&w) == 1);
  waiter_destroy(&w);
}

int main(int argc, char **argv) {
  char hole_url[64];
  int hole;
  tinkex_runtime *rt;
  tinkex_error *err = NULL;
  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  hole = black_hole(hole_url, sizeof hole_url);
  rt = new_runtime();
  CHECK(rt != NULL);
  test_versions_and_names();
  test_free_null_and_fallbacks();
  test_bad_arguments(rt, argv[1]);
  test_datum_batch();
  test_futures(rt, argv[1], hole_url);
  test_wait_in_callback(rt, argv[1]);
#ifdef TINKEX_TESTING
  test_injected_panics(rt);
#endif
  CHECK(tinkex_runtime_shutdown(rt, 1000, &err) == TINKEX_STATUS_OK);
  tinkex_runtime_free(rt);
  test_shutdown_with_pending_work(hole_url);
  close(hole);
  return finish("test_misuse");
}
