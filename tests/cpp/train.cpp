// Second translation unit: includes both headers again (ODR / double-include check) and
// runs the training loop through tinkex.hpp.
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

double number_after(const std::string &json, const std::string &key) {
  auto pos = json.find("\"" + key + "\":");
  if (pos == std::string::npos) return 0.0;
  return std::strtod(json.c_str() + pos + key.size() + 3, nullptr);
}

namespace {

constexpr int kSeqs = 4;
constexpr int kLen = 25;
constexpr int kSteps = 12;


tinkex::Result<tinkex::DatumBatch> make_batch(const std::vector<std::vector<int32_t>> &seqs) {
  auto batch = tinkex::DatumBatch::create();
  if (!batch) return batch;
  std::vector<float> weights(kLen - 1, 1.0f);
  for (const auto &s : seqs) {
    std::vector<int32_t> input(s.begin(), s.end() - 1), target(s.begin() + 1, s.end());
    if (auto r = batch.value().push(input); !r) return r.error();
    if (auto r = batch.value().set_loss_input("target_tokens", target); !r) return r.error();
    if (auto r = batch.value().set_loss_input("weights", weights, {kLen - 1}); !r)
      return r.error();
  }
  return batch;
}

}  // namespace

int run_training(const tinkex::Runtime &rt, const std::string &base_url) {
  int failures = 0;
  std::string config = "{\"api_key\":\"tml-cpp-test\",\"base_url\":\"" + base_url +
                       "\",\"telemetry\":false,\"retry\":{\"base_delay_ms\":10,"
                       "\"max_delay_ms\":100,\"min_poll_duration_ms\":50}}";
  auto svc = tinkex::ServiceClient::create(rt, config);
  if (!svc) {
    std::fprintf(stderr, "service: %s\n", svc.error().message.c_str());
    return 1;
  }
  // Shared ownership: an event already queued may still be delivered after the
  // Subscription is destroyed.
  auto events = std::make_shared<std::atomic<int>>(0);
  auto sub = svc.value().subscribe([events](const tinkex::Event &e) {
    if (!e.json.empty()) (*events)++;
  });
  failures += check(sub.ok(), "subscribe");

  auto caps = svc.value().get_server_capabilities().get();
  failures += check(caps.ok() && caps.value().find("Qwen/Qwen3-8B") != std::string::npos,
                    "capabilities");

  auto training = svc.value()
                      .create_lora_training_client(
                          R"({"base_model":"Qwen/Qwen3-8B","lora_config":{"rank":8}})")
                      .get();
  if (!training) {
    std::fprintf(stderr, "training client: %s\n", training.error().message.c_str());
    return failures + 1;
  }
  tinkex::TrainingClient &t = training.value();

  std::vector<std::vector<int32_t>> seqs(kSeqs, std::vector<int32_t>(kLen));
  for (int d = 0; d < kSeqs; d++)
    for (int i = 0; i < kLen; i++) seqs[d][i] = 100000 + (d * 7919 + i * 104729) % 50000;

  double first = 0, last = 0;
  for (int step = 0; step < kSteps; step++) {
    auto batch = make_batch(seqs);
    if (!batch) return failures + check(false, "batch");
    // Both submitted before either is awaited: they go out in order.
    auto fb = t.forward_backward(std::move(batch).value(), R"({"loss_fn":"cross_entropy"})");
    auto opt = t.optim_step(R"({"learning_rate":0.001})");
    auto out = fb.get();
    auto stepped = opt.get();
    if (!out || !stepped) {
      std::fprintf(stderr, "step %d: %s\n", step,
                   (!out ? out.error() : stepped.error()).message.c_str());
      return failures + 1;
    }
    last = number_after(out.value(), "loss:sum") / (kSeqs * (kLen - 1));
    if (step == 0) first = last;
  }
  std::printf("C++ loop: loss %.4f -> %.4f\n", first, last);
  failures += check(first > 0 && last < 0.8 * first, "loss falls");

  auto save = t.save_state(R"({"path":"cpp-final"})");
  auto saved = save.get();
  failures += check(saved.ok() && saved.value().find("cpp-final") != std::string::npos, "save");

  auto sampler = t.save_weights_and_get_sampling_client().get();
  failures += check(sampler.ok(), "sampling client");
  if (sampler) {
    auto sample = sampler.value()
                      .sample(R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2]}]},)"
                              R"("num_samples":2,"sampling_params":{"max_tokens":3}})")
                      .get();
    failures += check(sample.ok() && sample.value().find("sequences") != std::string::npos,
                      "sample");
  }

  // A failed submission is a ready Pending holding the error; no callback involved.
  auto bad = t.optim_step("{not json");
  auto bad_result = bad.get();
  failures += check(!bad_result.ok() && bad_result.status() == TINKEX_STATUS_INVALID_JSON,
                    "invalid JSON is an error result");

  auto closed = svc.value().close().get();
  failures += check(closed.ok(), "close");
  return failures;
}
