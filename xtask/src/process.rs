//! Running a child process to its end: where its output goes, a secret on
//! its stdin, and a deadline after which (or on Ctrl-C/SIGTERM) it is killed
//! and reaped. Every program a task runs goes through [`run`] (by way of
//! `context::Step`), because a tool can wait forever: an API server that does
//! not answer, an engine behind a dead address.
//!
//! Each child leads a process group of its own, so a terminal's Ctrl-C
//! reaches xtask alone (`interrupt` decides what it stops), and a kill takes
//! the whole group: the child and whatever it started.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::interrupt;

/// Where a child's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Ours: the person at the terminal sees it.
    Shown,
    /// Our stderr, line by line as it comes, and kept: progress that is not
    /// a result (docker's), since our stdout carries only results.
    OnStderr,
    /// Kept, not shown: data for us (cargo's JSON messages, a probe's answer).
    Kept,
    /// Nowhere: a server under measurement, whose output nobody reads.
    Dropped,
}

/// Where a child's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Ours.
    Shown,
    /// Kept, for an error that quotes it.
    Kept,
    /// Nowhere: a probe whose failure says enough by its status.
    Dropped,
}

/// How to run a child: where its stdout and stderr go, what it reads on
/// stdin (else nothing), and its deadline. Not `Debug`: `stdin` may be a
/// secret, which no output may show.
pub struct Io {
    pub stdout: Stdout,
    pub stderr: Stderr,
    pub stdin: Option<String>,
    pub limit: Option<Duration>,
}

/// The most of a child's stdout that is kept (cargo's JSON messages for this
/// workspace are well under 1 MiB); the rest is read and dropped, so a tool
/// that floods cannot grow our memory.
pub const STDOUT_CAP: usize = 16 << 20;
pub const STDOUT_CAP_TEXT: &str = "16 MiB";
/// The most of a child's stderr that is kept (its start), for an error that quotes it.
pub const STDERR_CAP: usize = 64 << 10;

/// What a run ended with; `stdout` and `stderr` hold what was kept.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout went past [`STDOUT_CAP`] (only the start of it is kept).
    pub stdout_cut: bool,
}

/// Why a run did not finish by itself.
#[derive(Debug)]
pub enum Cut {
    /// The deadline passed; the process was killed.
    Deadline(Duration),
    /// Ctrl-C or SIGTERM came; the process was killed.
    Interrupted,
}

/// How a run ended: by itself, or cut (with what it said until then).
pub type Ended = std::result::Result<Finished, (Cut, Finished)>;

/// Runs `command` to its end, as `io` says. `Err` only when it could not start.
pub fn run(command: Command, io: &Io) -> Result<Ended> {
    let stdin = match io.stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    let mut child = start(command, io, stdin)?;
    if let (Some(input), Some(mut pipe)) = (&io.stdin, child.stdin.take()) {
        // A command that exits before reading says why on stderr; its status tells.
        let _ = pipe.write_all(input.as_bytes());
    }
    let stdout = drain(
        child.stdout.take(),
        io.stdout == Stdout::OnStderr,
        STDOUT_CAP,
    );
    let stderr = drain(child.stderr.take(), false, STDERR_CAP);
    let deadline = io
        .limit
        .and_then(|limit| Some((Instant::now().checked_add(limit)?, limit)));
    let cut = loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ok(collect(&child, status, stdout, stderr)));
        }
        if interrupt::interrupted() {
            break Cut::Interrupted;
        }
        if let Some((at, limit)) = deadline
            && Instant::now() >= at
        {
            break Cut::Deadline(limit);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = stop(&mut child)?;
    Ok(Err((cut, collect(&child, status, stdout, stderr))))
}

/// A child left running in the background (a server, a port-forward): killed
/// and reaped when dropped, so no task leaves one behind, on success, on an
/// error, or when Ctrl-C unwinds it. What it prints is in its pipes (`Kept`
/// output is piped and left for the owner to read; `OnStderr` is kept too).
pub struct Background {
    child: Child,
    started: Instant,
}

/// Starts `command` as `io` says (stdin closed; no secret, no deadline: the
/// owner decides when it ends).
pub fn spawn(command: Command, io: &Io) -> Result<Background> {
    let started = Instant::now();
    let child = start(command, io, Stdio::null())?;
    Ok(Background { child, started })
}

