//! What the service sheds under a flood, counted where it happens and summed
//! up in one log line per interval, so that a flood is seen in the logs
//! without a line per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use api::log::{Level, Line};

/// What was shed: each a reason a client was closed or made to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// Closed: it sent nothing within the header read timeout.
    Silent,
    /// Closed: it sent bytes but no whole request head within it (slowloris, trickle).
    SlowHead,
    /// Closed: its answers were not read for a whole timeout (pipelining non-readers).
    NotReading,
    /// Found every active slot taken and waited for one.
    WaitedForActive,
    /// Closed: it waited a whole timeout for an active slot.
    NoActiveSlot,
    /// A probe-port connection closed to make room for a newer one.
    ProbeEvicted,
}

const WHATS: [(What, &str); 6] = [
    (What::Silent, "closed_silent"),
    (What::SlowHead, "closed_slow_head"),
    (What::NotReading, "closed_not_reading"),
    (What::WaitedForActive, "waited_for_active_slot"),
    (What::NoActiveSlot, "closed_no_active_slot"),
    (What::ProbeEvicted, "probe_evicted"),
];

/// The counts since the last summary, and the time accepting was paused at
/// the connection limit.
pub struct Shed {
    counts: [AtomicU64; WHATS.len()],
    at_limit_ms: AtomicU64,
}

impl Shed {
    pub const fn new() -> Shed {
        Shed {
            counts: [const { AtomicU64::new(0) }; WHATS.len()],
            at_limit_ms: AtomicU64::new(0),
        }
    }

    /// Counts one: a relaxed increment.
    pub fn count(&self, what: What) {
        self.counts[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds time spent not accepting because the connection limit was reached.
    pub fn paused_at_limit(&self, paused: Duration) {
        self.at_limit_ms
            .fetch_add(paused.as_millis() as u64, Ordering::Relaxed);
    }

    /// The line for the counts since the last call, and the counts reset;
    /// `None` when nothing was shed. `gauges` are added as they are now.
    pub fn take_summary(&self, every: Duration, gauges: &[(&str, u64)]) -> Option<Line> {
        let counts: Vec<(&str, u64)> = WHATS
            .iter()
            .map(|(what, name)| {
                (
                    *name,
                    self.counts[*what as usize].swap(0, Ordering::Relaxed),
                )
            })
            .collect();
        let at_limit_ms = self.at_limit_ms.swap(0, Ordering::Relaxed);
        if at_limit_ms == 0 && counts.iter().all(|(_, n)| *n == 0) {
            return None;
        }
        let mut line = Line::new(Level::Warn, "shed").num("interval_secs", every.as_secs());
        for (name, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
            line = line.num(name, n);
        }
        if at_limit_ms > 0 {
            line = line.num("paused_at_connection_limit_ms", at_limit_ms);
        }
        for (name, value) in gauges {
            line = line.num(name, *value);
        }
        Some(line)
    }
}

/// Every count of the process: connections are counted here from anywhere.
pub static SHED: Shed = Shed::new();

/// Writes one summary line every `every` while something is shed; nothing
/// when nothing is. `gauges` says what is open at the time of each line.
pub async fn summarize(every: Duration, gauges: impl Fn() -> Vec<(&'static str, u64)>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing to say yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Some(line) = SHED.take_summary(every, &gauges()) {
            line.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_shed_is_no_line() {
        let shed = Shed::new();
        assert!(shed.take_summary(Duration::from_secs(10), &[]).is_none());
    }

    #[test]
    fn a_summary_names_what_was_shed_and_how_many_then_starts_again() {
        let shed = Shed::new();
        for _ in 0..3 {
            shed.count(What::Silent);
        }
        shed.count(What::ProbeEvicted);
        shed.paused_at_limit(Duration::from_millis(1500));
        let line = shed
            .take_summary(Duration::from_secs(10), &[("open_connections", 7)])
            .expect("a line")
            .finish();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["msg"], "shed");
        assert_eq!(value["level"], "warn");
        assert_eq!(value["interval_secs"], 10);
        assert_eq!(value["closed_silent"], 3);
        assert_eq!(value["probe_evicted"], 1);
        assert_eq!(value["paused_at_connection_limit_ms"], 1500);
        assert_eq!(value["open_connections"], 7);
        assert!(value.get("closed_slow_head").is_none(), "zeros left out");
        assert!(shed.take_summary(Duration::from_secs(10), &[]).is_none());
    }
}
