//! The Rollout as the Kubernetes API holds it (`kubectl get rollouts.argoproj.io
//! NAME -o json`): which template is current, which ReplicaSet each Service
//! selects, the pause and the abort, and the phase. Read from the fields,
//! never from the plugin's human text. Field names and meanings follow
//! argo-rollouts `pkg/apis/rollouts/v1alpha1/types.go`.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::analysis::Analysis;

/// The pause a blue/green rollout makes when the preview is ready (`PauseReasonBlueGreenPause`).
pub const BLUE_GREEN_PAUSE: &str = "BlueGreenPause";

/// The reason of the `Progressing` condition once the controller acted on an
/// abort (utils/conditions/conditions.go `RolloutAbortedReason`).
pub const ROLLOUT_ABORTED: &str = "RolloutAborted";

/// The annotation of a ReplicaSet that keeps its pods until a deadline after
/// it left the active Service or was aborted
/// (`DefaultReplicaSetScaleDownDeadlineAnnotationKey` in types.go).
pub const SCALE_DOWN_DEADLINE: &str = "scale-down-deadline";

/// The phases a Rollout reports (`RolloutPhase` in types.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Healthy,
    Progressing,
    Paused,
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Healthy => "Healthy",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Degraded => "Degraded",
        }
    }
}

/// A phase and its message, written as the plugin writes them:
/// `Paused - BlueGreenPause`, `Healthy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseLine {
    pub phase: Phase,
    pub message: String,
}

impl std::fmt::Display for PhaseLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message.as_str() {
            "" => f.write_str(self.phase.as_str()),
            message => write!(f, "{} - {message}", self.phase.as_str()),
        }
    }
}

/// The fields of a Rollout that say what runs where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutState {
    pub generation: i64,
    /// A number as a string since v0.10 (older controllers wrote a hash).
    pub observed_generation: String,
    /// Each container of the pod template and its image: what the newest ReplicaSet runs.
    pub images: Vec<(String, String)>,
    /// The pod-template-hash of the current template's ReplicaSet.
    pub current_pod_hash: String,
    /// The pod-template-hash of the stable ReplicaSet (the last fully promoted one).
    pub stable_rs: String,
    pub active_selector: String,
    pub preview_selector: String,
    pub pause_reasons: Vec<String>,
    pub controller_pause: bool,
    /// `status.abort`: written by the plugin's abort, so it says what was asked, not what was done.
    pub abort: bool,
    /// `status.abortedAt`: written by the controller when it acted on the abort.
    pub aborted_at: String,
    /// The `Progressing` condition's message when its reason is `RolloutAborted`
    /// (`Rollout aborted update to revision N`), written by the controller.
    pub aborted_condition: Option<String>,
    /// The current pre-promotion analysis (`status.blueGreen.prePromotionAnalysisRunStatus`).
    pub analysis: Option<Analysis>,
    /// `spec.selector.matchLabels` as a label selector, `k=v,k2=v2` (sorted): every ReplicaSet of the Rollout.
    pub selector: String,
    /// Whether the controller wrote any status yet (a new Rollout has none before its first reconcile).
    pub has_status: bool,
    phase: String,
    message: String,
}

