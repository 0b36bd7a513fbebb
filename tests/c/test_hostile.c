/* The hostile-server suite through the C ABI (issue 11):
 *   test_hostile MODE OP HOSTILE_URL OTHER_RECORD_FILE
 * tests/c/run.sh starts `hostile-server --mode MODE --target <target of OP>` in front of the
 * emulator for each case. This program forks a child (before any tinkex call) that runs OP
 * through the C ABI against HOSTILE_URL and writes one result line into a pipe; the parent
 * waits for it with wait4 (exit status, ru_maxrss) and checks:
 *   - the child (the host process) exited normally with status 0 (no abort, no signal);
 *   - the operation ended in a typed error (a status other than INTERNAL/PANIC) — or
 *     success where the mode is harmless — within TIME_BOUND_MS;
 *   - the child's peak RSS growth during the operation <= RSS_GROWTH_BOUND
 *     (/proc/self/clear_refs + VmHWM in the child; ru_maxrss is printed too);
 *   - the error message is bounded and holds neither the key nor a signed URL's query;
 *   - OTHER_RECORD_FILE (every byte the other origin received) holds neither the key nor
 *     the Cloudflare access secret.
 * Prints one line `MODE OP -> ...` and exits 0 when every check passed. */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- The bounds (the same as tests/hostile/common.rs; adjust together). ---- */
/* ASSUMED client default for an unannounced response body (`max_response_bytes`). */
#define MAX_RESPONSE_BYTES (64ULL << 20)
#define RSS_GROWTH_BOUND (3 * MAX_RESPONSE_BYTES + (64ULL << 20))
/* Address-space limit of the child: a lying length aborts fast instead of eating memory. */
#define CHILD_ADDRESS_SPACE (4ULL << 30)
#define MAX_ERROR_TEXT (5 * 1024)
#define CANARY_KEY "tml-SECRET-CANARY-0123456789"
#define CANARY_CF_SECRET "cf-SECRET-CANARY-0123456789"
#define SIGNED_QUERY_CANARY "X-Amz-Signature=sig-CANARY-QUERY-9876"
#define PROGRESS_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 2000
#define TIME_BOUND_MS (PROGRESS_TIMEOUT_MS + REQUEST_TIMEOUT_MS + 3000)
#define CHILD_DEADLINE_S 40
static const char *MODEL = "Qwen/Qwen3-8B";

