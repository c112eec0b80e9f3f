//! `cargo xtask bench --abuse`: the service under the floods it must survive
//! in its manifest's memory limit, and the figures that say how well.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::Utf8Path;
use serde_json::{Value, json};

use crate::process::{self, Background, Io, Stderr, Stdout};

mod threads;
use threads::{Snapshot, Usage};

/// rollout.yaml's memory limit, as `docker run --memory` takes it.
pub const MEMORY_LIMIT: &str = "128m";
pub const MEMORY_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
/// What every docker command may take.
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(120);
/// A well-behaved client's deadline per request: a kubelet probe's
/// timeoutSeconds, 1 s by default.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The goal for the probes: none fails.
pub const GOAL_PROBE_FAILURES: usize = 0;
/// The goal for the well-behaved client's p99 during a flood.
pub const GOAL_HEALTH_P99_US: u64 = 10_000;

/// How many abusive clients of each kind, and how long each phase lasts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub silent: usize,
    pub trickle: usize,
    pub slowloris: usize,
    pub pipeliners: usize,
    pub burst: usize,
    pub hold_secs: u64,
    pub settle_secs: u64,
    /// Run the server in a container with `--memory 128m` (else a plain process).
    pub container: bool,
}

#[derive(Debug, Default)]
pub struct Latency {
    pub requests: usize,
    pub errors: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Of the slowest 1% (at least one), the mean time the measuring thread
    /// and the server thread that answered were runnable without a CPU:
    /// what of the tail is the scheduler's. Probe port only.
    pub slowest_waits_us: Option<(u64, u64)>,
}

#[derive(Debug)]
pub struct Phase {
    pub name: String,
    /// Abusive connections opened in all (reopened ones included) and how
    /// many the client keeps open.
    pub opened: usize,
    pub asked: usize,
    /// Connections the server held (its open sockets), the most during the hold.
    pub held_by_server: Option<usize>,
    /// Abusive connections the server closed (each then opened again).
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
    /// A new connection per GET /health every 100 ms on the service port.
    pub new_connection: Latency,
    /// The same on the probe port (`PROBE_PORT`), as the kubelet's probes.
    pub probe: Latency,
    pub alive: bool,
    pub oom_killed: bool,
    /// The machine's 1-minute load average as the phase began and ended:
    /// latencies on a busy machine are the machine's.
    pub load: (Option<f64>, Option<f64>),
    /// Where the server's CPU went (per thread), and its cgroup's throttling.
    pub server_cpu: Usage,
    /// The same for this process: the floods and the measuring clients.
    pub client_cpu: Usage,
}

#[derive(Debug)]
pub struct Burst {
    pub connections: usize,
    pub rss_idle_kib: u64,
    pub rss_peak_kib: u64,
    /// RSS every second after the burst's connections closed.
    pub rss_after_kib: Vec<u64>,
    pub ratio_to_idle: f64,
}

#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub where_: String,
    pub server_env: BTreeMap<String, String>,
    pub phases: Vec<Phase>,
    pub burst: Option<Burst>,
}

// `--json` is built by hand rather than with serde's derive, which is the
// longest step of a cold `cargo xtask` build.

impl Latency {
    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "slowest_client_wait_us": self.slowest_waits_us.map(|w| w.0),
            "slowest_server_wait_us": self.slowest_waits_us.map(|w| w.1),
        })
    }
}

impl Phase {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "opened": self.opened,
            "asked": self.asked,
            "held_by_server": self.held_by_server,
            "closed_by_server": self.closed_by_server,
            "rss_idle_kib": self.rss_idle_kib,
            "rss_peak_kib": self.rss_peak_kib,
            "rss_end_kib": self.rss_end_kib,
            "cgroup_peak_bytes": self.cgroup_peak_bytes,
            "cgroup_tcp_bytes": self.cgroup_tcp_bytes,
            "keep_alive": self.keep_alive.json(),
            "new_connection": self.new_connection.json(),
            "probe": self.probe.json(),
            "alive": self.alive,
            "oom_killed": self.oom_killed,
            "load_average_1m": [self.load.0, self.load.1],
            "server_cpu": self.server_cpu.json(),
            "client_cpu": self.client_cpu.json(),
        })
    }
}

