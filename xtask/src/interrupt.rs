//! Ctrl-C (SIGINT) and SIGTERM (a cancelled CI job) become a flag that the
//! waits check, so `release` can abort the preview instead of dying halfway
//! with a Rollout left paused on an unchecked version. A second signal ends
//! the process at once, for a person who really wants out -- except while a
//! [`Protected`] guard lives: after `release` changed the Rollout, nothing but
//! SIGKILL skips the abort (which is itself bounded in time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::Result;
use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the next signal exits: set by a signal unless protected.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The handlers that arm the exit, while they are registered.
static ARMING: Mutex<Vec<SigId>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// The error a wait returns when it was interrupted; `release` looks for it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C or SIGTERM)")
    }
}

impl std::error::Error for Interrupted {}

/// Turns SIGINT and SIGTERM into the flag; idempotent.
pub fn install() {
    INSTALL.call_once(|| {
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown action sees ARMED as it was before
            // this signal, so only a second signal exits.
            let caught = signal_hook::flag::register_conditional_shutdown(signal, 130, &ARMED)
                .and_then(|_| signal_hook::flag::register(signal, &INTERRUPTED));
            if let Err(err) = caught {
                eprintln!(
                    "warning: cannot catch signal {signal} ({err}); Ctrl-C will not abort cleanly"
                );
            }
        }
        arm_on_signal();
    });
}

fn arm_on_signal() {
    let mut arming = ARMING.lock().unwrap_or_else(|e| e.into_inner());
    for signal in [SIGINT, SIGTERM] {
        if let Ok(id) = signal_hook::flag::register(signal, &ARMED) {
            arming.push(id);
        }
    }
    if interrupted() {
        ARMED.store(true, Ordering::SeqCst);
    }
}

/// While this lives, signals only set the flag: none ends the process.
pub struct Protected(());

/// Protects what follows (the Rollout was changed: it must end aborted or
/// promoted, not half-way) until the guard is dropped.
pub fn protect() -> Protected {
    install();
    for id in ARMING.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        signal_hook::low_level::unregister(id);
    }
    ARMED.store(false, Ordering::SeqCst);
    Protected(())
}

impl Drop for Protected {
    fn drop(&mut self) {
        arm_on_signal();
    }
}

/// Whether a signal came (and is not being ignored, see [`ignore`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) && !IGNORING.load(Ordering::SeqCst)
}

static IGNORING: AtomicBool = AtomicBool::new(false);

/// While this lives, signals change nothing: waits and calls go on.
pub struct Ignoring(());

/// For the abort that a signal asked for: it must run to its end, which is
/// bounded in time, whatever signals come meanwhile.
pub fn ignore() -> Ignoring {
    IGNORING.store(true, Ordering::SeqCst);
    Ignoring(())
}

impl Drop for Ignoring {
    fn drop(&mut self) {
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
