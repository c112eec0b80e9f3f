//! `cargo xtask status`: what runs where, read from the Rollout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::RolloutArgs;
use super::analysis::{Analysis, Failing};
use super::deploy::inconclusive_pause;
use super::kube::Kubectl;
use super::state::{Phase, PhaseLine, RolloutState};
use super::wait;
use crate::cli::{self, ArgMatches, Task, switch};
use crate::context::Context;

const ABOUT: &str = "Show what runs where: the active and the preview image, the phase (or JSON)";

const LONG_ABOUT: &str = "Show what runs where, read from the Rollout object: the image the active Service \
serves (the stable ReplicaSet), the preview's image when an update is in flight, the phase as the \
plugin computes it, whether a promotion is waiting, and the preview's in-cluster check (the \
pre-promotion analysis: running, passed, failed or inconclusive; when it did not pass, the failing \
measurement and where its Job's log is). One line a person reads, or one JSON object with --json. \
Changes nothing (it also runs under --dry-run).

Exits 1 when the rollout is Degraded (aborted, or a preview that never became ready), 0 otherwise. \
A new Rollout with no status yet (before its controller's first reconcile) is waited for, at most \
6 request timeouts.

Runs (read-only):
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get replicasets.apps -l rollouts-pod-template-hash=HASH -o json ...    (the active image, when it is not the current template's)
  kubectl get analysisruns.argoproj.io RUN -o json ...    (the analysis, when it did not pass)";

const AFTER_LONG_HELP: &str = "Environment:
  API_ROLLOUT, API_CONTAINER, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask status -n production
  cargo xtask status --json | jq -r .active.image";

/// `cargo xtask status`.
#[derive(Debug)]
pub struct Status {
    pub target: RolloutArgs,
    pub json: bool,
}

/// One side of the blue/green pair: its ReplicaSet and image.
struct Side {
    pod_hash: String,
    image: Option<String>,
}

impl Side {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "pod_hash": (!self.pod_hash.is_empty()).then_some(&self.pod_hash),
            "image": self.image,
            "digest": self.image.as_deref().and_then(|i| i.split_once('@')).map(|(_, d)| d),
        })
    }

    fn text(&self) -> String {
        let image = self
            .image
            .as_deref()
            .unwrap_or("(image unknown: no ReplicaSet left)");
        match self.pod_hash.as_str() {
            "" => format!("{image} (no ReplicaSet yet: the controller has not seen this template)"),
            hash => format!("{image} (ReplicaSet {hash})"),
        }
    }
}

impl Task for Status {
    type Outcome = ExitCode;

