//! The servers under measurement: their command lines, and starting,
//! pinning, reading and stopping them.

use std::io::Read as _;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Cmd, Shell, cmd};

use super::LOAD_PATH;
use super::procfs::{cpu_busy_ticks, stat_cpu_ticks, status_field_kib};
use crate::context::{Context, shell_quote};
use crate::http;
use crate::process::{Background, Stdout};

/// A server under measurement.
pub struct Server {
    pub name: &'static str,
    pub binary: Utf8PathBuf,
}

/// The command that starts a server: on `port`, on loopback only, pinned to
/// `cpu` if given. Its other configuration comes from our environment.
pub fn server_cmd<'a>(
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
pub fn plan_line(env: &[(&str, String)], cmd: &Cmd<'_>) -> String {
    let mut line = String::new();
    for (key, value) in env {
        line.push_str(&format!("{key}={} ", shell_quote(value)));
    }
    line.push_str(&cmd.to_string());
    line
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{LOAD_PATH}", self.port)
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
        let (sh, pid) = (&cx.sh, self.process.id().to_string());
        cx.change(cmd!(sh, "chrt --all-tasks --fifo --pid 50 {pid}"))
            .within(Duration::from_secs(10), "is the machine very busy?")
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
