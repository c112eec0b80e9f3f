//! The server under abuse: a process, or a container of the static binary
//! under its memory limit; and what is read of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::client::{PROBE_TIMEOUT, get_once};
use super::{DOCKER_DEADLINE, MEMORY_LIMIT, MEMORY_LIMIT_BYTES, spawn_named, threads};
use crate::bench::procfs::status_field_kib;
use crate::bench::server::free_port;
use crate::context::{Context, Step};
use crate::process::{Background, Stdout};

/// The image and build folder of one --abuse run, removed when dropped.
pub struct AbuseImage<'a> {
    cx: &'a Context,
    docker: Utf8PathBuf,
    tag: String,
    dir: Utf8PathBuf,
}

impl<'a> AbuseImage<'a> {
    /// An image `tag` FROM scratch with `binary` as /api, built in `dir`;
    /// `None` under --dry-run, which plans it.
    pub fn build(
        cx: &'a Context,
        docker: &Utf8Path,
        tag: &str,
        binary: &Utf8Path,
        dir: Utf8PathBuf,
    ) -> Result<Option<AbuseImage<'a>>> {
        let writes = cx.announce(format_args!(
            "# an image FROM scratch with {binary} as /api, USER 65534:65534"
        ));
        if writes {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {dir}"))?;
            std::fs::copy(binary, dir.join("api"))
                .with_context(|| format!("copy {binary} to {dir}"))?;
            std::fs::write(
                dir.join("Dockerfile"),
                "FROM scratch\nUSER 65534:65534\nCOPY api /api\nENTRYPOINT [\"/api\"]\n",
            )?;
        }
        let image = writes.then(|| AbuseImage {
            cx,
            docker: docker.to_owned(),
            tag: tag.to_owned(),
            dir: dir.clone(),
        });
        docker_change(cx, docker, &["build", "--tag", tag, dir.as_str()])?;
        Ok(image)
    }
}

impl Drop for AbuseImage<'_> {
    fn drop(&mut self) {
        let _ = docker_change(self.cx, &self.docker, &["rmi", "--force", &self.tag]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The step that starts the server as a process: on `port` and `probe_port`
/// (numbers, or placeholders in a plan), loopback only, with `env`.
pub fn process_step(
    cx: &Context,
    binary: &Utf8Path,
    port: &str,
    probe_port: &str,
    env: &BTreeMap<String, String>,
    cpu: Option<usize>,
) -> Step {
    let command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset
                .args(["-c", &cpu.to_string()])
                .arg(binary.as_std_path());
            taskset
        }
        None => Command::new(binary.as_std_path()),
    };
    let mut step = cx
        .change(command)
        .env("PORT", port)
        .env("PROBE_PORT", probe_port)
        .env("HOST", "127.0.0.1");
    for (key, value) in env {
        step = step.env(key, value);
    }
    step.stdout(Stdout::Dropped).drop_stderr()
}

/// The step that starts the server as `docker run --network host --memory
/// 128m` of `image`, named `name`; `[port, probe_port]`, `env` and `cpu` as
/// [`process_step`].
pub fn container_step(
    cx: &Context,
    docker: &Utf8Path,
    image: &str,
    name: &str,
    [port, probe_port]: [&str; 2],
    env: &BTreeMap<String, String>,
    cpu: Option<usize>,
) -> Step {
    let mut command = Command::new(docker.as_std_path());
    command.args(["run", "--detach", "--name", name, "--network", "host"]);
    command.args(["--memory", MEMORY_LIMIT, "--memory-swap", MEMORY_LIMIT]);
    if let Some(cpu) = cpu {
        command.args(["--cpuset-cpus", &cpu.to_string()]);
    }
    command.args(["--env", &format!("PORT={port}")]);
    command.args(["--env", &format!("PROBE_PORT={probe_port}")]);
    command.args(["--env", "HOST=127.0.0.1"]);
    for (key, value) in env {
        command.args(["--env", &format!("{key}={value}")]);
    }
    command.arg(image);
    // Its stdout is the container's id: kept off ours, where --json goes.
    docker_step(cx.change(command).stdout(Stdout::Kept))
}