    fn command() -> cli::Command {
        cli::task("status", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .arg(switch(
                "json",
                "Print one JSON object: rollout, namespace, context, phase, message, line, active, preview, \
                 stable_pod_hash, promotion_waiting, aborted, observed, analysis",
            ))
    }

    fn from(matches: &ArgMatches) -> Status {
        Status {
            target: RolloutArgs::from(matches),
            json: matches.get_flag("json"),
        }
    }

    fn run(self, cx: &Context) -> Result<ExitCode> {
        let kubectl = self.target.kubectl()?;
        // A new Rollout has no status before its controller's first reconcile: wait, bounded.
        let limit = self.target.request_timeout.saturating_mul(6);
        let state = wait::reconciled(cx, &kubectl, limit, Duration::from_millis(500))?;
        let line = state.phase()?;
        let container = &kubectl.target.container;
        let current = state.image(container).map(str::to_owned);
        let active = match state.active_selector.as_str() {
            "" => None,
            hash if state.active_is_current() => Some(Side {
                pod_hash: hash.to_owned(),
                image: current.clone(),
            }),
            hash => Some(Side {
                pod_hash: hash.to_owned(),
                image: image_of(cx, &kubectl, hash, container)?,
            }),
        };
        let preview = (!state.fully_promoted() || !state.active_is_current()).then(|| Side {
            // Not observed yet: the status's hash is the old template's, the new one has none.
            pod_hash: match state.observed() {
                true => state.current_pod_hash.clone(),
                false => String::new(),
            },
            image: current.clone(),
        });
        let waiting = state.at_blue_green_pause();
        let target = &kubectl.target;
        let failing = match &state.analysis {
            Some(analysis) if !analysis.running() && analysis.phase != "Successful" => {
                Some(failing_of(cx, &kubectl, analysis))
            }
            _ => None,
        };
        if self.json {
            let json = serde_json::json!({
                "rollout": target.rollout,
                "namespace": target.namespace,
                "context": target.context,
                "phase": line.phase.as_str(),
                "message": line.message,
                "line": line.to_string(),
                "active": active.as_ref().map(Side::json),
                "preview": preview.as_ref().map(Side::json),
                "stable_pod_hash": state.stable_rs,
                "promotion_waiting": waiting,
                "aborted": state.abort,
                "observed": state.observed(),
                "analysis": state.analysis.as_ref().map(|a| {
                    let mut json = a.json();
                    json["failing"] = match &failing {
                        Some(Ok(Some(f))) => f.json(),
                        _ => serde_json::Value::Null,
                    };
                    json
                }),
            });
            cx.result(json);
        } else {
            let place = match &target.namespace {
                Some(ns) => format!("rollout {} in namespace {ns}", target.rollout),
                None => format!("rollout {}", target.rollout),
            };
            cx.result(format_args!("{place}: {line}{}", hint(&state, &line)));
            match &active {
                Some(side) => cx.result(format_args!("  active:  {}, stable", side.text())),
                None => cx.result("  active:  none yet (a new Rollout)"),
            }
            if let Some(side) = &preview {
                let what = match (waiting, state.abort) {
                    (true, _) => "ready, waiting for promotion",
                    (_, true) => "aborted",
                    _ => "not ready",
                };
                cx.result(format_args!("  preview: {}, {what}", side.text()));
            }
            if let Some(analysis) = &state.analysis {
                cx.result(format_args!(
                    "  check:   pre-promotion analysis {}: {}",
                    analysis.name,
                    analysis.summary()
                ));
                match &failing {
                    Some(Ok(Some(f))) => cx.result(format_args!(
                        "           {}",
                        f.text(target.namespace.as_deref())
                    )),
                    Some(Err(err)) => cx.result(format_args!("           ({err:#})")),
                    _ => {}
                }
            }
        }
        Ok(match line.phase {
            Phase::Degraded => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        })
    }
}

/// The AnalysisRun's failing measurement; a failed read is said, not fatal.
fn failing_of(cx: &Context, kubectl: &Kubectl, analysis: &Analysis) -> Result<Option<Failing>> {
    Failing::of_run(&kubectl.analysis_run(cx, &analysis.name)?)
}

fn image_of(
    cx: &Context,
    kubectl: &Kubectl,
    hash: &str,
    container: &str,
) -> Result<Option<String>> {
    Ok(kubectl
        .images_of(cx, hash)?
        .into_iter()
        .find(|(name, _)| name == container)
        .map(|(_, image)| image))
}

/// What a person can do next, from here.
fn hint(state: &RolloutState, line: &PhaseLine) -> &'static str {
    let analysis = state.analysis.as_ref();
    match line.phase {
        Phase::Healthy => " (the active Service serves the current template; nothing in flight)",
        Phase::Progressing if analysis.is_some_and(Analysis::running) => {
            " (the preview is ready and the cluster checks it: the rollout pauses for promotion once the \
             check passes, and is aborted if it fails)"
        }
        Phase::Progressing => {
            " (the new pods are not ready yet; `cargo xtask deploy --wait` waits for them)"
        }
        Phase::Paused if state.at_blue_green_pause() => {
            " (the preview is ready: `cargo xtask sanity`, then `cargo xtask promote` or `cargo xtask abort`)"
        }
        Phase::Paused if inconclusive_pause(state) => {
            " (the preview's in-cluster check was inconclusive, and the controller waits for a person: \
             `kubectl argo rollouts promote` resumes it and runs the check again, `cargo xtask abort` \
             drops the preview)"
        }
        Phase::Paused => " (paused by hand: `kubectl argo rollouts promote` resumes it)",
        Phase::Degraded if analysis.is_some_and(Analysis::failed) => {
            " (the preview failed its in-cluster check and the controller aborted it; the active Service \
             still serves the last good version)"
        }
        Phase::Degraded => {
            " (the active Service still serves the last good version; `kubectl argo rollouts undo ROLLOUT --to-revision=N` (N: the stable ReplicaSet's revision) \
             or a deploy of the stable image, with its digest, returns it to Healthy)"
        }
    }
}
