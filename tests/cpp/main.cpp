// C++17 test of tinkex.hpp (two translation units: this one and train.cpp):
//   test_cpp BASE_URL
#include "tinkex.h"
#include "tinkex.hpp"
#include "train.h"

#include <chrono>
#include <cstdio>

int check(bool ok, const char *what) {
  if (!ok) std::fprintf(stderr, "CHECK failed: %s\n", what);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
    return 2;
  }
  int failures = check(tinkex::abi_matches(), "ABI version");
  failures += check(tinkex::version() == TINKEX_VERSION, "version");
  auto rt = tinkex::Runtime::create(2);
  if (!rt) {
    std::fprintf(stderr, "runtime: %s\n", rt.error().message.c_str());
    return 1;
  }
  failures += run_training(rt.value(), argv[1]);
  failures += run_custom_loss(rt.value(), argv[1]);
  failures += run_operations(rt.value(), argv[1]);
  failures += run_coverage(rt.value(), argv[1]);
  failures += run_surface(rt.value(), argv[1]);

  // RAII: handles freed in any order; a cloned runtime outlives the original.
  tinkex::Runtime second = rt.value().clone();
  auto shut = second.shutdown(std::chrono::milliseconds(1000));
  failures += check(shut.ok(), "shutdown");
  std::printf("test_cpp: %d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
