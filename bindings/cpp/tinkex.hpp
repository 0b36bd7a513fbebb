// tinkex.hpp: header-only C++17 wrapper of the libtinkex C API (include/tinkex.h).
//
// - Handles are RAII types (std::unique_ptr with the C deleters); moving is cheap, copying
//   is explicit (`clone()`), destruction never blocks and never cancels work.
// - Fallible calls return [[nodiscard]] tinkex::Result<T> (a value or a tinkex::Error);
//   this header throws nothing of its own.
// - Network operations return tinkex::Pending<T>: a std::future<Result<T>> fed by the C
//   completion callback, plus cancel(). Results are JSON text (std::string) or clients.
// - Events reach a std::function on the library's dispatcher thread.
// - No exception crosses into C: every callback trampoline is noexcept and catches all.
//   Callbacks (and std::function event handlers) run on the "tinkex-callback" thread; never
//   block there on another Pending of the same runtime.
//
// Link: pkg-config --cflags --libs tinkex (see docs/c-api.md).

#ifndef TINKEX_HPP
#define TINKEX_HPP

#include "tinkex.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tinkex {

/// A failure: a copy of a tinkex_error's fields.
struct Error {
  tinkex_status status = TINKEX_STATUS_INTERNAL;
  std::string kind;
  std::string message;
  uint16_t http_status = 0;
  std::string request_id;
  /// The server's category of a failed future (`user`, `server`, `unknown`), or "" when the
  /// server reported none.
  std::string category;
  /// The raw body of the HTTP response that caused the error (at most 4 KiB), or "".
  std::string body;
  bool retryable = false;

  /// Copies and frees `err` (may be NULL: then only `status` is known).
  static Error take(tinkex_status status, tinkex_error *err) {
    Error e;
    e.status = status;
    if (err != nullptr) {
      e.status = tinkex_error_status(err);
      if (const char *k = tinkex_error_kind(err)) e.kind = k;
      if (const char *m = tinkex_error_message(err)) e.message = m;
      if (const char *r = tinkex_error_request_id(err)) e.request_id = r;
      if (const char *c = tinkex_error_category(err)) e.category = c;
      if (const char *b = tinkex_error_body(err)) e.body = b;
      e.http_status = tinkex_error_http_status(err);
      e.retryable = tinkex_error_is_retryable(err);
      tinkex_error_free(err);
    } else {
      e.message = tinkex_status_name(status);
    }
    return e;
  }

  /// The status constant's name, e.g. "TINKEX_STATUS_CANCELLED".
  const char *status_name() const { return tinkex_status_name(status); }
};

/// An Error thrown as an exception (by `Result::value_or_throw` and `Pending::value`):
/// `what()` is "<kind or status name>: <message>", `error()` has every field.
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error error)
      : std::runtime_error((error.kind.empty() ? std::string(error.status_name()) : error.kind) +
                           ": " + error.message),
        error_(std::move(error)) {}
  /// The failure: status, kind, message, HTTP status, request id, category, retryable.
  const Error &error() const noexcept { return error_; }
  tinkex_status status() const noexcept { return error_.status; }
  const std::string &kind() const noexcept { return error_.kind; }
  const std::string &request_id() const noexcept { return error_.request_id; }
  const std::string &category() const noexcept { return error_.category; }

 private:
  Error error_;
};

/// Nothing (the value of calls that only succeed or fail).
struct Unit {};

/// A value or an Error.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  /// The value; only when ok().
  T &value() & { return std::get<0>(v_); }
  const T &value() const & { return std::get<0>(v_); }
  T &&value() && { return std::get<0>(std::move(v_)); }
  /// The error; only when !ok().
  const Error &error() const { return std::get<1>(v_); }
  /// The value, or throws tinkex::Exception carrying the error.
  T value_or_throw() && {
    if (!ok()) throw Exception(std::get<1>(std::move(v_)));
    return std::get<0>(std::move(v_));
  }
  /// The status: TINKEX_STATUS_OK or the error's.
  tinkex_status status() const noexcept {
    return ok() ? TINKEX_STATUS_OK : std::get<1>(v_).status;
  }

 private:
  std::variant<T, Error> v_;
};

using Status = Result<Unit>;

namespace detail {

template <auto Free>
struct Deleter {
  template <class P>
  void operator()(P *p) const noexcept {
    Free(p);
  }
};

template <class T, auto Free>
using Handle = std::unique_ptr<T, Deleter<Free>>;

inline Status check(tinkex_status s, tinkex_error *err) {
  if (s == TINKEX_STATUS_OK) return Unit{};
  return Error::take(s, err);
}

inline std::string bytes_to_string(tinkex_bytes *b) {
  std::string s(reinterpret_cast<const char *>(tinkex_bytes_data(b)), tinkex_bytes_len(b));
  tinkex_bytes_free(b);
  return s;
}

/// The result of a synchronous getter `fn(handle, &bytes, &err)` as text.
template <class F, class H>
Result<std::string> get_bytes(F fn, const H *handle) {
  tinkex_bytes *b = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = fn(handle, &b, &err);
  if (s != TINKEX_STATUS_OK) return Error::take(s, err);
  return bytes_to_string(b);
}

/// An error of the binding itself (no libtinkex error object).
inline Error binding_error(tinkex_status status, const char *kind, std::string message) {
  Error e;
  e.status = status;
  e.kind = kind;
  e.message = std::move(message);
  return e;
}

inline Error user_error(std::string message) {
  return binding_error(TINKEX_STATUS_USER, "user", std::move(message));
}

/// A reference to a service client (null: none), kept by the clients it created.
using ServiceRef = Handle<tinkex_service_client, tinkex_service_client_free>;

inline ServiceRef service_ref(const tinkex_service_client *svc) {
  return ServiceRef(svc != nullptr ? tinkex_service_client_clone(svc) : nullptr);
}

/// `json` (an object) with `member` (`"key":value`) put first; text that is not an object
/// is returned unchanged, for the library to reject. A `json` that has the key too is
/// rejected by the library (duplicate field).
inline std::string with_member(std::string_view json, std::string_view member) {
  size_t open = json.find_first_not_of(" \t\r\n");
  if (open == std::string_view::npos || json[open] != '{') return std::string(json);
  size_t next = json.find_first_not_of(" \t\r\n", open + 1);
  std::string out = "{" + std::string(member);
  if (next != std::string_view::npos && json[next] != '}') out += ",";
  out.append(json.substr(open + 1));
  return out;
}

inline const uint8_t *data_of(std::string_view s) {
  return reinterpret_cast<const uint8_t *>(s.data());
}

/// A JSON string literal (quotes and escapes) of `s`.
inline std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

/// A JSON number (finite; NaN and infinities become null, which the library rejects).
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

/// A minimal reader of the library's own JSON results (well-formed by construction): finds
/// object members and number arrays without building a tree. Bounded by the text's length.
class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  /// Skips one value starting at `i` (after whitespace); returns the index after it, or
  /// npos when the text is not well-formed.
  size_t skip_value(size_t i) const {
    i = ws(i);
    if (i >= s_.size()) return npos;
    char c = s_[i];
    if (c == '"') return skip_string(i);
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      i = ws(i + 1);
      if (i < s_.size() && s_[i] == close) return i + 1;
      while (i < s_.size()) {
        if (c == '{') {
          i = skip_string(ws(i));
          if (i == npos) return npos;
          i = ws(i);
          if (i >= s_.size() || s_[i] != ':') return npos;
          ++i;
        }
        i = skip_value(i);
        if (i == npos) return npos;
        i = ws(i);
        if (i >= s_.size()) return npos;
        if (s_[i] == close) return i + 1;
        if (s_[i] != ',') return npos;
        ++i;
      }
      return npos;
    }
    while (i < s_.size() && std::strchr(",}] \t\r\n", s_[i]) == nullptr) ++i;
    return i;
  }

  /// The start of the value of member `key` of the object at `obj`, or npos.
  size_t member(size_t obj, std::string_view key) const {
    size_t i = ws(obj);
    if (i >= s_.size() || s_[i] != '{') return npos;
    i = ws(i + 1);
    while (i < s_.size() && s_[i] == '"') {
      size_t end = skip_string(i);
      if (end == npos) return npos;
      bool match = s_.substr(i + 1, end - i - 2) == key;
      i = ws(end);
      if (i >= s_.size() || s_[i] != ':') return npos;
      if (match) return ws(i + 1);
      i = skip_value(i + 1);
      if (i == npos) return npos;
      i = ws(i);
      if (i < s_.size() && s_[i] == ',') i = ws(i + 1);
    }
    return npos;
  }

  /// The starts of the elements of the array at `arr` (empty when it is not an array).
  std::vector<size_t> elements(size_t arr) const {
    std::vector<size_t> out;
    size_t i = ws(arr);
    if (i >= s_.size() || s_[i] != '[') return out;
    i = ws(i + 1);
    if (i < s_.size() && s_[i] == ']') return out;
    while (i < s_.size()) {
      out.push_back(i);
      i = skip_value(i);
      if (i == npos) return {};
      i = ws(i);
      if (i >= s_.size() || s_[i] != ',') break;
      i = ws(i + 1);
    }
    return out;
  }

  /// The string at `at`, unescaped; nullopt when there is none (e.g. `null`, or `at` is
  /// npos).
  std::optional<std::string> string(size_t at) const {
    at = ws(at);
    size_t end = skip_string(at);
    if (end == npos) return std::nullopt;
    std::string out;
    for (size_t i = at + 1; i + 1 < end; ++i) {
      if (s_[i] != '\\') {
        out += s_[i];
        continue;
      }
      char c = s_[++i];
      switch (c) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4(i + 1, end);
          i += 4;
          if (cp >= 0xD800 && cp < 0xDC00 && i + 2 < end && s_[i + 1] == '\\' && s_[i + 2] == 'u') {
            uint32_t low = hex4(i + 3, end);
            if (low >= 0xDC00 && low < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              i += 6;
            }
          }
          append_utf8(out, cp);
          break;
        }
        default: out += c;  // '"', '\\', '/'
      }
    }
    return out;
  }

  /// The number at `at` (0 when it is not one).
  double number(size_t at) const {
    std::string tok(s_.substr(at, skip_value(at) == npos ? 0 : skip_value(at) - at));
    return std::strtod(tok.c_str(), nullptr);
  }

  static constexpr size_t npos = std::string_view::npos;

 private:
  size_t ws(size_t i) const {
    while (i < s_.size() && (s_[i] == ' ' || s_[i] == '\n' || s_[i] == '\t' || s_[i] == '\r')) ++i;
    return i;
  }
  size_t skip_string(size_t i) const {
    if (i >= s_.size() || s_[i] != '"') return npos;
    for (++i; i < s_.size(); ++i) {
      if (s_[i] == '\\') ++i;
      else if (s_[i] == '"') return i + 1;
    }
    return npos;
  }
  /// The four hex digits at `i` (before `end`) as a code point; U+FFFD when they are not.
  uint32_t hex4(size_t i, size_t end) const {
    if (i + 4 >= end) return 0xFFFD;
    uint32_t v = 0;
    for (size_t k = i; k < i + 4; ++k) {
      char c = s_[k];
      uint32_t d;
      if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
      else return 0xFFFD;
      v = v * 16 + d;
    }
    return v;
  }
  static void append_utf8(std::string &out, uint32_t cp) {
    if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;  // a lone surrogate
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string_view s_;
};