impl Report {
    pub fn json(&self) -> Value {
        let plan = &self.plan;
        json!({
            "plan": {
                "silent": plan.silent,
                "trickle": plan.trickle,
                "slowloris": plan.slowloris,
                "pipeliners": plan.pipeliners,
                "burst": plan.burst,
                "hold_secs": plan.hold_secs,
                "settle_secs": plan.settle_secs,
                "container": plan.container,
            },
            "where_": self.where_,
            "server_env": self.server_env,
            "phases": self.phases.iter().map(Phase::json).collect::<Vec<_>>(),
            "burst": self.burst.as_ref().map(|burst| json!({
                "connections": burst.connections,
                "rss_idle_kib": burst.rss_idle_kib,
                "rss_peak_kib": burst.rss_peak_kib,
                "rss_after_kib": burst.rss_after_kib,
                "ratio_to_idle": burst.ratio_to_idle,
            })),
        })
    }
}

/// The server under abuse: a process, or a container of the static binary.
pub struct Subject {
    process: Option<Background>,
    container: Option<String>,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The probe port, which the server is told with `PROBE_PORT`.
    pub probe: SocketAddr,
    cgroup: Option<std::path::PathBuf>,
    /// Its CPU cgroup (a container's), for quota throttling.
    cpu_cgroup: Option<std::path::PathBuf>,
}

/// A port free on 127.0.0.1 now.
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

impl Subject {
    pub fn process(
        binary: &Utf8Path,
        port: u16,
        env: &BTreeMap<String, String>,
    ) -> Result<Subject> {
        let probe_port = free_port()?;
        let mut command = Command::new(binary.as_std_path());
        command
            .envs(env)
            .env("PORT", port.to_string())
            .env("PROBE_PORT", probe_port.to_string())
            .env("HOST", "127.0.0.1");
        let io = Io {
            stdout: Stdout::Dropped,
            stderr: Stderr::Dropped,
            stdin: None,
            limit: None,
        };
        let process = process::spawn(command, &io).with_context(|| format!("start {binary}"))?;
        let pid = process.id();
        let subject = Subject {
            process: Some(process),
            container: None,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            probe: SocketAddr::from(([127, 0, 0, 1], probe_port)),
            cgroup: None,
            cpu_cgroup: None,
        };
        subject.wait_ready()?;
        Ok(subject)
    }