static long status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = 0;
  size_t n = strlen(field);
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, field, n) == 0) {
      v = strtol(line + n, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

/* The outcome of the operation in the child. */
typedef struct outcome {
  tinkex_status status;
  char kind[32];
  unsigned http_status;
  size_t text_len;
  int has_key;
  int has_query;
  char head[161];
} outcome;

static void record_error(outcome *o, tinkex_status s, tinkex_error *err) {
  const char *msg = err ? tinkex_error_message(err) : NULL;
  const char *body = err ? tinkex_error_body(err) : NULL;
  const char *kind = err ? tinkex_error_kind(err) : NULL;
  size_t i;
  o->status = s;
  snprintf(o->kind, sizeof o->kind, "%s", kind ? kind : "none");
  o->http_status = err ? tinkex_error_http_status(err) : 0;
  o->text_len = msg ? strlen(msg) : 0;
  if (body && strlen(body) > o->text_len) o->text_len = strlen(body);
  o->has_key = (msg && (strstr(msg, CANARY_KEY) || strstr(msg, CANARY_CF_SECRET))) ||
               (body && (strstr(body, CANARY_KEY) || strstr(body, CANARY_CF_SECRET)));
  o->has_query = (msg && strstr(msg, SIGNED_QUERY_CANARY)) ||
                 (body && strstr(body, SIGNED_QUERY_CANARY));
  snprintf(o->head, sizeof o->head, "%s", msg ? msg : "");
  for (i = 0; o->head[i]; i++)
    if (o->head[i] == '\n' || o->head[i] == '\r' || (unsigned char)o->head[i] < 0x20) o->head[i] = ' ';
  tinkex_error_free(err);
}

/* Waits for a future; on success returns 1 (the caller takes the result). */
static int settle(outcome *o, tinkex_status submit, tinkex_future *fut, tinkex_error *err) {
  if (submit != TINKEX_STATUS_OK) {
    record_error(o, submit, err);
    return 0;
  }
  err = NULL;
  if (tinkex_future_wait(fut, (uint64_t)(CHILD_DEADLINE_S - 5) * 1000, &err) != TINKEX_STATUS_OK) {
    tinkex_error_free(err);
    o->status = TINKEX_STATUS_PENDING;
    snprintf(o->kind, sizeof o->kind, "hung");
    return 0;
  }
  return 1;
}

/* Takes a JSON result (NULL and the outcome recorded on failure). */
static char *take(outcome *o, tinkex_status submit, tinkex_future *fut, tinkex_error *err) {
  tinkex_bytes *bytes = NULL;
  tinkex_status s;
  char *copy = NULL;
  if (!settle(o, submit, fut, err)) {
    if (fut) tinkex_future_free(fut);
    return NULL;
  }
  err = NULL;
  s = tinkex_future_take_result(fut, &bytes, &err);
  if (s != TINKEX_STATUS_OK) {
    record_error(o, s, err);
  } else {
    copy = (char *)malloc(tinkex_bytes_len(bytes) + 1);
    memcpy(copy, tinkex_bytes_data(bytes), tinkex_bytes_len(bytes) + 1);
    tinkex_bytes_free(bytes);
  }
  tinkex_future_free(fut);
  return copy;
}

static tinkex_training_client *training(outcome *o, tinkex_service_client *svc) {
  char body[160];
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_training_client *tc = NULL;
  tinkex_status s;
  snprintf(body, sizeof body, "{\"base_model\":\"%s\",\"lora_config\":{\"rank\":8}}", MODEL);
  s = tinkex_service_client_create_lora_training_client(svc, u8(body), strlen(body), NULL, NULL,
                                                        &fut, &err);
  if (!settle(o, s, fut, err)) {
    if (fut) tinkex_future_free(fut);
    return NULL;
  }
  err = NULL;
  s = tinkex_future_take_training_client(fut, &tc, &err);
  if (s != TINKEX_STATUS_OK) record_error(o, s, err);
  tinkex_future_free(fut);
  return tc;
}

static tinkex_sampling_client *sampler(outcome *o, tinkex_service_client *svc) {
  char body[128];
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_sampling_client *sc = NULL;
  tinkex_status s;
  snprintf(body, sizeof body, "{\"base_model\":\"%s\"}", MODEL);
  s = tinkex_service_client_create_sampling_client(svc, u8(body), strlen(body), NULL, NULL, &fut,
                                                   &err);
  if (!settle(o, s, fut, err)) {
    if (fut) tinkex_future_free(fut);
    return NULL;
  }
  err = NULL;
  s = tinkex_future_take_sampling_client(fut, &sc, &err);
  if (s != TINKEX_STATUS_OK) record_error(o, s, err);
  tinkex_future_free(fut);
  return sc;
}

static const char *FB =
    "{\"loss_fn\":\"cross_entropy\",\"data\":[{\"model_input\":{\"chunks\":[{\"type\":"
    "\"encoded_text\",\"tokens\":[100000,100001,100002]}]},\"loss_fn_inputs\":{\"target_tokens\":"
    "{\"dtype\":\"int64\",\"data\":[100001,100002,100003]},\"weights\":{\"dtype\":\"float32\","
    "\"data\":[1.0,1.0,1.0]}}}]}";
static const char *LOGPROBS =
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100,101,102]}]}}";
static const char *PROMPT =
    "{\"prompt\":{\"chunks\":[{\"type\":\"encoded_text\",\"tokens\":[100,101,102]}]},"
    "\"num_samples\":2,\"sampling_params\":{\"max_tokens\":4}}";