/// `get_telemetry()` of a client from its `status()` JSON: the JSON text of its
/// `telemetry` member, nullopt when that is null (telemetry off).
inline Result<std::optional<std::string>> telemetry_of(Result<std::string> status) {
  if (!status) return status.error();
  const std::string &json = status.value();
  JsonReader r(json);
  size_t at = r.member(0, "telemetry");
  size_t end = at == JsonReader::npos ? JsonReader::npos : r.skip_value(at);
  if (end == JsonReader::npos)
    return binding_error(TINKEX_STATUS_INTERNAL, "internal", "status JSON without telemetry");
  std::string value = json.substr(at, end - at);
  if (value == "null") return std::optional<std::string>();
  return std::optional<std::string>(std::move(value));
}

}  // namespace detail

class Runtime;
class ServiceClient;
class TrainingClient;
class SamplingClient;
class RestClient;

/// The result of a submitted operation: a std::future fed by the completion callback.
template <class T>
class Pending {
 public:
  Pending(detail::Handle<tinkex_future, tinkex_future_free> fut, std::future<Result<T>> result)
      : fut_(std::move(fut)), result_(std::move(result)) {}

  /// Blocks until the operation finishes and returns its result (once).
  Result<T> get() { return result_.get(); }
  /// Blocks until the operation finishes and returns its value (once), or throws
  /// tinkex::Exception carrying the error.
  T value() { return get().value_or_throw(); }
  /// Whether the operation has finished (success, failure, cancel or shutdown); its
  /// completion callback may still be running. True for a submission that failed.
  bool is_done() const noexcept { return !fut_ || tinkex_future_is_done(fut_.get()); }
  /// Blocks until the operation has finished and its result is ready, or `timeout` passes
  /// (tinkex_future_wait): true when ready. Never call it from a tinkex callback.
  Result<bool> wait(std::chrono::milliseconds timeout) const {
    if (!fut_) return true;
    tinkex_error *err = nullptr;
    tinkex_status s =
        tinkex_future_wait(fut_.get(), static_cast<uint64_t>(timeout.count()), &err);
    if (s == TINKEX_STATUS_OK) return true;
    if (s == TINKEX_STATUS_PENDING) return false;
    return Error::take(s, err);
  }
  /// The server's request id once the server accepted the operation; nullopt before, for
  /// operations without a server future, and for a submission that failed.
  std::optional<std::string> request_id() const {
    if (!fut_) return std::nullopt;
    tinkex_bytes *b = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_future_request_id(fut_.get(), &b, &err);
    if (s != TINKEX_STATUS_OK) {
      tinkex_error_free(err);
      return std::nullopt;
    }
    return detail::bytes_to_string(b);
  }
  /// Waits at most `d`; true when the result is ready.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return result_.wait_for(d) == std::future_status::ready;
  }
  /// Cancels: the result becomes TINKEX_STATUS_CANCELLED unless already finished.
  void cancel() const noexcept {
    if (fut_) (void)tinkex_future_cancel(fut_.get());
  }
  /// The underlying std::future.
  std::future<Result<T>> &future() noexcept { return result_; }
  /// The C future (NULL when the submission itself failed).
  tinkex_future *handle() const noexcept { return fut_.get(); }

 private:
  detail::Handle<tinkex_future, tinkex_future_free> fut_;
  std::future<Result<T>> result_;
};

namespace detail {

/// Takes a finished future's result as T (specialised below); a client result keeps
/// `service` (the service client it belongs to; may be null).
template <class T>
Result<T> take(const tinkex_future *fut, ServiceRef service);

template <>
inline Result<std::string> take<std::string>(const tinkex_future *fut, ServiceRef) {
  tinkex_bytes *bytes = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_future_take_result(fut, &bytes, &err);
  if (s != TINKEX_STATUS_OK) return Error::take(s, err);
  return bytes_to_string(bytes);
}

template <class T>
struct Context {
  std::promise<Result<T>> promise;
  ServiceRef service;
};

template <class T>
void on_done(void *user_data, const tinkex_future *fut) noexcept {
  std::unique_ptr<Context<T>> ctx(static_cast<Context<T> *>(user_data));
  try {
    ctx->promise.set_value(take<T>(fut, std::move(ctx->service)));
  } catch (...) {
    // Never let an exception reach C (e.g. bad_alloc): the std::future then reports
    // broken_promise.
  }
}

/// A Pending that is ready at once with `error` (nothing was submitted).
template <class T>
Pending<T> failed(Error error) {
  std::promise<Result<T>> promise;
  promise.set_value(std::move(error));
  return Pending<T>(nullptr, promise.get_future());
}

/// Calls `submit(on_done, user_data, &out_future, &out_err)`; on a failed submission the
/// Pending is ready at once with the error (the callback never fires). A client result
/// keeps a reference to `service` (may be null).
template <class T, class Submit>
Pending<T> submit(Submit &&submit_fn, const tinkex_service_client *service = nullptr) {
  auto ctx = std::make_unique<Context<T>>();
  ctx->service = service_ref(service);
  std::future<Result<T>> result = ctx->promise.get_future();
  tinkex_future *fut = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = submit_fn(&on_done<T>, static_cast<void *>(ctx.get()), &fut, &err);
  if (s != TINKEX_STATUS_OK) return failed<T>(Error::take(s, err));
  ctx.release();  // owned by the callback from now on
  return Pending<T>(Handle<tinkex_future, tinkex_future_free>(fut), std::move(result));
}

}  // namespace detail

