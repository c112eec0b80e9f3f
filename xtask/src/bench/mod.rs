//! `cargo xtask bench`: the service under load, side by side with an
//! equivalent Go `net/http` server, and the figures the goals are judged by.

use std::ops::RangeInclusive;

use anyhow::Result;

mod abuse;
mod idle;
mod json;
mod latency;
mod load;
mod procfs;
mod report;
mod run;
mod server;
mod stats;
mod table;
mod wrk;

use crate::cli::{self, Task};
use crate::context::Context;

/// The path under load.
const LOAD_PATH: &str = "/health";
/// Startups timed per server; the median is reported.
const STARTS: usize = 20;
/// wrk's warm-up before each measured run.
const WARMUP_SECS: u32 = 1;
/// The Go comparison server: its source and where it is built.
const GO_SOURCE: &str = "xtask/bench/main.go";
const GO_BINARY: &str = "target/bench/api-go";

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
saturation, with it. Each is shown as a share of Go's saturated requests/s of the same run, \
and a rate at 75% of either server's or more is warned of. The load generator \
(xtask/bench/load.rs, built with rustc) sends each request when it is due, whatever happened \
to the ones before. A request that waits for a connection (all of them wait on the server) \
counts from the time it was due, so a stall counts against every request it holds up \
(coordinated omission corrected, as wrk2 does); one the generator sent late itself counts \
from the time it went out. It ends when the kernel received the answer (SO_TIMESTAMPING), \
not when the generator got round to reading it: the generator's own delays are not the \
server's. At each rate, one run loads both servers in turn, 100 ms each, for --duration times \
--rounds seconds each, so the machine's weather (other work, the host taking a CPU) falls on \
both alike; each server's CPU time per request in that run is shown beside its latency. \
While they run, bench holds /dev/cpu_dma_latency at 0 where it may (root), so idle CPUs \
poll rather than halt: on a virtual machine the wake-up from a halt goes through the host's \
scheduler and was most of both servers' latency. At saturation, wrk's latency is the queue \
it builds, and wrk's one CPU bounds the faster server's requests/s, so the two servers are \
compared at different loads (CPU per request there moved by 15% between three runs, where \
at the fixed rates it moved by 6% at most): the goals are judged on the latency and the CPU per \
request at the fixed rates, and requests/s is shown with what bounds it.

The server is pinned to one CPU and wrk or the generator to another (taskset), so they do \
not compete; with one CPU the service runs on its current-thread runtime. The servers take \
turns in each saturation round (after a warm-up), and the medians over the rounds are \
reported. A latency run is disturbed when other work took 5% of the servers' CPU (the user, \
nice and system time of that CPU in /proc/stat less the servers' own); it is made again, twice \
at most, the least disturbed kept, and bench says so. Other work on the machine moves the figures most: close it, or use \
--realtime, which runs the servers and the generator under SCHED_FIFO so that other work \
only runs while they sleep (both servers alike). This is a measurement, not a test: it does \
not fail when a goal is missed, but says so.

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
  [chrt --fifo 50] taskset -c <cpu1> target/bench/load --rate <r> --duration <secs x rounds>
    --warmup 1 --connections <n> --slice 100 http://127.0.0.1:<port>/health
    http://127.0.0.1:<port>/health                 (each rate: both servers in turn, 100 ms each)
and reads VmRSS and VmHWM from /proc/<pid>/status, utime and stime from /proc/<pid>/stat, \
each thread's CPU time from /proc/<pid>/task/*/schedstat, and the busy time of the server's \
CPU from /proc/stat.

CPU time per request is the fairest speed figure when wrk, which has one CPU too, \
cannot saturate the server: `server CPU busy` well under 100% says so.

With --abuse, instead: the service under abuse, each kind against a fresh server in a \
container of the static binary with rollout.yaml's memory limit (docker run --memory 128m \
--network host, listening on 127.0.0.1 only; a plain process when there is no Docker \
engine), on a CPU of its own (--cpuset-cpus, or taskset -c) while this process and its \
floods and clients take another (taskset --pid), as an attacker is not on the \
pod's node: --silent connections that send nothing, --trickle ones that send one byte, \
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
                "Seconds of measured load per round and server at saturation; at each fixed rate, each \
                 server gets DURATION x ROUNDS seconds in one run",
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
        match self.abuse {
            true => self.run_abuse(cx),
            false => self.measure(cx),
        }
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
