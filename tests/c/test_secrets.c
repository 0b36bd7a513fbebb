/* The secrets test through the C ABI (issue 11):
 *   test_secrets BASE_URL
 * Forks a child (before any tinkex call) whose stdout and stderr go into a pipe. The child
 * runs a full training + sampling + REST session with the library log at DEBUG
 * (`log_level`), telemetry on, every event and every error message printed, a caught
 * panic, plus errors from bad input (a base URL with credentials, wrongly-typed config
 * values, a key with a control character, cut JSON). The parent reads every byte, then
 * fetches the emulator's /_emulator/telemetry, and checks that the canary key is in
 * neither. */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define CANARY_KEY "tml-SECRET-CANARY-0123456789"
static const char *MODEL = "Qwen/Qwen3-8B";

static void on_event(void *user_data, const tinkex_event *ev) {
  size_t len = 0;
  const uint8_t *json = tinkex_event_json(ev, &len);
  (void)user_data;
  printf("EVENT %.*s\n", (int)len, (const char *)json);
  fflush(stdout);
}

/* Waits for a future and prints its result or error. Returns the JSON (malloc'd) or NULL. */
static char *settle(const char *what, tinkex_status s, tinkex_future *fut, tinkex_error *err) {
  tinkex_bytes *bytes = NULL;
  char *copy = NULL;
  if (s != TINKEX_STATUS_OK) {
    printf("ERROR %s (submit): %s: %s\n", what, tinkex_status_name(s),
           err ? tinkex_error_message(err) : "");
    tinkex_error_free(err);
    return NULL;
  }
  err = NULL;
  if (tinkex_future_wait(fut, 60000, &err) != TINKEX_STATUS_OK) {
    printf("ERROR %s: wait\n", what);
    tinkex_error_free(err);
    tinkex_future_free(fut);
    return NULL;
  }
  err = NULL;
  s = tinkex_future_take_result(fut, &bytes, &err);
  if (s != TINKEX_STATUS_OK) {
    printf("ERROR %s: %s: %s | kind %s | body %s\n", what, tinkex_status_name(s),
           err ? tinkex_error_message(err) : "", err ? tinkex_error_kind(err) : "",
           err && tinkex_error_body(err) ? tinkex_error_body(err) : "");
    tinkex_error_free(err);
  } else {
    copy = (char *)malloc(tinkex_bytes_len(bytes) + 1);
    memcpy(copy, tinkex_bytes_data(bytes), tinkex_bytes_len(bytes) + 1);
    printf("RESULT %s: %.300s\n", what, copy);
    tinkex_bytes_free(bytes);
  }
  tinkex_future_free(fut);
  fflush(stdout);
  return copy;
}

#define SUBMIT(what, call)                    \
  do {                                        \
    tinkex_future *fut_ = NULL;               \
    tinkex_error *err_ = NULL;                \
    tinkex_status s_ = call;                  \
    free(settle(what, s_, fut_, err_));       \
  } while (0)

