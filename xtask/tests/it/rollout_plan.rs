//! Dry-run plans of the blue/green tasks (the exact plugin command lines, with
//! the kubeconfig flags after the subcommand, and the reads each wait polls),
//! name checks, a missing plugin. The doubles are first on PATH, so read-only
//! probes (`kubectl get`) really run.

use crate::rollout_support::{
    GET_ROLLOUT, NAMESPACE, REPOSITORY, World, deploy_args, doubles, image, image_v2_args,
};
use crate::support::{self, run};

fn plugin() -> String {
    doubles()
        .join("kubectl-argo-rollouts")
        .display()
        .to_string()
}

fn kubectl() -> String {
    doubles().join("kubectl").display().to_string()
}

/// The read every wait polls, in namespace shop.
fn get_rollout() -> String {
    format!(
        "{} get rollouts.argoproj.io api -o json -n shop --request-timeout=10s",
        kubectl()
    )
}

/// `--dry-run ARGS` in `world`, which must succeed: the plan, line by line.
fn plan(world: &World, args: &[&str]) -> Vec<String> {
    let run = world.run(&[&["--dry-run"][..], args].concat());
    run.ok();
    run.stdout_lines().into_iter().map(str::to_owned).collect()
}

#[test]
fn deploy_plan_is_set_image_with_kube_flags_after_the_subcommand() {
    let world = World::new(Some("v1"));
    let p = plugin();
    let got = plan(&world, &deploy_args(&["--context", "prod-eu"]));
    support::runs::assert_runs_describe("deploy", &got[0]);
    assert_eq!(
        got,
        [
            format!(
                "{p} set image api api={REPOSITORY}:v2 -n shop --context prod-eu --request-timeout=10s"
            ),
            format!("# result: {}", image("v2")),
        ]
    );
    assert!(
        world.calls().is_empty(),
        "a dry run called the plugin: {:?}",
        world.calls()
    );
}

#[test]
fn deploy_wait_plan_adds_the_status_polls() {
    let world = World::new(Some("v1"));
    let run = world.run(&deploy_args(&[
        "--dry-run",
        "--wait",
        "--timeout",
        "5m",
        "--poll-interval",
        "1s",
    ]));
    run.ok();
    let p = plugin();
    assert_eq!(
        run.stdout_lines(),
        [
            format!("{p} set image api api={REPOSITORY}:v2 -n shop --request-timeout=10s"),
            format!(
                "# wait until the preview is ready (`Paused - BlueGreenPause`, or Healthy), at most 300s, every 1s: {}",
                get_rollout()
            ),
            format!("# result: {}", image("v2")),
        ]
    );
    assert!(world.calls().is_empty());
}

#[test]
fn deploy_takes_image_and_tag_from_gitlab_ci_variables() {
    let world = World::new(Some("v1"));
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let run = run(world
        .xtask(&["--dry-run", "deploy"])
        .env("CI_REGISTRY_IMAGE", "registry.gitlab.com/group/api")
        .env("CI_COMMIT_SHA", sha)
        .env("KUBE_NAMESPACE", NAMESPACE));
    run.ok();
    assert_eq!(
        run.stdout_lines()[0],
        format!(
            "{} set image api api=registry.gitlab.com/group/api:{sha} -n shop --request-timeout=10s",
            plugin()
        )
    );
}

#[test]
fn api_namespace_wins_over_gitlabs_kube_namespace() {
    let world = World::new(Some("v1"));
    // A second Rollout, api-canary with a container web, beside api.
    let mut state = world.state();
    let mut canary = state["rollouts"]["shop/api"].clone();
    canary["name"] = "api-canary".into();
    let image = canary["containers"]["api"].clone();
    canary["containers"] = serde_json::json!({ "web": image });
    canary["active"] = canary["containers"].clone();
    canary["history"] = serde_json::json!([{"revision": 1, "containers": canary["containers"]}]);
    state["rollouts"]["shop/api-canary"] = canary;
    world.write_state(&state);
    let run = run(world
        .xtask(&["--dry-run", "deploy", "--tag", "v2"])
        .env("API_NAMESPACE", "shop")
        .env("KUBE_NAMESPACE", "review-42")
        .env("API_ROLLOUT", "api-canary")
        .env("API_CONTAINER", "web"));
    run.ok();
    assert_eq!(
        run.stdout_lines()[0],
        format!(
            "{} set image api-canary web=api:v2 -n shop --request-timeout=10s",
            plugin()
        )
    );
}

