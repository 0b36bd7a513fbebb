//! Credential redaction: API keys and JWTs inside strings, and header or credential keys of
//! generic event data, never leave the process.

use serde_json::Value;

/// Replaces anything that looks like a credential: an API key `tml-…` becomes
/// `tml-<redacted>`, a JWT `eyJ….…` becomes `eyJ<redacted>`. Only at a word start, so
/// `text/html-x` is kept.
pub fn redact_secrets(s: &str) -> String {
    fn key_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word_start && bytes[i..].starts_with(b"tml-") {
            let mut end = i + 4;
            while end < bytes.len() && key_char(bytes[end]) {
                end += 1;
            }
            if end > i + 4 {
                out.push_str(&s[copied..i]);
                out.push_str("tml-<redacted>");
                copied = end;
                i = end;
                continue;
            }
        } else if at_word_start && bytes[i..].starts_with(b"eyJ") {
            let mut end = i + 3;
            while end < bytes.len() && (key_char(bytes[end]) || bytes[end] == b'.') {
                end += 1;
            }
            if s[i..end].contains('.') {
                out.push_str(&s[copied..i]);
                out.push_str("eyJ<redacted>");
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

/// Keys of generic event data that are removed (headers never leave the process).
const REMOVED_KEYS: [&str; 3] = ["request_headers", "response_headers", "headers"];
/// Keys of generic event data whose values are replaced by `<redacted>`.
const REDACTED_KEYS: [&str; 8] = [
    "x-api-key",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "cf-access-client-secret",
    "credential",
    "token",
];

/// Sanitizes event data recursively: strings pass through [`redact_secrets`], header keys
/// (`request_headers`, `response_headers`, `headers`) are removed and credential keys
/// (`x-api-key`, `authorization`, `cookie`, `token`, …) get the value `<redacted>` (keys
/// compared case-insensitively).
pub fn sanitize_data(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_secrets(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(sanitize_data).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if REMOVED_KEYS.contains(&lower.as_str()) {
                        None
                    } else if REDACTED_KEYS.contains(&lower.as_str()) {
                        Some((redact_secrets(&k), Value::String("<redacted>".into())))
                    } else {
                        Some((redact_secrets(&k), sanitize_data(v)))
                    }
                })
                .collect(),
        ),
        other => other,
    }
}
