//! `cargo xtask bench`: the service under load, side by side with an
//! equivalent Go `net/http` server, and the figures the goals are judged by.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use clap::Args;
use serde::{Deserialize, Serialize};
use xshell::{Cmd, Shell, cmd};

use crate::build::Build;
use crate::context::{Context, shell_quote};
use crate::{http, tools};

/// The path under load.
const LOAD_PATH: &str = "/health";
/// Startups timed per server; the median is reported.
const STARTS: usize = 20;
/// wrk's warm-up before each measured run.
const WARMUP_SECS: u32 = 1;
/// The Go comparison server: its source and where it is built.
const GO_SOURCE: &str = "xtask/bench/main.go";
const GO_BINARY: &str = "target/bench/api-go";
/// The wrk script that prints wrk's figures as JSON.
const WRK_SCRIPT: &str = "xtask/bench/report.lua";
/// The line the wrk script prints its JSON on.
const WRK_MARKER: &str = "XTASK-BENCH ";

/// The goals of issue 2, in bytes and ratios.
const GOAL_RPS_RATIO: f64 = 1.8;
const GOAL_BINARY_BYTES: u64 = 2_000_000;
const GOAL_IDLE_RSS_BYTES: u64 = 2_000_000;

/// Measure the service: requests/s, latency, memory, start time, size
#[derive(Args, Debug)]
#[command(
    long_about = "Measure the service: requests/s and p50/p99 latency on GET /health under wrk \
load, the server's CPU time per request, RSS at idle and after the load, time from exec to \
the first 200 (median of 20), and the size of the release binary. When `go` is installed, an equivalent Go net/http server \
(xtask/bench/main.go) is measured the same way in the same run, and the ratios are shown.

The server is pinned to one CPU and wrk to another (taskset), so they do not compete; \
with one CPU the service runs on its current-thread runtime. The servers take turns in \
each round (after a warm-up); the medians over the rounds are reported, and the best \
round beside them. Close other work first: the figures are only as quiet as the \
machine (other work slows rounds down, never up, so a best round far above the median \
means the machine was busy). This is a measurement, not a test: it does not fail when \
a goal is missed, but says so.

Runs:
  API_VERSION=<version> RUSTFLAGS='-C target-feature=+crt-static' \\
    cargo build --release --package api --target x86_64-unknown-linux-gnu   (as `build --static`;
    `--dynamic`: as `build`)
  go build -trimpath '-ldflags=-s -w -X main.version=<version>' -o target/bench/api-go xtask/bench/main.go
  PORT=<port> HOST=127.0.0.1 bin/api                       (20 times, each until its first 200)
  PORT=<port> HOST=127.0.0.1 taskset -c <cpu0> bin/api
  taskset -c <cpu1> wrk -t1 -c<connections> -d1s http://127.0.0.1:<port>/health   (warm-up)
  taskset -c <cpu1> wrk -t1 -c<connections> -d<secs>s --latency -s xtask/bench/report.lua http://127.0.0.1:<port>/health
and reads VmRSS and VmHWM from /proc/<pid>/status, utime and stime from /proc/<pid>/stat.

CPU time per request is the fairest speed figure when wrk, which has one CPU too, \
cannot saturate the server: `server CPU busy` well under 100% says so.",
    after_long_help = "Environment:
  API_VERSION   the version to compile in, instead of git describe's
  LOG_LEVEL, WORKERS, ...   passed through to the servers, so `LOG_LEVEL=debug cargo xtask bench`
                shows what per-request logging costs

Examples:
  cargo xtask bench
  cargo xtask bench --json > bench.json
  cargo xtask bench --duration 10 --rounds 5 --connections 128
  cargo xtask --dry-run bench"
)]
pub struct Bench {
    /// Print the figures as JSON on stdout (progress stays on stderr)
    #[arg(long)]
    pub json: bool,

    /// Seconds of measured load per round and server
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub duration: u32,

    /// Rounds of load; the servers take turns in each, and the median is reported
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,

    /// Connections wrk keeps open (keep-alive)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Measure the dynamically linked build (`cargo xtask build`) instead of the static one the image ships
    #[arg(long)]
    pub dynamic: bool,

