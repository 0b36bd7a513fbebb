/* The C driver of the parity suite (tests/parity, docs/parity.md): runs one scenario's line
 * form through include/tinkex.h and prints the transcript lines ("@@ " + JSON) on stdout.
 *
 *   driver_c SCENARIO.tsv BASE_URL
 *
 * Lines of the scenario: "config\t<json>", "events\t1", and
 * "op\t<i>\t<name>\t<target>\t<save_as>\t<param>\t<wait>\t<args json>". Op arguments are the
 * JSON the C ABI takes, passed through unparsed; results are printed as the library's JSON.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tinkex.h"

#define MAX_OBJECTS 64
#define OP_WAIT_MS 120000u

enum kind { K_TRAINING, K_SAMPLING, K_FUTURE };

struct object {
  char name[64];
  enum kind kind;
  tinkex_training_client *tc;
  tinkex_sampling_client *sc;
  tinkex_future *fut;
  char op[64]; /* the op that made the future */
};

static struct object objects[MAX_OBJECTS];
/* Each op's result JSON (for "$ref:<i>:<key>" in later arguments). */
#define MAX_OPS 256
static char *results[MAX_OPS];
static size_t n_objects;
static tinkex_runtime *rt;
static tinkex_service_client *svc;
static tinkex_rest_client *rest;

/* Events, copied on the dispatcher thread. */
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static char *ev_text;
static size_t ev_len, ev_cap;

static void die(const char *what) {
  fprintf(stderr, "driver_c: %s\n", what);
  exit(1);
}

static void on_event(void *ud, const tinkex_event *ev) {
  (void)ud;
  size_t len = 0;
  const uint8_t *json = tinkex_event_json(ev, &len);
  pthread_mutex_lock(&ev_mu);
  if (ev_len + len + 2 > ev_cap) {
    size_t cap = (ev_cap + len + 2) * 2;
    char *p = realloc(ev_text, cap);
    if (p == NULL) {
      pthread_mutex_unlock(&ev_mu);
      return;
    }
    ev_text = p;
    ev_cap = cap;
  }
  if (ev_len > 0) ev_text[ev_len++] = ',';
  memcpy(ev_text + ev_len, json, len);
  ev_len += len;
  ev_text[ev_len] = '\0';
  pthread_mutex_unlock(&ev_mu);
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
  putchar('"');
}

static void print_error(const char *i, const char *op, tinkex_status s, tinkex_error *err) {
  printf("@@ {\"i\":%s,\"op\":\"%s\",\"error\":{\"kind\":", i, op);
  const char *kind = err ? tinkex_error_kind(err) : tinkex_status_name(s);
  print_json_string(kind ? kind : "unknown");
  printf(",\"http_status\":%u,\"category\":", err ? (unsigned)tinkex_error_http_status(err) : 0u);
  const char *cat = err ? tinkex_error_category(err) : NULL;
  if (cat) print_json_string(cat);
  else printf("null");
  printf("}}\n");
  fflush(stdout);
  tinkex_error_free(err);
}

static void print_ok_bytes(const char *i, const char *op, tinkex_bytes *b) {
  long k = strtol(i, NULL, 10);
  if (b && k >= 0 && k < MAX_OPS && results[k] == NULL) results[k] = strdup((const char *)tinkex_bytes_data(b));
  printf("@@ {\"i\":%s,\"op\":\"%s\",\"ok\":%s}\n", i, op, b ? (const char *)tinkex_bytes_data(b) : "null");
  fflush(stdout);
  tinkex_bytes_free(b);
}

static struct object *find(const char *name) {
  for (size_t k = 0; k < n_objects; k++)
    if (strcmp(objects[k].name, name) == 0) return &objects[k];
  return NULL;
}

static struct object *add(const char *name, enum kind kind) {
  if (n_objects == MAX_OBJECTS) die("too many objects");
  struct object *o = &objects[n_objects++];
  memset(o, 0, sizeof *o);
  snprintf(o->name, sizeof o->name, "%s", name);
  o->kind = kind;
  return o;
}

/* What a future's result is. */
static enum kind result_kind(const char *op) {
  if (!strcmp(op, "create_lora") || !strcmp(op, "from_state") || !strcmp(op, "resume")) return K_TRAINING;
  if (!strcmp(op, "create_sampling") || !strcmp(op, "save_weights_and_get_sampling_client")) return K_SAMPLING;
  return K_FUTURE;
}

