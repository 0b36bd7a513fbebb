//! Usage the emulator processed, for billing usage (PROTOCOL.md 9.12) and session traces
//! (9.10 trace export): every training request (with the tokens of a forward/backward), every
//! sample (prompt tokens when submitted, sampled tokens when done). Checkpoint events come
//! from the checkpoint store ([`crate::checkpoints::StoreEvent`]). Kept in memory (the newest
//! [`MAX_EVENTS`]); times are on the checkpoint store's clock.

use crate::futures::Outcome;
use crate::state::AppState;
use crate::training::TrainOp;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use tinkex::core::types::SampleRequest;

/// Usage events kept.
pub const MAX_EVENTS: usize = 200_000;

/// One thing the emulator processed.
#[derive(Clone, Debug, Serialize)]
pub struct UsageEvent {
    /// Unix seconds (store clock).
    pub time: f64,
    /// Session it belongs to.
    pub session_id: String,
    /// Model id or sampling session id.
    pub target: String,
    /// Base model.
    pub base_model: String,
    /// Request kind (`ForwardBackward`, `OptimStep`, `Sample`, …).
    pub request_type: String,
    /// Request id.
    pub request_id: String,
    /// `training`, `sampling_prefill`, `sampling_sample`, or `none` (no tokens billed).
    pub usage: &'static str,
    /// Tokens.
    pub tokens: u64,
}

/// The usage log.
#[derive(Default)]
pub struct UsageLog {
    events: Mutex<VecDeque<UsageEvent>>,
}

impl UsageLog {
    fn push(&self, e: UsageEvent) {
        let mut ev = self.events.lock().unwrap();
        if ev.len() >= MAX_EVENTS {
            ev.pop_front();
        }
        ev.push_back(e);
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Vec<UsageEvent> {
        self.events.lock().unwrap().iter().cloned().collect()
    }
}

/// Hook: a training request was accepted (called once per `seq_id`, repeats excluded).
pub fn on_train_request(
    app: &AppState,
    session_id: &str,
    model_id: &str,
    base_model: &str,
    kind: &str,
    request_id: &str,
    op: &TrainOp,
) {
    let tokens: u64 = match op {
        TrainOp::ForwardBackward { data, .. } => data.iter().map(|d| d.tokens.len() as u64).sum(),
        _ => 0,
    };
    app.usage.push(UsageEvent {
        time: app.checkpoints.now(),
        session_id: session_id.to_string(),
        target: model_id.to_string(),
        base_model: base_model.to_string(),
        request_type: kind.to_string(),
        request_id: request_id.to_string(),
        usage: if tokens > 0 { "training" } else { "none" },
        tokens,
    });
}

/// Hook: a sample request was accepted (prompt tokens, once per `num_samples` prefill).
pub fn on_sample_request(
    app: &AppState,
    session_id: &str,
    sampler_id: &str,
    base_model: &str,
    request_id: &str,
    req: &SampleRequest,
) {
    app.usage.push(UsageEvent {
        time: app.checkpoints.now(),
        session_id: session_id.to_string(),
        target: sampler_id.to_string(),
        base_model: base_model.to_string(),
        request_type: "Sample".into(),
        request_id: request_id.to_string(),
        usage: "sampling_prefill",
        tokens: req.prompt.length().unwrap_or(0) as u64,
    });
}

/// Hook: a sample finished (its sampled tokens). `request_id` is
/// `{session}:sample:{n}:{seq}`.
pub fn on_sample_done(app: &AppState, request_id: &str, outcome: &Outcome) {
    let Outcome::Sample(s) = outcome else {
        return;
    };
    let sampler_id = request_id
        .rsplit_once(':')
        .map(|(s, _)| s)
        .unwrap_or(request_id);
    let session_id = sampler_id
        .rsplit_once(":sample:")
        .map(|(s, _)| s)
        .unwrap_or_default();
    let base_model = app
        .samplers
        .lock()
        .unwrap()
        .get(sampler_id)
        .map(|s| s.base_model.clone())
        .unwrap_or_default();
    app.usage.push(UsageEvent {
        time: app.checkpoints.now(),
        session_id: session_id.to_string(),
        target: sampler_id.to_string(),
        base_model,
        request_type: "Sample".into(),
        request_id: request_id.to_string(),
        usage: "sampling_sample",
        tokens: s.sequences.iter().map(|q| q.tokens.len() as u64).sum(),
    });
}

/// Parses an RFC 3339 date-time (`2026-07-01T12:00:00Z`, fractions and `±HH:MM` offsets
/// allowed) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    if s.len() < 20 || s.len() > 40 || !s.is_ascii() {
        return None;
    }
    let num = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let b = s.as_bytes();
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// Howard Hinnant's civil-to-days algorithm.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Longest billing window (PROTOCOL.md 9.12).
pub const MAX_WINDOW_SECS: f64 = 14.0 * 86_400.0;

/// Checks a billing window: hour-aligned, start before end, at most 14 days, start not in
/// the future. Answers `(start, end)` in Unix seconds.
pub fn check_window(app: &AppState, start: &str, end: &str) -> Result<(f64, f64), String> {
    let parse = |name: &str, v: &str| {
        parse_rfc3339(v).ok_or_else(|| {
            format!(
                "{name} must be an RFC 3339 date-time, got {:?}",
                v.chars().take(40).collect::<String>()
            )
        })
    };
    let (s, e) = (parse("starting_on", start)?, parse("ending_before", end)?);
    for (name, v) in [("starting_on", s), ("ending_before", e)] {
        if v.rem_euclid(3600.0) != 0.0 {
            return Err(format!("{name} must be aligned to a UTC hour boundary"));
        }
    }
    if e <= s {
        return Err("ending_before must be after starting_on".into());
    }
    if e - s > MAX_WINDOW_SECS {
        return Err("the window must be at most 14 days".into());
    }
    if s > app.checkpoints.now() {
        return Err("starting_on must not be in the future".into());
    }
    Ok((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339("2026-07-01T12:00:00.250000Z"),
            Some(1_782_907_200.25)
        );
        assert_eq!(
            parse_rfc3339("2026-07-01T14:00:00+02:00"),
            Some(1_782_907_200.0)
        );
        for bad in [
            "",
            "2026-07-01",
            "2026-13-01T00:00:00Z",
            "2026-07-01T12:00:00",
            "x026-07-01T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
