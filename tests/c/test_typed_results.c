/* Typed result handles (issue 15, W4) against a tinkex-emulator:
 *   test_typed_results BASE_URL
 * A seeded sample taken as JSON and the same request taken typed give equal tokens,
 * logprobs, stop reasons and prompt logprobs; every typed handle equals its own JSON
 * (`_to_json`); compute_logprobs and forward_backward typed; bad indices, wrong types and
 * double takes give statuses; results are freed in varied orders (result after its future,
 * future after its result, runtime freed first) and stay readable until their own free.
 * Run plain, under ASan/UBSan and under valgrind by tests/c/run.sh. */
#include "common.h"

#include <math.h>

/* Parses the numbers (null → NaN) of the `nth` (0-based) array named `key` in `json` into
 * `out` (at most `max`); returns the count, or -1 when there is no such array. */
static long json_array(const char *json, const char *key, int nth, double *out, long max) {
  char pattern[64];
  const char *p = json;
  long n = 0;
  snprintf(pattern, sizeof pattern, "\"%s\":[", key);
  for (int i = 0; i <= nth; i++) {
    p = p != NULL ? strstr(p, pattern) : NULL;
    if (p == NULL) return -1;
    p += strlen(pattern);
  }
  while (*p != ']' && *p != '\0' && n < max) {
    if (strncmp(p, "null", 4) == 0) {
      out[n++] = NAN;
      p += 4;
    } else {
      char *end;
      out[n++] = strtod(p, &end);
      if (end == p) return -1;
      p = end;
    }
    if (*p == ',') p++;
  }
  return n;
}

/* Float equality as float32 (JSON writes the shortest text that reads back exactly). */
static int same_f32(double json_value, float typed) {
  if (isnan(json_value)) return isnan(typed);
  return (float)json_value == typed;
}

typedef struct op {
  waiter w;
  tinkex_future *fut;
  tinkex_error *err;
} op;

static void op_init(op *o) {
  memset(o, 0, sizeof *o);
  waiter_init(&o->w);
}

/* Waits for the callback of a submitted op (status `s`); 1 when it fired. */
static int op_wait(op *o, tinkex_status s, const char *what) {
  if (s != TINKEX_STATUS_OK) {
    report_error(what, s, o->err);
    tinkex_error_free(o->err);
    g_failures++;
    return 0;
  }
  if (!waiter_wait(&o->w, 120)) {
    fprintf(stderr, "%s: the callback did not fire\n", what);
    g_failures++;
    return 0;
  }
  return 1;
}

static void op_free(op *o) {
  tinkex_future_free(o->fut);
  waiter_destroy(&o->w);
}

static tinkex_status submit_sample(tinkex_sampling_client *c, const char *req, op *o) {
  op_init(o);
  return tinkex_sampling_client_sample(c, u8(req), strlen(req), on_done, &o->w, &o->fut, &o->err);
}

/* A sample result compared with SampleResponse JSON text. */
static void check_sample_equals_json(const tinkex_sample_result *r, const char *json) {
  double values[512];
  tinkex_error *err = NULL;
  size_t nseq = tinkex_sample_result_num_sequences(r);
  CHECK(nseq == 2);
  for (size_t i = 0; i < nseq; i++) {
    const int64_t *tokens = NULL;
    const float *lp = NULL;
    size_t n = 0, m = 0;
    int32_t reason = 0;
    long k;
    CHECK_STATUS(tinkex_sample_result_tokens(r, i, &tokens, &n, &err), TINKEX_STATUS_OK);
    k = json_array(json, "tokens", (int)i, values, 512);
    CHECK(k == (long)n && n > 0);
    for (long j = 0; j < k && j < (long)n; j++) CHECK((int64_t)values[j] == tokens[j]);
    CHECK_STATUS(tinkex_sample_result_logprobs(r, i, &lp, &m, &err), TINKEX_STATUS_OK);
    k = json_array(json, "logprobs", (int)i, values, 512);
    CHECK(lp != NULL && k == (long)m && m == n);
    for (long j = 0; lp != NULL && j < k && j < (long)m; j++) CHECK(same_f32(values[j], lp[j]));
    CHECK_STATUS(tinkex_sample_result_stop_reason(r, i, &reason, &err), TINKEX_STATUS_OK);
    CHECK(reason == TINKEX_STOP_REASON_LENGTH || reason == TINKEX_STOP_REASON_STOP);
  }
  {
    const float *plp = NULL;
    size_t n = 0;
    long k;
    CHECK_STATUS(tinkex_sample_result_prompt_logprobs(r, &plp, &n, &err), TINKEX_STATUS_OK);
    k = json_array(json, "prompt_logprobs", 0, values, 512);
    CHECK(plp != NULL && k == (long)n && n == 6);
    CHECK(plp != NULL && isnan(plp[0]));
    for (long j = 0; plp != NULL && j < k && j < (long)n; j++) CHECK(same_f32(values[j], plp[j]));
  }
}

