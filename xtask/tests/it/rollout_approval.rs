//! What is approved is what ships: `promote` ships only the expected image
//! (and digest), `deploy` does not drop someone else's preview, the pipeline's
//! deploy job aborts its own preview when its checks fail, and `status` says
//! what runs where. Races are played out with the doubles' shared state, as
//! two pipelines (or a laptop and a pipeline) would play them on one Rollout.

use crate::rollout_support::{
    self, NAMESPACE, Pod, Ran, World, deploy_args, image, image_v2_args, promote_args, release_args,
};
use crate::support;

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// v1 active (a real api v1); v2 and v3 get ready at once.
fn blue_world() -> Option<(World, Pod)> {
    let (world, blue) = World::blue()?;
    for tag in ["v2", "v3"] {
        world.behaviour(tag, Some(0.0), None);
    }
    Some((world, blue))
}

/// `deploy --wait` of `tag` as a pipeline of that commit runs it, with `extra` flags.
fn deploy(world: &World, tag: &str, extra: &[&str]) -> Ran {
    let flags = ["--tag", tag, "--wait", "--poll-interval", "100ms"];
    world.run(&deploy_args(&[&flags[..], extra].concat()))
}

/// `promote` as the pipeline of `tag` runs it: it expects its own image.
fn promote(world: &World, tag: &str, extra: &[&str]) -> Ran {
    let flags = ["--tag", tag, "--poll-interval", "100ms"];
    world.run(&promote_args(&[&flags[..], extra].concat()))
}

#[test]
fn an_older_pipelines_promote_never_ships_a_newer_preview() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v2", &[]).ok();
    // Pipeline 2 deploys v3 while pipeline 1 waits for its manual promote.
    deploy(&world, "v3", &["--replace"]).ok();
    let changes = world.changes();

    let run = promote(&world, "v2", &[]);
    run.failed();
    assert!(
        run.error().contains(&format!(
            "its preview runs {}, not the expected {}",
            image("v3"),
            image("v2")
        )),
        "{run}"
    );
    assert_eq!(
        world.changes(),
        changes,
        "the refused promote changed something"
    );
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn deploy_refuses_to_drop_someone_elses_paused_preview_unless_replace() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v2", &[]).ok();
    let changes = world.changes();

    let refused = deploy(&world, "v3", &[]);
    refused.failed();
    assert!(
        refused.error().contains(&format!(
            "refusing to deploy {}: rollout api has an update of another image in flight, {} (Paused - BlueGreenPause)",
            image("v3"),
            image("v2")
        )),
        "{refused}"
    );
    assert!(refused.error().contains("--replace"), "{refused}");
    assert_eq!(world.changes(), changes);
    assert_eq!(world.preview_image(), Some(image("v2")));

    deploy(&world, "v3", &["--replace"]).ok();
    assert_eq!(world.preview_image(), Some(image("v3")));
}

#[test]
fn promote_compares_digests_when_one_is_known() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let pinned = format!("{}@{DIGEST_A}", image("v2"));
    let deployed = deploy(&world, "v2", &["--digest", DIGEST_A]);
    assert_eq!(deployed.ok().stdout.trim(), pinned);

    let wrong = promote(&world, "v2", &["--digest", DIGEST_B]);
    wrong.failed();
    assert!(wrong.error().contains("not the expected"), "{wrong}");
    assert!(world.changes().iter().all(|c| !c.starts_with("promote")));

    promote(&world, "v2", &["--digest", DIGEST_A]).ok();
    assert_eq!(world.active_image(), Some(pinned));
}

#[test]
fn the_pipelines_deploy_job_aborts_its_own_preview_when_the_checks_fail() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    // The preview answers with the old version: a stale image.
    let _stale = world.api_pods("v2", "v1");

    let run = world.run(&release_args(&["--no-promote", "--replace"]));
    run.failed();
    assert!(
        run.error()
            .contains("release stopped at step `sanity`; aborted rollout api, read back: Degraded - RolloutAborted"),
        "{run}"
    );
    assert!(world.is_aborted());
    assert_eq!(world.active_image(), Some(image("v1")));
    assert!(world.changes().iter().all(|c| !c.starts_with("promote")));
}

