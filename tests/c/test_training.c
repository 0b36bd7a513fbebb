/* The training loop through the C API against a tinkex-emulator:
 *   test_training BASE_URL
 * Bulk-path forward_backward + optim_step (pipelined), a JSON-path forward, save, sampling,
 * events, close, shutdown; handles freed in "wrong" order on purpose. */
#include "common.h"

#define STEPS 15
#define SEQS 4
#define LEN 25
static const char *MODEL = "Qwen/Qwen3-8B";

/* ---- one submitted operation ---- */

typedef struct op {
  waiter w;
  tinkex_future *fut;
  tinkex_error *err;
} op;

static op *op_new(void) {
  op *o = (op *)calloc(1, sizeof *o);
  waiter_init(&o->w);
  return o;
}

/* After the submit call: checks its status, then waits for the callback. */
static int op_wait(op *o, tinkex_status s, const char *what) {
  if (s != TINKEX_STATUS_OK) {
    report_error(what, s, o->err);
    tinkex_error_free(o->err);
    o->err = NULL;
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

/* Takes the JSON result and releases the operation. */
static char *op_finish(op *o, const char *what) {
  tinkex_status s = TINKEX_STATUS_INTERNAL;
  char *json = NULL;
  if (o->fut != NULL) {
    json = take_json(o->fut, &s);
    if (json == NULL) fprintf(stderr, "%s: no result (%s)\n", what, tinkex_status_name(s));
    sleep_ms(1);
    CHECK(waiter_calls(&o->w) == 1);
    CHECK(o->w.wrong_thread == 0);
    tinkex_future_free(o->fut);
  }
  CHECK(json != NULL);
  waiter_destroy(&o->w);
  free(o);
  return json;
}

/* ---- events ---- */

typedef struct events {
  pthread_mutex_t mu;
  int count;
  int freed;
  int bad;
} events;

static void on_event(void *user_data, const tinkex_event *ev) {
  events *e = (events *)user_data;
  size_t len = 0;
  const uint8_t *json = tinkex_event_json(ev, &len);
  pthread_mutex_lock(&e->mu);
  if (json == NULL || len == 0 || json[len] != 0 || e->freed) e->bad++;
  e->count++;
  pthread_mutex_unlock(&e->mu);
}

static void free_events(void *user_data) {
  events *e = (events *)user_data;
  pthread_mutex_lock(&e->mu);
  e->freed++;
  pthread_mutex_unlock(&e->mu);
}

/* ---- data ---- */

static int32_t g_tokens[SEQS][LEN];

static void make_tokens(void) {
  int d, i;
  for (d = 0; d < SEQS; d++)
    for (i = 0; i < LEN; i++) g_tokens[d][i] = 100000 + (d * 7919 + i * 104729) % 50000;
}

/* The batch through the typed-array bulk path (no JSON text for the numbers). */
static tinkex_datum_batch *bulk_batch(void) {
  static const float weights[LEN - 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                         1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  tinkex_datum_batch *b = NULL;
  tinkex_error *err = NULL;
  int d;
  if (tinkex_datum_batch_new(&b, &err) != TINKEX_STATUS_OK) return NULL;
  for (d = 0; d < SEQS; d++) {
    tinkex_status s =
        tinkex_datum_batch_push(b, g_tokens[d], LEN - 1, TINKEX_DTYPE_INT32, &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_set_loss_input(b, u8("target_tokens"), 13, &g_tokens[d][1],
                                            LEN - 1, TINKEX_DTYPE_INT32, NULL, 0, &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_set_loss_input(b, u8("weights"), 7, weights, LEN - 1,
                                            TINKEX_DTYPE_FLOAT32, NULL, 0, &err);
    if (s != TINKEX_STATUS_OK) {
      report_error("datum batch", s, err);
      tinkex_error_free(err);
      tinkex_datum_batch_free(b);
      return NULL;
    }
  }
  return b;
}

/* The same batch as ForwardBackwardInput JSON. */
static char *json_batch(void) {
  size_t cap = 16384, n = 0;
  char *out = (char *)malloc(cap);
  int d, i;
  n += (size_t)snprintf(out + n, cap - n, "{\"loss_fn\":\"cross_entropy\",\"data\":[");
  for (d = 0; d < SEQS; d++) {
    n += (size_t)snprintf(out + n, cap - n,
                          "%s{\"model_input\":{\"chunks\":[{\"type\":\"encoded_text\","
                          "\"tokens\":[",
                          d ? "," : "");
    for (i = 0; i < LEN - 1; i++)
      n += (size_t)snprintf(out + n, cap - n, "%s%d", i ? "," : "", (int)g_tokens[d][i]);
    n += (size_t)snprintf(out + n, cap - n,
                          "]}]},\"loss_fn_inputs\":{\"target_tokens\":{\"dtype\":\"int64\","
                          "\"data\":[");
    for (i = 1; i < LEN; i++)
      n += (size_t)snprintf(out + n, cap - n, "%s%d", i > 1 ? "," : "", (int)g_tokens[d][i]);
    n += (size_t)snprintf(out + n, cap - n, "]},\"weights\":{\"dtype\":\"float32\",\"data\":[");
    for (i = 1; i < LEN; i++) n += (size_t)snprintf(out + n, cap - n, "%s1.0", i > 1 ? "," : "");
    n += (size_t)snprintf(out + n, cap - n, "]}}}");
  }
  snprintf(out + n, cap - n, "]}");
  return out;
}

int main(int argc, char **argv) {
  char config[512];
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_training_client *training = NULL;
  tinkex_sampling_client *sampler = NULL;
  tinkex_subscription *sub = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  events ev;
  double first = 0, last = 0;
  int step;
  op *o;
  char *json;

  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  CHECK(abi_matches());
  CHECK(tinkex_version_number() == TINKEX_VERSION_NUMBER);
  make_tokens();
  memset(&ev, 0, sizeof ev);
  pthread_mutex_init(&ev.mu, NULL);

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
  s = tinkex_service_client_subscribe(svc, on_event, &ev, free_events, &sub, &err);
  CHECK(s == TINKEX_STATUS_OK);

  /* Capabilities. */
  o = op_new();
  s = tinkex_service_client_get_server_capabilities(svc, on_done, &o->w, &o->fut, &o->err);
  op_wait(o, s, "get_server_capabilities");
  json = op_finish(o, "get_server_capabilities");
  CHECK(json != NULL && strstr(json, MODEL) != NULL);
  free(json);

  /* A LoRA training client. */
  o = op_new();
  {
    const char *req = "{\"base_model\":\"Qwen/Qwen3-8B\",\"lora_config\":{\"rank\":8}}";
    s = tinkex_service_client_create_lora_training_client(svc, u8(req), strlen(req), on_done,
                                                          &o->w, &o->fut, &o->err);
  }
  if (op_wait(o, s, "create_lora_training_client")) {
    CHECK(tinkex_future_take_result(o->fut, &(tinkex_bytes *){NULL}, &err) ==
          TINKEX_STATUS_WRONG_TYPE);
    tinkex_error_free(err);
    err = NULL;
    s = tinkex_future_take_training_client(o->fut, &training, &err);
    CHECK(s == TINKEX_STATUS_OK);
    tinkex_future_free(o->fut);
  }
  waiter_destroy(&o->w);
  free(o);
  if (training == NULL) return finish("test_training");

  /* The loop: both operations submitted before waiting (they go out in order). */
  for (step = 0; step < STEPS; step++) {
    const char *adam = "{\"learning_rate\":0.001}";
    const char *loss = "{\"loss_fn\":\"cross_entropy\"}";
    op *fb = op_new(), *opt = op_new();
    tinkex_datum_batch *batch = bulk_batch();
    tinkex_status sf = tinkex_training_client_forward_backward_batch(
        training, batch, u8(loss), strlen(loss), on_done, &fb->w, &fb->fut, &fb->err);
    tinkex_datum_batch_free(batch); /* borrowed by the submit, which copied its datums */
    tinkex_status so = tinkex_training_client_optim_step(training, u8(adam), strlen(adam),
                                                         on_done, &opt->w, &opt->fut, &opt->err);
    op_wait(fb, sf, "forward_backward_batch");
    op_wait(opt, so, "optim_step");
    json = op_finish(fb, "forward_backward_batch");
    last = json_number(json, "loss:sum") / (SEQS * (LEN - 1));
    if (step == 0) first = last;
    free(json);
    free(op_finish(opt, "optim_step"));
  }
  printf("loss %.4f -> %.4f over %d steps\n", first, last, STEPS);
  CHECK(first > 0 && last < 0.8 * first);

  /* The JSON path: a forward pass on the same data. */
  {
    char *body = json_batch();
    o = op_new();
    s = tinkex_training_client_forward(training, u8(body), strlen(body), on_done, &o->w,
                                       &o->fut, &o->err);
    op_wait(o, s, "forward (JSON)");
    json = op_finish(o, "forward (JSON)");
    CHECK(json_number(json, "loss:sum") > 0);
    free(json);
    free(body);
  }

  /* Save, then sample from the trained weights. */
  o = op_new();
  s = tinkex_training_client_save_state(training, u8("{\"path\":\"c-final\"}"), 18, on_done,
                                        &o->w, &o->fut, &o->err);
  op_wait(o, s, "save_state");
  json = op_finish(o, "save_state");
  CHECK(json != NULL && strstr(json, "/weights/c-final") != NULL);
  free(json);

  o = op_new();
  s = tinkex_training_client_save_weights_and_get_sampling_client(training, NULL, 0, on_done, &o->w,
                                                                  &o->fut, &o->err);
  if (op_wait(o, s, "save_weights_and_get_sampling_client")) {
    CHECK(tinkex_future_take_sampling_client(o->fut, &sampler, &err) == TINKEX_STATUS_OK);
    tinkex_future_free(o->fut);
  }
  waiter_destroy(&o->w);
  free(o);
  if (sampler != NULL) {
    const char *req =
        "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100000,100001]}]},"
        "\"num_samples\":2,\"sampling_params\":{\"max_tokens\":4}}";
    o = op_new();
    s = tinkex_sampling_client_sample(sampler, u8(req), strlen(req), on_done, &o->w, &o->fut,
                                      &o->err);
    op_wait(o, s, "sample");
    json = op_finish(o, "sample");
    CHECK(json != NULL && strstr(json, "\"sequences\"") != NULL);
    free(json);
  }

  /* Close the session. */
  o = op_new();
  s = tinkex_service_client_close(svc, NULL, 0, on_done, &o->w, &o->fut, &o->err);
  op_wait(o, s, "close");
  free(op_finish(o, "close"));

  /* Shutdown closes the subscription (user_data_free once), then free in any order. */
  s = tinkex_runtime_shutdown(rt, 1000, &err);
  CHECK(s == TINKEX_STATUS_OK);
  tinkex_runtime_free(rt);
  pthread_mutex_lock(&ev.mu);
  CHECK(ev.freed == 1);
  CHECK(ev.bad == 0);
  pthread_mutex_unlock(&ev.mu);
  tinkex_subscription_free(sub);
  tinkex_sampling_client_free(sampler);
  tinkex_service_client_free(svc);
  tinkex_training_client_free(training);
  CHECK(ev.freed == 1);
  pthread_mutex_destroy(&ev.mu);
  return finish("test_training");
}
