// The C++ driver of the parity suite (tests/parity, docs/parity.md): runs one scenario's line
// form through bindings/cpp/tinkex.hpp (RAII clients, Pending<T> futures, tinkex::Error) and
// prints the transcript lines ("@@ " + JSON) on stdout.
//
//   driver_cpp SCENARIO.tsv BASE_URL

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

#include "tinkex.hpp"

namespace {

using tinkex::Pending;
using tinkex::Result;
using tinkex::SamplingClient;
using tinkex::TrainingClient;
using Future = std::variant<Pending<std::string>, Pending<TrainingClient>, Pending<SamplingClient>>;

constexpr std::chrono::milliseconds kOpWait{120000};

std::string quote(const std::string &s) { return tinkex::detail::json_quote(s); }

void emit(const std::string &json) {
  std::cout << "@@ " << json << "\n" << std::flush;
}

std::string error_json(const tinkex::Error &e) {
  return "{\"kind\":" + quote(e.kind.empty() ? e.status_name() : e.kind) +
         ",\"http_status\":" + std::to_string(e.http_status) + ",\"category\":" +
         (e.category.empty() ? std::string("null") : quote(e.category)) + "}";
}

// The suite's custom loss (every driver has the same): loss = -(sum of all target logprobs),
// gradient -1 everywhere; metric n_logprobs.
tinkex::CustomLossOutput suite_loss(const std::vector<std::vector<float>> &logprobs) {
  tinkex::CustomLossOutput out;
  double sum = 0;
  size_t n = 0;
  for (const auto &l : logprobs) {
    for (float x : l) sum += x;
    n += l.size();
    out.grads.emplace_back(l.size(), -1.0f);
  }
  out.loss = -sum;
  out.metrics["n_logprobs"] = static_cast<double>(n);
  return out;
}

struct Driver {
  tinkex::Runtime rt;
  std::optional<tinkex::ServiceClient> svc;
  std::optional<tinkex::RestClient> rest;
  std::optional<tinkex::Subscription> sub;
  std::map<std::string, TrainingClient> training;
  std::map<std::string, SamplingClient> sampling;
  std::map<std::string, Future> futures;
  std::map<std::string, std::string> future_op;
  std::mutex ev_mu;
  std::vector<std::string> events;

  explicit Driver(tinkex::Runtime r) : rt(std::move(r)) {}

  std::map<std::string, std::string> results;  // op index -> result JSON (for "$ref:<i>:<key>")

  void ok(const std::string &i, const std::string &op, const std::string &json) {
    results.emplace(i, json);
    line(i, op, "\"ok\":" + json);
  }

  // `args` with every "$ref:<i>:<key>" string replaced by that member of op i's result.
  std::string substitute(const std::string &args) {
    std::string out;
    size_t pos = 0;
    for (size_t at; (at = args.find("\"$ref:", pos)) != std::string::npos;) {
      out += args.substr(pos, at - pos);
      size_t colon = args.find(':', at + 6), close = args.find('"', at + 6);
      std::string i = args.substr(at + 6, colon - at - 6), key = args.substr(colon + 1, close - colon - 1);
      const std::string &res = results.at(i);
      tinkex::detail::JsonReader r(res);
      size_t v = r.member(0, key);
      out += res.substr(v, r.skip_value(v) - v);
      pos = close + 1;
    }
    return out + args.substr(pos);
  }

  void line(const std::string &i, const std::string &op, const std::string &body) {
    emit("{\"i\":" + i + ",\"op\":" + quote(op) + "," + body + "}");
  }

  template <class T>
  void finish(const std::string &i, const std::string &op, Result<T> r, const std::string &save_as) {
    if (!r) return line(i, op, "\"error\":" + error_json(r.error()));
    if constexpr (std::is_same_v<T, std::string>) {
      ok(i, op, r.value());
    } else {
      auto info = r.value().info();
      if (!info) return line(i, op, "\"error\":" + error_json(info.error()));
      if (!save_as.empty()) {
        if constexpr (std::is_same_v<T, TrainingClient>) training.insert_or_assign(save_as, std::move(r).value());
        else sampling.insert_or_assign(save_as, std::move(r).value());
      }
      ok(i, op, info.value());
    }
  }

  const TrainingClient &tc(const std::string &n) { return training.at(n); }
  const SamplingClient &sc(const std::string &n) { return sampling.at(n); }

  Future submit(const std::string &name, const std::string &target, const std::string &param,
                const std::string &args) {
    if (name == "capabilities") return svc->get_server_capabilities();
    if (name == "create_lora") return svc->create_lora_training_client(args);
    if (name == "from_state") return svc->create_training_client_from_state(args);
    if (name == "resume") return svc->resume_training_run(args);
    if (name == "create_sampling") return svc->create_sampling_client(args);
    if (name == "close") return svc->close(args);
    if (name == "copy_weights") return svc->copy_weights(args);
    if (name == "rest") {
      if (!rest) {
        auto r = svc->create_rest_client();
        if (!r) throw std::runtime_error("create_rest_client: " + r.error().message);
        rest.emplace(std::move(r).value());
      }
      return rest->call(param, args);
    }
    if (name == "forward_backward") return tc(target).forward_backward(args);
    if (name == "forward") return tc(target).forward(args);
    if (name == "optim_step") return tc(target).optim_step(args);
    if (name == "save_state") return tc(target).save_state(args);
    if (name == "save_weights_for_sampler") return tc(target).save_weights_for_sampler(args);
    if (name == "save_weights_external") return tc(target).save_weights_external(args);
    if (name == "load_state") return tc(target).load_state(args);
    if (name == "save_weights_and_get_sampling_client")
      return tc(target).save_weights_and_get_sampling_client(args);
    if (name == "forward_backward_custom") {
      auto batch = tinkex::DatumBatch::create();
      if (!batch) return tinkex::detail::failed<std::string>(batch.error());
      tinkex::detail::JsonReader r(args);
      for (size_t d : r.elements(r.member(0, "data"))) {
        auto s = batch.value().push_json(std::string_view(args).substr(d, r.skip_value(d) - d));
        if (!s) return tinkex::detail::failed<std::string>(s.error());
      }
      return tc(target).forward_backward_custom(batch.value(), suite_loss);
    }
    if (name == "sample") return sc(target).sample(args);
    if (name == "compute_logprobs") return sc(target).compute_logprobs(args);
    throw std::runtime_error("unknown op " + name);
  }