#[test]
fn status_is_read_only_so_it_runs_under_dry_run() {
    let world = World::new(Some("v1"));
    let run = world.run(&["--dry-run", "status", "-n", NAMESPACE]);
    run.ok();
    assert!(
        run.stdout
            .starts_with("rollout api in namespace shop: Healthy"),
        "{run}"
    );
    assert!(world.calls().is_empty(), "{:?}", world.calls());
    assert_eq!(
        world.kubectl_calls(),
        [[&GET_ROLLOUT[..], &["--request-timeout=10s"]].concat()]
    );
}

#[test]
fn promote_plan_is_promote_then_the_watch_until_healthy() {
    let world = World::paused_on_v2();
    let before = world.changes();
    let expect = image("v2");
    let p = plugin();
    let got = plan(
        &world,
        &[
            "promote",
            "-n",
            NAMESPACE,
            "--timeout",
            "2m",
            "--expect-image",
            &expect,
        ],
    );
    support::runs::assert_runs_describe("promote", &got.join("\n"));
    assert_eq!(
        got,
        [
            format!("{p} promote api -n shop --request-timeout=10s"),
            format!(
                "# wait until Healthy, the active Service on the promoted ReplicaSet, at most 120s, every 2s: {}",
                get_rollout()
            ),
        ]
    );
    assert_eq!(world.changes(), before, "a dry run changed the rollout");
}

#[test]
fn abort_plan_is_the_abort() {
    let world = World::paused_on_v2();
    let before = world.changes();
    let got = plan(&world, &["abort", "-n", NAMESPACE]);
    support::runs::assert_runs_describe("abort", &got.join("\n"));
    assert_eq!(
        got,
        [
            format!("{} abort api -n shop --request-timeout=10s", plugin()),
            format!(
                "# wait until the abort holds (Degraded - RolloutAborted, the latest template seen), or Healthy, \
                 at most 60s, every 500ms: {}",
                get_rollout()
            ),
        ]
    );
    assert_eq!(world.changes(), before);
}

#[test]
fn sanity_plan_is_the_port_forward_and_the_checks() {
    let world = World::new(Some("v1"));
    assert_eq!(
        plan(&world, &["sanity", "-n", NAMESPACE, "--expect-version", "v2"]),
        [
            format!(
                "# {} port-forward service/api-preview :80 --address 127.0.0.1 --pod-running-timeout=30s -n shop   \
                 (in the background, stopped afterwards)",
                kubectl()
            ),
            "# check http://127.0.0.1:<forwarded port>: GET /health answers 200 with status \"ok\" and \
             version \"v2\", GET / answers 200; retried for at most 60s"
                .to_owned(),
        ]
    );
}

#[test]
fn release_plan_is_every_step_and_the_abort_on_failure() {
    let world = World::new(Some("v1"));
    let release = image_v2_args(
        "release",
        &[
            "--expect-version",
            "v2",
            "--timeout",
            "10m",
            "--sanity-timeout",
            "30s",
        ],
    );
    let (p, k, get) = (plugin(), kubectl(), get_rollout());
    let got = plan(&world, &release);
    // The commands: all but the last line, the released image's reference (a comment).
    support::runs::assert_runs_describe("release", &got[..got.len() - 1].join("\n"));
    assert_eq!(
        got,
        [
            format!("{p} set image api api={REPOSITORY}:v2 -n shop --request-timeout=10s"),
            format!(
                "# wait until the preview is ready (`Paused - BlueGreenPause`, or Healthy), at most 600s, every 2s: {get}"
            ),
            format!(
                "# {k} port-forward service/api-preview :80 --address 127.0.0.1 --pod-running-timeout=30s -n shop   \
                 (in the background, stopped afterwards)"
            ),
            "# check http://127.0.0.1:<forwarded port>: GET /health answers 200 with status \"ok\" and \
             version \"v2\", GET / answers 200; retried for at most 30s"
                .to_owned(),
            format!("{p} promote api -n shop --request-timeout=10s"),
            format!(
                "# wait until Healthy, the active Service on the promoted ReplicaSet, at most 600s, every 2s: {get}"
            ),
            format!(
                "# on any failure after `set image`, at most 600s in all waits: {p} abort api -n shop --request-timeout=10s"
            ),
            format!("# result: {}", image("v2")),
        ]
    );
    assert!(world.calls().is_empty(), "{:?}", world.calls());
}

