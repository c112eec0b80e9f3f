//! Waits on the Rollout: read it (`kubectl get ... -o json`) every poll
//! interval until a decision says done, or fail, or the time is up. Each
//! change of phase is printed, so a person watching sees what the controller does.
//!
//! A read that fails inside a wait is weather, not a verdict: client-go
//! retries a GET only on a reset connection or a 429/5xx with Retry-After, so
//! a control plane restarting (connection refused), a TLS handshake timeout,
//! a bare 500 or a credential plugin failing once make `kubectl get` exit 1 at
//! once. Such a read is a missed look: one line with kubectl's reason, and the
//! wait goes on to its own deadline, giving up early only after
//! [`MISSES_IN_A_ROW`] failed reads in a row.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::kube::{CallFailed, Kubectl};
use super::state::{PhaseLine, RolloutState};
use super::{Cluster, go_duration};
use crate::context::Context;
use crate::interrupt;
use crate::timing;

/// How many failed reads in a row end a wait before its deadline. Five looks
/// at the default 2s interval ride out 10s of refused connections (an API
/// server's restart behind a load balancer takes about that), while a cluster
/// that is really gone (a revoked login, a deleted namespace) still ends the
/// wait long before the default 300s; five reads that each hang to their
/// bound (3 request timeouts) stay within it too.
pub const MISSES_IN_A_ROW: u32 = 5;

/// What a look at the Rollout decided.
pub enum Look<T> {
    Done(T),
    Wait,
}

/// A wait that ended with no read to go by: its last looks all failed. What
/// the Rollout is now is unknown, so no caller may act as if it knew.
#[derive(Debug)]
pub struct StateUnknown {
    pub message: String,
}

impl std::fmt::Display for StateUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StateUnknown {}

/// Whether `error` (or one it wraps) says the state is unknown.
pub fn is_unknown(error: &anyhow::Error) -> bool {
    error.downcast_ref::<StateUnknown>().is_some()
}

/// Failed reads in a row, and what the last one said.
struct Misses {
    in_a_row: u32,
    last: Option<anyhow::Error>,
}

impl Misses {
    fn new() -> Misses {
        Misses {
            in_a_row: 0,
            last: None,
        }
    }

    /// Reads the Rollout: `Some` state, or `None` for a missed look (said in
    /// one line); an error when interrupted or after too many misses in a row.
    fn read(
        &mut self,
        cx: &Context,
        kubectl: &Kubectl,
        start: Instant,
        what: &str,
    ) -> Result<Option<RolloutState>> {
        match kubectl.read(cx) {
            Ok(state) => {
                self.in_a_row = 0;
                self.last = None;
                Ok(Some(state))
            }
            Err(error) if interrupt::is_interrupted(&error) => Err(error),
            Err(error) => {
                self.in_a_row += 1;
                let reason = match error.downcast_ref::<CallFailed>() {
                    Some(failed) => failed.said.clone(),
                    None => format!("{error:#}"),
                };
                cx.say(format!(
                    "  {:>5.1}s  missed a look ({} of {MISSES_IN_A_ROW} in a row): {reason}",
                    start.elapsed().as_secs_f64(),
                    self.in_a_row
                ));
                if self.in_a_row >= MISSES_IN_A_ROW {
                    return Err(self.unknown(error, kubectl, what));
                }
                self.last = Some(error);
                Ok(None)
            }
        }
    }

    fn unknown(&self, error: anyhow::Error, kubectl: &Kubectl, what: &str) -> anyhow::Error {
        let message = format!(
            "gave up waiting for {what} on rollout {}: the last {} reads failed, so its state is unknown",
            kubectl.rollout(),
            self.in_a_row
        );
        error.context(StateUnknown { message })
    }
}

