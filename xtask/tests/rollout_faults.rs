//! The blue/green tasks against what the real plugin, kubectl and controller
//! do that our first doubles did not: a watch that panics after `Healthy`, an
//! API server that never answers, a port-forward with no running pod, an abort
//! the controller erases, a call that fails after its write landed. Each test
//! names, in one comment line, the upstream behaviour its double follows.

mod rollout_support;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rollout_support::{NAMESPACE, Pod, Ran, Spawned, World, deploy_args, image, release_args};
use support::run;

/// v1 active and served by a real api v1; the preview v2 is a real api v2, ready after 0.3s.
fn blue_green_world() -> Option<(World, Pod, Pod)> {
    let (world, blue) = World::blue()?;
    let green = world.api_pods("v2", "v2");
    world.behaviour("v2", Some(0.3), None);
    Some((world, blue, green))
}

#[test]
fn release_ends_promoted_when_the_plugins_watch_would_panic_after_healthy() {
    // pkg/kubectl-argo-rollouts/cmd/status/status.go NewCmdStatus: `defer close(rolloutUpdates)` (argo-rollouts#4372).
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.watch_panics();

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr.contains("promoted: rollout api is Healthy"),
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v2")));
    assert!(
        world.calls().iter().all(|argv| argv[0] != "status"),
        "the plugin's status was called: {:?}",
        world.calls()
    );
}

#[test]
fn every_task_ends_within_its_bound_when_the_api_server_never_answers() {
    // pkg/kubectl-argo-rollouts/viewcontroller/viewcontroller.go Start: cache.WaitForCacheSync with no deadline.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.api_hangs();
    let short = ["-n", NAMESPACE, "--request-timeout", "1s"];
    let tasks: &[&[&str]] = &[
        &["status"],
        &["deploy", "--tag", "v2", "--wait"],
        &["promote", "--tag", "v2"],
        &["abort"],
        &["release", "--tag", "v2", "--expect-version", "v2"],
    ];
    for task in tasks {
        let args = [*task, &short[..]].concat();
        let start = Instant::now();
        let run = world.run(&args);
        let took = start.elapsed();
        run.failed();
        let error = run.error();
        assert!(
            error.contains("got no answer within 3s and was stopped")
                || error.contains("Client.Timeout exceeded"),
            "{task:?}: {run}"
        );
        assert!(
            error.contains("The API server did not answer: check the kube context"),
            "{task:?}: the error does not say what to check: {error}"
        );
        // A generous bound: it only proves that the task ended by itself.
        assert!(took < Duration::from_secs(60), "{task:?} took {took:?}");
    }
    assert!(
        world.changes().is_empty(),
        "a change was attempted: {:?}",
        world.changes()
    );
    world.assert_no_process_left();
}

/// `sanity` of a ready preview v2 whose pods are made `missing` or `pending`
/// (by `hide`), for 2s: it fails, and its error quotes kubectl's own reason.
fn sanity_quotes_kubectl(hide: impl FnOnce(&World), reason: &str) {
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.run(&deploy_args(&["--wait"])).ok();
    hide(&world);
    let run = world.run(&[
        "sanity",
        "-n",
        NAMESPACE,
        "--expect-version",
        "v2",
        "--timeout",
        "2s",
    ]);
    run.failed();
    assert!(
        run.error().contains(&format!("kubectl said: {reason}")),
        "{run}"
    );
    assert!(run.stderr.contains("--pod-running-timeout="), "{run}");
}

#[test]
fn sanity_shows_kubectls_reason_when_no_pod_exists_behind_the_preview() {
    // pkg/polymorphichelpers/helpers.go GetPodList: watch for a pod until --pod-running-timeout.
    sanity_quotes_kubectl(
        |world| world.pods_missing("v2"),
        "error: timed out waiting for the condition",
    );
}

#[test]
fn sanity_shows_kubectls_reason_when_the_pod_is_pending() {
    // pkg/cmd/portforward/portforward.go RunPortForwardContext: a pod not Running is refused at once.
    sanity_quotes_kubectl(
        |world| world.pods_pending("v2"),
        "error: unable to forward port because pod is not running. Current status=Pending",
    );
}

