//! `rollback` end to end, and GitLab's own rollback (re-running an older
//! pipeline's deploy job) through the same gate: the earlier image, by
//! digest, goes to the preview, the controller double runs the in-cluster
//! analysis (the image's own binary against its pods), sanity expects the
//! version that image reports, and promote switches traffic to it.
//!
//! The earlier image's tag is a real commit of this clone (HEAD), as
//! `package` tags images, so the version it reports is `git describe` of it.

use std::process::Command;

use crate::rollout_support::{NAMESPACE, Pod, REPOSITORY, World, image, root};
use crate::support;
use serde_json::Value;

/// `TAG@sha256:` and 64 times `fill`: an image reference by digest.
fn by_digest(tag: &str, fill: char) -> String {
    format!("{tag}@sha256:{}", fill.to_string().repeat(64))
}

/// `git ARGS` in the clone; its stdout, trimmed.
fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Revision 1 (HEAD's image, by digest) was active; revision 2 (v2) was
/// rolled out and promoted by a person with the plugin, then the gate went on.
/// The old ReplicaSet keeps its pods for `scale_down_delay` seconds after the
/// switch. Revision 1's image holds, and its pods run, a real api compiled
/// with `version`.
struct Rolled {
    // Dropped first: the world checks that no process of its own is left.
    _old_pods: Pod,
    world: World,
    old_tag: String,
    version: String,
}

fn rolled_forward(scale_down_delay: f64, version: &str) -> Option<Rolled> {
    let old_tag = by_digest(&git(&["rev-parse", "HEAD"]), '1');
    let world = World::needing_kubectl(Some(&old_tag))?;
    world.scale_down_delay(scale_down_delay);
    let v2 = by_digest("v2", '2');
    world.behaviour(&v2, Some(0.0), None);
    world.plugin_by_hand(&["set", "image", "api", &format!("api={}", image(&v2))]);
    world.wait_for_phase("Paused");
    world.plugin_by_hand(&["promote", "api"]);
    world.wait_for_phase("Healthy");
    assert_eq!(world.active_image(), Some(image(&v2)));
    world.gate(Some(0.1));
    world.image_binary(&old_tag, version);
    world.behaviour(&old_tag, Some(0.1), None);
    let old_pods = world.api_pods(&old_tag, version);
    Some(Rolled {
        world,
        old_tag,
        version: version.to_owned(),
        _old_pods: old_pods,
    })
}

/// The version `package` compiled into HEAD's image.
fn head_version() -> String {
    git(&["describe", "--tags", "--always", "HEAD"])
}

const QUICK: [&str; 8] = [
    "-n",
    NAMESPACE,
    "--poll-interval",
    "100ms",
    "--timeout",
    "20s",
    "--sanity-timeout",
    "10s",
];

fn rollback(world: &World, extra: &[&str]) -> support::Ran {
    world.run(&[&["rollback"][..], &QUICK, extra].concat())
}

/// The plugin's subcommands xtask ran, with the image for `set image`.
fn plugin_steps(world: &World) -> Vec<String> {
    world
        .calls()
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| match c[0].as_str() {
            "set" => format!("set image {}", c[3]),
            other => other.to_owned(),
        })
        .collect()
}

/// The analysis the controller double ran for the current template: its phase.
fn analysis_phase(world: &World) -> Value {
    let runs = world.rollout()["analysis_runs"].clone();
    runs.as_array()
        .and_then(|r| r.last())
        .map_or(Value::Null, |r| r["phase"].clone())
}

#[test]
fn rollback_returns_to_the_previous_stable_image_through_preview_analysis_and_promote() {
    let Some(r) = rolled_forward(0.0, &head_version()) else {
        return;
    };
    let world = &r.world;
    let before = world.calls().len();
    let run = rollback(world, &[]);
    run.ok();
    let old = image(&r.old_tag);
    assert_eq!(run.stdout_lines().last(), Some(&old.as_str()), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "rollback of rollout api from revision 2 to revision 1: {old}, which reports version {}",
            r.version
        )),
        "{run}"
    );
    assert!(
        run.stderr
            .contains(&format!("released {old} (version {}", r.version)),
        "sanity expected the image's own version: {run}"
    );
    assert_eq!(
        plugin_steps(world)[before..],
        [format!("set image api={old}"), "promote".to_owned()],
        "{run}"
    );
    assert_eq!(analysis_phase(world), "Successful", "{:#}", world.rollout());
    assert_eq!(world.active_image(), Some(old.clone()));
    // The re-used ReplicaSet takes the next revision: 3, now active and stable.
    let history = world.run(&["history", "-n", NAMESPACE, "--json"]);
    history.ok();
    let json: Value = serde_json::from_str(&history.stdout).unwrap();
    let newest = &json["revisions"][0];
    assert_eq!(newest["revision"], 3, "{json:#}");
    assert_eq!(newest["image"], old.as_str());
    assert!(
        newest["active"] == true && newest["stable"] == true,
        "{json:#}"
    );
}

