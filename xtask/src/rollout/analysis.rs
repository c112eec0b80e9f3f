//! The gate in the cluster: the pre-promotion analysis of a blue/green
//! Rollout (rollout.yaml's `prePromotionAnalysis`), as the controller reports
//! it. The Rollout says which AnalysisRun is current and its phase
//! (`status.blueGreen.prePromotionAnalysisRunStatus`); the AnalysisRun says
//! which measurement failed and which Job took it. Field names and phases
//! follow argo-rollouts `pkg/apis/rollouts/v1alpha1/analysis_types.go`.

use anyhow::{Context as _, Result};
use serde_json::Value;

/// The current pre-promotion AnalysisRun, as the Rollout's status names it
/// (`RolloutAnalysisRunStatus`: name, status, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub name: String,
    /// `AnalysisPhase`: Pending, Running, Successful, Failed, Error, Inconclusive.
    pub phase: String,
    pub message: String,
}

impl Analysis {
    /// From a Rollout object; None when no run is current (no analysis
    /// configured, or a new template the controller has not analysed yet).
    pub fn of_rollout(rollout: &Value) -> Option<Analysis> {
        let status = rollout.pointer("/status/blueGreen/prePromotionAnalysisRunStatus")?;
        let field = |name: &str| {
            status
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Analysis {
            name: field("name"),
            phase: field("status"),
            message: field("message"),
        })
    }

    /// Still measuring (`AnalysisPhase.Completed` is false).
    pub fn running(&self) -> bool {
        matches!(self.phase.as_str(), "" | "Pending" | "Running")
    }

    /// Failed or Error: the controller aborts the update (`setPauseOrAbortForBlueGreen`).
    pub fn failed(&self) -> bool {
        matches!(self.phase.as_str(), "Failed" | "Error")
    }

    /// Inconclusive: the controller pauses (`InconclusiveAnalysisRun`) for a person.
    pub fn inconclusive(&self) -> bool {
        self.phase == "Inconclusive"
    }

    /// `Failed: Metric "healthcheck" assessed ...`, or `Running`.
    pub fn summary(&self) -> String {
        let phase = if self.phase.is_empty() {
            "Pending"
        } else {
            &self.phase
        };
        match self.message.as_str() {
            "" => phase.to_owned(),
            message => format!("{phase}: {message}"),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "phase": self.phase,
            "message": self.message,
        })
    }
}

/// What the AnalysisRun object adds: the first metric that did not pass, its
/// last measurement's message, and the Job that took that measurement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failing {
    pub metric: String,
    pub measurement_phase: String,
    pub measurement_message: String,
    /// `job-name` of the measurement's metadata (the job provider's).
    pub job: Option<String>,
}

impl Failing {
    /// From `kubectl get analysisruns.argoproj.io NAME -o json`; None when
    /// every metric passed or is still running.
    pub fn of_run(text: &str) -> Result<Option<Failing>> {
        let run: Value = serde_json::from_str(text)
            .context("kubectl printed something that is not an AnalysisRun")?;
        let results = run
            .pointer("/status/metricResults")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let text = |v: &Value, p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let failing = results.iter().find(|r| {
            matches!(
                r.get("phase").and_then(Value::as_str),
                Some("Failed" | "Error" | "Inconclusive")
            )
        });
        Ok(failing.map(|result| {
            let last = result
                .get("measurements")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            let job = text(&last, "/metadata/job-name");
            Failing {
                metric: text(result, "/name"),
                measurement_phase: text(&last, "/phase"),
                measurement_message: text(&last, "/message").trim().to_owned(),
                job: (!job.is_empty()).then_some(job),
            }
        }))
    }

    /// One line for a person: the measurement and where its Job's log is.
    pub fn text(&self, namespace: Option<&str>) -> String {
        let mut line = format!(
            "metric {}: measurement {}",
            self.metric, self.measurement_phase
        );
        if !self.measurement_message.is_empty() {
            line.push_str(&format!(": {}", self.measurement_message));
        }
        if let Some(job) = &self.job {
            let ns = namespace.map(|n| format!(" -n {n}")).unwrap_or_default();
            line.push_str(&format!(
                "; what the check said: kubectl logs job/{job}{ns}"
            ));
        }
        line
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "metric": self.metric,
            "measurement_phase": self.measurement_phase,
            "measurement_message": self.measurement_message,
            "job": self.job,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_names_the_current_run() {
        let rollout = serde_json::json!({"status": {"blueGreen": {"prePromotionAnalysisRunStatus": {
            "name": "api-6f7d8c9b5-2-pre", "status": "Failed",
            "message": "Metric \"healthcheck\" assessed Failed due to failed (1) > failureLimit (0)"}}}});
        let analysis = Analysis::of_rollout(&rollout).unwrap();
        assert!(analysis.failed() && !analysis.running() && !analysis.inconclusive());
        assert_eq!(
            analysis.summary(),
            "Failed: Metric \"healthcheck\" assessed Failed due to failed (1) > failureLimit (0)"
        );
        assert_eq!(
            Analysis::of_rollout(&serde_json::json!({"status": {}})),
            None
        );
        let running = serde_json::json!({"status": {"blueGreen": {"prePromotionAnalysisRunStatus": {
            "name": "r", "status": "Running"}}}});
        assert!(Analysis::of_rollout(&running).unwrap().running());
    }

    #[test]
    fn the_run_names_the_failing_measurement_and_its_job() {
        let run = r#"{"kind": "AnalysisRun", "status": {"phase": "Inconclusive", "metricResults": [
            {"name": "healthcheck", "phase": "Inconclusive", "measurements": [
              {"phase": "Inconclusive", "message": "Pod p, container healthcheck has terminal error (ErrImagePull): x\n",
               "metadata": {"job-name": "uid.healthcheck.1", "job-namespace": "shop"}}]}]}}"#;
        let failing = Failing::of_run(run).unwrap().unwrap();
        assert_eq!(failing.job.as_deref(), Some("uid.healthcheck.1"));
        assert_eq!(
            failing.text(Some("shop")),
            "metric healthcheck: measurement Inconclusive: Pod p, container healthcheck has terminal \
             error (ErrImagePull): x; what the check said: kubectl logs job/uid.healthcheck.1 -n shop"
        );
        let passed =
            r#"{"status": {"metricResults": [{"name": "healthcheck", "phase": "Successful"}]}}"#;
        assert_eq!(Failing::of_run(passed).unwrap(), None);
        assert!(Failing::of_run("not json").is_err());
    }
}