/// A runtime: tokio workers plus the callback dispatcher thread.
class Runtime {
 public:
  static Result<Runtime> create(uint32_t worker_threads = 0,
                                tinkex_log_level log_level = TINKEX_LOG_LEVEL_OFF) {
    tinkex_runtime_options opts = tinkex_runtime_options_default();
    opts.worker_threads = worker_threads;
    opts.log_level = static_cast<int32_t>(log_level);
    tinkex_runtime *rt = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_runtime_new(&opts, &rt, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return Runtime(rt);
  }

  /// Bounded drain: pending work gets `drain` to finish, then completes with SHUT_DOWN.
  /// Blocks; never call it from a tinkex callback.
  Status shutdown(std::chrono::milliseconds drain) {
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_runtime_shutdown(p_.get(), static_cast<uint64_t>(drain.count()), &err);
    return detail::check(s, err);
  }

  Runtime clone() const { return Runtime(tinkex_runtime_clone(p_.get())); }
  tinkex_runtime *get() const noexcept { return p_.get(); }

  /// A receiver of the library's log lines: (level, target, message), both views valid
  /// for the call only. Runs on the dispatcher thread; must return quickly.
  using LogSink = std::function<void(tinkex_log_level, std::string_view, std::string_view)>;

  /// Sends the library's log lines of at most `max_level` to `sink`, in emission order
  /// (tinkex_runtime_set_log_sink): one sink per runtime, a new one replaces the old.
  /// An exception thrown by `sink` is swallowed (it never reaches C).
  Status set_log_sink(LogSink sink, tinkex_log_level max_level = TINKEX_LOG_LEVEL_INFO) const {
    auto owned = std::make_unique<LogSink>(std::move(sink));
    tinkex_error *err = nullptr;
    tinkex_status s =
        tinkex_runtime_set_log_sink(p_.get(), &on_log, owned.get(), &free_sink,
                                    static_cast<int32_t>(max_level), &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    owned.release();  // freed by free_sink once the sink is replaced or removed
    return Unit{};
  }
  /// Removes the log sink (its function is destroyed after its last call).
  Status clear_log_sink() const {
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_runtime_set_log_sink(p_.get(), nullptr, nullptr, nullptr,
                                                  TINKEX_LOG_LEVEL_OFF, &err);
    return detail::check(s, err);
  }

 private:
  explicit Runtime(tinkex_runtime *p) : p_(p) {}
  static void on_log(void *user_data, tinkex_log_level level, const uint8_t *target,
                     size_t target_len, const uint8_t *message, size_t message_len) noexcept {
    try {
      (*static_cast<LogSink *>(user_data))(
          level, std::string_view(reinterpret_cast<const char *>(target), target_len),
          std::string_view(reinterpret_cast<const char *>(message), message_len));
    } catch (...) {
    }
  }
  static void free_sink(void *user_data) noexcept { delete static_cast<LogSink *>(user_data); }
  detail::Handle<tinkex_runtime, tinkex_runtime_free> p_;
};

/// An event (a copy; safe to keep).
struct Event {
  tinkex_event_kind type = TINKEX_EVENT_KIND_OTHER;
  std::string json;
  std::string request_id;
};

/// An event subscription; destroying it unsubscribes.
class Subscription {
 public:
  tinkex_subscription *get() const noexcept { return p_.get(); }

 private:
  friend class ServiceClient;
  friend class SamplingClient;
  explicit Subscription(tinkex_subscription *p) : p_(p) {}

  using Handler = std::function<void(const Event &)>;

  /// Subscribes `handler` to the events of `svc` (see ServiceClient::subscribe).
  static Result<Subscription> to(const tinkex_service_client *svc, Handler handler) {
    auto fn = std::make_unique<Handler>(std::move(handler));
    tinkex_subscription *sub = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s =
        tinkex_service_client_subscribe(svc, &on_event, fn.get(), &free_handler, &sub, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    fn.release();  // freed by free_handler
    return Subscription(sub);
  }
  static void on_event(void *user_data, const tinkex_event *ev) noexcept {
    try {
      Event e;
      e.type = tinkex_event_get_kind(ev);
      size_t len = 0;
      const uint8_t *json = tinkex_event_json(ev, &len);
      e.json.assign(reinterpret_cast<const char *>(json), len);
      if (const char *r = tinkex_event_request_id(ev)) e.request_id = r;
      (*static_cast<Handler *>(user_data))(e);
    } catch (...) {
      // A throwing handler loses that event; nothing reaches C.
    }
  }
  static void free_handler(void *user_data) noexcept { delete static_cast<Handler *>(user_data); }

  detail::Handle<tinkex_subscription, tinkex_subscription_free> p_;
};

/// Typed-array training data for forward_backward(DatumBatch&&, ...).
class DatumBatch {
 public:
  static Result<DatumBatch> create() {
    tinkex_datum_batch *b = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_datum_batch_new(&b, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return DatumBatch(b);
  }
  /// Another reference to the same batch (not a copy: both see later pushes).
  DatumBatch clone() const { return DatumBatch(tinkex_datum_batch_clone(p_.get())); }

  /// Starts a datum whose model input is these token ids.
  Status push(const int64_t *tokens, size_t n) { return push_raw(tokens, n, TINKEX_DTYPE_INT64); }
  Status push(const int32_t *tokens, size_t n) { return push_raw(tokens, n, TINKEX_DTYPE_INT32); }
  Status push(const std::vector<int64_t> &t) { return push(t.data(), t.size()); }
  Status push(const std::vector<int32_t> &t) { return push(t.data(), t.size()); }

  /// Sets a loss input of the last datum; an empty shape means 1-D.
  template <class E>
  Status set_loss_input(std::string_view name, const E *data, size_t n,
                        const std::vector<int64_t> &shape = {}) {
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_datum_batch_set_loss_input(
        p_.get(), detail::data_of(name), name.size(), static_cast<const void *>(data), n,
        static_cast<int32_t>(dtype_of<E>()), shape.empty() ? nullptr : shape.data(),
        shape.size(), &err);
    return detail::check(s, err);
  }
  template <class E>
  Status set_loss_input(std::string_view name, const std::vector<E> &v,
                        const std::vector<int64_t> &shape = {}) {
    return set_loss_input(name, v.data(), v.size(), shape);
  }

  /// Appends one datum given as `Datum` JSON (any chunk types).
  Status push_json(std::string_view json) {
    tinkex_error *err = nullptr;
    tinkex_status s =
        tinkex_datum_batch_push_json(p_.get(), detail::data_of(json), json.size(), &err);
    return detail::check(s, err);
  }

  size_t size() const noexcept { return tinkex_datum_batch_len(p_.get()); }

 private:
  friend class TrainingClient;
  explicit DatumBatch(tinkex_datum_batch *p) : p_(p) {}

  template <class E>
  static constexpr tinkex_dtype dtype_of() {
    static_assert(std::is_same_v<E, int64_t> || std::is_same_v<E, int32_t> ||
                      std::is_same_v<E, float> || std::is_same_v<E, double>,
                  "element type must be int64_t, int32_t, float or double");
    if constexpr (std::is_same_v<E, int64_t>) return TINKEX_DTYPE_INT64;
    if constexpr (std::is_same_v<E, int32_t>) return TINKEX_DTYPE_INT32;
    if constexpr (std::is_same_v<E, float>) return TINKEX_DTYPE_FLOAT32;
    return TINKEX_DTYPE_FLOAT64;
  }

  Status push_raw(const void *tokens, size_t n, tinkex_dtype dtype) {
    tinkex_error *err = nullptr;
    tinkex_status s =
        tinkex_datum_batch_push(p_.get(), tokens, n, static_cast<int32_t>(dtype), &err);
    return detail::check(s, err);
  }

  detail::Handle<tinkex_datum_batch, tinkex_datum_batch_free> p_;
};

/// `on_queue_state_change`'s function: the new queue state (`"active"`,
/// `"paused_capacity"`, `"paused_rate_limit"` or `"unknown"`) and its reason, if any.
using QueueStateFn =
    std::function<void(const std::string &state, const std::optional<std::string> &reason)>;

/// A sampling client.
class SamplingClient {
 public:
  /// The official `SamplingClient.create`: `service.create_sampling_client(json)` (a new
  /// sampling session from `{"model_path"}` or `{"base_model"}`, or joins an existing one
  /// of this service's session with `{"sampling_session_id"}`; PROTOCOL 12.1).
  static inline Pending<SamplingClient> create(const ServiceClient &service, std::string_view json);

  /// `{"prompt": ModelInput, "num_samples": n, "sampling_params": {...}}`.
  Pending<std::string> sample(std::string_view json) const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_sampling_client_sample(p_.get(), detail::data_of(json), json.size(), cb,
                                           ud, out, err);
    });
  }
  /// `{"prompt": ModelInput}`.
  Pending<std::string> compute_logprobs(std::string_view json) const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_sampling_client_compute_logprobs(p_.get(), detail::data_of(json),
                                                     json.size(), cb, ud, out, err);
    });
  }
  /// `{"sampling_session_id", "base_model", "cloned_sampler_id", "record_stability_info"}`
  /// (no I/O).
  Result<std::string> info() const {
    return detail::get_bytes(&tinkex_sampling_client_get_info, p_.get());
  }
  /// The base model sampled (from info(); no I/O).
  Result<std::string> get_base_model() const { return info_string("base_model"); }
  /// `{"session_id", "queue_state", ...}`: introspection of this client (no I/O).
  Result<std::string> status() const {
    return detail::get_bytes(&tinkex_sampling_client_status, p_.get());
  }
  /// The telemetry counters of status() as JSON text, or nullopt when telemetry is off.
  Result<std::optional<std::string>> get_telemetry() const {
    return detail::telemetry_of(status());
  }
  /// The official `on_queue_state_change` hook, as a registration: calls `fn(state, reason)`
  /// on the dispatcher thread whenever the queue state of one of this sampling session's
  /// requests changes (PROTOCOL 15.2; `"active"` again when it completes): the service
  /// client's `queue_state` events whose `client_id` is this client's sampling session id,
  /// until the Subscription is destroyed (see ServiceClient::subscribe). Needs the service
  /// client that created this client (ServiceClient::create_sampling_client,
  /// TrainingClient::create_sampling_client or save_weights_and_get_sampling_client): one
  /// made by from_sampler_handle, or from a bare C handle, is TINKEX_STATUS_WRONG_STATE (the
  /// C ABI offers no subscription to its events).
  Result<Subscription> on_queue_state_change(QueueStateFn fn) const {
    if (!svc_)
      return detail::binding_error(
          TINKEX_STATUS_WRONG_STATE, "wrong_state",
          "on_queue_state_change: this sampling client has no service client to observe "
          "(it was made by from_sampler_handle or from a C handle)");
    auto sid = info_string("sampling_session_id");
    if (!sid) return sid.error();
    return Subscription::to(
        svc_.get(), [sid = std::move(sid).value(), fn = std::move(fn)](const Event &e) {
          if (e.type != TINKEX_EVENT_KIND_QUEUE_STATE) return;
          detail::JsonReader r(e.json);
          if (r.string(r.member(0, "client_id")) != sid) return;
          fn(r.string(r.member(0, "state")).value_or("unknown"), r.string(r.member(0, "reason")));
        });
  }
  /// The sampler handle (PROTOCOL 20.4) as a JSON string; it carries no credentials.
  Result<std::string> get_sampler_handle() const {
    return detail::get_bytes(&tinkex_sampling_client_get_sampler_handle, p_.get());
  }
  /// A new client for the sampler of `handle` (the handle string itself, not JSON),
  /// authenticating with `config_json` (as for tinkex_service_client_new). No I/O.
  static Result<SamplingClient> from_sampler_handle(const Runtime &rt, std::string_view handle,
                                                    std::string_view config_json = "{}") {
    tinkex_sampling_client *c = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_sampling_client_from_sampler_handle(
        rt.get(), detail::data_of(handle), handle.size(), detail::data_of(config_json),
        config_json.size(), &c, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return SamplingClient(c);
  }
  SamplingClient clone() const {
    return SamplingClient(tinkex_sampling_client_clone(p_.get()),
                          detail::service_ref(svc_.get()).release());
  }
  tinkex_sampling_client *get() const noexcept { return p_.get(); }

  /// Adopts `p` and `service` (the service client it belongs to, for
  /// on_queue_state_change; may be null).
  explicit SamplingClient(tinkex_sampling_client *p, tinkex_service_client *service = nullptr)
      : p_(p), svc_(service) {}

 private:
  Result<std::string> info_string(const char *key) const {
    auto json = info();
    if (!json) return json.error();
    detail::JsonReader r(json.value());
    if (auto v = r.string(r.member(0, key))) return *std::move(v);
    return detail::binding_error(TINKEX_STATUS_INTERNAL, "internal",
                                 std::string("sampling client info without ") + key);
  }
  detail::Handle<tinkex_sampling_client, tinkex_sampling_client_free> p_;
  detail::ServiceRef svc_;
};

