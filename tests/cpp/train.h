// The C++ test's second translation unit: the training loop through tinkex.hpp.
#pragma once

#include <string>

#include "tinkex.h"
#include "tinkex.hpp"

/// Runs the loop against `base_url` on `rt`; returns the number of failed checks.
int run_training(const tinkex::Runtime &rt, const std::string &base_url);

/// Counts and prints a failed check.
int check(bool ok, const char *what);

/// The custom loss checks (custom_loss.cpp); returns the number of failed checks.
int run_custom_loss(const tinkex::Runtime &rt, const std::string &base_url);

/// The string value of the first `"key":"..."` in `json` (no unescaping), or "".
std::string string_after(const std::string &json, const std::string &key);

/// A ForwardInput JSON of the fixed batch (cross_entropy).
std::string make_batch_json();

/// Issue 14's operations (operations.cpp); returns the number of failed checks.
int run_operations(const tinkex::Runtime &rt, const std::string &base_url);

/// The official methods of docs/api-coverage.md (coverage.cpp); returns the number of
/// failed checks.
int run_coverage(const tinkex::Runtime &rt, const std::string &base_url);