/* Runs OP; fills *o (status OK = success). */
static void run_op(const char *op, tinkex_service_client *svc, outcome *o) {
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char *json = NULL;
  o->status = TINKEX_STATUS_OK;
  snprintf(o->kind, sizeof o->kind, "ok");
  if (strcmp(op, "get_server_capabilities") == 0) {
    s = tinkex_service_client_get_server_capabilities(svc, NULL, NULL, &fut, &err);
    json = take(o, s, fut, err);
  } else if (strcmp(op, "create_session") == 0 || strcmp(op, "create_model_result") == 0 ||
             strcmp(op, "get_info") == 0) {
    tinkex_training_client *tc = training(o, svc);
    if (tc) tinkex_training_client_free(tc);
  } else if (strcmp(op, "forward_backward_result") == 0 || strcmp(op, "optim_step_result") == 0 ||
             strcmp(op, "save_state_result") == 0 ||
             strcmp(op, "save_weights_for_sampler_result") == 0 ||
             strcmp(op, "get_weights_info") == 0) {
    tinkex_training_client *tc = training(o, svc);
    if (tc == NULL) return;
    if (strcmp(op, "forward_backward_result") == 0 || strcmp(op, "optim_step_result") == 0) {
      s = tinkex_training_client_forward_backward(tc, u8(FB), strlen(FB), NULL, NULL, &fut, &err);
      json = take(o, s, fut, err);
      if (json && strcmp(op, "optim_step_result") == 0) {
        const char *adam = "{\"learning_rate\":0.001}";
        free(json);
        fut = NULL;
        err = NULL;
        s = tinkex_training_client_optim_step(tc, u8(adam), strlen(adam), NULL, NULL, &fut, &err);
        json = take(o, s, fut, err);
      }
    } else if (strcmp(op, "save_weights_for_sampler_result") == 0) {
      const char *b = "{\"path\":\"hostile\"}";
      s = tinkex_training_client_save_weights_for_sampler(tc, u8(b), strlen(b), NULL, NULL, &fut,
                                                          &err);
      json = take(o, s, fut, err);
    } else {
      const char *b = "{\"path\":\"hostile\"}";
      s = tinkex_training_client_save_state(tc, u8(b), strlen(b), NULL, NULL, &fut, &err);
      json = take(o, s, fut, err);
      if (json && strcmp(op, "get_weights_info") == 0) {
        char path[512] = {0};
        const char *p = strstr(json, "tinker://");
        tinkex_rest_client *rest = NULL;
        if (p) {
          size_t n = strcspn(p, "\"");
          if (n >= sizeof path) n = sizeof path - 1;
          memcpy(path, p, n);
        }
        free(json);
        json = NULL;
        err = NULL;
        s = tinkex_service_client_create_rest_client(svc, &rest, &err);
        if (s != TINKEX_STATUS_OK) {
          record_error(o, s, err);
        } else {
          fut = NULL;
          err = NULL;
          char args[640];
          snprintf(args, sizeof args, "{\"tinker_path\":\"%s\"}", path);
          s = tinkex_rest_client_call(rest, u8("get_weights_info_by_tinker_path"), 31, u8(args),
                                      strlen(args), NULL, NULL, &fut, &err);
          json = take(o, s, fut, err);
          tinkex_rest_client_free(rest);
        }
      }
    }
    tinkex_training_client_free(tc);
  } else if (strcmp(op, "create_sampling_client") == 0 || strcmp(op, "sample_result") == 0 ||
             strcmp(op, "compute_logprobs_result") == 0) {
    tinkex_sampling_client *sc = sampler(o, svc);
    if (sc == NULL) return;
    if (strcmp(op, "sample_result") == 0) {
      s = tinkex_sampling_client_sample(sc, u8(PROMPT), strlen(PROMPT), NULL, NULL, &fut, &err);
      json = take(o, s, fut, err);
    } else if (strcmp(op, "compute_logprobs_result") == 0) {
      s = tinkex_sampling_client_compute_logprobs(sc, u8(LOGPROBS), strlen(LOGPROBS), NULL, NULL,
                                                  &fut, &err);
      json = take(o, s, fut, err);
    }
    tinkex_sampling_client_free(sc);
  } else if (strcmp(op, "list_training_runs") == 0 || strcmp(op, "list_user_checkpoints") == 0) {
    tinkex_rest_client *rest = NULL;
    s = tinkex_service_client_create_rest_client(svc, &rest, &err);
    if (s != TINKEX_STATUS_OK) {
      record_error(o, s, err);
      return;
    }
    err = NULL;
    s = tinkex_rest_client_call(rest, u8(op), strlen(op), u8("{\"limit\":10}"), 12, NULL, NULL,
                                &fut, &err);
    json = take(o, s, fut, err);
    tinkex_rest_client_free(rest);
  } else {
    fprintf(stderr, "unknown op %s\n", op);
    o->status = TINKEX_STATUS_INVALID_ARG;
    snprintf(o->kind, sizeof o->kind, "unknown-op");
  }
  free(json);
}

