//! `cargo xtask status`: where the rollout stands.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Target;
use super::plugin::{Phase, RolloutStatus};
use crate::context::Context;

/// Show where the rollout stands, in one line (or JSON)
#[derive(Args, Debug)]
#[command(
    long_about = "Show where the rollout stands, in one line a person reads, or as JSON with --json. \
Changes nothing (it also runs under --dry-run).

Exits 1 when the rollout is Degraded (aborted, or a preview that never became ready), 0 otherwise.

Runs (read-only):
  kubectl-argo-rollouts status ROLLOUT --watch=false [-n NAMESPACE] [--context CONTEXT]",
    after_long_help = "Environment:
  API_ROLLOUT, API_CONTAINER, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask status -n production
  cargo xtask status --json | jq -r .phase"
)]
pub struct Status {
    #[command(flatten)]
    pub target: Target,

    /// Print one JSON object: rollout, namespace, context, phase, message, line
    #[arg(long)]
    pub json: bool,
}

impl Status {
    pub fn run(self, cx: &Context) -> Result<ExitCode> {
        let plugin = self.target.plugin()?;
        let status = plugin.status(cx)?;
        let target = &plugin.target;
        if self.json {
            let json = serde_json::json!({
                "rollout": target.rollout,
                "namespace": target.namespace,
                "context": target.context,
                "phase": status.phase.as_str(),
                "message": status.message,
                "line": status.to_string(),
            });
            cx.result(json);
        } else {
            let place = match &target.namespace {
                Some(ns) => format!("rollout {} in namespace {ns}", target.rollout),
                None => format!("rollout {}", target.rollout),
            };
            cx.result(format_args!("{place}: {status}{}", hint(&status)));
        }
        Ok(match status.phase {
            Phase::Degraded => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        })
    }
}

/// What a person can do next, from here.
fn hint(status: &RolloutStatus) -> &'static str {
    match status.phase {
        Phase::Healthy => " (the active Service serves the current template; nothing in flight)",
        Phase::Progressing => {
            " (the new pods are not ready yet; `cargo xtask deploy --wait` waits for them)"
        }
        Phase::Paused if status.is_blue_green_pause() => {
            " (the preview is ready: `cargo xtask sanity`, then `cargo xtask promote` or `cargo xtask abort`)"
        }
        Phase::Paused => " (paused by hand: `kubectl argo rollouts promote` resumes it)",
        Phase::Degraded => {
            " (the active Service still serves the last good version; `kubectl argo rollouts undo` \
             or a deploy of the stable image returns it to Healthy)"
        }
    }
}
