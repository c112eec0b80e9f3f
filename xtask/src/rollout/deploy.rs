//! `cargo xtask deploy`: the new image onto the Rollout, where it becomes the preview.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::state::{BLUE_GREEN_PAUSE, Phase, RolloutState};
use super::wait::{self, Look};
use super::{Cluster, RolloutArgs, duration};
use crate::cli::{self, Arg, ArgMatches, Task, switch};
use crate::context::Context;
use crate::image::{ImageArgs, ImageRef};
use crate::interrupt;

const ABOUT: &str = "Set the new image on the Rollout: it goes to the preview pods";

const LONG_ABOUT: &str = "Set the new image on the Rollout: Argo Rollouts starts preview pods with it and points \
the preview Service at them; the active Service, and so all traffic, stays on the current pods.

The image is IMAGE:TAG[@DIGEST], resolved as `package` resolves it: --image, else $API_IMAGE, else \
$CI_REGISTRY_IMAGE, else `api`; --tag, else $API_IMAGE_TAG, else $CI_COMMIT_SHA, else the full SHA \
of HEAD (a dirty work tree is refused unless --allow-dirty); --digest, else $API_IMAGE_DIGEST (what \
`package --push` reports): with a digest the cluster runs exactly the image that was built, whatever \
the tag points to later.

Refuses when another image's update is in flight (a preview someone may be checking, paused or \
still starting), naming it, unless --replace. Refuses, before any change, what the controller would \
not do as asked: the image whose update was just aborted (an unchanged template makes no new \
generation, so the abort stays; the error names the ways out), and an image whose old ReplicaSet \
still has its pods (within scaleDownDelaySeconds after it left the active Service, or \
abortScaleDownDelaySeconds after an abort): the controller fast-tracks such a template \
(isBlueGreenFastTracked), switching traffic to it at once with no preview, pause or promote. That \
fast rollback runs only with --fast-rollback. A Rollout with no status yet (right after `kubectl \
create`) is waited for. With --wait it then reads the Rollout until its \
preview is ready (`Paused - BlueGreenPause` on this image's ReplicaSet), printing each change on \
stderr, for at most --timeout; Degraded ends it with an error. A new Rollout, whose active Service \
never had pods, does not pause: its first image goes straight to active, and the wait ends at \
Healthy. If the plugin fails, the Rollout is read back to say whether the image was set.

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get replicasets.apps -l SELECTOR -o json ...    (a new image: is its old ReplicaSet still up?)
  kubectl-argo-rollouts set image ROLLOUT CONTAINER=IMAGE:TAG[@DIGEST] ...
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (with --wait, every --poll-interval)
Prints the image reference on stdout (under --dry-run, last: `# result: IMAGE`).";

const AFTER_LONG_HELP: &str = "Environment:
  API_IMAGE, CI_REGISTRY_IMAGE        the image repository (in that order)
  API_IMAGE_TAG, CI_COMMIT_SHA        the tag (in that order)
  API_IMAGE_DIGEST                    the digest (sha256:...)
  API_ROLLOUT, API_CONTAINER          the Rollout and its container [default: api, api]
  API_NAMESPACE, KUBE_NAMESPACE       the namespace (in that order)
  API_KUBE_CONTEXT                    the kubeconfig context
  API_KUBE_REQUEST_TIMEOUT            --request-timeout

Examples:
  cargo xtask deploy --wait -n staging
  cargo xtask deploy --image registry.example.com/team/api --tag 3f2c1d0... --wait --timeout 10m
  cargo xtask --dry-run deploy";

/// `cargo xtask deploy`.
#[derive(Debug)]
pub struct Deploy {
    pub target: RolloutArgs,
    pub image: ImageArgs,
    pub wait: bool,
    pub replace: bool,
    pub fast_rollback: bool,
    pub waiting: WaitArgs,
}

impl Task for Deploy {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("deploy", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .args(ImageArgs::args())
            .arg(switch(
                "wait",
                "Wait until the preview is ready (`Paused - BlueGreenPause`)",
            ))
            .arg(switch("replace", REPLACE_HELP))
            .arg(switch("fast-rollback", FAST_ROLLBACK_HELP))
            .args(WaitArgs::args())
    }

