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
use crate::process::{self, Background, Io, Stderr, Stdout};

/// The image and build folder of one --abuse run, removed when dropped.
pub struct AbuseImage {
    pub docker: Utf8PathBuf,
    pub tag: String,
    pub dir: Utf8PathBuf,
}

impl Drop for AbuseImage {
    fn drop(&mut self) {
        let _ = docker_run(&self.docker, &["rmi", "--force", &self.tag]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
