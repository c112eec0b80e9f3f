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
//! after `release` changed the Rollout, nothing but SIGKILL skips the abort
//! (which is itself bounded in time), and later signals are only reported.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use crate::context::say_line;

/// The signals that stop a task; SIGHUP and SIGQUIT are treated as SIGTERM.
const SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// Set by the handler; the watcher counts and clears it.
static CAUGHT: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));
/// How many signals came (two within the watcher's 20 ms count as one).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// While set, a second signal is reported, not obeyed.
static PROTECTED: AtomicBool = AtomicBool::new(false);
static IGNORING: AtomicBool = AtomicBool::new(false);
/// The end of the abort in progress, for the report of a later signal.
static ABORT_ENDS: Mutex<Option<Instant>> = Mutex::new(None);
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

/// Catches the signals; idempotent. A thread of ours acts on them: the
/// handler itself only sets a flag, which is all a signal handler may safely do.
pub fn install() {
    INSTALL.call_once(|| {
        for signal in SIGNALS {
            if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&CAUGHT)) {
                say_line(format_args!(
                    "warning: cannot catch signal {signal} ({err}); Ctrl-C will not stop cleanly"
                ));
            }
        }
        let watcher = std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(watch);
        if let Err(err) = watcher {
            say_line(format_args!(
                "warning: cannot watch for signals ({err}); a second Ctrl-C will not quit at once"
            ));
        }
    });
}

/// Counts the signals and acts on each, within 20 ms.
fn watch() {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if !CAUGHT.swap(false, Ordering::SeqCst) {
            continue;
        }
        let now = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
        if now == 1 {
            if !PROTECTED.load(Ordering::SeqCst) {
                say_line("interrupted: stopping (a second signal quits at once)");
            }
            continue;
        }
        if !PROTECTED.load(Ordering::SeqCst) {
            say_line("interrupted again: quitting now");
            crate::process::kill_all();
            std::process::exit(130);
        }
        say_line(report());
    }
}

/// What a signal after the first says while the Rollout must still be aborted.
fn report() -> String {
    let ends = *ABORT_ENDS.lock().unwrap_or_else(|e| e.into_inner());
    match ends {
        Some(ends) => format!(
            "interrupted again: the abort is in progress and goes on (at most {} s left); SIGKILL \
             would leave the preview stranded",
            ends.saturating_duration_since(Instant::now()).as_secs()
        ),
        None => "interrupted again: release is stopping to abort its preview and goes on; SIGKILL \
                 would leave the preview stranded"
            .to_owned(),
    }
}

/// While this lives, signals only set the flag: none ends the process.
pub struct Protected(());

/// Protects what follows (the Rollout was changed: it must end aborted or
/// promoted, not half-way) until the guard is dropped.
pub fn protect() -> Protected {
    install();
    PROTECTED.store(true, Ordering::SeqCst);
    Protected(())
}

impl Drop for Protected {
    fn drop(&mut self) {
        PROTECTED.store(false, Ordering::SeqCst);
    }
}

/// Whether a signal came (and is not being ignored, see [`ignore`]).
pub fn interrupted() -> bool {
    (RECEIVED.load(Ordering::SeqCst) > 0 || CAUGHT.load(Ordering::SeqCst))
        && !IGNORING.load(Ordering::SeqCst)
}

/// While this lives, signals change nothing: waits and calls go on.
pub struct Ignoring(());

/// For what must run to its end whatever signals come meanwhile: a read back
/// after an interrupted change, the abort a signal asked for. `within` is its
/// bound, said to a person who presses Ctrl-C again.
pub fn ignore(within: Duration) -> Ignoring {
    IGNORING.store(true, Ordering::SeqCst);
    *ABORT_ENDS.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now().checked_add(within);
    Ignoring(())
}

impl Drop for Ignoring {
    fn drop(&mut self) {
        *ABORT_ENDS.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
    let end = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Whether an error (anywhere in its chain) is an interruption.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Interrupted>())
}
