//! Calls to the cluster: `kubectl get` for reading the Rollout, and the one
//! way every cluster tool (kubectl, the plugin) is run, with a deadline and
//! an error that says what was asked and what probably went wrong.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::state::{RolloutState, replica_set_images};
use super::{RolloutArgs, go_duration};
use crate::context::{Context, command_line};
use crate::interrupt;
use crate::process::{Cut, Finished, Stdout};

/// The Rollout's resource, fully qualified, so no other `rollouts` kind is meant.
pub const ROLLOUT_RESOURCE: &str = "rollouts.argoproj.io";
/// The AnalysisRun's resource, fully qualified.
pub const ANALYSIS_RUN_RESOURCE: &str = "analysisruns.argoproj.io";

/// `kubectl`, bound to one Rollout (names already checked), for reading it.
pub struct Kubectl {
    pub path: Utf8PathBuf,
    pub target: RolloutArgs,
}

impl Kubectl {
    pub fn rollout(&self) -> &str {
        &self.target.rollout
    }

    fn get_args(&self, what: &[&str]) -> Vec<String> {
        let mut args = vec!["get".to_owned()];
        args.extend(what.iter().map(|w| w.to_string()));
        args.extend(["-o".to_owned(), "json".to_owned()]);
        args.extend(self.target.kube_flags());
        args
    }

    /// The arguments of the read that every wait polls.
    pub fn rollout_args(&self) -> Vec<String> {
        self.get_args(&[ROLLOUT_RESOURCE, self.rollout()])
    }

    /// The Rollout as the API has it now. Read-only: runs under --dry-run too.
    pub fn read(&self, cx: &Context) -> Result<RolloutState> {
        let asking = format!("read rollout {}", self.rollout());
        let out = read_call(cx, &self.path, &self.rollout_args(), &asking, &self.target)?;
        RolloutState::from_json(&out.stdout).map_err(|e| anyhow!("{asking}: {e:#}"))
    }

    /// The images of the ReplicaSet with this pod-template-hash (empty if none is left).
    pub fn images_of(&self, cx: &Context, pod_hash: &str) -> Result<Vec<(String, String)>> {
        let selector = format!("rollouts-pod-template-hash={pod_hash}");
        let args = self.get_args(&["replicasets.apps", "-l", &selector]);
        let asking = format!(
            "read the ReplicaSet {pod_hash} of rollout {}",
            self.rollout()
        );
        let out = read_call(cx, &self.path, &args, &asking, &self.target)?;
        replica_set_images(&out.stdout).map_err(|e| anyhow!("{asking}: {e:#}"))
    }

    /// `kubectl get analysisruns.argoproj.io NAME -o json`: the AnalysisRun's JSON.
    pub fn analysis_run(&self, cx: &Context, name: &str) -> Result<String> {
        let args = self.get_args(&[ANALYSIS_RUN_RESOURCE, name]);
        let asking = format!("read the analysis run {name} of rollout {}", self.rollout());
        Ok(read_call(cx, &self.path, &args, &asking, &self.target)?.stdout)
    }

    /// `kubectl get replicasets.apps -l SELECTOR -o json`: the List's JSON.
    pub fn replica_sets(&self, cx: &Context, selector: &str) -> Result<String> {
        let args = self.get_args(&["replicasets.apps", "-l", selector]);
        let asking = format!("read the ReplicaSets of rollout {}", self.rollout());
        Ok(read_call(cx, &self.path, &args, &asking, &self.target)?.stdout)
    }

    /// The exact command line, for plans and messages.
    pub fn line(&self, args: &[String]) -> String {
        command_line(&self.path, args)
    }
}

/// Runs a cluster tool within the target's bound: 3 times its request
/// timeout (a call may make a discovery request, a get and a write, each
/// bounded by `--request-timeout`), killed after that. A change (`changes`)
/// is echoed to stderr, or under --dry-run only printed (`None`); a read
/// runs under --dry-run too, echoed with --verbose. A non-zero exit is an
/// error quoting the tool, with the likely fix.
pub fn call(
    cx: &Context,
    program: &Utf8Path,
    args: &[String],
    asking: &str,
    target: &RolloutArgs,
    changes: bool,
) -> Result<Option<Finished>> {
    let line = command_line(program, args);
    let mut command = Command::new(program.as_std_path());
    command.args(args).current_dir(cx.root.as_std_path());
    let step = match changes {
        true => cx.change(command),
        false => cx.probe(command),
    };
    let ended = step
        .stdout(Stdout::Kept)
        .keep_stderr()
        .within(target.call_limit(), "")
        .finish(cx)
        .map_err(|e| anyhow!("{asking}: {e:#}"))?;
    match ended {
        None => Ok(None),
        Some(Ok(done)) if done.status.success() => Ok(Some(done)),
        Some(Ok(done)) => Err(anyhow!(
            "{asking}: `{line}` exited with {}: {}{}",
            done.status,
            said(&done),
            hint(target, &done.stderr)
        )),
        Some(Err((Cut::Interrupted, _))) => Err(interrupt::Interrupted.into()),
        Some(Err((Cut::Deadline(limit), done))) => bail!(
            "{asking}: `{line}` got no answer within {} and was stopped{}. {}",
            go_duration(limit),
            match done.stderr.trim() {
                "" => String::new(),
                stderr => format!(" (it said: {})", last_lines(stderr)),
            },
            unreachable(target)
        ),
    }
}