/// What a client-side custom loss function returns (forward_backward_custom).
struct CustomLossOutput {
  /// The loss; reported as the result's `loss:sum`.
  double loss = 0;
  /// `dLoss/dlogprobs`: one vector per datum, as long as its logprobs.
  std::vector<std::vector<float>> grads;
  /// Extra metrics merged into the result's metrics.
  std::map<std::string, double> metrics;
};

/// A client-side custom loss: receives the per-datum logprobs of the forward pass.
using CustomLossFn =
    std::function<CustomLossOutput(const std::vector<std::vector<float>> &logprobs)>;

namespace detail {

/// One forward_backward_custom pass: shared by the submitter (which publishes the pass
/// handle once the submit call returns) and the forward's callback (which waits for it).
struct CustomPass {
  CustomLossFn fn;
  std::promise<Result<std::string>> promise;
  std::mutex mu;
  std::condition_variable cv;
  tinkex_custom_loss *pass = nullptr;
  bool published = false;
};

/// The logprobs of a ForwardBackwardOutput JSON, one vector per datum.
inline bool read_logprobs(const std::string &json, std::vector<std::vector<float>> &out) {
  JsonReader r(json);
  size_t outputs = r.member(0, "loss_fn_outputs");
  if (outputs == JsonReader::npos) return false;
  for (size_t o : r.elements(outputs)) {
    size_t lp = r.member(o, "logprobs");
    if (lp == JsonReader::npos) return false;
    size_t data = r.member(lp, "data");
    if (data == JsonReader::npos) return false;
    std::vector<float> v;
    for (size_t x : r.elements(data)) v.push_back(static_cast<float>(r.number(x)));
    out.push_back(std::move(v));
  }
  return true;
}

/// Runs the loss and sends the backward; returns the reason when the pass must be aborted.
inline std::string run_custom_loss(CustomPass &ctx, const std::string &fwd_json,
                                   tinkex_custom_loss *pass) {
  std::vector<std::vector<float>> logprobs;
  if (!read_logprobs(fwd_json, logprobs))
    return "forward_backward_custom: the forward result has no logprobs";
  CustomLossOutput out;
  try {
    out = ctx.fn(logprobs);
  } catch (const std::exception &e) {
    return std::string("forward_backward_custom: the loss function threw: ") + e.what();
  } catch (...) {
    return "forward_backward_custom: the loss function threw a non-std::exception";
  }
  if (out.grads.size() != logprobs.size())
    return "forward_backward_custom: the loss function returned " +
           std::to_string(out.grads.size()) + " gradients for " +
           std::to_string(logprobs.size()) + " datums";
  for (size_t i = 0; i < logprobs.size(); i++)
    if (out.grads[i].size() != logprobs[i].size())
      return "forward_backward_custom: gradient " + std::to_string(i) + " has " +
             std::to_string(out.grads[i].size()) + " values for " +
             std::to_string(logprobs[i].size()) + " logprobs";
  std::string metrics = "{\"loss:sum\":" + json_number(out.loss);
  for (const auto &[k, v] : out.metrics)
    if (k != "loss:sum") metrics += "," + json_quote(k) + ":" + json_number(v);
  metrics += "}";
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_custom_loss_set_metrics(pass, data_of(metrics), metrics.size(), &err);
  if (s != TINKEX_STATUS_OK)
    return "forward_backward_custom: metrics rejected: " + Error::take(s, err).message;
  tinkex_datum_batch *raw = nullptr;
  s = tinkex_datum_batch_new(&raw, &err);
  if (s != TINKEX_STATUS_OK) return "forward_backward_custom: " + Error::take(s, err).message;
  Handle<tinkex_datum_batch, tinkex_datum_batch_free> grads(raw);
  static const char kGrads[] = "grads";
  for (const auto &g : out.grads) {
    s = tinkex_datum_batch_push(grads.get(), nullptr, 0, TINKEX_DTYPE_INT64, &err);
    if (s == TINKEX_STATUS_OK)
      s = tinkex_datum_batch_set_loss_input(grads.get(), data_of(kGrads), sizeof kGrads - 1,
                                            g.empty() ? nullptr : g.data(), g.size(),
                                            TINKEX_DTYPE_FLOAT32, nullptr, 0, &err);
    if (s != TINKEX_STATUS_OK) return "forward_backward_custom: " + Error::take(s, err).message;
  }
  auto done = std::make_unique<Context<std::string>>();
  done->promise = std::move(ctx.promise);
  tinkex_future *fut = nullptr;
  s = tinkex_custom_loss_backward(pass, grads.get(), &on_done<std::string>, done.get(), &fut, &err);
  if (s != TINKEX_STATUS_OK) {
    done->promise.set_value(Error::take(s, err));
    return {};  // the core already poisoned the client; the result carries its error
  }
  done.release();         // owned by the callback
  tinkex_future_free(fut);  // freeing never cancels
  return {};
}

/// The forward's completion (dispatcher thread): runs the loss there, then phase 2.
inline void custom_on_forward(void *user_data, const tinkex_future *fut) noexcept {
  std::unique_ptr<std::shared_ptr<CustomPass>> holder(
      static_cast<std::shared_ptr<CustomPass> *>(user_data));
  CustomPass &ctx = **holder;
  tinkex_custom_loss *pass;
  {
    std::unique_lock<std::mutex> lock(ctx.mu);
    ctx.cv.wait(lock, [&] { return ctx.published; });
    pass = ctx.pass;
  }
  Handle<tinkex_custom_loss, tinkex_custom_loss_free> owned(pass);
  try {
    Result<std::string> fwd = take<std::string>(fut, nullptr);
    if (!fwd) {
      ctx.promise.set_value(fwd.error());  // a failed forward already poisoned the client
      return;
    }
    std::string reason = run_custom_loss(ctx, fwd.value(), pass);
    if (!reason.empty()) {
      tinkex_error *err = nullptr;
      if (tinkex_custom_loss_abort(pass, data_of(reason), reason.size(), &err) != TINKEX_STATUS_OK)
        tinkex_error_free(err);
      ctx.promise.set_value(user_error(reason));
    }
  } catch (...) {
    // bad_alloc and the like: freeing the pass (owned) aborts it; the future reports
    // broken_promise or the value already set.
  }
}

}  // namespace detail