    fn from(matches: &ArgMatches) -> Deploy {
        Deploy {
            target: RolloutArgs::from(matches),
            image: ImageArgs::from(matches),
            wait: matches.get_flag("wait"),
            replace: matches.get_flag("replace"),
            fast_rollback: matches.get_flag("fast-rollback"),
            waiting: WaitArgs::from(matches),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        let cluster = self.target.cluster()?;
        let image = self.image.resolve(cx)?;
        let before = first_read(cx, &cluster, &self.waiting)?;
        refuse_foreign_update(&cluster, &before, &image, self.replace)?;
        refuse_what_the_controller_skips(cx, &cluster, &before, &image, self.fast_rollback)?;
        set_image(cx, &cluster, &image)?;
        if self.wait {
            match wait_for_preview(cx, &cluster, &image, &self.waiting)? {
                Some(Arrival::PreviewReady) => cx.say(format!(
                    "the preview is ready on {image}; check it with `cargo xtask sanity`, then `cargo xtask promote`"
                )),
                Some(Arrival::WentActive) => cx.say(WENT_ACTIVE),
                None => {}
            }
        }
        cx.change_result(&image);
        Ok(())
    }
}

/// `--fast-rollback`'s help, in `deploy` and `release`.
pub const FAST_ROLLBACK_HELP: &str = "Allow a fast rollback: an image whose old ReplicaSet still has its pods \
     goes straight to active (traffic switches at once, no preview, no promote)";

/// `--replace`'s help, in `deploy` and `release`.
pub const REPLACE_HELP: &str = "Replace another image's update in flight (its preview is dropped)";

/// How long to wait for the preview, and how often to look.
#[derive(Debug, Clone)]
pub struct WaitArgs {
    pub timeout: Duration,
    pub poll_interval: Duration,
}

impl WaitArgs {
    pub fn args() -> [Arg; 2] {
        [
            duration(
                "timeout",
                "300s",
                "The longest wait for the preview (in release, also for Healthy after promote), such as 5m",
            ),
            duration(
                "poll-interval",
                "2s",
                "How often to read the Rollout while waiting",
            ),
        ]
    }

    pub fn from(matches: &ArgMatches) -> WaitArgs {
        WaitArgs {
            timeout: cli::value(matches, "timeout"),
            poll_interval: cli::value(matches, "poll-interval"),
        }
    }
}

/// How the wait for the preview ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// `Paused - BlueGreenPause`: the preview is ready and waits for `promote`.
    PreviewReady,
    /// `Healthy` with no pause: a new Rollout's first image (nothing to switch
    /// from), or an image that was active already. It serves on the active Service.
    WentActive,
}

pub const WENT_ACTIVE: &str = "the rollout went straight to Healthy without a pause: this was the first \
     image of a new Rollout (its active Service had no pods to switch from), a fast rollback (its old \
     ReplicaSet still had its pods), or the image was active already; it serves on the active Service";

/// Refuses to drop someone else's update in flight (a preview being checked,
/// or one still starting) unless `replace`. An aborted or failed update is
/// nobody's work in progress, and our own image is no one else's.
pub fn refuse_foreign_update(
    cluster: &Cluster,
    state: &RolloutState,
    image: &ImageRef,
    replace: bool,
) -> Result<()> {
    let container = &cluster.target().container;
    let Some(current) = state.image(container) else {
        bail!(
            "rollout {} has no container {container:?} in its pod template; give the right one with --container",
            cluster.rollout()
        );
    };
    let line = state.phase()?;
    // A new Rollout's active Service never selected pods: nobody's release to keep.
    let in_flight = !state.fully_promoted()
        && !state.active_selector.is_empty()
        && !state.abort
        && matches!(line.phase, Phase::Paused | Phase::Progressing);
    if in_flight && !image.is(current) && !replace {
        bail!(
            "refusing to deploy {image}: rollout {} has an update of another image in flight, {current} \
             ({line}), which someone may be checking; promote or abort it first (`cargo xtask status` \
             shows it), or pass --replace to drop that preview and deploy this image in its place",
            cluster.rollout()
        );
    }
    Ok(())
}

/// The Rollout before any change, once its controller wrote a status (a new
/// Rollout has none before its first reconcile), within the wait's timeout.
pub fn first_read(cx: &Context, cluster: &Cluster, waiting: &WaitArgs) -> Result<RolloutState> {
    wait::reconciled(cx, &cluster.kubectl, waiting.timeout, waiting.poll_interval)
}

