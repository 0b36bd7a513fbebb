//! Treating untrusted text safely: server-supplied strings bounded and escaped before they
//! reach an error message or a log line, URLs shown without their secrets, ids checked
//! before they become part of a request path, and parser messages stripped of the values
//! they would otherwise echo (see `docs/security.md`).

use crate::core::error::{Error, Result};
use std::borrow::Cow;

/// The most bytes of any server-supplied text kept in an error message, an error body or a
/// log line; longer text is cut and marked (`…[N bytes cut]`).
pub const MAX_SERVER_TEXT: usize = 4096;

/// `s` with control characters escaped (`\n`, `\u{1b}`, …) and cut to at most `max` bytes of
/// the original, with a marker saying how much was cut. Printable text (any script) is kept
/// as it is, so ordinary messages are unchanged.
pub fn bounded(s: &str, max: usize) -> String {
    let (head, cut) = if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        (&s[..end], s.len() - end)
    } else {
        (s, 0)
    };
    let mut out = String::with_capacity(head.len() + 24);
    for c in head.chars() {
        push_escaped(&mut out, c);
    }
    if cut > 0 {
        out.push_str(&format!("…[{cut} bytes cut]"));
    }
    out
}

/// Server-supplied text for a message or log line: [`bounded`] to [`MAX_SERVER_TEXT`].
pub fn server_text(s: &str) -> String {
    bounded(s, MAX_SERVER_TEXT)
}

/// `s` with control characters escaped; borrowed when there is nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(needs_escape) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            push_escaped(&mut out, c);
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// A URL as it may be shown: scheme, host, port and path, without user name, password,
/// query or fragment (a signed URL's query is an access token). Text that is not a URL is
/// shown as `<invalid URL>`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            printable(u.as_str()).into_owned()
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}

/// Checks an id that will be put into a request path without URL encoding
/// (PROTOCOL.md 1.2). `slashes` allows `/` between non-empty segments (checkpoint ids such
/// as `weights/step-100`). Rejected: empty input or segments, `.` and `..` segments, `?`,
/// `#`, `%`, `\`, whitespace and control characters, anything longer than 1 KiB.
pub fn check_path_id(id: &str, what: &str, slashes: bool) -> Result<()> {
    let reject = |why: &str| {
        Err(Error::user(format!(
            "invalid {what} {:?}: {why}",
            bounded(id, 200)
        )))
    };
    if id.is_empty() {
        return reject("it is empty");
    }
    if id.len() > 1024 {
        return reject("it is longer than 1024 bytes");
    }
    if let Some(c) = id
        .chars()
        .find(|&c| matches!(c, '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
    {
        return reject(&format!("it contains {c:?}"));
    }
    if !slashes && id.contains('/') {
        return reject("it contains '/'");
    }
    for segment in id.split('/') {
        match segment {
            "" => return reject("it has an empty path segment"),
            "." | ".." => return reject("it has a '.' or '..' path segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an id the server returned before it is used in a path or a log line: the rules of
/// [`check_path_id`] without `/`, failing as a malformed response (kind `Fatal`).
pub fn check_server_id(id: &str, what: &str) -> Result<()> {
    check_path_id(id, what, false)
        .map_err(|e| Error::fatal(format!("malformed response from the server: {}", e.message)))
}

/// A serde error message with the offending value removed: serde echoes the value it could
/// not accept (`invalid type: string "tml-…", expected a boolean`), and a misplaced value
/// can be a secret. Keeps the kind of value, what was expected, and the position.
pub fn serde_message(e: &dyn std::fmt::Display) -> String {
    let msg = e.to_string();
    let mut out = msg.clone();
    for marker in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(start) = msg.find(marker) {
            let after = start + marker.len();
            if let Some(rel_end) = msg[after..].find(", expected") {
                let value = &msg[after..after + rel_end];
                // Keep the kind word(s) serde puts before the value: `string`, `integer`, …
                let kind = value
                    .split([' ', '`', '"'])
                    .next()
                    .filter(|k| !k.is_empty())
                    .unwrap_or("value");
                out = format!(
                    "{}{marker}{kind} <redacted>{}",
                    &msg[..start],
                    &msg[after + rel_end..]
                );
            }
            break;
        }
    }
    bounded(&out, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_escapes_control_characters_and_marks_the_cut() {
        assert_eq!(bounded("plain text – ok", 100), "plain text – ok");
        assert_eq!(
            bounded("a\nINFO fake line\u{1b}[31m", 100),
            "a\\nINFO fake line\\u{1b}[31m"
        );
        let long = "x".repeat(10_000);
        let b = bounded(&long, 4096);
        assert!(b.starts_with(&"x".repeat(4096)));
        assert!(b.ends_with("…[5904 bytes cut]"), "{}", &b[4090..]);
        // Never splits a character.
        let s = "é".repeat(3000);
        assert!(bounded(&s, 4095).contains("bytes cut"));
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            redact_url("https://user:tml-secret@h.example:8443/p/a?sig=tok#f"),
            "https://h.example:8443/p/a"
        );
        assert_eq!(redact_url("not a url"), "<invalid URL>");
    }

    #[test]
    fn path_ids_cannot_rewrite_the_request() {
        for bad in [
            "../../healthz",
            "x?limit=1#",
            "a/./b",
            "",
            "a//b",
            "a b",
            "a%2e",
            "a\nb",
            "..",
            "a\\b",
        ] {
            assert!(check_path_id(bad, "run id", true).is_err(), "{bad:?}");
        }
        assert!(check_path_id("weights/step-100", "checkpoint id", true).is_ok());
        assert!(check_path_id("weights/step-100", "run id", false).is_err());
        assert!(check_path_id("sess-1:train:0", "run id", false).is_ok());
        assert!(check_path_id("a.b..c", "run id", false).is_ok());
    }

    #[test]
    fn serde_messages_do_not_echo_values() {
        let e = serde_json::from_str::<bool>("\"tml-SECRET\"").unwrap_err();
        let m = serde_message(&e);
        assert!(!m.contains("SECRET"), "{m}");
        assert!(
            m.contains("invalid type: string <redacted>, expected a boolean"),
            "{m}"
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            n: u8,
        }
        let e = serde_json::from_str::<S>("{\"n\": 300}").unwrap_err();
        assert!(!serde_message(&e).contains("300"), "{}", serde_message(&e));
    }
}
