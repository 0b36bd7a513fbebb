//! Output: a table for people (the official CLI's rich tables, drawn with the same box
//! characters) or JSON for scripts (`--format json`), and the official CLI's formatting of
//! sizes, times and booleans. Every server-supplied string is shown with control characters
//! escaped, so a hostile name cannot drive the terminal.

use serde::Serialize;
use std::io::Write;

/// The global `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables (default).
    Table,
    /// Machine-readable JSON on stdout.
    Json,
}

/// A titled table of text cells.
#[derive(Debug, Default)]
pub struct Table {
    /// Shown above the table.
    pub title: Option<String>,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(columns: &[&str]) -> Self {
        Table {
            title: None,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// A two-column Property/Value table.
    pub fn properties(title: impl Into<String>) -> Self {
        let mut t = Table::new(&["Property", "Value"]);
        t.title = Some(title.into());
        t
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as text (rich's "heavy head" box style).
    pub fn render(&self) -> String {
        let clean = |s: &str| tinkex::core::sanitize::printable(s).into_owned();
        let header: Vec<String> = self.columns.iter().map(|c| clean(c)).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| clean(c)).collect())
            .collect();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(width(c));
                }
            }
        }
        let line = |l: &str, fill: &str, mid: &str, r: &str| {
            let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
            format!("{l}{}{r}\n", parts.join(mid))
        };
        let cells = |edge: &str, sep: &str, cells: &[String]| {
            let parts: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let c = cells.get(i).map(String::as_str).unwrap_or("");
                    format!(" {c}{} ", " ".repeat(w - width(c)))
                })
                .collect();
            format!("{edge}{}{edge}\n", parts.join(sep))
        };
        let mut out = String::new();
        if let Some(t) = &self.title {
            out.push_str(&clean(t));
            out.push('\n');
        }
        if widths.is_empty() {
            return out;
        }
        out.push_str(&line("┏", "━", "┳", "┓"));
        out.push_str(&cells("┃", "┃", &header));
        out.push_str(&line("┡", "━", "╇", "┩"));
        for r in &rows {
            out.push_str(&cells("│", "│", r));
        }
        out.push_str(&line("└", "─", "┴", "┘"));
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print_text(&self.render());
    }
}

/// Writes `text` to stdout (a closed pipe is not an error worth a panic).
pub fn print_text(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Prints a line on stdout.
pub fn println_text(text: &str) {
    print_text(&format!("{text}\n"));
}

/// Prints `value` as indented JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    print_text(&format!("{text}\n"));
}

/// A message for people on stderr (progress notes, warnings), never mixed into stdout.
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// `1.2 GB`-style sizes (powers of 1024, as the official CLI).
pub fn format_size(bytes: u64) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "KB", "MB", "GB", "TB", "PB"] {
        if size < 1024.0 {
            return if unit == "B" {
                format!("{} B", size as u64)
            } else {
                format!("{size:.1} {unit}")
            };
        }
        size /= 1024.0;
    }
    format!("{size:.1} EB")
}

/// `Yes` / `No`.
pub fn format_bool(v: bool) -> String {
    if v { "Yes" } else { "No" }.to_string()
}

/// `N/A` for a missing value.
pub fn format_optional<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "N/A".into())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Unix seconds of an RFC 3339 / ISO 8601 datetime (`2026-07-01T12:00:00Z`, fractions and
/// `±HH:MM` offsets; no zone means UTC), or `None`.
pub fn parse_datetime(s: &str) -> Option<f64> {
    let s = s.trim();
    if !tinkex::core::rest::is_rfc3339(s, false) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let rest = &s[16..];
    let (secs, tz) = match rest.strip_prefix(':') {
        Some(r) => {
            let end = r.find(['Z', 'z', '+', '-']).unwrap_or(r.len());
            (r[..end].parse::<f64>().ok()?, &r[end..])
        }
        None => (0.0, rest),
    };
    let offset = match tz {
        "" | "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let digits: String = o[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let hh: i64 = digits.get(0..2)?.parse().ok()?;
            let mm: i64 = digits.get(2..4)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86400 + h * 3600 + mi * 60 - offset) as f64 + secs)
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The civil date (`YYYY-MM-DD`, UTC) of Unix seconds (1970-01-01 for earlier times).
fn civil_date(t: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    tinkex::core::telemetry::format_timestamp(at)[..10].to_string()
}

/// A time as the official CLI shows it: `3 hours ago`, `in 2 days`, `just now`, or the date
/// when more than 30 days away; the text itself when it is not a datetime; `N/A` when
/// missing.
pub fn format_timestamp(s: Option<&str>) -> String {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return "N/A".into();
    };
    let Some(t) = parse_datetime(s) else {
        return s.to_string();
    };
    let delta = unix_now() - t;
    let future = delta < 0.0;
    let secs = delta.abs() as i64;
    let days = secs / 86400;
    let (prefix, suffix) = if future { ("in ", "") } else { ("", " ago") };
    let plural =
        |n: i64, unit: &str| format!("{prefix}{n} {unit}{}{suffix}", if n > 1 { "s" } else { "" });
    if days > 30 {
        civil_date(t)
    } else if days > 7 {
        plural(days / 7, "week")
    } else if days > 0 {
        plural(days, "day")
    } else if secs > 3600 {
        plural(secs / 3600, "hour")
    } else if secs > 60 {
        plural(secs / 60, "minute")
    } else if future {
        "in less than a minute".into()
    } else {
        "just now".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KB");
        assert_eq!(format_size(83886080), "80.0 MB");
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_datetime("1970-01-02T00:00:00+01:00"), Some(82800.0));
        assert_eq!(parse_datetime("2026-07-01T12:00:00.5Z"), Some(1782907200.5));
        assert_eq!(parse_datetime("nonsense"), None);
        assert_eq!(civil_date(1782907200.0), "2026-07-01");
        assert_eq!(format_timestamp(Some("2001-02-03T00:00:00Z")), "2001-02-03");
        assert_eq!(format_timestamp(None), "N/A");
    }

    #[test]
    fn tables_escape_control_characters() {
        let mut t = Table::new(&["A", "B"]).title("t");
        t.row(["x\u{1b}[31m", "yy"]);
        let text = t.render();
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.starts_with("t\n┏"), "{text}");
    }
}