static char *sample_json_of(const tinkex_sample_result *r) {
  tinkex_bytes *b = NULL;
  tinkex_error *err = NULL;
  char *copy;
  tinkex_status s = tinkex_sample_result_to_json(r, &b, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("sample_result_to_json", s, err);
    tinkex_error_free(err);
    g_failures++;
    return NULL;
  }
  copy = (char *)malloc(tinkex_bytes_len(b) + 1);
  memcpy(copy, tinkex_bytes_data(b), tinkex_bytes_len(b) + 1);
  tinkex_bytes_free(b);
  return copy;
}

static const char *SAMPLE_REQ =
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100000,100007,100311,"
    "101000,100042,100999]}]},\"num_samples\":2,\"prompt_logprobs\":true,"
    "\"sampling_params\":{\"max_tokens\":5,\"seed\":21}}";

static tinkex_sample_result *take_sample(tinkex_sampling_client *sampler, op *o) {
  tinkex_sample_result *r = NULL;
  tinkex_error *err = NULL;
  if (op_wait(o, submit_sample(sampler, SAMPLE_REQ, o), "sample")) {
    tinkex_status s = tinkex_future_take_sample_result(o->fut, &r, &err);
    CHECK_STATUS(s, TINKEX_STATUS_OK);
    if (s != TINKEX_STATUS_OK) {
      report_error("take_sample_result", s, err);
      tinkex_error_free(err);
    }
  }
  return r;
}

static tinkex_sampling_client *make_sampler(tinkex_service_client *svc) {
  const char *req = "{\"base_model\":\"Qwen/Qwen3-8B\"}";
  tinkex_sampling_client *sampler = NULL;
  tinkex_error *err = NULL;
  op o;
  op_init(&o);
  if (op_wait(&o,
              tinkex_service_client_create_sampling_client(svc, u8(req), strlen(req), on_done,
                                                           &o.w, &o.fut, &o.err),
              "create_sampling_client")) {
    CHECK_STATUS(tinkex_future_take_sampling_client(o.fut, &sampler, &err), TINKEX_STATUS_OK);
  }
  op_free(&o);
  return sampler;
}

static int new_service(const char *url, tinkex_runtime **rt, tinkex_service_client **svc) {
  char config[512];
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_error *err = NULL;
  tinkex_status s;
  opts.worker_threads = 2;
  s = tinkex_runtime_new(&opts, rt, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("runtime_new", s, err);
    return 0;
  }
  snprintf(config, sizeof config,
           "{\"api_key\":\"tml-c-test\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}",
           url);
  s = tinkex_service_client_new(*rt, u8(config), strlen(config), svc, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("service_client_new", s, err);
    return 0;
  }
  return 1;
}

static void free_runtime(tinkex_runtime *rt) {
  tinkex_error *err = NULL;
  if (tinkex_runtime_shutdown(rt, 2000, &err) != TINKEX_STATUS_OK) tinkex_error_free(err);
  tinkex_runtime_free(rt);
}

/* forward_backward (cross_entropy) typed: each datum's loss outputs and the metrics equal
 * the handle's JSON; bad indices, wrong type, double take. */
