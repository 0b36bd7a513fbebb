// The C ABI functions that tinkex.hpp wraps beyond the official methods: waiting on and
// inspecting a Pending (tinkex_future_wait / _is_done / _request_id), errors as
// tinkex::Exception (kind, status, request id, category), the log sink, the service
// client's session id, tinker path parsing and forward over a datum batch.
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

const char kSample[] = R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]},)"
                       R"("num_samples":1,"sampling_params":{"max_tokens":2}})";

// The log lines a sink received, with a wait on the condition.
struct Lines {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<tinkex_log_level, std::string>> lines;

  void add(tinkex_log_level level, std::string_view message) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(level, std::string(message));
    cv.notify_all();
  }
  bool wait_for(const std::string &message, std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, limit, [&] {
      for (const auto &l : lines)
        if (l.second == message) return true;
      return false;
    });
  }
  bool has(const std::string &message) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto &l : lines)
      if (l.second == message) return true;
    return false;
  }
};

/// Emits one library log line (TINKEX_TESTING export).
bool emit(tinkex_log_level level, const std::string &message) {
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_testing_log(static_cast<int32_t>(level),
                                       reinterpret_cast<const uint8_t *>(message.data()),
                                       message.size(), &err);
  tinkex_error_free(err);
  return s == TINKEX_STATUS_OK;
}

/// Polls `done` until it holds or `limit` passes (for state with no notification: the
/// release of a sink's function happens on the dispatcher thread).
template <class F>
bool eventually(F done, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int run_log_sink(const tinkex::Runtime &rt) {
  int failures = 0;
  auto lines = std::make_shared<Lines>();
  std::weak_ptr<Lines> watch = lines;
  auto set = rt.set_log_sink(
      [lines](tinkex_log_level level, std::string_view, std::string_view message) {
        lines->add(level, message);
      },
      TINKEX_LOG_LEVEL_WARN);
  failures += check(set.ok(), "surface: set_log_sink");
  failures += check(emit(TINKEX_LOG_LEVEL_WARN, "cpp sink warn"), "surface: emit warn");
  failures += check(emit(TINKEX_LOG_LEVEL_DEBUG, "cpp sink debug"), "surface: emit debug");
  failures += check(emit(TINKEX_LOG_LEVEL_ERROR, "cpp sink error"), "surface: emit error");
  // Lines arrive in emission order, so once the last one is seen the debug line (above
  // max_level) is known to have been dropped.
  failures += check(lines->wait_for("cpp sink error", std::chrono::seconds(10)),
                    "surface: the sink receives lines up to max_level");
  failures += check(lines->has("cpp sink warn") && !lines->has("cpp sink debug"),
                    "surface: lines above max_level are not delivered");
  lines.reset();
  failures += check(rt.clear_log_sink().ok(), "surface: clear_log_sink");
  // The sink's function (and the Lines it holds) is destroyed after its last call.
  failures += check(eventually([&] { return watch.expired(); }, std::chrono::seconds(10)),
                    "surface: the removed sink is released");
  auto bad = rt.set_log_sink([](tinkex_log_level, std::string_view, std::string_view) {},
                             static_cast<tinkex_log_level>(42));
  failures += check(bad.status() == TINKEX_STATUS_INVALID_ARG,
                    "surface: an unknown max_level is INVALID_ARG");
  return failures;
}

int run_pending(const tinkex::ServiceClient &svc, const std::string &base_url) {
  int failures = 0;
  auto sampler = svc.create_sampling_client(R"({"base_model":"Qwen/Qwen3-8B"})").get();
  if (!sampler) return check(false, "surface: sampling client");
  auto &sc = sampler.value();

  // A finished sample: done, its request id known, its value readable.
  auto done = sc.sample(kSample);
  auto settled = done.wait(std::chrono::seconds(60));
  failures += check(settled.ok() && settled.value(), "surface: wait settles a sample");
  failures += check(done.is_done(), "surface: is_done after wait");
  auto rid = done.request_id();
  failures += check(rid && !rid->empty(), "surface: request_id of a sample");
  try {
    std::string json = done.value();
    failures += check(json.find("\"sequences\"") != std::string::npos, "surface: value()");
  } catch (const tinkex::Exception &e) {
    failures += check(false, "surface: value() of a finished sample threw");
  }

  // A sample the emulator holds: not done, wait(0) times out, cancel settles it.
  std::string fault = emulator_request(base_url, "POST", "faults",
                                       R"({"path":"/api/v1/asample","latency_ms":30000,"count":1})");
  failures += check(fault.find(" 200 ") != std::string::npos, "surface: fault installed");
  auto held = sc.sample(kSample);
  failures += check(!held.is_done(), "surface: a held sample is not done");
  auto zero = held.wait(std::chrono::milliseconds(0));
  failures += check(zero.ok() && !zero.value(), "surface: wait(0) on a held sample is false");
  failures += check(!held.request_id(), "surface: no request id before acceptance");
  held.cancel();
  auto after = held.wait(std::chrono::seconds(10));
  failures += check(after.ok() && after.value() && held.is_done(), "surface: cancel settles");
  try {
    (void)held.value();
    failures += check(false, "surface: value() of a cancelled sample throws");
  } catch (const tinkex::Exception &e) {
    failures += check(e.status() == TINKEX_STATUS_CANCELLED && e.category().empty(),
                      "surface: the exception carries CANCELLED");
  }
  emulator_request(base_url, "DELETE", "faults");
  return failures;
}

int run_errors_and_batches(const tinkex::ServiceClient &svc) {
  int failures = 0;
  auto created =
      svc.create_lora_training_client(R"({"base_model":"Qwen/Qwen3-8B","lora_config":{"rank":4}})")
          .get();
  if (!created) return check(false, "surface: training client");
  auto &t = created.value();

  // The session exists now.
  auto sid = svc.session_id();
  failures += check(sid.ok() && !sid.value().empty(), "surface: session_id after create");

  // A failure the server reports (the emulator rejects cispo): kind, category, request id.
  std::string cispo = make_batch_json();
  cispo.replace(cispo.rfind("cross_entropy"), 13, "cispo");
  try {
    (void)t.forward_backward(cispo).value();
    failures += check(false, "surface: a rejected loss throws");
  } catch (const tinkex::Exception &e) {
    failures += check(e.kind() == "user" && e.category() == "user" && !e.request_id().empty() &&
                          e.status() == TINKEX_STATUS_USER,
                      "surface: server failure → Exception(kind user, category user, request id)");
    failures += check(std::string(e.what()).find("cispo") != std::string::npos,
                      "surface: what() names the cause");
  }
  // A local failure: invalid JSON never reaches the server.
  try {
    (void)t.forward("{not json").value();
    failures += check(false, "surface: invalid JSON throws");
  } catch (const tinkex::Exception &e) {
    failures += check(e.status() == TINKEX_STATUS_INVALID_JSON && e.category().empty() &&
                          e.request_id().empty(),
                      "surface: invalid JSON → Exception(INVALID_JSON)");
  }

  // forward over a datum batch equals forward over the same data as JSON; a clone of the
  // batch is the same batch.
  auto by_json = t.forward(make_batch_json()).get();
  tinkex::DatumBatch batch = make_datum_batch();
  tinkex::DatumBatch same = batch.clone();
  failures += check(same.size() == batch.size() && same.size() > 0, "surface: DatumBatch::clone");
  auto by_batch = t.forward(same, R"({"loss_fn":"cross_entropy"})").get();
  failures += check(by_json.ok() && by_batch.ok(), "surface: forward (JSON and batch)");
  if (by_json.ok() && by_batch.ok()) {
    double a = number_after(by_json.value(), "loss:sum"),
           b = number_after(by_batch.value(), "loss:sum");
    failures += check(a > 0 && a == b, "surface: forward(batch) loss equals forward(JSON) loss");
  }
  return failures;
}

}  // namespace

