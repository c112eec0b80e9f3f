//! `cargo xtask promote`: switch traffic to the preview.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use super::plugin::Plugin;
use super::{Target, go_duration, interrupt, parse_duration};
use crate::context::Context;

/// Switch traffic to the preview, atomically, and wait until Healthy
#[derive(Args, Debug)]
#[command(
    long_about = "Switch traffic to the preview: Argo Rollouts points the active Service at the preview \
pods in one step, then keeps the old pods for scaleDownDelaySeconds. Waits until the rollout is Healthy.

Refuses unless the rollout is `Paused - BlueGreenPause` (the preview is ready and waiting): the \
plugin's promote would otherwise change nothing and say it promoted. Asks for confirmation when \
stdin is a terminal (not with --yes); never prompts otherwise, so CI never hangs.

Runs:
  kubectl-argo-rollouts status ROLLOUT --watch=false [-n NAMESPACE] [--context CONTEXT]
  kubectl-argo-rollouts promote ROLLOUT ...    (if the first said `Paused - BlueGreenPause`)
  kubectl-argo-rollouts status ROLLOUT --timeout TIMEOUT ...    (until Healthy)",
    after_long_help = "Environment:
  API_ROLLOUT, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask promote -n staging
  cargo xtask promote --yes --timeout 10m"
)]
pub struct Promote {
    #[command(flatten)]
    pub target: Target,

    /// The longest wait for Healthy after promoting, such as 300s or 5m
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Do not ask for confirmation at a terminal
    #[arg(long, short = 'y')]
    pub yes: bool,
}

impl Promote {
    pub fn run(self, cx: &Context) -> Result<()> {
        let plugin = self.target.plugin()?;
        interrupt::install();
        let status = plugin.status(cx)?;
        if !status.is_blue_green_pause() {
            bail!(
                "refusing to promote rollout {}: it is `{status}`, not `Paused - BlueGreenPause`, and the \
                 plugin's promote would change nothing there; deploy first and wait for the preview \
                 (`cargo xtask deploy --wait`), or see `cargo xtask status`",
                plugin.rollout()
            );
        }
        if !self.yes
            && !cx.dry_run
            && !confirm(&format!(
                "switch all traffic of rollout {} to the preview?",
                plugin.rollout()
            ))?
        {
            bail!("not promoted: not confirmed");
        }
        promote_and_wait(cx, &plugin, self.timeout)
    }
}

/// `promote`, then `status --timeout` until Healthy (only planned under --dry-run).
pub fn promote_and_wait(cx: &Context, plugin: &Plugin, timeout: Duration) -> Result<()> {
    plugin.promote(cx)?;
    if cx.dry_run {
        let args = plugin.watch_args(timeout);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        println!(
            "# wait until Healthy, at most {}: {}",
            go_duration(timeout),
            plugin.line(cx, &args)
        );
        return Ok(());
    }
    plugin.wait_healthy(cx, timeout)?;
    cx.say(format!(
        "promoted: rollout {} is Healthy; the active Service serves the new version",
        plugin.rollout()
    ));
    Ok(())
}

/// Asks on the terminal; `true` without asking when stdin is not a terminal.
pub fn confirm(question: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
