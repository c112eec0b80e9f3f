//! Ctrl-C (SIGINT), SIGTERM (a cancelled CI job), SIGHUP (a closed terminal,
//! a dropped SSH session) and SIGQUIT become a flag that the waits check, so
//! `release` can abort the preview instead of dying halfway with a Rollout
//! left paused on an unchecked version.
//!
//! The children run in process groups of their own (see `process`), so a
//! terminal's Ctrl-C reaches xtask alone and xtask decides: the first signal
//! sets the flag (the running child is stopped, the task unwinds); a second
//! one ends the process at once, its children's groups killed first, for a
//! person who really wants out -- except while a [`Protected`] guard lives:
//! after `release` changed the Rollout, or once `abort` or `promote` sends
//! its change, nothing but SIGKILL skips the abort (itself bounded in time)
//! or the read-back, and later signals are only reported.

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use crate::context::say_line;

/// The signals that stop a task; SIGHUP and SIGQUIT are treated as SIGTERM.
const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// How many signals came (the kernel merges two of a kind still pending).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Wakes the [`sleep`]s when a signal came; the lock is only for the wait.
static WOKEN: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
/// While set, a second signal is reported (with what goes on, said here), not obeyed.
static PROTECTED: Mutex<Option<&'static str>> = Mutex::new(None);
static IGNORING: AtomicBool = AtomicBool::new(false);
/// What runs to its end meanwhile, and when that ends at the latest: for the
/// report of a later signal.
static IGNORED_FOR: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// The error a wait returns when it was interrupted; `release` looks for it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C, SIGTERM, SIGHUP or SIGQUIT)")
    }
}

impl std::error::Error for Interrupted {}

/// Catches the signals; idempotent. The handler only writes a byte to a
/// socket (all a signal handler may safely do); a thread of ours blocks on
/// the other end and acts on each at once, using no CPU meanwhile.
pub fn install() {
    INSTALL.call_once(|| {
        if let Err(err) = catch().and_then(|read| {
            std::thread::Builder::new()
                .name("signals".to_owned())
                .spawn(move || watch(read))
        }) {
            say_line(format_args!(
                "warning: cannot catch signals ({err}); Ctrl-C will not stop cleanly"
            ));
        }
    });
}

/// Points every signal at one socket pair (signal-hook's self-pipe,
/// low_level/pipe.rs `register`); gives the end to read.
fn catch() -> std::io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    for signal in SIGNALS {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(read)
}

/// Counts the signals and acts on each as it comes.
fn watch(mut pipe: UnixStream) {
    let mut bytes = [0u8; 16];
    loop {
        match pipe.read(&mut bytes) {
            // One byte per signal (signal-hook's pipe.rs `wake`).
            Ok(n) if n > 0 => (0..n).for_each(|_| act()),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return, // The write ends live as long as the process.
        }
    }
}

/// One signal: the first stops the task, a later one quits, unless protected.
fn act() {
    let now = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    drop(WOKEN.0.lock().unwrap_or_else(|e| e.into_inner()));
    WOKEN.1.notify_all();
    let protected = *PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
    match protected {
        // The first one goes unsaid unless ignored: the task says what it does about it.
        Some(going_on) if now > 1 || IGNORING.load(Ordering::SeqCst) => {
            say_line(report(now, going_on));
        }
        Some(_) => {}
        None if now == 1 => say_line("interrupted: stopping (a second signal quits at once)"),
        None => {
            say_line("interrupted again: quitting now");
            crate::process::kill_all();
            std::process::exit(130);
        }
    }
}

/// What a signal says while protected: what runs to its end (the read-back,
/// the abort), else what goes on.
fn report(nth: usize, going_on: &str) -> String {
    let again = if nth > 1 { " again" } else { "" };
    let ignored_for = *IGNORED_FOR.lock().unwrap_or_else(|e| e.into_inner());
    match ignored_for {
        Some((what, ends)) => format!(
            "interrupted{again}: {what} is in progress and goes on (at most {} s left); SIGKILL \
             would leave the preview stranded",
            ends.saturating_duration_since(Instant::now()).as_secs()
        ),
        None => format!("interrupted{again}: {going_on}"),
    }
}

/// While this lives, a later signal is reported, never obeyed: none ends the process.
pub struct Protected(());

/// What `release` does after a signal, said to a person who presses Ctrl-C again.
const RELEASE_GOES_ON: &str = "release is stopping to abort its preview and goes on; SIGKILL would \
                               leave the preview stranded";

/// Protects what follows `release`'s `set image` (the Rollout was changed: it
/// must end aborted or promoted, not half-way) until the guard is dropped.
pub fn protect() -> Protected {
    protect_for(RELEASE_GOES_ON)
}

/// Protects what follows a change to the world until the guard is dropped;
/// `going_on` is what the task does after a signal, said to a person who
/// presses Ctrl-C again. Not nested: one task changes one thing at a time.
pub fn protect_for(going_on: &'static str) -> Protected {
    install();
    *PROTECTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(going_on);
    Protected(())
}

impl Drop for Protected {
    fn drop(&mut self) {
        *PROTECTED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Whether a signal came (and is not being ignored, see [`ignore`]).
pub fn interrupted() -> bool {
    RECEIVED.load(Ordering::SeqCst) > 0 && !IGNORING.load(Ordering::SeqCst)
}

/// While this lives, signals change nothing: waits and calls go on.
pub struct Ignoring(());

/// For what must run to its end whatever signals come meanwhile: a read back
/// after an interrupted change, the abort a signal asked for. `within` is its
/// bound; `what` and it are said to a person who presses Ctrl-C again.
pub fn ignore(what: &'static str, within: Duration) -> Ignoring {
    IGNORING.store(true, Ordering::SeqCst);
    *IGNORED_FOR.lock().unwrap_or_else(|e| e.into_inner()) =
        Instant::now().checked_add(within).map(|ends| (what, ends));
    Ignoring(())
}

impl Drop for Ignoring {
    fn drop(&mut self) {
        *IGNORED_FOR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        IGNORING.store(false, Ordering::SeqCst);
    }
}

/// Fails with [`Interrupted`] if a signal came.
pub fn check() -> Result<()> {
    if interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Sleeps, waking early (with [`Interrupted`]) when a signal comes.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now().checked_add(duration);
    // Checked under the lock the watcher takes before it wakes us: no signal is missed.
    let mut lock = WOKEN.0.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        check()?;
        let left = match end {
            Some(end) => end.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() {
            return Ok(());
        }
        lock = match WOKEN.1.wait_timeout(lock, left) {
            Ok((lock, _)) => lock,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// Whether an error (anywhere in its chain) is an interruption.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Interrupted>())
}
