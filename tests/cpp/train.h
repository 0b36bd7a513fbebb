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

/// The first number after `"key":` in `json`, or 0.
double number_after(const std::string &json, const std::string &key);

/// The fixed batch of make_batch_json() as a DatumBatch (int64 tokens).
tinkex::DatumBatch make_datum_batch();

/// One request to the emulator's control endpoints (`/_emulator/<path>`) at `base_url`;
/// the raw HTTP answer, or "" when the emulator cannot be reached.
std::string emulator_request(const std::string &base_url, const char *method,
                             const std::string &path, const std::string &body = "");

/// The C ABI functions beyond the official methods (surface.cpp): future waiting and
/// introspection, exceptions, the log sink, the session id, tinker paths, forward over a
/// datum batch; returns the number of failed checks.
int run_surface(const tinkex::Runtime &rt, const std::string &base_url);
