//! Latency at fixed offered loads: the rates, the medians over rounds, the
//! ratios, and their rows in the report.

use serde_json::{Value, json};

use super::json::ToJson;
use super::load::LoadRun;
use super::stats::median;
use super::table::thousands;

/// The offered loads, requests/s, unless `--rates` says otherwise: fixed, so
/// that runs, commits and machines compare like with like. Drawn from Go's
/// saturated throughput of each run, they moved by 43% between two quiet runs
/// (Go at 28k and 40k/s), and p99 near saturation moves steeply with the load.
/// On this machine (2 CPUs) Go saturates at 28-40k/s, so these are about
/// 15%, 30% and 60% of it; a rate above 75% of a server's saturated
/// throughput is warned of.
pub const DEFAULT_RATES: &str = "5000,10000,20000";

/// Rates at or above this share of a server's saturated requests/s are in
/// the steep part of its queueing curve: their p99 is not steady.
pub const STEEP_SHARE: f64 = 0.75;

/// Fixed rates, as `--rates` takes them: ascending, comma-separated, 1 to 5.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates(pub Vec<u64>);

impl std::str::FromStr for Rates {
    type Err = String;

    fn from_str(list: &str) -> Result<Rates, String> {
        let rates = list
            .split(',')
            .map(|rate| match rate.trim().parse::<u64>() {
                Ok(n) if (100..=1_000_000).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{rate:?} is not a rate: give requests/s from 100 to 1000000, as 5000,10000,20000"
                )),
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if rates.len() > 5 {
            return Err(format!(
                "{} rates: at most 5, each costs a run per round and server",
                rates.len()
            ));
        }
        if !rates.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(format!(
                "{list}: give the rates in ascending order, each once"
            ));
        }
        Ok(Rates(rates))
    }
}

/// A rate in percent of a saturated throughput.
pub fn percent_of(rate: u64, saturated: f64) -> u32 {
    (rate as f64 * 100.0 / saturated.max(1.0)).round() as u32
}

/// One rate: each server's runs (one: both servers in turn, all its seconds).
#[derive(Debug)]
pub struct AtRate {
    /// The rate in percent of the base's saturated requests/s (Go's, else the api's).
    pub percent: u32,
    pub rate: u64,
    pub api: Vec<LoadRun>,
    pub go: Vec<LoadRun>,
    /// Runs made again because the generator lost its CPU in them.
    pub redone: u32,
}

/// How many times a disturbed run is made again.
pub const REDO_DISTURBED: u32 = 2;

/// Other work on the server's CPU that disturbs a run: 5% of its time. Only
/// counted when the server is not realtime: under SCHED_FIFO other work only
/// runs while the server sleeps.
const OTHER_WORK_SHARE: f64 = 0.05;

/// Why a run of `secs` a server is disturbed, if it is: other work ran on
/// the servers' CPU. The generator's own late wake-ups are not counted: a
/// request it sends late counts from the time it went out, and an answer
/// from the time the kernel received it.
pub fn disturbed(run: &LoadRun, secs: u32, realtime: bool) -> Option<String> {
    let run_ns = f64::from(secs + super::load::WARMUP_SECS) * 1e9;
    if !realtime && run.server_cpu_other_ns as f64 > run_ns * OTHER_WORK_SHARE {
        return Some(format!(
            "other work took {:.0} ms of the server's CPU",
            run.server_cpu_other_ns as f64 / 1e6
        ));
    }
    None
}

/// The servers' order in the `n`th run (from 1): api first in odd runs
/// and go first in even ones, so that neither always follows the other.
pub fn order(n: u32, servers: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..servers).collect();
    if n % 2 == 0 {
        order.reverse();
    }
    order
}

/// Medians over a server's runs at a rate (of one, its figures), in nanoseconds.
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
    /// The server's CPU time per answered request.
    pub cpu_per_request_ns: u64,
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
        cpu_per_request_ns: median(runs.iter().map(LoadRun::cpu_per_request_ns)),
    })
}

impl AtRate {
    pub fn api(&self) -> Option<Medians> {
        medians(&self.api)
    }

    pub fn go(&self) -> Option<Medians> {
        medians(&self.go)
    }

