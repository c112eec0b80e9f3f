//! Calls to the cluster: `kubectl get` for reading the Rollout, and the one
//! way every cluster tool (kubectl, the plugin) is run, with a deadline and
//! an error that says what was asked and what probably went wrong.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, anyhow};
use camino::{Utf8Path, Utf8PathBuf};

use super::state::{ReplicaSet, RolloutState, replica_sets};
use super::{RolloutArgs, go_duration};
use crate::context::{Context, SAID_MAX, command_line, outside_text};
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
        Ok(self
            .replica_set(cx, pod_hash)?
            .map(|rs| rs.images)
            .unwrap_or_default())
    }

    /// Every ReplicaSet of the Rollout (by its `spec.selector`), with its
    /// revision and scale-down deadline.
    pub fn replica_sets(&self, cx: &Context, state: &RolloutState) -> Result<Vec<ReplicaSet>> {
        let args = self.replica_sets_args(state);
        let asking = format!("read the ReplicaSets of rollout {}", self.rollout());
        let out = read_call(cx, &self.path, &args, &asking, &self.target)?;
        replica_sets(&out.stdout).map_err(|e| anyhow!("{asking}: {e:#}"))
    }

    /// The arguments of [`Kubectl::replica_sets`].
    pub fn replica_sets_args(&self, state: &RolloutState) -> Vec<String> {
        self.get_args(&["replicasets.apps", "-l", &state.selector])
    }

    /// The ReplicaSet with this pod-template-hash, if it is still there.
    pub fn replica_set(&self, cx: &Context, pod_hash: &str) -> Result<Option<ReplicaSet>> {
        let selector = format!("rollouts-pod-template-hash={pod_hash}");
        let args = self.get_args(&["replicasets.apps", "-l", &selector]);
        let asking = format!(
            "read the ReplicaSet {pod_hash} of rollout {}",
            self.rollout()
        );
        let out = read_call(cx, &self.path, &args, &asking, &self.target)?;
        let found = replica_sets(&out.stdout).map_err(|e| anyhow!("{asking}: {e:#}"))?;
        Ok(found.into_iter().next())
    }

    /// `kubectl get analysisruns.argoproj.io NAME -o json`: the AnalysisRun's JSON.
    pub fn analysis_run(&self, cx: &Context, name: &str) -> Result<String> {
        let args = self.get_args(&[ANALYSIS_RUN_RESOURCE, name]);
        let asking = format!("read the analysis run {name} of rollout {}", self.rollout());
        Ok(read_call(cx, &self.path, &args, &asking, &self.target)?.stdout)
    }

    /// `kubectl get replicasets.apps -l SELECTOR -o json`: the List's JSON, as
    /// it is (`history` reads more of it than [`Kubectl::replica_sets`] keeps).
    pub fn replica_sets_json(&self, cx: &Context, selector: &str) -> Result<String> {
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
        Some(Ok(done)) => Err(CallFailed {
            message: format!(
                "{asking}: `{line}` exited with {}: {}{}",
                done.status,
                said(&done),
                hint(target, &done.stderr)
            ),
            said: last_line(&said(&done)).to_owned(),
        }
        .into()),
        Some(Err((Cut::Interrupted, _))) => Err(interrupt::Interrupted.into()),
        Some(Err((Cut::Deadline(limit), done))) => Err(CallFailed {
            message: format!(
                "{asking}: `{line}` got no answer within {} and was stopped{}. {}",
                go_duration(limit),
                match done.stderr.trim() {
                    "" => String::new(),
                    stderr => format!(" (it said: {})", last_lines(stderr)),
                },
                unreachable(target)
            ),
            said: format!("no answer within {}", go_duration(limit)),
        }
        .into()),
    }
}

/// A cluster tool that failed or got no answer: the whole message, and what
/// the tool said in one line (for a wait's missed look).
#[derive(Debug)]
pub struct CallFailed {
    pub message: String,
    pub said: String,
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallFailed {}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
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
        context_of(target)
    )
}

fn context_of(target: &RolloutArgs) -> String {
    match &target.context {
        Some(context) => format!("--context {context}"),
        None => "the kubeconfig's current one; set --context or API_KUBE_CONTEXT".to_owned(),
    }
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
/// any retries they logged. Escaped and cut: it came from outside.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 3 {
        return outside_text(&lines.join("\n"), SAID_MAX);
    }
    format!(
        "[{} earlier lines] {}",
        lines.len() - 1,
        outside_text(lines[lines.len() - 1], SAID_MAX)
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
    if let Some(ns) = &target.namespace
        && stderr.contains(&format!("namespaces \"{ns}\" not found"))
    {
        return format!(
            " (namespace {ns} does not exist in this cluster: check -n/--namespace, API_NAMESPACE and \
             KUBE_NAMESPACE, and that the context ({}) is the cluster meant)",
            context_of(target)
        );
    }
    // client-go's exec credential plugin (plugin/pkg/client/auth/exec/exec.go): "getting credentials: exec: ...".
    if stderr.contains("getting credentials") || stderr.contains("exec plugin") {
        return format!(
            " (the kubeconfig's credential plugin failed, so no request reached the API server: log in \
             again (an expired cloud login, say) and check that the plugin runs here, with the context {})",
            context_of(target)
        );
    }
    if stderr.contains("(Unauthorized)") {
        return format!(
            " (the API server did not accept these credentials (401): the token or certificate of the \
             context {} expired or was revoked; log in again, or refresh the CI job's token)",
            context_of(target)
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
    fn a_failing_credential_plugin_is_not_an_unreachable_server() {
        let said = "Unable to connect to the server: getting credentials: exec: executable gke-gcloud-auth-plugin failed with exit code 1";
        let hint = hint(&target(), said);
        assert!(hint.contains("credential plugin failed"), "{hint}");
        assert!(!hint.contains("did not answer"), "{hint}");
    }

    #[test]
    fn unauthorized_and_a_missing_namespace_get_their_own_hints() {
        let hint_401 = hint(
            &target(),
            "error: You must be logged in to the server (Unauthorized)",
        );
        assert!(hint_401.contains("401"), "{hint_401}");
        let missing = hint(
            &target(),
            "Error from server (NotFound): namespaces \"shop\" not found",
        );
        assert!(
            missing.contains("namespace shop does not exist"),
            "{missing}"
        );
    }

    #[test]
    fn kube_flags_carry_the_request_timeout() {
        assert_eq!(
            target().kube_flags(),
            ["-n", "shop", "--request-timeout=10s"]
        );
    }
}
