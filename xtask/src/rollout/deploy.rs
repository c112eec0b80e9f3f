//! `cargo xtask deploy`: the new image onto the Rollout, where it becomes the preview.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::plugin::{Phase, Plugin, RolloutStatus};
use super::{Target, go_duration, interrupt, parse_duration, timing};
use crate::context::Context;
use crate::image::ImageArgs;

/// Set the new image on the Rollout: it goes to the preview pods
#[derive(Args, Debug)]
#[command(
    long_about = "Set the new image on the Rollout: Argo Rollouts starts preview pods with it and points \
the preview Service at them; the active Service, and so all traffic, stays on the current pods.

The image is IMAGE:TAG, resolved as `package` resolves it: --image, else $API_IMAGE, else \
$CI_REGISTRY_IMAGE, else `api`; --tag, else $API_IMAGE_TAG, else $CI_COMMIT_SHA, else the full SHA \
of HEAD (a dirty work tree is refused unless --allow-dirty).

With --wait it then polls the status until the preview is ready (`Paused - BlueGreenPause`), \
printing each change on stderr, for at most --timeout; Degraded ends it with an error. A new \
Rollout, whose active Service never had pods, does not pause: its first image goes straight to \
active, and the wait ends at Healthy.

Runs:
  kubectl-argo-rollouts set image ROLLOUT CONTAINER=IMAGE:TAG [-n NAMESPACE] [--context CONTEXT]
  kubectl-argo-rollouts status ROLLOUT --watch=false ...    (with --wait, every --poll-interval)
Prints the image reference on stdout.",
    after_long_help = "Environment:
  API_IMAGE, CI_REGISTRY_IMAGE        the image repository (in that order)
  API_IMAGE_TAG, CI_COMMIT_SHA        the tag (in that order)
  API_ROLLOUT, API_CONTAINER          the Rollout and its container [default: api, api]
  API_NAMESPACE, KUBE_NAMESPACE       the namespace (in that order)
  API_KUBE_CONTEXT                    the kubeconfig context

Examples:
  cargo xtask deploy --wait -n staging
  cargo xtask deploy --image registry.example.com/team/api --tag 3f2c1d0... --wait --timeout 10m
  cargo xtask --dry-run deploy"
)]
pub struct Deploy {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub image: ImageArgs,

    /// Wait until the preview is ready (`Paused - BlueGreenPause`)
    #[arg(long)]
    pub wait: bool,

    #[command(flatten)]
    pub waiting: Waiting,
}

/// How long and how often to wait for the preview.
#[derive(Args, Debug, Clone)]
pub struct Waiting {
    /// The longest wait for the preview (in release, also for Healthy after promote), such as 5m
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// How often to ask for the status while waiting
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub poll_interval: Duration,
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

impl Deploy {
    pub fn run(self, cx: &Context) -> Result<()> {
        let plugin = self.target.plugin()?;
        let image = self.image.resolve(cx)?;
        interrupt::install();
        plugin.set_image(cx, &image)?;
        if self.wait {
            match wait_for_preview(cx, &plugin, &self.waiting)? {
                Some(Arrival::PreviewReady) => cx.say(format!(
                    "the preview is ready on {image}; check it with `cargo xtask sanity`, then `cargo xtask promote`"
                )),
                Some(Arrival::WentActive) => cx.say(WENT_ACTIVE),
                None => {}
            }
        }
        cx.result(&image);
        Ok(())
    }
}

pub const WENT_ACTIVE: &str = "the rollout went straight to Healthy without a pause: this was the first \
     image of a new Rollout (its active Service had no pods to switch from), or the image was active \
     already; it serves on the active Service";

/// Polls `status --watch=false` until the preview is ready, Healthy, Degraded
/// or the timeout. `None` under --dry-run, where nothing was deployed to wait for.
pub fn wait_for_preview(
    cx: &Context,
    plugin: &Plugin,
    waiting: &Waiting,
) -> Result<Option<Arrival>> {
    let status_line = plugin.line(cx, &plugin.status_args());
    if cx.dry_run {
        println!(
            "# wait until `Paused - BlueGreenPause` (or Healthy), at most {}, every {}: {status_line}",
            go_duration(waiting.timeout),
            go_duration(waiting.poll_interval)
        );
        return Ok(None);
    }
    cx.say(format!(
        "waiting for the preview of rollout {} (at most {}): {status_line}",
        plugin.rollout(),
        go_duration(waiting.timeout)
    ));
    let start = Instant::now();
    let deadline = start + waiting.timeout;
    let mut last: Option<RolloutStatus> = None;
    loop {
        interrupt::check()?;
        let status = plugin.status(cx)?;
        if last.as_ref() != Some(&status) {
            cx.say(format!(
                "  {:>5.1}s  {status}",
                start.elapsed().as_secs_f64()
            ));
        }
        match status.phase {
            Phase::Paused if status.is_blue_green_pause() => {
                return Ok(Some(Arrival::PreviewReady));
            }
            Phase::Healthy => return Ok(Some(Arrival::WentActive)),
            Phase::Degraded => bail!(
                "rollout {} is {status}: the new pods did not become a usable preview",
                plugin.rollout()
            ),
            Phase::Paused => bail!(
                "rollout {} is {status}, not at the blue/green pause: someone paused it by hand; \
                 `kubectl argo rollouts promote {}` resumes it",
                plugin.rollout(),
                plugin.rollout()
            ),
            Phase::Progressing => {}
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "the preview of rollout {} was not ready within {}; its last status: {status}",
                plugin.rollout(),
                go_duration(waiting.timeout)
            );
        }
        last = Some(status);
        timing::waiting(|| interrupt::sleep(waiting.poll_interval.min(deadline - now)))?;
    }
}