/// Starts `command` with its stdout and stderr where `io` says.
fn start(mut command: Command, io: &Io, stdin: Stdio) -> Result<Child> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let child = command
        .stdin(stdin)
        .stdout(stdout_of(io.stdout))
        .stderr(stderr_of(io.stderr))
        .process_group(0)
        .spawn()
        .map_err(|err| start_error(err, &program))?;
    groups.push(child.id());
    Ok(child)
}

/// The process groups of the children not reaped yet (each child leads its
/// own: its pid is the group's id).
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every child's process group, for a quit that skips the destructors
/// (a second Ctrl-C): no child is left running after us. SIGTERM first, so
/// a tool can stop what it started in groups of its own (cargo nextest its
/// tests), then SIGKILL.
pub fn kill_all() {
    let groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for group in &groups {
        signal_group(*group, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(200));
    for group in &groups {
        signal_group(*group, libc::SIGKILL);
    }
}

/// The one unsafe call of xtask: std has no way to signal a process group.
#[allow(unsafe_code)]
fn signal_group(group: u32, signal: i32) {
    if let Ok(group) = i32::try_from(group) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

impl Background {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Just before it was started (for a time from exec, say).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The child, for its pipes and `try_wait`.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = kill(&mut self.child);
    }
}

fn stdout_of(stdout: Stdout) -> Stdio {
    match stdout {
        Stdout::Shown => Stdio::inherit(),
        Stdout::OnStderr | Stdout::Kept => Stdio::piped(),
        Stdout::Dropped => Stdio::null(),
    }
}

fn stderr_of(stderr: Stderr) -> Stdio {
    match stderr {
        Stderr::Shown => Stdio::inherit(),
        Stderr::Kept => Stdio::piped(),
        Stderr::Dropped => Stdio::null(),
    }
}

/// A program that is not there is named as such; anything else says what failed.
fn start_error(err: std::io::Error, program: &str) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("command not found: {program}")
    } else {
        anyhow::Error::new(err).context(format!("start {program}"))
    }
}

/// How long a child cut short by its deadline or a signal has after SIGTERM
/// to stop what it started (cargo nextest its tests, in groups of their own)
/// before its group gets SIGKILL.
const GRACE: Duration = Duration::from_secs(1);

/// Stops a run cut short: SIGTERM to the child's group, then, if the child
/// is still there after [`GRACE`], SIGKILL to the group; reaps it.
fn stop(child: &mut Child) -> Result<ExitStatus> {
    if child.try_wait().ok().flatten().is_none() {
        signal_group(child.id(), libc::SIGTERM);
        let end = Instant::now() + GRACE;
        while Instant::now() < end && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    kill(child)
}

/// Kills the child's whole group (a child that is gone still holds its
/// group's id until reaped), then reaps it.
fn kill(child: &mut Child) -> Result<ExitStatus> {
    if child.try_wait().ok().flatten().is_none() {
        signal_group(child.id(), libc::SIGKILL);
    }
    let _ = child.kill();
    let status = child.wait().context("reap a killed process");
    forget(child);
    status
}

/// A reaped child's group is no longer ours to kill (its id may be reused).
fn forget(child: &Child) {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups.retain(|group| *group != child.id());
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes (and
/// whether there was more); with `tee`, each line also goes to our stderr as
/// it comes.
fn drain(
    pipe: Option<impl Read + Send + 'static>,
    tee: bool,
    cap: usize,
) -> JoinHandle<(String, bool)> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut cut = false;
        if let Some(pipe) = pipe {
            // A grandchild may keep the pipe open after the kill: the read
            // ends when it does, and nobody waits for that (see `collect`).
            let mut pipe = BufReader::new(pipe);
            let mut stderr = std::io::stderr();
            let mut line = Vec::new();
            // A line is read in pieces of at most 64 KiB: one without an end cannot grow either.
            while let Ok(read) = (&mut pipe).take(64 << 10).read_until(b'\n', &mut line) {
                if read == 0 {
                    break;
                }
                if tee {
                    let _ = stderr.write_all(&line);
                }
                let room = cap - bytes.len();
                if line.len() > room {
                    cut = true;
                    bytes.extend_from_slice(&line[..room]);
                } else {
                    bytes.extend_from_slice(&line);
                }
                line.clear();
            }
        }
        (String::from_utf8_lossy(&bytes).into_owned(), cut)
    })
}

