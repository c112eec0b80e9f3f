//! `cargo xtask release`: deploy, wait for the preview, check it, promote;
//! abort on any failure after the image was set.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;

use super::abort::abort;
use super::deploy::{Arrival, WENT_ACTIVE, Waiting, wait_for_preview};
use super::plugin::Plugin;
use super::promote::promote_and_wait;
use super::sanity::{CheckArgs, Place, check};
use super::{
    DEFAULT_ACTIVE_SERVICE, Target, check_label, go_duration, interrupt, parse_duration, timing,
};
use crate::context::Context;
use crate::image::ImageArgs;

/// Deploy, wait for the preview, check it, promote; abort on any failure
#[derive(Args, Debug)]
#[command(
    long_about = "Release the image this commit builds: `deploy --wait`, `sanity` on the preview, then \
`promote`. On any failure after the image was set (the wait times out, the rollout turns Degraded, \
the preview fails its checks, promotion does not end Healthy, or Ctrl-C/SIGTERM) it aborts the \
rollout, so the active version stays, and exits non-zero naming the step that failed.

A new Rollout does not pause on its first image (its active Service has no pods to switch from): \
the wait ends at Healthy, release says so, and checks the active Service instead of the preview; \
with nothing to return to, a failure there is reported but not aborted. Never prompts.

Runs:
  kubectl-argo-rollouts set image ROLLOUT CONTAINER=IMAGE:TAG [-n NAMESPACE] [--context CONTEXT]
  kubectl-argo-rollouts status ROLLOUT --watch=false ...    (every --poll-interval, to the pause)
  kubectl port-forward service/api-preview :80 --address 127.0.0.1 ...    (unless --url)
  GET /health, GET /
  kubectl-argo-rollouts promote ROLLOUT ...
  kubectl-argo-rollouts status ROLLOUT --timeout TIMEOUT ...    (until Healthy)
  kubectl-argo-rollouts abort ROLLOUT ...    (only on failure)
Prints the released image reference on stdout.",
    after_long_help = "Environment:
  API_IMAGE, CI_REGISTRY_IMAGE        the image repository (in that order)
  API_IMAGE_TAG, CI_COMMIT_SHA        the tag (in that order)
  API_VERSION                         the version the preview must report, instead of git describe's
  API_ROLLOUT, API_CONTAINER          the Rollout and its container [default: api, api]
  API_PREVIEW_SERVICE, API_ACTIVE_SERVICE   the Services [default: api-preview, api-active]
  API_NAMESPACE, KUBE_NAMESPACE       the namespace (in that order)
  API_KUBE_CONTEXT                    the kubeconfig context

Examples:
  cargo xtask release -n production
  cargo xtask release --timeout 10m --sanity-timeout 2m
  cargo xtask --dry-run release -n staging"
)]
pub struct Release {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub image: ImageArgs,

    #[command(flatten)]
    pub waiting: Waiting,

    #[command(flatten)]
    pub check: CheckArgs,

    /// The Service in front of the active pods (checked instead of the preview on a Rollout's first image)
    #[arg(long, env = "API_ACTIVE_SERVICE", default_value = DEFAULT_ACTIVE_SERVICE, value_name = "NAME")]
    pub active_service: String,

    /// The longest time to retry the preview's checks, such as 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub sanity_timeout: Duration,
}

/// A step that failed after `set image`, and whether aborting helps.
struct Failed {
    step: &'static str,
    error: anyhow::Error,
    abort: bool,
}

impl Release {
    pub fn run(self, cx: &Context) -> Result<()> {
        // Everything is checked and found before the first change.
        let plugin = self.target.plugin()?;
        check_label("Service", &self.active_service)?;
        let kubectl = self.check.prepare()?;
        let image = self.image.resolve(cx)?;
        let expected = self.check.expected_version(cx)?;
        interrupt::install();
        let started = Instant::now();

        plugin
            .set_image(cx, &image)
            .context("release stopped at step `deploy`; the rollout was not changed")?;
        match self.after_set_image(cx, &plugin, kubectl, &expected) {
            Ok(()) => {
                if !cx.dry_run {
                    let total = started.elapsed();
                    cx.say(format!(
                        "released {image} (version {expected}) in {:.1}s: {}",
                        total.as_secs_f64(),
                        timing::summary(total)
                    ));
                }
                cx.result(&image);
                Ok(())
            }
            Err(failed) if !failed.abort => Err(failed.error.context(format!(
                "release stopped at step `{}`; not aborted: this was the rollout's first version, \
                 so there is no earlier one to keep",
                failed.step
            ))),
            Err(failed) => {
                let why = if interrupt::is_interrupted(&failed.error) {
                    "interrupted"
                } else {
                    "failed"
                };
                cx.say(format!(
                    "release {why} at step `{}`: aborting rollout {}",
                    failed.step,
                    plugin.rollout()
                ));
                match abort(cx, &plugin) {
                    Ok(()) => Err(failed.error.context(format!(
                        "release stopped at step `{}`; rollout {} aborted, the active version is unchanged",
                        failed.step,
                        plugin.rollout()
                    ))),
                    Err(abort_error) => Err(failed.error.context(format!(
                        "release stopped at step `{}`, and the abort failed too ({abort_error:#}); \
                         abort by hand: {}",
                        failed.step,
                        plugin.line(cx, &["abort", plugin.rollout()])
                    ))),
                }
            }
        }
    }

    fn after_set_image(
        &self,
        cx: &Context,
        plugin: &Plugin,
        kubectl: Option<camino::Utf8PathBuf>,
        expected: &str,
    ) -> Result<(), Failed> {
        let failed = |step: &'static str| {
            move |error| Failed {
                step,
                error,
                abort: true,
            }
        };
        let arrival =
            wait_for_preview(cx, plugin, &self.waiting).map_err(failed("wait for the preview"))?;
        let first_version = arrival == Some(Arrival::WentActive);
        if first_version {
            cx.say(format!(
                "{WENT_ACTIVE}; checking {} instead of the preview",
                self.active_service
            ));
        }
        let service = match first_version {
            true => &self.active_service,
            false => &self.check.preview_service,
        };
        let place = match (&self.check.url, kubectl) {
            (Some(url), _) => Place::Url(url.clone()),
            (None, Some(kubectl)) => Place::Service {
                kubectl,
                name: service.clone(),
            },
            (None, None) => unreachable!("CheckArgs::prepare finds kubectl when there is no --url"),
        };
        check(cx, &plugin.target, &place, expected, self.sanity_timeout).map_err(|error| {
            Failed {
                step: "sanity",
                error,
                abort: !first_version,
            }
        })?;
        if first_version {
            return Ok(());
        }
        promote_and_wait(cx, plugin, self.waiting.timeout).map_err(failed("promote"))?;
        if cx.dry_run {
            println!(
                "# on any failure after `set image`, at most {} in all waits: {}",
                go_duration(self.waiting.timeout),
                plugin.line(cx, &["abort", plugin.rollout()])
            );
        }
        Ok(())
    }
}
