/* The generic REST/admin call of the C API against the emulator:
 *   test_rest BASE_URL
 * tinkex_rest_client_new (session-less: no create_session), tinkex_rest_client_call with
 * defaults and explicit args, its argument errors (INVALID_ARG / INVALID_JSON, nothing
 * submitted), tinkex_admin_client_{new,call,clone,free} and the admin method filter. */
#include "common.h"

/* Calls `method` with `args` on a rest (admin == NULL) or admin client and waits; returns
 * the result JSON (malloc'd) or NULL, with the submit status in *submit. */
static char *call(tinkex_rest_client *rest, tinkex_admin_client *admin, const char *method,
                  const char *args, tinkex_status *submit) {
  tinkex_future *fut = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char *json;
  size_t alen = args ? strlen(args) : 0;
  if (rest)
    s = tinkex_rest_client_call(rest, u8(method), strlen(method), args ? u8(args) : NULL, alen,
                                NULL, NULL, &fut, &err);
  else
    s = tinkex_admin_client_call(admin, u8(method), strlen(method), args ? u8(args) : NULL,
                                 alen, NULL, NULL, &fut, &err);
  *submit = s;
  if (s != TINKEX_STATUS_OK) {
    CHECK(fut == NULL && err != NULL && tinkex_error_status(err) == s);
    tinkex_error_free(err);
    return NULL;
  }
  CHECK(tinkex_future_wait(fut, 60000, &err) == TINKEX_STATUS_OK);
  json = take_json(fut, NULL);
  tinkex_future_free(fut);
  return json;
}

int main(int argc, char **argv) {
  char config[512];
  tinkex_runtime *rt = NULL;
  tinkex_rest_client *rest = NULL;
  tinkex_admin_client *admin = NULL, *admin2 = NULL;
  tinkex_error *err = NULL;
  tinkex_status s;
  char *json;
  tinkex_runtime_options opts = tinkex_runtime_options_default();
  if (argc < 2) {
    fprintf(stderr, "usage: test_rest BASE_URL\n");
    return 2;
  }
  CHECK(abi_matches());
  CHECK_STATUS(tinkex_runtime_new(&opts, &rt, &err), TINKEX_STATUS_OK);
  snprintf(config, sizeof config,
           "{\"api_key\":\"tml-c-rest\",\"base_url\":\"%s\",\"telemetry\":false,"
           "\"retry\":{\"base_delay_ms\":10,\"max_delay_ms\":100}}",
           argv[1]);
  CHECK_STATUS(tinkex_rest_client_new(rt, u8(config), strlen(config), &rest, &err),
               TINKEX_STATUS_OK);
  CHECK_STATUS(tinkex_admin_client_new(rt, u8(config), strlen(config), &admin, &err),
               TINKEX_STATUS_OK);
  if (rest == NULL || admin == NULL) return finish("test_rest");

  /* Defaults (NULL args), explicit args. */
  json = call(rest, NULL, "list_training_runs", NULL, &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"training_runs\"") && strstr(json, "\"cursor\""));
  free(json);
  json = call(rest, NULL, "list_sessions", "{\"limit\":5,\"access_scope\":\"accessible\"}", &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"sessions\""));
  free(json);
  json = call(rest, NULL, "get_server_capabilities", "", &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"supported_models\""));
  free(json);
  json = call(rest, NULL, "search_sessions", "{\"request\":{\"limit\":10}}", &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"sessions\""));
  free(json);

  /* Argument errors: a status, an error object, nothing submitted. */
  call(rest, NULL, "no_such_method", NULL, &s);
  CHECK(s == TINKEX_STATUS_INVALID_ARG);
  call(rest, NULL, "get_training_run", "{}", &s);
  CHECK(s == TINKEX_STATUS_INVALID_ARG);
  call(rest, NULL, "list_training_runs", "{\"limit\":\"ten\"}", &s);
  CHECK(s == TINKEX_STATUS_INVALID_ARG);
  call(rest, NULL, "list_training_runs", "{\"limitt\":10}", &s);
  CHECK(s == TINKEX_STATUS_INVALID_JSON);
  call(rest, NULL, "list_training_runs", "[1,2]", &s);
  CHECK(s == TINKEX_STATUS_INVALID_JSON);
  call(rest, NULL, "list_training_runs", "{bad json", &s);
  CHECK(s == TINKEX_STATUS_INVALID_JSON);
  CHECK_STATUS(tinkex_rest_client_call(rest, NULL, 3, NULL, 0, NULL, NULL, NULL, NULL),
               TINKEX_STATUS_NULL_ARG);
  CHECK_STATUS(tinkex_rest_client_call(NULL, u8("whoami"), 6, NULL, 0, NULL, NULL, NULL, NULL),
               TINKEX_STATUS_NULL_ARG);
  /* A tinker path checked client-side: the future fails with a user error. */
  json = call(rest, NULL, "get_external_weights_urls",
              "{\"tinker_path\":\"tinker://run/weights/x\"}", &s);
  CHECK(s == TINKEX_STATUS_OK && json == NULL);

  /* Admin: its methods only; clone/free. */
  admin2 = tinkex_admin_client_clone(admin);
  CHECK(admin2 != NULL);
  json = call(NULL, admin2, "get_current_checkpoint_storage_usage", NULL, &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"data\""));
  free(json);
  json = call(NULL, admin2, "get_audit_log", "{\"event_type\":\"all\"}", &s);
  CHECK(s == TINKEX_STATUS_OK && json && strstr(json, "\"entries\""));
  free(json);
  call(NULL, admin2, "list_training_runs", NULL, &s);
  CHECK(s == TINKEX_STATUS_INVALID_ARG);
  call(NULL, admin2, "get_audit_log", "{\"event_type\":\"everything\"}", &s);
  CHECK(s == TINKEX_STATUS_INVALID_ARG);
  tinkex_admin_client_free(admin2);
  tinkex_admin_client_free(NULL);
  tinkex_admin_client_free(admin);
  tinkex_rest_client_free(rest);
  tinkex_runtime_free(rt);
  return finish("test_rest");
}