#[test]
fn the_plan_names_the_revision_and_version_then_the_release_it_runs() {
    let Some(r) = rolled_forward(0.0, &head_version()) else {
        return;
    };
    let world = &r.world;
    let before = world.calls().len();
    let run = world.run(&[&["--dry-run", "rollback"][..], &QUICK].concat());
    run.ok();
    let old = image(&r.old_tag);
    let lines = run.stdout_lines();
    assert_eq!(
        lines[0],
        format!(
            "# rollback of rollout api from revision 2 to revision 1: {old}, which reports version {}",
            r.version
        ),
        "{run}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" set image api api=") && l.contains(&old)),
        "{run}"
    );
    assert!(lines.iter().any(|l| l.contains(" promote api")), "{run}");
    assert_eq!(lines.last(), Some(&format!("# result: {old}").as_str()));
    assert_eq!(world.calls().len(), before, "a dry run called the plugin");
    support::runs::assert_runs_describe("rollback", &run.stdout);
}

#[test]
fn a_fast_track_is_refused_unless_asked_for() {
    // The old ReplicaSet keeps its pods for 60 s after the switch: the controller would fast-track it.
    let Some(r) = rolled_forward(60.0, &head_version()) else {
        return;
    };
    let world = &r.world;
    let before = world.calls().len();
    let refused = rollback(world, &[]);
    refused.failed();
    assert!(
        refused.error().contains("isBlueGreenFastTracked")
            && refused.error().contains("Pass --fast-rollback"),
        "{refused}"
    );
    assert_eq!(world.calls().len(), before, "nothing changed: {refused}");

    let run = rollback(world, &["--fast-rollback"]);
    run.ok();
    let old = image(&r.old_tag);
    assert_eq!(world.active_image(), Some(old.clone()));
    assert_eq!(
        plugin_steps(world)[before..],
        [format!("set image api={old}")],
        "no preview, no promote: {run}"
    );
}

#[test]
fn the_stable_revision_is_nothing_to_do_and_a_missing_one_lists_those_kept() {
    let Some(r) = rolled_forward(0.0, &head_version()) else {
        return;
    };
    let world = &r.world;
    let before = world.calls().len();
    let same = rollback(world, &["--to-revision", "2"]);
    same.ok();
    assert!(
        same.stderr
            .contains("revision 2 of rollout api (registry.example.com/shop/api:v2@sha256:"),
        "{same}"
    );
    assert!(same.stderr.contains("nothing to roll back"), "{same}");
    let missing = rollback(world, &["--to-revision", "7"]);
    missing.failed();
    assert!(
        missing.error().contains(&format!(
            "rollout api has no revision 7 (the controller keeps revisionHistoryLimit old ReplicaSets \
             and drops the oldest); give one of those kept with --to-revision: 2 (active, stable) \
             {}, 1 (-) {}",
            image(&by_digest("v2", '2')),
            image(&r.old_tag)
        )),
        "{missing}"
    );
    assert_eq!(world.calls().len(), before, "nothing changed");
}

#[test]
fn an_image_tag_that_is_no_commit_here_needs_the_version_given() {
    let old_tag = by_digest("0123456789abcdef0123456789abcdef01234567", '1');
    let Some(world) = World::needing_kubectl(Some(&old_tag)) else {
        return;
    };
    world.scale_down_delay(0.0);
    let v2 = by_digest("v2", '2');
    world.behaviour(&v2, Some(0.0), None);
    world.plugin_by_hand(&["set", "image", "api", &format!("api={}", image(&v2))]);
    world.wait_for_phase("Paused");
    world.plugin_by_hand(&["promote", "api"]);
    world.wait_for_phase("Healthy");
    let before = world.calls().len();
    let run = rollback(&world, &[]);
    run.failed();
    assert!(
        run.error().contains(
            "the commit 0123456789abcdef0123456789abcdef01234567 of registry.example.com/shop/api:"
        ) && run.error().contains("`git fetch --tags origin`")
            && run.error().contains("--expect-version"),
        "{run}"
    );
    assert_eq!(world.calls().len(), before, "nothing changed");
}