/// The server under abuse: a process, or a container of the static binary.
pub struct Subject {
    pub process: Option<Background>,
    pub container: Option<String>,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The probe port, which the server is told with `PROBE_PORT`.
    pub probe: SocketAddr,
    pub cgroup: Option<std::path::PathBuf>,
    /// Its CPU cgroup (a container's), for quota throttling.
    pub cpu_cgroup: Option<std::path::PathBuf>,
}

impl Subject {
    pub fn process(
        cx: &Context,
        binary: &Utf8Path,
        port: u16,
        env: &BTreeMap<String, String>,
        cpu: Option<usize>,
    ) -> Result<Subject> {
        let probe_port = free_port()?;
        let step = process_step(
            cx,
            binary,
            &port.to_string(),
            &probe_port.to_string(),
            env,
            cpu,
        );
        let process = step
            .spawn(cx)?
            .context("the server is not started under --dry-run")?;
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
        cx: &Context,
        docker: &Utf8Path,
        image: &str,
        name: &str,
        port: u16,
        env: &BTreeMap<String, String>,
        cpu: Option<usize>,
    ) -> Result<Subject> {
        let probe_port = free_port()?;
        let (port_word, probe_word) = (port.to_string(), probe_port.to_string());
        container_step(cx, docker, image, name, [&port_word, &probe_word], env, cpu).run(cx)?;
        let mut subject = Subject {
            process: None,
            container: Some(name.to_owned()),
            pid: 0,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            probe: SocketAddr::from(([127, 0, 0, 1], probe_port)),
            cgroup: None,
            cpu_cgroup: None,
        };
        let pid = docker_probe(cx, docker, &["inspect", "--format", "{{.State.Pid}}", name])
            .and_then(|pid| pid.trim().parse().context("the container's pid"));
        subject.pid = match pid {
            Ok(pid) => pid,
            Err(err) => {
                subject.stop(cx, Some(docker));
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
            subject.stop(cx, Some(docker));
            return Err(err);
        }
        Ok(subject)
    }

    pub fn wait_ready(&self) -> Result<()> {
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

    pub fn cgroup_read(&self, file: &str) -> Option<u64> {
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
    pub fn alive(&mut self, cx: &Context, docker: Option<&Utf8Path>) -> (bool, bool) {
        if let Some(process) = &mut self.process {
            return (matches!(process.child().try_wait(), Ok(None)), false);
        }
        let (Some(name), Some(docker)) = (&self.container, docker) else {
            return (false, false);
        };
        match docker_probe(
            cx,
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

    pub fn stop(&mut self, cx: &Context, docker: Option<&Utf8Path>) {
        // Killed and reaped as it is dropped.
        self.process = None;
        if let (Some(name), Some(docker)) = (self.container.take(), docker) {
            let _ = docker_change(cx, docker, &["rm", "--force", &name]);
        }
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| status_field_kib(&s, "VmRSS").ok())
        .unwrap_or(0)
}

/// Open sockets of `pid`: its open file descriptors that are sockets.
pub fn sockets(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

/// Samples a server's sockets and RSS every 250 ms until stopped: the most of each.
pub struct Sampler {
    pub stop: Arc<AtomicBool>,
    pub thread: JoinHandle<(Option<usize>, u64)>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
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

    pub fn finish(self) -> (Option<usize>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((None, 0))
    }
}

/// The memory cgroup directory of `pid`, v1 or v2.
pub fn memory_cgroup(pid: u32) -> Option<std::path::PathBuf> {
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

/// A docker step's deadline, and its stderr kept for the error.
fn docker_step(step: Step) -> Step {
    step.keep_stderr()
        .within(DOCKER_DEADLINE, "check that the Docker engine answers")
}

/// `docker args...` that changes something (echoed; planned under --dry-run).
pub fn docker_change(cx: &Context, docker: &Utf8Path, args: &[&str]) -> Result<()> {
    let mut command = Command::new(docker.as_std_path());
    command.args(args);
    docker_step(cx.change(command).stdout(Stdout::Kept)).run(cx)?;
    Ok(())
}

/// `docker args...` that only reads (echoed with --verbose); its stdout.
pub fn docker_probe(cx: &Context, docker: &Utf8Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(docker.as_std_path());
    command.args(args);
    docker_step(cx.probe(command)).read(cx)
}
