//! `cargo xtask bench`: the service under load, side by side with an
//! equivalent Go `net/http` server, and the figures the goals are judged by.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::ops::RangeInclusive;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Value, json};
use xshell::{Cmd, Shell, cmd};

pub mod abuse;
mod latency;
mod load;
mod procfs;
mod table;

use procfs::{USER_HZ, cpu_busy_ticks, stat_cpu_ticks, status_field_kib, two_cpus};
use table::table;

use crate::build::Build;
use crate::cli::{self, Task};
use crate::context::{Context, shell_quote};
use crate::process::{Background, Stdout};
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

/// The service's goals against Go on Alpine, in bytes and ratios.
/// Requests served per second of server CPU, against Go's.
const GOAL_CPU_RATIO: f64 = 1.8;
const GOAL_BINARY_BYTES: u64 = 2_000_000;
const GOAL_IDLE_RSS_BYTES: u64 = 2_000_000;

const ABOUT: &str = "Measure the service: latency at fixed loads, CPU per request, requests/s, memory, start time, size";

const LONG_ABOUT: &str = "Measure the service on GET /health: latency (p50, p99, p99.9) at \
fixed offered loads, the server's CPU time per request and requests/s at saturation under \
wrk, RSS at idle and after the load, time from exec to the first 200 (median of 20), and the \
size of the release binary. When `go` is installed, an equivalent Go net/http server \
(xtask/bench/main.go) is measured the same way in the same run, and the ratios are shown.

Latency is measured open loop, at the same fixed rates for both servers (--rates, \
5,000, 10,000 and 20,000/s unless told): fixed rather than shares of Go's saturated \
requests/s, which moved by 43% between two quiet runs and took the rates, and the p99 near \
saturation, with it; fixed rates compare like with like from run to run and in the README. \
Each is shown as a share of Go's saturated requests/s of the same run, and a rate at 75% of \
either server's or more is warned of. The load generator (xtask/bench/load.rs, built with \
rustc) sends each request when it is due, whatever happened to the ones before, and counts \
its latency from that time, so a stall counts against every request it holds up \
(coordinated omission corrected, as wrk2 does); between requests it sleeps in ppoll. At \
saturation, wrk's latency is the queue it builds, and wrk's one CPU bounds the faster \
server's requests/s; so the goals are judged on the latency at fixed rates and on CPU per \
request, and requests/s is shown with what bounds it.

