//! The load bench: both servers built, started, loaded and read in turn.

use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use super::json::ToJson as _;
use super::procfs::{USER_HZ, two_cpus};
use super::report::{Goals, Report, Round, ratios, summarize};
use super::server::{
    PID_PLACEHOLDER, PORT_PLACEHOLDER, Server, ServerProcess, cpu_busy, load_url, realtime_step,
    start_step,
};
use super::table::table;
use super::{
    Bench, GO_BINARY, GO_SOURCE, GOAL_BINARY_BYTES, GOAL_CPU_RATIO, GOAL_IDLE_RSS_BYTES, LOAD_PATH,
    STARTS, WARMUP_SECS, idle, latency, load, wrk,
};
use crate::build::Build;
use crate::context::{Context, Step};
use crate::tools;

impl Bench {
    /// Both servers measured in turn: startups, saturation rounds, then latency
    /// at the fixed rates; the report as a table or JSON.
    pub(super) fn measure(self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO, &tools::WRK, &tools::TASKSET])?;
        if self.realtime {
            tools::require(&[&tools::CHRT])?;
        }
        let (go, go_skipped) = match (self.no_go, tools::locate(tools::GO.name)) {
            (true, _) => (None, Some("--no-go".to_owned())),
            (false, Some(go)) => (Some(go), None),
            (false, None) => {
                let why = format!("go is not installed: {}", tools::GO.install);
                cx.say(format_args!("note: no Go comparison: {why}"));
                (None, Some(why))
            }
        };
        let status =
            std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
        let (server_cpu, wrk_cpu) = two_cpus(&status)?;

        let built = Build {
            static_link: !self.dynamic,
        }
        .compile(cx)?;
        let mut servers = vec![Server {
            name: "api",
            binary: built.binary.clone(),
        }];
        if let Some(go) = go {
            let sh = &cx.sh;
            let out = cx.path(GO_BINARY);
            let source = cx.path(GO_SOURCE);
            // The same version in both bodies, so both answer the same bytes.
            let ldflags = format!("-ldflags=-s -w -X main.version={}", built.version);
            cx.change(cmd!(sh, "{go} build -trimpath {ldflags} -o {out} {source}"))
                .within(Duration::from_secs(300), "is the machine very busy?")
                .run(cx)
                .context("build the Go comparison server")?;
            servers.push(Server {
                name: "go",
                binary: out,
            });
        }
        let generator = load::build(cx)?;

        if cx.dry_run {
            for line in self.plan(cx, &servers, &generator, server_cpu, wrk_cpu) {
                cx.plan(line);
            }
            return Ok(());
        }

        let mut startups: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
        cx.say(format_args!(
            "# timing {STARTS} startups of each server, exec to first 200 on {LOAD_PATH}"
        ));
        for i in 0..STARTS {
            for (server, times) in servers.iter().zip(&mut startups) {
                let mut running = ServerProcess::start(cx, server, None, i == 0)?;
                times.push(running.wait_ready(Duration::from_secs(10))?);
            }
        }

        let mut rounds: Vec<Vec<Round>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 1..=self.rounds {
            for (server, results) in servers.iter().zip(&mut rounds) {
                cx.say(format_args!(
                    "# round {round}/{}: {} on CPU {server_cpu}, wrk on CPU {wrk_cpu}",
                    self.rounds, server.name
                ));
                results.push(self.load_round(cx, server, server_cpu, wrk_cpu)?);
            }
        }

        let mut figures = servers
            .iter()
            .zip(startups)
            .zip(rounds)
            .map(|((server, startups), rounds)| summarize(server, &startups, rounds))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let api = figures.next().expect("api is always measured");
        let go = figures.next();
        let ratios = go.as_ref().map(|go| ratios(&api, go));

        let (rate_base, base) = match &go {
            Some(go) => ("go", go.requests_per_sec),
            None => ("api", api.requests_per_sec),
        };
        let (latency, idle_polling) =
            self.latency_runs(cx, &servers, &generator, base, server_cpu, wrk_cpu)?;

        let goals = Goals {
            p99_no_worse_than_go: latency::p99_goal(&latency),
            requests_per_cpu_second_at_least_1_8x_go: latency::cpu_goal(&latency, GOAL_CPU_RATIO),
            idle_rss_at_most_2_mb: api.rss_idle_kib * 1024 <= GOAL_IDLE_RSS_BYTES,
            binary_under_2_mb: api.binary_bytes < GOAL_BINARY_BYTES,
        };
        let report = Report {
            version: built.version,
            linking: if self.dynamic { "dynamic" } else { "static" },
            path: LOAD_PATH,
            duration_secs: self.duration,
            rounds: self.rounds,
            connections: self.connections,
            server_cpu,
            wrk_cpu,
            rate_base,
            realtime: self.realtime,
            latency_secs: self.latency_secs(),
            idle_polling,
            latency,
            api,
            go,
            go_skipped,
            ratios,
            goals,
        };
        for figures in std::iter::once(&report.api).chain(&report.go) {
            if figures.errors > 0 {
                cx.say(format_args!(
                    "warning: wrk counted {} errors against {}: see the rounds in --json",
                    figures.errors, figures.name
                ));
            }
        }
        for at in &report.latency {
            for (name, runs) in [("api", &at.api), ("go", &at.go)] {
                let sum = |count: fn(&load::LoadRun) -> u64| runs.iter().map(count).sum::<u64>();
                let errors = sum(load::LoadRun::errors);
                if errors > 0 {
                    cx.say(format_args!(
                        "warning: the load generator counted {errors} errors against {name} at \
                         {}/s ({} not 200, {} connections broken, {} answers later than 2 s): \
                         see the rounds in --json",
                        at.rate,
                        sum(|r| r.errors_status),
                        sum(|r| r.errors_io),
                        sum(|r| r.errors_timeout),
                    ));
                }
            }
        }
        if let Some(warning) =
            latency::disturbed_warning(&report.latency, self.latency_secs(), self.realtime)
        {
            cx.say(warning);
        }
        let saturated: Vec<(&str, f64)> = std::iter::once(&report.api)
            .chain(&report.go)
            .map(|figures| (figures.name, figures.requests_per_sec))
            .collect();
        if let Some(warning) = latency::steep_warning(&report.latency, &saturated) {
            cx.say(warning);
        }
        if self.json {
            cx.result(serde_json::to_string_pretty(&report.to_json())?);
        } else {
            cx.result(table(&report));
        }
        Ok(())
    }

    /// Latency at each fixed rate: both servers started once, pinned to the
    /// same CPU (an idle one costs nothing), idle CPUs polling where bench may
    /// ask (`idle`), then one run at each rate against both servers in turn
    /// every SLICE_MS, so that the machine's weather falls on both alike.
    /// `base` is the saturated requests/s the rates are shown as shares of.
    fn latency_runs(
        &self,
        cx: &Context,
        servers: &[Server],
        generator: &Utf8PathBuf,
        base: f64,
        server_cpu: usize,
        load_cpu: usize,
    ) -> Result<(Vec<latency::AtRate>, bool)> {
        // Released when this returns, and by the kernel however bench ends.
        let polling = match idle::poll() {
            Ok(polling) => Some(polling),
            Err(why) => {
                cx.say(format_args!(
                    "note: idle CPUs will halt between requests ({why}): on a virtual machine \
                     the wake-up from a halt is in every latency, and moves the p99 from run to \
                     run; run bench as root to hold {} at 0",
                    idle::PATH
                ));
                None
            }
        };
        let mut running = Vec::new();
        for server in servers {
            let mut process = ServerProcess::start(cx, server, Some(server_cpu), true)?;
            process.wait_ready(Duration::from_secs(10))?;
            if self.realtime {
                process.realtime(cx)?;
            }
            running.push(process);
        }
        let mut at: Vec<latency::AtRate> = self
            .rates
            .0
            .iter()
            .map(|&rate| latency::AtRate {
                percent: latency::percent_of(rate, base),
                rate,
                api: Vec::new(),
                go: Vec::new(),
                redone: 0,
            })
            .collect();
        for (i, at) in at.iter_mut().enumerate() {
            // Who has the first slice alternates from rate to rate.
            let order = latency::order(i as u32 + 1, servers.len());
            let names: Vec<&str> = order.iter().map(|&i| servers[i].name).collect();
            cx.say(format_args!(
                "# latency at {}/s ({}% of the base): {}, open loop, {} s each{}",
                at.rate,
                at.percent,
                names.join(" and "),
                self.latency_secs(),
                match names.len() {
                    1 => String::new(),
                    _ => format!(", in turn every {} ms", load::SLICE_MS),
                }
            ));
            let processes: Vec<&ServerProcess> = order.iter().map(|&i| &running[i]).collect();
            let (runs, redone) =
                self.least_disturbed_run(cx, generator, &processes, at.rate, server_cpu, load_cpu)?;
            at.redone += redone;
            for (&i, run) in order.iter().zip(runs) {
                match servers[i].name {
                    "api" => at.api.push(run),
                    _ => at.go.push(run),
                }
            }
        }
        Ok((at, polling.is_some()))
    }

    /// One run at `rate` against `servers` in turn, made again while
    /// disturbed (twice at most); the least disturbed is kept. Returns its
    /// figures, one for each server in their order, and how many runs were
    /// redone.
    fn least_disturbed_run(
        &self,
        cx: &Context,
        generator: &Utf8PathBuf,
        servers: &[&ServerProcess],
        rate: u64,
        server_cpu: usize,
        load_cpu: usize,
    ) -> Result<(Vec<load::LoadRun>, u32)> {
        let urls: Vec<String> = servers.iter().map(|server| server.url()).collect();
        let cpu_ns = || -> Result<Vec<u64>> { servers.iter().map(|s| s.cpu_ns()).collect() };
        let mut kept: Option<Vec<load::LoadRun>> = None;
        let mut redone = 0;
        for attempt in 0..=latency::REDO_DISTURBED {
            let busy_before = cpu_busy(server_cpu)?;
            let before = cpu_ns()?;
            let step = self.load_step(cx, generator, load_cpu, rate, &urls);
            let mut runs = load::run(cx, step, &urls)?.expect("a measured run reports");
            let busy_ns = (cpu_busy(server_cpu)? - busy_before) as f64 / USER_HZ * 1e9;
            let used: Vec<u64> = cpu_ns()?.iter().zip(&before).map(|(a, b)| a - b).collect();
            // Other work's share of the server CPU's busy time, split evenly
            // among the servers that took turns on it.
            let other_ns = (busy_ns as u64).saturating_sub(used.iter().sum()) / runs.len() as u64;
            for (run, used) in runs.iter_mut().zip(used) {
                run.server_cpu_ns = used;
                run.server_cpu_other_ns = other_ns;
            }
            let disturbed = runs
                .iter()
                .find_map(|run| latency::disturbed(run, self.latency_secs(), self.realtime));
            let disturbance = |runs: &[load::LoadRun]| -> u64 {
                runs.iter().map(|r| r.server_cpu_other_ns).sum()
            };
            if kept
                .as_deref()
                .is_none_or(|k| disturbance(&runs) < disturbance(k))
            {
                kept = Some(runs);
            }
            let Some(why) = disturbed else { break };
            if attempt == latency::REDO_DISTURBED {
                break;
            }
            redone += 1;
            cx.say(format_args!("# disturbed ({why}): once more"));
        }
        Ok((kept.expect("one run at least"), redone))
    }

    /// One round for one server: start it pinned, read its idle RSS, warm up,
    /// measure, read its RSS again, stop it.
    fn load_round(
        &self,
        cx: &Context,
        server: &Server,
        server_cpu: usize,
        wrk_cpu: usize,
    ) -> Result<Round> {
        let mut running = ServerProcess::start(cx, server, Some(server_cpu), true)?;
        running.wait_ready(Duration::from_secs(10))?;
        // Let the first request's allocations settle before reading "idle".
        std::thread::sleep(Duration::from_millis(200));
        let rss_idle_kib = running.status_kib("VmRSS")?;
        let url = running.url();
        wrk::run(cx, self.connections, wrk_cpu, WARMUP_SECS, &url, false)?;
        let cpu_before = running.cpu_ticks()?;
        let wrk = wrk::run(cx, self.connections, wrk_cpu, self.duration, &url, true)?
            .expect("a measured run reports");
        // wrk's own start and stop fall inside this span too: a slight overestimate.
        let cpu_secs = (running.cpu_ticks()? - cpu_before) as f64 / USER_HZ;
        Ok(Round {
            requests_per_sec: wrk.requests_per_sec(),
            cpu_us_per_request: cpu_secs * 1e6 / wrk.requests.max(1) as f64,
            server_busy_percent: cpu_secs * 100.0 / (wrk.duration_us.max(1) as f64 / 1e6),
            rss_after_load_kib: running.status_kib("VmRSS")?,
            rss_peak_kib: running.status_kib("VmHWM")?,
            rss_idle_kib,
            wrk,
        })
    }
    /// Each server's seconds of load in a latency run: as many as in all its
    /// saturation rounds, in one run, so that its p99 is taken over all of
    /// them, in the same weather as the other's.
    pub(super) fn latency_secs(&self) -> u32 {
        self.duration * self.rounds
    }

    /// The load generator at `rate` against `urls` in turn, with this bench's settings.
    fn load_step(
        &self,
        cx: &Context,
        generator: &Utf8Path,
        cpu: usize,
        rate: u64,
        urls: &[String],
    ) -> Step {
        let (secs, connections) = (self.latency_secs(), self.connections);
        load::step(
            cx,
            generator,
            cpu,
            self.realtime,
            rate,
            secs,
            connections,
            urls,
        )
    }

    /// The commands a run would make, for `--dry-run`: the steps that run,
    /// each with the port and pid it gets only then as a placeholder.
    fn plan(
        &self,
        cx: &Context,
        servers: &[Server],
        generator: &Utf8Path,
        server_cpu: usize,
        wrk_cpu: usize,
    ) -> Vec<String> {
        let url = load_url(PORT_PLACEHOLDER);
        let start = |server: &Server, cpu| {
            start_step(cx, &server.binary, cpu, PORT_PLACEHOLDER, true).line()
        };
        let mut lines = vec![format!(
            "# {STARTS} times each, unpinned: start, GET {LOAD_PATH} until 200, stop"
        )];
        lines.extend(servers.iter().map(|server| start(server, None)));
        lines.push(format!(
            "# {} rounds, the servers in turn: start pinned, read /proc/<pid>/status VmRSS, \
             warm up, measure (with /proc/<pid>/stat CPU time), read VmRSS and VmHWM, stop",
            self.rounds
        ));
        for server in servers {
            lines.push(start(server, Some(server_cpu)));
            for (secs, measured) in [(WARMUP_SECS, false), (self.duration, true)] {
                lines.push(wrk::step(cx, self.connections, wrk_cpu, secs, &url, measured).line());
            }
        }
        let rates = self
            .rates
            .0
            .iter()
            .map(|r| format!("{r}/s"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
            "# then {} started once, pinned, and {} held at 0 (idle CPUs poll) where it can be \
             opened; at each rate ({rates}), one run of the load generator, open loop, {} s a \
             server{}, with /proc/<pid>/task/*/schedstat CPU time; a run disturbed (other work on \
             the servers' CPU, from /proc/stat) is made again, twice at most",
            match servers.len() {
                1 => "the server",
                _ => "both servers",
            },
            idle::PATH,
            self.latency_secs(),
            match servers.len() {
                1 => String::new(),
                _ => format!(", the servers in turn every {} ms", load::SLICE_MS),
            },
        ));
        for server in servers {
            lines.push(start(server, Some(server_cpu)));
            if self.realtime {
                lines.push(realtime_step(cx, PID_PLACEHOLDER).line());
            }
        }
        let urls: Vec<String> = servers.iter().map(|_| url.clone()).collect();
        for &rate in &self.rates.0 {
            lines.push(self.load_step(cx, generator, wrk_cpu, rate, &urls).line());
        }
        lines
    }
}
