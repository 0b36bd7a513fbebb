// Second translation unit: includes both headers again (ODR / double-include check) and
// runs the training loop through tinkex.hpp.
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <algorithm>
#include <atomic>
#include <cmath>
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
    // Typed results: the same seeded request typed and as JSON give the same tokens.
    const char *req = R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]},)"
                      R"("num_samples":2,"prompt_logprobs":true,)"
                      R"("sampling_params":{"max_tokens":4,"seed":5}})";
    auto as_json = sampler.value().sample(req).get();
    auto typed = sampler.value().sample_typed(req).get();
    failures += check(as_json.ok() && typed.ok(), "sample_typed");
    if (as_json.ok() && typed.ok()) {
      const tinkex::SampleResult &r = typed.value();
      failures += check(r.num_sequences() == 2, "typed: two sequences");
      std::string tokens_text;
      for (size_t i = 0; i < r.num_sequences(); i++) {
        auto toks = r.tokens(i);
        auto lps = r.logprobs(i);
        failures += check(toks.ok() && toks.value().size == 4, "typed: tokens");
        failures += check(lps.ok() && lps.value().present() && lps.value().size == 4,
                          "typed: logprobs");
        if (!toks.ok()) continue;
        tokens_text += "\"tokens\":[";
        for (size_t j = 0; j < toks.value().size; j++)
          tokens_text += (j ? "," : "") + std::to_string(toks.value()[j]);
        tokens_text += "]";
        failures += check(as_json.value().find(tokens_text) != std::string::npos,
                          "typed tokens equal the JSON result's");
        tokens_text.clear();
      }
      failures += check(!r.tokens(2).ok() && r.tokens(2).status() == TINKEX_STATUS_INVALID_ARG,
                        "typed: index out of range");
      auto plp = r.prompt_logprobs();
      failures += check(plp.present() && plp.size == 3 && std::isnan(plp[0]),
                        "typed: prompt logprobs with NaN for null");
      failures += check(!r.target_prompt_logprobs().valid(), "typed: absent tensor");
      auto alt = r.prompt_alt_tokens();
      failures += check(!alt.first.valid() && !alt.second.valid(), "typed: no prompt alternatives");
      auto sid = r.sequence_id(0);
      failures += check(sid.ok() && !sid.value().empty() &&
                            r.json().value().find(std::string(sid.value())) != std::string::npos,
                        "typed: sequence_id (the one of the result's own JSON)");
      failures += check(!r.sequence_id(2).ok(), "typed: sequence_id out of range");
      failures += check(!r.has_topk(0) && !r.has_topk_prompt_logprobs(), "typed: no top-k");
      failures += check(r.prompt_cache_hit_tokens() >= 0, "typed: prompt_cache_hit_tokens");
      auto own = r.json();
      failures += check(own.ok() && own.value().find("sequence_id") != std::string::npos,
                        "typed: json()");
    }
    tinkex_sample_params params = tinkex::SamplingClient::default_sample_params();
    params.num_samples = 2;
    params.max_tokens = 4;
    params.seed = 5;
    params.has_seed = true;
    params.prompt_logprobs = true;
    auto by_tokens = sampler.value().sample_tokens({1, 2, 3}, params).get();
    failures += check(by_tokens.ok() && typed.ok(), "sample_tokens");
    if (by_tokens.ok() && typed.ok()) {
      for (size_t i = 0; i < 2; i++) {
        auto a = by_tokens.value().tokens(i), b = typed.value().tokens(i);
        failures += check(a.ok() && b.ok() && a.value().size == b.value().size &&
                              std::equal(a.value().begin(), a.value().end(), b.value().begin()),
                          "sample_tokens equals the JSON request's draw");
      }
    }
    auto lp = sampler.value()
                  .compute_logprobs_typed(
                      R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[1,2,3]}]}})")
                  .get();
    failures += check(lp.ok() && lp.value().values().size == 3 &&
                          std::isnan(lp.value().values()[0]),
                      "compute_logprobs_typed");
    failures += check(lp.ok() && lp.value().json().ok() &&
                          lp.value().json().value().rfind("[null,", 0) == 0,
                      "compute_logprobs_typed: json()");
  }
  {
    auto batch = make_batch(seqs);
    if (!batch) return failures + check(false, "batch");
    auto fwd = t.forward_typed(batch.value(), R"({"loss_fn":"cross_entropy"})").get();
    failures += check(fwd.ok(), "forward_typed");
    if (fwd.ok()) {
      const tinkex::ForwardResult &r = fwd.value();
      failures += check(r.num_datums() == kSeqs, "typed: one output map per datum");
      auto lps = r.output(0, "logprobs");
      failures += check(lps.ok() && lps.value().valid() &&
                            lps.value().dtype() == TINKEX_DTYPE_FLOAT32 &&
                            lps.value().floats().size == kLen - 1,
                        "typed: logprobs tensor");
      auto all = r.outputs(0);
      failures += check(all.ok() && !all.value().empty(), "typed: outputs");
      failures += check(!r.outputs(kSeqs).ok(), "typed: datum out of range");
      auto own = r.json();
      failures += check(own.ok() && own.value().find("loss_fn_outputs") != std::string::npos,
                        "typed: forward json()");
      auto m = r.metrics();
      failures += check(m.count("loss:sum") == 1, "typed: metrics");
      failures += check(!r.output_type().empty() &&
                            own.value().find(std::string(r.output_type())) != std::string::npos,
                        "typed: output_type");
    }
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