// --- GitLab's own rollback: an older pipeline's deploy job, run again ------

/// The script line of `job` in .gitlab-ci.yml, without `cargo xtask`.
fn job_line(job: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".gitlab-ci.yml")).unwrap();
    let pipeline: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let script = pipeline[job]["script"].as_sequence().unwrap();
    assert_eq!(script.len(), 1, "{job}: one line");
    let line = script[0].as_str().unwrap();
    let args = line.strip_prefix("cargo xtask ").unwrap();
    args.split_whitespace().map(str::to_owned).collect()
}

/// `job`'s line as GitLab runs it again in the older pipeline: that
/// pipeline's commit checked out (here HEAD), its variables, and the dotenv
/// report its package job left (`package.env`).
fn rerun_job(world: &World, job: &str, extra: &[&str], old_tag: &str) -> support::Ran {
    let dotenv = world.dir.join("package.env");
    let (sha, digest) = old_tag.split_once('@').unwrap();
    std::fs::write(&dotenv, format!("API_IMAGE_DIGEST={digest}\n")).unwrap();
    let mut cmd = world.xtask(&[]);
    cmd.args(job_line(job))
        .args(extra)
        .env("CI_REGISTRY_IMAGE", REPOSITORY)
        .env("CI_COMMIT_SHA", sha)
        .env("KUBE_NAMESPACE", NAMESPACE);
    // GitLab's dotenv report: each KEY=VALUE line a variable of the later jobs.
    for line in std::fs::read_to_string(&dotenv).unwrap().lines() {
        let (key, value) = line.split_once('=').unwrap();
        cmd.env(key, value);
    }
    support::run(&mut cmd)
}

/// The version the re-run job's checkout builds (`git describe --dirty`,
/// what `release` expects without API_VERSION).
fn checkout_version() -> String {
    git(&["describe", "--tags", "--always", "--dirty"])
}

#[test]
fn an_older_pipelines_deploy_job_run_again_goes_through_the_gate() {
    let Some(r) = rolled_forward(0.0, &checkout_version()) else {
        return;
    };
    let world = &r.world;
    let old = image(&r.old_tag);
    let before = world.calls().len();
    // Rolling `production` back first retries only `promote`: the preview is not its image.
    let early = rerun_job(world, "promote", &[], &r.old_tag);
    early.failed();
    assert_eq!(world.calls().len(), before, "nothing changed: {early}");
    let deploy = rerun_job(world, "deploy", &[], &r.old_tag);
    deploy.ok();
    assert!(
        deploy.stderr.contains(&format!(
            "checked the preview of {old} (version {}",
            r.version
        )),
        "{deploy}"
    );
    assert_eq!(world.preview_image(), Some(old.clone()));
    assert_eq!(analysis_phase(world), "Successful");
    let promote = rerun_job(world, "promote", &[], &r.old_tag);
    promote.ok();
    assert_eq!(world.active_image(), Some(old.clone()), "{promote}");
    assert_eq!(
        plugin_steps(world)[before..],
        [format!("set image api={old}"), "promote".to_owned()]
    );
}

#[test]
fn an_older_pipelines_deploy_job_is_refused_as_a_fast_track_unless_the_flag() {
    let Some(r) = rolled_forward(60.0, &checkout_version()) else {
        return;
    };
    let world = &r.world;
    let before = world.calls().len();
    let refused = rerun_job(world, "deploy", &[], &r.old_tag);
    refused.failed();
    assert!(
        refused.error().contains("Pass --fast-rollback"),
        "{refused}"
    );
    assert_eq!(world.calls().len(), before, "nothing changed: {refused}");

    let run = rerun_job(world, "deploy", &["--fast-rollback"], &r.old_tag);
    run.ok();
    assert_eq!(world.active_image(), Some(image(&r.old_tag)), "{run}");
}