/// A training client: operations go out in submission order.
class TrainingClient {
 public:
  /// `ForwardBackwardInput` JSON.
  Pending<std::string> forward_backward(std::string_view json) const {
    return submit_json(&tinkex_training_client_forward_backward, json);
  }
  /// The bulk path (recommended for large batches); borrows `batch` (its datums are
  /// copied at submit, so it may be reused or destroyed right after).
  Pending<std::string> forward_backward(const DatumBatch &batch, std::string_view loss_json) const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_training_client_forward_backward_batch(
          p_.get(), batch.p_.get(), detail::data_of(loss_json), loss_json.size(), cb, ud, out,
          err);
    });
  }
  Pending<std::string> forward(std::string_view json) const {
    return submit_json(&tinkex_training_client_forward, json);
  }
  /// forward over the bulk path; borrows `batch` as forward_backward(batch, ...) does.
  Pending<std::string> forward(const DatumBatch &batch, std::string_view loss_json) const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_training_client_forward_batch(p_.get(), batch.p_.get(),
                                                  detail::data_of(loss_json), loss_json.size(),
                                                  cb, ud, out, err);
    });
  }
  /// `AdamParams` JSON.
  Pending<std::string> optim_step(std::string_view json) const {
    return submit_json(&tinkex_training_client_optim_step, json);
  }
  /// `{"path": "name", ...}`; result `{"path": "tinker://..."}`.
  Pending<std::string> save_state(std::string_view json) const {
    return submit_json(&tinkex_training_client_save_state, json);
  }
  Pending<std::string> save_weights_for_sampler(std::string_view json) const {
    return submit_json(&tinkex_training_client_save_weights_for_sampler, json);
  }
  /// `{"path": "tinker://...", "optimizer": bool, "weights_access_token"?: "..."}`.
  Pending<std::string> load_state(std::string_view json) const {
    return submit_json(&tinkex_training_client_load_state, json);
  }
  /// load_state with `"optimizer": true` put into `json` (`{"path",
  /// "weights_access_token"?}`; one that has `optimizer` too is TINKEX_STATUS_INVALID_JSON).
  Pending<std::string> load_state_with_optimizer(std::string_view json) const {
    return load_state(detail::with_member(json, R"("optimizer":true)"));
  }
  /// `{"path": "name", "ttl_seconds"?, "age_encryption_recipients"?: [...]}`; result
  /// `{"path", "size_bytes"}` (download through RestClient::get_external_weights_urls).
  Pending<std::string> save_weights_external(std::string_view json) const {
    return submit_json(&tinkex_training_client_save_weights_external, json);
  }
  /// `{"kind": "snapshot"|"inflight", "retry_config"?, "record_stability_info"?}`; `{}` (or
  /// empty) for the defaults.
  inline Pending<SamplingClient> save_weights_and_get_sampling_client(std::string_view json = {}) const;
  /// The official `TrainingClient.create_sampling_client`: a sampling client of saved
  /// sampler weights, `{"model_path": "tinker://.../sampler_weights/...", "retry_config"?,
  /// "record_stability_info"?}`, created by this client's service client
  /// (ServiceClient::create_sampling_client). TINKEX_STATUS_WRONG_STATE for a client made
  /// from a bare C handle (no service client).
  inline Pending<SamplingClient> create_sampling_client(std::string_view json) const;
  /// The web console URL of this run (PROTOCOL 20.2) as a JSON string; no I/O.
  Result<std::string> get_console_url() const {
    return detail::get_bytes(&tinkex_training_client_get_console_url, p_.get());
  }
  /// `{"session_id", "queue_state", ...}`: introspection of this client (no I/O).
  Result<std::string> status() const {
    return detail::get_bytes(&tinkex_training_client_status, p_.get());
  }
  /// The telemetry counters of status() as JSON text, or nullopt when telemetry is off.
  Result<std::optional<std::string>> get_telemetry() const {
    return detail::telemetry_of(status());
  }

  /// Client-side custom loss (PROTOCOL 11.6, the official `forward_backward_custom`): a
  /// forward over `batch` (each datum needs `target_tokens`; borrowed, copied at submit)
  /// gives the per-datum logprobs; `loss_fn` returns the loss, `dLoss/dlogprobs` and extra
  /// metrics; the backward applies them. The result is the backward's ForwardBackwardOutput
  /// JSON: `loss:sum` is the custom loss, the server's moves to `surrogate_loss:sum`.
  /// `loss_fn` runs on the dispatcher thread ("tinkex-callback"): keep it short and never
  /// wait there on another Pending of the same runtime. If it throws, or returns gradients
  /// of the wrong shape, the pass is aborted: the result is a TINKEX_STATUS_USER error
  /// naming the cause and, as in the official SDK, the client is poisoned (its later
  /// training requests fail with that cause). Training calls submitted after this one run
  /// after its backward.
  Pending<std::string> forward_backward_custom(const DatumBatch &batch, CustomLossFn loss_fn) const {
    auto ctx = std::make_shared<detail::CustomPass>();
    ctx->fn = std::move(loss_fn);
    std::future<Result<std::string>> result = ctx->promise.get_future();
    auto holder = std::make_unique<std::shared_ptr<detail::CustomPass>>(ctx);
    tinkex_custom_loss *pass = nullptr;
    tinkex_future *fut = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_training_client_forward_backward_custom(
        p_.get(), batch.p_.get(), &detail::custom_on_forward, holder.get(), &pass, &fut, &err);
    if (s != TINKEX_STATUS_OK) {
      ctx->promise.set_value(Error::take(s, err));
      return Pending<std::string>(nullptr, std::move(result));
    }
    holder.release();  // owned by the callback
    {
      std::lock_guard<std::mutex> lock(ctx->mu);
      ctx->pass = pass;
      ctx->published = true;
    }
    ctx->cv.notify_all();
    return Pending<std::string>(detail::Handle<tinkex_future, tinkex_future_free>(fut),
                                std::move(result));
  }

  /// The model's `GetInfoResponse` JSON (fetched at creation; no I/O).
  Result<std::string> get_info() const {
    return detail::get_bytes(&tinkex_training_client_get_info, p_.get());
  }
  /// get_info().
  Result<std::string> info() const { return get_info(); }
  TrainingClient clone() const {
    return TrainingClient(tinkex_training_client_clone(p_.get()),
                          detail::service_ref(svc_.get()).release());
  }
  tinkex_training_client *get() const noexcept { return p_.get(); }

  /// Adopts `p` and `service` (the service client it belongs to, for
  /// create_sampling_client; may be null).
  explicit TrainingClient(tinkex_training_client *p, tinkex_service_client *service = nullptr)
      : p_(p), svc_(service) {}

 private:
  using JsonFn = tinkex_status (*)(const tinkex_training_client *, const uint8_t *, size_t,
                                   tinkex_done_fn, void *, tinkex_future **, tinkex_error **);
  Pending<std::string> submit_json(JsonFn fn, std::string_view json) const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return fn(p_.get(), detail::data_of(json), json.size(), cb, ud, out, err);
    });
  }

  detail::Handle<tinkex_training_client, tinkex_training_client_free> p_;
  detail::ServiceRef svc_;
};

namespace detail {

template <>
inline Result<TrainingClient> take<TrainingClient>(const tinkex_future *fut, ServiceRef service) {
  tinkex_training_client *c = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_future_take_training_client(fut, &c, &err);
  if (s != TINKEX_STATUS_OK) return Error::take(s, err);
  return TrainingClient(c, service.release());
}

template <>
inline Result<SamplingClient> take<SamplingClient>(const tinkex_future *fut, ServiceRef service) {
  tinkex_sampling_client *c = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_future_take_sampling_client(fut, &c, &err);
  if (s != TINKEX_STATUS_OK) return Error::take(s, err);
  return SamplingClient(c, service.release());
}

}  // namespace detail

inline Pending<SamplingClient> TrainingClient::save_weights_and_get_sampling_client(
    std::string_view json) const {
  return detail::submit<SamplingClient>(
      [&](auto cb, void *ud, auto out, auto err) {
        return tinkex_training_client_save_weights_and_get_sampling_client(
            p_.get(), json.empty() ? nullptr : detail::data_of(json), json.size(), cb, ud, out,
            err);
      },
      svc_.get());
}