/// Polls until `decide` says done (or fails), for at most `timeout`.
/// `what` names what is awaited, for the messages. Not under --dry-run:
/// callers print their plan with [`plan`] instead. A failed read is a
/// missed look (see the module's comment); a wait whose last look failed
/// ends with [`StateUnknown`].
pub fn until<T>(
    cx: &Context,
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut decide: impl FnMut(&RolloutState, &PhaseLine) -> Result<Look<T>>,
) -> Result<T> {
    cx.say(format!(
        "waiting for {what} (at most {}): {}",
        go_duration(timeout),
        cluster.kubectl.line(&cluster.kubectl.rollout_args())
    ));
    let start = Instant::now();
    let deadline = start.checked_add(timeout);
    let mut last: Option<PhaseLine> = None;
    let mut misses = Misses::new();
    loop {
        interrupt::check()?;
        if let Some(state) = misses.read(cx, &cluster.kubectl, start, what)? {
            let line = state.phase()?;
            if last.as_ref() != Some(&line) {
                cx.say(format!("  {:>5.1}s  {line}", start.elapsed().as_secs_f64()));
            }
            if let Look::Done(done) = decide(&state, &line)? {
                return Ok(done);
            }
            last = Some(line);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            let base = format!(
                "rollout {} did not reach {what} within {}",
                cluster.rollout(),
                go_duration(timeout)
            );
            return Err(match misses.last.take() {
                Some(error) => error.context(StateUnknown {
                    message: format!("{base}, and its last read failed, so its state is unknown"),
                }),
                None => anyhow!(
                    "{base}; last read: {}",
                    last.map_or("none".to_owned(), |l| l.to_string())
                ),
            });
        }
        let left = deadline.map_or(interval, |d| d.saturating_duration_since(now));
        timing::waiting(|| interrupt::sleep(interval.min(left)))?;
    }
}

/// The Rollout, read through the weather: a failed read is tried again every
/// `interval`, up to [`MISSES_IN_A_ROW`] times in a row and within `timeout`.
/// For a read that decides what to do next, where one refused connection must
/// not decide it.
pub fn read(
    cx: &Context,
    kubectl: &Kubectl,
    timeout: Duration,
    interval: Duration,
) -> Result<RolloutState> {
    until_quiet(cx, kubectl, "a read of the rollout", timeout, interval)
}

fn until_quiet(
    cx: &Context,
    kubectl: &Kubectl,
    what: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<RolloutState> {
    let start = Instant::now();
    let mut misses = Misses::new();
    loop {
        interrupt::check()?;
        if let Some(state) = misses.read(cx, kubectl, start, what)? {
            return Ok(state);
        }
        if start.elapsed() >= timeout {
            let error = misses.last.take().expect("a missed look");
            return Err(error.context(StateUnknown {
                message: format!(
                    "no read of rollout {} succeeded within {}, so its state is unknown",
                    kubectl.rollout(),
                    go_duration(timeout)
                ),
            }));
        }
        timing::waiting(|| interrupt::sleep(interval))?;
    }
}

/// The Rollout once its controller wrote a status: a new Rollout has none
/// until the first reconcile (right after `kubectl create`), and a task
/// waits for it, at most `timeout`, rather than refuse it.
pub fn reconciled(
    cx: &Context,
    kubectl: &Kubectl,
    timeout: Duration,
    interval: Duration,
) -> Result<RolloutState> {
    let state = kubectl.read(cx)?;
    if state.has_status {
        return Ok(state);
    }
    cx.say(format!(
        "rollout {} has no status yet: its controller has not reconciled it (a new Rollout); waiting \
         for it, at most {}",
        kubectl.rollout(),
        go_duration(timeout)
    ));
    let start = Instant::now();
    loop {
        timing::waiting(|| interrupt::sleep(interval))?;
        let state = read(cx, kubectl, timeout, interval)?;
        if state.has_status {
            return Ok(state);
        }
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "rollout {} still has no status after {}: is the Argo Rollouts controller running, and does \
                 it watch this namespace? (`kubectl get pods -n argo-rollouts`, its logs)",
                kubectl.rollout(),
                go_duration(timeout)
            ));
        }
    }
}

/// The plan line of a wait, under --dry-run.
pub fn plan(cx: &Context, cluster: &Cluster, what: &str, timeout: Duration, interval: Duration) {
    cx.plan(format_args!(
        "# wait until {what}, at most {}, every {}: {}",
        go_duration(timeout),
        go_duration(interval),
        cluster.kubectl.line(&cluster.kubectl.rollout_args())
    ));
}
