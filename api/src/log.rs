//! Logs: one JSON object per line on stdout, e.g.
//! `{"ts":"2026-10-27T12:00:00.123Z","level":"info","msg":"started","version":"v1.2.0"}`.
//!
//! The level is one global, read with a relaxed atomic load, so a line that is
//! off (per-request lines at the default level) costs one comparison.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much to log, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    /// Adds a line per request and per failed connection.
    Debug = 3,
}

impl Level {
    /// The names `LOG_LEVEL` accepts, as [`Level::parse`] reads them.
    pub const NAMES: &str = "error, warn, info, debug";

    /// `error`, `warn`, `info` or `debug`, in any case.
    pub fn parse(name: &str) -> Option<Level> {
        match name.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level that is written.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be written: check it before building one
/// that costs something to build.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// A log line under construction:
/// `Line::new(Level::Info, "started").str("version", v).num("port", 8080).emit()`.
#[must_use = "a line is written by .emit()"]
pub struct Line {
    level: Level,
    buf: String,
}

impl Line {
    pub fn new(level: Level, msg: &str) -> Line {
        Line::at(SystemTime::now(), level, msg)
    }

    /// A line stamped with a given time (for tests).
    pub fn at(time: SystemTime, level: Level, msg: &str) -> Line {
        let mut buf = String::with_capacity(128);
        buf.push_str(r#"{"ts":""#);
        push_timestamp(&mut buf, time);
        buf.push_str(r#"","level":""#);
        buf.push_str(level.as_str());
        buf.push_str(r#"","msg":"#);
        push_json_string(&mut buf, msg);
        Line { level, buf }
    }

    /// Adds a string field.
    pub fn str(mut self, key: &str, value: &str) -> Line {
        self.key(key);
        push_json_string(&mut self.buf, value);
        self
    }

    /// Adds a number field.
    pub fn num(mut self, key: &str, value: u64) -> Line {
        self.key(key);
        let _ = write!(self.buf, "{value}");
        self
    }

    /// Adds a boolean field.
    pub fn bool(mut self, key: &str, value: bool) -> Line {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
        self
    }

    fn key(&mut self, key: &str) {
        self.buf.push(',');
        push_json_string(&mut self.buf, key);
        self.buf.push(':');
    }

    /// The finished line, newline included.
    pub fn finish(mut self) -> String {
        self.buf.push_str("}\n");
        self.buf
    }

    /// Writes the line to stdout, in one write, if its level is enabled.
    pub fn emit(self) {
        if !enabled(self.level) {
            return;
        }
        let line = self.finish();
        let mut out = std::io::stdout().lock();
        // Nowhere to report a closed stdout; the service keeps serving.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// `s` as a JSON string, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

fn push_json_string(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// RFC 3339 in UTC with milliseconds: `2026-10-27T12:00:00.123Z`.
fn push_timestamp(buf: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        buf,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar: Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(line: &str) -> serde_json::Value {
        assert!(line.ends_with("}\n"), "one object, one line: {line:?}");
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_line_is_one_json_object_with_time_level_and_message() {
        let time = UNIX_EPOCH + Duration::from_millis(1_793_102_400_123);
        let line = Line::at(time, Level::Info, "started")
            .str("version", "v1.2.0")
            .num("port", 8080)
            .bool("drained", true)
            .finish();
        assert_eq!(
            line,
            "{\"ts\":\"2026-10-27T12:00:00.123Z\",\"level\":\"info\",\"msg\":\"started\",\
             \"version\":\"v1.2.0\",\"port\":8080,\"drained\":true}\n"
        );
        parse(&line);
    }

    #[test]
    fn strings_are_escaped_so_the_line_stays_json() {
        let nasty = "a\"b\\c\nd\te\u{1}f\u{e9}";
        let line = Line::new(Level::Debug, "request")
            .str("path", nasty)
            .finish();
        assert_eq!(parse(&line)["path"], nasty);
    }

    #[test]
    fn timestamps_follow_the_calendar() {
        for (secs, expected) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000Z"),
        ] {
            let mut buf = String::new();
            push_timestamp(&mut buf, UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(buf, expected, "{secs}");
        }
    }

    #[test]
    fn levels_parse_in_any_case_and_order_by_detail() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
    }
}