namespace detail {

/// Builds the JSON arguments object of a REST/admin call.
class JsonArgs {
 public:
  void add(const char *k, std::string_view v) { put(k, json_quote(v)); }
  void add(const char *k, const std::string &v) { put(k, json_quote(v)); }
  void add(const char *k, const char *v) { put(k, json_quote(v)); }
  void add(const char *k, int64_t v) { put(k, std::to_string(v)); }
  void add(const char *k, bool v) { put(k, v ? "true" : "false"); }
  void add(const char *k, const std::optional<int64_t> &v) {
    put(k, v ? std::to_string(*v) : std::string("null"));
  }
  void add(const char *k, const std::optional<std::string_view> &v) {
    put(k, v ? json_quote(*v) : std::string("null"));
  }
  /// A member whose value is JSON text given by the caller.
  void raw(const char *k, std::string_view json) { put(k, std::string(json)); }
  std::string finish() { return s_ + "}"; }

 private:
  void put(const char *k, const std::string &value) {
    if (s_.size() > 1) s_ += ",";
    s_ += json_quote(k);
    s_ += ":";
    s_ += value;
  }
  std::string s_ = "{";
};

}  // namespace detail

// BEGIN GENERATED REST METHODS
// Generated by bindings/cpp/tools/gen_rest.py from src/core/rest/methods.json;
// do not edit by hand.

namespace rest {

/// Optional parameters of `list_training_runs`; unset members take the default.
struct ListTrainingRunsOptions {
  /// int, default 20.
  std::optional<int64_t> limit;
  /// int, default 0.
  std::optional<int64_t> offset;
  /// access_scope, default "owned".
  std::optional<std::string> access_scope;
  /// str?, default null.
  std::optional<std::string> project_id;
};

/// Optional parameters of `get_training_run`; unset members take the default.
struct GetTrainingRunOptions {
  /// access_scope, default "owned".
  std::optional<std::string> access_scope;
};

/// Optional parameters of `get_training_run_by_tinker_path`; unset members take the default.
struct GetTrainingRunByTinkerPathOptions {
  /// access_scope, default "owned".
  std::optional<std::string> access_scope;
};

/// Optional parameters of `list_user_checkpoints`; unset members take the default.
struct ListUserCheckpointsOptions {
  /// int, default 100.
  std::optional<int64_t> limit;
  /// int, default 0.
  std::optional<int64_t> offset;
};

/// Optional parameters of `list_sessions`; unset members take the default.
struct ListSessionsOptions {
  /// int, default 20.
  std::optional<int64_t> limit;
  /// int, default 0.
  std::optional<int64_t> offset;
  /// access_scope, default "owned".
  std::optional<std::string> access_scope;
};

/// Optional parameters of `get_session`; unset members take the default.
struct GetSessionOptions {
  /// access_scope, default "owned".
  std::optional<std::string> access_scope;
};

/// Optional parameters of `copy_weights`; unset members take the default.
struct CopyWeightsOptions {
  /// str?, default null.
  std::optional<std::string> destination_project_id;
  /// int?, default null.
  std::optional<int64_t> ttl_seconds;
  /// str?, default null.
  std::optional<std::string> weights_access_token;
};

/// Optional parameters of `get_audit_log`; unset members take the default.
struct GetAuditLogOptions {
  /// audit_event_type, default "all".
  std::optional<std::string> event_type;
  /// date?, default null.
  std::optional<std::string> day;
};

/// Optional parameters of `get_current_checkpoint_storage_usage`; unset members take the default.
struct GetCurrentCheckpointStorageUsageOptions {
  /// str?, default null.
  std::optional<std::string> project_id;
};

}  // namespace rest

namespace detail {

/// The rest methods of the table (CRTP base; `Client::call(method, args_json)`).
template <class Client>
class RestMethods {
 public:
  /// Training runs, newest first (9.1). Result: TrainingRunsResponse JSON. `GET /api/v1/training_runs`.
  Pending<std::string> list_training_runs(const rest::ListTrainingRunsOptions &options = {}) const {
    JsonArgs a;
    if (options.limit) a.add("limit", *options.limit);
    if (options.offset) a.add("offset", *options.offset);
    if (options.access_scope) a.add("access_scope", *options.access_scope);
    if (options.project_id) a.add("project_id", *options.project_id);
    return static_cast<const Client *>(this)->call("list_training_runs", a.finish());
  }
  /// One training run (9.2). Result: TrainingRun JSON. `GET /api/v1/training_runs/{training_run_id}`.
  Pending<std::string> get_training_run(std::string_view training_run_id, const rest::GetTrainingRunOptions &options = {}) const {
    JsonArgs a;
    a.add("training_run_id", training_run_id);
    if (options.access_scope) a.add("access_scope", *options.access_scope);
    return static_cast<const Client *>(this)->call("get_training_run", a.finish());
  }
  /// The training run of a tinker:// path (9.2). Result: TrainingRun JSON. `GET /api/v1/training_runs/{training_run_id}`.
  Pending<std::string> get_training_run_by_tinker_path(std::string_view tinker_path, const rest::GetTrainingRunByTinkerPathOptions &options = {}) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    if (options.access_scope) a.add("access_scope", *options.access_scope);
    return static_cast<const Client *>(this)->call("get_training_run_by_tinker_path", a.finish());
  }
  /// Checkpoints of one run (9.3). Result: CheckpointsListResponse JSON. `GET /api/v1/training_runs/{training_run_id}/checkpoints`.
  Pending<std::string> list_checkpoints(std::string_view training_run_id) const {
    JsonArgs a;
    a.add("training_run_id", training_run_id);
    return static_cast<const Client *>(this)->call("list_checkpoints", a.finish());
  }
  /// All checkpoints of the caller, newest first (9.4). Result: CheckpointsListResponse JSON. `GET /api/v1/checkpoints`.
  Pending<std::string> list_user_checkpoints(const rest::ListUserCheckpointsOptions &options = {}) const {
    JsonArgs a;
    if (options.limit) a.add("limit", *options.limit);
    if (options.offset) a.add("offset", *options.offset);
    return static_cast<const Client *>(this)->call("list_user_checkpoints", a.finish());
  }
  /// Deletes one checkpoint (9.5). Result: None JSON. `DELETE /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}`.
  Pending<std::string> delete_checkpoint(std::string_view training_run_id, std::string_view checkpoint_id) const {
    JsonArgs a;
    a.add("training_run_id", training_run_id);
    a.add("checkpoint_id", checkpoint_id);
    return static_cast<const Client *>(this)->call("delete_checkpoint", a.finish());
  }
  /// Deletes the checkpoint at a tinker:// path (9.5). Result: None JSON. `DELETE /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}`.
  Pending<std::string> delete_checkpoint_from_tinker_path(std::string_view tinker_path) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    return static_cast<const Client *>(this)->call("delete_checkpoint_from_tinker_path", a.finish());
  }
  /// Makes a checkpoint public (9.6). Result: None JSON. `POST /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/publish`.
  Pending<std::string> publish_checkpoint_from_tinker_path(std::string_view tinker_path) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    return static_cast<const Client *>(this)->call("publish_checkpoint_from_tinker_path", a.finish());
  }
  /// Makes a checkpoint private (9.6). Result: None JSON. `DELETE /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/publish`.
  Pending<std::string> unpublish_checkpoint_from_tinker_path(std::string_view tinker_path) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    return static_cast<const Client *>(this)->call("unpublish_checkpoint_from_tinker_path", a.finish());
  }
  /// Sets (or with null clears) a checkpoint's expiry (9.7). Result: None JSON. `PUT /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/ttl`.
  Pending<std::string> set_checkpoint_ttl_from_tinker_path(std::string_view tinker_path, std::optional<int64_t> ttl_seconds) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    a.add("ttl_seconds", ttl_seconds);
    return static_cast<const Client *>(this)->call("set_checkpoint_ttl_from_tinker_path", a.finish());
  }
  /// Signed download URLs of an external checkpoint's files (9.8). Result: ExternalWeightsUrlsResponse JSON. `GET /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/external_weights_urls`.
  Pending<std::string> get_external_weights_urls(std::string_view tinker_path) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    return static_cast<const Client *>(this)->call("get_external_weights_urls", a.finish());
  }
  /// Base model and LoRA settings of a checkpoint (9.9). Result: WeightsInfoResponse JSON. `POST /api/v1/weights_info`.
  Pending<std::string> get_weights_info_by_tinker_path(std::string_view tinker_path) const {
    JsonArgs a;
    a.add("tinker_path", tinker_path);
    return static_cast<const Client *>(this)->call("get_weights_info_by_tinker_path", a.finish());
  }
  /// Session ids (9.10). Result: ListSessionsResponse JSON. `GET /api/v1/sessions`.
  Pending<std::string> list_sessions(const rest::ListSessionsOptions &options = {}) const {
    JsonArgs a;
    if (options.limit) a.add("limit", *options.limit);
    if (options.offset) a.add("offset", *options.offset);
    if (options.access_scope) a.add("access_scope", *options.access_scope);
    return static_cast<const Client *>(this)->call("list_sessions", a.finish());
  }
  /// One session's runs and samplers (9.10). Result: GetSessionResponse JSON. `GET /api/v1/sessions/{session_id}`.
  Pending<std::string> get_session(std::string_view session_id, const rest::GetSessionOptions &options = {}) const {
    JsonArgs a;
    a.add("session_id", session_id);
    if (options.access_scope) a.add("access_scope", *options.access_scope);
    return static_cast<const Client *>(this)->call("get_session", a.finish());
  }
  /// Moves a session into a project (9.10). Result: None JSON. `PUT /api/v1/sessions/{session_id}/project`.
  Pending<std::string> assign_session_project(std::string_view session_id, std::string_view project_id) const {
    JsonArgs a;
    a.add("session_id", session_id);
    a.add("project_id", project_id);
    return static_cast<const Client *>(this)->call("assign_session_project", a.finish());
  }
  /// Exports a session trace; polls until ready and returns the signed URL (9.10). Result: str JSON. `GET /api/v1/sessions/{session_id}/trace_export`.
  Pending<std::string> export_session_trace(std::string_view session_id) const {
    JsonArgs a;
    a.add("session_id", session_id);
    return static_cast<const Client *>(this)->call("export_session_trace", a.finish());
  }
  /// Searches sessions (9.11, experimental). Result: SessionSearchResponse JSON. `POST /api/v1/sessions/search`.
  Pending<std::string> search_sessions(std::string_view request) const {
    JsonArgs a;
    a.raw("request", request);
    return static_cast<const Client *>(this)->call("search_sessions", a.finish());
  }
  /// Copies a checkpoint into a project by reference; returns the new tinker path (6.9). Result: str JSON. `POST /api/v1/copy_weights`.
  Pending<std::string> copy_weights(std::string_view path, const rest::CopyWeightsOptions &options = {}) const {
    JsonArgs a;
    a.add("path", path);
    if (options.destination_project_id) a.add("destination_project_id", *options.destination_project_id);
    if (options.ttl_seconds) a.add("ttl_seconds", *options.ttl_seconds);
    if (options.weights_access_token) a.add("weights_access_token", *options.weights_access_token);
    return static_cast<const Client *>(this)->call("copy_weights", a.finish());
  }
  /// A sampler's base model and weights path (7.2). Result: GetSamplerResponse JSON. `GET /api/v1/samplers/{sampler_id}`.
  Pending<std::string> get_sampler(std::string_view sampler_id) const {
    JsonArgs a;
    a.add("sampler_id", sampler_id);
    return static_cast<const Client *>(this)->call("get_sampler", a.finish());
  }
  /// Supported models (5.2). Result: GetServerCapabilitiesResponse JSON. `GET /api/v1/get_server_capabilities`.
  Pending<std::string> get_server_capabilities() const {
    JsonArgs a;
    return static_cast<const Client *>(this)->call("get_server_capabilities", a.finish());
  }
  /// The caller's identity from the JWT; no request (2.8). Result: WhoamiResponse JSON. `(none: decoded from the JWT)`.
  Pending<std::string> whoami() const {
    JsonArgs a;
    return static_cast<const Client *>(this)->call("whoami", a.finish());
  }
  /// Audit log entries (9.12; organisation role). Result: AuditLogResponse JSON. `GET /api/v1/audit`.
  Pending<std::string> get_audit_log(const rest::GetAuditLogOptions &options = {}) const {
    JsonArgs a;
    if (options.event_type) a.add("event_type", *options.event_type);
    if (options.day) a.add("day", *options.day);
    return static_cast<const Client *>(this)->call("get_audit_log", a.finish());
  }
  /// Billing usage events of a window (9.12). Result: BillingUsageResponse JSON. `GET /api/v1/billing/usage/events`.
  Pending<std::string> get_billing_usage(std::string_view starting_on, std::string_view ending_before) const {
    JsonArgs a;
    a.add("starting_on", starting_on);
    a.add("ending_before", ending_before);
    return static_cast<const Client *>(this)->call("get_billing_usage", a.finish());
  }
  /// Current checkpoint storage usage (9.12). Result: CurrentCheckpointStorageUsageResponse JSON. `GET /api/v1/billing/usage/checkpoints/current`.
  Pending<std::string> get_current_checkpoint_storage_usage(const rest::GetCurrentCheckpointStorageUsageOptions &options = {}) const {
    JsonArgs a;
    if (options.project_id) a.add("project_id", *options.project_id);
    return static_cast<const Client *>(this)->call("get_current_checkpoint_storage_usage", a.finish());
  }
};