/* Takes a finished future's result and prints it (storing a client under save_as). */
static void finish(const char *i, const char *op, const char *made_by, tinkex_future *fut, const char *save_as) {
  tinkex_error *err = NULL;
  enum kind k = result_kind(made_by);
  if (k == K_TRAINING) {
    tinkex_training_client *tc = NULL;
    tinkex_status s = tinkex_future_take_training_client(fut, &tc, &err);
    if (s != TINKEX_STATUS_OK) return print_error(i, op, s, err);
    tinkex_bytes *info = NULL;
    if (tinkex_training_client_get_info(tc, &info, &err) != TINKEX_STATUS_OK) die("get_info");
    if (save_as[0]) add(save_as, K_TRAINING)->tc = tc;
    else tinkex_training_client_free(tc);
    return print_ok_bytes(i, op, info);
  }
  if (k == K_SAMPLING) {
    tinkex_sampling_client *sc = NULL;
    tinkex_status s = tinkex_future_take_sampling_client(fut, &sc, &err);
    if (s != TINKEX_STATUS_OK) return print_error(i, op, s, err);
    tinkex_bytes *info = NULL;
    if (tinkex_sampling_client_get_info(sc, &info, &err) != TINKEX_STATUS_OK) die("get_info");
    if (save_as[0]) add(save_as, K_SAMPLING)->sc = sc;
    else tinkex_sampling_client_free(sc);
    return print_ok_bytes(i, op, info);
  }
  tinkex_bytes *b = NULL;
  tinkex_status s = tinkex_future_take_result(fut, &b, &err);
  if (s != TINKEX_STATUS_OK) return print_error(i, op, s, err);
  print_ok_bytes(i, op, b);
}

typedef tinkex_status (*train_fn)(const tinkex_training_client *, const uint8_t *, size_t, tinkex_done_fn,
                                  void *, tinkex_future **, tinkex_error **);
typedef tinkex_status (*svc_fn)(const tinkex_service_client *, const uint8_t *, size_t, tinkex_done_fn, void *,
                                tinkex_future **, tinkex_error **);
typedef tinkex_status (*sample_fn)(const tinkex_sampling_client *, const uint8_t *, size_t, tinkex_done_fn,
                                   void *, tinkex_future **, tinkex_error **);

static train_fn training_op(const char *op) {
  if (!strcmp(op, "forward_backward")) return tinkex_training_client_forward_backward;
  if (!strcmp(op, "forward")) return tinkex_training_client_forward;
  if (!strcmp(op, "optim_step")) return tinkex_training_client_optim_step;
  if (!strcmp(op, "save_state")) return tinkex_training_client_save_state;
  if (!strcmp(op, "save_weights_for_sampler")) return tinkex_training_client_save_weights_for_sampler;
  if (!strcmp(op, "load_state")) return tinkex_training_client_load_state;
  if (!strcmp(op, "save_weights_external")) return tinkex_training_client_save_weights_external;
  if (!strcmp(op, "save_weights_and_get_sampling_client"))
    return tinkex_training_client_save_weights_and_get_sampling_client;
  return NULL;
}

static svc_fn service_op(const char *op) {
  if (!strcmp(op, "create_lora")) return tinkex_service_client_create_lora_training_client;
  if (!strcmp(op, "from_state")) return tinkex_service_client_create_training_client_from_state;
  if (!strcmp(op, "resume")) return tinkex_service_client_resume_training_run;
  if (!strcmp(op, "create_sampling")) return tinkex_service_client_create_sampling_client;
  if (!strcmp(op, "close")) return tinkex_service_client_close;
  if (!strcmp(op, "copy_weights")) return tinkex_service_client_copy_weights;
  return NULL;
}

static sample_fn sampling_op(const char *op) {
  if (!strcmp(op, "sample")) return tinkex_sampling_client_sample;
  if (!strcmp(op, "compute_logprobs")) return tinkex_sampling_client_compute_logprobs;
  return NULL;
}

