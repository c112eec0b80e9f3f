//! `cargo xtask bench --abuse`: the service under the floods it must survive
//! in its manifest's memory limit, and the figures that say how well.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::Bench;
use super::json::ToJson as _;
use super::procfs::two_cpus;
use super::server::{PORT_PLACEHOLDER, free_port};
use crate::build::Build;
use crate::context::Context;
use crate::process::Stdout;
use crate::tools;

mod client;
mod flood;
mod report;
mod subject;
mod threads;

use report::{Plan, Report};
use subject::{AbuseImage, Subject, container_step, docker_probe, process_step};

/// rollout.yaml's memory limit, as `docker run --memory` takes it.
pub const MEMORY_LIMIT: &str = "128m";
pub const MEMORY_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
/// What every docker command may take.
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(120);

/// What stands for a phase's name in the `--dry-run` plan's container name.
const PHASE_PLACEHOLDER: &str = "<phase>";

/// The service's settings, passed through to the server under --abuse.
pub const SERVICE_SETTINGS: &[&str] = &[
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

impl Bench {
    /// `--abuse`: each flood against a fresh server, then the burst.
    pub fn run_abuse(&self, cx: &Context) -> Result<()> {
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
                    MEMORY_LIMIT,
                    remote_engine.unwrap_or_default()
                ));
                None
            }
            (false, None) => {
                cx.say(format_args!(
                    "note: no container with --memory {}: docker is not installed ({}); \
                     the server runs as a plain process",
                    MEMORY_LIMIT,
                    tools::DOCKER.install
                ));
                None
            }
            // A dry run only locates docker: it runs nothing, not even `docker version`.
            (false, Some(docker)) if cx.dry_run => Some(docker),
            (false, Some(docker)) => {
                match docker_probe(cx, &docker, &["version", "--format", "{{.Server.Version}}"]) {
                    Ok(_) => Some(docker),
                    Err(err) => {
                        cx.say(format_args!(
                        "note: no container with --memory {}: the Docker engine does not answer ({err:#}); \
                         the server runs as a plain process",
                        MEMORY_LIMIT
                    ));
                        None
                    }
                }
            }
        };
        let built = Build { static_link: true }.compile(cx)?;
        let pid = std::process::id();
        let tag = format!("api-abuse-{pid}:bench");
        let container_name = |phase: &str| format!("api-abuse-{pid}-{phase}");
        // The mix holds every flood at once.
        let want = u64::from(
            (self.silent + self.trickle + self.slowloris + self.pipeliners).max(self.burst),
        ) + 1_000;
        let nofile = raise_nofile(cx, want.max(65_536))?;
        let cpus = separate_cpus(cx)?;
        let server_cpu = cpus.map(|(server, _)| server);
        let env: BTreeMap<String, String> = SERVICE_SETTINGS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect();
        let image = match &docker {
            Some(docker) => {
                let dir = cx.path(&format!("target/bench/abuse-{pid}"));
                AbuseImage::build(cx, docker, &tag, &built.binary, dir)?
            }
            None => None,
        };
        if cx.dry_run {
            // The steps that start each phase's server, with what is only
            // known then (the phase, the ports) as placeholders.
            let (phase, port) = (PHASE_PLACEHOLDER, PORT_PLACEHOLDER);
            let start = match &docker {
                Some(docker) => {
                    let name = container_name(phase);
                    container_step(cx, docker, &tag, &name, [port, port], &env, server_cpu)
                }
                None => process_step(cx, &built.binary, port, port, &env, server_cpu),
            };
            cx.plan(start.line());
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
        let start = |phase: &str| -> Result<Subject> {
            let port = free_port()?;
            match &docker {
                Some(docker) => {
                    let name = container_name(phase);
                    Subject::container(cx, docker, &tag, &name, port, &env, server_cpu)
                }
                None => Subject::process(cx, &built.binary, port, &env, server_cpu),
            }
        };
        let hold = Duration::from_secs(self.hold);
        let mut phases = Vec::new();
        let counts = flood::Counts {
            silent: clamp(self.silent),
            trickle: clamp(self.trickle),
            slowloris: clamp(self.slowloris),
            pipeliners: clamp(self.pipeliners),
        };
        for (name, floods) in flood::phases(counts, room) {
            let mut subject = start(name.split(' ').next().unwrap_or(name))?;
            let result = flood::phase(cx, &mut subject, docker.as_deref(), name, &floods, hold);
            subject.stop(cx, docker.as_deref());
            phases.push(result?);
        }
        let burst = if self.burst > 0 {
            let mut subject = start("burst")?;
            // Idle means after the first requests' allocations settle.
            std::thread::sleep(Duration::from_millis(500));
            let result = flood::burst(
                &subject,
                clamp(self.burst),
                Duration::from_secs(self.settle),
            );
            subject.stop(cx, docker.as_deref());
            Some(result?)
        } else {
            None
        };
        drop(image);
        let report = Report {
            plan: Plan {
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
                Some(_) => format!("in a container, --memory {}, --network host", MEMORY_LIMIT),
                None => "as a plain process (no memory limit)".to_owned(),
            },
            server_env: env,
            phases,
            burst,
        };
        if self.json {
            cx.result(serde_json::to_string_pretty(&report.to_json())?);
        } else {
            cx.result(report::table(&report));
        }
        Ok(())
    }
}