    /// `docker run --network host --memory 128m` of `image`, listening on
    /// 127.0.0.1 only, named `name`.
    pub fn container(
        docker: &Utf8Path,
        image: &str,
        name: &str,
        port: u16,
        env: &BTreeMap<String, String>,
    ) -> Result<Subject> {
        let probe_port = free_port()?;
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
            format!("PROBE_PORT={probe_port}"),
            "--env".into(),
            "HOST=127.0.0.1".into(),
        ];
        for (key, value) in env {
            args.push("--env".into());
            args.push(format!("{key}={value}"));
        }
        args.push(image.into());
        docker_run(docker, &args)?;
        let mut subject = Subject {
            process: None,
            container: Some(name.to_owned()),
            pid: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            probe: SocketAddr::from(([127, 0, 0, 1], probe_port)),
            cgroup: None,
            cpu_cgroup: None,
        };
        let pid = docker_run(docker, &["inspect", "--format", "{{.State.Pid}}", name])
            .and_then(|pid| pid.trim().parse().context("the container's pid"));
        subject.pid = match pid {
            Ok(pid) => pid,
            Err(err) => {
                subject.stop(Some(docker));
                return Err(err);
            }
        };
        subject.cgroup = memory_cgroup(subject.pid);
        subject.cpu_cgroup = threads::cpu_cgroup(subject.pid);
        if let Some(dir) = &subject.cgroup {
            // cgroup v1 counts TCP buffers only once they have a limit: give
            // them the same one, so that they are counted at all.
            let _ = std::fs::write(
                dir.join("memory.kmem.tcp.limit_in_bytes"),
                MEMORY_LIMIT_BYTES.to_string(),
            );
        }
        if let Err(err) = subject.wait_ready() {
            subject.stop(Some(docker));
            return Err(err);
        }
        Ok(subject)
    }

    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            if get_once(self.addr, PROBE_TIMEOUT).is_ok()
                && get_once(self.probe, PROBE_TIMEOUT).is_ok()
            {
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
        if let Some(process) = &mut self.process {
            return (matches!(process.child().try_wait(), Ok(None)), false);
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
        // Killed and reaped as it is dropped.
        self.process = None;
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
        let thread = spawn_named("sampler", move || {
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

/// Runs `docker args...` within [`DOCKER_DEADLINE`], unechoed; its stdout.
pub fn docker_run(docker: &Utf8Path, args: &[impl AsRef<str>]) -> Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let line = format!("{docker} {}", args.join(" "));
    let mut command = Command::new(docker.as_std_path());
    command.args(&args);
    let io = Io {
        stdout: Stdout::Kept,
        stderr: Stderr::Kept,
        stdin: None,
        limit: Some(DOCKER_DEADLINE),
    };
    match process::run(command, &io).with_context(|| format!("run {line}"))? {
        Ok(done) if done.status.success() => Ok(done.stdout),
        Ok(done) => bail!("`{line}` failed ({}): {}", done.status, done.stderr.trim()),
        Err(_) => bail!("run {line}: still running after {DOCKER_DEADLINE:?}: killed"),
    }
}

/// Raises this process's open-file limit to `want` with util-linux's
/// `prlimit` (root, or a hard limit that allows it); the limit in force after.
pub fn raise_nofile(want: u64) -> u64 {
    let pid = std::process::id().to_string();
    let nofile = format!("--nofile={want}:{want}");
    let mut prlimit = Command::new("prlimit");
    prlimit.args(["--pid", &pid, &nofile]);
    let io = Io {
        stdout: Stdout::Dropped,
        stderr: Stderr::Dropped,
        stdin: None,
        limit: Some(Duration::from_secs(5)),
    };
    // What counts is the limit read back below, whatever prlimit said.
    let _ = process::run(prlimit, &io);
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
    /// on it, and on a new connection each 100 ms to the service port and to
    /// the probe port, until stopped.
    fn start(addr: SocketAddr, probe: SocketAddr, server_pid: u32) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let kept = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
            .context("the well-behaved client's connection")?;
        kept.set_read_timeout(Some(PROBE_TIMEOUT))?;
        kept.set_write_timeout(Some(PROBE_TIMEOUT))?;
        let _ = kept.set_nodelay(true);
        let keep_alive = {
            let stop = Arc::clone(&stop);
            spawn_named("keep-alive", move || {
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
        let new_connections = |name: &str, addr: SocketAddr, server: Option<PathBuf>| {
            let stop = Arc::clone(&stop);
            spawn_named(name, move || {
                let mut times = Vec::new();
                let mut waits = Vec::new();
                let mut errors = 0;
                let ours = PathBuf::from("/proc/thread-self/schedstat");
                let wait = |path: &Option<PathBuf>| path.as_deref().and_then(threads::wait_ns);
                let sample = || (wait(&Some(ours.clone())), wait(&server));
                while !stop.load(Ordering::Relaxed) {
                    let before = sample();
                    let started = Instant::now();
                    match get_once(addr, PROBE_TIMEOUT) {
                        Ok(()) => {
                            let elapsed = started.elapsed();
                            let after = sample();
                            let delta = |a: Option<u64>, b: Option<u64>| Some(b? - a?);
                            times.push(elapsed);
                            waits.push((
                                elapsed,
                                delta(before.0, after.0),
                                delta(before.1, after.1),
                            ));
                        }
                        Err(_) => errors += 1,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut latency = latency(times, errors);
                latency.slowest_waits_us = server.is_some().then(|| slowest_waits(waits)).flatten();
                latency
            })
        };
        let fresh = new_connections("service-client", addr, None);
        let probes = new_connections("probe-client", probe, threads::named(server_pid, "probe"));
        Ok(Prober {
            stop,
            threads: vec![keep_alive, fresh, probes],
        })
    }

    /// The keep-alive client's, the service port's and the probe port's latencies.
    fn finish(self) -> (Latency, Latency, Latency) {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default());
        let keep_alive = results.next().unwrap_or_default();
        let fresh = results.next().unwrap_or_default();
        let probes = results.next().unwrap_or_default();
        (keep_alive, fresh, probes)
    }
}

/// A thread named `name` (its /proc comm, read by [`Snapshot`]).
fn spawn_named<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .expect("spawn a bench thread")
}

/// One probe: how long it took, and how long (ns) the measuring thread and
/// the server's probe thread were runnable without a CPU meanwhile.
type ProbeSample = (Duration, Option<u64>, Option<u64>);

/// The mean waits (client, server) of the slowest 1% of `samples`, at least one.
fn slowest_waits(mut samples: Vec<ProbeSample>) -> Option<(u64, u64)> {
    samples.sort_by_key(|s| std::cmp::Reverse(s.0));
    let slowest = &samples[..samples.len().div_ceil(100)];
    let mean = |pick: fn(&ProbeSample) -> Option<u64>| {
        let sum: Option<u64> = slowest.iter().map(pick).sum();
        Some(sum? / slowest.len().max(1) as u64 / 1000)
    };
    Some((mean(|s| s.1)?, mean(|s| s.2)?))
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
        slowest_waits_us: None,
    }
}

/// Opens up to `n` connections, stopping early when the server stops
/// taking them (20 connects in a row time out) or after `limit`.
fn open_many(addr: SocketAddr, n: usize, limit: Duration) -> Vec<TcpStream> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    let mut failed_in_a_row = 0;
    while streams.len() < n && failed_in_a_row < 20 && started.elapsed() < limit {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
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

/// A flood: what its clients do to the connections they open. Each client
/// opens its connection again when the server closes it, as flooding tools do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Connect and send nothing.
    Silent,
    /// Send one byte, then nothing.
    Trickle,
    /// Send a request head a byte every half second, never finishing it.
    Slowloris,
    /// Send pipelined requests as fast as the socket takes them; never read.
    Pipeliner,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Silent => "silent",
            Kind::Trickle => "one-byte trickle",
            Kind::Slowloris => "slowloris",
            Kind::Pipeliner => "pipelining non-readers",
        }
    }
}

/// How many clients of each kind; the phases are each kind alone, then all
/// of them at once (the mix).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub silent: usize,
    pub trickle: usize,
    pub slowloris: usize,
    pub pipeliners: usize,
}

/// The phases of a run: a name, and the floods it holds at once. The mix
/// fits `room` connections by holding fewer silent ones (its phase line
/// says how many).
pub fn phases(counts: Counts, room: usize) -> Vec<(&'static str, Vec<(Kind, usize)>)> {
    let all: Vec<(Kind, usize)> = [
        (Kind::Silent, counts.silent),
        (Kind::Trickle, counts.trickle),
        (Kind::Slowloris, counts.slowloris),
        (Kind::Pipeliner, counts.pipeliners),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    let mut phases: Vec<_> = all
        .iter()
        .map(|&(kind, n)| (kind.name(), vec![(kind, n)]))
        .collect();
    if all.len() > 1 {
        let others: usize = all
            .iter()
            .filter(|(kind, _)| *kind != Kind::Silent)
            .map(|(_, n)| n)
            .sum();
        let mix = all
            .into_iter()
            .map(|(kind, n)| match kind {
                Kind::Silent => (kind, n.min(room.saturating_sub(others))),
                _ => (kind, n),
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        phases.push(("mix", mix));
    }
    phases
}

const PIPELINED: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";
const SLOW_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Slow: ";
/// A connect on this host takes microseconds; one that takes this long was
/// dropped by a full listen queue.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// The clients of one kind, each a connection or a place to open one again.
struct Flood {
    kind: Kind,
    streams: Vec<Option<TcpStream>>,
    sent: Vec<usize>,
    /// Connections opened in all, and those the server closed.
    opened: usize,
    closed: usize,
}

impl Flood {
    fn open(addr: SocketAddr, kind: Kind, n: usize) -> Flood {
        let mut streams: Vec<Option<TcpStream>> = open_many(addr, n, Duration::from_secs(30))
            .into_iter()
            .map(Some)
            .collect();
        let opened = streams.len();
        streams.resize_with(n, || None);
        Flood {
            kind,
            sent: vec![0; n],
            streams,
            opened,
            closed: 0,
        }
    }

    /// One round: every client acts once; closed ones are opened again
    /// while connects succeed (three in a row that do not end the round).
    fn round(&mut self, addr: SocketAddr, chunk: &[u8]) {
        let mut failed_connects = 0;
        for (slot, sent) in self.streams.iter_mut().zip(&mut self.sent) {
            let Some(stream) = slot else {
                if failed_connects >= 3 {
                    continue;
                }
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        *slot = Some(stream);
                        *sent = 0;
                        self.opened += 1;
                    }
                    Err(_) => failed_connects += 1,
                }
                continue;
            };
            let open = match self.kind {
                // The server sends these nothing before it closes them.
                Kind::Silent => !closed_by_server(stream),
                Kind::Trickle => {
                    if *sent == 0 && stream.write(b"G").is_ok() {
                        *sent = 1;
                    }
                    !closed_by_server(stream)
                }
                Kind::Slowloris => {
                    let byte = SLOW_HEAD.get(*sent).copied().unwrap_or(b'a');
                    if stream.write(&[byte]).is_ok() {
                        *sent += 1;
                    }
                    !closed_by_server(stream)
                }
                // Never read: the server's close shows as a failed write.
                Kind::Pipeliner => {
                    let _ = stream.set_nonblocking(true);
                    let mut open = true;
                    // Bounded: at most 1 MiB per connection.
                    while *sent < 1 << 20 {
                        match stream.write(chunk) {
                            Ok(0) => break,
                            Ok(k) => *sent += k,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    open
                }
            };
            if !open {
                *slot = None;
                self.closed += 1;
            }
        }
    }
}

/// One phase against a running subject: `floods` at once, held `hold`.
pub fn phase(
    subject: &mut Subject,
    docker: Option<&Utf8Path>,
    name: &str,
    floods: &[(Kind, usize)],
    hold: Duration,
) -> Result<Phase> {
    let what: Vec<String> = floods
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    eprintln!(
        "# {name}: {}, held {} s, reopened when closed; a keep-alive client and new-connection \
         probes measuring",
        what.join(", "),
        hold.as_secs()
    );
    let load_before = load_average();
    let rss_idle_kib = subject.rss_kib();
    let server_before = Snapshot::take(subject.pid, subject.cpu_cgroup.as_deref());
    let client_before = Snapshot::take(std::process::id(), None);
    let prober = Prober::start(subject.addr, subject.probe, subject.pid)?;
    let sampler = Sampler::start(subject.pid);
    // Let the well-behaved client take a few calm measurements first.
    std::thread::sleep(Duration::from_millis(200));
    let floods = flood(subject.addr, floods.to_vec(), hold)
        .join()
        .unwrap_or_default();
    let rss_end_kib = subject.rss_kib();
    let server_cpu =
        server_before.until(&Snapshot::take(subject.pid, subject.cpu_cgroup.as_deref()));
    let client_cpu = client_before.until(&Snapshot::take(std::process::id(), None));
    let (held_by_server, rss_peak_kib) = sampler.finish();
    let rss_peak_kib = rss_peak_kib.max(rss_end_kib);
    let cgroup_tcp_bytes = subject.cgroup_tcp();
    let cgroup_peak_bytes = subject.cgroup_peak();
    let (keep_alive, new_connection, probe) = prober.finish();
    let opened = floods.iter().map(|f| f.opened).sum();
    let closed = floods.iter().map(|f| f.closed).sum();
    let asked = floods.iter().map(|f| f.streams.len()).sum();
    drop(floods);
    let (alive, oom_killed) = subject.alive(docker);
    Ok(Phase {
        name: name.to_owned(),
        opened,
        asked,
        held_by_server,
        closed_by_server: closed,
        rss_idle_kib,
        rss_peak_kib,
        rss_end_kib,
        cgroup_peak_bytes,
        cgroup_tcp_bytes,
        keep_alive,
        new_connection,
        probe,
        alive,
        oom_killed,
        load: (load_before, load_average()),
        server_cpu,
        client_cpu,
    })
}

/// Opens the floods and keeps them up for `hold`, on a thread of its own
/// ("flood"), so that its CPU is told apart from the measuring clients'.
fn flood(addr: SocketAddr, floods: Vec<(Kind, usize)>, hold: Duration) -> JoinHandle<Vec<Flood>> {
    spawn_named("flood", move || {
        let mut floods: Vec<Flood> = floods
            .iter()
            .map(|&(kind, n)| Flood::open(addr, kind, n))
            .collect();
        let chunk: Vec<u8> = PIPELINED.repeat(16_384 / PIPELINED.len());
        let started = Instant::now();
        while started.elapsed() < hold {
            let round = Instant::now();
            for flood in &mut floods {
                flood.round(addr, &chunk);
            }
            std::thread::sleep(Duration::from_millis(500).saturating_sub(round.elapsed()));
        }
        floods
    })
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// `n` connections, each answered once and held until all are, then all
/// closed; RSS each second for `settle` after.
pub fn burst(subject: &Subject, n: usize, settle: Duration) -> Result<Burst> {
    eprintln!(
        "# burst: {n} connections at once, one GET /health each, each closed once answered, \
         then RSS each second for {} s",
        settle.as_secs()
    );
    let rss_idle_kib = subject.rss_kib();
    let mut streams = open_many(subject.addr, n, Duration::from_secs(30));
    for stream in &mut streams {
        let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
        let _ = stream.write_all(PIPELINED);
    }
    let mut answered = 0;
    let sampler = Sampler::start(subject.pid);
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
        rss_after_kib.push(subject.rss_kib());
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

/// The second table: each latency whole, and where the CPU went (the
/// server's threads and this process's: the floods and the measuring clients).
fn cpu_table(phases: &[Phase]) -> String {
    let mut out = String::from(
        "latency p50/p99/max in ms and failures; CPU as a share of one CPU; wait: the mean time \
         a thread was runnable before it got a CPU, per timeslice (schedstat); throttled: CFS \
         quota periods throttled / all; slowest 1% waits: of the slowest probes, the \
         mean time the probe client + the server's probe thread waited for a CPU\n",
    );
    out.push_str(&format!(
        "{:<24} {:>26} {:>26} {:>10} {:>16} {:>16} {:>11} {:>10} {:>16} {:>18}\n",
        "phase",
        "keep-alive",
        "probe",
        "server CPU",
        "probe thread",
        "other threads",
        "throttled",
        "bench CPU",
        "probe client",
        "slowest 1% waits"
    ));
    let ms = |us: u64| us as f64 / 1000.0;
    let lat = |l: &Latency| {
        format!(
            "{:.1}/{:.1}/{:.1} {}/{}",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.errors,
            l.errors + l.requests
        )
    };
    let share = |s: Option<threads::Share>| {
        s.map_or("-".into(), |s| {
            format!("{:.0}% {:.2}ms", s.cpu * 100.0, ms(s.wait_per_slice_us))
        })
    };
    for p in phases {
        out.push_str(&format!(
            "{:<24} {:>26} {:>26} {:>9.0}% {:>16} {:>16} {:>11} {:>9.0}% {:>16} {:>18}\n",
            p.name,
            lat(&p.keep_alive),
            lat(&p.probe),
            p.server_cpu.total().cpu * 100.0,
            share(p.server_cpu.thread("probe")),
            share(Some(p.server_cpu.others("probe"))),
            p.server_cpu
                .throttled
                .map_or("-".into(), |(t, n)| format!("{t}/{n}")),
            p.client_cpu.total().cpu * 100.0,
            share(p.client_cpu.thread("probe-client")),
            p.probe
                .slowest_waits_us
                .map_or("-".into(), |(c, s)| format!("{:.1}+{:.1} ms", ms(c), ms(s))),
        ));
    }
    out
}

/// The report for a person.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "bench --abuse: the server {}; goals: keep-alive and probe p99 <= {} ms, probes failed: \
         {GOAL_PROBE_FAILURES}; each probe on a new connection every 100 ms, {} s timeout, on the \
         probe port (PROBE_PORT) and, for comparison, on the service port; load: the machine's \
         1-minute load average as the phase began and ended\n",
        report.where_,
        GOAL_HEALTH_P99_US / 1000,
        PROBE_TIMEOUT.as_secs()
    );
    out.push_str(&format!(
        "{:<24} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>19} {:>19} {:>19} {:>5} {:>11}\n",
        "phase",
        "clients",
        "opened",
        "closed",
        "held",
        "RSS idle",
        "RSS peak",
        "cgroup",
        "keep-alive p99",
        "probe p99",
        "service new p99",
        "alive",
        "load"
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
        let ms = |l: &Latency| {
            format!(
                "{:.2} ms {}/{} fail",
                l.p99_us as f64 / 1000.0,
                l.errors,
                l.errors + l.requests
            )
        };
        out.push_str(&format!(
            "{:<24} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>19} {:>19} {:>19} {:>5} {:>11}\n",
            p.name,
            p.asked,
            p.opened,
            p.closed_by_server,
            p.held_by_server.map_or("-".into(), |h| h.to_string()),
            mib(p.rss_idle_kib),
            mib(p.rss_peak_kib),
            cgroup,
            ms(&p.keep_alive),
            ms(&p.probe),
            ms(&p.new_connection),
            if p.oom_killed {
                "OOM"
            } else if p.alive {
                "yes"
            } else {
                "NO"
            },
            match p.load {
                (Some(a), Some(b)) => format!("{a:.1}-{b:.1}"),
                _ => "-".into(),
            },
        ));
    }
    out.push_str(&cpu_table(&report.phases));
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
