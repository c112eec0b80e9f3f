//! A child process with a deadline: its output captured, and killed (then
//! reaped) when the deadline passes or a signal comes. Every call to a tool
//! that talks to a cluster goes through here, because such a tool can wait
//! forever on an API server that does not answer.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::interrupt;

/// What a bounded run ended with.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Why a bounded run did not finish by itself.
#[derive(Debug)]
pub enum Cut {
    /// The deadline passed; the process was killed.
    Deadline(Duration),
    /// Ctrl-C or SIGTERM came; the process was killed.
    Interrupted,
}

/// Runs `command` (stdin closed, stdout and stderr captured) for at most
/// `limit`. `Err` only when it could not start.
pub fn run_within(
    mut command: Command,
    limit: Duration,
) -> Result<std::result::Result<Finished, (Cut, Finished)>> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now().checked_add(limit);
    let cut = loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ok(collect(status, stdout, stderr)));
        }
        if interrupt::interrupted() {
            break Cut::Interrupted;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Cut::Deadline(limit);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = kill(&mut child)?;
    Ok(Err((cut, collect(status, stdout, stderr))))
}

fn kill(child: &mut Child) -> Result<ExitStatus> {
    let _ = child.kill();
    child.wait().context("reap a killed process")
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A grandchild may keep the pipe open after the kill: the read
            // ends when it does, and nobody waits for that (see `collect`).
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn collect(status: ExitStatus, stdout: JoinHandle<String>, stderr: JoinHandle<String>) -> Finished {
    Finished {
        status,
        stdout: join_within(stdout),
        stderr: join_within(stderr),
    }
}

/// The reader's text, unless a grandchild still holds the pipe a moment after
/// the child ended: then what was read is lost, but we do not hang on it.
fn join_within(reader: JoinHandle<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if reader.is_finished() {
        reader.join().unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_are_captured() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let done = run_within(cmd, Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
    }

    #[test]
    fn a_process_past_its_deadline_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let (cut, done) = run_within(cmd, Duration::from_millis(200))
            .unwrap()
            .unwrap_err();
        assert!(matches!(cut, Cut::Deadline(_)), "{cut:?}");
        assert!(!done.status.success());
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "it was not killed"
        );
    }

    #[test]
    fn a_missing_program_is_an_error_that_names_it() {
        let err = run_within(Command::new("no-such-program-here"), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-program-here"), "{err}");
    }
}
