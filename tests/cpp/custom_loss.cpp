// Client-side custom loss through tinkex.hpp (PROTOCOL 11.6): the loss value and the
// gradient's sign reach the server; a throwing loss aborts the pass with a clear error and
// poisons the client; nothing crashes.
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kSeqs = 4;
constexpr int kLen = 25;

}  // namespace

tinkex::DatumBatch make_datum_batch() {
  auto batch = tinkex::DatumBatch::create();
  std::vector<float> weights(kLen - 1, 1.0f);
  for (int d = 0; d < kSeqs; d++) {
    std::vector<int64_t> s(kLen);
    for (int i = 0; i < kLen; i++) s[i] = 100000 + (d * 7919 + i * 104729) % 50000;
    std::vector<int64_t> input(s.begin(), s.end() - 1), target(s.begin() + 1, s.end());
    (void)batch.value().push(input);
    (void)batch.value().set_loss_input("target_tokens", target);
    (void)batch.value().set_loss_input("weights", weights);
  }
  return std::move(batch).value();
}

namespace {

// Cross-entropy as a custom loss, scaled by `sign`: loss = -sign * sum(logprobs).
tinkex::CustomLossOutput ce(const std::vector<std::vector<float>> &logprobs, float sign) {
  tinkex::CustomLossOutput out;
  for (const auto &l : logprobs) {
    for (float x : l) out.loss -= sign * x;
    out.grads.emplace_back(l.size(), -sign);
  }
  out.metrics["custom_metric"] = 0.5;
  return out;
}

double forward_loss(const tinkex::TrainingClient &t) {
  auto r = t.forward(make_batch_json()).get();
  return r.ok() ? number_after(r.value(), "loss:sum") : -1.0;
}

}  // namespace

std::string make_batch_json() {
  std::string data = "[";
  for (int d = 0; d < kSeqs; d++) {
    std::string tokens, targets, weights;
    for (int i = 0; i < kLen; i++) {
      long tok = 100000 + (d * 7919 + i * 104729) % 50000;
      if (i < kLen - 1) tokens += (tokens.empty() ? "" : ",") + std::to_string(tok);
      if (i > 0) {
        targets += (targets.empty() ? "" : ",") + std::to_string(tok);
        weights += weights.empty() ? "1.0" : ",1.0";
      }
    }
    data += std::string(d ? "," : "") + R"({"model_input":{"chunks":[{"type":"encoded_text","tokens":[)" +
            tokens + R"(]}]},"loss_fn_inputs":{"target_tokens":{"data":[)" + targets +
            R"(],"dtype":"int64"},"weights":{"data":[)" + weights + R"(],"dtype":"float32"}}})";
  }
  return R"({"data":)" + data + R"(],"loss_fn":"cross_entropy"})";
}

int run_custom_loss(const tinkex::Runtime &rt, const std::string &base_url) {
  int failures = 0;
  std::string config = "{\"api_key\":\"tml-cpp-test\",\"base_url\":\"" + base_url +
                       "\",\"telemetry\":false}";
  auto svc = tinkex::ServiceClient::create(rt, config);
  if (!svc) return check(false, "custom loss: service");
  auto make_client = [&]() {
    return svc.value()
        .create_lora_training_client(R"({"base_model":"Qwen/Qwen3-8B","lora_config":{"rank":8}})")
        .get();
  };
  auto training = make_client();
  if (!training) return check(false, "custom loss: training client");
  tinkex::TrainingClient &t = training.value();

  double before = forward_loss(t);
  size_t seen_datums = 0;
  auto fb = t.forward_backward_custom(make_datum_batch(), [&](const auto &logprobs) {
    seen_datums = logprobs.size();
    return ce(logprobs, 1.0f);
  });
  auto opt = t.optim_step(R"({"learning_rate":0.01})");  // runs after the backward
  auto out = fb.get();
  auto stepped = opt.get();
  failures += check(out.ok() && stepped.ok(), "custom loss: step ok");
  if (!out.ok()) std::fprintf(stderr, "custom loss: %s\n", out.error().message.c_str());
  failures += check(seen_datums == kSeqs, "custom loss: one logprobs vector per datum");
  if (out.ok()) {
    double reported = number_after(out.value(), "loss:sum");
    failures += check(std::abs(reported - before) <= 1e-3 * std::abs(before),
                      "custom loss: loss:sum is the custom loss");
    failures += check(out.value().find("surrogate_loss:sum") != std::string::npos,
                      "custom loss: surrogate_loss:sum");
    failures += check(number_after(out.value(), "custom_metric") == 0.5, "custom loss: metric");
  }
  double after = forward_loss(t);
  failures += check(after < before, "custom loss: descent lowers the cross-entropy");
  auto up = t.forward_backward_custom(make_datum_batch(), [](const auto &l) { return ce(l, -1.0f); });
  auto opt2 = t.optim_step(R"({"learning_rate":0.01})");
  failures += check(up.get().ok() && opt2.get().ok(), "custom loss: ascent step ok");
  failures += check(forward_loss(t) > after, "custom loss: ascent raises the cross-entropy");

  // A throwing loss: a USER error naming the cause; the client is poisoned; no crash.
  auto bad = t.forward_backward_custom(make_datum_batch(), [](const auto &) -> tinkex::CustomLossOutput {
    throw std::runtime_error("boom in the loss");
  });
  auto bad_result = bad.get();
  failures += check(!bad_result.ok() && bad_result.status() == TINKEX_STATUS_USER &&
                        bad_result.error().message.find("boom in the loss") != std::string::npos,
                    "custom loss: a throw aborts with the cause");
  auto later = t.forward(make_batch_json()).get();
  failures += check(!later.ok() && later.status() == TINKEX_STATUS_USER &&
                        later.error().message.find("boom in the loss") != std::string::npos,
                    "custom loss: the client is poisoned");

  // Wrong gradient shapes abort too.
  auto fresh = make_client();
  if (fresh) {
    auto wrong = fresh.value().forward_backward_custom(make_datum_batch(), [](const auto &l) {
      tinkex::CustomLossOutput o;
      o.grads.resize(l.size() - 1);
      return o;
    });
    auto w = wrong.get();
    failures += check(!w.ok() && w.error().message.find("3 gradients for 4 datums") != std::string::npos,
                      "custom loss: wrong gradient count");
  }
  // An empty batch is rejected at submit: a ready Pending with the error.
  auto empty = tinkex::DatumBatch::create();
  auto rejected = t.forward_backward_custom(empty.value(), [](const auto &l) { return ce(l, 1.0f); });
  failures += check(!rejected.get().ok(), "custom loss: empty batch rejected");
  std::printf("C++ custom loss: %d failed\n", failures);
  return failures;
}
