//! The `log_level` runtime option: a minimal process-wide `tracing` subscriber that writes
//! the library's own log lines (targets `tinkex…`) to stderr. Installed on first use of a
//! level above OFF, and only if the process has no global subscriber yet.

use super::runtime::tinkex_log_level;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

static LEVEL: AtomicI32 = AtomicI32::new(tinkex_log_level::Off as i32);
static INSTALL: Once = Once::new();

/// Sets the process-wide level (installing the stderr subscriber when needed).
pub(crate) fn set_level(level: tinkex_log_level) {
    LEVEL.store(level as i32, Ordering::Relaxed);
    if level != tinkex_log_level::Off {
        INSTALL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(StderrLog);
        });
    }
}

fn allows(level: &Level) -> bool {
    let wanted = match *level {
        Level::ERROR => tinkex_log_level::Error,
        Level::WARN => tinkex_log_level::Warn,
        Level::INFO => tinkex_log_level::Info,
        Level::DEBUG => tinkex_log_level::Debug,
        Level::TRACE => tinkex_log_level::Trace,
    };
    LEVEL.load(Ordering::Relaxed) >= wanted as i32
}

struct StderrLog;

struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for StderrLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at run time: ask `enabled` every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("tinkex") && allows(metadata.level())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Line(format!("[tinkex {}] {}:", meta.level(), meta.target()));
        event.record(&mut line);
        eprintln!("{}", line.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