static void forward_backward(tinkex_service_client *svc) {
  const char *create = "{\"base_model\":\"Qwen/Qwen3-8B\",\"lora_config\":{\"rank\":8}}";
  const char *fb =
      "{\"loss_fn\":\"cross_entropy\",\"data\":["
      "{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100000,100001,100002]}]},"
      "\"loss_fn_inputs\":{\"target_tokens\":{\"data\":[100001,100002,100003],\"dtype\":\"int64\",\"shape\":[3]},"
      "\"weights\":{\"data\":[1.0,0.5,1.0],\"dtype\":\"float32\",\"shape\":[3]}}},"
      "{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100010,100011]}]},"
      "\"loss_fn_inputs\":{\"target_tokens\":{\"data\":[100011,100012],\"dtype\":\"int64\",\"shape\":[2]},"
      "\"weights\":{\"data\":[1.0,1.0],\"dtype\":\"float32\",\"shape\":[2]}}}]}";
  tinkex_training_client *training = NULL;
  tinkex_forward_result *r = NULL, *again = NULL;
  tinkex_sample_result *wrong = NULL;
  tinkex_bytes *b = NULL;
  tinkex_error *err = NULL;
  char *json = NULL;
  double values[64];
  op o;

  op_init(&o);
  if (op_wait(&o,
              tinkex_service_client_create_lora_training_client(svc, u8(create), strlen(create),
                                                                on_done, &o.w, &o.fut, &o.err),
              "create_lora_training_client")) {
    CHECK_STATUS(tinkex_future_take_training_client(o.fut, &training, &err), TINKEX_STATUS_OK);
  }
  op_free(&o);
  if (training == NULL) return;

  op_init(&o);
  if (op_wait(&o,
              tinkex_training_client_forward_backward(training, u8(fb), strlen(fb), on_done, &o.w,
                                                      &o.fut, &o.err),
              "forward_backward")) {
    CHECK_STATUS(tinkex_future_take_sample_result(o.fut, &wrong, &err), TINKEX_STATUS_WRONG_TYPE);
    tinkex_error_free(err);
    err = NULL;
    CHECK(wrong == NULL);
    CHECK_STATUS(tinkex_future_take_forward_result(o.fut, &r, &err), TINKEX_STATUS_OK);
    CHECK_STATUS(tinkex_future_take_forward_result(o.fut, &again, &err),
                 TINKEX_STATUS_ALREADY_TAKEN);
    tinkex_error_free(err);
    err = NULL;
    CHECK_STATUS(tinkex_future_take_result(o.fut, &b, &err), TINKEX_STATUS_ALREADY_TAKEN);
    tinkex_error_free(err);
    err = NULL;
  }
  /* The future goes first; the result stays readable. */
  op_free(&o);
  tinkex_training_client_free(training);
  if (r == NULL) return;
  CHECK_STATUS(tinkex_forward_result_to_json(r, &b, &err), TINKEX_STATUS_OK);
  if (b != NULL) {
    json = (char *)malloc(tinkex_bytes_len(b) + 1);
    memcpy(json, tinkex_bytes_data(b), tinkex_bytes_len(b) + 1);
    tinkex_bytes_free(b);
  }
  CHECK(tinkex_forward_result_num_datums(r) == 2);
  for (size_t d = 0; d < 2 && json != NULL; d++) {
    const tinkex_tensor *t = NULL;
    const void *data = NULL;
    const int64_t *shape = NULL;
    size_t n = 0, ndim = 0, count = 0;
    long k;
    CHECK_STATUS(tinkex_forward_result_num_outputs(r, d, &count, &err), TINKEX_STATUS_OK);
    CHECK(count >= 1);
    CHECK_STATUS(tinkex_forward_result_output(r, d, u8("logprobs"), 8, &t, &err),
                 TINKEX_STATUS_OK);
    CHECK(t != NULL);
    if (t == NULL) continue;
    CHECK(tinkex_tensor_dtype(t) == TINKEX_DTYPE_FLOAT32);
    CHECK_STATUS(tinkex_tensor_data(t, &data, &n, &err), TINKEX_STATUS_OK);
    CHECK(n == (d == 0 ? 3u : 2u));
    CHECK_STATUS(tinkex_tensor_shape(t, &shape, &ndim, &err), TINKEX_STATUS_OK);
    CHECK(ndim == 1 && shape != NULL && shape[0] == (int64_t)n);
    /* The d-th datum's "logprobs" tensor in the JSON (TensorData writes "data" first). */
    k = json_array(json, "logprobs\":{\"data", (int)d, values, 64);
    CHECK(k == (long)n);
    for (long j = 0; j < k && j < (long)n; j++) CHECK(same_f32(values[j], ((const float *)data)[j]));
    for (size_t j = 0; j < count; j++) {
      const uint8_t *name = NULL;
      size_t name_len = 0;
      const tinkex_tensor *u = NULL;
      CHECK_STATUS(tinkex_forward_result_output_at(r, d, j, &name, &name_len, &u, &err),
                   TINKEX_STATUS_OK);
      CHECK(name != NULL && name_len > 0 && u != NULL);
    }
  }
  {
    size_t count = 0;
    const uint8_t *name = NULL;
    size_t name_len = 0;
    double value = 0;
    const tinkex_tensor *u = NULL;
    CHECK_STATUS(tinkex_forward_result_num_outputs(r, 2, &count, &err), TINKEX_STATUS_INVALID_ARG);
    tinkex_error_free(err);
    err = NULL;
    CHECK_STATUS(tinkex_forward_result_output_at(r, 0, 99, &name, &name_len, &u, &err),
                 TINKEX_STATUS_INVALID_ARG);
    tinkex_error_free(err);
    err = NULL;
    CHECK(tinkex_forward_result_num_metrics(r) >= 1);
    CHECK_STATUS(tinkex_forward_result_metric_at(r, 0, &name, &name_len, &value, &err),
                 TINKEX_STATUS_OK);
    if (json != NULL && name != NULL) {
      char key[64];
      snprintf(key, sizeof key, "%.*s", (int)name_len, (const char *)name);
      CHECK(json_number(json, key) == value);
    }
    CHECK_STATUS(tinkex_forward_result_metric_at(r, tinkex_forward_result_num_metrics(r), &name,
                                                 &name_len, &value, &err),
                 TINKEX_STATUS_INVALID_ARG);
    tinkex_error_free(err);
  }
  free(json);
  tinkex_forward_result_free(r);
}