int run_surface(const tinkex::Runtime &rt, const std::string &base_url) {
  int failures = run_log_sink(rt);

  auto parsed = tinkex::parse_tinker_path("tinker://run-1/weights/step-7");
  failures += check(parsed.ok() &&
                        parsed.value().find(R"("checkpoint_id":"weights/step-7")") !=
                            std::string::npos &&
                        parsed.value().find(R"("training_run_id":"run-1")") != std::string::npos,
                    "surface: parse_tinker_path");
  failures += check(tinkex::parse_tinker_path("http://run-1/weights/x").status() ==
                        TINKEX_STATUS_INVALID_ARG,
                    "surface: an invalid tinker path is INVALID_ARG");

  std::string config = "{\"api_key\":\"tml-cpp-test\",\"base_url\":\"" + base_url +
                       "\",\"telemetry\":false}";
  auto svc = tinkex::ServiceClient::create(rt, config);
  if (!svc) return failures + check(false, "surface: service");
  failures += check(svc.value().session_id().status() == TINKEX_STATUS_WRONG_STATE,
                    "surface: session_id before the session exists is WRONG_STATE");
  failures += check(tinkex::version_number() == TINKEX_VERSION_NUMBER, "surface: version_number");

  // An HTTP error keeps the server's body (and its status) on the Error.
  std::string fault = emulator_request(
      base_url, "POST", "faults",
      R"({"path":"/api/v1/get_server_capabilities","status":400,"count":1,)"
      R"("body":{"detail":"bad request from the C++ test"}})");
  failures += check(fault.find(" 200 ") != std::string::npos, "surface: 400 fault installed");
  auto caps = svc.value().get_server_capabilities().get();
  failures += check(!caps.ok() && caps.error().http_status == 400 &&
                        caps.error().body.find("bad request from the C++ test") != std::string::npos,
                    "surface: Error carries the HTTP status and body");
  failures += run_pending(svc.value(), base_url);
  failures += run_errors_and_batches(svc.value());
  return failures;
}
