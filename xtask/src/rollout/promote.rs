//! `cargo xtask promote`: switch traffic to the preview, if it is the image we expect.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::analysis::Analysis;
use super::confirm::confirm;
use super::state::{Phase, RolloutState};
use super::wait::{self, Look};
use super::{Cluster, RolloutArgs, duration, yes};
use crate::cli::{self, Arg, ArgMatches, Task, option};
use crate::context::Context;
use crate::image::{ImageArgs, ImageRef};
use crate::interrupt;

/// What `promote` does after a signal once the promotion may be sent.
const PROMOTE_GOES_ON: &str =
    "promote stops and says what it sent; SIGKILL would end it without a word";

const ABOUT: &str =
    "Switch traffic to the preview if it is the expected image, then wait until Healthy";

const LONG_ABOUT: &str = "Switch traffic to the preview: Argo Rollouts points the active Service at the preview \
pods in one step, then keeps the old pods for scaleDownDelaySeconds. Waits until the rollout is \
Healthy on that ReplicaSet, and says what the active Service serves then, as read back.

While the preview's in-cluster check (the pre-promotion analysis of rollout.yaml) runs, the \
controller holds the pause back: promote waits for it (at most --timeout). It refuses after a \
failed or inconclusive check, saying which. Refuses unless the preview is ready (`Paused - \
BlueGreenPause`: the plugin's promote would otherwise change nothing and say it promoted) AND runs \
the expected image: --expect-image, else the image this \
commit builds, resolved as `deploy` resolves it (with $API_IMAGE_DIGEST, the digest must match too). \
So an older pipeline's promote never ships a newer preview, nor one that failed its checks. Asks for \
confirmation when stdin is a terminal (not with --yes); never prompts otherwise, so CI never hangs.

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (while the in-cluster check runs)
  kubectl-argo-rollouts promote ROLLOUT ...    (if the preview is ready and expected)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (every --poll-interval, until Healthy)";

const AFTER_LONG_HELP: &str = "Environment:
  API_EXPECT_IMAGE                    --expect-image
  API_IMAGE, CI_REGISTRY_IMAGE, API_IMAGE_TAG, CI_COMMIT_SHA, API_IMAGE_DIGEST
                                      the image this commit builds, as for deploy
  API_ROLLOUT, API_CONTAINER, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask promote -n staging
  cargo xtask promote --yes --timeout 10m
  cargo xtask promote --expect-image registry.example.com/team/api:3f2c1d0...";

#[derive(Debug)]
pub struct Promote {
    pub target: RolloutArgs,
    pub expected: Expected,
    /// The longest wait for Healthy after promoting.
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// Do not ask at a terminal.
    pub yes: bool,
}

/// Which image the preview must be.
#[derive(Debug, Clone)]
pub struct Expected {
    /// IMAGE:TAG[@DIGEST], instead of the image this commit builds.
    pub expect_image: Option<String>,
    pub image: ImageArgs,
}

impl Expected {
    pub fn args() -> impl IntoIterator<Item = Arg> {
        let expect_image = option(
            "expect-image",
            "REFERENCE",
            "The image the preview must run, IMAGE:TAG[@DIGEST] [default: the image this commit builds]",
        )
        .env("API_EXPECT_IMAGE");
        std::iter::once(expect_image).chain(ImageArgs::args())
    }

    pub fn from(matches: &ArgMatches) -> Expected {
        Expected {
            expect_image: cli::optional(matches, "expect-image"),
            image: ImageArgs::from(matches),
        }
    }

    pub fn resolve(&self, cx: &Context) -> Result<ImageRef> {
        match self.expect_image.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => ImageRef::parse(text).context("--expect-image"),
            None => self.image.resolve(cx),
        }
    }
}

impl Task for Promote {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("promote", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .args(Expected::args())
            .arg(duration(
                "timeout",
                "300s",
                "The longest wait for the in-cluster check to end, and for Healthy after promoting, such as 300s or 5m",
            ))
            .arg(duration(
                "poll-interval",
                "2s",
                "How often to read the Rollout while waiting",
            ))
            .arg(yes())
    }

