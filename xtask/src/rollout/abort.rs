//! `cargo xtask abort`: drop the preview; the active version stays.

use std::time::Duration;

use anyhow::{Result, bail};

use super::confirm::confirm;
use super::promote::Expected;
use super::state::{Phase, PhaseLine, RolloutState};
use super::wait::{self, Look};
use super::{Cluster, RolloutArgs, go_duration, yes};
use crate::cli::{ArgMatches, Command, switch};
use crate::context::Context;
use crate::interrupt;

/// How many times an abort is sent when the controller erases it.
const ABORT_ATTEMPTS: u32 = 3;

/// The longest an [`abort`] takes: each attempt is a plugin call (stopped
/// after 3 request timeouts), then reads for 6, the last of which may take 3.
pub fn bound(cluster: &Cluster) -> Duration {
    cluster
        .target()
        .request_timeout
        .saturating_mul(12 * ABORT_ATTEMPTS)
}

const ABOUT: &str = "Drop the preview; the active version stays";

const LONG_ABOUT: &str = "Abort the update in flight: the active Service stays on the pods it serves, so the \
active version is unchanged; the preview pods go after abortScaleDownDelaySeconds. Then reads the \
Rollout until the abort holds: `Degraded - RolloutAborted: ...` with the controller having seen the \
latest template. An abort sent before the controller saw a new template is erased when it does \
(it resets the status for the new template and goes on to the pause), so abort sends it again, up \
to 3 times, and reports what it read. The rollout stays Degraded until it gets a template again: \
`kubectl argo rollouts undo ROLLOUT` (back to the stable template) or a deploy of the stable image.

