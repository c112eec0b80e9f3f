//! `cargo xtask release`: deploy, wait for the preview, check it, promote;
//! abort on any failure after the image was set.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use camino::Utf8PathBuf;

use super::abort::{self, abort};
use super::deploy::{self, Arrival, WENT_ACTIVE, WaitArgs, wait_for_preview};
use super::promote::{PromotionUnknown, check_promotable, promote_and_wait};
use super::sanity::{Endpoint, SanityArgs, check_preview};
use super::wait;
use super::{Cluster, DEFAULT_ACTIVE_SERVICE, RolloutArgs, check_label, duration, go_duration};
use crate::cli::{self, Arg, ArgMatches, Task, option, switch};
use crate::context::Context;
use crate::image::{ImageArgs, ImageRef};
use crate::interrupt;
use crate::timing;

const ABOUT: &str = "Deploy, wait for the preview, check it, promote; abort on any failure";

const LONG_ABOUT: &str = "Release the image this commit builds: `deploy --wait`, `sanity` on the preview, then \
`promote` (with --no-promote it stops there, the checked preview waiting for `promote`). On any \
failure after the image was set (the wait times out, the rollout turns Degraded, the preview fails \
its checks, promotion does not end Healthy, Ctrl-C, SIGTERM, SIGHUP or SIGQUIT, a panic) it aborts \
the rollout and reads it back until the abort holds, so the active version stays, and exits non-zero \
naming the step that failed and what it read. From the image set on, further signals do not cut that \
short (they are reported, with the time the abort may still take); a closed stderr does not either. If the \
promotion had already switched traffic when something failed, it says so and does not abort.

A failed read of the Rollout inside a wait is a missed look (said in one line), not a failure: \
the wait goes on to its deadline, and gives up early after 5 failed reads in a row. Once the \
promotion was sent, no failed read leads to an abort: if no read says where traffic went, release \
exits non-zero with \"promotion sent, state unknown\" and how to look.

Refuses to replace another image's update in flight unless --replace, the image whose update \
was just aborted, and a fast rollback unless --fast-rollback (as deploy). A new Rollout \
does not pause on its first image (its active Service has no pods to switch from): the wait ends \
at Healthy, release says so, and checks the active Service instead of the preview; with nothing to \
return to, a failure there is reported but not aborted. Never prompts.

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get replicasets.apps -l SELECTOR -o json ...    (a new image: is its old ReplicaSet still up?)
  kubectl-argo-rollouts set image ROLLOUT CONTAINER=IMAGE:TAG[@DIGEST] ...
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (every --poll-interval, to the pause)
  kubectl port-forward service/api-preview :80 --address 127.0.0.1 ...    (unless --url)
  GET /health, GET /
  kubectl-argo-rollouts promote ROLLOUT ...    (unless --no-promote)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (every --poll-interval, until Healthy)
  kubectl-argo-rollouts abort ROLLOUT ...    (only on failure)
Prints the released image reference on stdout (under --dry-run, last: `# result: IMAGE`).";

const AFTER_LONG_HELP: &str = "Environment:
  API_IMAGE, CI_REGISTRY_IMAGE        the image repository (in that order)
  API_IMAGE_TAG, CI_COMMIT_SHA        the tag (in that order)
  API_IMAGE_DIGEST                    the digest (sha256:...)
  API_VERSION                         the version the preview must report, instead of git describe's
  API_ROLLOUT, API_CONTAINER          the Rollout and its container [default: api, api]
  API_PREVIEW_SERVICE, API_ACTIVE_SERVICE   the Services [default: api-preview, api-active]
  API_NAMESPACE, KUBE_NAMESPACE       the namespace (in that order)
  API_KUBE_CONTEXT                    the kubeconfig context

Examples:
  cargo xtask release -n production
  cargo xtask release --timeout 10m --sanity-timeout 2m
  cargo xtask release --no-promote --replace      # what the pipeline's deploy job runs
  cargo xtask --dry-run release -n staging";

#[derive(Debug)]
pub struct Release {
    pub target: RolloutArgs,
    pub image: ImageArgs,
    pub waiting: WaitArgs,
    pub check: SanityArgs,
    /// Checked instead of the preview on a Rollout's first image.
    pub active_service: String,
    pub sanity_timeout: Duration,
    pub no_promote: bool,
    pub replace: bool,
    pub fast_rollback: bool,
}

/// A step that failed after `set image`.
struct Failed {
    step: &'static str,
    error: anyhow::Error,
    /// The ReplicaSet that was promoted, when the failure came at or after `promote`.
    promoted: Option<String>,
}

impl Failed {
    fn at(step: &'static str) -> impl FnOnce(anyhow::Error) -> Failed {
        move |error| Failed {
            step,
            error,
            promoted: None,
        }
    }
}