/* Submits op `name` on `target` with `args`; NULL future and an error printed on failure. */
static tinkex_future *submit(const char *i, const char *name, const char *target, const char *param,
                             const char *args) {
  const uint8_t *a = (const uint8_t *)args;
  size_t n = strlen(args);
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  train_fn tf = training_op(name);
  svc_fn sf = service_op(name);
  sample_fn mf = sampling_op(name);
  if (tf || mf) {
    struct object *o = find(target);
    if (o == NULL) die("unknown target");
    if (tf) s = tf(o->tc, a, n, NULL, NULL, &fut, &err);
    else s = mf(o->sc, a, n, NULL, NULL, &fut, &err);
  } else if (sf) {
    s = sf(svc, a, n, NULL, NULL, &fut, &err);
  } else if (!strcmp(name, "capabilities")) {
    s = tinkex_service_client_get_server_capabilities(svc, NULL, NULL, &fut, &err);
  } else if (!strcmp(name, "rest")) {
    if (rest == NULL && tinkex_service_client_create_rest_client(svc, &rest, &err) != TINKEX_STATUS_OK)
      die("create_rest_client");
    s = tinkex_rest_client_call(rest, (const uint8_t *)param, strlen(param), a, n, NULL, NULL, &fut, &err);
  } else {
    fprintf(stderr, "driver_c: unknown op %s\n", name);
    exit(1);
  }
  if (s != TINKEX_STATUS_OK) {
    print_error(i, name, s, err);
    return NULL;
  }
  return fut;
}

/* The string member `key` of op `i`'s result (the library's compact JSON: `"key":"value"`,
 * values without escapes, e.g. paths and ids); NULL if there is none. */
static char *result_member(long i, const char *key) {
  if (i < 0 || i >= MAX_OPS || results[i] == NULL) return NULL;
  char pat[80];
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *at = strstr(results[i], pat);
  if (at == NULL) return NULL;
  at += strlen(pat);
  const char *end = strchr(at, '"');
  return end ? strndup(at, (size_t)(end - at)) : NULL;
}

/* `args` with every "$ref:<i>:<key>" string replaced by that member of op i's result. */
static char *substitute(const char *args) {
  size_t cap = strlen(args) + 1, len = 0;
  char *out = malloc(cap);
  if (out == NULL) die("out of memory");
  const char *p = args;
  while (*p) {
    if (strncmp(p, "\"$ref:", 6) == 0) {
      char *end = NULL;
      long i = strtol(p + 6, &end, 10);
      const char *close = end && *end == ':' ? strchr(end + 1, '"') : NULL;
      if (close) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(close - end - 1), end + 1);
        char *v = result_member(i, key);
        if (v == NULL) die("$ref to a missing result");
        size_t need = len + strlen(v) + 3 + strlen(close);
        if (need > cap) {
          cap = need * 2;
          out = realloc(out, cap);
          if (out == NULL) die("out of memory");
        }
        len += (size_t)sprintf(out + len, "\"%s\"", v);
        free(v);
        p = close + 1;
        continue;
      }
    }
    if (len + 2 > cap) {
      cap *= 2;
      out = realloc(out, cap);
      if (out == NULL) die("out of memory");
    }
    out[len++] = *p++;
  }
  out[len] = '\0';
  return out;
}

/* The end of the JSON value starting at `p` (strings and nesting respected); the library's
 * and the runner's JSON is well-formed. */
static const char *value_end(const char *p) {
  int depth = 0;
  for (; *p; p++) {
    if (*p == '"') {
      for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1]) p++;
    } else if (*p == '{' || *p == '[') {
      depth++;
    } else if (*p == '}' || *p == ']') {
      if (--depth == 0) return p + 1;
    } else if (depth == 0 && (*p == ',')) {
      return p;
    }
  }
  return p;
}

/* The suite's custom loss (every driver has the same): loss = -(sum of all target logprobs),
 * gradient -1 everywhere; metric n_logprobs. `args` is {"data": [datum, ...]}; the datums go
 * to a datum batch as JSON; the forward's logprobs are read from its result. */
