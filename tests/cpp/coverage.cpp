// The official SDK methods that tinkex.hpp covers beyond the basic loop (docs/api-coverage.md):
// *_with_optimizer, get_info, get_base_model, get_telemetry of every client,
// SamplingClient::create (joining a sampling session), TrainingClient::create_sampling_client
// and SamplingClient::on_queue_state_change (only the sampler whose request it was is told).
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

// One request to the emulator's control endpoints (/_emulator/...); the raw answer, or "".
std::string emulator_request(const std::string &base_url, const char *method,
                             const std::string &path, const std::string &body) {
  char host[64] = {0};
  int port = 0;
  if (std::sscanf(base_url.c_str(), "http://%63[^:]:%d", host, &port) != 2) return {};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host, &a.sin_addr);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0) {
    std::string req = std::string(method) + " /_emulator/" + path + " HTTP/1.1\r\nHost: " + host +
                      "\r\nConnection: close\r\ncontent-type: application/json\r\n" +
                      "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

namespace {

/// `{"key": "value"}`.
std::string object(const char *key, const std::string &value) {
  return "{" + tinkex::detail::json_quote(key) + ":" + tinkex::detail::json_quote(value) + "}";
}

std::string model_id(const tinkex::TrainingClient &t) {
  return string_after(t.get_info().value(), "model_id");
}

long optimizer_steps(const std::string &base_url, const tinkex::TrainingClient &t) {
  std::string answer = emulator_request(base_url, "GET", "models/" + model_id(t));
  auto pos = answer.find("\"optimizer_steps\":");
  return pos == std::string::npos ? -1 : std::strtol(answer.c_str() + pos + 18, nullptr, 10);
}

bool ok(const tinkex::Result<std::string> &r) { return r.ok(); }

/// A get_telemetry() result with counters (a JSON object).
bool counters(const tinkex::Result<std::optional<std::string>> &r) {
  return r.ok() && r.value() && r.value()->front() == '{';
}

/// A get_telemetry() result without counters.
bool no_counters(const tinkex::Result<std::optional<std::string>> &r) {
  return r.ok() && !r.value();
}

// What an on_queue_state_change function saw, with a wait on the condition.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::optional<std::string>>> calls;

  void add(const std::string &state, const std::optional<std::string> &reason) {
    std::lock_guard<std::mutex> lock(mu);
    calls.emplace_back(state, reason);
    cv.notify_all();
  }
  bool wait_for(const std::string &state, const std::string &reason, std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, limit, [&] {
      for (const auto &c : calls)
        if (c.first == state && c.second == reason) return true;
      return false;
    });
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return calls.size();
  }
};

/// A subscription of `seen` (shared with the handler, which may run until the
/// Subscription is destroyed) to `sc`'s queue states.
tinkex::Result<tinkex::Subscription> observe(const tinkex::SamplingClient &sc,
                                             std::shared_ptr<Seen> seen) {
  return sc.on_queue_state_change(
      [seen](const std::string &state, const std::optional<std::string> &reason) {
        seen->add(state, reason);
      });
}

const char kSample[] = R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]},)"
                       R"("num_samples":1,"sampling_params":{"max_tokens":2}})";
const char kBaseModel[] = R"({"base_model":"Qwen/Qwen3-8B"})";

int run_queue_state(const tinkex::ServiceClient &svc, const std::string &base_url,
                    const tinkex::Runtime &rt, const std::string &config) {
  int failures = 0;
  auto mine = svc.create_sampling_client(kBaseModel).get();
  auto theirs = svc.create_sampling_client(kBaseModel).get();
  if (!mine || !theirs) return check(false, "coverage: two sampling clients");
  auto seen_mine = std::make_shared<Seen>(), seen_theirs = std::make_shared<Seen>();
  auto sub_mine = observe(mine.value(), seen_mine);
  auto sub_theirs = observe(theirs.value(), seen_theirs);
  failures += check(sub_mine.ok() && sub_theirs.ok(), "coverage: on_queue_state_change subscribes");
  // The next two polls (this sample's: nothing else is in flight) answer try_again with a
  // paused queue state.
  std::string fault = emulator_request(
      base_url, "POST", "faults",
      R"({"path":"/api/v1/retrieve_future","status":200,"count":2,"body":{"type":"try_again",)"
      R"("request_id":"x","queue_state":"paused_capacity","queue_state_reason":"busy"}})");
  failures += check(fault.find(" 200 ") != std::string::npos, "coverage: fault installed");
  failures += check(ok(mine.value().sample(kSample).get()), "coverage: sample, paused queue");
  // Events arrive on the dispatcher thread, possibly after the result.
  failures += check(seen_mine->wait_for("paused_capacity", "busy", std::chrono::seconds(10)),
                    "coverage: on_queue_state_change is called");
  failures += check(seen_theirs->count() == 0, "coverage: only the sampler of the request is told");

  // A sampler rebuilt from a handle has no service client whose events could be observed.
  auto handle = mine.value().get_sampler_handle();
  if (handle) {
    auto clone = tinkex::SamplingClient::from_sampler_handle(
        rt, handle.value().substr(1, handle.value().size() - 2), config);
    failures += check(clone.ok() && clone.value().on_queue_state_change(nullptr).status() ==
                                         TINKEX_STATUS_WRONG_STATE,
                      "coverage: no on_queue_state_change without a service client");
  }
  return failures;
}

}  // namespace