/// The admin methods of the table (CRTP base; `Client::call(method, args_json)`).
template <class Client>
class AdminMethods {
 public:
  /// Audit log entries (9.12; organisation role). Result: AuditLogResponse JSON. `GET /api/v1/audit`.
  Pending<std::string> get_audit_log(const rest::GetAuditLogOptions &options = {}) const {
    JsonArgs a;
    if (options.event_type) a.add("event_type", *options.event_type);
    if (options.day) a.add("day", *options.day);
    return static_cast<const Client *>(this)->call("get_audit_log", a.finish());
  }
  /// Billing usage events of a window (9.12). Result: BillingUsageResponse JSON. `GET /api/v1/billing/usage/events`.
  Pending<std::string> get_billing_usage(std::string_view starting_on, std::string_view ending_before) const {
    JsonArgs a;
    a.add("starting_on", starting_on);
    a.add("ending_before", ending_before);
    return static_cast<const Client *>(this)->call("get_billing_usage", a.finish());
  }
  /// Current checkpoint storage usage (9.12). Result: CurrentCheckpointStorageUsageResponse JSON. `GET /api/v1/billing/usage/checkpoints/current`.
  Pending<std::string> get_current_checkpoint_storage_usage(const rest::GetCurrentCheckpointStorageUsageOptions &options = {}) const {
    JsonArgs a;
    if (options.project_id) a.add("project_id", *options.project_id);
    return static_cast<const Client *>(this)->call("get_current_checkpoint_storage_usage", a.finish());
  }
};

}  // namespace detail
// END GENERATED REST METHODS

/// A REST client (PROTOCOL 9): one method per entry of src/core/rest/methods.json
/// (generated), each a Pending of the result's JSON (`null` for methods without a result,
/// a JSON string for `copy_weights` and `export_session_trace`). Session-less when made by
/// `create`; `ServiceClient::create_rest_client` shares the service's transport.
class RestClient : public detail::RestMethods<RestClient> {
 public:
  /// A session-less client: `config_json` as for tinkex_service_client_new; no I/O.
  static Result<RestClient> create(const Runtime &rt, std::string_view config_json) {
    tinkex_rest_client *c = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_rest_client_new(rt.get(), detail::data_of(config_json),
                                             config_json.size(), &c, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return RestClient(c);
  }
  /// Any method of the table by name; `args_json` an object keyed by its parameter names
  /// (missing ones take the defaults; unknown keys are INVALID_JSON).
  Pending<std::string> call(std::string_view method, std::string_view args_json = "{}") const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_rest_client_call(p_.get(), detail::data_of(method), method.size(),
                                     detail::data_of(args_json), args_json.size(), cb, ud, out,
                                     err);
    });
  }
  /// The telemetry of the service client that created this client
  /// (ServiceClient::get_telemetry), or nullopt for a session-less client (`create`; the C
  /// ABI reports no telemetry of session-less holders), as the Python binding.
  Result<std::optional<std::string>> get_telemetry() const {
    if (!svc_) return std::optional<std::string>();
    return detail::telemetry_of(detail::get_bytes(&tinkex_service_client_status, svc_.get()));
  }
  RestClient clone() const {
    return RestClient(tinkex_rest_client_clone(p_.get()),
                      detail::service_ref(svc_.get()).release());
  }
  tinkex_rest_client *get() const noexcept { return p_.get(); }

  /// Adopts `p` and `service` (the service client that created it; may be null).
  explicit RestClient(tinkex_rest_client *p, tinkex_service_client *service = nullptr)
      : p_(p), svc_(service) {}

 private:
  detail::Handle<tinkex_rest_client, tinkex_rest_client_free> p_;
  detail::ServiceRef svc_;
};

/// An admin client (PROTOCOL 9.12): the table's methods whose clients include "admin".
class AdminClient : public detail::AdminMethods<AdminClient> {
 public:
  /// A session-less client: `config_json` as for tinkex_service_client_new; no I/O.
  static Result<AdminClient> create(const Runtime &rt, std::string_view config_json) {
    tinkex_admin_client *c = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_admin_client_new(rt.get(), detail::data_of(config_json),
                                              config_json.size(), &c, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return AdminClient(c);
  }
  /// Any admin method of the table by name (see RestClient::call).
  Pending<std::string> call(std::string_view method, std::string_view args_json = "{}") const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_admin_client_call(p_.get(), detail::data_of(method), method.size(),
                                      detail::data_of(args_json), args_json.size(), cb, ud, out,
                                      err);
    });
  }
  /// Always nullopt: an admin client is a session-less holder, and the C ABI reports no
  /// telemetry of those (as AdminClient.get_telemetry of the Python binding).
  Result<std::optional<std::string>> get_telemetry() const { return std::optional<std::string>(); }
  AdminClient clone() const { return AdminClient(tinkex_admin_client_clone(p_.get())); }
  tinkex_admin_client *get() const noexcept { return p_.get(); }

  explicit AdminClient(tinkex_admin_client *p) : p_(p) {}

 private:
  detail::Handle<tinkex_admin_client, tinkex_admin_client_free> p_;
};