fn collect(
    child: &Child,
    status: ExitStatus,
    stdout: JoinHandle<(String, bool)>,
    stderr: JoinHandle<(String, bool)>,
) -> Finished {
    forget(child);
    let (stdout, stdout_cut) = join_within(stdout);
    Finished {
        status,
        stdout,
        stderr: join_within(stderr).0,
        stdout_cut,
    }
}

/// The reader's text, unless a grandchild still holds the pipe a moment after
/// the child ended: then what was read is lost, but we do not hang on it.
fn join_within(reader: JoinHandle<(String, bool)>) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if reader.is_finished() {
        reader.join().unwrap_or_default()
    } else {
        (String::new(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(limit: Duration) -> Io {
        Io {
            stdout: Stdout::Kept,
            stderr: Stderr::Kept,
            stdin: None,
            limit: Some(limit),
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn output_and_status_are_captured() {
        let done = run(
            sh("echo out; echo err >&2; exit 3"),
            &kept(Duration::from_secs(10)),
        )
        .unwrap()
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
    }

    #[test]
    fn a_secret_goes_to_stdin_and_stdout_shown_on_stderr_is_kept_too() {
        let io = Io {
            stdout: Stdout::OnStderr,
            stdin: Some("s3cret\n".to_owned()),
            ..kept(Duration::from_secs(10))
        };
        let done = run(sh("read line; echo \"got $line\""), &io)
            .unwrap()
            .unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout, "got s3cret\n");
    }

    #[test]
    fn a_process_past_its_deadline_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let start = Instant::now();
        let (cut, done) = run(cmd, &kept(Duration::from_millis(200)))
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
    fn a_flood_on_stdout_is_kept_up_to_the_cap_and_said() {
        // 64 MiB without a line break: four times the cap, one piece at a time.
        let done = run(
            sh("head -c 67108864 /dev/zero; echo end >&2"),
            &kept(Duration::from_secs(60)),
        )
        .unwrap()
        .unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout.len(), STDOUT_CAP);
        assert!(done.stdout_cut);
        assert_eq!(done.stderr, "end\n");
    }

    #[test]
    fn a_kill_takes_the_child_s_whole_group() {
        let (cut, done) = run(
            sh("sleep 30 & echo $!; exec sleep 31"),
            &kept(Duration::from_millis(300)),
        )
        .unwrap()
        .unwrap_err();
        assert!(matches!(cut, Cut::Deadline(_)), "{cut:?}");
        let grandchild = done.stdout.trim();
        assert!(!grandchild.is_empty(), "{done:?}");
        // Its background `sleep 30` was in the group: gone (or a zombie until init reaps it).
        let bound = Instant::now() + Duration::from_secs(5);
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if !stat.contains("(sleep) S") {
                break;
            }
            assert!(Instant::now() < bound, "still running: {stat}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_run_cut_short_gets_sigterm_first_and_sigkill_if_it_stays() {
        // It may clean up (cargo nextest stops its tests)...
        let (_, done) = run(
            sh("trap 'echo cleaned; exit 3' TERM; sleep 30 & wait"),
            &kept(Duration::from_millis(300)),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(done.stdout, "cleaned\n");
        assert_eq!(done.status.code(), Some(3));
        // ...but one that ignores SIGTERM ends all the same.
        let start = Instant::now();
        let (_, done) = run(
            sh("trap '' TERM; sleep 30"),
            &kept(Duration::from_millis(300)),
        )
        .unwrap()
        .unwrap_err();
        assert!(!done.status.success());
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "it was not killed"
        );
    }

    #[test]
    fn a_missing_program_is_an_error_that_names_it() {
        let err = run(
            Command::new("no-such-program-here"),
            &kept(Duration::from_secs(1)),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("command not found: no-such-program-here"),
            "{err}"
        );
    }

    #[test]
    fn a_background_process_is_killed_and_reaped_when_dropped() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let io = Io {
            stdout: Stdout::Dropped,
            stderr: Stderr::Dropped,
            ..kept(Duration::from_secs(1))
        };
        let background = spawn(cmd, &io).unwrap();
        let pid = background.id();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(background);
        // Reaped, not a zombie: the pid is gone (or, reused at once, another process).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!stat.contains("(sleep)"), "still there: {stat}");
    }
}