#[test]
fn bad_names_are_refused_before_any_call() {
    let world = World::new(Some("v1"));
    let cases: &[(&[&str], &str)] = &[
        (&["--rollout", "Api_1"], "invalid rollout name \"Api_1\""),
        (
            &["--container", "api.v2"],
            "invalid container name \"api.v2\"",
        ),
        (&["-n", "Shop"], "invalid namespace name \"Shop\""),
        (&["--namespace=-shop"], "invalid namespace name \"-shop\""),
        (
            &["--context", "my context"],
            "invalid kubeconfig context \"my context\"",
        ),
    ];
    let tasks: &[&[&str]] = &[
        &["--dry-run", "deploy", "--tag", "v2"],
        &["--dry-run", "status"],
        &["--dry-run", "sanity", "--expect-version", "v2"],
        &["--dry-run", "promote"],
        &["--dry-run", "abort"],
        &[
            "--dry-run",
            "release",
            "--tag",
            "v2",
            "--expect-version",
            "v2",
        ],
    ];
    for task in tasks {
        for (flags, expected) in cases {
            let mut args = task.to_vec();
            args.extend(flags.iter());
            let run = world.run(&args);
            run.failed();
            let error = run.error();
            assert!(error.contains(expected), "{task:?} {flags:?}: {error}");
            assert!(
                error.contains("DNS-1123") || error.contains("kubectl config get-contexts"),
                "{task:?} {flags:?}: the error does not say what is allowed: {error}"
            );
            assert!(
                run.stdout.is_empty(),
                "{task:?} {flags:?} printed a plan:\n{run}"
            );
        }
    }
    assert!(world.calls().is_empty(), "{:?}", world.calls());
}

#[test]
fn a_missing_plugin_is_reported_with_how_to_install_it() {
    let world = World::new(Some("v1"));
    let empty = world.dir.join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    for args in [
        &["deploy", "--tag", "v2"][..],
        &["status"],
        &["promote"],
        &["abort"],
        &[
            "release",
            "--tag",
            "v2",
            "--expect-version",
            "v2",
            "--url",
            "http://127.0.0.1:9",
        ],
    ] {
        let run = run(world.xtask(args).env("PATH", &empty));
        run.failed();
        let error = run.stderr.clone();
        assert!(
            error.contains("kubectl: apt-get install kubectl"),
            "{args:?}: {error}"
        );
        if args[0] == "status" {
            // status only reads: kubectl is all it needs.
            assert!(error.contains("missing tool on PATH:"), "{error}");
        } else {
            assert!(
                error.contains("missing tools on PATH:")
                    && error.contains("kubectl-argo-rollouts: download"),
                "{args:?}: {error}"
            );
        }
        assert!(run.stdout.is_empty(), "{args:?}\n{run}");
    }
}

#[test]
fn a_bad_duration_says_what_a_duration_looks_like() {
    let world = World::new(Some("v1"));
    let run = world.run(&["deploy", "--wait", "--timeout", "300", "--tag", "v2"]);
    run.failed();
    assert!(run.stderr.contains("300s, 5m or 1m30s"), "{run}");
    assert!(world.calls().is_empty());
}

#[test]
fn a_missing_rollout_says_how_to_create_it() {
    let world = World::new(Some("v1"));
    let run = world.run(&["status", "-n", "elsewhere"]);
    run.failed();
    assert!(
        run.error().contains(
            "rollouts.argoproj.io \"api\" not found (no Rollout api there: check --namespace and \
             --context, or create it once with `kubectl create -n elsewhere -f rollout.yaml`"
        ),
        "{run}"
    );
}