static void custom_loss(const char *i, const char *target, const char *args) {
  struct object *o = find(target);
  if (o == NULL) die("unknown target");
  tinkex_error *err = NULL;
  tinkex_datum_batch *batch = NULL;
  if (tinkex_datum_batch_new(&batch, &err) != TINKEX_STATUS_OK) die("datum_batch_new");
  const char *p = strstr(args, "\"data\":[");
  if (p == NULL) die("custom: no data");
  p += strlen("\"data\":[");
  while (*p == '{') {
    const char *end = value_end(p);
    tinkex_status s = tinkex_datum_batch_push_json(batch, (const uint8_t *)p, (size_t)(end - p), &err);
    if (s != TINKEX_STATUS_OK) {
      tinkex_datum_batch_free(batch);
      return print_error(i, "forward_backward_custom", s, err);
    }
    p = *end == ',' ? end + 1 : end;
  }
  tinkex_custom_loss *pass = NULL;
  tinkex_future *fwd = NULL;
  tinkex_status s = tinkex_training_client_forward_backward_custom(o->tc, batch, NULL, NULL, &pass, &fwd, &err);
  tinkex_datum_batch_free(batch);
  if (s != TINKEX_STATUS_OK) return print_error(i, "forward_backward_custom", s, err);
  if (tinkex_future_wait(fwd, OP_WAIT_MS, &err) != TINKEX_STATUS_OK) die("custom: forward did not finish");
  tinkex_bytes *out = NULL;
  s = tinkex_future_take_result(fwd, &out, &err);
  tinkex_future_free(fwd);
  if (s != TINKEX_STATUS_OK) {
    tinkex_custom_loss_free(pass);
    return print_error(i, "forward_backward_custom", s, err);
  }
  tinkex_datum_batch *grads = NULL;
  if (tinkex_datum_batch_new(&grads, &err) != TINKEX_STATUS_OK) die("datum_batch_new");
  double sum = 0;
  size_t n = 0;
  for (const char *q = (const char *)tinkex_bytes_data(out); (q = strstr(q, "\"logprobs\":{")) != NULL;) {
    q = strstr(q, "\"data\":[");
    if (q == NULL) die("custom: logprobs without data");
    q += strlen("\"data\":[");
    size_t count = 0;
    while (*q != ']') {
      char *e;
      sum += strtod(q, &e);
      count++;
      q = *e == ',' ? e + 1 : e;
    }
    float *g = malloc((count ? count : 1) * sizeof *g);
    if (g == NULL) die("out of memory");
    for (size_t k = 0; k < count; k++) g[k] = -1.0f;
    if (tinkex_datum_batch_push(grads, NULL, 0, TINKEX_DTYPE_INT64, &err) != TINKEX_STATUS_OK ||
        tinkex_datum_batch_set_loss_input(grads, (const uint8_t *)"grads", 5, g, count, TINKEX_DTYPE_FLOAT32, NULL, 0,
                                          &err) != TINKEX_STATUS_OK)
      die("custom: grads");
    free(g);
    n += count;
  }
  tinkex_bytes_free(out);
  char metrics[128];
  snprintf(metrics, sizeof metrics, "{\"loss:sum\":%.17g,\"n_logprobs\":%zu}", -sum, n);
  if (tinkex_custom_loss_set_metrics(pass, (const uint8_t *)metrics, strlen(metrics), &err) != TINKEX_STATUS_OK)
    die("custom: set_metrics");
  tinkex_future *bwd = NULL;
  s = tinkex_custom_loss_backward(pass, grads, NULL, NULL, &bwd, &err);
  tinkex_datum_batch_free(grads);
  tinkex_custom_loss_free(pass);
  if (s != TINKEX_STATUS_OK) return print_error(i, "forward_backward_custom", s, err);
  if (tinkex_future_wait(bwd, OP_WAIT_MS, &err) != TINKEX_STATUS_OK) die("custom: backward did not finish");
  finish(i, "forward_backward_custom", "forward_backward_custom", bwd, "");
  tinkex_future_free(bwd);
}

/* Splits `line` at tabs into at most `max` fields (the last keeps any further tabs). */
static size_t split(char *line, char **fields, size_t max) {
  size_t n = 0;
  fields[n++] = line;
  for (char *p = line; *p && n < max; p++)
    if (*p == '\t') {
      *p = '\0';
      fields[n++] = p + 1;
    }
  return n;
}