    /// api / go of the CPU time per request: below 1 is better.
    pub fn cpu_ratio(&self) -> Option<f64> {
        let (api, go) = (self.api()?, self.go()?);
        (go.cpu_per_request_ns > 0)
            .then(|| api.cpu_per_request_ns as f64 / go.cpu_per_request_ns as f64)
    }

    /// api / go of the median p99: below 1 is better.
    pub fn p99_ratio(&self) -> Option<f64> {
        let (api, go) = (self.api()?, self.go()?);
        (go.p99 > 0).then(|| api.p99 as f64 / go.p99 as f64)
    }
}

/// Each side's medians with its rounds.
impl ToJson for AtRate {
    fn to_json(&self) -> Value {
        let side = |runs: &[LoadRun]| {
            medians(runs).map(|m| {
                json!({
                    "p50_ns": m.p50,
                    "p99_ns": m.p99,
                    "p999_ns": m.p999,
                    "uncorrected_p99_ns": m.uncorrected_p99,
                    "errors": m.errors,
                    "stalled_ns": m.stalled_ns,
                    "rounds": runs.to_json(),
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

/// Go's CPU time per request over the api's at every rate (how many times
/// more requests a CPU-second serves), at least `ratio`; `None` without Go.
pub fn cpu_goal(rates: &[AtRate], ratio: f64) -> Option<bool> {
    rates
        .iter()
        .map(|r| r.cpu_ratio().map(|api_over_go| api_over_go * ratio <= 1.0))
        .collect::<Option<Vec<bool>>>()
        .map(|met| met.iter().all(|m| *m))
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
    for at in rates {
        let Some(api) = at.api() else { continue };
        let cpu = |m: Medians| format!("{:.2} us", m.cpu_per_request_ns as f64 / 1e3);
        row(
            &format!("CPU/request at {}/s", thousands(at.rate)),
            cpu(api),
            at.go().map(cpu),
            at.cpu_ratio(),
        );
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
pub fn disturbed_warning(rates: &[AtRate], secs: u32, realtime: bool) -> Option<String> {
    let runs: Vec<&LoadRun> = rates
        .iter()
        .flat_map(|at| at.api.iter().chain(&at.go))
        .collect();
    let reasons: Vec<String> = runs
        .iter()
        .filter_map(|run| disturbed(run, secs, realtime))
        .collect();
    let first = reasons.first()?;
    Some(format!(
        "warning: {} of {} runs kept were still disturbed after {REDO_DISTURBED} more tries \
         (the first: {first}): their latencies carry it; close other work{}, and run again",
        reasons.len(),
        runs.len(),
        if realtime { "" } else { ", or use --realtime" },
    ))
}

/// A warning for the rates at or above STEEP_SHARE of a server's saturated
/// requests/s (`saturated`: name and requests/s of each server).
pub fn steep_warning(rates: &[AtRate], saturated: &[(&str, f64)]) -> Option<String> {
    let top = rates.last()?.rate;
    let steep: Vec<String> = saturated
        .iter()
        .filter(|(_, per_sec)| top as f64 >= per_sec * STEEP_SHARE)
        .map(|(name, per_sec)| {
            format!(
                "{name} saturates at {}/s",
                thousands(per_sec.round() as u64)
            )
        })
        .collect();
    (!steep.is_empty()).then(|| {
        format!(
            "warning: {}/s is at or above {:.0}% of what {}: its p99 there is the queue near \
             saturation and swings from run to run; give lower --rates",
            thousands(top),
            STEEP_SHARE * 100.0,
            steep.join(" and ")
        )
    })
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
            url: "http://127.0.0.1:1/health".into(),
            rate: 1000,
            due: 5000,
            answered: 5000,
            stamped: 5000,
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
            read_delay: q,
            server_cpu_ns: 250_000_000,
            server_cpu_other_ns: 0,
        }
    }

    #[test]
    fn rates_are_ascending_whole_numbers() {
        let parse = |list: &str| list.parse::<Rates>();
        assert_eq!(parse(DEFAULT_RATES), Ok(Rates(vec![5000, 10_000, 20_000])));
        assert_eq!(parse(" 100 ,2000"), Ok(Rates(vec![100, 2000])));
        for (list, says) in [
            ("5000,x", "\"x\" is not a rate"),
            ("50", "from 100 to 1000000"),
            ("2000,1000", "ascending order"),
            ("1000,1000", "each once"),
            ("100,200,300,400,500,600", "at most 5"),
        ] {
            let err = parse(list).unwrap_err();
            assert!(err.contains(says), "{list}: {err}");
        }
        assert_eq!(percent_of(10_000, 40_000.0), 25);
    }

    #[test]
    fn runs_alternate_which_server_goes_first() {
        assert_eq!(order(1, 2), [0, 1]);
        assert_eq!(order(2, 2), [1, 0]);
        assert_eq!(order(3, 1), [0]);
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
        assert_eq!(at(100, 200).cpu_ratio(), Some(1.0));
        assert_eq!(p99_goal(&[at(100, 200), at(200, 200)]), Some(true));
        assert_eq!(p99_goal(&[at(100, 200), at(300, 200)]), Some(false));
        let without_go = AtRate {
            go: vec![],
            ..at(1, 1)
        };
        assert_eq!(p99_goal(&[without_go]), None);
    }

    #[test]
    fn the_cpu_goal_holds_only_when_met_at_every_rate() {
        let at = |api_ns: u64, go_ns: u64| {
            let costing = |ns: u64| LoadRun {
                server_cpu_ns: ns * 5000,
                ..run(100)
            };
            AtRate {
                percent: 25,
                rate: 1000,
                api: vec![costing(api_ns)],
                go: vec![costing(go_ns)],
                redone: 0,
            }
        };
        assert_eq!(at(10_000, 40_000).cpu_ratio(), Some(0.25));
        assert_eq!(
            cpu_goal(&[at(10_000, 40_000), at(10_000, 18_000)], 1.8),
            Some(true)
        );
        assert_eq!(
            cpu_goal(&[at(10_000, 40_000), at(10_000, 17_900)], 1.8),
            Some(false)
        );
        let without_go = AtRate {
            go: vec![],
            ..at(1, 1)
        };
        assert_eq!(cpu_goal(&[without_go], 1.8), None);
    }

    #[test]
    fn other_work_on_the_server_cpu_disturbs_a_run_and_late_wakeups_do_not() {
        let late = LoadRun {
            stalls: 3,
            stalled_ns: 900_000_000,
            stall_max_ns: 450_000_000,
            ..run(100)
        };
        let crowded = |ns| LoadRun {
            server_cpu_other_ns: ns,
            ..run(100)
        };
        assert_eq!(disturbed(&late, 5, false), None);
        // 5 s runs: other work, 5% of 6 s with the warm-up, is the line.
        assert_eq!(disturbed(&crowded(300_000_000), 5, false), None);
        let why = disturbed(&crowded(310_000_000), 5, false).unwrap();
        assert!(why.contains("took 310 ms of the server's CPU"), "{why}");
        assert_eq!(disturbed(&crowded(310_000_000), 5, true), None);
        let at = AtRate {
            percent: 25,
            rate: 1000,
            api: vec![late, crowded(400_000_000)],
            go: vec![crowded(900_000_000)],
            redone: 0,
        };
        let warning = disturbed_warning(&[at], 5, false).unwrap();
        assert!(
            warning.contains("2 of 3 runs kept") && warning.contains("took 400 ms"),
            "{warning}"
        );
        assert!(warning.contains("or use --realtime"), "{warning}");
        assert_eq!(disturbed_warning(&[], 5, false), None);
    }

    #[test]
    fn a_top_rate_near_saturation_is_warned_of() {
        let at = |rate| AtRate {
            percent: 50,
            rate,
            api: vec![],
            go: vec![],
            redone: 0,
        };
        let saturated = [("api", 60_000.0), ("go", 30_000.0)];
        assert_eq!(steep_warning(&[at(5000), at(20_000)], &saturated), None);
        let warning = steep_warning(&[at(5000), at(22_500)], &saturated).unwrap();
        assert!(
            warning.contains("22,500/s is at or above 75% of what go saturates at 30,000/s"),
            "{warning}"
        );
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
                "CPU/request at 34,200/s|50.00 us|50.00 us|Some(1.0)",
                "generator working at 34,200/s|0%|0%|None",
            ]
        );
    }
}
