/* The issue-14 training entries of the C ABI against a tinkex-emulator:
 *   test_training_api BASE_URL
 * create_lora_training_client with user_metadata and a dimuon optimizer, optim_step with
 * DimuonParams, save_weights_for_sampler / save_state full bodies, save_weights_external,
 * save_weights_and_get_sampling_client with kind inflight, create-via-load extras,
 * load_state with a weights_access_token, resume_training_run, create_custom_loss (server
 * flag off: a user error), both console URLs. */
#include "common.h"

/* Waits for `fut` (consumed) and returns its JSON result, or NULL with *st set. */
static char *wait_json(tinkex_status submit, tinkex_future *fut, tinkex_error *err,
                       const char *what, tinkex_status *st) {
  char *json = NULL;
  *st = submit;
  if (submit != TINKEX_STATUS_OK) {
    report_error(what, submit, err);
    tinkex_error_free(err);
    return NULL;
  }
  *st = tinkex_future_wait(fut, 120000, &err);
  if (*st == TINKEX_STATUS_OK) {
    tinkex_bytes *bytes = NULL;
    *st = tinkex_future_take_result(fut, &bytes, &err);
    if (*st == TINKEX_STATUS_OK) {
      json = (char *)malloc(tinkex_bytes_len(bytes) + 1);
      memcpy(json, tinkex_bytes_data(bytes), tinkex_bytes_len(bytes) + 1);
      tinkex_bytes_free(bytes);
    }
  }
  tinkex_error_free(err);
  tinkex_future_free(fut);
  return json;
}

/* Waits for a future whose result is a training client. */
static tinkex_training_client *wait_training(tinkex_status submit, tinkex_future *fut,
                                             tinkex_error *err, const char *what) {
  tinkex_training_client *tc = NULL;
  if (submit != TINKEX_STATUS_OK) {
    report_error(what, submit, err);
    tinkex_error_free(err);
    return NULL;
  }
  if (tinkex_future_wait(fut, 120000, &err) == TINKEX_STATUS_OK) {
    tinkex_status s = tinkex_future_take_training_client(fut, &tc, &err);
    if (s != TINKEX_STATUS_OK) report_error(what, s, err);
  }
  tinkex_error_free(err);
  tinkex_future_free(fut);
  return tc;
}

static const char *BATCH =
    "{\"loss_fn\":\"cross_entropy\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
    "\"encoded_text\",\"tokens\":[1,2,3,4]}]},\"loss_fn_inputs\":{\"target_tokens\":{\"dtype\":"
    "\"int64\",\"data\":[2,3,4,5]},\"weights\":{\"dtype\":\"float32\",\"data\":[1,1,1,1]}}}]}";

#define JSON(s) u8(s), strlen(s)