#[test]
fn release_no_promote_leaves_a_checked_preview_for_the_manual_promote() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");

    let run = world.run(&release_args(&["--no-promote"]));
    run.ok();
    assert!(
        run.stderr
            .contains("passed its checks and waits for promotion"),
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v1")));
    promote(&world, "v2", &[]).ok();
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn abort_only_expected_leaves_someone_elses_preview_alone() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v3", &[]).ok();
    let changes = world.changes();
    let run = world.run(&image_v2_args("abort", &["--only-expected"]));
    run.failed();
    assert!(run.error().contains("it is someone else's"), "{run}");
    assert_eq!(world.changes(), changes);
    assert!(!world.is_aborted());
}

#[test]
fn status_says_what_runs_where() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v2", &[]).ok();

    let text = world.run(&["status", "-n", NAMESPACE]);
    let lines = text.ok().stdout_lines();
    assert!(
        lines[0].starts_with("rollout api in namespace shop: Paused - BlueGreenPause"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!("  active:  {} (ReplicaSet ", image("v1")))
            && lines[1].ends_with(", stable"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("  preview: {} (ReplicaSet ", image("v2")))
            && lines[2].ends_with("ready, waiting for promotion"),
        "{text}"
    );

    let json = world.run(&["status", "--json", "-n", NAMESPACE]);
    let json: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(json["active"]["image"], image("v1"));
    assert_eq!(json["preview"]["image"], image("v2"));
    assert_eq!(json["promotion_waiting"], true);
    assert_eq!(json["stable_pod_hash"], json["active"]["pod_hash"]);
    assert_ne!(json["active"]["pod_hash"], json["preview"]["pod_hash"]);
}

#[test]
fn status_before_the_controller_observes_a_new_template_keeps_the_old_one_active() {
    // rollout/sync.go syncRolloutStatusBlueGreen: currentPodHash is written for
    // the template the controller observed; a newer one has no ReplicaSet yet.
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.observe_after(600.0);
    // The image set by hand (deploy itself waits for the controller to observe it).
    let set = support::run(
        world
            .kubectl(&["argo", "rollouts"])
            .args(["set", "image", "api", &format!("api={}", image("v2"))])
            .args(["-n", NAMESPACE]),
    );
    set.ok();

    let json = world.run(&["status", "--json", "-n", NAMESPACE]);
    let json: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(json["observed"], false, "{json:#}");
    assert_eq!(json["active"]["image"], image("v1"), "{json:#}");
    assert_eq!(json["preview"]["image"], image("v2"), "{json:#}");
    assert_eq!(
        json["preview"]["pod_hash"],
        serde_json::Value::Null,
        "{json:#}"
    );

    let text = world.run(&["status", "-n", NAMESPACE]);
    let lines = text.ok().stdout_lines();
    assert!(
        lines[1].starts_with(&format!("  active:  {} (ReplicaSet ", image("v1"))),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "  preview: {} (no ReplicaSet yet: the controller has not seen this template)",
            image("v2")
        )),
        "{text}"
    );
}

/// The plugin calls so far that were of `subcommand`.
fn count(world: &World, subcommand: &str) -> usize {
    world
        .changes()
        .iter()
        .filter(|c| c.starts_with(subcommand))
        .count()
}

#[test]
fn redeploying_the_aborted_image_is_refused_with_the_ways_out() {
    // rollout/sync.go: an unchanged template makes no new generation, so status.abort stays.
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v2", &[]).ok();
    world.run(&["abort", "-n", NAMESPACE, "--yes"]).ok();
    let changes = world.changes();

    let run = deploy(&world, "v2", &[]);
    run.failed();
    let error = run.error();
    for says in [
        "aborted the update to this same image (Rollout aborted update to revision 2, at 20",
        "undo api --to-revision=1 -n shop",
        "retry rollout api",
        "abortScaleDownDelaySeconds",
        "fast-tracks it",
    ] {
        assert!(error.contains(says), "{says:?} missing: {run}");
    }
    assert_eq!(
        world.changes(),
        changes,
        "the refused deploy changed something"
    );
}

