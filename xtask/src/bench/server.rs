//! The servers under measurement: their command lines, and starting,
//! pinning, reading and stopping them.

use std::io::Read as _;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use super::LOAD_PATH;
use super::procfs::{cpu_busy_ticks, schedstat_cpu_ns, stat_cpu_ticks, status_field_kib};
use crate::context::{Context, Step};
use crate::http;
use crate::process::{Background, Stdout};

/// A server under measurement.
pub struct Server {
    pub name: &'static str,
    pub binary: Utf8PathBuf,
}

/// What stands for a value only known when a step runs, in the `--dry-run`
/// plan: the port a server gets, the pid it has. The plan's line is the
/// step's own (`Step::line`), quoted as every word is, so that pasted into a
/// shell it passes `<port>` on as a word rather than reading a file `port`.
pub const PORT_PLACEHOLDER: &str = "<port>";
pub const PID_PLACEHOLDER: &str = "<pid>";

/// The URL under load on `port` (a number, or [`PORT_PLACEHOLDER`] in a plan).
pub fn load_url(port: &str) -> String {
    format!("http://127.0.0.1:{port}{LOAD_PATH}")
}

/// The step that starts a server: on `port`, on loopback only, pinned to
/// `cpu` if given. Its other configuration comes from our environment.
/// Echoed when `say`, else with --verbose (a probe's rule): the startup
/// timing starts a server 20 times.
pub fn start_step(
    cx: &Context,
    binary: &Utf8Path,
    cpu: Option<usize>,
    port: &str,
    say: bool,
) -> Step {
    let sh = &cx.sh;
    let cmd = match cpu {
        Some(cpu) => {
            let cpu = cpu.to_string();
            cmd!(sh, "taskset -c {cpu} {binary}")
        }
        None => cmd!(sh, "{binary}"),
    };
    let step = match say {
        true => cx.change(cmd),
        false => cx.probe(cmd),
    };
    step.env("PORT", port)
        .env("HOST", "127.0.0.1")
        .stdout(Stdout::Dropped)
        .keep_stderr()
}

/// The step that puts every thread of the server `pid` under SCHED_FIFO
/// (threads it starts later inherit it).
pub fn realtime_step(cx: &Context, pid: &str) -> Step {
    let sh = &cx.sh;
    cx.change(cmd!(sh, "chrt --all-tasks --fifo --pid 50 {pid}"))
        .within(Duration::from_secs(10), "is the machine very busy?")
}

/// A server process, killed when dropped: no bench leaves one running.
pub struct ServerProcess {
    pub process: Background,
    pub port: u16,
    pub line: String,
}

impl ServerProcess {
    pub fn start(
        cx: &Context,
        server: &Server,
        cpu: Option<usize>,
        say: bool,
    ) -> Result<ServerProcess> {
        let port = free_port()?;
        let step = start_step(cx, &server.binary, cpu, &port.to_string(), say);
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

    pub fn url(&self) -> String {
        load_url(&self.port.to_string())
    }

    /// Polls until the server answers 200; returns the time since exec.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration> {
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
    pub fn realtime(&self, cx: &Context) -> Result<()> {
        realtime_step(cx, &self.process.id().to_string())
            .run(cx)
            .context("run the server under SCHED_FIFO (root or CAP_SYS_NICE is needed)")?;
        Ok(())
    }

    /// User plus system CPU time so far, in clock ticks (/proc/<pid>/stat).
    pub fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.process.id());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        stat_cpu_ticks(&stat).with_context(|| format!("utime and stime in {path}"))
    }

    /// CPU time so far, in nanoseconds: the sum over its threads of
    /// /proc/<pid>/task/<tid>/schedstat (exact, where /proc/<pid>/stat counts ticks).
    /// A thread that ended takes its time with it: the servers keep theirs.
    pub fn cpu_ns(&self) -> Result<u64> {
        let tasks = format!("/proc/{}/task", self.process.id());
        let mut sum = 0;
        for task in std::fs::read_dir(&tasks).with_context(|| format!("list {tasks}"))? {
            let path = task?.path().join("schedstat");
            match std::fs::read_to_string(&path) {
                Ok(line) => {
                    sum += schedstat_cpu_ns(&line)
                        .with_context(|| format!("{}: {line:?}", path.display()))?;
                }
                // The thread ended between the listing and the read.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("read {}", path.display())),
            }
        }
        Ok(sum)
    }

    /// A `kB` field of /proc/<pid>/status: VmRSS, VmHWM.
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.process.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        status_field_kib(&status, field).with_context(|| format!("{field} in {path}"))
    }
}

/// Busy time of CPU `cpu` so far, in clock ticks (/proc/stat).
pub fn cpu_busy(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    cpu_busy_ticks(&stat, cpu).with_context(|| format!("CPU {cpu}'s busy time in /proc/stat"))
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}
