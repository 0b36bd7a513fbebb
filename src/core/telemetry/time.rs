//! Time as text, formatted like Python's SDK: UTC ISO 8601 timestamps with microseconds
//! and `timedelta` durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// UTC ISO 8601 with microseconds and `Z`, e.g. `2026-07-01T12:00:01.250000Z`.
pub fn format_timestamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Python's `str(timedelta)`: `H:MM:SS.ffffff`, the fraction omitted when zero, whole days
/// prefixed as `1 day, ` / `N days, ` (e.g. `0:05:12.500000`, `0:00:03`).
pub fn format_timedelta(d: Duration) -> String {
    let total = d.as_secs();
    let rem = total % 86_400;
    let mut s = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let micros = d.subsec_micros();
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    match total / 86_400 {
        0 => s,
        1 => format!("1 day, {s}"),
        n => format!("{n} days, {s}"),
    }
}
