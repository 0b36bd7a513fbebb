// Issue 14's operations through tinkex.hpp against the emulator: the generated REST
// methods (session-less RestClient), the admin client, status() introspection, console
// URLs, sampler handles, external weights, inflight snapshots, copy_weights.
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <cstdio>
#include <string>

namespace {

bool has(const tinkex::Result<std::string> &r, const std::string &needle) {
  return r.ok() && r.value().find(needle) != std::string::npos;
}

}  // namespace

std::string string_after(const std::string &json, const std::string &key) {
  auto pos = json.find("\"" + key + "\":\"");
  if (pos == std::string::npos) return {};
  pos += key.size() + 4;
  return json.substr(pos, json.find('"', pos) - pos);
}

int run_operations(const tinkex::Runtime &rt, const std::string &base_url) {
  int failures = 0;
  std::string config = "{\"api_key\":\"tml-cpp-test\",\"base_url\":\"" + base_url +
                       "\",\"telemetry\":false,\"project_id\":\"proj-cpp\"}";
  auto svc = tinkex::ServiceClient::create(rt, config);
  if (!svc) return check(false, "operations: service");
  auto training = svc.value()
                      .create_lora_training_client(
                          R"({"base_model":"Qwen/Qwen3-8B","lora_config":{"rank":8},)"
                          R"("user_metadata":{"lang":"c++"},"optimizer":{"type":"dimuon","version":1}})")
                      .get();
  if (!training) {
    std::fprintf(stderr, "operations: %s\n", training.error().message.c_str());
    return check(false, "operations: training client (dimuon)");
  }
  tinkex::TrainingClient &t = training.value();
  std::string run_id = string_after(t.info().value(), "model_id");

  failures += check(t.optim_step(R"({"type":"dimuon","learning_rate":0.001})").get().ok(),
                    "operations: dimuon step");
  auto saved = t.save_state(R"({"path":"cpp-ops","ttl_seconds":7200})").get();
  std::string path = saved.ok() ? string_after(saved.value(), "path") : "";
  failures += check(!path.empty(), "operations: save_state with ttl");
  auto ext = t.save_weights_external(R"({"path":"cpp-ext"})").get();
  failures += check(has(ext, "external_weights/cpp-ext") && has(ext, "size_bytes"),
                    "operations: save_weights_external");
  auto inflight = t.save_weights_and_get_sampling_client(R"({"kind":"inflight"})").get();
  failures += check(inflight.ok(), "operations: inflight sampling client");
  if (inflight) {
    auto handle = inflight.value().get_sampler_handle();
    failures += check(handle.ok() && handle.value().size() > 2, "operations: sampler handle");
    if (handle) {
      std::string h = handle.value().substr(1, handle.value().size() - 2);  // the JSON string
      auto clone = tinkex::SamplingClient::from_sampler_handle(rt, h, config);
      failures += check(clone.ok(), "operations: from_sampler_handle");
      if (clone) {
        auto s = clone.value()
                     .sample(R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2]}]},)"
                             R"("num_samples":1,"sampling_params":{"max_tokens":2}})")
                     .get();
        failures += check(has(s, "sequences"), "operations: the clone samples");
      }
    }
    failures += check(has(inflight.value().status(), "queue_state"), "operations: sampling status");
  }
  failures += check(has(svc.value().status(), "operations_in_flight"), "operations: service status");
  failures += check(has(t.status(), "queue_state"), "operations: training status");
  failures += check(has(svc.value().get_console_url(), "http"), "operations: console URL");
  failures += check(has(t.get_console_url(), run_id), "operations: run console URL");
  auto copied = svc.value().copy_weights("{\"path\":\"" + path + "\"}").get();
  failures += check(has(copied, "tinker://"), "operations: copy_weights");

  // The generated REST methods on a session-less client.
  auto rest = tinkex::RestClient::create(rt, config);
  failures += check(rest.ok(), "rest: create");
  if (rest) {
    tinkex::RestClient &r = rest.value();
    tinkex::rest::ListTrainingRunsOptions lo;
    lo.limit = 50;
    failures += check(has(r.list_training_runs(lo).get(), run_id), "rest: list_training_runs");
    failures += check(has(r.get_training_run(run_id).get(), "\"lora_rank\":8"), "rest: get_training_run");
    failures += check(has(r.list_checkpoints(run_id).get(), path), "rest: list_checkpoints");
    failures += check(r.publish_checkpoint_from_tinker_path(path).get().ok(), "rest: publish");
    failures += check(has(r.list_checkpoints(run_id).get(), "\"public\":true"), "rest: public");
    failures += check(r.set_checkpoint_ttl_from_tinker_path(path, std::nullopt).get().ok(),
                      "rest: clear TTL");
    failures += check(has(r.get_weights_info_by_tinker_path(path).get(), "Qwen/Qwen3-8B"),
                      "rest: weights info");
    if (ext) {
      auto urls = r.get_external_weights_urls(string_after(ext.value(), "path")).get();
      failures += check(has(urls, "\"urls\""), "rest: external weights URLs");
    }
    failures += check(r.call("no_such_method").get().status() == TINKEX_STATUS_INVALID_ARG,
                      "rest: unknown method");
    failures += check(r.delete_checkpoint_from_tinker_path(path).get().ok(), "rest: delete");
  }
  auto admin = tinkex::AdminClient::create(rt, config);
  failures += check(admin.ok() && admin.value().get_current_checkpoint_storage_usage().get().ok(),
                    "admin: storage usage");
  std::printf("C++ operations: %d failed\n", failures);
  return failures;
}