static void run_op(char **f) {
  const char *i = f[0], *name = f[1], *target = f[2], *save_as = f[3], *param = f[4], *args = f[6];
  int wait = strcmp(f[5], "1") == 0;
  if (!strcmp(name, "control")) {
    printf("@@ {\"control\":%s}\n", i);
    fflush(stdout);
    char buf[16];
    if (fgets(buf, sizeof buf, stdin) == NULL) die("stdin closed during control");
    return;
  }
  if (!strcmp(name, "wait_event")) {
    /* Waits (bounded) until an event of type `param` was received. */
    char pat[96];
    snprintf(pat, sizeof pat, "\"type\":\"%s\"", param);
    int found = 0;
    for (int k = 0; k < 2000 && !found; k++) {
      pthread_mutex_lock(&ev_mu);
      found = ev_text != NULL && strstr(ev_text, pat) != NULL;
      pthread_mutex_unlock(&ev_mu);
      if (!found) nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 5000000}, NULL);
    }
    printf("@@ {\"i\":%s,\"op\":\"wait_event\",\"ok\":%s}\n", i, found ? "true" : "false");
    fflush(stdout);
    return;
  }
  if (!strcmp(name, "await")) {
    struct object *o = find(target);
    if (o == NULL || o->kind != K_FUTURE) die("await: unknown future");
    uint64_t ms = param[0] ? strtoull(param, NULL, 10) : OP_WAIT_MS;
    tinkex_error *err = NULL;
    tinkex_status s = tinkex_future_wait(o->fut, ms, &err);
    if (s == TINKEX_STATUS_PENDING) {
      printf("@@ {\"i\":%s,\"op\":\"await\",\"error\":{\"kind\":\"await_timeout\"}}\n", i);
      fflush(stdout);
      return;
    }
    if (s != TINKEX_STATUS_OK) return print_error(i, "await", s, err);
    return finish(i, "await", o->op, o->fut, save_as);
  }
  if (!strcmp(name, "cancel")) {
    struct object *o = find(target);
    if (o == NULL || o->kind != K_FUTURE) die("cancel: unknown future");
    tinkex_status s = tinkex_future_cancel(o->fut);
    if (s != TINKEX_STATUS_OK) return print_error(i, name, s, NULL);
    printf("@@ {\"i\":%s,\"op\":\"cancel\",\"ok\":null}\n", i);
    fflush(stdout);
    return;
  }
  char *resolved = substitute(args);
  if (!strcmp(name, "forward_backward_custom")) {
    custom_loss(i, target, resolved);
    free(resolved);
    return;
  }
  tinkex_future *fut = submit(i, name, target, param, resolved);
  free(resolved);
  if (fut == NULL) return;
  if (!wait) {
    struct object *o = add(save_as, K_FUTURE);
    o->fut = fut;
    snprintf(o->op, sizeof o->op, "%s", name);
    printf("@@ {\"i\":%s,\"op\":\"%s\",\"submitted\":true}\n", i, name);
    fflush(stdout);
    return;
  }
  tinkex_error *err = NULL;
  tinkex_status s = tinkex_future_wait(fut, OP_WAIT_MS, &err);
  if (s == TINKEX_STATUS_PENDING) die("operation did not finish in time");
  if (s != TINKEX_STATUS_OK) die("future_wait failed");
  finish(i, name, name, fut, save_as);
  tinkex_future_free(fut);
}

int main(int argc, char **argv) {
  if (argc != 3) die("usage: driver_c SCENARIO.tsv BASE_URL");
  FILE *in = fopen(argv[1], "r");
  if (in == NULL) die("cannot open the scenario");
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  tinkex_error *err = NULL;
  if (tinkex_runtime_new(&opts, &rt, &err) != TINKEX_STATUS_OK) die("runtime_new");
  tinkex_subscription *sub = NULL;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, in)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    char *f[8];
    size_t n = split(line, f, 8);
    if (!strcmp(f[0], "config") && n == 2) {
      if (tinkex_service_client_new(rt, (const uint8_t *)f[1], strlen(f[1]), &svc, &err) != TINKEX_STATUS_OK) {
        fprintf(stderr, "driver_c: service_client_new: %s\n", tinkex_error_message(err));
        return 1;
      }
    } else if (!strcmp(f[0], "events")) {
      if (tinkex_service_client_subscribe(svc, on_event, NULL, NULL, &sub, &err) != TINKEX_STATUS_OK)
        die("subscribe");
    } else if (!strcmp(f[0], "op") && n == 8) {
      run_op(f + 1);
    } else {
      die("bad scenario line");
    }
  }
  free(line);
  fclose(in);
  tinkex_subscription_free(sub);
  pthread_mutex_lock(&ev_mu);
  printf("@@ {\"events\":[%s]}\n", ev_text ? ev_text : "");
  pthread_mutex_unlock(&ev_mu);
  printf("@@ {\"done\":true}\n");
  fflush(stdout);
  for (size_t k = 0; k < n_objects; k++) {
    tinkex_training_client_free(objects[k].tc);
    tinkex_sampling_client_free(objects[k].sc);
    tinkex_future_free(objects[k].fut);
  }
  tinkex_rest_client_free(rest);
  tinkex_service_client_free(svc);
  if (tinkex_runtime_shutdown(rt, 5000, &err) != TINKEX_STATUS_OK) tinkex_error_free(err);
  tinkex_runtime_free(rt);
  free(ev_text);
  for (size_t k = 0; k < MAX_OPS; k++) free(results[k]);
  return 0;
}
