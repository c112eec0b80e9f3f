//! `cargo xtask bench --abuse`: the service under the floods it must survive
//! in its manifest's memory limit, and the figures that say how well.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::Bench;
use super::json::ToJson as _;
use super::server::free_port;
use crate::build::Build;
use crate::context::Context;
use crate::process::{self, Io, Stderr, Stdout};
use crate::tools;

mod client;
mod flood;
mod report;
mod subject;
mod threads;

use report::{Plan, Report};
use subject::{AbuseImage, Subject, docker_run};

/// rollout.yaml's memory limit, as `docker run --memory` takes it.
pub const MEMORY_LIMIT: &str = "128m";
pub const MEMORY_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
/// What every docker command may take.
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(120);

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
                match docker_run(&docker, &["version", "--format", "{{.Server.Version}}"]) {
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
                    m = MEMORY_LIMIT
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
        let nofile = raise_nofile(want.max(65_536));
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
                    .within(DOCKER_DEADLINE, "check that the Docker engine answers")
                    .run(cx)?;
                Some(image)
            }
            None => None,
        };
        let start = |phase: &str| -> Result<Subject> {
            let port = free_port()?;
            match &docker {
                Some(docker) => Subject::container(
                    docker,
                    &tag,
                    &format!("api-abuse-{pid}-{phase}"),
                    port,
                    &env,
                ),
                None => Subject::process(&built.binary, port, &env),
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
            let result = flood::phase(&mut subject, docker.as_deref(), name, &floods, hold);
            subject.stop(docker.as_deref());
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
            subject.stop(docker.as_deref());
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
    let host = std::env::var("DOCKER_HOST").ok()?;
    let rest = host.strip_prefix("tcp://")?;
    let name = rest.rsplit_once(':').map_or(rest, |(name, _)| name);
    let local = matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.starts_with("127.");
    (!local).then_some(host)
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
