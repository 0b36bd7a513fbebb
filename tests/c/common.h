/* Shared helpers of the C tests: checks that count failures, a pthread completion waiter
 * used as user_data of on_done, and small JSON helpers. */
#ifndef TINKEX_TEST_COMMON_H
#define TINKEX_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_getname_np */
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tinkex.h"

static int g_checks = 0;
static int g_failures = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    g_checks++;                                                                  \
    if (!(cond)) {                                                               \
      g_failures++;                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

/* Checks a status (for calls without an error object). */
#define CHECK_STATUS(expr, expected)                                              \
  do {                                                                            \
    tinkex_status s_ = (expr);                                                    \
    g_checks++;                                                                   \
    if (s_ != (expected)) {                                                       \
      g_failures++;                                                               \
      fprintf(stderr, "%s:%d: %s gave %s, expected %s\n", __FILE__, __LINE__,     \
              #expr, tinkex_status_name(s_), tinkex_status_name(expected));       \
    }                                                                             \
  } while (0)

static inline void report_error(const char *what, tinkex_status s, tinkex_error *err) {
  fprintf(stderr, "%s: %s: %s\n", what, tinkex_status_name(s),
          err != NULL ? tinkex_error_message(err) : "(no error object)");
}

/* Expects status `expected` and a matching error object; frees it. */
static inline void expect_failure(const char *what, tinkex_status s, tinkex_error *err,
                           tinkex_status expected) {
  g_checks++;
  if (s != expected || err == NULL || tinkex_error_status(err) != expected ||
      tinkex_error_message(err) == NULL || tinkex_error_kind(err) == NULL) {
    g_failures++;
    fprintf(stderr, "%s: expected %s with an error object, got %s\n", what,
            tinkex_status_name(expected), tinkex_status_name(s));
  }
  tinkex_error_free(err);
}

/* ---- completion waiter ---- */

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int calls;
  int wrong_thread; /* calls on the submitting thread or not on "tinkex-callback" */
  pthread_t submitter;
} waiter;

static inline void waiter_init(waiter *w) {
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->calls = 0;
  w->wrong_thread = 0;
  w->submitter = pthread_self();
}

static inline void waiter_destroy(waiter *w) {
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
}

/* The load-time ABI check: same major, at least this header's minor. (Compared through a
 * variable: with a literal minor of 0, `>=` would be a -Wtype-limits warning.) */
static inline int abi_matches(void) {
  uint32_t need_minor = TINKEX_ABI_VERSION_MINOR;
  return tinkex_abi_version_major() == TINKEX_ABI_VERSION_MAJOR &&
         tinkex_abi_version_minor() >= need_minor;
}

static inline void on_done(void *user_data, const tinkex_future *fut) {
  waiter *w = (waiter *)user_data;
  char name[32] = {0};
  (void)fut;
  pthread_getname_np(pthread_self(), name, sizeof name);
  pthread_mutex_lock(&w->mu);
  if (pthread_equal(pthread_self(), w->submitter) || strcmp(name, "tinkex-callback") != 0) {
    w->wrong_thread++;
  }
  w->calls++;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Waits for the first callback; returns 0 on timeout. */
static inline int waiter_wait(waiter *w, int seconds) {
  struct timespec deadline;
  int ok = 1;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += seconds;
  pthread_mutex_lock(&w->mu);
  while (w->calls == 0) {
    if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) == ETIMEDOUT) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&w->mu);
  return ok;
}

static inline int waiter_calls(waiter *w) {
  int n;
  pthread_mutex_lock(&w->mu);
  n = w->calls;
  pthread_mutex_unlock(&w->mu);
  return n;
}

static inline void sleep_ms(long ms) {
  struct timespec t;
  t.tv_sec = ms / 1000;
  t.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&t, NULL);
}

/* Takes the JSON result of a finished future into a malloc'd C string (NULL on failure,
 * with the status in *out_status). */
static inline char *take_json(tinkex_future *fut, tinkex_status *out_status) {
  tinkex_bytes *bytes = NULL;
  tinkex_error *err = NULL;
  char *copy;
  tinkex_status s = tinkex_future_take_result(fut, &bytes, &err);
  if (out_status != NULL) *out_status = s;
  if (s != TINKEX_STATUS_OK) {
    if (s != TINKEX_STATUS_PENDING) report_error("take_result", s, err);
    tinkex_error_free(err);
    return NULL;
  }
  copy = (char *)malloc(tinkex_bytes_len(bytes) + 1);
  memcpy(copy, tinkex_bytes_data(bytes), tinkex_bytes_len(bytes) + 1); /* with the NUL */
  tinkex_bytes_free(bytes);
  return copy;
}

/* The number after "\"key\":" in a JSON text (0 if absent). */
static inline double json_number(const char *json, const char *key) {
  char pattern[128];
  const char *p;
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  p = json != NULL ? strstr(json, pattern) : NULL;
  return p != NULL ? strtod(p + strlen(pattern), NULL) : 0.0;
}

static inline const uint8_t *u8(const char *s) { return (const uint8_t *)s; }

static inline int finish(const char *name) {
  printf("%s: %d checks, %d failed\n", name, g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

#endif
