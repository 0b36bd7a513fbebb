/* The sampling ABI of issue 14 against a tinkex-emulator:
 *   test_sampling BASE_URL
 * create_sampling_client with record_stability_info, sample with target_prompt_logprobs and
 * prompt_alt_tokens_k, the status getters (service, training, sampling), a sampler handle and
 * a clone built from it (tinkex_sampling_client_from_sampler_handle) sampling next to the
 * original, and garbage handles rejected. */
#include "common.h"

static const char *MODEL = "Qwen/Qwen3-8B";

typedef struct op {
  waiter w;
  tinkex_future *fut;
  tinkex_error *err;
} op;

/* Submits with `submit` already called into `o`; waits and returns the JSON result (or
 * NULL). */
static char *wait_json(op *o, tinkex_status s, const char *what) {
  char *json = NULL;
  tinkex_status took = TINKEX_STATUS_INTERNAL;
  if (s != TINKEX_STATUS_OK) {
    report_error(what, s, o->err);
    tinkex_error_free(o->err);
    g_failures++;
    waiter_destroy(&o->w);
    return NULL;
  }
  if (!waiter_wait(&o->w, 120)) {
    fprintf(stderr, "%s: the callback did not fire\n", what);
    g_failures++;
  } else {
    json = take_json(o->fut, &took);
    if (json == NULL) fprintf(stderr, "%s: no result (%s)\n", what, tinkex_status_name(took));
  }
  tinkex_future_free(o->fut);
  waiter_destroy(&o->w);
  CHECK(json != NULL);
  return json;
}

/* A synchronous getter's bytes as a malloc'd C string (NULL on failure). */
static char *bytes_string(tinkex_status s, tinkex_bytes *b, tinkex_error *err, const char *what) {
  char *copy;
  if (s != TINKEX_STATUS_OK) {
    report_error(what, s, err);
    tinkex_error_free(err);
    g_failures++;
    return NULL;
  }
  copy = (char *)malloc(tinkex_bytes_len(b) + 1);
  memcpy(copy, tinkex_bytes_data(b), tinkex_bytes_len(b) + 1);
  tinkex_bytes_free(b);
  return copy;
}

static char *sample(tinkex_sampling_client *c, const char *req, const char *what) {
  op o;
  memset(&o, 0, sizeof o);
  waiter_init(&o.w);
  return wait_json(&o,
                   tinkex_sampling_client_sample(c, u8(req), strlen(req), on_done, &o.w, &o.fut,
                                                 &o.err),
                   what);
}