Does nothing, and says so, when no update is in flight (Healthy, stable = current): there is \
nothing to abort, and an Argo Rollouts controller of v1.7 or later removes an abort from a fully \
promoted rollout anyway (older ones mark it Degraded). With --only-expected it aborts only a preview \
of the expected image (--expect-image, else this commit's), so an old pipeline's abort never drops a \
newer one's preview. Asks for confirmation when stdin is a terminal (not with --yes).

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl-argo-rollouts abort ROLLOUT ...    (if an update is in flight)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (until it holds, bounded)";

const AFTER_LONG_HELP: &str = "Environment:
  API_EXPECT_IMAGE and the image variables of deploy: the expected image, with --only-expected
  API_ROLLOUT, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask abort -n staging
  cargo xtask abort --yes --only-expected";

#[derive(Debug)]
pub struct Abort {
    pub target: RolloutArgs,
    pub only_expected: bool,
    pub expected: Expected,
    /// Do not ask at a terminal.
    pub yes: bool,
}

impl Abort {
    pub fn command() -> Command {
        Command::new("abort")
            .about(ABOUT)
            .long_about(LONG_ABOUT)
            .after_long_help(AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .arg(switch(
                "only-expected",
                "Abort only if the update in flight is the expected image",
            ))
            .args(Expected::args())
            .arg(yes())
    }

    pub fn from(matches: &ArgMatches) -> Abort {
        Abort {
            target: RolloutArgs::from(matches),
            only_expected: matches.get_flag("only-expected"),
            expected: Expected::from(matches),
            yes: matches.get_flag("yes"),
        }
    }

    pub fn run(self, cx: &Context) -> Result<()> {
        let cluster = self.target.cluster()?;
        let expected = match self.only_expected {
            true => Some(self.expected.resolve(cx)?),
            false => None,
        };
        interrupt::install();
        let state = cluster.read(cx)?;
        let line = state.phase()?;
        if nothing_in_flight(&state, &line) {
            cx.say(format!(
                "nothing to abort: rollout {} is {line}, with no update in flight",
                cluster.rollout()
            ));
            return Ok(());
        }
        let preview = state.image(&cluster.target().container).unwrap_or_default();
        if let Some(expected) = &expected
            && !expected.is(preview)
        {
            bail!(
                "not aborting rollout {}: the update in flight is {preview}, not the expected {expected}; \
                 it is someone else's (see `cargo xtask status`), and --only-expected leaves it alone",
                cluster.rollout()
            );
        }
        if !self.yes
            && !cx.dry_run
            && !confirm(&format!(
                "abort the update of rollout {} to {preview} (now `{line}`)?",
                cluster.rollout()
            ))?
        {
            bail!("not aborted: not confirmed");
        }
        let settled = abort(cx, &cluster)?;
        cx.say(settled);
        Ok(())
    }
}

fn nothing_in_flight(state: &RolloutState, line: &PhaseLine) -> bool {
    state.observed() && state.fully_promoted() && line.phase == Phase::Healthy
}

/// `abort`, then read the Rollout until the abort holds (sending it again
/// when the controller erased it), within 6 request timeouts. Returns what
/// was read, for the person. Under --dry-run, the plan.
pub fn abort(cx: &Context, cluster: &Cluster) -> Result<String> {
    let limit = cluster.target().request_timeout.saturating_mul(6);
    let interval = Duration::from_millis(500);
    let what = "the abort holds (Degraded - RolloutAborted, the latest template seen), or Healthy";
    if cx.dry_run {
        cluster.plugin.abort(cx)?;
        wait::plan(cx, cluster, what, limit, interval);
        return Ok(String::new());
    }
    let rollout = cluster.rollout().to_owned();
    let undo = cluster.plugin.line(&["undo", &rollout]);
    let mut last_error = None;
    for attempt in 1..=ABORT_ATTEMPTS {
        if let Err(error) = cluster.plugin.abort(cx) {
            // The patch may have landed before the failure: what is read decides.
            cx.say(format!(
                "the abort call failed ({error:#}); reading the rollout back"
            ));
            last_error = Some(error);
        }
        let outcome = wait::until(
            cx,
            cluster,
            "the abort holds",
            limit,
            interval,
            |state, line| {
                if !state.observed() {
                    return Ok(Look::Wait);
                }
                if state.abort && line.phase == Phase::Degraded {
                    return Ok(Look::Done(Some(format!(
                        "aborted rollout {rollout}, read back: {line}; the active Service still selects \
                     ReplicaSet {}, so the active version is unchanged. The rollout stays Degraded until it \
                     gets a template again: `{undo}` returns to the stable one, or deploy the stable image \
                     (`cargo xtask deploy --tag <stable tag>`)",
                        display_hash(&state.active_selector)
                    ))));
                }
                if nothing_in_flight(state, line) {
                    return Ok(Look::Done(Some(format!(
                        "rollout {rollout} is {line} with no update in flight (read back): nothing is left to abort"
                    ))));
                }
                if !state.abort {
                    // Erased: the controller saw a new template after our abort.
                    return Ok(Look::Done(None));
                }
                Ok(Look::Wait)
            },
        );
        match outcome {
            Ok(Some(settled)) => return Ok(settled),
            Ok(None) => cx.say(format!(
                "the controller erased the abort (it saw a new template after it); aborting again \
                 ({attempt} of {ABORT_ATTEMPTS} sent)"
            )),
            Err(error) if interrupt::is_interrupted(&error) => {
                // A signal now must not leave the abort unsent or unchecked: say what is known.
                return Err(error.context(format!(
                    "interrupted while checking the abort of rollout {rollout}; check it with `cargo xtask status`"
                )));
            }
            Err(error) => {
                return Err(match last_error {
                    Some(call) => error.context(format!("the abort call failed too: {call:#}")),
                    None => error,
                });
            }
        }
    }
    bail!(
        "rollout {rollout}: the controller erased the abort {ABORT_ATTEMPTS} times within {}; \
         abort it by hand and check: {}",
        go_duration(limit),
        cluster.plugin.line(&["abort", &rollout])
    )
}

fn display_hash(hash: &str) -> &str {
    if hash.is_empty() { "(none)" } else { hash }
}
