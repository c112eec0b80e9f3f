//! The figures of a load bench and their JSON.

use std::time::Duration;

use anyhow::{Context as _, Result};

use super::json::json_struct;
use super::latency;
use super::server::Server;
use super::stats::median;
use super::wrk::WrkRun;

json_struct! {
    #[derive(Debug)]
    pub struct Round {
        pub requests_per_sec: f64,
        /// The server's CPU time (user + system) per request during the measured
        /// run: what a request costs, whether or not wrk could saturate the server.
        pub cpu_us_per_request: f64,
        /// Share of the run the server spent on its CPU; well under 100% means
        /// wrk, not the server, set the pace.
        pub server_busy_percent: f64,
        pub rss_idle_kib: u64,
        pub rss_after_load_kib: u64,
        pub rss_peak_kib: u64,
        pub wrk: WrkRun,
    }
}

json_struct! {
    /// Everything measured for one server.
    #[derive(Debug)]
    pub struct Figures {
        pub name: &'static str,
        pub binary: String,
        pub binary_bytes: u64,
        /// Medians over the rounds.
        pub requests_per_sec: f64,
        /// The best round: on a shared machine, other work only ever slows a round down.
        pub requests_per_sec_best: f64,
        pub cpu_us_per_request: f64,
        pub server_busy_percent: f64,
        pub rss_idle_kib: u64,
        pub rss_after_load_kib: u64,
        /// The highest VmHWM of any round.
        pub rss_peak_kib: u64,
        pub errors: u64,
        pub startup_ms_median: f64,
        pub startup_ms_min: f64,
        pub startup_ms_max: f64,
        pub rounds: Vec<Round>,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Ratios {
        /// api / go: higher is better.
        pub requests_per_sec: f64,
        pub requests_per_sec_best: f64,
        /// go / api: how many times more requests one core serves (higher is better).
        pub requests_per_cpu_second: f64,
        pub rss_idle: f64,
        pub rss_after_load: f64,
        pub startup: f64,
        pub binary_size: f64,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Goals {
        /// At each fixed rate, both goals: the servers compared in the same
        /// state (the same offered load) and the same weather (in turn, 100 ms
        /// each). CPU per request at saturation compares them at different
        /// loads (wrk's one CPU bounds the api), and moved by 15% between runs.
        pub p99_no_worse_than_go: Option<bool>,
        pub requests_per_cpu_second_at_least_1_8x_go: Option<bool>,
        pub idle_rss_at_most_2_mb: bool,
        pub binary_under_2_mb: bool,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Report {
        pub version: String,
        pub linking: &'static str,
        pub path: &'static str,
        pub duration_secs: u32,
        pub rounds: u32,
        pub connections: u32,
        pub server_cpu: usize,
        pub wrk_cpu: usize,
        /// Whose saturated requests/s the fixed rates are shown as shares of.
        pub rate_base: &'static str,
        /// Whether the latency runs were under SCHED_FIFO.
        pub realtime: bool,
        /// Each server's seconds of load at each fixed rate.
        pub latency_secs: u32,
        /// Whether idle CPUs polled during the latency runs (/dev/cpu_dma_latency held at 0).
        pub idle_polling: bool,
        pub latency: Vec<latency::AtRate>,
        pub api: Figures,
        pub go: Option<Figures>,
        /// Why there is no Go comparison, when there is none.
        pub go_skipped: Option<String>,
        pub ratios: Option<Ratios>,
        pub goals: Goals,
    }
}

pub fn summarize(server: &Server, startups: &[Duration], rounds: Vec<Round>) -> Result<Figures> {
    let binary_bytes = std::fs::metadata(&server.binary)
        .with_context(|| format!("size of {}", server.binary))?
        .len();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    Ok(Figures {
        name: server.name,
        binary: server.binary.to_string(),
        binary_bytes,
        requests_per_sec: median(rounds.iter().map(|r| r.requests_per_sec)),
        requests_per_sec_best: rounds
            .iter()
            .map(|r| r.requests_per_sec)
            .fold(0.0, f64::max),
        cpu_us_per_request: median(rounds.iter().map(|r| r.cpu_us_per_request)),
        server_busy_percent: median(rounds.iter().map(|r| r.server_busy_percent)),
        rss_idle_kib: median(rounds.iter().map(|r| r.rss_idle_kib)),
        rss_after_load_kib: median(rounds.iter().map(|r| r.rss_after_load_kib)),
        rss_peak_kib: rounds.iter().map(|r| r.rss_peak_kib).max().unwrap_or(0),
        errors: rounds.iter().map(|r| r.wrk.errors()).sum(),
        startup_ms_median: median(startups.iter().map(ms)),
        startup_ms_min: startups.iter().map(ms).fold(f64::INFINITY, f64::min),
        startup_ms_max: startups.iter().map(ms).fold(0.0, f64::max),
        rounds,
    })
}

pub fn ratios(api: &Figures, go: &Figures) -> Ratios {
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Ratios {
        requests_per_sec: r(api.requests_per_sec, go.requests_per_sec),
        requests_per_sec_best: r(api.requests_per_sec_best, go.requests_per_sec_best),
        requests_per_cpu_second: r(go.cpu_us_per_request, api.cpu_us_per_request),
        rss_idle: r(api.rss_idle_kib as f64, go.rss_idle_kib as f64),
        rss_after_load: r(api.rss_after_load_kib as f64, go.rss_after_load_kib as f64),
        startup: r(api.startup_ms_median, go.startup_ms_median),
        binary_size: r(api.binary_bytes as f64, go.binary_bytes as f64),
    }
}
