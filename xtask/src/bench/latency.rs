//! Latency at fixed offered loads: the rates, the medians over rounds, the
//! ratios, and their rows in the report.

use serde_json::{Value, json};

use super::load::LoadRun;
use super::median;
use super::table::thousands;

/// The offered loads, in percent of the base throughput (Go's saturated
/// requests/s measured in the same run, else the api's).
pub const PERCENTS: [u32; 3] = [25, 50, 75];

/// The rates for a saturated throughput of `base` requests/s, rounded to 100/s.
pub fn rates(base: f64) -> Vec<u64> {
    PERCENTS
        .iter()
        .map(|p| ((base * f64::from(*p) / 100.0 / 100.0).round() as u64).max(1) * 100)
        .collect()
}

/// One rate: each server's runs, one per round.
#[derive(Debug)]
pub struct AtRate {
    pub percent: u32,
    pub rate: u64,
    pub api: Vec<LoadRun>,
    pub go: Vec<LoadRun>,
    /// Runs made again because the generator lost its CPU in them.
    pub redone: u32,
}

/// How many times a disturbed run is made again.
pub const REDO_DISTURBED: u32 = 2;

/// Whether the generator lost its CPU for more than 0.1% of a run of `secs`:
/// other work ran on it, and the run's latencies carry it.
pub fn disturbed(run: &LoadRun, secs: u32) -> bool {
    run.stalled_ns as f64 > f64::from(secs) * 1e9 * 0.001
}

/// Medians over the rounds, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Medians {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub uncorrected_p99: u64,
    pub errors: u64,
    pub stalled_ns: u64,
    /// The share of its time the generator spent working.
    pub working: f64,
}

pub fn medians(runs: &[LoadRun]) -> Option<Medians> {
    if runs.is_empty() {
        return None;
    }
    Some(Medians {
        p50: median(runs.iter().map(|r| r.corrected.p50)),
        p99: median(runs.iter().map(|r| r.corrected.p99)),
        p999: median(runs.iter().map(|r| r.corrected.p999)),
        uncorrected_p99: median(runs.iter().map(|r| r.uncorrected.p99)),
        errors: runs.iter().map(LoadRun::errors).sum(),
        stalled_ns: runs.iter().map(|r| r.stalled_ns).sum(),
        working: median(runs.iter().map(LoadRun::working_share)),
    })
}

impl AtRate {
    pub fn api(&self) -> Option<Medians> {
        medians(&self.api)
    }

    pub fn go(&self) -> Option<Medians> {
        medians(&self.go)
    }

    /// api / go of the median p99: below 1 is better.
    pub fn p99_ratio(&self) -> Option<f64> {
        let (api, go) = (self.api()?, self.go()?);
        (go.p99 > 0).then(|| api.p99 as f64 / go.p99 as f64)
    }

    pub fn json(&self) -> Value {
        let side = |runs: &[LoadRun]| {
            medians(runs).map(|m| {
                json!({
                    "p50_ns": m.p50,
                    "p99_ns": m.p99,
                    "p999_ns": m.p999,
                    "uncorrected_p99_ns": m.uncorrected_p99,
                    "errors": m.errors,
                    "stalled_ns": m.stalled_ns,
                    "rounds": runs.iter().map(LoadRun::json).collect::<Vec<_>>(),
                })
            })
        };
        json!({
            "percent": self.percent,
            "rate": self.rate,
            "api": side(&self.api),
            "go": side(&self.go),
            "p99_ratio": self.p99_ratio(),
            "redone": self.redone,
        })
    }
}

/// p99 no worse than Go's at every rate; `None` without Go.
pub fn p99_goal(rates: &[AtRate]) -> Option<bool> {
    rates
        .iter()
        .map(|r| r.p99_ratio().map(|ratio| ratio <= 1.0))
        .collect::<Option<Vec<bool>>>()
        .map(|met| met.iter().all(|m| *m))
}

/// The report's rows: p50, p99, p99.9 at each rate, for `row(label, api, go,
/// api/go)`; then how much of its time the generator spent working at the highest.
pub fn rows(rates: &[AtRate], mut row: impl FnMut(&str, String, Option<String>, Option<f64>)) {
    let us = |ns: u64| {
        let us = ns as f64 / 1e3;
        if us < 100.0 {
            format!("{us:.1} us")
        } else {
            format!("{} us", thousands(us.round() as u64))
        }
    };
    for at in rates {
        let (Some(api), go) = (at.api(), at.go()) else {
            continue;
        };
        let ratio = |a: u64, g: u64| (g > 0).then(|| a as f64 / g as f64);
        let rate = format!("{}/s ({}%)", thousands(at.rate), at.percent);
        for (name, a, g) in [
            ("p50", api.p50, go.map(|g| g.p50)),
            ("p99", api.p99, go.map(|g| g.p99)),
            ("p99.9", api.p999, go.map(|g| g.p999)),
        ] {
            row(
                &format!("{name:<5} at {rate}"),
                us(a),
                g.map(us),
                g.and_then(|g| ratio(a, g)),
            );
        }
    }
    if let Some(at) = rates.last()
        && let Some(api) = at.api()
    {
        let share = |m: Medians| format!("{:.0}%", m.working * 100.0);
        row(
            &format!("generator working at {}/s", thousands(at.rate)),
            share(api),
            at.go().map(share),
            None,
        );
    }
}