int main(int argc, char **argv) {
  char config[512], req[512];
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_training_client *tc = NULL, *loaded = NULL, *resumed = NULL;
  tinkex_sampling_client *sampler = NULL;
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_bytes *bytes = NULL;
  tinkex_status s, st;
  char *json, *path = NULL, *run_id = NULL;

  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  CHECK(abi_matches());
  s = tinkex_runtime_new(NULL, &rt, &err);
  if (s != TINKEX_STATUS_OK) {
    report_error("runtime_new", s, err);
    return 1;
  }
  snprintf(config, sizeof config,
           "{\"api_key\":\"tml-c-api-test\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}",
           argv[1]);
  CHECK(tinkex_service_client_new(rt, u8(config), strlen(config), &svc, &err) ==
        TINKEX_STATUS_OK);

  /* Console URL before the session: the sessions list. */
  CHECK(tinkex_service_client_get_console_url(svc, &bytes, &err) == TINKEX_STATUS_OK);
  CHECK(bytes != NULL && strcmp((const char *)tinkex_bytes_data(bytes),
                                "\"https://tinker.thinkingmachines.ai/sessions\"") == 0);
  tinkex_bytes_free(bytes);
  bytes = NULL;

  /* create_lora_training_client: metadata + dimuon. */
  s = tinkex_service_client_create_lora_training_client(
      svc,
      JSON("{\"base_model\":\"Qwen/Qwen3-8B\",\"lora_config\":{\"rank\":4},"
           "\"user_metadata\":{\"team\":\"c\"},\"optimizer\":{\"type\":\"dimuon\",\"version\":1}}"),
      NULL, NULL, &fut, &err);
  tc = wait_training(s, fut, err, "create_lora_training_client");
  if (tc == NULL) return finish("test_training_api");
  CHECK(tinkex_training_client_get_info(tc, &bytes, &err) == TINKEX_STATUS_OK);
  CHECK(strstr((const char *)tinkex_bytes_data(bytes), "\"dimuon\"") != NULL);
  run_id = strdup(strstr((const char *)tinkex_bytes_data(bytes), "\"model_id\":\"") + 12);
  *strchr(run_id, '"') = 0;
  tinkex_bytes_free(bytes);
  CHECK(tinkex_training_client_get_console_url(tc, &bytes, &err) == TINKEX_STATUS_OK);
  CHECK(strstr((const char *)tinkex_bytes_data(bytes), "/training_runs/") != NULL);
  tinkex_bytes_free(bytes);

  /* forward_backward + a Dimuon step; an out-of-range beta1 is a user error. */
  s = tinkex_training_client_forward_backward(tc, JSON(BATCH), NULL, NULL, &fut, &err);
  free(wait_json(s, fut, err, "forward_backward", &st));
  CHECK(st == TINKEX_STATUS_OK);
  s = tinkex_training_client_optim_step(
      tc, JSON("{\"type\":\"dimuon\",\"learning_rate\":0.01,\"beta1\":0.8}"), NULL, NULL, &fut,
      &err);
  json = wait_json(s, fut, err, "optim_step dimuon", &st);
  CHECK(json != NULL && json_number(json, "step:max") == 1.0);
  free(json);
  s = tinkex_training_client_optim_step(
      tc, JSON("{\"type\":\"dimuon\",\"learning_rate\":0.01,\"beta1\":1.5}"), NULL, NULL, &fut,
      &err);
  json = wait_json(s, fut, err, "optim_step dimuon bad", &st);
  CHECK(json == NULL && st == TINKEX_STATUS_USER);
  s = tinkex_training_client_optim_step(
      tc, JSON("{\"type\":\"dimuon\",\"learning_rate\":0.01,\"momentum\":0.8}"), NULL, NULL,
      &fut, &err);
  CHECK(s == TINKEX_STATUS_INVALID_JSON);
  tinkex_error_free(err);
  err = NULL;

  /* Saves with full bodies. */
  s = tinkex_training_client_save_state(
      tc, JSON("{\"path\":\"c1\",\"ttl_seconds\":7200,\"user_metadata\":{\"k\":\"v\"}}"), NULL,
      NULL, &fut, &err);
  json = wait_json(s, fut, err, "save_state", &st);
  CHECK(json != NULL && strstr(json, "/weights/c1") != NULL);
  if (json != NULL) {
    path = strdup(strstr(json, "tinker://"));
    *strchr(path, '"') = 0;
  }
  free(json);
  s = tinkex_training_client_save_weights_for_sampler(
      tc, JSON("{\"path\":\"cs\",\"ttl_seconds\":3600,\"user_metadata\":{\"a\":\"b\"}}"), NULL,
      NULL, &fut, &err);
  json = wait_json(s, fut, err, "save_weights_for_sampler", &st);
  CHECK(json != NULL && strstr(json, "/sampler_weights/cs") != NULL);
  free(json);
  s = tinkex_training_client_save_weights_external(
      tc, JSON("{\"path\":\"hf\",\"age_encryption_recipients\":[\"age1example\"]}"), NULL, NULL,
      &fut, &err);
  json = wait_json(s, fut, err, "save_weights_external", &st);
  CHECK(json != NULL && strstr(json, "/external_weights/hf") != NULL &&
        strstr(json, "\"size_bytes\"") != NULL);
  free(json);

  /* An inflight sampling client, then a sample. */
  s = tinkex_training_client_save_weights_and_get_sampling_client(
      tc, JSON("{\"kind\":\"inflight\",\"retry_config\":{\"max_connections\":4}}"), NULL, NULL,
      &fut, &err);
  CHECK(s == TINKEX_STATUS_OK);
  if (s == TINKEX_STATUS_OK && tinkex_future_wait(fut, 120000, &err) == TINKEX_STATUS_OK)
    CHECK(tinkex_future_take_sampling_client(fut, &sampler, &err) == TINKEX_STATUS_OK);
  tinkex_error_free(err);
  err = NULL;
  tinkex_future_free(fut);
  if (sampler != NULL) {
    s = tinkex_sampling_client_sample(
        sampler,
        JSON("{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2]}]},"
             "\"sampling_params\":{\"max_tokens\":3}}"),
        NULL, NULL, &fut, &err);
    json = wait_json(s, fut, err, "sample", &st);
    CHECK(json != NULL && strstr(json, "\"sequences\"") != NULL);
    free(json);
  }
  s = tinkex_training_client_save_weights_and_get_sampling_client(tc, JSON("{\"kind\":\"x\"}"),
                                                                  NULL, NULL, &fut, &err);
  free(wait_json(s, fut, err, "ephemeral bad kind", &st));
  CHECK(st == TINKEX_STATUS_USER);

  /* Create-via-load with every extra; legacy load with a token. */
  if (path != NULL) {
    snprintf(req, sizeof req,
             "{\"path\":\"%s\",\"optimizer\":false,\"base_model\":\"Qwen/Qwen3-8B\","
             "\"user_metadata\":{\"from\":\"c\"},\"weights_access_token\":\"tok\","
             "\"optimizer_config\":{\"type\":\"adamw\"}}",
             path);
    s = tinkex_service_client_create_training_client_from_state(svc, u8(req), strlen(req),
                                                                NULL, NULL, &fut, &err);
    loaded = wait_training(s, fut, err, "create_training_client_from_state");
    CHECK(loaded != NULL);
    snprintf(req, sizeof req, "{\"path\":\"%s\",\"weights_access_token\":\"tok\"}", path);
    s = tinkex_training_client_load_state(tc, u8(req), strlen(req), NULL, NULL, &fut, &err);
    char *loaded_json = wait_json(s, fut, err, "load_state", &st);
    CHECK(st == TINKEX_STATUS_OK);
    /* The server's LoadWeightsResponse, passed through (PROTOCOL.md 6.8). */
    CHECK(loaded_json != NULL && strstr(loaded_json, "\"type\":\"load_weights\"") != NULL &&
          strstr(loaded_json, path) != NULL);
    free(loaded_json);
  }

  /* Resume the run from its latest training checkpoint. */
  snprintf(req, sizeof req, "{\"training_run_id\":\"%s\"}", run_id);
  s = tinkex_service_client_resume_training_run(svc, u8(req), strlen(req), NULL, NULL, &fut,
                                                &err);
  resumed = wait_training(s, fut, err, "resume_training_run");
  CHECK(resumed != NULL);
  s = tinkex_service_client_resume_training_run(svc, JSON("{\"run\":\"x\"}"), NULL, NULL, &fut,
                                                &err);
  CHECK(s == TINKEX_STATUS_INVALID_JSON);
  tinkex_error_free(err);
  err = NULL;

  /* Server-side custom losses are off on this emulator: a user error. */
  s = tinkex_service_client_create_custom_loss(
      svc,
      JSON("{\"name\":\"neg_ll\",\"inputs\":[{\"name\":\"logprobs\",\"rank\":1}],"
           "\"graph\":{\"format\":1,\"nodes\":[]}}"),
      NULL, NULL, &fut, &err);
  free(wait_json(s, fut, err, "create_custom_loss", &st));
  CHECK(st == TINKEX_STATUS_USER);

  /* The session's console page once it exists. */
  CHECK(tinkex_service_client_get_console_url(svc, &bytes, &err) == TINKEX_STATUS_OK);
  CHECK(strstr((const char *)tinkex_bytes_data(bytes), "/sessions/") != NULL);
  tinkex_bytes_free(bytes);

  free(path);
  free(run_id);
  tinkex_sampling_client_free(sampler);
  tinkex_training_client_free(resumed);
  tinkex_training_client_free(loaded);
  tinkex_training_client_free(tc);
  tinkex_service_client_free(svc);
  CHECK(tinkex_runtime_shutdown(rt, 5000, &err) == TINKEX_STATUS_OK);
  tinkex_runtime_free(rt);
  return finish("test_training_api");
}