static int child(const char *url) {
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_training_client *tc = NULL;
  tinkex_sampling_client *sc = NULL;
  tinkex_rest_client *rest = NULL;
  tinkex_subscription *sub = NULL;
  tinkex_error *err = NULL;
  tinkex_future *fut = NULL;
  tinkex_status s;
  char cfg[1024], body[512], path[512] = {0};
  const char *fb =
      "{\"loss_fn\":\"cross_entropy\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
      "\"encoded_text\",\"tokens\":[100000,100001,100002]}]},\"loss_fn_inputs\":{"
      "\"target_tokens\":{\"dtype\":\"int64\",\"data\":[100001,100002,100003]},\"weights\":{"
      "\"dtype\":\"float32\",\"data\":[1.0,1.0,1.0]}}}]}";
  const char *bad_loss =
      "{\"loss_fn\":\"no_such_loss\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
      "\"encoded_text\",\"tokens\":[1,2]}]},\"loss_fn_inputs\":{}}]}";
  const char *prompt =
      "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]},"
      "\"num_samples\":2,\"sampling_params\":{\"max_tokens\":4}}";
  const char *logprobs =
      "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[1,2,3]}]}}";
  const char *adam = "{\"learning_rate\":0.001}";
  const char *bad[6];
  char bad_buf[6][512];
  char *json;
  int i;

  opts.worker_threads = 2;
  opts.log_level = TINKEX_LOG_LEVEL_DEBUG;
  if (tinkex_runtime_new(&opts, &rt, &err) != TINKEX_STATUS_OK) return 3;

  /* Bad input. */
  snprintf(bad_buf[0], 512, "{\"api_key\":\"%s\",\"base_url\":\"http://user:%s@127.0.0.1:9/\"}",
           CANARY_KEY, CANARY_KEY);
  snprintf(bad_buf[1], 512,
           "{\"api_key\":\"%s\",\"base_url\":\"http://localhost:%s@attacker.example/\"}",
           CANARY_KEY, CANARY_KEY);
  snprintf(bad_buf[2], 512, "{\"api_key\":\"%s\",\"base_url\":\"%s\",\"telemetry\":\"%s\"}",
           CANARY_KEY, url, CANARY_KEY);
  snprintf(bad_buf[3], 512, "{\"api_key\":{\"value\":\"%s\"},\"base_url\":\"%s\"}", CANARY_KEY,
           url);
  snprintf(bad_buf[4], 512, "{\"api_key\":\"%s\\u0007\",\"base_url\":\"%s\"}", CANARY_KEY, url);
  snprintf(bad_buf[5], 512, "{\"api_key\":\"%s\",\"base_url\":\"%s\",", CANARY_KEY, url);
  for (i = 0; i < 6; i++) {
    tinkex_service_client *b = NULL;
    bad[i] = bad_buf[i];
    err = NULL;
    s = tinkex_service_client_new(rt, u8(bad[i]), strlen(bad[i]), &b, &err);
    printf("ERROR bad config %d: %s: %s\n", i, tinkex_status_name(s),
           err ? tinkex_error_message(err) : "(accepted)");
    tinkex_error_free(err);
    if (b) tinkex_service_client_free(b);
  }

  snprintf(cfg, sizeof cfg,
           "{\"api_key\":\"%s\",\"base_url\":\"%s\",\"telemetry\":true,"
           "\"telemetry_settings\":{\"flush_interval_ms\":100},\"progress_event_interval_ms\":50,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}",
           CANARY_KEY, url);
  err = NULL;
  if (tinkex_service_client_new(rt, u8(cfg), strlen(cfg), &svc, &err) != TINKEX_STATUS_OK) {
    printf("ERROR service_client_new: %s\n", err ? tinkex_error_message(err) : "");
    return 3;
  }
  s = tinkex_service_client_subscribe(svc, on_event, NULL, NULL, &sub, &err);
  snprintf(body, sizeof body, "{\"base_model\":\"%s\",\"lora_config\":{\"rank\":8}}", MODEL);
  s = tinkex_service_client_create_lora_training_client(svc, u8(body), strlen(body), NULL, NULL,
                                                        &fut, &err);
  if (s != TINKEX_STATUS_OK || tinkex_future_wait(fut, 60000, &err) != TINKEX_STATUS_OK ||
      tinkex_future_take_training_client(fut, &tc, &err) != TINKEX_STATUS_OK) {
    printf("ERROR training client: %s\n", err ? tinkex_error_message(err) : "");
    return 3;
  }
  tinkex_future_free(fut);
  for (i = 0; i < 3; i++) {
    SUBMIT("forward_backward", tinkex_training_client_forward_backward(tc, u8(fb), strlen(fb), NULL,
                                                                       NULL, &fut_, &err_));
    SUBMIT("optim_step", tinkex_training_client_optim_step(tc, u8(adam), strlen(adam), NULL, NULL,
                                                           &fut_, &err_));
  }
  {
    const char *b = "{\"path\":\"secrets\"}";
    tinkex_future *f = NULL;
    tinkex_error *e = NULL;
    s = tinkex_training_client_save_state(tc, u8(b), strlen(b), NULL, NULL, &f, &e);
    json = settle("save_state", s, f, e);
    if (json && strstr(json, "tinker://")) {
      const char *p = strstr(json, "tinker://");
      size_t n = strcspn(p, "\"");
      if (n >= sizeof path) n = sizeof path - 1;
      memcpy(path, p, n);
    }
    free(json);
  }
  fut = NULL;
  err = NULL;
  s = tinkex_training_client_save_weights_and_get_sampling_client(tc, NULL, 0, NULL, NULL, &fut, &err);
  if (s == TINKEX_STATUS_OK && tinkex_future_wait(fut, 60000, &err) == TINKEX_STATUS_OK &&
      tinkex_future_take_sampling_client(fut, &sc, &err) == TINKEX_STATUS_OK) {
    SUBMIT("sample", tinkex_sampling_client_sample(sc, u8(prompt), strlen(prompt), NULL, NULL,
                                                   &fut_, &err_));
    SUBMIT("compute_logprobs", tinkex_sampling_client_compute_logprobs(
                                   sc, u8(logprobs), strlen(logprobs), NULL, NULL, &fut_, &err_));
    tinkex_sampling_client_free(sc);
  } else {
    printf("ERROR sampling client: %s\n", err ? tinkex_error_message(err) : "");
  }
  tinkex_error_free(err);
  if (fut) tinkex_future_free(fut);
  err = NULL;
  if (tinkex_service_client_create_rest_client(svc, &rest, &err) == TINKEX_STATUS_OK) {
    char args[640];
    SUBMIT("list_training_runs",
           tinkex_rest_client_call(rest, u8("list_training_runs"), 18, u8("{\"limit\":10}"), 12,
                                   NULL, NULL, &fut_, &err_));
    SUBMIT("list_user_checkpoints",
           tinkex_rest_client_call(rest, u8("list_user_checkpoints"), 21, u8("{\"limit\":10}"),
                                   12, NULL, NULL, &fut_, &err_));
    snprintf(args, sizeof args, "{\"tinker_path\":\"%s\"}", path);
    SUBMIT("get_weights_info",
           tinkex_rest_client_call(rest, u8("get_weights_info_by_tinker_path"), 31, u8(args),
                                   strlen(args), NULL, NULL, &fut_, &err_));
    SUBMIT("no such run",
           tinkex_rest_client_call(rest, u8("get_training_run"), 16,
                                   u8("{\"training_run_id\":\"no-such-run\"}"), 33, NULL, NULL,
                                   &fut_, &err_));
    SUBMIT("bad delete",
           tinkex_rest_client_call(rest, u8("delete_checkpoint_from_tinker_path"), 34,
                                   u8("{\"tinker_path\":\"not-a-path\"}"), 28, NULL, NULL, &fut_,
                                   &err_));
    tinkex_rest_client_free(rest);
  }
  SUBMIT("bad loss", tinkex_training_client_forward_backward(tc, u8(bad_loss), strlen(bad_loss),
                                                             NULL, NULL, &fut_, &err_));
  err = NULL;
  s = tinkex_testing_panic_in_export(&err);
  printf("ERROR panic: %s: %s\n", tinkex_status_name(s), err ? tinkex_error_message(err) : "");
  tinkex_error_free(err);
  SUBMIT("close", tinkex_service_client_close(svc, NULL, 0, NULL, NULL, &fut_, &err_));
  tinkex_training_client_free(tc);
  tinkex_subscription_free(sub);
  tinkex_service_client_free(svc);
  err = NULL;
  if (tinkex_runtime_shutdown(rt, 2000, &err) != TINKEX_STATUS_OK) fprintf(stderr, "shutdown failed\n");
  tinkex_error_free(err);
  tinkex_runtime_free(rt);
  printf("SECRETS-DONE\n");
  fflush(stdout);
  return 0;
}

