//! `cargo xtask bench`: the service under load, side by side with an
//! equivalent Go `net/http` server, and the figures the goals are judged by.

use std::collections::BTreeMap;
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
  API_VERSION=<v> RUSTFLAGS='-C target-feature=+crt-static' cargo build --release
    --package api --target x86_64-unknown-linux-gnu       (as `build --static`; --dynamic: `build`)
  go build -trimpath '-ldflags=-s -w -X main.version=<v>'
    -o target/bench/api-go xtask/bench/main.go
  PORT=<port> HOST=127.0.0.1 bin/api                        (20 times, each until its first 200)
  PORT=<port> HOST=127.0.0.1 taskset -c <cpu0> bin/api
  taskset -c <cpu1> wrk -t1 -c<n> -d1s http://127.0.0.1:<port>/health                  (warm-up)
  taskset -c <cpu1> wrk -t1 -c<n> -d<secs>s --latency -s xtask/bench/report.lua
    http://127.0.0.1:<port>/health
and reads VmRSS and VmHWM from /proc/<pid>/status, utime and stime from /proc/<pid>/stat.

CPU time per request is the fairest speed figure when wrk, which has one CPU too, \
cannot saturate the server: `server CPU busy` well under 100% says so.

With --abuse, instead: the service under abuse, each kind against a fresh server in a \
container of the static binary with rollout.yaml's memory limit (docker run --memory 128m \
--network host, listening on 127.0.0.1 only; a plain process when there is no Docker \
engine): --silent connections that send nothing, --slowloris ones that send a request \
head a byte a second, --pipeliners that send pipelined requests and never read, each held \
--hold seconds while a well-behaved client measures GET /health on a keep-alive connection \
(every 2 ms) and on a new connection (every 100 ms, as a kubelet probe); then a --burst of \
connections and RSS each second for --settle seconds. It reports connections opened and \
held, RSS, the container's memory cgroup (TCP buffers included), the latencies, and \
whether the server survived. The client needs an open-file limit above the connection \
counts: they are cut to fit it, and the cut is said.",
    after_long_help = "Environment:
  API_VERSION  the version to compile in, instead of git describe's
  LOG_LEVEL, WORKERS, HEADER_READ_TIMEOUT_SECS, MAX_CONNECTIONS, ...
               passed through to the servers (Go's reads only PORT and HOST), so
               `LOG_LEVEL=debug cargo xtask bench` shows what per-request logging costs

Examples:
  cargo xtask bench
  cargo xtask bench --abuse
  MAX_CONNECTIONS=4096 cargo xtask bench --abuse --silent 10000 --hold 5
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

    /// Rounds of load; the servers take turns in each; medians and the best round are reported
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

    /// Instead: the service under abuse (silent, slowloris and pipelining
    /// floods, then a burst), in a container with rollout.yaml's memory limit
    #[arg(long)]
    pub abuse: bool,

    /// --abuse: silent connections to open
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=25_000))]
    pub silent: u32,

    /// --abuse: slowloris connections (a request head a byte a second)
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(0..=25_000))]
    pub slowloris: u32,

    /// --abuse: connections that pipeline requests and never read
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(0..=25_000))]
    pub pipeliners: u32,

    /// --abuse: connections in the burst after which RSS must come back
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(0..=25_000))]
    pub burst: u32,

    /// --abuse: seconds each flood is held
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub hold: u64,

    /// --abuse: seconds RSS is followed after the burst
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub settle: u64,

    /// --abuse: run the server as a plain process even when the Docker engine is there
    #[arg(long)]
    pub no_container: bool,
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
        if self.abuse {
            return self.run_abuse(cx);
        }
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

    /// `--abuse`: each flood against a fresh server, then the burst.
    fn run_abuse(&self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO])?;
        let docker = match (self.no_container, tools::locate(tools::DOCKER.name)) {
            (true, _) => None,
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
            println!(
                "# raise this process's open-file limit: prlimit --pid {pid} --nofile=65536:65536"
            );
            if let Some(docker) = &docker {
                println!(
                    "# an image FROM scratch with {} as /api, USER 65534:65534",
                    built.binary
                );
                println!("{docker} build --tag {tag} target/bench/abuse-{pid}");
                println!(
                    "{docker} run --detach --name api-abuse-{pid}-<phase> --network host --memory {m} \
                     --memory-swap {m} --env PORT=<port> --env HOST=127.0.0.1 {tag}",
                    m = abuse::MEMORY_LIMIT
                );
            } else {
                println!("PORT=<port> HOST=127.0.0.1 {}", built.binary);
            }
            println!(
                "# phases, each on a fresh server: {} silent, {} slowloris, {} pipelining non-readers, \
                 held {} s each; then a burst of {} and RSS for {} s",
                self.silent, self.slowloris, self.pipeliners, self.hold, self.burst, self.settle
            );
            return Ok(());
        }

        let want = u64::from(
            self.silent
                .max(self.slowloris)
                .max(self.pipeliners)
                .max(self.burst),
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
                eprintln!("$ {docker} build --tag {tag} {dir}");
                abuse::docker_run(docker, &["build", "--tag", &tag, dir.as_str()])?;
                Some(image)
            }
            None => None,
        };
        let start = |phase: &str| -> Result<abuse::Target> {
            let port = free_port()?;
            match &docker {
                Some(docker) => abuse::Target::container(
                    docker,
                    &tag,
                    &format!("api-abuse-{pid}-{phase}"),
                    port,
                    &env,
                ),
                None => abuse::Target::process(&built.binary, port, &env),
            }
        };
        let hold = Duration::from_secs(self.hold);
        let mut phases = Vec::new();
        for (name, kind, n) in [
            ("silent", abuse::Kind::Silent, self.silent),
            ("slowloris", abuse::Kind::Slowloris, self.slowloris),
            ("pipeliners", abuse::Kind::Pipeliner, self.pipeliners),
        ] {
            if n == 0 {
                continue;
            }
            let mut target = start(name)?;
            let result = abuse::phase(&mut target, docker.as_deref(), kind, clamp(n), hold);
            target.stop(docker.as_deref());
            phases.push(result?);
        }
        let burst = if self.burst > 0 {
            let mut target = start("burst")?;
            // Idle means after the first requests' allocations settle.
            std::thread::sleep(Duration::from_millis(500));
            let result = abuse::burst(&target, clamp(self.burst), Duration::from_secs(self.settle));
            target.stop(docker.as_deref());
            Some(result?)
        } else {
            None
        };
        drop(image);
        let report = abuse::Report {
            plan: abuse::Plan {
                silent: self.silent as usize,
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
            cx.result(serde_json::to_string_pretty(&report)?);
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

/// `cargo xtask bench --abuse`: the service under the floods it must survive
/// in its manifest's memory limit, and the figures that say how well.
pub mod abuse {
    use std::collections::BTreeMap;
    use std::io::{ErrorKind, Read as _, Write as _};
    use std::net::{SocketAddr, TcpStream};
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, Result, bail};
    use camino::Utf8Path;
    use serde::Serialize;

    /// rollout.yaml's memory limit, as `docker run --memory` takes it.
    pub const MEMORY_LIMIT: &str = "128m";
    pub const MEMORY_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
    /// What every docker command may take.
    const DOCKER_DEADLINE: Duration = Duration::from_secs(120);
    /// A well-behaved client's deadline per request: a kubelet probe's timeoutSeconds.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// The goal for the well-behaved client's p99 during a flood.
    pub const GOAL_HEALTH_P99_US: u64 = 10_000;

    /// How many abusive clients of each kind, and how long each phase lasts.
    #[derive(Debug, Clone, Serialize)]
    pub struct Plan {
        pub silent: usize,
        pub slowloris: usize,
        pub pipeliners: usize,
        pub burst: usize,
        pub hold_secs: u64,
        pub settle_secs: u64,
        /// Run the server in a container with `--memory 128m` (else a plain process).
        pub container: bool,
    }

    #[derive(Debug, Default, Serialize)]
    pub struct Latency {
        pub requests: usize,
        pub errors: usize,
        pub p50_us: u64,
        pub p99_us: u64,
        pub max_us: u64,
    }

    #[derive(Debug, Serialize)]
    pub struct Phase {
        pub name: String,
        /// Abusive connections opened / how many the client asked for.
        pub opened: usize,
        pub asked: usize,
        /// Connections the server held (its open sockets), the most during the hold.
        pub held_by_server: Option<usize>,
        /// Of the abusive connections, those the server had closed by the end.
        pub closed_by_server: usize,
        pub rss_idle_kib: u64,
        pub rss_peak_kib: u64,
        pub rss_end_kib: u64,
        /// The container's memory cgroup: its usage (plus TCP buffers, which
        /// cgroup v1 counts apart) at the end, and its peak.
        pub cgroup_peak_bytes: Option<u64>,
        pub cgroup_tcp_bytes: Option<u64>,
        /// A keep-alive client opened before the flood, one GET /health every 2 ms.
        pub keep_alive: Latency,
        /// A new connection per GET /health every 100 ms, as a kubelet probe.
        pub new_connection: Latency,
        pub alive: bool,
        pub oom_killed: bool,
    }

    #[derive(Debug, Serialize)]
    pub struct Burst {
        pub connections: usize,
        pub rss_idle_kib: u64,
        pub rss_peak_kib: u64,
        /// RSS every second after the burst's connections closed.
        pub rss_after_kib: Vec<u64>,
        pub ratio_to_idle: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct Report {
        pub plan: Plan,
        pub where_: String,
        pub server_env: BTreeMap<String, String>,
        pub phases: Vec<Phase>,
        pub burst: Option<Burst>,
    }

    /// The server under abuse: a process, or a container of the static binary.
    pub struct Target {
        child: Option<Child>,
        container: Option<String>,
        pub pid: u32,
        pub addr: SocketAddr,
        cgroup: Option<std::path::PathBuf>,
    }

    impl Target {
        pub fn process(
            binary: &Utf8Path,
            port: u16,
            env: &BTreeMap<String, String>,
        ) -> Result<Target> {
            let mut command = Command::new(binary.as_std_path());
            command
                .envs(env)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = command.spawn().with_context(|| format!("start {binary}"))?;
            let pid = child.id();
            let target = Target {
                child: Some(child),
                container: None,
                pid,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                cgroup: None,
            };
            target.wait_ready()?;
            Ok(target)
        }

        /// `docker run --network host --memory 128m` of `image`, listening on
        /// 127.0.0.1 only, named `name`.
        pub fn container(
            docker: &Utf8Path,
            image: &str,
            name: &str,
            port: u16,
            env: &BTreeMap<String, String>,
        ) -> Result<Target> {
            let mut args: Vec<String> = vec![
                "run".into(),
                "--detach".into(),
                "--name".into(),
                name.into(),
                "--network".into(),
                "host".into(),
                "--memory".into(),
                MEMORY_LIMIT.into(),
                "--memory-swap".into(),
                MEMORY_LIMIT.into(),
                "--env".into(),
                format!("PORT={port}"),
                "--env".into(),
                "HOST=127.0.0.1".into(),
            ];
            for (key, value) in env {
                args.push("--env".into());
                args.push(format!("{key}={value}"));
            }
            args.push(image.into());
            docker_run(docker, &args)?;
            let mut target = Target {
                child: None,
                container: Some(name.to_owned()),
                pid: 0,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                cgroup: None,
            };
            let pid = docker_run(docker, &["inspect", "--format", "{{.State.Pid}}", name])
                .and_then(|pid| pid.trim().parse().context("the container's pid"));
            target.pid = match pid {
                Ok(pid) => pid,
                Err(err) => {
                    target.stop(Some(docker));
                    return Err(err);
                }
            };
            target.cgroup = memory_cgroup(target.pid);
            if let Some(dir) = &target.cgroup {
                // cgroup v1 counts TCP buffers only once they have a limit: give
                // them the same one, so that they are counted at all.
                let _ = std::fs::write(
                    dir.join("memory.kmem.tcp.limit_in_bytes"),
                    MEMORY_LIMIT_BYTES.to_string(),
                );
            }
            if let Err(err) = target.wait_ready() {
                target.stop(Some(docker));
                return Err(err);
            }
            Ok(target)
        }

        fn wait_ready(&self) -> Result<()> {
            let started = Instant::now();
            loop {
                if get_once(self.addr, PROBE_TIMEOUT).is_ok() {
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("the server on {} did not answer within 10 s", self.addr);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        pub fn rss_kib(&self) -> u64 {
            rss_kib(self.pid)
        }

        fn cgroup_read(&self, file: &str) -> Option<u64> {
            let text = std::fs::read_to_string(self.cgroup.as_ref()?.join(file)).ok()?;
            text.trim().parse().ok()
        }

        pub fn cgroup_peak(&self) -> Option<u64> {
            self.cgroup_read("memory.max_usage_in_bytes")
                .or_else(|| self.cgroup_read("memory.peak"))
        }

        pub fn cgroup_tcp(&self) -> Option<u64> {
            self.cgroup_read("memory.kmem.tcp.usage_in_bytes")
        }

        /// Still running; for a container, and whether the kernel OOM-killed it.
        pub fn alive(&mut self, docker: Option<&Utf8Path>) -> (bool, bool) {
            if let Some(child) = &mut self.child {
                return (matches!(child.try_wait(), Ok(None)), false);
            }
            let (Some(name), Some(docker)) = (&self.container, docker) else {
                return (false, false);
            };
            match docker_run(
                docker,
                &[
                    "inspect",
                    "--format",
                    "{{.State.Running}} {{.State.OOMKilled}}",
                    name,
                ],
            ) {
                Ok(out) => {
                    let mut words = out.split_whitespace();
                    (words.next() == Some("true"), words.next() == Some("true"))
                }
                Err(_) => (false, false),
            }
        }

        pub fn stop(&mut self, docker: Option<&Utf8Path>) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let (Some(name), Some(docker)) = (self.container.take(), docker) {
                let _ = docker_run(docker, &["rm", "--force", &name]);
            }
        }
    }

    fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| super::status_field_kib(&s, "VmRSS").ok())
            .unwrap_or(0)
    }

    /// Open sockets of `pid`: its open file descriptors that are sockets.
    fn sockets(pid: u32) -> Option<usize> {
        let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        Some(
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count(),
        )
    }

    /// Samples a server's sockets and RSS every 250 ms until stopped: the most of each.
    struct Sampler {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<(Option<usize>, u64)>,
    }

    impl Sampler {
        fn start(pid: u32) -> Sampler {
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                let (mut held, mut rss) = (None::<usize>, 0);
                while !stopped.load(Ordering::Relaxed) {
                    if let Some(n) = sockets(pid) {
                        // Less the listener and the well-behaved client's connection.
                        held = Some(held.unwrap_or(0).max(n.saturating_sub(2)));
                    }
                    rss = rss.max(rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(250));
                }
                (held, rss)
            });
            Sampler { stop, thread }
        }

        fn finish(self) -> (Option<usize>, u64) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap_or((None, 0))
        }
    }

    /// The memory cgroup directory of `pid`, v1 or v2.
    fn memory_cgroup(pid: u32) -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                return Some(format!("/sys/fs/cgroup/memory{path}").into());
            }
            if controllers.is_empty() {
                let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup{path}"));
                if dir.join("memory.current").exists() {
                    return Some(dir);
                }
            }
        }
        None
    }

    /// Runs `docker args...` within [`DOCKER_DEADLINE`]; its stdout.
    pub fn docker_run(docker: &Utf8Path, args: &[impl AsRef<str>]) -> Result<String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let line = format!("{docker} {}", args.join(" "));
        let child = Command::new(docker.as_std_path())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {line}"))?;
        let output = wait_within(child, DOCKER_DEADLINE).with_context(|| format!("run {line}"))?;
        if !output.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits for `child` at most `limit`, then kills it; its output either way.
    pub fn wait_within(mut child: Child, limit: Duration) -> Result<Output> {
        let mut pipes = (child.stdout.take(), child.stderr.take());
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = read(pipes.0.take().map(|p| Box::new(p) as _));
        let err = read(pipes.1.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("still running after {limit:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }

    /// Raises this process's open-file limit to `want` with util-linux's
    /// `prlimit` (root, or a hard limit that allows it); the limit in force after.
    pub fn raise_nofile(want: u64) -> u64 {
        let pid = std::process::id().to_string();
        let nofile = format!("--nofile={want}:{want}");
        if let Ok(child) = Command::new("prlimit")
            .args(["--pid", &pid, &nofile])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let _ = wait_within(child, Duration::from_secs(5));
        }
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                let line = l
                    .lines()
                    .find(|l| l.starts_with("Max open files"))?
                    .to_owned();
                line["Max open files".len()..]
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(1024)
    }

    /// One GET /health on a new connection, `Connection: close`.
    fn get_once(addr: SocketAddr, timeout: Duration) -> Result<()> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        read_answer(&mut stream)
    }

    /// Reads one answer to a GET (Content-Length framed); an error unless 200.
    fn read_answer(stream: &mut TcpStream) -> Result<()> {
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                bail!("closed before a whole answer");
            }
            head.push(byte[0]);
            if head.len() > 8192 {
                bail!("answer head too long");
            }
        }
        let head = String::from_utf8_lossy(&head);
        if !head.starts_with("HTTP/1.1 200 ") {
            bail!("not a 200: {}", head.lines().next().unwrap_or_default());
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        Ok(())
    }

    /// A well-behaved client measuring while the abuse goes on.
    struct Prober {
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<Latency>>,
    }

    impl Prober {
        /// Opens the keep-alive connection now (before any flood), then measures
        /// on it and on a new connection each 100 ms until stopped.
        fn start(addr: SocketAddr) -> Result<Prober> {
            let stop = Arc::new(AtomicBool::new(false));
            let kept = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
                .context("the well-behaved client's connection")?;
            kept.set_read_timeout(Some(PROBE_TIMEOUT))?;
            kept.set_write_timeout(Some(PROBE_TIMEOUT))?;
            let _ = kept.set_nodelay(true);
            let keep_alive = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut times = Vec::new();
                    let mut errors = 0;
                    let mut stream = Some(kept);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = match &mut stream {
                            Some(s) => s
                                .write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
                                .map_err(anyhow::Error::from)
                                .and_then(|()| read_answer(s)),
                            None => TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
                                .map_err(anyhow::Error::from)
                                .map(|s| {
                                    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
                                    let _ = s.set_nodelay(true);
                                    stream = Some(s);
                                }),
                        };
                        match result {
                            Ok(()) if stream.is_some() => times.push(started.elapsed()),
                            Ok(()) => {}
                            Err(_) => {
                                errors += 1;
                                stream = None;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    latency(times, errors)
                })
            };
            let fresh = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut times = Vec::new();
                    let mut errors = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        match get_once(addr, PROBE_TIMEOUT) {
                            Ok(()) => times.push(started.elapsed()),
                            Err(_) => errors += 1,
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    latency(times, errors)
                })
            };
            Ok(Prober {
                stop,
                threads: vec![keep_alive, fresh],
            })
        }

        fn finish(self) -> (Latency, Latency) {
            self.stop.store(true, Ordering::Relaxed);
            let mut results = self
                .threads
                .into_iter()
                .map(|t| t.join().unwrap_or_default());
            let keep_alive = results.next().unwrap_or_default();
            let fresh = results.next().unwrap_or_default();
            (keep_alive, fresh)
        }
    }

    fn latency(mut times: Vec<Duration>, errors: usize) -> Latency {
        times.sort();
        let at = |q: f64| -> u64 {
            if times.is_empty() {
                return 0;
            }
            let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
            times[i].as_micros() as u64
        };
        Latency {
            requests: times.len(),
            errors,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: times.last().map_or(0, |t| t.as_micros() as u64),
        }
    }

    /// Opens up to `n` connections, stopping early when the server stops
    /// taking them (20 connects in a row time out) or after `limit`.
    fn open_many(addr: SocketAddr, n: usize, limit: Duration) -> Vec<TcpStream> {
        let started = Instant::now();
        let mut streams = Vec::with_capacity(n);
        let mut failed_in_a_row = 0;
        while streams.len() < n && failed_in_a_row < 20 && started.elapsed() < limit {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(stream) => {
                    failed_in_a_row = 0;
                    streams.push(stream);
                }
                Err(_) => failed_in_a_row += 1,
            }
        }
        streams
    }

    /// Whether the server has closed `stream` (EOF or reset), without blocking.
    fn closed_by_server(stream: &TcpStream) -> bool {
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 4096];
        let mut s = stream;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// The abuse of one phase: what it does to the connections it opened.
    pub enum Kind {
        /// Connect and send nothing.
        Silent,
        /// Send a request head one byte a second, never finishing it.
        Slowloris,
        /// Send pipelined requests as fast as the socket takes them; never read.
        Pipeliner,
    }

    const PIPELINED: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";
    const SLOW_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Slow: ";

    /// One phase against a running target.
    pub fn phase(
        target: &mut Target,
        docker: Option<&Utf8Path>,
        kind: Kind,
        n: usize,
        hold: Duration,
    ) -> Result<Phase> {
        let name = match kind {
            Kind::Silent => "silent",
            Kind::Slowloris => "slowloris",
            Kind::Pipeliner => "pipelining non-readers",
        };
        eprintln!(
            "# {name}: {n} connections, held {} s, a well-behaved client measuring",
            hold.as_secs()
        );
        let rss_idle_kib = target.rss_kib();
        let prober = Prober::start(target.addr)?;
        let sampler = Sampler::start(target.pid);
        // Let the well-behaved client take a few calm measurements first.
        std::thread::sleep(Duration::from_millis(200));
        let mut streams = open_many(target.addr, n, Duration::from_secs(30));
        let opened = streams.len();
        let chunk: Vec<u8> = PIPELINED.repeat(16_384 / PIPELINED.len());
        let mut sent = vec![0usize; streams.len()];
        let started = Instant::now();
        while started.elapsed() < hold {
            for (stream, sent) in streams.iter_mut().zip(&mut sent) {
                match kind {
                    Kind::Silent => {}
                    Kind::Slowloris => {
                        let byte = SLOW_HEAD.get(*sent).copied().unwrap_or(b'a');
                        if stream.write(&[byte]).is_ok() {
                            *sent += 1;
                        }
                    }
                    Kind::Pipeliner => {
                        let _ = stream.set_nonblocking(true);
                        // Bounded: at most 1 MiB per connection in all.
                        while *sent < 1 << 20 {
                            match stream.write(&chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => *sent += k,
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let rss_end_kib = target.rss_kib();
        let (held_by_server, rss_peak_kib) = sampler.finish();
        let rss_peak_kib = rss_peak_kib.max(rss_end_kib);
        let cgroup_tcp_bytes = target.cgroup_tcp();
        let cgroup_peak_bytes = target.cgroup_peak();
        let (keep_alive, new_connection) = prober.finish();
        let closed = streams.iter().filter(|s| closed_by_server(s)).count();
        drop(streams);
        let (alive, oom_killed) = target.alive(docker);
        Ok(Phase {
            name: name.to_owned(),
            opened,
            asked: n,
            held_by_server,
            closed_by_server: closed,
            rss_idle_kib,
            rss_peak_kib,
            rss_end_kib,
            cgroup_peak_bytes,
            cgroup_tcp_bytes,
            keep_alive,
            new_connection,
            alive,
            oom_killed,
        })
    }

    /// `n` connections, each answered once and held until all are, then all
    /// closed; RSS each second for `settle` after.
    pub fn burst(target: &Target, n: usize, settle: Duration) -> Result<Burst> {
        eprintln!(
            "# burst: {n} connections at once, one GET /health each, each closed once answered, \
             then RSS each second for {} s",
            settle.as_secs()
        );
        let rss_idle_kib = target.rss_kib();
        let mut streams = open_many(target.addr, n, Duration::from_secs(30));
        for stream in &mut streams {
            let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
            let _ = stream.write_all(PIPELINED);
        }
        let mut answered = 0;
        let sampler = Sampler::start(target.pid);
        // Each closed once answered: past the active limit, the rest wait for those.
        for mut stream in streams {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if read_answer(&mut stream).is_ok() {
                answered += 1;
            }
        }
        let (_, rss_peak_kib) = sampler.finish();
        let mut rss_after_kib = Vec::new();
        for _ in 0..settle.as_secs() {
            std::thread::sleep(Duration::from_secs(1));
            rss_after_kib.push(target.rss_kib());
        }
        let last = rss_after_kib.last().copied().unwrap_or(rss_peak_kib);
        Ok(Burst {
            connections: answered,
            rss_idle_kib,
            rss_peak_kib,
            ratio_to_idle: last as f64 / rss_idle_kib.max(1) as f64,
            rss_after_kib,
        })
    }

    /// The report for a person.
    pub fn table(report: &Report) -> String {
        let mut out = format!(
            "bench --abuse: the server {}, /health p99 goal {} ms\n",
            report.where_,
            GOAL_HEALTH_P99_US / 1000
        );
        out.push_str(&format!(
            "{:<24} {:>13} {:>8} {:>8} {:>9} {:>9} {:>9} {:>17} {:>17} {:>6}\n",
            "phase",
            "opened/asked",
            "held",
            "closed",
            "RSS idle",
            "RSS peak",
            "cgroup",
            "keep-alive p99",
            "new conn p99",
            "alive"
        ));
        let mib = |kib: u64| format!("{:.1}M", kib as f64 / 1024.0);
        for p in &report.phases {
            let cgroup = p
                .cgroup_peak_bytes
                .map(|b| {
                    format!(
                        "{:.1}M",
                        (b + p.cgroup_tcp_bytes.unwrap_or(0)) as f64 / 1048576.0
                    )
                })
                .unwrap_or_else(|| "-".into());
            let ms = |l: &Latency| format!("{:.2} ms ({} err)", l.p99_us as f64 / 1000.0, l.errors);
            out.push_str(&format!(
                "{:<24} {:>13} {:>8} {:>8} {:>9} {:>9} {:>9} {:>17} {:>17} {:>6}\n",
                p.name,
                format!("{}/{}", p.opened, p.asked),
                p.held_by_server.map_or("-".into(), |h| h.to_string()),
                p.closed_by_server,
                mib(p.rss_idle_kib),
                mib(p.rss_peak_kib),
                cgroup,
                ms(&p.keep_alive),
                ms(&p.new_connection),
                if p.oom_killed {
                    "OOM"
                } else if p.alive {
                    "yes"
                } else {
                    "NO"
                },
            ));
        }
        if let Some(b) = &report.burst {
            let after: Vec<String> = b.rss_after_kib.iter().step_by(5).map(|k| mib(*k)).collect();
            out.push_str(&format!(
                "burst of {} connections: RSS idle {}, peak {}, after (every 5 s) {}; last/idle {:.2}x (goal <= 2x)\n",
                b.connections,
                mib(b.rss_idle_kib),
                mib(b.rss_peak_kib),
                after.join(" "),
                b.ratio_to_idle
            ));
        }
        out
    }
}