int main(int argc, char **argv) {
  char config[512];
  const char *clone_config = "{\"api_key\":\"tml-c-test\",\"telemetry\":false}";
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_sampling_client *sampler = NULL, *clone = NULL, *bad = NULL;
  tinkex_training_client *training = NULL;
  tinkex_bytes *b = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char *json, *handle_json;
  op o;

  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  CHECK(abi_matches());
  opts.worker_threads = 2;
  s = tinkex_runtime_new(&opts, &rt, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("runtime_new", s, err);
    return 1;
  }
  snprintf(config, sizeof config,
           "{\"api_key\":\"tml-c-test\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}",
           argv[1]);
  s = tinkex_service_client_new(rt, u8(config), strlen(config), &svc, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("service_client_new", s, err);
    return 1;
  }

  /* Status before the session: no id, no progress time, active. */
  s = tinkex_service_client_status(svc, &b, &err);
  json = bytes_string(s, b, err, "service_client_status");
  CHECK(json != NULL && strstr(json, "\"session_id\":null") != NULL);
  CHECK(json != NULL && strstr(json, "\"queue_state\":\"active\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"last_progress_ms_ago\":null") != NULL);
  CHECK(json != NULL && strstr(json, "\"telemetry\":null") != NULL);
  free(json);
  CHECK_STATUS(tinkex_service_client_status(NULL, &b, NULL), TINKEX_STATUS_NULL_ARG);
  CHECK_STATUS(tinkex_service_client_status(svc, NULL, NULL), TINKEX_STATUS_NULL_ARG);

  /* A sampling client recording stability info. */
  memset(&o, 0, sizeof o);
  waiter_init(&o.w);
  {
    const char *req = "{\"base_model\":\"Qwen/Qwen3-8B\",\"record_stability_info\":true}";
    s = tinkex_service_client_create_sampling_client(svc, u8(req), strlen(req), on_done, &o.w,
                                                     &o.fut, &o.err);
  }
  if (s == TINKEX_STATUS_OK && waiter_wait(&o.w, 120)) {
    CHECK(tinkex_future_take_sampling_client(o.fut, &sampler, &err) == TINKEX_STATUS_OK);
  } else {
    report_error("create_sampling_client", s, o.err);
    g_failures++;
  }
  tinkex_future_free(o.fut);
  waiter_destroy(&o.w);
  if (sampler == NULL) return finish("test_sampling");
  s = tinkex_sampling_client_get_info(sampler, &b, &err);
  json = bytes_string(s, b, err, "get_info");
  CHECK(json != NULL && strstr(json, "\"record_stability_info\":true") != NULL);
  CHECK(json != NULL && strstr(json, "\"cloned_sampler_id\":0") != NULL);
  free(json);

  /* target_prompt_logprobs (sparse CSR) and prompt_alt_tokens_k. */
  json = sample(sampler,
                "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[5,6,7,8]}]},"
                "\"sampling_params\":{\"max_tokens\":1},"
                "\"target_prompt_logprobs\":{\"data\":[6,8],\"dtype\":\"int64\",\"shape\":[3,2],"
                "\"sparse_crow_indices\":[0,1,1,2],\"sparse_col_indices\":[0,1]},"
                "\"prompt_alt_tokens_k\":2}",
                "sample with targets");
  CHECK(json != NULL && strstr(json, "\"target_prompt_logprobs\":{\"data\":[") != NULL);
  CHECK(json != NULL && strstr(json, "\"sparse_crow_indices\":[0,1,1,2]") != NULL);
  CHECK(json != NULL && strstr(json, "\"prompt_alt_tokens\":{\"tokens\":") != NULL);
  free(json);
  /* A float target is refused before anything is sent. */
  memset(&o, 0, sizeof o);
  {
    const char *req = "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
                      "\"target_prompt_logprobs\":{\"data\":[1.5],\"dtype\":\"float32\","
                      "\"shape\":[1,1]}}";
    s = tinkex_sampling_client_sample(sampler, u8(req), strlen(req), NULL, NULL, &o.fut, &err);
    expect_failure("float target", s, err, TINKEX_STATUS_INVALID_ARG);
    err = NULL;
  }

  /* Sampling and service status after work: the session id, nothing in flight. */
  s = tinkex_sampling_client_status(sampler, &b, &err);
  json = bytes_string(s, b, err, "sampling_client_status");
  CHECK(json != NULL && strstr(json, "\"session_id\":\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"operations_in_flight\":0") != NULL);
  CHECK(json != NULL && strstr(json, "\"dispatch\":{\"in_flight\":0") != NULL);
  CHECK(json != NULL && json_number(json, "backoff_remaining_ms") == 0);
  free(json);

  /* A training client's status. */
  memset(&o, 0, sizeof o);
  waiter_init(&o.w);
  {
    const char *req = "{\"base_model\":\"Qwen/Qwen3-8B\"}";
    s = tinkex_service_client_create_lora_training_client(svc, u8(req), strlen(req), on_done,
                                                          &o.w, &o.fut, &o.err);
  }
  if (s == TINKEX_STATUS_OK && waiter_wait(&o.w, 120)) {
    CHECK(tinkex_future_take_training_client(o.fut, &training, &err) == TINKEX_STATUS_OK);
  } else {
    g_failures++;
  }
  tinkex_future_free(o.fut);
  waiter_destroy(&o.w);
  if (training != NULL) {
    s = tinkex_training_client_status(training, &b, &err);
    json = bytes_string(s, b, err, "training_client_status");
    CHECK(json != NULL && strstr(json, "\"queue_state\":\"active\"") != NULL);
    CHECK(json != NULL && strstr(json, "\"billing_paused_ms\":0") != NULL);
    free(json);
  }

  /* The sampler handle (a JSON string) and a clone built from it. */
  s = tinkex_sampling_client_get_sampler_handle(sampler, &b, &err);
  handle_json = bytes_string(s, b, err, "get_sampler_handle");
  CHECK(handle_json != NULL && handle_json[0] == '"');
  if (handle_json != NULL) {
    char *handle = handle_json + 1;
    handle[strlen(handle) - 1] = '\0'; /* strip the quotes: base64url has no escapes */
    s = tinkex_sampling_client_from_sampler_handle(rt, u8(handle), strlen(handle),
                                                   u8(clone_config), strlen(clone_config),
                                                   &clone, &err);
    if (s != TINKEX_STATUS_OK) {
      report_error("from_sampler_handle", s, err);
      tinkex_error_free(err);
      err = NULL;
      g_failures++;
    }
    s = tinkex_sampling_client_from_sampler_handle(NULL, u8(handle), strlen(handle), NULL, 0,
                                                   &bad, &err);
    expect_failure("NULL runtime", s, err, TINKEX_STATUS_NULL_ARG);
    err = NULL;
    free(handle_json);
  }
  if (clone != NULL) {
    const char *req = "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[3,4]}]},"
                      "\"sampling_params\":{\"max_tokens\":2}}";
    char *a, *c;
    s = tinkex_sampling_client_get_info(clone, &b, &err);
    json = bytes_string(s, b, err, "clone get_info");
    CHECK(json != NULL && json_number(json, "cloned_sampler_id") >= 1);
    CHECK(json != NULL && strstr(json, "\"record_stability_info\":true") != NULL);
    free(json);
    a = sample(sampler, req, "original sample");
    c = sample(clone, req, "clone sample");
    CHECK(a != NULL && strstr(a, "\"sequences\"") != NULL);
    CHECK(c != NULL && strstr(c, "\"sequences\"") != NULL);
    free(a);
    free(c);
  }
  /* Garbage handles: typed user errors. */
  {
    const char *garbage[] = {"", "!!!", "W10=", /* "[]" */
                             "eyJzZXNzaW9uX2lkIjoxfQ=="}; /* {"session_id":1} */
    size_t i;
    for (i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
      s = tinkex_sampling_client_from_sampler_handle(rt, u8(garbage[i]), strlen(garbage[i]),
                                                     u8(clone_config), strlen(clone_config),
                                                     &bad, &err);
      expect_failure("garbage handle", s, err, TINKEX_STATUS_USER);
      err = NULL;
      CHECK(bad == NULL);
    }
  }

  memset(&o, 0, sizeof o);
  waiter_init(&o.w);
  s = tinkex_service_client_close(svc, NULL, 0, on_done, &o.w, &o.fut, &o.err);
  free(wait_json(&o, s, "close"));
  s = tinkex_runtime_shutdown(rt, 1000, &err);
  CHECK(s == TINKEX_STATUS_OK);
  tinkex_sampling_client_free(clone);
  tinkex_sampling_client_free(sampler);
  tinkex_training_client_free(training);
  tinkex_service_client_free(svc);
  tinkex_runtime_free(rt);
  (void)MODEL;
  return finish("test_sampling");
}