/// [`call`] of a read, which runs under --dry-run too.
fn read_call(
    cx: &Context,
    program: &Utf8Path,
    args: &[String],
    asking: &str,
    target: &RolloutArgs,
) -> Result<Finished> {
    call(cx, program, args, asking, target, false)?
        .ok_or_else(|| anyhow!("{asking}: a read did not run"))
}

/// What to check when the API server does not answer.
fn unreachable(target: &RolloutArgs) -> String {
    format!(
        "The API server did not answer: check the kube context ({}), that the cluster is reachable from \
         here (network, VPN, proxy), and that this identity may read and patch the Rollout (README, \
         \"Permissions\")",
        match &target.context {
            Some(context) => format!("--context {context}"),
            None => "the kubeconfig's current one; set --context or API_KUBE_CONTEXT".to_owned(),
        }
    )
}

/// What the tool said: its stderr, else its stdout, else that it said nothing.
fn said(done: &Finished) -> String {
    match (done.stderr.trim(), done.stdout.trim()) {
        ("", "") => "nothing".to_owned(),
        ("", stdout) => last_lines(stdout),
        (stderr, _) => last_lines(stderr),
    }
}

/// The end of a long message: kubectl and the plugin put their summary
/// (`Error: ...`, `The connection to the server ... was refused`) last, after
/// any retries they logged.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 3 {
        return lines.join("\n");
    }
    format!(
        "[{} earlier lines] {}",
        lines.len() - 1,
        lines[lines.len() - 1]
    )
}

/// The likely fix for what the tool said, if we know one.
fn hint(target: &RolloutArgs, stderr: &str) -> String {
    // The plugin's lister says `rollout.argoproj.io`, the API server `rollouts.argoproj.io`.
    let missing = ["rollout", "rollouts"].iter().any(|kind| {
        stderr.contains(&format!(
            "{kind}.argoproj.io \"{}\" not found",
            target.rollout
        ))
    });
    if missing {
        let ns = match &target.namespace {
            Some(ns) => format!(" -n {ns}"),
            None => String::new(),
        };
        return format!(
            " (no Rollout {} there: check --namespace and --context, or create it once with \
             `kubectl create{ns} -f rollout.yaml`; see README.md, \"Blue/green with Argo Rollouts\")",
            target.rollout
        );
    }
    if stderr.contains("the server doesn't have a resource type \"rollouts\"")
        || stderr.contains("no matches for kind \"Rollout\"")
    {
        return " (the Argo Rollouts CRDs are not installed in this cluster, or the context is another cluster's)"
            .to_owned();
    }
    let timed_out = [
        "Client.Timeout exceeded",
        "context deadline exceeded",
        "Unable to connect to the server",
        "i/o timeout",
        "connection refused",
    ];
    if timed_out.iter().any(|said| stderr.contains(said)) {
        return format!(" ({})", unreachable(target));
    }
    if stderr.contains("Forbidden") || stderr.contains("forbidden") {
        return " (this identity lacks a permission: grant the Role of README.md, \"Permissions\")"
            .to_owned();
    }
    String::new()
}

impl RolloutArgs {
    /// `-n NS --context C --request-timeout=T`: kubectl's and the plugin's kubeconfig flags.
    pub fn kube_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ns) = &self.namespace {
            flags.extend(["-n".to_owned(), ns.clone()]);
        }
        if let Some(context) = &self.context {
            flags.extend(["--context".to_owned(), context.clone()]);
        }
        flags.push(format!(
            "--request-timeout={}",
            go_duration(self.request_timeout)
        ));
        flags
    }

    /// How long one call to a cluster tool may take in all.
    pub fn call_limit(&self) -> Duration {
        self.request_timeout.saturating_mul(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> RolloutArgs {
        RolloutArgs {
            rollout: "api".into(),
            container: "api".into(),
            namespace: Some("shop".into()),
            context: None,
            request_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn both_not_found_forms_get_the_hint() {
        for said in [
            "Error: rollout.argoproj.io \"api\" not found",
            "Error from server (NotFound): rollouts.argoproj.io \"api\" not found",
        ] {
            let hint = hint(&target(), said);
            assert!(
                hint.contains("kubectl create -n shop -f rollout.yaml"),
                "{said}: {hint}"
            );
        }
        assert_eq!(
            hint(&target(), "Error: rollout.argoproj.io \"web\" not found"),
            ""
        );
    }

    #[test]
    fn a_forbidden_call_points_at_the_role() {
        let said = "Error from server (Forbidden): rollouts.argoproj.io \"api\" is forbidden: User \"ci\" cannot get resource";
        assert!(hint(&target(), said).contains("Permissions"));
    }

    #[test]
    fn kube_flags_carry_the_request_timeout() {
        assert_eq!(
            target().kube_flags(),
            ["-n", "shop", "--request-timeout=10s"]
        );
    }
}
