//! Ctrl-C (SIGINT) and SIGTERM (a cancelled CI job) become a flag that the
//! waits check, so `release` can abort the preview instead of dying halfway
//! with a Rollout left paused on an unchecked version. A second signal ends
//! the process at once, for a person who really wants out.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
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
            // Order matters: the shutdown action sees the flag as it was
            // before this signal, so only a second signal exits.
            let armed = signal_hook::flag::register_conditional_shutdown(signal, 130, &INTERRUPTED)
                .and_then(|_| signal_hook::flag::register(signal, &INTERRUPTED));
            if let Err(err) = armed {
                eprintln!(
                    "warning: cannot catch signal {signal} ({err}); Ctrl-C will not abort cleanly"
                );
            }
        }
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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
