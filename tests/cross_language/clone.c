/* Cross-language sampler handle, a C clone: reads the handle the Python origin wrote, builds
 * a sampling client from it (tinkex_sampling_client_from_sampler_handle) and draws <n>
 * samples, then writes <work>/c.done.
 *
 *   clone <base_url> <work_dir> <n>
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tinkex.h"

static const uint8_t *u8(const char *s) { return (const uint8_t *)s; }

static int fail(const char *what, tinkex_status s, tinkex_error *err) {
  fprintf(stderr, "c clone: %s failed: %s: %s\n", what, tinkex_status_name(s),
          err ? tinkex_error_message(err) : "");
  tinkex_error_free(err);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) return 2;
  const char *base_url = argv[1], *work = argv[2];
  int n = atoi(argv[3]);
  char path[4096], handle[65536], config[8192], req[256];
  snprintf(path, sizeof path, "%s/handle", work);
  FILE *f = fopen(path, "rb");
  if (!f) return fail("open handle", TINKEX_STATUS_USER, NULL);
  size_t len = fread(handle, 1, sizeof handle - 1, f);
  fclose(f);
  handle[len] = 0;

  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt = NULL;
  tinkex_error *err = NULL;
  tinkex_status s = tinkex_runtime_new(&opts, &rt, &err);
  if (s != TINKEX_STATUS_OK) return fail("runtime_new", s, err);
  snprintf(config, sizeof config,
           "{\"base_url\": \"%s\", \"api_key\": \"tml-cross-language\", \"telemetry\": false}",
           base_url);
  tinkex_sampling_client *sampler = NULL;
  s = tinkex_sampling_client_from_sampler_handle(rt, u8(handle), len, u8(config), strlen(config),
                                                 &sampler, &err);
  if (s != TINKEX_STATUS_OK) return fail("from_sampler_handle", s, err);

  for (int i = 0; i < n; i++) {
    snprintf(req, sizeof req,
             "{\"prompt\": {\"chunks\": [{\"type\": \"encoded_text\", \"tokens\": [7, 8, %d]}]}, "
             "\"num_samples\": 1, \"sampling_params\": {\"max_tokens\": 4, \"temperature\": 0.7}}",
             300 + i);
    tinkex_future *fut = NULL;
    s = tinkex_sampling_client_sample(sampler, u8(req), strlen(req), NULL, NULL, &fut, &err);
    if (s != TINKEX_STATUS_OK) return fail("sample", s, err);
    s = tinkex_future_wait(fut, 60000, &err);
    if (s != TINKEX_STATUS_OK) return fail("wait", s, err);
    tinkex_bytes *out = NULL;
    s = tinkex_future_take_result(fut, &out, &err);
    if (s != TINKEX_STATUS_OK) return fail("take_result", s, err);
    if (!memmem(tinkex_bytes_data(out), tinkex_bytes_len(out), "\"sequences\"", 11)) {
      fprintf(stderr, "c clone: a sample without sequences\n");
      return 1;
    }
    tinkex_bytes_free(out);
    tinkex_future_free(fut);
  }
  tinkex_sampling_client_free(sampler);
  tinkex_runtime_free(rt);
  snprintf(path, sizeof path, "%s/c.done", work);
  f = fopen(path, "w");
  if (!f) return 1;
  fprintf(f, "%d", n);
  fclose(f);
  printf("c clone: %d samples\n", n);
  return 0;
}