static int child(const char *op, const char *url, int fd) {
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_runtime *rt = NULL;
  tinkex_service_client *svc = NULL;
  tinkex_error *err = NULL;
  char config[1024];
  char line[512];
  outcome o;
  double started;
  long before, hwm;
  int reset;
  FILE *f;
  memset(&o, 0, sizeof o);
  opts.worker_threads = 2;
  if (tinkex_runtime_new(&opts, &rt, &err) != TINKEX_STATUS_OK) return 3;
  snprintf(config, sizeof config,
           "{\"api_key\":\"%s\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"timeouts\":{\"connect_ms\":500,\"request_ms\":%d,\"retrieve_future_ms\":%d,"
           "\"heartbeat_ms\":%d,\"dynamic_config_ms\":%d,\"telemetry_ms\":%d},"
           "\"retry\":{\"progress_timeout_ms\":%d,\"base_delay_ms\":10,\"max_delay_ms\":100,"
           "\"min_poll_duration_ms\":50}}",
           CANARY_KEY, url, REQUEST_TIMEOUT_MS, REQUEST_TIMEOUT_MS, REQUEST_TIMEOUT_MS,
           REQUEST_TIMEOUT_MS, REQUEST_TIMEOUT_MS, PROGRESS_TIMEOUT_MS);
  if (tinkex_service_client_new(rt, u8(config), strlen(config), &svc, &err) != TINKEX_STATUS_OK) {
    report_error("service_client_new", TINKEX_STATUS_INTERNAL, err);
    return 3;
  }
  f = fopen("/proc/self/clear_refs", "w");
  reset = f != NULL && fputs("5", f) >= 0;
  if (f) reset = (fclose(f) == 0) && reset;
  before = status_kb("VmRSS:");
  started = now_ms();
  run_op(op, svc, &o);
  hwm = status_kb("VmHWM:");
  snprintf(line, sizeof line, "%d %s %u %zu %d %d %.0f %ld %s\n", (int)o.status, o.kind,
           o.http_status, o.text_len, o.has_key, o.has_query, now_ms() - started,
           reset ? hwm - before : hwm, o.head);
  if (write(fd, line, strlen(line)) < 0) return 4;
  tinkex_service_client_free(svc);
  if (tinkex_runtime_shutdown(rt, 1000, &err) != TINKEX_STATUS_OK) fprintf(stderr, "shutdown failed\n");
  tinkex_error_free(err);
  tinkex_runtime_free(rt);
  return 0;
}

static int file_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "rb");
  char *buf;
  long n;
  int found = 0;
  if (f == NULL) return 0;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = (char *)calloc((size_t)n + 1, 1);
  if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
    long i, m = (long)strlen(needle);
    for (i = 0; i + m <= n && !found; i++) found = memcmp(buf + i, needle, (size_t)m) == 0;
  }
  free(buf);
  fclose(f);
  return found;
}

static int success_allowed(const char *mode) {
  return strncmp(mode, "redirect_same_", 14) == 0 || strcmp(mode, "invalid_utf8_header") == 0;
}