impl Task for Release {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("release", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .args(ImageArgs::args())
            .args(Release::gate_args())
    }

    fn from(matches: &ArgMatches) -> Release {
        Release::of_image(matches, ImageArgs::from(matches))
    }

    fn run(self, cx: &Context) -> Result<()> {
        // Everything is checked and found before the first change.
        let cluster = self.target.cluster()?;
        check_label("Service", &self.active_service)?;
        let kubectl = self.check.prepare()?;
        let image = self.image.resolve(cx)?;
        let expected = self.check.expected_version(cx)?;
        let before = deploy::first_read(cx, &cluster, &self.waiting)?;
        deploy::refuse_foreign_update(&cluster, &before, &image, self.replace)?;
        deploy::refuse_what_the_controller_skips(
            cx,
            &cluster,
            &before,
            &image,
            self.fast_rollback,
        )?;
        // A new Rollout's active Service never selected pods: nothing to return to.
        let first_version = before.active_selector.is_empty();
        let started = Instant::now();

        let _protected = interrupt::protect();
        if let Err(error) = deploy::set_image(cx, &cluster, &image) {
            // Interrupted, with the image set (read back) or not known to be unset: abort it.
            let maybe_set = interrupt::is_interrupted(&error)
                && error.downcast_ref::<deploy::NotSet>().is_none();
            if !maybe_set || first_version {
                return Err(error.context("release stopped at step `deploy`"));
            }
            return Err(self.recover(cx, &cluster, Failed::at("deploy")(error)));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.after_set_image(cx, &cluster, kubectl, &expected, &image, first_version)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Failed::at("unknown (xtask panicked)")(anyhow!(
                "panic: {what}"
            )))
        });
        match outcome {
            Ok(()) => {
                if !cx.dry_run {
                    let total = started.elapsed();
                    // The in-cluster check as the controller reports it now (read back, or said unread).
                    let check = match cluster.read(cx) {
                        Ok(state) => state.analysis.map_or(String::new(), |a| {
                            format!(", in-cluster check {}: {}", a.name, a.summary())
                        }),
                        Err(_) => ", in-cluster check: not read back".to_owned(),
                    };
                    cx.say(format!(
                        "{} {image} (version {expected}{check}) in {:.1}s: {}",
                        if self.no_promote {
                            "checked the preview of"
                        } else {
                            "released"
                        },
                        total.as_secs_f64(),
                        timing::summary(total)
                    ));
                }
                cx.change_result(&image);
                Ok(())
            }
            Err(failed) if first_version => Err(failed.error.context(format!(
                "release stopped at step `{}`; not aborted: this was the rollout's first version, \
                 so there is no earlier one to keep",
                failed.step
            ))),
            Err(failed) => Err(self.recover(cx, &cluster, failed)),
        }
    }
}

impl Release {
    /// The flags of the gate, every one but the image's: `rollback` takes them too.
    pub fn gate_args() -> Vec<Arg> {
        let mut args = Vec::from(WaitArgs::args());
        args.extend(SanityArgs::args());
        args.extend([
            option(
                "active-service",
                "NAME",
                "The Service in front of the active pods (checked instead of the preview on a Rollout's first image)",
            )
            .env("API_ACTIVE_SERVICE")
            .default_value(DEFAULT_ACTIVE_SERVICE),
            duration(
                "sanity-timeout",
                "60s",
                "The longest time to retry the preview's checks, such as 60s",
            ),
            switch(
                "no-promote",
                "Stop after the checks: leave the checked preview waiting for `promote`",
            ),
            switch("replace", deploy::REPLACE_HELP),
            switch("fast-rollback", deploy::FAST_ROLLBACK_HELP),
        ]);
        args
    }

    /// The release of `image` with the gate's flags in `matches` (see [`Release::gate_args`]).
    pub fn of_image(matches: &ArgMatches, image: ImageArgs) -> Release {
        Release {
            target: RolloutArgs::from(matches),
            image,
            waiting: WaitArgs::from(matches),
            check: SanityArgs::from(matches),
            active_service: cli::value(matches, "active-service"),
            sanity_timeout: cli::value(matches, "sanity-timeout"),
            no_promote: matches.get_flag("no-promote"),
            replace: matches.get_flag("replace"),
            fast_rollback: matches.get_flag("fast-rollback"),
        }
    }