    /// Leave the Go comparison out even when go is installed
    #[arg(long)]
    pub no_go: bool,
}

/// A server under measurement.
struct Server {
    name: &'static str,
    binary: Utf8PathBuf,
}

/// wrk's figures for one run, as xtask/bench/report.lua prints them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub errors_connect: u64,
    pub errors_read: u64,
    pub errors_write: u64,
    pub errors_status: u64,
    pub errors_timeout: u64,
}

impl WrkRun {
    fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
    }
}

#[derive(Debug, Serialize)]
struct Round {
    requests_per_sec: f64,
    /// The server's CPU time (user + system) per request during the measured
    /// run: what a request costs, whether or not wrk could saturate the server.
    cpu_us_per_request: f64,
    /// Share of the run the server spent on its CPU; well under 100% means
    /// wrk, not the server, set the pace.
    server_busy_percent: f64,
    rss_idle_kib: u64,
    rss_after_load_kib: u64,
    rss_peak_kib: u64,
    wrk: WrkRun,
}

/// Everything measured for one server.
#[derive(Debug, Serialize)]
struct Figures {
    name: &'static str,
    binary: String,
    binary_bytes: u64,
    /// Medians over the rounds.
    requests_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    /// The best round (highest requests/s, lowest p99): on a shared machine,
    /// other work only ever slows a round down.
    requests_per_sec_best: f64,
    p99_us_best: u64,
    cpu_us_per_request: f64,
    server_busy_percent: f64,
    rss_idle_kib: u64,
    rss_after_load_kib: u64,
    /// The highest VmHWM of any round.
    rss_peak_kib: u64,
    errors: u64,
    startup_ms_median: f64,
    startup_ms_min: f64,
    startup_ms_max: f64,
    rounds: Vec<Round>,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// api / go: higher is better.
    requests_per_sec: f64,
    requests_per_sec_best: f64,
    /// api / go: lower is better.
    p50: f64,
    p99: f64,
    p99_best: f64,
    /// go / api: how many times more requests one core serves (higher is better).
    requests_per_cpu_second: f64,
    rss_idle: f64,
    rss_after_load: f64,
    startup: f64,
    binary_size: f64,
}

#[derive(Debug, Serialize)]
struct Goals {
    requests_per_sec_at_least_1_8x_go: Option<bool>,
    p99_no_worse_than_go: Option<bool>,
    idle_rss_at_most_2_mb: bool,
    binary_under_2_mb: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    version: String,
    linking: &'static str,
    path: &'static str,
    duration_secs: u32,
    rounds: u32,
    connections: u32,
    server_cpu: usize,
    wrk_cpu: usize,
    api: Figures,
    go: Option<Figures>,
    /// Why there is no Go comparison, when there is none.
    go_skipped: Option<String>,
    ratios: Option<Ratios>,
    goals: Goals,
}