The server is pinned to one CPU and wrk or the generator to another (taskset), so they do \
not compete; with one CPU the service runs on its current-thread runtime. The servers take \
turns in each round (after a warm-up), in the latency runs in an order swapped every round; \
the medians over the rounds are reported. A latency run is disturbed when the generator \
woke late by 0.5% of the run in all (its CPU was taken), or when other work took 5% of the \
server's CPU (its busy time in /proc/stat less the server's own); it is made again, twice \
at most, the least disturbed kept, and bench says so. Other work on the machine moves the \
figures most: close it, or use --realtime, which runs the servers and the generator under \
SCHED_FIFO so that other work only runs while they sleep (both servers alike; on a machine \
at load 6, it brought both servers' p50 at 5,000/s from 250-650 us to about 100 us). This \
is a measurement, not a test: it does not fail when a goal is missed, but says so.

Runs:
  RUSTFLAGS='-C target-feature=+crt-static' API_VERSION=<v> cargo build
    --message-format=json-render-diagnostics --release --package api
    --target x86_64-unknown-linux-gnu                      (as `build --static`; --dynamic: `build`)
  go build -trimpath '-ldflags=-s -w -X main.version=<v>'
    -o target/bench/api-go xtask/bench/main.go
  rustc --edition 2024 -C opt-level=3 -o target/bench/load xtask/bench/load.rs
  PORT=<port> HOST=127.0.0.1 bin/api                        (20 times, each until its first 200)
  PORT=<port> HOST=127.0.0.1 target/bench/api-go            (the same, when go is installed)
  PORT=<port> HOST=127.0.0.1 taskset -c <cpu0> bin/api
  taskset -c <cpu1> wrk -t1 -c<n> -d1s http://127.0.0.1:<port>/health                  (warm-up)
  taskset -c <cpu1> wrk -t1 -c<n> -d<secs>s --latency -s xtask/bench/report.lua
    http://127.0.0.1:<port>/health
  chrt --all-tasks --fifo --pid 50 <pid>                   (--realtime: each server)
  [chrt --fifo 50] taskset -c <cpu1> target/bench/load --rate <r> --duration <secs>
    --warmup 1 --connections <n> http://127.0.0.1:<port>/health  (each rate and server, each round)
and reads VmRSS and VmHWM from /proc/<pid>/status, utime and stime from /proc/<pid>/stat, \
and the busy time of the server's CPU from /proc/stat.

CPU time per request is the fairest speed figure when wrk, which has one CPU too, \
cannot saturate the server: `server CPU busy` well under 100% says so.

With --abuse, instead: the service under abuse, each kind against a fresh server in a \
container of the static binary with rollout.yaml's memory limit (docker run --memory 128m \
--network host, listening on 127.0.0.1 only; a plain process when there is no Docker \
engine): --silent connections that send nothing, --trickle ones that send one byte, \
--slowloris ones that send a request head a byte at a time, --pipeliners that send \
pipelined requests and never read, each flood alone and then all at once, every client \
connecting again when the server closes it, held --hold seconds while a well-behaved client \
measures GET /health on a keep-alive connection (every 2 ms), and on a new connection every \
100 ms with a 1 s timeout, as a kubelet probe, on the probe port (PROBE_PORT) and on the \
service port; then a --burst of connections and RSS each second for --settle seconds. It \
reports connections opened and closed, RSS, the container's memory cgroup (TCP buffers \
included), each latency's p99 and failures, and whether the server survived. The client needs an open-file limit above the connection \
counts: they are cut to fit it, and the cut is said.";

const AFTER_LONG_HELP: &str = "Environment:
  API_VERSION  the version to compile in, instead of git describe's
  LOG_LEVEL, WORKERS, HEADER_READ_TIMEOUT_SECS, MAX_CONNECTIONS, ...
               passed through to the servers (Go's reads only PORT and HOST), so
               `LOG_LEVEL=debug cargo xtask bench` shows what per-request logging costs

Examples:
  cargo xtask bench
  cargo xtask bench --abuse
  MAX_CONNECTIONS=4096 cargo xtask bench --abuse --silent 10000 --hold 5
  cargo xtask bench --json > bench.json
  cargo xtask bench --duration 10 --rounds 5 --connections 128   (longer: steadier p99.9)
  sudo cargo xtask bench --realtime --rates 2000,5000,10000
  cargo xtask --dry-run bench";

#[derive(Debug)]
pub struct Bench {
    pub json: bool,
    /// Seconds of measured load per round and server.
    pub duration: u32,
    pub rounds: u32,
    /// wrk's keep-alive connections.
    pub connections: u32,
    /// The fixed offered loads of the latency runs, requests/s.
    pub rates: latency::Rates,
    /// The servers and the generator under SCHED_FIFO in the latency runs.
    pub realtime: bool,
    pub dynamic: bool,
    pub no_go: bool,
    /// The abuse bench instead (`abuse.rs`), with the counts below.
    pub abuse: bool,
    pub silent: u32,
    pub trickle: u32,
    pub slowloris: u32,
    pub pipeliners: u32,
    pub burst: u32,
    /// Seconds each flood is held.
    pub hold: u64,
    /// Seconds RSS is followed after the burst.
    pub settle: u64,
    pub no_container: bool,
}

impl Task for Bench {
    type Outcome = ();

    fn command() -> cli::Command {
        use cli::switch;
        cli::task("bench", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .arg(switch(
                "json",
                "Print the figures as JSON on stdout (progress stays on stderr)",
            ))
            .arg(count(
                "duration",
                "DURATION",
                "5",
                1..=600,
                "Seconds of measured load per round and server, at saturation and at each fixed rate",
            ))
            .arg(count(
                "rounds",
                "ROUNDS",
                "3",
                1..=50,
                "Rounds of load; the servers take turns in each; medians are reported",
            ))
            .arg(count(
                "connections",
                "CONNECTIONS",
                "64",
                1..=10_000,
                "Keep-alive connections wrk and the load generator keep open",
            ))
            .arg(
                cli::option(
                    "rates",
                    "RATES",
                    "Fixed offered loads for the latency runs, requests/s, ascending and \
                     comma-separated: the same for both servers and from run to run",
                )
                .default_value(latency::DEFAULT_RATES)
                .value_parser(|list: &str| list.parse::<latency::Rates>()),
            )
            .arg(switch(
                "realtime",
                "Run the servers and the load generator under SCHED_FIFO (chrt -f 50) in the \
                 latency runs, so that other work on the machine cannot take their CPUs \
                 (needs root or CAP_SYS_NICE)",
            ))
            .arg(switch(
                "dynamic",
                "Measure the dynamically linked build (`cargo xtask build`) instead of the static \
                 one the image ships",
            ))
            .arg(switch(
                "no-go",
                "Leave the Go comparison out even when go is installed",
            ))
            .arg(switch(
                "abuse",
                "Instead: the service under abuse (silent, slowloris and pipelining \
                 floods, then a burst), in a container with rollout.yaml's memory limit",
            ))
            .arg(count(
                "silent",
                "SILENT",
                "20000",
                1..=25_000,
                "--abuse: silent connections to open",
            ))
            .arg(count(
                "trickle",
                "TRICKLE",
                "2200",
                0..=25_000,
                "--abuse: connections that send one byte, then nothing",
            ))
            .arg(count(
                "slowloris",
                "SLOWLORIS",
                "3000",
                0..=25_000,
                "--abuse: slowloris connections (a request head a byte a second)",
            ))
            .arg(count(
                "pipeliners",
                "PIPELINERS",
                "2048",
                0..=25_000,
                "--abuse: connections that pipeline requests and never read",
            ))
            .arg(count(
                "burst",
                "BURST",
                "5000",
                0..=25_000,
                "--abuse: connections in the burst after which RSS must come back",
            ))
            .arg(seconds(
                "hold",
                "HOLD",
                "15",
                1..=60,
                "--abuse: seconds each flood is held (past the service's 10 s header read \
                 timeout, so that closed clients come back)",
            ))
            .arg(seconds(
                "settle",
                "SETTLE",
                "30",
                1..=300,
                "--abuse: seconds RSS is followed after the burst",
            ))
            .arg(switch(
                "no-container",
                "--abuse: run the server as a plain process even when the Docker engine is \
                 there",
            ))
    }

    fn from(matches: &cli::ArgMatches) -> Bench {
        let flag = |id| matches.get_flag(id);
        let number = |id| cli::value::<u32>(matches, id);
        let secs = |id| cli::value::<u64>(matches, id);
        Bench {
            json: flag("json"),
            duration: number("duration"),
            rounds: number("rounds"),
            connections: number("connections"),
            rates: cli::value::<latency::Rates>(matches, "rates"),
            realtime: flag("realtime"),
            dynamic: flag("dynamic"),
            no_go: flag("no-go"),
            abuse: flag("abuse"),
            silent: number("silent"),
            trickle: number("trickle"),
            slowloris: number("slowloris"),
            pipeliners: number("pipeliners"),
            burst: number("burst"),
            hold: secs("hold"),
            settle: secs("settle"),
            no_container: flag("no-container"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        self.measure(cx)
    }
}

/// `--LONG N`: a count in `range`, with its default.
fn count(
    long: &'static str,
    value_name: &'static str,
    default: &'static str,
    range: RangeInclusive<i64>,
    help: &'static str,
) -> cli::Arg {
    cli::option(long, value_name, help)
        .default_value(default)
        .value_parser(clap::value_parser!(u32).range(range))
}

/// `--LONG SECONDS`: whole seconds in `range`, with its default.
fn seconds(
    long: &'static str,
    value_name: &'static str,
    default: &'static str,
    range: RangeInclusive<u64>,
    help: &'static str,
) -> cli::Arg {
    cli::option(long, value_name, help)
        .default_value(default)
        .value_parser(clap::value_parser!(u64).range(range))
}

/// The service's settings, passed through to the server under --abuse.
const SERVICE_SETTINGS: &[&str] = &[
    "LOG_LEVEL",
    "WORKERS",
    "HEADER_READ_TIMEOUT_SECS",
    "MAX_CONNECTIONS",
    "MAX_ACTIVE_CONNECTIONS",
    "LISTEN_BACKLOG",
    "SOCKET_BUFFER_BYTES",
    "MAX_HEAD_BYTES",
    "DRAIN_DELAY_SECS",
    "SHUTDOWN_TIMEOUT_SECS",
];

/// The image and build folder of one --abuse run, removed when dropped.
struct AbuseImage {
    docker: Utf8PathBuf,
    tag: String,
    dir: Utf8PathBuf,
}

impl Drop for AbuseImage {
    fn drop(&mut self) {
        let _ = abuse::docker_run(&self.docker, &["rmi", "--force", &self.tag]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server under measurement.
struct Server {
    name: &'static str,
    binary: Utf8PathBuf,
}

/// wrk's figures for one run, as xtask/bench/report.lua prints them.
#[derive(Debug, Clone, PartialEq)]
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
    /// report.lua's JSON object: every field a whole number.
    fn from_json(value: &Value) -> Result<WrkRun> {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_u64)
                .with_context(|| format!("no whole number `{name}`"))
        };
        Ok(WrkRun {
            requests: field("requests")?,
            duration_us: field("duration_us")?,
            bytes: field("bytes")?,
            p50_us: field("p50_us")?,
            p90_us: field("p90_us")?,
            p99_us: field("p99_us")?,
            max_us: field("max_us")?,
            errors_connect: field("errors_connect")?,
            errors_read: field("errors_read")?,
            errors_write: field("errors_write")?,
            errors_status: field("errors_status")?,
            errors_timeout: field("errors_timeout")?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "duration_us": self.duration_us,
            "bytes": self.bytes,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "errors_connect": self.errors_connect,
            "errors_read": self.errors_read,
            "errors_write": self.errors_write,
            "errors_status": self.errors_status,
            "errors_timeout": self.errors_timeout,
        })
    }

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

#[derive(Debug)]
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
#[derive(Debug)]
struct Figures {
    name: &'static str,
    binary: String,
    binary_bytes: u64,
    /// Medians over the rounds.
    requests_per_sec: f64,
    /// The best round: on a shared machine, other work only ever slows a round down.
    requests_per_sec_best: f64,
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

#[derive(Debug)]
struct Ratios {
    /// api / go: higher is better.
    requests_per_sec: f64,
    requests_per_sec_best: f64,
    /// go / api: how many times more requests one core serves (higher is better).
    requests_per_cpu_second: f64,
    rss_idle: f64,
    rss_after_load: f64,
    startup: f64,
    binary_size: f64,
}

#[derive(Debug)]
struct Goals {
    /// At each fixed rate.
    p99_no_worse_than_go: Option<bool>,
    requests_per_cpu_second_at_least_1_8x_go: Option<bool>,
    idle_rss_at_most_2_mb: bool,
    binary_under_2_mb: bool,
}

#[derive(Debug)]
struct Report {
    version: String,
    linking: &'static str,
    path: &'static str,
    duration_secs: u32,
    rounds: u32,
    connections: u32,
    server_cpu: usize,
    wrk_cpu: usize,
    /// Whose saturated requests/s the fixed rates are shown as shares of.
    rate_base: &'static str,
    /// Whether the latency runs were under SCHED_FIFO.
    realtime: bool,
    latency: Vec<latency::AtRate>,
    api: Figures,
    go: Option<Figures>,
    /// Why there is no Go comparison, when there is none.
    go_skipped: Option<String>,
    ratios: Option<Ratios>,
    goals: Goals,
}

// `--json` is built by hand rather than with serde's derive, which is the
// longest step of a cold `cargo xtask` build.

impl Round {
    fn json(&self) -> Value {
        json!({
            "requests_per_sec": self.requests_per_sec,
            "cpu_us_per_request": self.cpu_us_per_request,
            "server_busy_percent": self.server_busy_percent,
            "rss_idle_kib": self.rss_idle_kib,
            "rss_after_load_kib": self.rss_after_load_kib,
            "rss_peak_kib": self.rss_peak_kib,
            "wrk": self.wrk.json(),
        })
    }
}

impl Figures {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "binary": self.binary,
            "binary_bytes": self.binary_bytes,
            "requests_per_sec": self.requests_per_sec,
            "requests_per_sec_best": self.requests_per_sec_best,
            "cpu_us_per_request": self.cpu_us_per_request,
            "server_busy_percent": self.server_busy_percent,
            "rss_idle_kib": self.rss_idle_kib,
            "rss_after_load_kib": self.rss_after_load_kib,
            "rss_peak_kib": self.rss_peak_kib,
            "errors": self.errors,
            "startup_ms_median": self.startup_ms_median,
            "startup_ms_min": self.startup_ms_min,
            "startup_ms_max": self.startup_ms_max,
            "rounds": self.rounds.iter().map(Round::json).collect::<Vec<_>>(),
        })
    }
}

impl Ratios {
    fn json(&self) -> Value {
        json!({
            "requests_per_sec": self.requests_per_sec,
            "requests_per_sec_best": self.requests_per_sec_best,
            "requests_per_cpu_second": self.requests_per_cpu_second,
            "rss_idle": self.rss_idle,
            "rss_after_load": self.rss_after_load,
            "startup": self.startup,
            "binary_size": self.binary_size,
        })
    }
}

impl Report {
    fn json(&self) -> Value {
        let goals = &self.goals;
        json!({
            "version": self.version,
            "linking": self.linking,
            "path": self.path,
            "duration_secs": self.duration_secs,
            "rounds": self.rounds,
            "connections": self.connections,
            "server_cpu": self.server_cpu,
            "wrk_cpu": self.wrk_cpu,
            "rate_base": self.rate_base,
            "realtime": self.realtime,
            "latency": self.latency.iter().map(latency::AtRate::json).collect::<Vec<_>>(),
            "api": self.api.json(),
            "go": self.go.as_ref().map(Figures::json),
            "go_skipped": self.go_skipped,
            "ratios": self.ratios.as_ref().map(Ratios::json),
            "goals": {
                "p99_no_worse_than_go": goals.p99_no_worse_than_go,
                "requests_per_cpu_second_at_least_1_8x_go":
                    goals.requests_per_cpu_second_at_least_1_8x_go,
                "idle_rss_at_most_2_mb": goals.idle_rss_at_most_2_mb,
                "binary_under_2_mb": goals.binary_under_2_mb,
            },
        })
    }
}

impl Bench {
    fn measure(self, cx: &Context) -> Result<()> {
        if self.abuse {
            return self.run_abuse(cx);
        }
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
        let latency = self.latency_rounds(cx, &servers, &generator, base, server_cpu, wrk_cpu)?;

        let goals = Goals {
            p99_no_worse_than_go: latency::p99_goal(&latency),
            requests_per_cpu_second_at_least_1_8x_go: ratios
                .as_ref()
                .map(|r| r.requests_per_cpu_second >= GOAL_CPU_RATIO),
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
            latency::disturbed_warning(&report.latency, self.duration, self.realtime)
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
            cx.result(serde_json::to_string_pretty(&report.json())?);
        } else {
            cx.result(table(&report));
        }
        Ok(())
    }

    /// Latency at each fixed rate: both servers started once, pinned to the
    /// same CPU (an idle one costs nothing), then in each round each rate
    /// against each server in turn, the order swapped every round (ABAB,
    /// BABA), so a slow drift of the machine touches both alike. `base` is the
    /// saturated requests/s the rates are shown as shares of.
    fn latency_rounds(
        &self,
        cx: &Context,
        servers: &[Server],
        generator: &Utf8PathBuf,
        base: f64,
        server_cpu: usize,
        load_cpu: usize,
    ) -> Result<Vec<latency::AtRate>> {
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
        for round in 1..=self.rounds {
            for at in &mut at {
                for i in latency::round_order(round, servers.len()) {
                    let (server, process) = (&servers[i], &running[i]);
                    cx.say(format_args!(
                        "# latency round {round}/{}: {} at {}/s ({}% of the base), open loop",
                        self.rounds, server.name, at.rate, at.percent
                    ));
                    let (run, redone) = self.least_disturbed_run(
                        cx, generator, process, at.rate, server_cpu, load_cpu,
                    )?;
                    at.redone += redone;
                    match server.name {
                        "api" => at.api.push(run),
                        _ => at.go.push(run),
                    }
                }
            }
        }
        Ok(at)
    }

    /// One run at `rate`, made again while disturbed (twice at most); the
    /// least disturbed is kept. Returns it and how many runs were redone.
    fn least_disturbed_run(
        &self,
        cx: &Context,
        generator: &Utf8PathBuf,
        server: &ServerProcess,
        rate: u64,
        server_cpu: usize,
        load_cpu: usize,
    ) -> Result<(load::LoadRun, u32)> {
        let mut kept: Option<load::LoadRun> = None;
        let mut redone = 0;
        for attempt in 0..=latency::REDO_DISTURBED {
            let busy_before = cpu_busy(server_cpu)?;
            let server_before = server.cpu_ticks()?;
            let mut run = load::run(
                cx,
                generator,
                load_cpu,
                self.realtime,
                rate,
                self.duration,
                self.connections,
                &server.url(),
            )?
            .expect("a measured run reports");
            let other_ticks = (cpu_busy(server_cpu)? - busy_before)
                .saturating_sub(server.cpu_ticks()? - server_before);
            run.server_cpu_other_ns = (other_ticks as f64 / USER_HZ * 1e9) as u64;
            let disturbed = latency::disturbed(&run, self.duration, self.realtime);
            let disturbance = |r: &load::LoadRun| r.stalled_ns + r.server_cpu_other_ns;
            if kept
                .as_ref()
                .is_none_or(|k| disturbance(&run) < disturbance(k))
            {
                kept = Some(run);
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

    /// `--abuse`: each flood against a fresh server, then the burst.
    fn run_abuse(&self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO])?;
        let remote_engine = remote_engine();
        let docker = match (self.no_container, tools::locate(tools::DOCKER.name)) {
            (true, _) => None,
            (false, Some(_)) if remote_engine.is_some() => {
                // The container's loopback is then the other host's; a flood across
                // a network to it is not what this bench is allowed to send.
                cx.say(format_args!(
                    "note: no container with --memory {}: the Docker engine is on another host \
                     (DOCKER_HOST={}), and the floods stay on this host's loopback; the server runs \
                     as a plain process (run the bench where the engine runs for the container figures)",
                    abuse::MEMORY_LIMIT,
                    remote_engine.unwrap_or_default()
                ));
                None
            }
            (false, None) => {
                cx.say(format_args!(
                    "note: no container with --memory {}: docker is not installed ({}); \
                     the server runs as a plain process",
                    abuse::MEMORY_LIMIT,
                    tools::DOCKER.install
                ));
                None
            }
            // A dry run only locates docker: it runs nothing, not even `docker version`.
            (false, Some(docker)) if cx.dry_run => Some(docker),
            (false, Some(docker)) => {
                match abuse::docker_run(&docker, &["version", "--format", "{{.Server.Version}}"]) {
                    Ok(_) => Some(docker),
                    Err(err) => {
                        cx.say(format_args!(
                        "note: no container with --memory {}: the Docker engine does not answer ({err:#}); \
                         the server runs as a plain process",
                        abuse::MEMORY_LIMIT
                    ));
                        None
                    }
                }
            }
        };
        let built = Build { static_link: true }.compile(cx)?;
        let pid = std::process::id();
        let tag = format!("api-abuse-{pid}:bench");
        if cx.dry_run {
            cx.plan(format_args!(
                "# raise this process's open-file limit: prlimit --pid {pid} --nofile=65536:65536"
            ));
            if let Some(docker) = &docker {
                cx.plan(format_args!(
                    "# an image FROM scratch with {} as /api, USER 65534:65534",
                    built.binary
                ));
                cx.plan(format_args!(
                    "{docker} build --tag {tag} target/bench/abuse-{pid}"
                ));
                cx.plan(format_args!(
                    "{docker} run --detach --name api-abuse-{pid}-<phase> --network host --memory {m} \
                     --memory-swap {m} --env PORT=<port> --env PROBE_PORT=<port> --env HOST=127.0.0.1 {tag}",
                    m = abuse::MEMORY_LIMIT
                ));
            } else {
                cx.plan(format_args!(
                    "PORT=<port> PROBE_PORT=<port> HOST=127.0.0.1 {}",
                    built.binary
                ));
            }
            cx.plan(format_args!(
                "# phases, each on a fresh server: {} silent, {} one-byte trickle, {} slowloris, {} \
                 pipelining non-readers, then all at once, held {} s each; then a burst of {} and RSS \
                 for {} s",
                self.silent,
                self.trickle,
                self.slowloris,
                self.pipeliners,
                self.hold,
                self.burst,
                self.settle
            ));
            return Ok(());
        }

        // The mix holds every flood at once.
        let want = u64::from(
            (self.silent + self.trickle + self.slowloris + self.pipeliners).max(self.burst),
        ) + 1_000;
        let nofile = abuse::raise_nofile(want.max(65_536));
        let room = nofile.saturating_sub(100) as usize;
        let clamp = |n: u32| {
            let n = n as usize;
            if n > room {
                cx.say(format_args!(
                    "note: {n} connections do not fit this process's open-file limit ({nofile}): {room} instead"
                ));
            }
            n.min(room)
        };
        let env: BTreeMap<String, String> = SERVICE_SETTINGS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect();

        let image = match &docker {
            Some(docker) => {
                let dir = cx.path(&format!("target/bench/abuse-{pid}"));
                std::fs::create_dir_all(&dir).with_context(|| format!("create {dir}"))?;
                std::fs::copy(&built.binary, dir.join("api"))
                    .with_context(|| format!("copy {} to {dir}", built.binary))?;
                std::fs::write(
                    dir.join("Dockerfile"),
                    "FROM scratch\nUSER 65534:65534\nCOPY api /api\nENTRYPOINT [\"/api\"]\n",
                )?;
                let image = AbuseImage {
                    docker: docker.clone(),
                    tag: tag.clone(),
                    dir: dir.clone(),
                };
                let mut build = std::process::Command::new(docker.as_std_path());
                build.args(["build", "--tag", &tag, dir.as_str()]);
                cx.change(build)
                    .stdout(Stdout::Kept)
                    .keep_stderr()
                    .within(
                        abuse::DOCKER_DEADLINE,
                        "check that the Docker engine answers",
                    )
                    .run(cx)?;
                Some(image)
            }
            None => None,
        };
        let start = |phase: &str| -> Result<abuse::Subject> {
            let port = free_port()?;
            match &docker {
                Some(docker) => abuse::Subject::container(
                    docker,
                    &tag,
                    &format!("api-abuse-{pid}-{phase}"),
                    port,
                    &env,
                ),
                None => abuse::Subject::process(&built.binary, port, &env),
            }
        };
        let hold = Duration::from_secs(self.hold);
        let mut phases = Vec::new();
        let counts = abuse::Counts {
            silent: clamp(self.silent),
            trickle: clamp(self.trickle),
            slowloris: clamp(self.slowloris),
            pipeliners: clamp(self.pipeliners),
        };
        for (name, floods) in abuse::phases(counts, room) {
            let mut subject = start(name.split(' ').next().unwrap_or(name))?;
            let result = abuse::phase(&mut subject, docker.as_deref(), name, &floods, hold);
            subject.stop(docker.as_deref());
            phases.push(result?);
        }
        let burst = if self.burst > 0 {
            let mut subject = start("burst")?;
            // Idle means after the first requests' allocations settle.
            std::thread::sleep(Duration::from_millis(500));
            let result = abuse::burst(
                &subject,
                clamp(self.burst),
                Duration::from_secs(self.settle),
            );
            subject.stop(docker.as_deref());
            Some(result?)
        } else {
            None
        };
        drop(image);
        let report = abuse::Report {
            plan: abuse::Plan {
                silent: self.silent as usize,
                trickle: self.trickle as usize,
                slowloris: self.slowloris as usize,
                pipeliners: self.pipeliners as usize,
                burst: self.burst as usize,
                hold_secs: self.hold,
                settle_secs: self.settle,
                container: docker.is_some(),
            },
            where_: match &docker {
                Some(_) => format!(
                    "in a container, --memory {}, --network host",
                    abuse::MEMORY_LIMIT
                ),
                None => "as a plain process (no memory limit)".to_owned(),
            },
            server_env: env,
            phases,
            burst,
        };
        if self.json {
            cx.result(serde_json::to_string_pretty(&report.json())?);
        } else {
            cx.result(abuse::table(&report));
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
        let mut running = ServerProcess::start(cx, server, Some(server_cpu), true)?;
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
        // wrk stops itself after `secs`; a wrk that does not is stopped.
        let step = cx.change(cmd).stdout(Stdout::Kept).keep_stderr().within(
            Duration::from_secs(u64::from(secs) + 30),
            "is the server answering?",
        );
        let line = step.line();
        let Some(output) = step.run(cx)? else {
            return Ok(None);
        };
        if !measured {
            return Ok(None);
        }
        let stdout = output.stdout;
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
        generator: &Utf8Path,
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
            lines.push(plan_line(&env, &cmd));
        }
        lines.push(format!(
            "# {} rounds, the servers in turn: start pinned, read /proc/<pid>/status VmRSS, \
             warm up, measure (with /proc/<pid>/stat CPU time), read VmRSS and VmHWM, stop",
            self.rounds
        ));
        for server in servers {
            let (env, cmd) = server_cmd(sh, &server.binary, Some(server_cpu), "<port>");
            lines.push(plan_line(&env, &cmd));
            lines.push(plan_line(
                &[],
                &self.wrk_cmd(sh, wrk_cpu, WARMUP_SECS, &url, false),
            ));
            lines.push(plan_line(
                &[],
                &self.wrk_cmd(sh, wrk_cpu, self.duration, &url, true),
            ));
        }
        let rates = self
            .rates
            .0
            .iter()
            .map(|r| format!("{r}/s"))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
            "# then both servers started once, pinned; {} rounds of: each rate ({rates}), each \
             server in turn, the order swapped every round: the load generator, open loop; a run \
             disturbed (the generator woke late, or other work on the server's CPU from \
             /proc/stat) is made again, twice at most",
            self.rounds
        ));
        for server in servers {
            let (env, cmd) = server_cmd(sh, &server.binary, Some(server_cpu), "<port>");
            lines.push(plan_line(&env, &cmd));
            if self.realtime {
                lines.push("chrt --all-tasks --fifo --pid 50 <pid>".to_owned());
            }
        }
        for rate in &self.rates.0 {
            let mut words = load::prefix(wrk_cpu, self.realtime);
            words.push(generator.to_string());
            words.extend(load::args(
                &rate.to_string(),
                self.duration,
                self.connections,
                &url,
            ));
            let (program, rest) = words.split_first().expect("a prefix is never empty");
            lines.push(plan_line(&[], &sh.cmd(program).args(rest)));
        }
        lines
    }
}

/// DOCKER_HOST when it names an engine on another host (tcp:// to anything but loopback).
fn remote_engine() -> Option<String> {
    let host = std::env::var("DOCKER_HOST").ok()?;
    let rest = host.strip_prefix("tcp://")?;
    let name = rest.rsplit_once(':').map_or(rest, |(name, _)| name);
    let local = matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.");
    (!local).then_some(host)
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

/// A line of the `--dry-run` plan, `K=v ... program args`, whose `<port>`
/// placeholders stand for what is only known when it runs: the program and
/// its arguments as xshell shows them (a word is quoted only for a space),
/// so a placeholder stays as it is. The steps that run are echoed by `Step`.
fn plan_line(env: &[(&str, String)], cmd: &Cmd<'_>) -> String {
    let mut line = String::new();
    for (key, value) in env {
        line.push_str(&format!("{key}={} ", shell_quote(value)));
    }
    line.push_str(&cmd.to_string());
    line
}

/// A server process, killed when dropped: no bench leaves one running.
struct ServerProcess {
    process: Background,
    port: u16,
    line: String,
}

impl ServerProcess {
    fn start(
        cx: &Context,
        server: &Server,
        cpu: Option<usize>,
        say: bool,
    ) -> Result<ServerProcess> {
        let port = free_port()?;
        let (env, cmd) = server_cmd(&cx.sh, &server.binary, cpu, &port.to_string());
        // Echoed when `say`, or with --verbose (a probe's rule): the startup
        // timing starts a server 20 times.
        let mut step = match say {
            true => cx.change(cmd),
            false => cx.probe(cmd),
        };
        for (key, value) in &env {
            step = step.env(key, value);
        }
        let step = step.stdout(Stdout::Dropped).keep_stderr();
        let line = step.line();
        let process = step
            .spawn(cx)?
            .context("a bench server is not started under --dry-run")?;
        Ok(ServerProcess {
            process,
            port,
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
                return Ok(self.process.started().elapsed());
            }
            if let Some(status) = self.process.child().try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.process.child().stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!("`{}` exited ({status}): {}", self.line, stderr.trim());
            }
            if self.process.started().elapsed() > limit {
                bail!(
                    "`{}` did not answer 200 on {url} within {limit:?}",
                    self.line
                );
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Puts every thread of the server under SCHED_FIFO (threads it starts
    /// later inherit it), so that other work cannot take its CPU while it is runnable.
    fn realtime(&self, cx: &Context) -> Result<()> {
        let (sh, pid) = (&cx.sh, self.process.id().to_string());
        cx.change(cmd!(sh, "chrt --all-tasks --fifo --pid 50 {pid}"))
            .within(Duration::from_secs(10), "is the machine very busy?")
            .run(cx)
            .context("run the server under SCHED_FIFO (root or CAP_SYS_NICE is needed)")?;
        Ok(())
    }

    /// User plus system CPU time so far, in clock ticks (/proc/<pid>/stat).
    fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.process.id());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        stat_cpu_ticks(&stat).with_context(|| format!("utime and stime in {path}"))
    }

    /// A `kB` field of /proc/<pid>/status: VmRSS, VmHWM.
    fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.process.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        status_field_kib(&status, field).with_context(|| format!("{field} in {path}"))
    }
}

/// Busy time of CPU `cpu` so far, in clock ticks (/proc/stat).
fn cpu_busy(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    cpu_busy_ticks(&stat, cpu).with_context(|| format!("CPU {cpu}'s busy time in /proc/stat"))
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// The JSON line of xtask/bench/report.lua among wrk's output.
pub fn parse_wrk(stdout: &str) -> Result<WrkRun> {
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix(WRK_MARKER))
        .with_context(|| format!("wrk printed no `{WRK_MARKER}` line: is {WRK_SCRIPT} loaded?"))?;
    serde_json::from_str(json)
        .map_err(anyhow::Error::from)
        .and_then(|value| WrkRun::from_json(&value))
        .with_context(|| format!("parse {json}"))
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

fn ratios(api: &Figures, go: &Figures) -> Ratios {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