int main(int argc, char **argv) {
  int fds[2];
  pid_t pid;
  int wstatus = 0;
  struct rusage ru;
  char buf[1024] = {0};
  ssize_t n, total = 0;
  int st = 0, has_key = 0, has_query = 0;
  unsigned http = 0;
  size_t text_len = 0;
  double elapsed = 0;
  long growth = 0;
  char kind[32] = {0};
  int head_at = 0;
  int rc;
  char summary[1024] = "no result\n";
  if (argc < 5) {
    fprintf(stderr, "usage: %s MODE OP HOSTILE_URL OTHER_RECORD_FILE\n", argv[0]);
    return 2;
  }
  setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", CANARY_CF_SECRET, 1);
  setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-client-id", 1);
  unsetenv("TINKER_API_KEY");
  if (pipe(fds) != 0) return 2;
  pid = fork();
  if (pid == 0) {
    close(fds[0]);
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = CHILD_ADDRESS_SPACE;
    setrlimit(RLIMIT_AS, &lim);
    alarm(CHILD_DEADLINE_S); /* a hung child dies by SIGALRM: reported as dead/hung */
    _exit(child(argv[2], argv[3], fds[1]));
  }
  close(fds[1]);
  while ((n = read(fds[0], buf + total, sizeof buf - 1 - (size_t)total)) > 0) total += n;
  close(fds[0]);
  memset(&ru, 0, sizeof ru);
  wait4(pid, &wstatus, 0, &ru);

  g_checks++;
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    g_failures++;
    if (WIFSIGNALED(wstatus))
      fprintf(stderr, "%s %s: the host process died by signal %d\n", argv[1], argv[2],
              WTERMSIG(wstatus));
    else
      fprintf(stderr, "%s %s: the host process exited with %d\n", argv[1], argv[2],
              WEXITSTATUS(wstatus));
  }
  CHECK(!file_contains(argv[4], CANARY_KEY));
  CHECK(!file_contains(argv[4], CANARY_CF_SECRET));
  if (total > 0 && sscanf(buf, "%d %31s %u %zu %d %d %lf %ld %n", &st, kind, &http, &text_len,
                          &has_key, &has_query, &elapsed, &growth, &head_at) >= 8) {
    buf[head_at + strcspn(buf + head_at, "\n")] = 0; /* the message head, one line */
    snprintf(summary, sizeof summary, "%-22s %-32s -> %s status %s (HTTP %u) in %.0f ms, peak RSS +%ld MiB (ru_maxrss %ld "
           "MiB), text %zu B: %.120s\n",
           argv[1], argv[2], kind, tinkex_status_name((tinkex_status)st), http, elapsed,
           growth >> 10, ru.ru_maxrss >> 10, text_len, buf + head_at);
    CHECK(elapsed <= TIME_BOUND_MS);
    CHECK((unsigned long long)growth * 1024ULL <= RSS_GROWTH_BOUND);
    if (st == TINKEX_STATUS_OK) {
      CHECK(success_allowed(argv[1]));
    } else {
      CHECK(st != TINKEX_STATUS_INTERNAL && st != TINKEX_STATUS_PANIC &&
            st != TINKEX_STATUS_PENDING);
      CHECK(strcmp(kind, "panic") != 0 && strcmp(kind, "none") != 0 &&
            strcmp(kind, "hung") != 0 && strcmp(kind, "timeout") != 0);
      if (strncmp(argv[1], "lying_", 6) == 0) CHECK(strcmp(kind, "fatal") == 0);
      /* A redirect loop is a permanent failure (issue item 5), not retried to the timeout. */
      if (strcmp(argv[1], "redirect_loop") == 0)
        CHECK(strcmp(kind, "transient") != 0 && strcmp(kind, "no_progress") != 0);
      CHECK(text_len <= MAX_ERROR_TEXT);
      CHECK(!has_key);
      CHECK(!has_query);
    }
  } else {
    g_checks++;
    g_failures++;
    fprintf(stderr, "%s %s: no result line from the child\n", argv[1], argv[2]);
  }
  rc = finish("test_hostile");
  printf("%s", summary); /* last: run.sh shows the last line of a passing test */
  return rc;
}