  void run(const std::vector<std::string> &f) {
    const std::string &i = f[0], &name = f[1], &target = f[2], &save_as = f[3], &param = f[4];
    bool wait = f[5] == "1";
    const std::string args = substitute(f[6]);
    if (name == "control") {
      emit("{\"control\":" + i + "}");
      std::string ack;
      if (!std::getline(std::cin, ack)) throw std::runtime_error("stdin closed during control");
      return;
    }
    if (name == "wait_event") {
      // Waits (bounded: 10 s) until an event of type `param` was received.
      std::string pat = "\"type\":\"" + param + "\"";
      bool found = false;
      for (int k = 0; k < 2000 && !found; k++) {
        {
          std::lock_guard<std::mutex> lock(ev_mu);
          for (const auto &e : events) found = found || e.find(pat) != std::string::npos;
        }
        if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      return line(i, "wait_event", std::string("\"ok\":") + (found ? "true" : "false"));
    }
    if (name == "await") {
      auto &fut = futures.at(target);
      auto t = param.empty() ? kOpWait : std::chrono::milliseconds(std::stoull(param));
      bool ready = std::visit([&](auto &p) { return p.wait_for(t); }, fut);
      if (!ready) return line(i, "await", "\"error\":{\"kind\":\"await_timeout\"}");
      std::visit([&](auto &p) { finish(i, "await", p.get(), save_as); }, fut);
      return;
    }
    if (name == "cancel") {
      std::visit([](auto &p) { p.cancel(); }, futures.at(target));
      return line(i, "cancel", "\"ok\":null");
    }
    Future fut = submit(name, target, param, args);
    // A submission refused at once is a Pending that is ready with the error.
    if (!wait) {
      bool refused = std::visit(
          [](auto &p) { return p.handle() == nullptr; }, fut);
      if (refused) {
        std::visit([&](auto &p) { finish(i, name, p.get(), save_as); }, fut);
        return;
      }
      futures.insert_or_assign(save_as, std::move(fut));
      return line(i, name, "\"submitted\":true");
    }
    bool ready = std::visit([](auto &p) { return p.wait_for(kOpWait); }, fut);
    if (!ready) throw std::runtime_error("operation " + i + " did not finish in time");
    std::visit([&](auto &p) { finish(i, name, p.get(), save_as); }, fut);
  }
};

std::vector<std::string> split(const std::string &s, size_t max) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < max) {
    size_t tab = s.find('\t', start);
    if (tab == std::string::npos) break;
    out.push_back(s.substr(start, tab - start));
    start = tab + 1;
  }
  out.push_back(s.substr(start));
  return out;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 3) {
    std::cerr << "usage: driver_cpp SCENARIO.tsv BASE_URL\n";
    return 1;
  }
  try {
    auto rt = tinkex::Runtime::create();
    if (!rt) throw std::runtime_error("runtime: " + rt.error().message);
    Driver d(std::move(rt).value());
    std::ifstream in(argv[1]);
    std::string text;
    bool record = false;
    while (std::getline(in, text)) {
      auto f = split(text, 8);
      if (f[0] == "config") {
        auto s = tinkex::ServiceClient::create(d.rt, f[1]);
        if (!s) throw std::runtime_error("service client: " + s.error().message);
        d.svc.emplace(std::move(s).value());
      } else if (f[0] == "events") {
        record = true;
        auto sub = d.svc->subscribe([&d](const tinkex::Event &e) {
          std::lock_guard<std::mutex> lock(d.ev_mu);
          d.events.push_back(e.json);
        });
        if (!sub) throw std::runtime_error("subscribe: " + sub.error().message);
        d.sub.emplace(std::move(sub).value());
      } else if (f[0] == "op" && f.size() == 8) {
        d.run(std::vector<std::string>(f.begin() + 1, f.end()));
      } else {
        throw std::runtime_error("bad scenario line");
      }
    }
    d.sub.reset();
    std::string all;
    {
      std::lock_guard<std::mutex> lock(d.ev_mu);
      for (size_t k = 0; k < d.events.size(); k++) all += (k ? "," : "") + d.events[k];
    }
    emit("{\"events\":[" + (record ? all : std::string()) + "]}");
    emit("{\"done\":true}");
    d.futures.clear();
    d.rest.reset();
    d.training.clear();
    d.sampling.clear();
    d.svc.reset();
    (void)d.rt.shutdown(std::chrono::milliseconds(5000));
  } catch (const std::exception &e) {
    std::cerr << "driver_cpp: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
