//! `cargo xtask history`: the Rollout's revisions, newest first, read from
//! its ReplicaSets (one per pod template the controller rolled out), never
//! from the plugin's text.

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

use super::RolloutArgs;
use super::kube::Kubectl;
use super::state::RolloutState;
use crate::cli::{self, ArgMatches, Task, switch};
use crate::context::Context;

const ABOUT: &str =
    "List the Rollout's revisions, newest first: image and digest, when, which is active";

const LONG_ABOUT: &str = "List the Rollout's revisions, newest first, read from its ReplicaSets: the revision \
number (the controller's `rollout.argoproj.io/revision` annotation), the image with its digest (as the \
pod template names it: an image set by tag has none), when the ReplicaSet was created, and which one is \
active (the active Service selects it), preview (an update in flight) and stable (the last fully \
promoted). Only the ReplicaSets the controller keeps are there: the Rollout's revisionHistoryLimit old \
ones (3 in rollout.yaml) besides the current and the stable. Changes nothing (it also runs under \
--dry-run). One table a person reads, or one JSON object with --json.

Runs (read-only):
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get replicasets.apps -l SELECTOR -o json ...    (the Rollout's spec.selector)";

const AFTER_LONG_HELP: &str = "Environment:
  API_ROLLOUT, API_CONTAINER, API_NAMESPACE (then KUBE_NAMESPACE), API_KUBE_CONTEXT: as the flags

Examples:
  cargo xtask history -n production
  cargo xtask history --json | jq -r '.revisions[] | select(.stable) | .image'";

/// `cargo xtask history`.
#[derive(Debug)]
pub struct History {
    pub target: RolloutArgs,
    pub json: bool,
}

impl Task for History {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("history", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .arg(switch(
                "json",
                "Print one JSON object: rollout, namespace, context, revisions (each: revision, pod_hash, \
                 image, digest, created, active, preview, stable)",
            ))
    }

    fn from(matches: &ArgMatches) -> History {
        History {
            target: RolloutArgs::from(matches),
            json: matches.get_flag("json"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        let kubectl = self.target.kubectl()?;
        let (_, revisions) = read(cx, &kubectl)?;
        let target = &kubectl.target;
        if self.json {
            cx.result(serde_json::json!({
                "rollout": target.rollout,
                "namespace": target.namespace,
                "context": target.context,
                "revisions": revisions.iter().map(Revision::json).collect::<Vec<_>>(),
            }));
            return Ok(());
        }
        let place = match &target.namespace {
            Some(ns) => format!("rollout {} in namespace {ns}", target.rollout),
            None => format!("rollout {}", target.rollout),
        };
        cx.result(format_args!(
            "{place}: {} revision{} kept, newest first",
            revisions.len(),
            if revisions.len() == 1 { "" } else { "s" }
        ));
        cx.result(format_args!(
            "  {:<8}  {:<20}  {:<14}  IMAGE",
            "REVISION", "CREATED", "ROLE"
        ));
        for r in &revisions {
            cx.result(format_args!(
                "  {:<8}  {:<20}  {:<14}  {}",
                r.revision,
                r.created,
                r.roles(),
                r.shown_image()
            ));
        }
        Ok(())
    }
}

/// The Rollout as the API has it now, and its revisions read from its ReplicaSets.
pub fn read(cx: &Context, kubectl: &Kubectl) -> Result<(RolloutState, Vec<Revision>)> {
    let state = kubectl.read(cx)?;
    if state.selector.is_empty() {
        return Err(anyhow!(
            "rollout {} has no spec.selector.matchLabels: its ReplicaSets cannot be listed by label",
            kubectl.rollout()
        ));
    }
    let list = kubectl.replica_sets_json(cx, &state.selector)?;
    let container = &kubectl.target.container;
    let revisions = revisions(&list, &state, kubectl.rollout(), container)
        .with_context(|| format!("read the ReplicaSets of rollout {}", kubectl.rollout()))?;
    Ok((state, revisions))
}

/// One ReplicaSet of the Rollout: one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub revision: u64,
    pub pod_hash: String,
    pub image: String,
    pub created: String,
    pub active: bool,
    pub preview: bool,
    pub stable: bool,
}

impl Revision {
    pub fn digest(&self) -> Option<&str> {
        self.image.split_once('@').map(|(_, digest)| digest)
    }

    fn shown_image(&self) -> String {
        match self.digest() {
            Some(_) => self.image.clone(),
            None => format!("{} (no digest: set by tag)", self.image),
        }
    }

    pub fn roles(&self) -> String {
        let roles: Vec<&str> = [
            (self.active, "active"),
            (self.preview, "preview"),
            (self.stable, "stable"),
        ]
        .into_iter()
        .filter_map(|(is, name)| is.then_some(name))
        .collect();
        match roles.is_empty() {
            true => "-".to_owned(),
            false => roles.join(", "),
        }
    }

    fn json(&self) -> Value {
        serde_json::json!({
            "revision": self.revision,
            "pod_hash": self.pod_hash,
            "image": self.image,
            "digest": self.digest(),
            "created": self.created,
            "active": self.active,
            "preview": self.preview,
            "stable": self.stable,
        })
    }
}

/// The revisions in a `kubectl get replicasets -o json` List: the
/// ReplicaSets the Rollout `rollout` owns, newest revision first, with the
/// image of `container` and their roles read from `state`.
pub fn revisions(
    list: &str,
    state: &RolloutState,
    rollout: &str,
    container: &str,
) -> Result<Vec<Revision>> {
    let list: Value = serde_json::from_str(list)
        .context("kubectl printed something that is not a list of ReplicaSets")?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .context("kubectl printed a list without items")?;
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let in_flight = !state.fully_promoted() || !state.active_is_current();
    let mut revisions = Vec::new();
    for rs in items {
        // The selector may match others' ReplicaSets: only those the Rollout controls.
        let owned = rs
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|o| o["kind"] == "Rollout" && o["name"] == rollout && o["controller"] == true);
        if !owned {
            continue;
        }
        let name = text(rs, "/metadata/name");
        let revision = rs
            .pointer("/metadata/annotations/rollout.argoproj.io~1revision")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<u64>().ok())
            .with_context(|| {
                format!("ReplicaSet {name} has no rollout.argoproj.io/revision number")
            })?;
        let pod_hash = text(rs, "/metadata/labels/rollouts-pod-template-hash");
        let image = rs
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .map(|c| text(c, "/image"))
            .with_context(|| format!("ReplicaSet {name} has no container {container}"))?;
        revisions.push(Revision {
            revision,
            active: !pod_hash.is_empty() && pod_hash == state.active_selector,
            preview: in_flight && !pod_hash.is_empty() && pod_hash == state.current_pod_hash,
            stable: !pod_hash.is_empty() && pod_hash == state.stable_rs,
            created: text(rs, "/metadata/creationTimestamp"),
            pod_hash,
            image,
        });
    }
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    Ok(revisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(hash: &str, revision: &str, image: &str, owner: &str) -> Value {
        serde_json::json!({
            "metadata": {
                "name": format!("api-{hash}"),
                "labels": {"rollouts-pod-template-hash": hash},
                "annotations": {"rollout.argoproj.io/revision": revision},
                "creationTimestamp": "2026-12-01T08:00:00Z",
                "ownerReferences": [{"kind": "Rollout", "name": owner, "controller": true}],
            },
            "spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}},
        })
    }

    fn paused_state() -> RolloutState {
        RolloutState::from_json(
            r#"{"kind": "Rollout", "metadata": {"generation": 3},
              "spec": {"selector": {"matchLabels": {"app": "api"}},
                "template": {"spec": {"containers": [{"name": "api", "image": "r/api:v3"}]}}},
              "status": {"observedGeneration": "3", "currentPodHash": "c3", "stableRS": "b2",
                "blueGreen": {"activeSelector": "b2", "previewSelector": "c3"}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn newest_first_with_roles_and_only_the_rollouts_own() {
        let list = serde_json::json!({"items": [
            rs("a1", "1", "r/api:v1", "api"),
            rs("c3", "10", "r/api:v3@sha256:cc", "api"),
            rs("b2", "9", "r/api:v2@sha256:bb", "api"),
            rs("zz", "99", "r/other:v1", "other"),
        ]})
        .to_string();
        let state = paused_state();
        assert_eq!(state.selector, "app=api");
        let got = revisions(&list, &state, "api", "api").unwrap();
        let seen: Vec<(u64, String, Option<&str>)> = got
            .iter()
            .map(|r| (r.revision, r.roles(), r.digest()))
            .collect();
        assert_eq!(
            seen,
            [
                (10, "preview".to_owned(), Some("sha256:cc")),
                (9, "active, stable".to_owned(), Some("sha256:bb")),
                (1, "-".to_owned(), None),
            ]
        );
        assert_eq!(got[2].shown_image(), "r/api:v1 (no digest: set by tag)");
    }

    #[test]
    fn a_replica_set_without_a_revision_is_an_error_that_names_it() {
        let list = serde_json::json!({"items": [rs("a1", "x", "r/api:v1", "api")]}).to_string();
        let err = revisions(&list, &paused_state(), "api", "api").unwrap_err();
        assert!(
            format!("{err:#}").contains("ReplicaSet api-a1 has no rollout.argoproj.io/revision")
        );
    }
}