/// Refuses, before any change, what the controller would not do as asked:
/// the image whose update was aborted (an unchanged template makes no new
/// generation, so the abort stays), and, unless `fast_rollback`, an image
/// whose old ReplicaSet still has its pods, which the controller would
/// fast-track to active (rollout/bluegreen.go isBlueGreenFastTracked:
/// HasScaleDownDeadline of the new ReplicaSet).
pub fn refuse_what_the_controller_skips(
    cx: &Context,
    cluster: &Cluster,
    state: &RolloutState,
    image: &ImageRef,
    fast_rollback: bool,
) -> Result<()> {
    let rollout = cluster.rollout();
    let container = &cluster.target().container;
    let current = state.image(container).unwrap_or_default();
    if image.is(current) {
        if state.abort && state.observed() {
            bail!(aborted_image(cx, cluster, state, image));
        }
        return Ok(());
    }
    if state.active_selector.is_empty() {
        return Ok(()); // a new Rollout: nothing to switch from, nothing kept
    }
    let kept = cluster
        .kubectl
        .replica_sets(cx, state)
        .context("before deploying, read whether the image's old ReplicaSet still has its pods")?
        .into_iter()
        .find(|rs| {
            rs.pod_hash != state.active_selector
                && !rs.scale_down_deadline.is_empty()
                && rs.image(container).is_some_and(|i| image.is(i))
        });
    let Some(rs) = kept else {
        return Ok(());
    };
    let revision = rs
        .revision
        .map_or(String::new(), |n| format!(", revision {n}"));
    if !fast_rollback {
        bail!(
            "refusing to deploy {image}: it is the template of ReplicaSet {}{revision}, which still has its \
             pods until {} (its scale-down deadline: scaleDownDelaySeconds after it left the active \
             Service, or abortScaleDownDelaySeconds after an abort). The controller would fast-track it \
             (isBlueGreenFastTracked): a fast rollback, where traffic switches to it at once, with no \
             preview, no pause, no sanity check and no promote. Pass --fast-rollback to do that on \
             purpose (the active Service is then checked, as on a first revision), or deploy it after \
             that deadline, when it goes to the preview like any other image",
            rs.pod_hash,
            rs.scale_down_deadline
        );
    }
    cx.say(format!(
        "a fast rollback of rollout {rollout} to {image} (ReplicaSet {}{revision}, still up until {}): \
         the controller switches traffic to it at once, with no preview and no promote",
        rs.pod_hash, rs.scale_down_deadline
    ));
    Ok(())
}

/// Why the aborted image is refused, and the ways out.
fn aborted_image(
    cx: &Context,
    cluster: &Cluster,
    state: &RolloutState,
    image: &ImageRef,
) -> String {
    let rollout = cluster.rollout();
    let plugin = |args: &[&str]| cluster.plugin.line(args);
    let stable = cluster
        .kubectl
        .replica_set(cx, &state.stable_rs)
        .ok()
        .flatten();
    let undo = match stable.as_ref().and_then(|rs| rs.revision) {
        Some(n) => format!(
            "`{}` goes back to the stable template (revision {n}, what the active Service serves) and \
             ends the Degraded state",
            plugin(&["undo", rollout, &format!("--to-revision={n}")])
        ),
        None => format!(
            "`kubectl argo rollouts undo {rollout} --to-revision=N` (N: the revision of the stable \
             ReplicaSet {}) goes back to the stable template and ends the Degraded state",
            state.stable_rs
        ),
    };
    format!(
        "refusing to deploy {image}: rollout {rollout} aborted the update to this same image ({}{}), and \
         setting it again changes nothing: an unchanged template makes no new generation, so the abort \
         stays and so does the Degraded state, and a wait would blame the pods. Ways out: deploy \
         another image (a new commit), which goes to the preview as usual; {undo}; or `{}` runs this \
         image's update again, but within abortScaleDownDelaySeconds (30s by default) of the abort its \
         ReplicaSet still has its pods and a scale-down deadline, so the controller fast-tracks it \
         (isBlueGreenFastTracked): traffic would switch to it at once, with no pause, no sanity check \
         and no promote. Retry only after that delay, then check it with `cargo xtask deploy --wait` \
         and `cargo xtask sanity`",
        state
            .aborted_condition
            .as_deref()
            .unwrap_or("status.abort is set"),
        match state.aborted_at.as_str() {
            "" => String::new(),
            at => format!(", at {at}"),
        },
        plugin(&["retry", "rollout", rollout])
    )
}