int run_coverage(const tinkex::Runtime &rt, const std::string &base_url) {
  int failures = 0;
  std::string config = "{\"api_key\":\"tml-cpp-test\",\"base_url\":\"" + base_url +
                       "\",\"telemetry\":true}";
  auto service = tinkex::ServiceClient::create(rt, config);
  if (!service) return check(false, "coverage: service");
  const tinkex::ServiceClient &svc = service.value();

  // Telemetry: null before the session, then the core's counters (a JSON object).
  failures += check(no_counters(svc.get_telemetry()), "coverage: no telemetry before the session");
  auto training =
      svc.create_lora_training_client(R"({"base_model":"Qwen/Qwen3-8B","lora_config":{"rank":8}})")
          .get();
  if (!training) return failures + check(false, "coverage: training client");
  tinkex::TrainingClient &t = training.value();
  failures += check(counters(svc.get_telemetry()), "coverage: service telemetry");
  failures += check(counters(t.get_telemetry()), "coverage: training telemetry");
  failures += check(!model_id(t).empty() && t.get_info().value() == t.info().value(),
                    "coverage: TrainingClient::get_info");

  // The optimizer flag of *_with_optimizer: steps survive only with the optimizer state.
  failures += check(ok(t.optim_step(R"({"learning_rate":0.001})").get()), "coverage: step 1");
  auto saved = t.save_state(R"({"path":"cpp-cov"})").get();
  std::string path = saved.ok() ? string_after(saved.value(), "path") : "";
  failures += check(!path.empty(), "coverage: save_state");
  failures += check(ok(t.optim_step(R"({"learning_rate":0.001})").get()), "coverage: step 2");
  failures += check(optimizer_steps(base_url, t) == 2, "coverage: two steps");
  std::string path_json = object("path", path);
  failures += check(ok(t.load_state_with_optimizer(path_json).get()) &&
                        optimizer_steps(base_url, t) == 1,
                    "coverage: load_state_with_optimizer restores the optimizer");
  failures += check(ok(t.load_state(path_json).get()) && optimizer_steps(base_url, t) == 0,
                    "coverage: load_state resets it");
  auto restored = svc.create_training_client_from_state_with_optimizer(path_json).get();
  failures += check(restored.ok() && optimizer_steps(base_url, restored.value()) == 1,
                    "coverage: create_training_client_from_state_with_optimizer");
  auto weights_only = svc.create_training_client_from_state(path_json).get();
  failures += check(weights_only.ok() && optimizer_steps(base_url, weights_only.value()) == 0,
                    "coverage: create_training_client_from_state without the optimizer");
  // resume_training_run: a new model from the run's latest training checkpoint (cpp-cov,
  // saved after one step), optimizer state included by default.
  std::string run_id = model_id(t);
  auto resumed = svc.resume_training_run(object("training_run_id", run_id)).get();
  failures += check(resumed.ok() && model_id(resumed.value()) != run_id &&
                        optimizer_steps(base_url, resumed.value()) == 1,
                    "coverage: resume_training_run from the latest checkpoint");
  failures += check(svc.resume_training_run(R"({"run":"x"})").get().status() ==
                        TINKEX_STATUS_INVALID_JSON,
                    "coverage: resume_training_run with an unknown field");
  std::string twice = path_json.substr(0, path_json.size() - 1) + R"(,"optimizer":false})";
  failures += check(svc.create_training_client_from_state_with_optimizer(twice).get().status() ==
                        TINKEX_STATUS_INVALID_JSON,
                    "coverage: optimizer given twice");
  failures += check(t.load_state_with_optimizer("[]").get().status() == TINKEX_STATUS_INVALID_JSON,
                    "coverage: load_state_with_optimizer of a non-object");

  // Sampling clients: from the training client, joined by session id, base model, telemetry.
  auto named = t.save_weights_for_sampler(R"({"path":"cpp-cov-s"})").get();
  std::string model_path = named.ok() ? string_after(named.value(), "path") : "";
  auto from_training = t.create_sampling_client(object("model_path", model_path)).get();
  failures += check(from_training.ok(), "coverage: TrainingClient::create_sampling_client");
  if (from_training) {
    tinkex::SamplingClient &sc = from_training.value();
    auto base = sc.get_base_model();
    failures += check(base.ok() && base.value() == "Qwen/Qwen3-8B", "coverage: get_base_model");
    failures += check(counters(sc.get_telemetry()), "coverage: sampling telemetry");
    std::string sid = string_after(sc.info().value(), "sampling_session_id");
    auto joined = tinkex::SamplingClient::create(svc, object("sampling_session_id", sid)).get();
    failures += check(joined.ok() && string_after(joined.value().info().value(),
                                                  "sampling_session_id") == sid,
                      "coverage: SamplingClient::create joins a sampling session");
    if (joined)
      failures += check(ok(joined.value().sample(kSample).get()), "coverage: joined client samples");
    auto ignore = [](const std::string &, const std::optional<std::string> &) {};
    failures += check(sc.clone().on_queue_state_change(ignore).ok(),
                      "coverage: a clone keeps the service client");
  }
  tinkex::TrainingClient bare(tinkex_training_client_clone(t.get()));
  failures += check(bare.create_sampling_client(kBaseModel).get().status() ==
                        TINKEX_STATUS_WRONG_STATE,
                    "coverage: create_sampling_client needs the service client");

  // REST and admin clients: the service's telemetry, or none for session-less holders.
  auto rest = svc.create_rest_client();
  failures += check(rest.ok() && counters(rest.value().get_telemetry()), "coverage: REST telemetry");
  auto sessionless = tinkex::RestClient::create(rt, config);
  failures += check(sessionless.ok() && no_counters(sessionless.value().get_telemetry()),
                    "coverage: session-less rest telemetry");
  auto admin = tinkex::AdminClient::create(rt, config);
  failures += check(admin.ok() && no_counters(admin.value().get_telemetry()),
                    "coverage: admin telemetry");

  failures += run_queue_state(svc, base_url, rt, config);
  (void)svc.close().get();
  std::printf("C++ coverage: %d failed\n", failures);
  return failures;
}