impl RolloutState {
    pub fn from_json(text: &str) -> Result<RolloutState> {
        let object: Value = serde_json::from_str(text)
            .context("kubectl printed something that is not a Rollout object")?;
        let kind = object.get("kind").and_then(Value::as_str);
        if kind != Some("Rollout") {
            bail!(
                "kubectl returned a {:?}, not a Rollout",
                kind.unwrap_or_default()
            );
        }
        let images = containers(&object, "/spec/template/spec/containers")
            .context("kubectl printed a Rollout without a pod template")?;
        let status = |field: &str| string_at(&object, &format!("/status/{field}"));
        Ok(RolloutState {
            generation: object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            observed_generation: status("observedGeneration"),
            images,
            current_pod_hash: status("currentPodHash"),
            stable_rs: status("stableRS"),
            active_selector: status("blueGreen/activeSelector"),
            preview_selector: status("blueGreen/previewSelector"),
            pause_reasons: object
                .pointer("/status/pauseConditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|condition| string_at(condition, "/reason"))
                .collect(),
            controller_pause: bool_at(&object, "/status/controllerPause"),
            abort: bool_at(&object, "/status/abort"),
            aborted_at: status("abortedAt"),
            aborted_condition: object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| {
                    string_at(c, "/type") == "Progressing"
                        && string_at(c, "/reason") == ROLLOUT_ABORTED
                })
                .map(|c| string_at(c, "/message")),
            analysis: Analysis::of_rollout(&object),
            selector: object
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|labels| {
                    let mut terms: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect();
                    terms.sort();
                    terms.join(",")
                })
                .unwrap_or_default(),
            has_status: object
                .get("status")
                .and_then(Value::as_object)
                .is_some_and(|status| !status.is_empty()),
            phase: status("phase"),
            message: status("message"),
        })
    }

    /// The image of `container` in the current template.
    pub fn image(&self, container: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(name, _)| name == container)
            .map(|(_, image)| image.as_str())
    }

    /// Whether the controller has seen the latest spec
    /// (`isGenerationObserved` in utils/rollout/rolloututil.go).
    pub fn observed(&self) -> bool {
        match self.observed_generation.parse::<i64>() {
            Ok(observed) => observed >= self.generation,
            Err(_) => true,
        }
    }

    /// The phase as the plugin computes it (`GetRolloutPhase` in
    /// utils/rollout/rolloututil.go): an unobserved spec or a pause being
    /// lifted is Progressing whatever the controller last wrote.
    pub fn phase(&self) -> Result<PhaseLine> {
        let line = |phase, message: &str| PhaseLine {
            phase,
            message: message.to_owned(),
        };
        if !self.observed() {
            return Ok(line(
                Phase::Progressing,
                "waiting for rollout spec update to be observed",
            ));
        }
        if self.controller_pause && self.pause_reasons.is_empty() {
            return Ok(line(Phase::Progressing, "waiting for rollout to unpause"));
        }
        let phase = match self.phase.as_str() {
            "Healthy" => Phase::Healthy,
            "Progressing" => Phase::Progressing,
            "Paused" => Phase::Paused,
            "Degraded" => Phase::Degraded,
            "" => bail!(
                "the Rollout has no status.phase: its controller is older than Argo Rollouts v1.0, or has not \
                 reconciled it yet; this tool needs v1.0 or later"
            ),
            other => bail!(
                "the Rollout reports a phase this tool does not know: {other:?} (expected Healthy, \
                 Progressing, Paused or Degraded)"
            ),
        };
        Ok(line(phase, &self.message))
    }

    /// Stable is current: no update in flight (`IsFullyPromoted`).
    pub fn fully_promoted(&self) -> bool {
        !self.current_pod_hash.is_empty() && self.stable_rs == self.current_pod_hash
    }

    /// The preview of the current template is ready and waits for promotion:
    /// the controller saw this template, paused for it, and the preview
    /// Service selects its ReplicaSet.
    pub fn at_blue_green_pause(&self) -> bool {
        self.observed()
            && !self.abort
            && self.pause_reasons.iter().any(|r| r == BLUE_GREEN_PAUSE)
            && self.preview_selector == self.current_pod_hash
    }

    /// The controller acted on an abort of the current template: it wrote
    /// `abortedAt` or the `RolloutAborted` condition, both of which it clears
    /// when it sees a new template (rollout/sync.go resetRolloutStatus).
    /// `status.abort` alone is only what the plugin asked.
    pub fn abort_holds(&self) -> bool {
        self.observed()
            && self.abort
            && (!self.aborted_at.is_empty() || self.aborted_condition.is_some())
    }

    /// Whether the active Service selects the current template's ReplicaSet.
    /// Before the controller observes a new template, `currentPodHash` is still
    /// the old template's, and the new one has no ReplicaSet yet: not current.
    pub fn active_is_current(&self) -> bool {
        self.observed()
            && !self.current_pod_hash.is_empty()
            && self.active_selector == self.current_pod_hash
    }
}

// Read from `serde_json::Value` by hand rather than with serde's derive: the
// derive macro is the longest step of a cold `cargo xtask` build. Missing
// fields read as empty, as the API server omits empty ones.

fn string_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn bool_at(value: &Value, pointer: &str) -> bool {
    value
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_default()
}

/// Each container of the pod spec at `pointer` and its image.
fn containers(value: &Value, pointer: &str) -> Option<Vec<(String, String)>> {
    value
        .pointer(pointer)?
        .as_array()?
        .iter()
        .map(|c| Some((c.get("name")?.as_str()?.to_owned(), string_at(c, "/image"))))
        .collect()
}

/// A ReplicaSet of the Rollout, as far as the tasks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// Its `rollouts-pod-template-hash` label.
    pub pod_hash: String,
    /// Its `rollout.argoproj.io/revision` annotation: what `undo --to-revision` takes.
    pub revision: Option<u64>,
    pub images: Vec<(String, String)>,
    /// `spec.replicas`: 0 once scaled down.
    pub replicas: i64,
    /// The `scale-down-deadline` annotation (RFC 3339), empty when it has none.
    pub scale_down_deadline: String,
}

impl ReplicaSet {
    pub fn image(&self, container: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(name, _)| name == container)
            .map(|(_, image)| image.as_str())
    }
}

