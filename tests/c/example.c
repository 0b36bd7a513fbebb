/* example.c: a complete libtinkex program (the example of docs/c-api.md).
 *
 *   cc -std=c11 example.c $(pkg-config --cflags --libs tinkex) -o example
 *   ./example http://127.0.0.1:8000      # a tinkex-emulator, or your Tinker base URL
 *
 * Trains a LoRA adapter for a few steps on one sentence with the bulk (typed-array) path,
 * then samples. It waits with tinkex_future_wait (fine in a plain C program); an event-loop
 * host passes an on_done callback instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinkex.h"

static int fail(const char *what, tinkex_status s, tinkex_error *err) {
  fprintf(stderr, "%s failed: %s: %s\n", what, tinkex_status_name(s),
          err ? tinkex_error_message(err) : "");
  tinkex_error_free(err);
  return 1;
}

/* Blocks until `fut` finishes, then takes its JSON result (caller frees with
 * tinkex_bytes_free). Consumes `fut`. */
static tinkex_status wait_json(tinkex_future *fut, tinkex_bytes **out, tinkex_error **err) {
  tinkex_status s = tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, err);
  if (s == TINKEX_STATUS_OK) s = tinkex_future_take_result(fut, out, err);
  tinkex_future_free(fut);
  return s;
}

int main(int argc, char **argv) {
  const char *url = argc > 1 ? argv[1] : "http://127.0.0.1:8000";
  const char *text = "the cat sat on the mat.";
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_training_client *training = NULL;
  tinkex_sampling_client *sampler = NULL;
  tinkex_future *fut = NULL;
  tinkex_bytes *out = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char config[256], req[256];
  int64_t tokens[64];
  float weights[64];
  size_t n = strlen(text), i;
  int step;

  {
    uint32_t need_minor = TINKEX_ABI_VERSION_MINOR; /* a variable: no -Wtype-limits at 0 */
    if (tinkex_abi_version_major() != TINKEX_ABI_VERSION_MAJOR ||
        tinkex_abi_version_minor() < need_minor)
      return fail("ABI check", 0, NULL);
  }
  for (i = 0; i < n; i++) {
    tokens[i] = (unsigned char)text[i]; /* a byte-level "tokenizer" */
    weights[i] = 1.0f;
  }

  /* 1. A runtime (NULL options: one worker per CPU, logging off) and a service client. */
  s = tinkex_runtime_new(NULL, &rt, &err);
  if (s != TINKEX_STATUS_OK) return fail("tinkex_runtime_new", s, err);
  snprintf(config, sizeof config, "{\"api_key\":\"tml-example\",\"base_url\":\"%s\"}", url);
  s = tinkex_service_client_new(rt, (const uint8_t *)config, strlen(config), &svc, &err);
  if (s != TINKEX_STATUS_OK) return fail("tinkex_service_client_new", s, err);

  /* 2. A LoRA training client: a submit call, then a typed take. */
  snprintf(req, sizeof req, "{\"base_model\":\"Qwen/Qwen3-8B\",\"lora_config\":{\"rank\":16}}");
  s = tinkex_service_client_create_lora_training_client(svc, (const uint8_t *)req, strlen(req),
                                                        NULL, NULL, &fut, &err);
  if (s == TINKEX_STATUS_OK) s = tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, &err);
  if (s == TINKEX_STATUS_OK) s = tinkex_future_take_training_client(fut, &training, &err);
  tinkex_future_free(fut);
  if (s != TINKEX_STATUS_OK) return fail("create_lora_training_client", s, err);

  /* 3. Training steps: next-token prediction through the bulk path. */
  for (step = 1; step <= 10; step++) {
    const char *loss = "{\"loss_fn\":\"cross_entropy\"}";
    const char *adam = "{\"learning_rate\":0.001}";
    tinkex_datum_batch *batch = NULL;
    tinkex_future *fb = NULL, *opt = NULL;
    s = tinkex_datum_batch_new(&batch, &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_push(batch, tokens, n - 1, TINKEX_DTYPE_INT64, &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_set_loss_input(batch, (const uint8_t *)"target_tokens", 13,
                                            tokens + 1, n - 1, TINKEX_DTYPE_INT64, NULL, 0,
                                            &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_set_loss_input(batch, (const uint8_t *)"weights", 7, weights,
                                            n - 1, TINKEX_DTYPE_FLOAT32, NULL, 0, &err);
    if (s != TINKEX_STATUS_OK) {
      tinkex_datum_batch_free(batch);
      return fail("datum batch", s, err);
    }
    /* Submit both, then wait: the client sends them in submission order. */
    s = tinkex_training_client_forward_backward_batch(training, batch /* borrowed */,
                                                      (const uint8_t *)loss, strlen(loss), NULL,
                                                      NULL, &fb, &err);
    tinkex_datum_batch_free(batch); /* the submit copied its datums */
    if (s != TINKEX_STATUS_OK) return fail("forward_backward_batch", s, err);
    s = tinkex_training_client_optim_step(training, (const uint8_t *)adam, strlen(adam), NULL,
                                          NULL, &opt, &err);
    if (s != TINKEX_STATUS_OK) return fail("optim_step", s, err);
    s = wait_json(fb, &out, &err);
    if (s != TINKEX_STATUS_OK) return fail("forward_backward result", s, err);
    {
      const char *metrics = strstr((const char *)tinkex_bytes_data(out), "\"loss:sum\":");
      printf("step %2d  loss %.4f\n", step,
             metrics ? strtod(metrics + 11, NULL) / (double)(n - 1) : -1.0);
    }
    tinkex_bytes_free(out);
    s = wait_json(opt, &out, &err);
    if (s != TINKEX_STATUS_OK) return fail("optim_step result", s, err);
    tinkex_bytes_free(out);
  }

  /* 4. Sample from the trained weights. */
  s = tinkex_training_client_save_weights_and_get_sampling_client(training, NULL, 0, NULL, NULL, &fut,
                                                                  &err);
  if (s == TINKEX_STATUS_OK) s = tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, &err);
  if (s == TINKEX_STATUS_OK) s = tinkex_future_take_sampling_client(fut, &sampler, &err);
  tinkex_future_free(fut);
  if (s != TINKEX_STATUS_OK) return fail("save_weights_and_get_sampling_client", s, err);
  snprintf(req, sizeof req,
           "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[116,104,101]}]},"
           "\"num_samples\":1,\"sampling_params\":{\"max_tokens\":12}}");
  s = tinkex_sampling_client_sample(sampler, (const uint8_t *)req, strlen(req), NULL, NULL,
                                    &fut, &err);
  if (s == TINKEX_STATUS_OK) s = wait_json(fut, &out, &err);
  if (s != TINKEX_STATUS_OK) return fail("sample", s, err);
  printf("sample: %s\n", (const char *)tinkex_bytes_data(out)); /* NUL-terminated JSON */
  tinkex_bytes_free(out);

  /* 5. Finish the session, drain the runtime, free (any order). */
  s = tinkex_service_client_close(svc, NULL, 0, NULL, NULL, &fut, &err);
  if (s == TINKEX_STATUS_OK) s = wait_json(fut, &out, &err);
  if (s != TINKEX_STATUS_OK) return fail("close", s, err);
  tinkex_bytes_free(out);
  s = tinkex_runtime_shutdown(rt, 5000, &err);
  if (s != TINKEX_STATUS_OK) return fail("shutdown", s, err);
  tinkex_sampling_client_free(sampler);
  tinkex_training_client_free(training);
  tinkex_service_client_free(svc);
  tinkex_runtime_free(rt);
  return 0;
}