    /// After a failure: aborts, unless traffic had switched already; says what was read.
    fn recover(&self, cx: &Context, cluster: &Cluster, failed: Failed) -> anyhow::Error {
        // A read, then the abort: nothing a signal may cut short.
        let bound = cluster.target().request_timeout.saturating_mul(3) + abort::bound(cluster);
        let _ignoring = interrupt::ignore("the abort", bound);
        let why = if interrupt::is_interrupted(&failed.error) {
            "interrupted"
        } else {
            "failed"
        };
        if failed.error.downcast_ref::<PromotionUnknown>().is_some() {
            return failed.error.context(format!(
                "release {why} at step `{}`; not aborted: the promotion was sent, and an abort now could \
                 race the switch",
                failed.step
            ));
        }
        if let Some(hash) = &failed.promoted {
            match cluster.read(cx) {
                Ok(state) if &state.active_selector == hash => {
                    return failed.error.context(format!(
                        "release {why} at step `{}` after the promotion switched traffic: read back, the active \
                         Service selects the new ReplicaSet {hash}, so the new version serves; not aborted \
                         (see `cargo xtask status`)",
                        failed.step
                    ));
                }
                Ok(_) => {}
                Err(read) => {
                    // After a promotion that may have landed, an unread state is never a reason to abort.
                    return failed.error.context(format!(
                        "release {why} at step `{}`; not aborted: promotion sent, state unknown (reading \
                         the rollout failed: {read:#}); look with `{}` or `cargo xtask status`",
                        failed.step,
                        cluster.kubectl.line(&cluster.kubectl.rollout_args())
                    ));
                }
            }
        }
        cx.say(format!(
            "release {why} at step `{}`: aborting rollout {}",
            failed.step,
            cluster.rollout()
        ));
        match abort(cx, cluster) {
            Ok(settled) => failed.error.context(format!(
                "release stopped at step `{}`; {settled}",
                failed.step
            )),
            Err(abort_error) => failed.error.context(format!(
                "release stopped at step `{}`, and the abort did not hold ({abort_error:#}); abort by hand, \
                 then check with `cargo xtask status`: {}",
                failed.step,
                cluster.plugin.line(&["abort", cluster.rollout()])
            )),
        }
    }

    fn after_set_image(
        &self,
        cx: &Context,
        cluster: &Cluster,
        kubectl: Option<Utf8PathBuf>,
        expected: &str,
        image: &ImageRef,
        first_version: bool,
    ) -> Result<(), Failed> {
        // A test hook: nothing else makes xtask panic on purpose, and the abort
        // after a panic must be tested (absent from release builds).
        #[cfg(debug_assertions)]
        if std::env::var_os("XTASK_TEST_PANIC_AFTER_SET_IMAGE").is_some() {
            panic!("XTASK_TEST_PANIC_AFTER_SET_IMAGE is set");
        }
        let arrival = wait_for_preview(cx, cluster, image, &self.waiting)
            .map_err(Failed::at("wait for the preview"))?;
        let went_active = arrival == Some(Arrival::WentActive);
        if went_active {
            cx.say(format!(
                "{WENT_ACTIVE}; checking {} instead of the preview",
                self.active_service
            ));
        }
        let service = match went_active || (first_version && cx.dry_run) {
            true => &self.active_service,
            false => &self.check.preview_service,
        };
        let place = match (&self.check.url, kubectl) {
            (Some(url), _) => Endpoint::Url(url.clone()),
            (None, Some(kubectl)) => Endpoint::Service {
                kubectl,
                name: service.clone(),
            },
            (None, None) => {
                unreachable!("SanityArgs::prepare finds kubectl when there is no --url")
            }
        };
        check_preview(cx, cluster.target(), &place, expected, self.sanity_timeout)
            .map_err(Failed::at("sanity"))?;
        if went_active {
            return Ok(());
        }
        if self.no_promote {
            if !cx.dry_run {
                cx.say(format!(
                    "the preview {image} passed its checks and waits for promotion: `cargo xtask promote`"
                ));
            }
            return self.plan_abort(cx, cluster);
        }
        // The preview is read (and checked) again right before promote: it must be what was checked.
        let hash = match cx.dry_run {
            true => String::new(),
            false => {
                // Through the weather: one refused read must not abort a checked preview.
                let state = wait::read(
                    cx,
                    &cluster.kubectl,
                    self.waiting.timeout,
                    self.waiting.poll_interval,
                )
                .map_err(Failed::at("promote"))?;
                check_promotable(cluster, &state, image).map_err(Failed::at("promote"))?;
                state.current_pod_hash
            }
        };
        promote_and_wait(
            cx,
            cluster,
            &hash,
            image,
            self.waiting.timeout,
            self.waiting.poll_interval,
        )
        .map_err(|error| Failed {
            step: "promote",
            error,
            promoted: Some(hash.clone()),
        })?;
        self.plan_abort(cx, cluster)
    }

    /// Under --dry-run, the last plan line: what happens on failure.
    fn plan_abort(&self, cx: &Context, cluster: &Cluster) -> Result<(), Failed> {
        if cx.dry_run {
            cx.plan(format_args!(
                "# on any failure after `set image`, at most {} in all waits: {}",
                go_duration(self.waiting.timeout),
                cluster.plugin.line(&["abort", cluster.rollout()])
            ));
        }
        Ok(())
    }
}