/// The ReplicaSets of a list (`kubectl get replicasets.apps -l ... -o json`).
pub fn replica_sets(text: &str) -> Result<Vec<ReplicaSet>> {
    let not_a_list = "kubectl printed something that is not a list of ReplicaSets";
    let list: Value = serde_json::from_str(text).context(not_a_list)?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .context(not_a_list)?;
    items
        .iter()
        .map(|rs| {
            Ok(ReplicaSet {
                pod_hash: string_at(rs, "/metadata/labels/rollouts-pod-template-hash"),
                revision: string_at(rs, "/metadata/annotations/rollout.argoproj.io~1revision")
                    .parse()
                    .ok(),
                images: containers(rs, "/spec/template/spec/containers").context(not_a_list)?,
                replicas: rs
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
                scale_down_deadline: string_at(
                    rs,
                    &format!("/metadata/annotations/{SCALE_DOWN_DEADLINE}"),
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Rollout paused on its preview, trimmed from what the API returns.
    const PAUSED: &str = r#"{
      "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
      "metadata": {"name": "api", "namespace": "shop", "generation": 3},
      "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "reg.example/api:v2"}]}},
        "strategy": {"blueGreen": {"activeService": "api-active", "previewService": "api-preview"}}},
      "status": {"observedGeneration": "3", "currentPodHash": "6f7d8c9b5", "stableRS": "58d9f7c6b4",
        "blueGreen": {"activeSelector": "58d9f7c6b4", "previewSelector": "6f7d8c9b5"},
        "pauseConditions": [{"reason": "BlueGreenPause", "startTime": "2026-12-01T08:00:00Z"}],
        "controllerPause": true, "phase": "Paused", "message": "BlueGreenPause"}
    }"#;

    fn paused() -> RolloutState {
        RolloutState::from_json(PAUSED).unwrap()
    }

    #[test]
    fn a_paused_preview_reads_as_ready_for_promotion() {
        let state = paused();
        assert!(state.at_blue_green_pause());
        assert!(!state.fully_promoted());
        assert!(!state.active_is_current());
        assert_eq!(state.image("api"), Some("reg.example/api:v2"));
        let mut promoted = paused();
        promoted.active_selector = promoted.current_pod_hash.clone();
        assert!(promoted.active_is_current());
        promoted.generation = 4;
        assert!(
            !promoted.active_is_current(),
            "a template not observed yet has no ReplicaSet; the hash is the old template's"
        );
        assert_eq!(
            state.phase().unwrap().to_string(),
            "Paused - BlueGreenPause"
        );
    }

    #[test]
    fn an_unobserved_spec_is_progressing_whatever_the_status_says() {
        let mut state = paused();
        state.generation = 4;
        assert!(
            !state.at_blue_green_pause(),
            "the pause is the old template's"
        );
        assert_eq!(
            state.phase().unwrap().to_string(),
            "Progressing - waiting for rollout spec update to be observed"
        );
    }

    #[test]
    fn a_pause_being_lifted_is_progressing() {
        let mut state = paused();
        state.pause_reasons.clear();
        assert_eq!(
            state.phase().unwrap().to_string(),
            "Progressing - waiting for rollout to unpause"
        );
    }

    #[test]
    fn an_empty_message_is_a_phase_alone() {
        let text = PAUSED
            .replace(
                r#""phase": "Paused", "message": "BlueGreenPause""#,
                r#""phase": "Progressing", "message": """#,
            )
            .replace(r#""controllerPause": true,"#, "");
        let state = RolloutState::from_json(&text).unwrap();
        let line = state.phase().unwrap();
        assert_eq!(
            (line.phase, line.to_string()),
            (Phase::Progressing, "Progressing".to_owned())
        );
    }

    #[test]
    fn an_aborted_preview_is_not_ready() {
        let mut state = paused();
        state.abort = true;
        assert!(!state.at_blue_green_pause());
    }

    #[test]
    fn a_status_without_a_phase_or_with_an_unknown_one_is_refused() {
        let mut state = paused();
        state.phase = String::new();
        assert!(state.phase().unwrap_err().to_string().contains("v1.0"));
        state.phase = "Sideways".into();
        assert!(
            state
                .phase()
                .unwrap_err()
                .to_string()
                .contains("does not know")
        );
    }

    #[test]
    fn something_else_than_a_rollout_is_refused() {
        let err = RolloutState::from_json(&PAUSED.replace("\"Rollout\"", "\"Deployment\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Rollout"), "{err}");
        assert!(RolloutState::from_json("Error: nope").is_err());
    }

    #[test]
    fn a_replica_set_list_gives_its_images() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [{"metadata": {"name": "api-58d9f7c6b4"},
          "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "reg.example/api:v1"}]}}}}]}"#;
        let found = replica_sets(list).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].image("api"), Some("reg.example/api:v1"));
        assert!(replica_sets(r#"{"items": []}"#).unwrap().is_empty());
    }
}
