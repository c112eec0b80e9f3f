//! `cargo xtask abort`: drop the preview; the active version stays.

use std::time::Duration;

use anyhow::{Result, bail};

use super::confirm::confirm;
use super::promote::Expected;
use super::state::{PhaseLine, ReplicaSet, RolloutState};
use super::wait::{self, Look};
use super::{Cluster, RolloutArgs, go_duration, yes};
use crate::cli::{self, ArgMatches, Task, switch};
use crate::context::Context;
use crate::image::ImageRef;
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

/// What `abort` does after a signal once it sends the abort.
const ABORT_GOES_ON: &str = "the abort is sent and goes on until read back; SIGKILL would leave it \
                             unchecked";

const ABOUT: &str = "Drop the preview; the active version stays";

const LONG_ABOUT: &str = "Abort the update in flight: the active Service stays on the pods it serves, so the \
active version is unchanged; the preview pods go after abortScaleDownDelaySeconds. Then reads the \
Rollout until the abort holds: the controller wrote status.abortedAt (or the RolloutAborted \
condition) for the latest template; status.abort alone is only what the plugin asked. An abort \
sent before the controller saw a new template is erased when it does (it resets the status for \
the new template and goes on to the pause), so abort sends it again, up to 3 times, and reports \
what it read. The rollout stays Degraded until it gets a template again: `kubectl argo rollouts \
undo ROLLOUT --to-revision=N` (N: the stable ReplicaSet's revision, which abort prints; a plain \
undo goes to the previous revision, which may be another unchecked preview) or a deploy of the \
stable image with its digest.

Does nothing, sends nothing, and says so, when no update is in flight (the current template is \
the stable one): there is nothing to abort, and an Argo Rollouts controller of v1.6.1 or later \
removes an abort from a fully promoted rollout anyway (older ones mark it Degraded). That includes \
a new Rollout's first revision, which the controller makes stable at once (\"Initial deploy\"), \
even while its pods start. With --only-expected it aborts only a preview of the expected image \
(--expect-image, else this commit's), so an old pipeline's abort never drops a newer one's \
preview. Asks for confirmation when stdin is a terminal (not with --yes), then reads the Rollout \
again and acts only if the update is still the one confirmed.

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl-argo-rollouts abort ROLLOUT ...    (if an update is in flight)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (until it holds, bounded)
  kubectl get replicasets.apps -l rollouts-pod-template-hash=HASH -o json ...    (the stable revision, for the advice)";

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

impl Task for Abort {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("abort", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .arg(switch(
                "only-expected",
                "Abort only if the update in flight is the expected image",
            ))
            .args(Expected::args())
            .arg(yes())
    }

