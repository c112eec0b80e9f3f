//! WaitArgs on the Rollout: read it (`kubectl get ... -o json`) every poll
//! interval until a decision says done, or fail, or the time is up. Each
//! change of phase is printed, so a person watching sees what the controller does.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::state::{PhaseLine, RolloutState};
use super::{Cluster, go_duration};
use crate::context::Context;
use crate::interrupt;
use crate::timing;

/// What a look at the Rollout decided.
pub enum Look<T> {
    Done(T),
    Wait,
}

/// Polls until `decide` says done (or fails), for at most `timeout`.
/// `what` names what is awaited, for the messages. Not under --dry-run:
/// callers print their plan with [`plan`] instead.
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
    loop {
        interrupt::check()?;
        let state = cluster.read(cx)?;
        let line = state.phase()?;
        if last.as_ref() != Some(&line) {
            cx.say(format!("  {:>5.1}s  {line}", start.elapsed().as_secs_f64()));
        }
        if let Look::Done(done) = decide(&state, &line)? {
            return Ok(done);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            bail!(
                "rollout {} did not reach {what} within {}; last read: {line}",
                cluster.rollout(),
                go_duration(timeout)
            );
        }
        last = Some(line);
        let left = deadline.map_or(interval, |d| d.saturating_duration_since(now));
        timing::waiting(|| interrupt::sleep(interval.min(left)))?;
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