#[test]
fn an_abort_the_controller_erases_is_sent_again() {
    // rollout/sync.go resetRolloutStatus: RemoveAbort when the controller sees a new pod template.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.observe_after(1.0);
    world.run(&deploy_args(&[])).ok();
    // Sent before the controller saw the new template: it will erase this abort.
    let run = world.run(&["abort", "-n", NAMESPACE]);
    run.ok();
    assert!(
        run.stderr.contains("the controller erased the abort"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("aborted rollout api, read back: Degraded - RolloutAborted"),
        "{run}"
    );
    let aborts = world
        .changes()
        .iter()
        .filter(|c| c.starts_with("abort"))
        .count();
    assert!(aborts >= 2, "{:?}", world.changes());
    assert!(world.is_aborted());
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn a_promote_that_fails_after_its_write_landed_is_not_aborted() {
    // A network error after the status patch: the plugin exits 1, the promotion stands.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.change_then_fail("promote");

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr.contains("but the rollout moved on (read back"),
        "{run}"
    );
    assert!(
        run.stderr.contains("promoted: rollout api is Healthy"),
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v2")));
    assert!(
        world.changes().iter().all(|c| !c.starts_with("abort")),
        "{:?}",
        world.changes()
    );
}

#[test]
fn a_set_image_that_fails_after_its_write_landed_goes_on() {
    // The same after the plugin's Update (set/set_image.go SetImage): the template is the new one.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.change_then_fail("set image");

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr.contains(&format!(
            "but the rollout's template is {} now (read back)",
            image("v2")
        )),
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn release_refuses_a_duration_go_cannot_hold_before_any_change() {
    // Go's time.Duration holds at most 2562047h47m16.854775807s; the plugin refuses more.
    let world = World::new(Some("v1"));
    let run = world.run(&[
        "release",
        "-n",
        NAMESPACE,
        "--tag",
        "v2",
        "--expect-version",
        "v2",
        "--timeout=1e19s",
    ]);
    run.failed();
    assert!(run.stderr.contains("1e19s"), "{run}");
    assert!(world.changes().is_empty(), "{:?}", world.changes());
}

#[test]
fn a_second_ctrl_c_during_a_hanging_sanity_does_not_skip_the_abort() {
    // A person presses Ctrl-C twice; before, the second one exited 130 with the preview left up.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    let _silent = world.serve("v2", Pod::silent());
    let child = Spawned::new(
        world
            .xtask(&release_args(&["--sanity-timeout", "60s"]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    world.wait_for_port_forward();
    for _ in 0..2 {
        child.signal("INT");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = child.finish();
    run.failed();
    assert_ne!(
        run.code,
        Some(130),
        "the second signal ended it before the abort:\n{run}"
    );
    assert!(
        run.error()
            .contains("aborted rollout api, read back: Degraded - RolloutAborted"),
        "{run}"
    );
    assert!(world.is_aborted());
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn a_panic_after_the_image_was_set_still_aborts() {
    // Whatever ends release after `set image` ends it aborted: a panic too.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    let run = run(world
        .xtask(&release_args(&[]))
        .env("XTASK_TEST_PANIC_AFTER_SET_IMAGE", "1"));
    run.failed();
    assert!(
        run.error()
            .contains("release stopped at step `unknown (xtask panicked)`"),
        "{run}"
    );
    assert!(
        run.error().contains("aborted rollout api, read back"),
        "{run}"
    );
    assert!(world.is_aborted());
    assert_eq!(world.active_image(), Some(image("v1")));
}

/// A kubeconfig whose one cluster is at `server`, for the real kubectl.
fn kubeconfig(world: &World, server: &str) -> std::path::PathBuf {
    let path = world.dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: x\ncontexts:\n- name: ctx\n  \
             context:\n    cluster: c\n    user: u\ncurrent-context: ctx\n"
        ),
    )
    .unwrap();
    path
}

/// The built xtask with the machine's own tools (the real kubectl), no doubles.
fn real_kubectl_xtask(world: &World, kubeconfig: &std::path::Path, args: &[&str]) -> Ran {
    run(world
        .xtask(args)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", &world.dir))
}

#[test]
fn status_with_the_real_kubectl_and_no_api_server_says_what_to_check() {
    // The real kubectl: nothing listens at the kubeconfig's server.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let config = kubeconfig(&world, "https://127.0.0.1:1");
    let run = real_kubectl_xtask(&world, &config, &["status", "-n", NAMESPACE]);
    run.failed();
    assert!(
        run.error().contains("connection refused") || run.error().contains("was refused"),
        "{run}"
    );
    assert!(
        run.error()
            .contains("The API server did not answer: check the kube context"),
        "{run}"
    );
}

#[test]
fn status_with_the_real_kubectl_and_a_silent_api_server_ends_within_its_bound() {
    // The real kubectl against a server that accepts and never answers: it retries
    // discovery, each try ended by --request-timeout, for longer than one timeout.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let silent = Pod::silent();
    let config = kubeconfig(&world, &format!("https://{}", silent.addr));
    let start = Instant::now();
    let run = real_kubectl_xtask(
        &world,
        &config,
        &["status", "-n", NAMESPACE, "--request-timeout", "1s"],
    );
    let took = start.elapsed();
    run.failed();
    let error = run.error();
    assert!(
        error.contains("got no answer within 3s and was stopped")
            || error.contains("Unable to connect to the server"),
        "{run}"
    );
    assert!(
        error.contains("The API server did not answer: check the kube context"),
        "{run}"
    );
    // A generous bound: it only proves the task ended by itself.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
