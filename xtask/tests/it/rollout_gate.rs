//! The gate in the cluster: rollout.yaml's pre-promotion analysis, as the
//! controller double runs it. Its Job really runs the preview image's own
//! `api` binary (`api healthcheck --url ... --expect-version SELF`) against the
//! real `api` process that plays the preview's pods, and the controller double
//! pauses for a promotion only after it passed, and aborts when it failed,
//! whoever promotes: here the plugin itself, through kubectl, without xtask.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::rollout_support::{
    NAMESPACE, Pod, Ran, Spawned, World, image, promote_args, release_args,
};
use crate::support;
use serde_json::Value;

/// `kubectl ARGS` in the world (the kubectl double, the plugin double behind
/// `kubectl argo rollouts`), finished.
fn kubectl(world: &World, args: &[&str]) -> Ran {
    support::run(world.kubectl(args).args(["-n", NAMESPACE]))
}

/// A person with the plugin: `kubectl argo rollouts set image api api=IMAGE`.
fn set_image(world: &World, tag: &str) {
    let container = format!("api={}", image(tag));
    kubectl(
        world,
        &["argo", "rollouts", "set", "image", "api", &container],
    )
    .ok();
}

/// A person with the plugin: `kubectl argo rollouts promote api`.
fn plugin_promote(world: &World) -> Ran {
    kubectl(world, &["argo", "rollouts", "promote", "api"])
}

/// Reads the Rollout until `done` holds (5 s at most), promoting with the
/// plugin at every look when `promote` says so; the last object read.
fn until(world: &World, promote: bool, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if promote {
            plugin_promote(world).ok();
        }
        let ro = world.rollout_object();
        if done(&ro) || Instant::now() > deadline {
            return ro;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn analysis_status(ro: &Value) -> &Value {
    &ro["status"]["blueGreen"]["prePromotionAnalysisRunStatus"]
}

fn analysis_run(world: &World, name: &str) -> Value {
    let got = kubectl(
        world,
        &["get", "analysisruns.argoproj.io", name, "-o", "json"],
    );
    got.ok();
    serde_json::from_str(&got.stdout).unwrap()
}

/// v1 active (a real api v1), the gate on, its Job taking `run_for` seconds;
/// v2's pods are a real api that reports `serves` (the pods are dropped before
/// the world, which checks that none is left).
fn world_with_v2_pods_reporting(serves: &str, run_for: Option<f64>) -> Option<(World, Pod, Pod)> {
    let (world, blue) = World::blue()?;
    world.gate(run_for);
    world.image_binary("v2", "v2");
    world.behaviour("v2", Some(0.1), None);
    let green = world.api_pods("v2", serves);
    Some((world, blue, green))
}

#[test]
fn a_preview_that_reports_another_version_is_aborted_even_when_the_plugin_promotes() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v1-stale", Some(0.2)) else {
        return;
    };
    set_image(&world, "v2");
    // Promoted over and over, straight through the plugin: the controller never switches.
    let ro = until(&world, true, |ro| ro["status"]["phase"] == "Degraded");
    let status = &ro["status"];
    assert_eq!(status["phase"], "Degraded", "{ro:#}");
    assert_eq!(status["abort"], true);
    assert_eq!(world.active_image().as_deref(), Some(image("v1").as_str()));
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("RolloutAborted: Rollout aborted update to revision 2: Blue/green pre-promotion analysis phase error/failed: Metric \"healthcheck\" assessed Failed due to failed (1) > failureLimit (0)"),
        "{message}"
    );
    let summary = analysis_status(&ro);
    assert_eq!(summary["status"], "Failed");
    let run = analysis_run(&world, summary["name"].as_str().unwrap());
    assert_eq!(run["status"]["phase"], "Failed");
    let measurement = &run["status"]["metricResults"][0]["measurements"][0];
    assert_eq!(measurement["phase"], "Failed");
    // What the Job's container said: the real binary of image v2 against the pods' v1-stale.
    let job = measurement["metadata"]["job-name"].as_str().unwrap();
    let log = kubectl(&world, &["logs", &format!("job/{job}")]);
    log.ok();
    assert!(
        log.stdout.contains("not version \"v2\"") && log.stdout.contains("v1-stale"),
        "{log}"
    );
}