    fn from(matches: &ArgMatches) -> Abort {
        Abort {
            target: RolloutArgs::from(matches),
            only_expected: matches.get_flag("only-expected"),
            expected: Expected::from(matches),
            yes: matches.get_flag("yes"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        let cluster = self.target.cluster()?;
        let expected = match self.only_expected {
            true => Some(self.expected.resolve(cx)?),
            false => None,
        };
        let limit = self.target.request_timeout.saturating_mul(6);
        let state = wait::reconciled(cx, &cluster.kubectl, limit, Duration::from_millis(500))?;
        let Some((preview, line)) = in_flight(cx, &cluster, &state, expected.as_ref())? else {
            return Ok(());
        };
        if !self.yes && !cx.dry_run {
            if !confirm(&format!(
                "abort the update of rollout {} to {preview} (now `{line}`)?",
                cluster.rollout()
            ))? {
                bail!("not aborted: not confirmed");
            }
            // A person may answer minutes later: act on what is there now.
            let now = cluster.read(cx)?;
            let Some((still, _)) = in_flight(cx, &cluster, &now, expected.as_ref())? else {
                return Ok(());
            };
            if now.current_pod_hash != state.current_pod_hash {
                bail!(
                    "not aborted: the update of rollout {} changed while you were asked (it is {still} \
                     now, ReplicaSet {}); run abort again to see and confirm what is there now",
                    cluster.rollout(),
                    now.current_pod_hash
                );
            }
        }
        // From here the abort is sent: a later signal is reported, and never
        // kills its calls or skips its read-back (bounded by their own deadline).
        let _protected = interrupt::protect_for(ABORT_GOES_ON);
        interrupt::check()?;
        let _ignoring = interrupt::ignore("the abort", bound(&cluster));
        let settled = abort(cx, &cluster)?;
        cx.say(settled);
        Ok(())
    }
}

/// The update in flight (its image, and the phase), or `None` after saying
/// there is nothing to abort; an error when --only-expected leaves it alone.
fn in_flight(
    cx: &Context,
    cluster: &Cluster,
    state: &RolloutState,
    expected: Option<&ImageRef>,
) -> Result<Option<(String, PhaseLine)>> {
    let line = state.phase()?;
    if nothing_in_flight(state) {
        cx.say(nothing_to_abort(cluster, state, &line));
        return Ok(None);
    }
    let preview = state
        .image(&cluster.target().container)
        .unwrap_or_default()
        .to_owned();
    if let Some(expected) = expected
        && !expected.is(&preview)
    {
        bail!(
            "not aborting rollout {}: the update in flight is {preview}, not the expected {expected}; \
             it is someone else's (see `cargo xtask status`), and --only-expected leaves it alone",
            cluster.rollout()
        );
    }
    Ok(Some((preview, line)))
}

/// The current template is the stable one (`IsFullyPromoted`), whatever the
/// phase: a promoted rollout, or a new Rollout's first revision, which the
/// controller makes stable in its first reconcile (rollout/sync.go
/// shouldFullPromote, "Initial deploy") while its pods still start. An abort
/// there is dropped by the controller (v1.6.1+), so nothing is sent.
fn nothing_in_flight(state: &RolloutState) -> bool {
    state.observed() && state.fully_promoted()
}

fn nothing_to_abort(cluster: &Cluster, state: &RolloutState, line: &PhaseLine) -> String {
    let why = if state.active_selector.is_empty() {
        "its current template is already the stable one: a new Rollout's first revision is made stable \
         at once (the controller's \"Initial deploy\"), so there is no preview and no earlier version \
         to return to"
    } else {
        "its current template is the stable one, which the active Service serves"
    };
    format!(
        "nothing to abort: rollout {} is {line}, and {why}; no update is in flight, so no abort was sent",
        cluster.rollout()
    )
}

/// `abort`, then read the Rollout until the abort holds (sending it again
/// when the controller erased it), within 6 request timeouts. Returns what
/// was read, for the person. Under --dry-run, the plan. Both callers hold
/// [`interrupt::ignore`] for [`bound`]: no signal cuts a call or the read-back.
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
                if state.abort_holds() {
                    return Ok(Look::Done(Some(Settled::Held(Box::new((
                        state.clone(),
                        line.clone(),
                    ))))));
                }
                if nothing_in_flight(state) {
                    return Ok(Look::Done(Some(Settled::Nothing(format!(
                        "rollout {rollout} is {line} with no update in flight (read back): nothing is left to abort"
                    )))));
                }
                if !state.abort {
                    // Erased: the controller saw a new template after our abort.
                    return Ok(Look::Done(None));
                }
                Ok(Look::Wait)
            },
        );
        match outcome {
            Ok(Some(Settled::Nothing(said))) => return Ok(said),
            Ok(Some(Settled::Held(read))) => return Ok(held(cx, cluster, &read.0, &read.1)),
            Ok(None) => cx.say(format!(
                "the controller erased the abort (it saw a new template after it); aborting again \
                 ({attempt} of {ABORT_ATTEMPTS} sent)"
            )),
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

/// How an abort ended, read back.
enum Settled {
    /// The controller acted on it: the state it read then.
    Held(Box<(RolloutState, PhaseLine)>),
    /// Nothing was left in flight.
    Nothing(String),
}

/// What the held abort means, and the ways back to Healthy: `undo` to the
/// stable ReplicaSet's revision (a plain undo goes to the previous revision,
/// which after a --replace is another unchecked preview), or a deploy of its
/// exact image, digest and all.
fn held(cx: &Context, cluster: &Cluster, state: &RolloutState, line: &PhaseLine) -> String {
    let rollout = cluster.rollout();
    let stable = cluster.kubectl.replica_set(cx, &state.stable_rs);
    let container = &cluster.target().container;
    let ways = match &stable {
        Ok(Some(rs)) => {
            let undo = rs.revision.map(|n| {
                format!(
                    "`{}` returns to it",
                    cluster
                        .plugin
                        .line(&["undo", rollout, &format!("--to-revision={n}")])
                )
            });
            let image = rs.image(container).map(|image| match deploy_flags(image) {
                Some(flags) => {
                    format!("deploy its exact image, {image} (`cargo xtask deploy {flags}`)")
                }
                None => format!("deploy its exact image, {image}"),
            });
            [undo, image]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", or ")
        }
        Ok(None) => String::new(),
        Err(error) => {
            cx.say(format!(
                "could not read the stable ReplicaSet for the advice: {error:#}"
            ));
            String::new()
        }
    };
    let revision = match &stable {
        Ok(Some(ReplicaSet {
            revision: Some(n), ..
        })) => format!(", revision {n}"),
        _ => String::new(),
    };
    format!(
        "aborted rollout {rollout}, read back: {line} (abortedAt {}); the active Service still selects \
         ReplicaSet {}, so the active version is unchanged. The rollout stays Degraded until it gets a \
         template again: the stable one is ReplicaSet {}{revision}{}",
        if state.aborted_at.is_empty() {
            "not written"
        } else {
            &state.aborted_at
        },
        display_hash(&state.active_selector),
        display_hash(&state.stable_rs),
        match ways.as_str() {
            "" => format!(
                "; `kubectl argo rollouts undo {rollout} --to-revision=N` returns to it (N: its \
                 rollout.argoproj.io/revision annotation)"
            ),
            ways => format!("; {ways}"),
        }
    )
}

/// `--image R --tag T [--digest D]` for an image as a pod template names it.
fn deploy_flags(image: &str) -> Option<String> {
    match ImageRef::parse(image) {
        Ok(image) => {
            let mut flags = format!("--image {} --tag {}", image.repository, image.tag);
            if let Some(digest) = &image.digest {
                flags.push_str(&format!(" --digest {digest}"));
            }
            Some(flags)
        }
        Err(_) => None,
    }
}