impl Bench {
    pub fn run(self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO, &tools::WRK, &tools::TASKSET])?;
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
            cx.run(cmd!(sh, "{go} build -trimpath {ldflags} -o {out} {source}"))
                .context("build the Go comparison server")?;
            servers.push(Server {
                name: "go",
                binary: out,
            });
        }

        if cx.dry_run {
            for line in self.plan(cx, &servers, server_cpu, wrk_cpu) {
                println!("{line}");
            }
            return Ok(());
        }

        let mut startups: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
        cx.say(format_args!(
            "# timing {STARTS} startups of each server, exec to first 200 on {LOAD_PATH}"
        ));
        for i in 0..STARTS {
            for (server, times) in servers.iter().zip(&mut startups) {
                let mut running = Running::start(cx, server, None, i == 0)?;
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
        let goals = Goals {
            requests_per_sec_at_least_1_8x_go: ratios
                .as_ref()
                .map(|r| r.requests_per_sec >= GOAL_RPS_RATIO),
            p99_no_worse_than_go: go.as_ref().map(|go| api.p99_us <= go.p99_us),
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
        if self.json {
            cx.result(serde_json::to_string_pretty(&report)?);
        } else {
            cx.result(table(&report));
        }
        Ok(())
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
        let mut running = Running::start(cx, server, Some(server_cpu), true)?;
        running.wait_ready(Duration::from_secs(10))?;
        // Let the first request's allocations settle before reading "idle".
        std::thread::sleep(Duration::from_millis(200));
        let rss_idle_kib = running.status_kib("VmRSS")?;
        let url = running.url();
        self.wrk(cx, wrk_cpu, WARMUP_SECS, &url, false)?;
        let cpu_before = running.cpu_ticks()?;
        let wrk = self
            .wrk(cx, wrk_cpu, self.duration, &url, true)?
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

    fn wrk_cmd<'a>(
        &self,
        sh: &'a Shell,
        cpu: usize,
        secs: u32,
        url: &str,
        measured: bool,
    ) -> Cmd<'a> {
        let cpu = cpu.to_string();
        let connections = format!("-c{}", self.connections);
        let duration = format!("-d{secs}s");
        let report: &[&str] = if measured {
            &["--latency", "-s", WRK_SCRIPT]
        } else {
            &[]
        };
        cmd!(
            sh,
            "taskset -c {cpu} wrk -t1 {connections} {duration} {report...} {url}"
        )
    }

    fn wrk(
        &self,
        cx: &Context,
        cpu: usize,
        secs: u32,
        url: &str,
        measured: bool,
    ) -> Result<Option<WrkRun>> {
        let cmd = self.wrk_cmd(&cx.sh, cpu, secs, url, measured);
        let line = echo(&[], &cmd);
        eprintln!("$ {line}");
        let output = Command::from(cmd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {line}"))?;
        if !output.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        if !measured {
            return Ok(None);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        if cx.verbose {
            eprint!("{stdout}");
        }
        parse_wrk(&stdout)
            .with_context(|| format!("read the figures of `{line}`"))
            .map(Some)
    }

    /// The commands a run would make, for `--dry-run`.
    fn plan(
        &self,
        cx: &Context,
        servers: &[Server],
        server_cpu: usize,
        wrk_cpu: usize,
    ) -> Vec<String> {
        let sh = &cx.sh;
        let url = format!("http://127.0.0.1:<port>{LOAD_PATH}");
        let mut lines = vec![format!(
            "# {STARTS} times each, unpinned: start, GET {LOAD_PATH} until 200, stop"
        )];
        for server in servers {
            let (env, cmd) = server_cmd(sh, &server.binary, None, "<port>");
            lines.push(echo(&env, &cmd));
        }
        lines.push(format!(
            "# {} rounds, the servers in turn: start pinned, read /proc/<pid>/status VmRSS, \
             warm up, measure (with /proc/<pid>/stat CPU time), read VmRSS and VmHWM, stop",
            self.rounds
        ));
        for server in servers {
            let (env, cmd) = server_cmd(sh, &server.binary, Some(server_cpu), "<port>");
            lines.push(echo(&env, &cmd));
            lines.push(echo(
                &[],
                &self.wrk_cmd(sh, wrk_cpu, WARMUP_SECS, &url, false),
            ));
            lines.push(echo(
                &[],
                &self.wrk_cmd(sh, wrk_cpu, self.duration, &url, true),
            ));
        }
        lines
    }
}

/// The command that starts a server: on `port`, on loopback only, pinned to
/// `cpu` if given. Its other configuration comes from our environment.
fn server_cmd<'a>(
    sh: &'a Shell,
    binary: &Utf8Path,
    cpu: Option<usize>,
    port: &str,
) -> (Vec<(&'static str, String)>, Cmd<'a>) {
    let env = vec![("PORT", port.to_owned()), ("HOST", "127.0.0.1".to_owned())];
    let cmd = match cpu {
        Some(cpu) => {
            let cpu = cpu.to_string();
            cmd!(sh, "taskset -c {cpu} {binary}")
        }
        None => cmd!(sh, "{binary}"),
    };
    (env, cmd)
}

/// `K=v ... program args`, as Context echoes a command.
fn echo(env: &[(&str, String)], cmd: &Cmd<'_>) -> String {
    let mut line = String::new();
    for (key, value) in env {
        line.push_str(&format!("{key}={} ", shell_quote(value)));
    }
    line.push_str(&cmd.to_string());
    line
}

/// A server process, killed when dropped: no bench leaves one running.
struct Running {
    child: Child,
    port: u16,
    started: Instant,
    line: String,
}

impl Running {
    fn start(cx: &Context, server: &Server, cpu: Option<usize>, say: bool) -> Result<Running> {
        let port = free_port()?;
        let (env, cmd) = server_cmd(&cx.sh, &server.binary, cpu, &port.to_string());
        let line = echo(&env, &cmd);
        if say || cx.verbose {
            eprintln!("$ {line}");
        }
        let mut command = Command::from(cmd);
        for (key, value) in &env {
            command.env(key, value);
        }
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {line}"))?;
        Ok(Running {
            child,
            port,
            started,
            line,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{LOAD_PATH}", self.port)
    }

    /// Polls until the server answers 200; returns the time since exec.
    fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
        let url = self.url();
        loop {
            if let Ok(response) = http::get(&url, Duration::from_secs(1))
                && response.status == 200
            {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!("`{}` exited ({status}): {}", self.line, stderr.trim());
            }
            if self.started.elapsed() > limit {
                bail!(
                    "`{}` did not answer 200 on {url} within {limit:?}",
                    self.line
                );
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// User plus system CPU time so far, in clock ticks (/proc/<pid>/stat).
    fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        stat_cpu_ticks(&stat).with_context(|| format!("utime and stime in {path}"))
    }

    /// A `kB` field of /proc/<pid>/status: VmRSS, VmHWM.
    fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        status_field_kib(&status, field).with_context(|| format!("{field} in {path}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Clock ticks per second in /proc/<pid>/stat: USER_HZ, 100 on every Linux
/// that exports it to user space.
const USER_HZ: f64 = 100.0;

/// utime + stime from /proc/<pid>/stat: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces.
fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after_name = &stat[stat.rfind(')').context("no (comm) field")? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("too few fields")?
            .parse()
            .context("not a number")
    };
    Ok(tick(11)? + tick(12)?)
}

fn status_field_kib(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} line"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("{field} is not a number of kB: {line:?}"))
}

/// The first two CPUs this process may run on, from `Cpus_allowed_list` in
/// /proc/self/status: the server gets the first, wrk the second.
fn two_cpus(status: &str) -> Result<(usize, usize)> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list in /proc/self/status")?
        .trim();
    let cpus = parse_cpu_list(list)?;
    match cpus[..] {
        [server, wrk, ..] => Ok((server, wrk)),
        _ => bail!(
            "bench pins the server and wrk to different CPUs, but this process may only use \
             CPU {list}: run it where two CPUs are available"
        ),
    }
}

/// `0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11].
fn parse_cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("not a CPU list: {list:?}");
        match part.split_once('-') {
            Some((from, to)) => {
                let from: usize = from.parse().with_context(bad)?;
                let to: usize = to.parse().with_context(bad)?;
                cpus.extend(from..=to);
            }
            None => cpus.push(part.parse().with_context(bad)?),
        }
    }
    Ok(cpus)
}

/// The JSON line of xtask/bench/report.lua among wrk's output.
pub fn parse_wrk(stdout: &str) -> Result<WrkRun> {
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix(WRK_MARKER))
        .with_context(|| format!("wrk printed no `{WRK_MARKER}` line: is {WRK_SCRIPT} loaded?"))?;
    serde_json::from_str(json).with_context(|| format!("parse {json}"))
}

fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> T {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    values[values.len() / 2]
}

fn summarize(server: &Server, startups: &[Duration], rounds: Vec<Round>) -> Result<Figures> {
    let binary_bytes = std::fs::metadata(&server.binary)
        .with_context(|| format!("size of {}", server.binary))?
        .len();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    Ok(Figures {
        name: server.name,
        binary: server.binary.to_string(),
        binary_bytes,
        requests_per_sec: median(rounds.iter().map(|r| r.requests_per_sec)),
        p50_us: median(rounds.iter().map(|r| r.wrk.p50_us)),
        p99_us: median(rounds.iter().map(|r| r.wrk.p99_us)),
        requests_per_sec_best: rounds
            .iter()
            .map(|r| r.requests_per_sec)
            .fold(0.0, f64::max),
        p99_us_best: rounds.iter().map(|r| r.wrk.p99_us).min().unwrap_or(0),
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

fn ratios(api: &Figures, go: &Figures) -> Ratios {
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Ratios {
        requests_per_sec: r(api.requests_per_sec, go.requests_per_sec),
        requests_per_sec_best: r(api.requests_per_sec_best, go.requests_per_sec_best),
        p50: r(api.p50_us as f64, go.p50_us as f64),
        p99: r(api.p99_us as f64, go.p99_us as f64),
        p99_best: r(api.p99_us_best as f64, go.p99_us_best as f64),
        requests_per_cpu_second: r(go.cpu_us_per_request, api.cpu_us_per_request),
        rss_idle: r(api.rss_idle_kib as f64, go.rss_idle_kib as f64),
        rss_after_load: r(api.rss_after_load_kib as f64, go.rss_after_load_kib as f64),
        startup: r(api.startup_ms_median, go.startup_ms_median),
        binary_size: r(api.binary_bytes as f64, go.binary_bytes as f64),
    }
}

/// The report for a person: one row per figure, one column per server.
fn table(report: &Report) -> String {
    let api = &report.api;
    let go = report.go.as_ref();
    let mut out = format!(
        "bench {version}: GET {path}, wrk -t1 -c{c} on CPU {wc}, server on CPU {sc}, \
         {rounds} round(s) of {d} s, medians unless said\n",
        version = report.version,
        path = report.path,
        c = report.connections,
        wc = report.wrk_cpu,
        sc = report.server_cpu,
        rounds = report.rounds,
        d = report.duration_secs,
    );
    let api_name = format!("api ({})", report.linking);
    out.push_str(&format!(
        "{:<28} {:>16} {:>16} {:>9}\n",
        "", api_name, "go net/http", "api/go"
    ));
    let mut row = |label: &str, a: String, g: Option<String>, ratio: Option<f64>| {
        out.push_str(&format!(
            "{label:<28} {a:>16} {:>16} {:>9}\n",
            g.unwrap_or_else(|| "-".into()),
            ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        ));
    };
    let ratios = report.ratios.as_ref();
    row(
        "requests/s",
        thousands(api.requests_per_sec.round() as u64),
        go.map(|g| thousands(g.requests_per_sec.round() as u64)),
        ratios.map(|r| r.requests_per_sec),
    );
    row(
        "requests/s, best round",
        thousands(api.requests_per_sec_best.round() as u64),
        go.map(|g| thousands(g.requests_per_sec_best.round() as u64)),
        ratios.map(|r| r.requests_per_sec_best),
    );
    row(
        "latency p50",
        format!("{} us", thousands(api.p50_us)),
        go.map(|g| format!("{} us", thousands(g.p50_us))),
        ratios.map(|r| r.p50),
    );
    row(
        "latency p99",
        format!("{} us", thousands(api.p99_us)),
        go.map(|g| format!("{} us", thousands(g.p99_us))),
        ratios.map(|r| r.p99),
    );
    row(
        "latency p99, best round",
        format!("{} us", thousands(api.p99_us_best)),
        go.map(|g| format!("{} us", thousands(g.p99_us_best))),
        ratios.map(|r| r.p99_best),
    );
    row(
        "server CPU per request",
        format!("{:.2} us", api.cpu_us_per_request),
        go.map(|g| format!("{:.2} us", g.cpu_us_per_request)),
        ratios.map(|r| 1.0 / r.requests_per_cpu_second),
    );
    row(
        "server CPU busy",
        format!("{:.0}%", api.server_busy_percent),
        go.map(|g| format!("{:.0}%", g.server_busy_percent)),
        None,
    );
    row(
        "RSS idle",
        format!("{} KiB", thousands(api.rss_idle_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_idle_kib))),
        ratios.map(|r| r.rss_idle),
    );
    row(
        "RSS after load",
        format!("{} KiB", thousands(api.rss_after_load_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_after_load_kib))),
        ratios.map(|r| r.rss_after_load),
    );
    row(
        "RSS peak",
        format!("{} KiB", thousands(api.rss_peak_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_peak_kib))),
        None,
    );
    row(
        &format!("exec to first 200 (of {STARTS})"),
        format!("{:.2} ms", api.startup_ms_median),
        go.map(|g| format!("{:.2} ms", g.startup_ms_median)),
        ratios.map(|r| r.startup),
    );
    row(
        "binary size",
        format!("{} B", thousands(api.binary_bytes)),
        go.map(|g| format!("{} B", thousands(g.binary_bytes))),
        ratios.map(|r| r.binary_size),
    );
    row(
        "wrk errors",
        api.errors.to_string(),
        go.map(|g| g.errors.to_string()),
        None,
    );
    if let Some(why) = &report.go_skipped {
        out.push_str(&format!("no Go comparison: {why}\n"));
    }
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let goals = &report.goals;
    out.push_str(&format!(
        "goals (on the medians): requests/s >= {GOAL_RPS_RATIO}x go: {}; p99 <= go: {}; idle RSS <= 2 MB: {}; binary < 2 MB: {}",
        verdict(goals.requests_per_sec_at_least_1_8x_go),
        verdict(goals.p99_no_worse_than_go),
        verdict(Some(goals.idle_rss_at_most_2_mb)),
        verdict(Some(goals.binary_under_2_mb)),
    ));
    out
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7").unwrap(), [0, 2, 3, 4, 7]);
        assert!(parse_cpu_list("0-x").is_err());
    }

    #[test]
    fn the_server_and_wrk_get_the_first_two_allowed_cpus() {
        let status = "Name:\tx\nCpus_allowed_list:\t2-3,6\n";
        assert_eq!(two_cpus(status).unwrap(), (2, 3));
    }

    #[test]
    fn one_cpu_is_refused_with_the_reason() {
        let err = two_cpus("Cpus_allowed_list:\t5\n").unwrap_err().to_string();
        assert!(
            err.contains("different CPUs") && err.contains("CPU 5"),
            "{err}"
        );
    }

    #[test]
    fn cpu_time_is_utime_plus_stime_even_when_the_name_has_spaces() {
        let stat = "4242 (api go (x)) S 1 2 3 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 1 0 9 1 1";
        assert_eq!(stat_cpu_ticks(stat).unwrap(), 1234 + 567);
        assert!(stat_cpu_ticks("4242 (api) S 1").is_err());
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "VmPeak:\t  10000 kB\nVmHWM:\t    2532 kB\nVmRSS:\t    1532 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS").unwrap(), 1532);
        assert_eq!(status_field_kib(status, "VmHWM").unwrap(), 2532);
        assert!(status_field_kib(status, "VmSwap").is_err());
    }

    #[test]
    fn wrk_figures_come_from_the_script_line() {
        let out = "Running 5s test @ http://127.0.0.1:1/health\n  1 threads and 64 connections\n\
            XTASK-BENCH {\"requests\":700000,\"duration_us\":5000000,\"bytes\":1,\"p50_us\":345,\
            \"p90_us\":500,\"p99_us\":763,\"max_us\":9000,\"errors_connect\":0,\"errors_read\":0,\
            \"errors_write\":0,\"errors_status\":2,\"errors_timeout\":0}\n";
        let run = parse_wrk(out).unwrap();
        assert_eq!((run.p50_us, run.p99_us, run.errors()), (345, 763, 2));
        assert_eq!(run.requests_per_sec(), 140_000.0);
    }

    #[test]
    fn wrk_output_without_the_script_line_is_an_error() {
        let err = parse_wrk("Requests/sec: 1000\n").unwrap_err().to_string();
        assert!(err.contains("report.lua"), "{err}");
    }

    #[test]
    fn medians_take_the_middle_value() {
        assert_eq!(median([3, 1, 2]), 2);
        assert_eq!(median([5.0, 1.0, 9.0, 7.0]), 7.0);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