/// DOCKER_HOST when it names an engine on another host (tcp:// to anything but loopback).
pub fn remote_engine() -> Option<String> {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| is_remote(host))
}

/// Whether DOCKER_HOST `host` is tcp:// to anything but loopback.
fn is_remote(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("tcp://") else {
        return false;
    };
    let name = rest.rsplit_once(':').map_or(rest, |(name, _)| name);
    !(matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127."))
}

/// Raises this process's open-file limit to `want` with util-linux's
/// `prlimit` (root, or a hard limit that allows it); the limit in force after.
pub fn raise_nofile(cx: &Context, want: u64) -> Result<u64> {
    let pid = std::process::id().to_string();
    let nofile = format!("--nofile={want}:{want}");
    let mut prlimit = Command::new("prlimit");
    prlimit.args(["--pid", &pid, &nofile]);
    // What counts is the limit read back below, whatever prlimit said: only
    // a Ctrl-C or a prlimit that could not start is an error.
    cx.change(prlimit)
        .stdout(Stdout::Dropped)
        .drop_stderr()
        .within(Duration::from_secs(5), "is the machine very busy?")
        .finish(cx)?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    Ok(max_open_files(&limits).unwrap_or(1024))
}

/// The server's CPU and the bench's own, apart (the first two this process
/// may use), with this process's main thread moved to its own, so that the
/// threads it starts after (the floods', the clients') are there too: the floods'
/// work in the kernel (a pipelining flood keeps both CPUs of a 2-CPU machine
/// 85% busy in the kernel, `vmstat`) is then not the server's, as an attacker's
/// is not on a real node; the probe client runs beside the floods, which only
/// makes its share of the wait larger. None, with a note, on one CPU.
fn separate_cpus(cx: &Context) -> Result<Option<(usize, usize)>> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let (server, bench) = match two_cpus(&status) {
        Ok(cpus) => cpus,
        Err(err) => {
            cx.say(format_args!(
                "note: the server and the floods share the CPU: {err:#}"
            ));
            return Ok(None);
        }
    };
    let mut taskset = Command::new("taskset");
    // Not --all-tasks: a thread that ends meanwhile fails it (No such process).
    taskset.args(["--cpu-list", "--pid", &bench.to_string()]);
    taskset.arg(std::process::id().to_string());
    cx.change(taskset)
        .stdout(Stdout::Dropped)
        .within(Duration::from_secs(5), "is the machine very busy?")
        .run(cx)?;
    Ok(Some((server, bench)))
}

/// The soft limit on open files in /proc/<pid>/limits.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A thread named `name` (its /proc comm, read by [`Snapshot`]).
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .expect("spawn a bench thread")
}

#[cfg(test)]
mod tests {
    use camino::Utf8Path;

    use super::*;

    #[test]
    fn only_an_engine_over_tcp_to_another_host_is_remote() {
        assert!(is_remote("tcp://docker:2375"));
        assert!(is_remote("tcp://10.0.0.5:2376"));
        for local in [
            "tcp://127.0.0.1:2375",
            "tcp://127.1.2.3:2375",
            "tcp://localhost:2375",
            "tcp://[::1]:2375",
            "unix:///var/run/docker.sock",
            "",
        ] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn the_open_file_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
            Max processes             63457                63457                processes\n\
            Max open files            65536                1048576              files\n";
        assert_eq!(max_open_files(limits), Some(65536));
        assert_eq!(max_open_files("Max processes 1 1 processes\n"), None);
    }

    /// The plan's start lines are the steps' own, with the placeholders as
    /// words: pasted into a shell, `<port>` is not a redirection.
    #[test]
    fn the_plan_starts_the_server_with_placeholders_quoted_as_words() {
        let cx = Context::new(true, false).unwrap();
        let env = BTreeMap::from([("LOG_LEVEL".to_owned(), "debug info".to_owned())]);
        let (docker, binary) = (Utf8Path::new("/usr/bin/docker"), Utf8Path::new("/b/api"));
        let name = format!("api-abuse-1-{PHASE_PLACEHOLDER}");
        let (port, tag) = (PORT_PLACEHOLDER, "api-abuse-1:bench");
        assert_eq!(
            container_step(&cx, docker, tag, &name, [port, port], &env, Some(0)).line(),
            "/usr/bin/docker run --detach --name 'api-abuse-1-<phase>' --network host \
             --memory 128m --memory-swap 128m --cpuset-cpus 0 --env 'PORT=<port>' \
             --env 'PROBE_PORT=<port>' --env HOST=127.0.0.1 --env 'LOG_LEVEL=debug info' \
             api-abuse-1:bench"
        );
        assert_eq!(
            process_step(&cx, binary, port, port, &env, Some(0)).line(),
            "PORT='<port>' PROBE_PORT='<port>' HOST=127.0.0.1 LOG_LEVEL='debug info' taskset -c 0 /b/api"
        );
    }
}
