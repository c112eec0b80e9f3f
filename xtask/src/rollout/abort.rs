//! `cargo xtask abort`: drop the preview; the active version stays.

use anyhow::{Result, bail};
use clap::Args;

use super::Target;
use super::interrupt;
use super::plugin::{Phase, Plugin};
use super::promote::confirm;
use crate::context::Context;

/// Drop the preview; the active version stays
#[derive(Args, Debug)]
#[command(
    long_about = "Abort the update in flight: the active Service stays on the pods it serves, so the \
active version is unchanged; the preview pods go after abortScaleDownDelaySeconds. The rollout then \
reports `Degraded - RolloutAborted: ...` until it gets a template again: `kubectl argo rollouts \
undo ROLLOUT` (back to the stable template) or a deploy of the stable image.

Does nothing, and says so, when the rollout is Healthy: there is no update to abort, and aborting \
would only mark a healthy rollout Degraded. Asks for confirmation when stdin is a terminal (not with \
--yes); never prompts otherwise.

Runs:
  kubectl-argo-rollouts status ROLLOUT --watch=false [-n NAMESPACE] [--context CONTEXT]
  kubectl-argo-rollouts abort ROLLOUT ...    (unless the first said Healthy)",
    after_long_help = "Environment:
  API_ROLLOUT, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask abort -n staging
  cargo xtask abort --yes"
)]
pub struct Abort {
    #[command(flatten)]
    pub target: Target,

    /// Do not ask for confirmation at a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
}

impl Abort {
    pub fn run(self, cx: &Context) -> Result<()> {
        let plugin = self.target.plugin()?;
        interrupt::install();
        let status = plugin.status(cx)?;
        if status.phase == Phase::Healthy {
            cx.say(format!(
                "nothing to abort: rollout {} is Healthy, with no update in flight",
                plugin.rollout()
            ));
            return Ok(());
        }
        if !self.yes
            && !cx.dry_run
            && !confirm(&format!(
                "abort the update of rollout {} (now `{status}`)?",
                plugin.rollout()
            ))?
        {
            bail!("not aborted: not confirmed");
        }
        abort(cx, &plugin)
    }
}

/// `abort`, then what it means and how to get back to Healthy.
pub fn abort(cx: &Context, plugin: &Plugin) -> Result<()> {
    plugin.abort(cx)?;
    if !cx.dry_run {
        cx.say(how_to_recover(cx, plugin));
    }
    Ok(())
}

pub fn how_to_recover(cx: &Context, plugin: &Plugin) -> String {
    let undo = plugin.line(cx, &["undo", plugin.rollout()]);
    format!(
        "aborted rollout {}: the active Service still selects the stable pods, so the active version is \
         unchanged. The rollout reports Degraded (RolloutAborted) until it gets a template again: \
         `{undo}` returns to the stable one, or deploy the stable image (`cargo xtask deploy --tag <stable tag>`).",
        plugin.rollout()
    )
}