/// A warning when runs kept were still disturbed: their figures carry it.
pub fn stall_warning(rates: &[AtRate], secs: u32) -> Option<String> {
    let runs: Vec<&LoadRun> = rates
        .iter()
        .flat_map(|at| at.api.iter().chain(&at.go))
        .collect();
    let stalled: Vec<&&LoadRun> = runs.iter().filter(|run| disturbed(run, secs)).collect();
    if stalled.is_empty() {
        return None;
    }
    let total_ns: u64 = stalled.iter().map(|run| run.stalled_ns).sum();
    let longest_ns = stalled
        .iter()
        .map(|run| run.stall_max_ns)
        .max()
        .unwrap_or(0);
    Some(format!(
        "warning: the load generator lost its CPU to other work in {} of {} runs ({:.1} ms in \
         all, the longest {:.1} ms): their latencies carry it; close other work and run again",
        stalled.len(),
        runs.len(),
        total_ns as f64 / 1e6,
        longest_ns as f64 / 1e6
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::Quantiles;

    fn run(p99_us: u64) -> LoadRun {
        let q = Quantiles {
            p50: 30_000,
            p90: 40_000,
            p99: p99_us * 1000,
            p999: 500_000,
            max: 900_000,
        };
        LoadRun {
            rate: 1000,
            due: 5000,
            answered: 5000,
            errors_status: 0,
            errors_io: 0,
            errors_timeout: 0,
            stalls: 0,
            stalled_ns: 0,
            stall_max_ns: 0,
            working_ns: 0,
            measured_ns: 5_000_000_000,
            corrected: q,
            uncorrected: q,
            send_delay: q,
        }
    }

    #[test]
    fn rates_are_shares_of_the_base_rounded_to_hundreds() {
        assert_eq!(rates(68_349.0), [17_100, 34_200, 51_300]);
        assert_eq!(rates(10.0), [100, 100, 100]);
    }

    #[test]
    fn the_goal_holds_only_when_p99_is_no_worse_at_every_rate() {
        let at = |api: u64, go: u64| AtRate {
            percent: 25,
            rate: 1000,
            api: vec![run(api), run(api + 50), run(1)],
            go: vec![run(go)],
            redone: 0,
        };
        assert_eq!(at(100, 200).p99_ratio(), Some(0.5));
        assert_eq!(p99_goal(&[at(100, 200), at(200, 200)]), Some(true));
        assert_eq!(p99_goal(&[at(100, 200), at(300, 200)]), Some(false));
        let without_go = AtRate {
            go: vec![],
            ..at(1, 1)
        };
        assert_eq!(p99_goal(&[without_go]), None);
    }

    #[test]
    fn stalls_above_a_thousandth_of_the_run_are_warned_of() {
        let stalled = |ns| LoadRun {
            stalls: 3,
            stalled_ns: ns,
            stall_max_ns: ns / 2,
            ..run(100)
        };
        let at = AtRate {
            percent: 25,
            rate: 1000,
            api: vec![stalled(4_000_000), stalled(6_000_000)],
            go: vec![stalled(0)],
            redone: 0,
        };
        // 5 s runs: 5 ms is the line.
        let warning = stall_warning(&[at], 5).unwrap();
        assert!(
            warning.contains("in 1 of 3 runs (6.0 ms in all, the longest 3.0 ms)"),
            "{warning}"
        );
        assert_eq!(stall_warning(&[], 5), None);
    }

    #[test]
    fn rows_show_each_quantile_at_each_rate() {
        let at = AtRate {
            percent: 50,
            rate: 34_200,
            api: vec![run(80)],
            go: vec![run(160)],
            redone: 0,
        };
        let mut lines = Vec::new();
        rows(&[at], |label, a, g, r| {
            lines.push(format!("{label}|{a}|{}|{r:?}", g.unwrap()))
        });
        assert_eq!(
            lines,
            [
                "p50   at 34,200/s (50%)|30.0 us|30.0 us|Some(1.0)",
                "p99   at 34,200/s (50%)|80.0 us|160 us|Some(0.5)",
                "p99.9 at 34,200/s (50%)|500 us|500 us|Some(1.0)",
                "generator working at 34,200/s|0%|0%|None",
            ]
        );
    }
}