#[test]
fn a_deploy_the_controller_would_fast_track_is_refused_unless_fast_rollback() {
    // rollout/bluegreen.go isBlueGreenFastTracked: the old ReplicaSet still has its scale-down deadline.
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");
    world.run(&release_args(&[])).ok();
    assert_eq!(world.active_image(), Some(image("v2")));
    let changes = world.changes();

    // The previous pipeline's image, deployed again within scaleDownDelaySeconds.
    let run = deploy(&world, "v1", &[]);
    run.failed();
    let error = run.error();
    assert!(error.contains("a fast rollback"), "{run}");
    assert!(error.contains("revision 1"), "{run}");
    assert!(error.contains("--fast-rollback"), "{run}");
    assert_eq!(
        world.changes(),
        changes,
        "the refused deploy changed something"
    );
    assert_eq!(world.active_image(), Some(image("v2")));

    // Asked for: traffic switches at once, and release checks the active Service.
    let run = world.run(&release_args(&[
        "--tag",
        "v1",
        "--expect-version",
        "v1",
        "--fast-rollback",
    ]));
    run.ok();
    assert!(
        run.stderr.contains("a fast rollback of rollout api"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("checking api-active instead of the preview"),
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v1")));
    assert_eq!(count(&world, "promote"), 1, "{:?}", world.changes());
}

#[test]
fn after_its_scale_down_deadline_an_old_image_goes_to_the_preview_again() {
    // rollout/replicaset.go scaleDownDelayHelper: past the deadline the old ReplicaSet is scaled down.
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.scale_down_delay(0.5);
    deploy(&world, "v2", &[]).ok();
    promote(&world, "v2", &[]).ok();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let run = deploy(&world, "v1", &[]);
    run.ok();
    assert!(run.stderr.contains("the preview is ready"), "{run}");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn aborting_a_first_revision_sends_nothing() {
    // rollout/sync.go shouldFullPromote: "Initial deploy" makes the first template stable at once.
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    world.behaviour("v2", None, None); // its pods never get ready: Progressing
    world.run(&deploy_args(&[])).ok();

    let run = world.run(&["abort", "-n", NAMESPACE, "--yes"]);
    run.ok();
    assert!(run.stderr.contains("nothing to abort"), "{run}");
    assert!(run.stderr.contains("Initial deploy"), "{run}");
    assert_eq!(count(&world, "abort"), 0, "{:?}", world.changes());
}

#[test]
fn the_abort_holds_only_once_the_controller_wrote_aborted_at() {
    // rollout/pause.go CalculatePauseStatus: abortedAt is the controller's; status.abort the plugin's.
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    deploy(&world, "v2", &[]).ok();
    world.abort_lag(1.5);
    let start = std::time::Instant::now();
    let run = world.run(&["abort", "-n", NAMESPACE, "--yes"]);
    let took = start.elapsed();
    run.ok();
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "claimed before the controller acted: {took:?}\n{run}"
    );
    assert!(run.stderr.contains("(abortedAt 20"), "{run}");
    // The way back names the stable revision and its exact image.
    assert!(
        run.stderr.contains("undo api --to-revision=1 -n shop"),
        "{run}"
    );
    assert!(
        run.stderr.contains(&format!(
            "deploy its exact image, {} (`cargo xtask deploy --image {} --tag v1`)",
            image("v1"),
            rollout_support::REPOSITORY
        )),
        "{run}"
    );
    assert_eq!(count(&world, "abort"), 1, "{:?}", world.changes());
}

#[test]
fn a_tag_with_another_sources_digest_is_refused() {
    // A flag's tag joined to the pipeline's API_IMAGE_DIGEST would run the digest's image.
    let world = World::new(Some("v1"));
    let run = support::run(
        world
            .xtask(&deploy_args(&["--tag", "v3"]))
            .env("API_IMAGE_DIGEST", DIGEST_A),
    );
    run.failed();
    assert!(run.error().contains("API_IMAGE_DIGEST"), "{run}");
    // The other way round: a flag's digest with API_IMAGE_TAG.
    let run = support::run(
        world
            .xtask(&[
                "deploy",
                "-n",
                NAMESPACE,
                "--image",
                rollout_support::REPOSITORY,
                "--digest",
                DIGEST_B,
            ])
            .env("API_IMAGE_TAG", "v3"),
    );
    run.failed();
    assert!(run.error().contains("API_IMAGE_TAG"), "{run}");
    assert!(world.changes().is_empty(), "{:?}", world.changes());
    assert!(
        world.kubectl_calls().is_empty(),
        "{:?}",
        world.kubectl_calls()
    );
    // Both on the command line name one image, as meant: the plan sets it.
    let args = [&["--dry-run"][..], &deploy_args(&["--digest", DIGEST_A])].concat();
    let run = support::run(world.xtask(&args).env("API_IMAGE_DIGEST", DIGEST_B));
    run.ok();
    assert!(
        run.stdout.contains(&format!("{}@{DIGEST_A}", image("v2"))),
        "{run}"
    );
}