int main(int argc, char **argv) {
  tinkex_runtime *rt = NULL, *rt2 = NULL;
  tinkex_service_client *svc = NULL, *svc2 = NULL;
  tinkex_sampling_client *sampler = NULL, *sampler2 = NULL;
  tinkex_sample_result *r = NULL, *kept = NULL;
  tinkex_error *err = NULL;
  char *json = NULL, *own = NULL;
  tinkex_status took;
  op a, b;

  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  CHECK(abi_matches());
  if (!new_service(argv[1], &rt, &svc)) return 1;
  sampler = make_sampler(svc);
  if (sampler == NULL) return finish("test_typed_results");

  /* The same seeded request: once as JSON, once typed. */
  if (op_wait(&a, submit_sample(sampler, SAMPLE_REQ, &a), "sample (json)")) {
    json = take_json(a.fut, &took);
    CHECK(json != NULL);
  }
  op_free(&a);
  r = take_sample(sampler, &b);
  if (r != NULL && json != NULL) check_sample_equals_json(r, json);
  /* The handle's own JSON, and the future freed after the result. */
  if (r != NULL) {
    own = sample_json_of(r);
    if (own != NULL) check_sample_equals_json(r, own);
    {
      const int64_t *tokens = (const int64_t *)1;
      size_t n = 99;
      CHECK_STATUS(tinkex_sample_result_tokens(r, 2, &tokens, &n, &err),
                   TINKEX_STATUS_INVALID_ARG);
      CHECK(n == 99); /* nothing written on failure */
      tinkex_error_free(err);
      err = NULL;
      CHECK_STATUS(tinkex_sample_result_tokens(r, 0, NULL, &n, NULL), TINKEX_STATUS_NULL_ARG);
      CHECK_STATUS(tinkex_sample_result_tokens(NULL, 0, &tokens, &n, NULL),
                   TINKEX_STATUS_NULL_ARG);
    }
    CHECK_STATUS(tinkex_future_take_sample_result(b.fut, &kept, &err),
                 TINKEX_STATUS_ALREADY_TAKEN);
    tinkex_error_free(err);
    err = NULL;
  }
  tinkex_sample_result_free(r);
  op_free(&b);
  free(json);
  free(own);
  json = own = NULL;

  /* compute_logprobs typed: NaN at position 0. */
  {
    const char *req = "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3,4]}]}}";
    tinkex_logprobs_result *lr = NULL;
    op_init(&a);
    if (op_wait(&a,
                tinkex_sampling_client_compute_logprobs(sampler, u8(req), strlen(req), on_done,
                                                        &a.w, &a.fut, &a.err),
                "compute_logprobs")) {
      CHECK_STATUS(tinkex_future_take_logprobs_result(a.fut, &lr, &err), TINKEX_STATUS_OK);
    }
    op_free(&a);
    CHECK(tinkex_logprobs_result_len(lr) == 4);
    CHECK(lr != NULL && isnan(tinkex_logprobs_result_data(lr)[0]));
    CHECK(lr != NULL && tinkex_logprobs_result_data(lr)[1] <= 0.0f);
    tinkex_logprobs_result_free(lr);
  }

  forward_backward(svc);

  /* Runtime freed first: a result taken on a second runtime outlives it. */
  if (new_service(argv[1], &rt2, &svc2)) {
    sampler2 = make_sampler(svc2);
    if (sampler2 != NULL) kept = take_sample(sampler2, &a);
    op_free(&a);
    tinkex_sampling_client_free(sampler2);
    tinkex_service_client_free(svc2);
    free_runtime(rt2);
    if (kept != NULL) {
      own = sample_json_of(kept);
      if (own != NULL) check_sample_equals_json(kept, own);
      free(own);
    }
    tinkex_sample_result_free(kept);
  }

  tinkex_sample_result_free(NULL);
  tinkex_forward_result_free(NULL);
  tinkex_logprobs_result_free(NULL);
  tinkex_sampling_client_free(sampler);
  tinkex_service_client_free(svc);
  free_runtime(rt);
  return finish("test_typed_results");
}
