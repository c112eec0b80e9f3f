//! The blue/green tasks against what the real plugin, kubectl and controller
//! do that our first doubles did not: a watch that panics after `Healthy`, an
//! API server that never answers, a port-forward with no running pod, an abort
//! the controller erases, a call that fails after its write landed. Each test
//! names, in one comment line, the upstream behaviour its double follows.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::rollout_support::{
    NAMESPACE, Pod, Ran, Spawned, World, deploy_args, image, release_args,
};
use crate::support::run;

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
    // 3s: the abort below must come before it, even on a loaded machine.
    world.observe_after(3.0);
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

/// The plugin calls that changed something, without their kubeconfig flags.
fn aborts(world: &World) -> usize {
    world
        .changes()
        .iter()
        .filter(|c| c.starts_with("abort"))
        .count()
}

#[test]
fn one_refused_read_during_the_preview_wait_still_promotes() {
    // client-go rest/request.go Request.request: a refused connection is not retried; kubectl exits 1.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.read_fails_after("set image", "refused", 1);

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr.contains(
            "missed a look (1 of 5 in a row): The connection to the server 127.0.0.1:6443 was refused"
        ),
        "{run}"
    );
    assert!(run.stderr.contains("Paused - BlueGreenPause"), "{run}");
    assert_eq!(world.read_failures_left(), 0, "the refused read never came");
    assert_eq!(aborts(&world), 0, "{:?}", world.changes());
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn one_refused_read_right_after_promote_is_not_an_abort() {
    // The same refusal, on the first read after the plugin's promote succeeded.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.read_fails_after("promote", "refused", 1);

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(run.stderr.contains("missed a look (1 of 5"), "{run}");
    assert!(
        run.stderr.contains("promoted: rollout api is Healthy"),
        "{run}"
    );
    assert_eq!(world.read_failures_left(), 0, "the refused read never came");
    assert_eq!(aborts(&world), 0, "{:?}", world.changes());
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn every_kind_of_failed_read_is_a_missed_look_with_kubectls_reason() {
    // pkg/cmd/util/helpers.go StandardErrorMessage and checkErr: the one line kubectl prints for each.
    let says = [
        (
            "refused",
            "was refused - did you specify the right host or port?",
        ),
        ("tls_timeout", "net/http: TLS handshake timeout"),
        (
            "server_error_500",
            "Error from server (InternalError): an error on the server (\"unknown\")",
        ),
        ("credential_plugin", "getting credentials: exec: executable"),
        (
            "unauthorized",
            "You must be logged in to the server (Unauthorized)",
        ),
        ("namespace_not_found", "namespaces \"shop\" not found"),
    ];
    for (kind, said) in says {
        let Some(world) = World::needing_kubectl(Some("v1")) else {
            return;
        };
        world.behaviour("v2", Some(0.3), None);
        world.read_fails_after("set image", kind, 2);
        let run = world.run(&deploy_args(&["--wait", "--poll-interval", "100ms"]));
        run.ok();
        assert!(
            run.stderr.contains("missed a look (2 of 5 in a row)") && run.stderr.contains(said),
            "{kind}: {run}"
        );
        assert!(
            run.stderr.contains("Paused - BlueGreenPause"),
            "{kind}: {run}"
        );
    }
}

#[test]
fn reads_that_keep_failing_end_the_wait_early_saying_why() {
    // A revoked login fails every read: the wait gives up after 5 in a row, not at its deadline.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.behaviour("v2", Some(0.3), None);
    world.read_fails_after("set image", "unauthorized", 100);
    let start = Instant::now();
    let run = world.run(&deploy_args(&[
        "--wait",
        "--poll-interval",
        "100ms",
        "--timeout",
        "120s",
    ]));
    let took = start.elapsed();
    run.failed();
    assert!(
        run.stderr.contains("missed a look (5 of 5 in a row)"),
        "{run}"
    );
    let error = run.error();
    assert!(error.contains("the last 5 reads failed"), "{run}");
    assert!(error.contains("401"), "the 401 hint is missing: {run}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn a_promotion_sent_then_unread_is_not_aborted_and_says_how_to_look() {
    // After the plugin's promote succeeded, no read comes back: the switch may be under way.
    let Some((world, _blue, _green)) = blue_green_world() else {
        return;
    };
    world.read_fails_after("promote", "tls_timeout", 100);

    let run = world.run(&release_args(&[]));
    run.failed();
    let error = run.error();
    assert!(error.contains("promotion sent, state unknown"), "{run}");
    assert!(
        error.contains("kubectl get rollouts.argoproj.io api -o json -n shop"),
        "{run}"
    );
    assert!(error.contains("not aborted"), "{run}");
    assert_eq!(aborts(&world), 0, "{:?}", world.changes());
    // The controller switched meanwhile: the truth, read without the fault.
    let status = &world.rollout_object()["status"];
    assert_eq!(status["stableRS"], status["currentPodHash"], "{status}");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn a_failing_credential_plugin_is_not_called_an_unreachable_server() {
    // client-go plugin/pkg/client/auth/exec/exec.go: "getting credentials: exec: executable ... failed".
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.read_fails("credential_plugin", 1);
    let run = world.run(&deploy_args(&[]));
    run.failed();
    let error = run.error();
    assert!(error.contains("credential plugin failed"), "{run}");
    assert!(!error.contains("did not answer"), "{run}");
    assert!(world.changes().is_empty(), "{:?}", world.changes());
}

#[test]
fn a_rollout_without_status_yet_is_waited_for() {
    // Right after `kubectl create`: the API server's object has no status before the first reconcile.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.behaviour("v2", Some(0.3), None);
    world.without_status_for(8.0);
    let run = world.run(&deploy_args(&["--wait", "--poll-interval", "100ms"]));
    run.ok();
    assert!(run.stderr.contains("has no status yet"), "{run}");
    assert!(run.stderr.contains("Paused - BlueGreenPause"), "{run}");
}

#[test]
fn status_waits_for_a_new_rollouts_first_status() {
    // The same for `status`: a new Rollout reads as what it becomes, not as an error.
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    // Long enough to be seen on a loaded machine (where starting a process can take seconds).
    world.without_status_for(8.0);
    let run = world.run(&["status", "-n", NAMESPACE]);
    assert!(run.stderr.contains("has no status yet"), "{run}");
    assert!(
        run.stdout.starts_with("rollout api in namespace shop: "),
        "{run}"
    );
    assert!(run.stdout.contains("active:  none yet"), "{run}");
}