#[test]
fn a_preview_that_passes_pauses_for_the_promotion_and_the_plugin_promotes_it() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v2", None) else {
        return;
    };
    set_image(&world, "v2");
    // Before the Job ends: Progressing, the run Running, no pause to promote.
    plugin_promote(&world).ok(); // no pause condition to clear yet: nothing changes
    let ro = world.rollout_object();
    assert_eq!(ro["status"]["phase"], "Progressing", "{ro:#}");
    assert_eq!(analysis_status(&ro)["status"], "Running", "{ro:#}");
    world.gate_jobs_take(0.0);
    let ro = until(&world, false, |ro| ro["status"]["phase"] == "Paused");
    assert_eq!(ro["status"]["message"], "BlueGreenPause", "{ro:#}");
    assert_eq!(analysis_status(&ro)["status"], "Successful");
    plugin_promote(&world).ok();
    let ro = until(&world, false, |ro| ro["status"]["phase"] == "Healthy");
    assert_eq!(ro["status"]["phase"], "Healthy", "{ro:#}");
    assert_eq!(world.active_image().as_deref(), Some(image("v2").as_str()));
}

#[test]
fn an_image_the_job_cannot_pull_is_inconclusive_and_a_promote_runs_it_again() {
    let Some((world, _blue)) = World::blue() else {
        return;
    };
    world.gate(Some(0.1));
    world.behaviour("v2", Some(0.1), None);
    set_image(&world, "v2");
    let ro = until(&world, false, |ro| ro["status"]["phase"] == "Paused");
    assert_eq!(ro["status"]["message"], "InconclusiveAnalysisRun", "{ro:#}");
    assert_eq!(
        ro["status"]["pauseConditions"][0]["reason"],
        "InconclusiveAnalysisRun"
    );
    let first = analysis_status(&ro)["name"].as_str().unwrap().to_owned();
    let run = analysis_run(&world, &first);
    assert_eq!(run["status"]["phase"], "Inconclusive");
    let message = run["status"]["metricResults"][0]["measurements"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("has terminal error (ErrImagePull)"),
        "{message}"
    );
    // The image is there now; a promote of the inconclusive pause runs the analysis again.
    let _green = world.api_pods("v2", "v2");
    world.image_binary("v2", "v2");
    plugin_promote(&world).ok();
    let ro = until(&world, false, |ro| {
        ro["status"]["message"] == "BlueGreenPause"
    });
    assert_eq!(analysis_status(&ro)["status"], "Successful", "{ro:#}");
    assert_ne!(analysis_status(&ro)["name"], first.as_str(), "a new run");
    assert_eq!(world.active_image().as_deref(), Some(image("v1").as_str()));
}

#[test]
fn deploy_wait_and_status_name_an_inconclusive_check_and_what_to_do() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.gate(Some(0.1));
    world.behaviour("v2", Some(0.1), None);
    // No Job binary for v2: its Job cannot pull the image, the run is Inconclusive.
    let run = world.run(&crate::rollout_support::deploy_args(&[
        "--wait",
        "--poll-interval",
        "100ms",
        "--timeout",
        "10s",
    ]));
    run.failed();
    let error = run.error();
    assert!(
        error.contains("is Paused - InconclusiveAnalysisRun: the preview's in-cluster check api-")
            && error.contains("(Inconclusive: Metric \"healthcheck\" assessed Inconclusive")
            && error.contains("`kubectl argo rollouts promote api` resumes it")
            && error.contains("`cargo xtask abort` drops the preview"),
        "{run}"
    );
    assert!(!error.contains("by hand"), "{run}");
    let status = world.run(&["status", "-n", NAMESPACE]);
    status.ok();
    assert!(
        status.stdout.contains(
            "Paused - InconclusiveAnalysisRun (the preview's in-cluster check was inconclusive"
        ),
        "{status}"
    );
    assert!(!status.stdout.contains("by hand"), "{status}");
}

#[test]
fn jobs_the_controller_cannot_create_end_the_run_in_error_and_abort() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v2", Some(0.2)) else {
        return;
    };
    world.gate_jobs_forbidden();
    set_image(&world, "v2");
    let ro = until(&world, true, |ro| ro["status"]["phase"] == "Degraded");
    assert_eq!(ro["status"]["abort"], true, "{ro:#}");
    assert_eq!(analysis_status(&ro)["status"], "Error");
    let message = analysis_status(&ro)["message"].as_str().unwrap();
    assert!(
        message.contains("consecutiveErrors (5) > consecutiveErrorLimit (4)")
            && message.contains("jobs.batch is forbidden"),
        "{message}"
    );
    assert_eq!(world.active_image().as_deref(), Some(image("v1").as_str()));
}