/// `set image`; if the plugin fails, the Rollout is read back to say whether the image was set.
pub fn set_image(cx: &Context, cluster: &Cluster, image: &ImageRef) -> Result<()> {
    let mut result = cluster.plugin.set_image(cx, image);
    // The plugin reads, then updates with that resourceVersion (set/set_image.go SetImage):
    // a write in between makes the update a conflict, which a second try resolves.
    if result
        .as_ref()
        .is_err_and(|e| format!("{e:#}").contains("the object has been modified"))
    {
        cx.say(
            "the rollout changed between the plugin's read and its write; setting the image again",
        );
        result = cluster.plugin.set_image(cx, image);
    }
    let Err(error) = result else {
        return Ok(());
    };
    let interrupted = interrupt::is_interrupted(&error);
    let read = {
        // Killed halfway: whether the write landed is unknown until read, so
        // the read has its own deadline and the signal does not stop it.
        let _ignoring = interrupted.then(|| {
            cx.say("interrupted while setting the image; reading the rollout back");
            interrupt::ignore(
                "the read-back of the image",
                cluster.target().request_timeout.saturating_mul(3),
            )
        });
        cluster.read(cx)
    };
    let container = &cluster.target().container;
    match read {
        Ok(state) if state.image(container).is_some_and(|i| image.is(i)) && interrupted => {
            Err(error.context(format!(
                "the rollout's template is {image} now (read back)"
            )))
        }
        Ok(state) if state.image(container).is_some_and(|i| image.is(i)) => {
            cx.say(format!(
                "the plugin failed ({error:#}), but the rollout's template is {image} now (read back): going on"
            ));
            Ok(())
        }
        Ok(state) => Err(error.context(NotSet(format!(
            "the rollout was not changed: read back, its template is still {}",
            state.image(container).unwrap_or("(no such container)")
        )))),
        Err(read) => Err(error.context(format!(
            "and reading the rollout back failed too ({read:#}), so whether the image was set is unknown: \
             see `cargo xtask status`"
        ))),
    }
}

/// The pause reason of an inconclusive analysis (pkg/apis/rollouts/v1alpha1/types.go
/// PauseReasonInconclusiveAnalysis).
const INCONCLUSIVE_ANALYSIS: &str = "InconclusiveAnalysisRun";

/// Paused for a person after an inconclusive pre-promotion analysis (rollout/analysis.go
/// setPauseOrAbortForBlueGreen): by its pause reason, or by the run's phase.
pub fn inconclusive_pause(state: &RolloutState) -> bool {
    state
        .pause_reasons
        .iter()
        .any(|r| r == INCONCLUSIVE_ANALYSIS)
        || state.analysis.as_ref().is_some_and(|a| a.inconclusive())
}

/// The error of a `set image` that did not land (read back): nothing to undo.
#[derive(Debug)]
pub struct NotSet(String);

impl std::fmt::Display for NotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the Rollout until the preview of `image` is ready, Healthy, Degraded
/// or the timeout. `None` under --dry-run, where nothing was deployed to wait for.
pub fn wait_for_preview(
    cx: &Context,
    cluster: &Cluster,
    image: &ImageRef,
    waiting: &WaitArgs,
) -> Result<Option<Arrival>> {
    let what = "the preview is ready (`Paused - BlueGreenPause`, or Healthy)";
    if cx.dry_run {
        wait::plan(cx, cluster, what, waiting.timeout, waiting.poll_interval);
        return Ok(None);
    }
    let container = cluster.target().container.clone();
    let rollout = cluster.rollout().to_owned();
    let arrival = wait::until(
        cx,
        cluster,
        "a ready preview",
        waiting.timeout,
        waiting.poll_interval,
        |state, line| {
            let current = state.image(&container).unwrap_or_default();
            if !image.is(current) {
                bail!(
                    "rollout {rollout} was given another image while we waited: its template is now {current}, \
                     not {image}; see `cargo xtask status`"
                );
            }
            if !state.observed() {
                return Ok(Look::Wait);
            }
            if state.at_blue_green_pause() {
                return Ok(Look::Done(Arrival::PreviewReady));
            }
            match line.phase {
                Phase::Healthy if state.fully_promoted() => Ok(Look::Done(Arrival::WentActive)),
                Phase::Degraded => bail!(
                    "rollout {rollout} is {line}: the new pods did not become a usable preview"
                ),
                Phase::Paused if inconclusive_pause(state) => bail!(
                    "rollout {rollout} is {line}: the preview's in-cluster check {} was inconclusive, \
                     and the controller paused for a person to decide: `kubectl argo rollouts promote \
                     {rollout}` resumes it and the controller runs the check again (it pauses for \
                     promotion once the check passes), `cargo xtask abort` drops the preview; \
                     `cargo xtask status` shows the measurement",
                    state.analysis.as_ref().map_or_else(
                        || "(its AnalysisRun not named in the Rollout's status)".to_owned(),
                        // One line: a measurement's message may end in a line break.
                        |a| format!("{} ({})", a.name, a.summary().trim().replace('\n', " "))
                    )
                ),
                Phase::Paused if !state.pause_reasons.iter().any(|r| r == BLUE_GREEN_PAUSE) => bail!(
                    "rollout {rollout} is {line}, not at the blue/green pause: someone paused it by hand; \
                     `kubectl argo rollouts promote {rollout}` resumes it"
                ),
                _ => Ok(Look::Wait),
            }
        },
    )
    .with_context(|| format!("wait for the preview of {image}"))?;
    Ok(Some(arrival))
}
