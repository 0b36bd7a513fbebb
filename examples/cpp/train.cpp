// train.cpp: the C++ quick start of libtinkex (the header-only wrapper tinkex.hpp).
//
// Fine-tunes a LoRA adapter on one sentence for a few steps, then samples from the trained
// weights. The service comes from the environment: an empty client configuration falls back
// to TINKER_BASE_URL and TINKER_API_KEY. Build with examples/cpp/CMakeLists.txt (CMake) or
//   c++ -std=c++17 train.cpp $(pkg-config --cflags --libs tinkex)
// Exits non-zero unless every call succeeded and the loss fell.
#include <tinkex.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kSteps = 8;
const char kText[] = "C++ programs train LoRA adapters through tinkex.hpp.";

// Reports a failed call; returns the process's exit status.
int failed(const char *what, const tinkex::Error &e) {
  std::fprintf(stderr, "%s failed: %s: %s\n", what, e.status_name(), e.message.c_str());
  return 1;
}

// The "loss:sum" metric of a forward_backward result (JSON text).
double loss_sum(const std::string &result) {
  const std::string key = "\"loss:sum\":";
  const size_t at = result.find(key);
  return at == std::string::npos ? -1.0 : std::strtod(result.c_str() + at + key.size(), nullptr);
}

}  // namespace

int main() {
  // Byte-level tokens: input token i predicts token i + 1.
  std::vector<int64_t> tokens(std::begin(kText), std::end(kText) - 1);
  const std::vector<int64_t> inputs(tokens.begin(), tokens.end() - 1);
  const std::vector<int64_t> targets(tokens.begin() + 1, tokens.end());
  const std::vector<float> weights(targets.size(), 1.0f);

  auto runtime = tinkex::Runtime::create();
  if (!runtime) return failed("runtime", runtime.error());
  auto service = tinkex::ServiceClient::create(runtime.value(), "{}");
  if (!service) return failed("service client", service.error());
  auto training =
      service.value().create_lora_training_client(R"({"base_model":"Qwen/Qwen3-8B"})").get();
  if (!training) return failed("create_lora_training_client", training.error());

  double first = 0.0, last = 0.0;
  for (int step = 0; step < kSteps; step++) {
    auto batch = tinkex::DatumBatch::create();
    if (!batch) return failed("datum batch", batch.error());
    tinkex::DatumBatch &b = batch.value();
    if (auto r = b.push(inputs); !r) return failed("push", r.error());
    if (auto r = b.set_loss_input("target_tokens", targets); !r) return failed("targets", r.error());
    if (auto r = b.set_loss_input("weights", weights); !r) return failed("weights", r.error());
    // Submitted back to back; the client sends them in this order.
    auto fwd_bwd = training.value().forward_backward(b, R"({"loss_fn":"cross_entropy"})");
    auto optim = training.value().optim_step(R"({"learning_rate":0.001})");
    auto result = fwd_bwd.get();
    if (!result) return failed("forward_backward", result.error());
    if (auto stepped = optim.get(); !stepped) return failed("optim_step", stepped.error());
    last = loss_sum(result.value()) / static_cast<double>(targets.size());
    if (step == 0) first = last;
    std::printf("step %d  loss %.4f\n", step, last);
  }

  auto sampler = training.value().save_weights_and_get_sampling_client().get();
  if (!sampler) return failed("save_weights_and_get_sampling_client", sampler.error());
  auto sample = sampler.value()
                    .sample(R"({"prompt":{"chunks":[{"type":"encoded_text","tokens":[67,43,43]}]},)"
                            R"("num_samples":1,"sampling_params":{"max_tokens":8}})")
                    .get();
  if (!sample) return failed("sample", sample.error());
  std::printf("sample: %s\n", sample.value().c_str());

  if (auto closed = service.value().close().get(); !closed) return failed("close", closed.error());
  std::printf("loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