/* METHOD url+path (with a JSON body or NULL) over a raw socket (loopback http only);
 * returns the malloc'd response. */
static char *http_request(const char *method, const char *url, const char *path,
                          const char *body) {
  char host[64] = {0};
  int port = 0, fd;
  struct sockaddr_in a;
  char req[1024];
  size_t cap = 1 << 16, n = 0;
  char *buf;
  ssize_t r;
  if (sscanf(url, "http://%63[^:]:%d", host, &port) != 2) return NULL;
  fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, host, &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return NULL;
  }
  snprintf(req, sizeof req,
           "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\ncontent-type: application/json\r\n"
           "content-length: %zu\r\n\r\n%s",
           method, path, host, body ? strlen(body) : 0, body ? body : "");
  if (write(fd, req, strlen(req)) < 0) {
    close(fd);
    return NULL;
  }
  buf = (char *)malloc(cap);
  while ((r = read(fd, buf + n, cap - n - 1)) > 0) {
    n += (size_t)r;
    if (n + 1 >= cap) {
      cap *= 2;
      buf = (char *)realloc(buf, cap);
    }
  }
  buf[n] = 0;
  close(fd);
  return buf;
}

int main(int argc, char **argv) {
  int fds[2];
  pid_t pid;
  int wstatus = 0;
  size_t cap = 1 << 20, n = 0;
  char *out;
  ssize_t r;
  char *tel;
  if (argc < 2) {
    fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  unsetenv("TINKER_API_KEY");
  /* Some retries (their events and log lines carry server text) and slow operations. */
  free(http_request("POST", argv[1], "/_emulator/faults",
                    "{\"path\":\"/api/v1/optim_step\",\"status\":503,\"count\":2,"
                    "\"body\":{\"detail\":\"overloaded, retry\"}}"));
  free(http_request("POST", argv[1], "/_emulator/delays", "{\"ForwardBackward\":300}"));
  setenv("TINKER_TELEMETRY", "1", 1);
  if (pipe(fds) != 0) return 2;
  pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    alarm(240);
    _exit(child(argv[1]));
  }
  close(fds[1]);
  out = (char *)malloc(cap);
  while ((r = read(fds[0], out + n, cap - n - 1)) > 0) {
    n += (size_t)r;
    if (n + 1 >= cap) {
      cap *= 2;
      out = (char *)realloc(out, cap);
    }
  }
  out[n] = 0;
  close(fds[0]);
  waitpid(pid, &wstatus, 0);
  tel = http_request("GET", argv[1], "/_emulator/telemetry", NULL);
  free(http_request("DELETE", argv[1], "/_emulator/faults", NULL));
  free(http_request("POST", argv[1], "/_emulator/delays", "{\"ForwardBackward\":null}"));
  {
    const char *p = out;
    int events = 0, errors = 0, logs = 0;
    while ((p = strstr(p, "\nEVENT ")) != NULL) events++, p++;
    p = out;
    while ((p = strstr(p, "ERROR ")) != NULL) errors++, p++;
    p = out;
    while ((p = strstr(p, "[tinkex ")) != NULL) logs++, p++;
    fprintf(stderr, "child: %zu bytes of output, %d events, %d errors, %d log lines\n", n,
            events, errors, logs);
    CHECK(events > 0);
    CHECK(errors > 0);
  }
  CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  CHECK(strstr(out, "SECRETS-DONE") != NULL);
  CHECK(tel != NULL && strstr(tel, "\"events\"") != NULL); /* a batch arrived */
  CHECK(strstr(out, "SECRET-CANARY") == NULL);
  CHECK(tel == NULL || strstr(tel, "SECRET-CANARY") == NULL);
  {
    /* Show where the canary leaked. */
    const char *p = out;
    int shown = 0;
    while ((p = strstr(p, "SECRET-CANARY")) != NULL && shown < 10) {
      const char *start = p;
      while (start > out && start[-1] != '\n') start--;
      fprintf(stderr, "canary in output: %.200s\n", start);
      p++;
      shown++;
    }
  }
  free(out);
  free(tel);
  return finish("test_secrets");
}