// ---- the tasks see the gate ----

/// The failing world of the first test, after the controller aborted v2.
fn aborted_by_the_check() -> Option<(World, Pod, Pod)> {
    let (world, blue, green) = world_with_v2_pods_reporting("v1-stale", Some(0.2))?;
    set_image(&world, "v2");
    let ro = until(&world, false, |ro| ro["status"]["phase"] == "Degraded");
    assert_eq!(analysis_status(&ro)["status"], "Failed", "{ro:#}");
    Some((world, blue, green))
}

#[test]
fn status_shows_the_failed_check_its_measurement_and_where_its_log_is() {
    let Some((world, _blue, _green)) = aborted_by_the_check() else {
        return;
    };
    let run = world.run(&["status", "-n", NAMESPACE]);
    assert_eq!(run.code, Some(1), "Degraded\n{run}");
    let check = run
        .stdout
        .lines()
        .find(|l| l.starts_with("  check:"))
        .unwrap_or_else(|| panic!("no check line\n{run}"));
    assert!(
        check.contains("-2-pre: Failed: Metric \"healthcheck\" assessed Failed due to failed (1) > failureLimit (0)"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("failed its in-cluster check and the controller aborted it")
            && run.stdout.contains(
                "metric healthcheck: measurement Failed; what the check said: kubectl logs job/"
            )
            && run.stdout.contains(" -n shop"),
        "{run}"
    );

    let json = world.run(&["status", "-n", NAMESPACE, "--json"]);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["analysis"]["phase"], "Failed");
    let job = json["analysis"]["failing"]["job"].as_str().unwrap();
    // The job named is the one whose log says why.
    let log = kubectl(&world, &["logs", &format!("job/{job}")]);
    assert!(log.stdout.contains("not version \"v2\""), "{log}");
}

#[test]
fn promote_refuses_after_a_failed_check_and_changes_nothing() {
    let Some((world, _blue, _green)) = aborted_by_the_check() else {
        return;
    };
    let before = world.calls().len();
    let run = world.run(&promote_args(&["--yes"]));
    run.failed();
    assert!(
        run.error()
            .contains("failed the in-cluster check (pre-promotion analysis api-")
            && run.error().contains("deploy a fixed image"),
        "{run}"
    );
    assert_eq!(world.calls().len(), before, "no plugin call\n{run}");
    assert_eq!(world.active_image().as_deref(), Some(image("v1").as_str()));
}

#[test]
fn promote_waits_for_a_running_check_then_promotes() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v2", None) else {
        return;
    };
    set_image(&world, "v2");
    let ro = until(&world, false, |ro| {
        analysis_status(ro)["status"] == "Running"
    });
    assert_eq!(analysis_status(&ro)["status"], "Running", "{ro:#}");
    let promote = Spawned::new(
        world
            .xtask(&promote_args(&[
                "--yes",
                "--poll-interval",
                "100ms",
                "--timeout",
                "20s",
            ]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // The promote polls while the check runs; then the Job ends.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        world
            .calls()
            .iter()
            .all(|c| !c.contains(&"promote".to_owned())),
        "promoted during the check"
    );
    world.gate_jobs_take(0.0);
    let run = promote.finish();
    run.ok();
    assert!(
        run.stderr
            .contains("waiting for the preview's in-cluster check (pre-promotion analysis) to end"),
        "{run}"
    );
    assert_eq!(world.active_image().as_deref(), Some(image("v2").as_str()));
}

#[test]
fn release_names_the_check_in_its_summary() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v2", Some(0.2)) else {
        return;
    };
    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr.contains("released ")
            && run.stderr.contains("(version v2, in-cluster check api-")
            && run.stderr.contains("-2-pre: Successful)"),
        "{run}"
    );
    assert_eq!(world.active_image().as_deref(), Some(image("v2").as_str()));
}

#[test]
fn release_of_a_preview_that_fails_the_check_ends_aborted_and_says_why() {
    let Some((world, _blue, _green)) = world_with_v2_pods_reporting("v1-stale", Some(0.2)) else {
        return;
    };
    let run = world.run(&release_args(&[]));
    run.failed();
    assert!(
        run.stderr.contains(
            "pre-promotion analysis phase error/failed: Metric \"healthcheck\" assessed Failed"
        ),
        "{run}"
    );
    assert!(world.is_aborted());
    assert_eq!(world.active_image().as_deref(), Some(image("v1").as_str()));
}
