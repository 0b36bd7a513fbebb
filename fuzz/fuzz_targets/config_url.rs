//! URL and credential validation: `Config::builder()` with a fuzzed base URL and API key
//! (split at the first 0xff byte; the first byte of the key part chooses
//! `allow_insecure_http`), then `build()`. A built config must also give a service client.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinkex::core::{Config, ServiceClient};

fuzz_target!(|data: &[u8]| {
    let (url, rest) = tinkex_fuzz::split2(data);
    let (insecure, key) = match rest.split_first() {
        Some((b, k)) => (b & 1 == 1, k),
        None => (false, rest),
    };
    let url = String::from_utf8_lossy(url).into_owned();
    let url_for_check = url.clone();
    let key = String::from_utf8_lossy(key).into_owned();
    let built = Config::builder()
        .base_url(url)
        .api_key(key.clone())
        .telemetry(false)
        .allow_insecure_http(insecure)
        .build();
    if let Ok(config) = built {
        // Debug output of a config must not reveal a (non-trivial) key.
        let dbg = format!("{config:?}");
        // (The Debug output may show the URL, so a key that is part of the URL is not a leak.)
        // The URL is shown in its parsed form (host lower-cased, escapes in `Debug`), so
        // a key that is part of the URL in any case is not a leak either (found by the long
        // run: `https://ti'nk'tml-abcDefg…` shows as `…tml-abcdefg…`).
        let url_lower = url_for_check.to_lowercase();
        if key.len() >= 12 && !url_lower.contains(&key.to_lowercase()) {
            assert!(!dbg.contains(&key), "Debug of Config shows the API key");
        }
        let _ = ServiceClient::new(config);
    }
});