/// The entry point.
class ServiceClient {
 public:
  /// `config_json` as documented at tinkex_service_client_new.
  static Result<ServiceClient> create(const Runtime &rt, std::string_view config_json) {
    tinkex_service_client *svc = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_service_client_new(rt.get(), detail::data_of(config_json),
                                                config_json.size(), &svc, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return ServiceClient(svc);
  }

  Pending<std::string> get_server_capabilities() const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_service_client_get_server_capabilities(p_.get(), cb, ud, out, err);
    });
  }
  /// The session id once the session exists (after the first operation);
  /// TINKEX_STATUS_WRONG_STATE before.
  Result<std::string> session_id() const {
    return detail::get_bytes(&tinkex_service_client_session_id, p_.get());
  }
  /// `{"base_model": "...", "lora_config": {"rank": 32}}`.
  Pending<TrainingClient> create_lora_training_client(std::string_view json) const {
    return submit_json<TrainingClient>(&tinkex_service_client_create_lora_training_client, json);
  }
  /// `{"path": "tinker://...", "optimizer": false, "base_model"?, "user_metadata"?,
  /// "weights_access_token"?, "optimizer_config"?}`.
  Pending<TrainingClient> create_training_client_from_state(std::string_view json) const {
    return submit_json<TrainingClient>(
        &tinkex_service_client_create_training_client_from_state, json);
  }
  /// create_training_client_from_state with `"optimizer": true` put into `json` (one that
  /// has `optimizer` too is TINKEX_STATUS_INVALID_JSON): restores the optimizer state too.
  Pending<TrainingClient> create_training_client_from_state_with_optimizer(std::string_view json) const {
    return create_training_client_from_state(detail::with_member(json, R"("optimizer":true)"));
  }
  /// `{"model_path": "tinker://..."}`, `{"base_model": "..."}` or `{"sampling_session_id":
  /// "..."}` (an existing sampling session of this session; PROTOCOL 12.1), plus
  /// `"retry_config"?`, `"record_stability_info"?`.
  Pending<SamplingClient> create_sampling_client(std::string_view json) const {
    return submit_json<SamplingClient>(&tinkex_service_client_create_sampling_client, json);
  }
  Result<RestClient> create_rest_client() const {
    tinkex_rest_client *r = nullptr;
    tinkex_error *err = nullptr;
    tinkex_status s = tinkex_service_client_create_rest_client(p_.get(), &r, &err);
    if (s != TINKEX_STATUS_OK) return Error::take(s, err);
    return RestClient(r, detail::service_ref(p_.get()).release());
  }
  /// `{"path", "ttl_seconds"?, "weights_access_token"?}`: copies a checkpoint into the
  /// configured project (PROTOCOL 6.9); result: the new path as a JSON string.
  Pending<std::string> copy_weights(std::string_view json) const {
    return submit_json(&tinkex_service_client_copy_weights, json);
  }
  /// `{"name", "inputs": [{"name", "rank"}], "graph": {...}}`: registers a server-side
  /// custom loss (5.10); result `{"loss_id"}`.
  Pending<std::string> create_custom_loss(std::string_view json) const {
    return submit_json(&tinkex_service_client_create_custom_loss, json);
  }
  /// `{"training_run_id", "optimizer"?: true}`: a training client resumed from the run's
  /// latest training checkpoint.
  Pending<TrainingClient> resume_training_run(std::string_view json) const {
    return submit_json<TrainingClient>(&tinkex_service_client_resume_training_run, json);
  }
  /// The web console URL of the session (PROTOCOL 20.2) as a JSON string; no I/O.
  Result<std::string> get_console_url() const {
    return detail::get_bytes(&tinkex_service_client_get_console_url, p_.get());
  }
  /// `{"session_id", "queue_state", "queue_state_reason", "billing_paused_ms",
  /// "backoff_remaining_ms", "last_progress_ms_ago", "operations_waiting",
  /// "operations_in_flight", "telemetry"}`: introspection (no I/O).
  Result<std::string> status() const {
    return detail::get_bytes(&tinkex_service_client_status, p_.get());
  }
  /// The official `get_telemetry()`: the `telemetry` member of status() (the core's
  /// telemetry counters) as JSON text, or nullopt when telemetry is off (the configuration's
  /// `telemetry: false` or TINKER_TELEMETRY). Read again at each call; no I/O.
  Result<std::optional<std::string>> get_telemetry() const {
    return detail::telemetry_of(status());
  }

  /// Finishes the session; `{}` means success.
  Pending<std::string> close(std::string_view json = "{}") const {
    return detail::submit<std::string>([&](auto cb, void *ud, auto out, auto err) {
      return tinkex_service_client_close(p_.get(), detail::data_of(json), json.size(), cb, ud,
                                         out, err);
    });
  }

  /// Calls `handler` on the dispatcher thread for every event, in order, until the
  /// Subscription is destroyed; events already queued then may still be delivered, after
  /// which `handler` is destroyed on the dispatcher. So let `handler` own (or share) what
  /// it touches rather than capture locals by reference.
  Result<Subscription> subscribe(std::function<void(const Event &)> handler) const {
    return Subscription::to(p_.get(), std::move(handler));
  }

  ServiceClient clone() const { return ServiceClient(tinkex_service_client_clone(p_.get())); }
  tinkex_service_client *get() const noexcept { return p_.get(); }

 private:
  explicit ServiceClient(tinkex_service_client *p) : p_(p) {}

  using JsonFn = tinkex_status (*)(const tinkex_service_client *, const uint8_t *, size_t,
                                   tinkex_done_fn, void *, tinkex_future **, tinkex_error **);
  /// A call with a JSON argument; a client result keeps a reference to this service client.
  template <class T = std::string>
  Pending<T> submit_json(JsonFn fn, std::string_view json) const {
    return detail::submit<T>(
        [&](auto cb, void *ud, auto out, auto err) {
          return fn(p_.get(), detail::data_of(json), json.size(), cb, ud, out, err);
        },
        std::is_same_v<T, std::string> ? nullptr : p_.get());
  }

  detail::Handle<tinkex_service_client, tinkex_service_client_free> p_;
};

inline Pending<SamplingClient> SamplingClient::create(const ServiceClient &service,
                                                      std::string_view json) {
  return service.create_sampling_client(json);
}

inline Pending<SamplingClient> TrainingClient::create_sampling_client(std::string_view json) const {
  if (!svc_)
    return detail::failed<SamplingClient>(detail::binding_error(
        TINKEX_STATUS_WRONG_STATE, "wrong_state",
        "create_sampling_client: this training client has no service client (made from a C "
        "handle)"));
  return detail::submit<SamplingClient>(
      [&](auto cb, void *ud, auto out, auto err) {
        return tinkex_service_client_create_sampling_client(svc_.get(), detail::data_of(json),
                                                            json.size(), cb, ud, out, err);
      },
      svc_.get());
}

/// Parses a `tinker://{training_run_id}/{kind}/{name}` checkpoint path with the official
/// SDK's rules (tinkex_tinker_path_parse). Result: `{"training_run_id", "kind", "name",
/// "checkpoint_id"}` JSON; TINKEX_STATUS_INVALID_ARG (the message says why) when invalid.
inline Result<std::string> parse_tinker_path(std::string_view path) {
  tinkex_bytes *b = nullptr;
  tinkex_error *err = nullptr;
  tinkex_status s = tinkex_tinker_path_parse(detail::data_of(path), path.size(), &b, &err);
  if (s != TINKEX_STATUS_OK) return Error::take(s, err);
  return detail::bytes_to_string(b);
}

/// The library version ("0.1.0") and whether the loaded library matches this header's ABI.
inline std::string version() { return tinkex_version(); }
/// `MAJOR * 1000000 + MINOR * 1000 + PATCH` of the loaded library.
inline uint32_t version_number() noexcept { return tinkex_version_number(); }
inline bool abi_matches() noexcept {
  // Through variables: a literal minor of 0 would make `>=` a -Wtype-limits warning.
  const uint32_t major = TINKEX_ABI_VERSION_MAJOR, minor = TINKEX_ABI_VERSION_MINOR;
  return tinkex_abi_version_major() == major && tinkex_abi_version_minor() >= minor;
}

}  // namespace tinkex

#endif  // TINKEX_HPP