    fn from(matches: &ArgMatches) -> Promote {
        Promote {
            target: RolloutArgs::from(matches),
            expected: Expected::from(matches),
            timeout: cli::value(matches, "timeout"),
            poll_interval: cli::value(matches, "poll-interval"),
            yes: matches.get_flag("yes"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        let cluster = self.target.cluster()?;
        let expected = self.expected.resolve(cx)?;
        let limit = self.target.request_timeout.saturating_mul(6);
        let state = wait::reconciled(cx, &cluster.kubectl, limit, self.poll_interval)?;
        let mut state = wait_for_analysis(cx, &cluster, state, self.timeout, self.poll_interval)?;
        check_promotable(&cluster, &state, &expected)?;
        if !self.yes && !cx.dry_run {
            if !confirm(&format!(
                "switch all traffic of rollout {} to the preview {expected}?",
                cluster.rollout()
            ))? {
                bail!("not promoted: not confirmed");
            }
            // A person may answer minutes later: what is promoted is what is there now.
            let now = cluster.read(cx)?;
            check_promotable(&cluster, &now, &expected)
                .context("not promoted: the rollout changed while you were asked")?;
            if now.current_pod_hash != state.current_pod_hash {
                bail!(
                    "not promoted: the preview of rollout {} changed while you were asked (ReplicaSet {} is \
                     now {}); run promote again to see and confirm what is there now",
                    cluster.rollout(),
                    state.current_pod_hash,
                    now.current_pod_hash
                );
            }
            state = now;
        }
        // From here the promotion may be sent: a signal ends the wait, and the
        // error says so; a later one is reported, never ends it unsaid.
        let _protected = interrupt::protect_for(PROMOTE_GOES_ON);
        interrupt::check()?;
        promote_and_wait(
            cx,
            &cluster,
            &state.current_pod_hash,
            &expected,
            self.timeout,
            self.poll_interval,
        )
        .map_err(|error| {
            match interrupt::is_interrupted(&error)
                && error.downcast_ref::<PromotionUnknown>().is_none()
            {
                true => promotion_unknown(&cluster, "may have been sent", error),
                false => error,
            }
        })
    }
}

/// While the preview's in-cluster check runs, the controller holds the pause
/// back: waits (at most `timeout`) until it is decided, then gives the state
/// read last. Any other state is given back as it is.
fn wait_for_analysis(
    cx: &Context,
    cluster: &Cluster,
    state: RolloutState,
    timeout: Duration,
    poll_interval: Duration,
) -> Result<RolloutState> {
    let checking = |s: &RolloutState| {
        !s.at_blue_green_pause() && !s.abort && s.analysis.as_ref().is_some_and(Analysis::running)
    };
    if !checking(&state) {
        return Ok(state);
    }
    let what = "the preview's in-cluster check (pre-promotion analysis) to end";
    if cx.dry_run {
        wait::plan(cx, cluster, what, timeout, poll_interval);
        return Ok(state);
    }
    wait::until(cx, cluster, what, timeout, poll_interval, |state, _| {
        Ok(match checking(state) {
            true => Look::Wait,
            false => Look::Done(state.clone()),
        })
    })
}

/// The preview is ready and is `expected`; else an error that says what is there and what to do.
pub fn check_promotable(
    cluster: &Cluster,
    state: &RolloutState,
    expected: &ImageRef,
) -> Result<()> {
    let container = &cluster.target().container;
    let preview = state.image(container).unwrap_or("(no such container)");
    match &state.analysis {
        Some(analysis) if analysis.failed() => bail!(
            "refusing to promote rollout {}: its preview {preview} failed the in-cluster check \
             (pre-promotion analysis {}: {}), and the controller aborted it. `cargo xtask status` shows \
             the failing measurement and its Job's log; deploy a fixed image",
            cluster.rollout(),
            analysis.name,
            analysis.summary()
        ),
        Some(analysis) if analysis.inconclusive() && !state.at_blue_green_pause() => bail!(
            "refusing to promote rollout {}: the in-cluster check of its preview {preview} was inconclusive \
             (pre-promotion analysis {}: {}). `kubectl argo rollouts promote {}` runs the check again \
             (then `cargo xtask promote` once it passed); `cargo xtask abort` drops the preview",
            cluster.rollout(),
            analysis.name,
            analysis.summary(),
            cluster.rollout()
        ),
        _ => {}
    }
    if !state.at_blue_green_pause() {
        bail!(
            "refusing to promote rollout {}: it is `{}`, not a preview waiting at `Paused - BlueGreenPause`, \
             and the plugin's promote would change nothing there; deploy first and wait for the preview \
             (`cargo xtask deploy --wait`), or see `cargo xtask status`",
            cluster.rollout(),
            state.phase()?
        );
    }
    if !expected.is(preview) {
        bail!(
            "refusing to promote rollout {}: its preview runs {preview}, not the expected {expected}{}. \
             Another deploy replaced the preview since (see `cargo xtask status`): promote from the \
             pipeline that deployed it, or give --expect-image {preview} if that is the one to ship",
            cluster.rollout(),
            if expected.digest.is_some() && !preview.contains('@') {
                " (a digest is expected, and the preview is set by tag only)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The promotion was sent (or may have been: the call failed after its
/// write could land) and no read since says where traffic is. Never a reason
/// to abort: an abort could race the switch the controller is making.
#[derive(Debug)]
pub struct PromotionUnknown {
    pub message: String,
}

impl std::fmt::Display for PromotionUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PromotionUnknown {}

/// `promotion sent, state unknown`, with how to look.
fn promotion_unknown(cluster: &Cluster, sent: &str, error: anyhow::Error) -> anyhow::Error {
    let look = cluster.kubectl.line(&cluster.kubectl.rollout_args());
    error.context(PromotionUnknown {
        message: format!(
            "promotion {sent}, state unknown: no read of rollout {} shows where traffic went. Look with \
             `{look}` (status.blueGreen.activeSelector is the ReplicaSet the active Service selects, \
             status.stableRS the promoted one) or `cargo xtask status`; do not abort before you know",
            cluster.rollout()
        ),
    })
}

/// `promote`, then read the Rollout until it is Healthy with the active
/// Service on the ReplicaSet that was checked (`hash`, running `image`). If
/// the plugin fails, the Rollout is read back first: the promotion may have
/// landed. Once the promotion may have been sent, no failed read leads to
/// an abort: when no read says where traffic is, the error is
/// [`PromotionUnknown`].
pub fn promote_and_wait(
    cx: &Context,
    cluster: &Cluster,
    hash: &str,
    image: &ImageRef,
    timeout: Duration,
    poll_interval: Duration,
) -> Result<()> {
    let plan = "Healthy, the active Service on the promoted ReplicaSet";
    let what = "Healthy on the promoted ReplicaSet";
    if let Err(error) = cluster.plugin.promote(cx) {
        if interrupt::is_interrupted(&error) {
            return Err(error);
        }
        let state = match wait::read(cx, &cluster.kubectl, timeout, poll_interval) {
            Ok(state) => state,
            Err(read) if interrupt::is_interrupted(&read) => return Err(read),
            Err(read) => {
                return Err(promotion_unknown(
                    cluster,
                    "may have been sent",
                    read.context(format!("{error:#}")),
                ));
            }
        };
        if state.at_blue_green_pause() {
            return Err(
                error.context("not promoted: read back, the preview still waits at the pause")
            );
        }
        cx.say(format!(
            "the plugin failed ({error:#}), but the rollout moved on (read back: {}): waiting for it",
            state.phase()?
        ));
    }
    if cx.dry_run {
        wait::plan(cx, cluster, plan, timeout, poll_interval);
        return Ok(());
    }
    let rollout = cluster.rollout().to_owned();
    let waited = wait::until(cx, cluster, what, timeout, poll_interval, |state, line| {
        if state.current_pod_hash != hash && state.observed() {
            bail!(
                "rollout {rollout} was given another template while it was promoted (its ReplicaSet is now \
                 {}, not {hash}); see `cargo xtask status`",
                state.current_pod_hash
            );
        }
        if line.phase == Phase::Degraded {
            bail!("rollout {rollout} is {line} after promote");
        }
        if state.observed()
            && line.phase == Phase::Healthy
            && state.fully_promoted()
            && state.active_selector == hash
        {
            return Ok(Look::Done(()));
        }
        Ok(Look::Wait)
    });
    match waited {
        Err(error) if wait::is_unknown(&error) => {
            return Err(promotion_unknown(cluster, "sent", error));
        }
        other => other?,
    }
    cx.say(format!(
        "promoted: rollout {} is Healthy and its active Service selects ReplicaSet {hash} ({image}), read back",
        cluster.rollout(),
    ));
    Ok(())
}
