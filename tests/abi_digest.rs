//! The ABI version rule, checked (docs/c-api.md, "ABI versions"): the declarations of
//! `include/tinkex.h` (comments and whitespace normalised away, so doc edits do not count)
//! are recorded in `abi/tinkex.abi` (one per line) and their SHA-256 in
//! `abi/tinkex.abi.sha256`, together with the ABI version. This test fails when the header's
//! declarations differ from the recorded ones; the message says which bump is due.
//!
//! Update (after bumping `TINKEX_ABI_VERSION_MAJOR`/`_MINOR` in `src/ffi/version.rs` and
//! regenerating the header):
//!
//! ```text
//! TINKEX_UPDATE_ABI=1 cargo test --release --test abi_digest
//! ```
//!
//! The update refuses to record changed declarations under an unchanged version: an
//! addition needs a minor bump (or a major one), a change or removal a major bump.

use std::collections::BTreeSet;
use std::path::PathBuf;
use tinkex::ffi::version::{TINKEX_ABI_VERSION_MAJOR, TINKEX_ABI_VERSION_MINOR};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Removes `/* */` and `//` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            i = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.push(' ');
        } else if b[i..].starts_with(b"//") {
            i = text[i..].find('\n').map_or(b.len(), |e| i + e);
        } else if b[i] == b'"' {
            // A string literal (e.g. in a #define): copied as is.
            let end = text[i + 1..].find('"').map_or(b.len(), |e| i + 1 + e + 1);
            out.push_str(&text[i..end]);
            i = end;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Macros that carry versions, not declarations (the library version changes every
/// release; the ABI version is recorded separately).
fn is_version_define(line: &str) -> bool {
    ["TINKEX_VERSION", "TINKEX_ABI_VERSION_"].iter().any(|p| {
        line.split_whitespace()
            .nth(1)
            .is_some_and(|n| n.starts_with(p))
    })
}

/// The header's declarations, normalised: `#define`s (other than versions) and top-level
/// statements (up to `;` outside braces), whitespace collapsed. Other preprocessor lines
/// (include guards, `#if`) are dropped; the branches they select between are all kept.
pub fn declarations(header: &str) -> BTreeSet<String> {
    let text = strip_comments(header);
    let mut decls = BTreeSet::new();
    let mut body = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('#') {
            let rest = rest.trim_start();
            if rest.starts_with("define") && !is_version_define(t) {
                // The include guard's bare `#define TINKEX_H` is not a declaration.
                if t.split_whitespace().count() > 2 {
                    decls.insert(t.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    // C++'s `extern "C" { ... }` wraps the functions: not a scope of its own here (its
    // closing brace is dropped when the depth would go negative).
    let body = body.replace("extern \"C\" {", "");
    let mut depth = 0i32;
    let mut stmt = String::new();
    for ch in body.chars() {
        if ch == '}' && depth == 0 {
            continue;
        }
        stmt.push(ch);
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                let norm = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
                if !norm.is_empty() {
                    decls.insert(norm);
                }
                stmt.clear();
            }
            _ => {}
        }
    }
    decls
}

/// SHA-256 (hex) through rustls' ring provider (already a dependency).
fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().expect("a TLS 1.3 suite").common.hash_provider;
    assert_eq!(
        hash.algorithm(),
        rustls::crypto::hash::HashAlgorithm::SHA256
    );
    hash.hash(data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest_of(decls: &BTreeSet<String>) -> String {
    let mut text = String::new();
    for d in decls {
        text.push_str(d);
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

struct Recorded {
    major: u32,
    minor: u32,
    digest: String,
}

fn parse_recorded(text: &str) -> Recorded {
    let mut major = None;
    let mut minor = None;
    let mut digest = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut it = line.split_whitespace();
        match (it.next(), it.next()) {
            (Some("abi_version"), Some(v)) => {
                let (a, b) = v.split_once('.').expect("abi_version MAJOR.MINOR");
                major = Some(a.parse().unwrap());
                minor = Some(b.parse().unwrap());
            }
            (Some("sha256"), Some(d)) => digest = Some(d.to_string()),
            _ => {}
        }
    }
    Recorded {
        major: major.expect("abi_version line"),
        minor: minor.expect("abi_version line"),
        digest: digest.expect("sha256 line"),
    }
}

fn render(decls: &BTreeSet<String>) -> (String, String) {
    let list: String = std::iter::once(
        "# The declarations of include/tinkex.h, normalised (tests/abi_digest.rs). Generated:\n\
         # TINKEX_UPDATE_ABI=1 cargo test --release --test abi_digest\n"
            .to_string(),
    )
    .chain(decls.iter().map(|d| format!("{d}\n")))
    .collect();
    let sum = format!(
        "# SHA-256 of the normalised declarations of include/tinkex.h (abi/tinkex.abi) and the\n\
         # ABI version they belong to. Checked by tests/abi_digest.rs; regenerate with\n\
         # TINKEX_UPDATE_ABI=1 cargo test --release --test abi_digest\n\
         abi_version {TINKEX_ABI_VERSION_MAJOR}.{TINKEX_ABI_VERSION_MINOR}\n\
         sha256 {}\n",
        digest_of(decls)
    );
    (list, sum)
}

/// What the version must become for a change from `old` to `new` declarations, or `None`
/// when the current version is right.
fn required_bump(old: &BTreeSet<String>, new: &BTreeSet<String>, rec: &Recorded) -> Option<String> {
    let removed: Vec<_> = old.difference(new).collect();
    let added: Vec<_> = new.difference(old).collect();
    let (major, minor) = (TINKEX_ABI_VERSION_MAJOR, TINKEX_ABI_VERSION_MINOR);
    if !removed.is_empty() {
        if major > rec.major && minor == 0 {
            return None;
        }
        return Some(format!(
            "declarations were changed or removed (e.g. {:?}): bump TINKEX_ABI_VERSION_MAJOR \
             to {} and reset the minor to 0 (now {major}.{minor}, recorded {}.{})",
            removed[0],
            rec.major + 1,
            rec.major,
            rec.minor
        ));
    }
    if !added.is_empty() {
        if (major == rec.major && minor > rec.minor) || (major > rec.major && minor == 0) {
            return None;
        }
        return Some(format!(
            "declarations were added (e.g. {:?}): bump TINKEX_ABI_VERSION_MINOR to {} (now \
             {major}.{minor}, recorded {}.{})",
            added[0],
            rec.minor + 1,
            rec.major,
            rec.minor
        ));
    }
    if (major, minor) != (rec.major, rec.minor) {
        return Some(format!(
            "the ABI version changed ({}.{} -> {major}.{minor}) but no declaration did",
            rec.major, rec.minor
        ));
    }
    None
}

#[test]
fn the_header_declarations_match_the_recorded_abi() {
    let header = std::fs::read_to_string(root().join("include/tinkex.h")).unwrap();
    let new = declarations(&header);
    assert!(
        new.iter().any(|d| d.contains("tinkex_runtime_new(")),
        "parser sanity"
    );
    let list_path = root().join("abi/tinkex.abi");
    let sum_path = root().join("abi/tinkex.abi.sha256");
    let old_list = std::fs::read_to_string(&list_path).unwrap_or_default();
    let old: BTreeSet<String> = old_list
        .lines()
        .filter(|l| !l.starts_with("# ") && !l.is_empty())
        .map(str::to_string)
        .collect();
    let rec = std::fs::read_to_string(&sum_path)
        .ok()
        .map(|t| parse_recorded(&t));
    let update = std::env::var("TINKEX_UPDATE_ABI").is_ok_and(|v| v == "1");
    let current_digest = digest_of(&new);
    let matches = rec.as_ref().is_some_and(|r| {
        r.digest == current_digest
            && (r.major, r.minor) == (TINKEX_ABI_VERSION_MAJOR, TINKEX_ABI_VERSION_MINOR)
    });
    if matches {
        // The list must agree with the digest too (it is what the bump rule reads).
        assert_eq!(
            digest_of(&old),
            current_digest,
            "abi/tinkex.abi is stale: regenerate"
        );
        return;
    }
    if let Some(rec) = &rec {
        // The recorded list must be the one the recorded digest was made from.
        assert_eq!(
            digest_of(&old),
            rec.digest,
            "abi/tinkex.abi does not match abi/tinkex.abi.sha256 (edited by hand?)"
        );
        if let Some(why) = required_bump(&old, &new, rec) {
            panic!("ABI version rule: {why}. Then run TINKEX_UPDATE_ABI=1 cargo test --release --test abi_digest");
        }
    }
    let (list, sum) = render(&new);
    if update {
        std::fs::create_dir_all(root().join("abi")).unwrap();
        std::fs::write(&list_path, list).unwrap();
        std::fs::write(&sum_path, sum).unwrap();
        eprintln!("updated abi/tinkex.abi and abi/tinkex.abi.sha256");
        return;
    }
    panic!(
        "include/tinkex.h declarations changed and the ABI version was bumped accordingly, but \
         the record is stale: run TINKEX_UPDATE_ABI=1 cargo test --release --test abi_digest \
         and commit abi/"
    );
}

#[test]
fn comments_and_whitespace_do_not_count_but_declarations_do() {
    let a =
        "/* doc */\nTINKEX_MUST_USE\ntinkex_status tinkex_x(const uint8_t *p,\n    size_t n);\n";
    let b = "/**\n * other doc\n */\nTINKEX_MUST_USE tinkex_status   tinkex_x(const uint8_t *p, size_t n); // c\n";
    let c = "TINKEX_MUST_USE tinkex_status tinkex_x(const uint8_t *p, size_t n, int z);\n";
    assert_eq!(declarations(a), declarations(b));
    assert_ne!(declarations(a), declarations(c));
    let rec = Recorded {
        major: TINKEX_ABI_VERSION_MAJOR,
        minor: TINKEX_ABI_VERSION_MINOR,
        digest: String::new(),
    };
    // Same version: a change needs a major bump, an addition a minor one.
    assert!(required_bump(&declarations(a), &declarations(c), &rec)
        .unwrap()
        .contains("MAJOR"));
    let added = format!("{a}void tinkex_y(void);\n");
    assert!(required_bump(&declarations(a), &declarations(&added), &rec)
        .unwrap()
        .contains("MINOR"));
    assert!(required_bump(&declarations(a), &declarations(b), &rec).is_none());
    // Enum bodies are one declaration; `;` inside braces does not split.
    let e = "typedef struct s { int a; int b; } s;\n";
    assert_eq!(declarations(e).len(), 1);
}
