//! The test doubles behave as the real tools do where xtask can see it. The
//! plugin double is reached through the real kubectl (`kubectl argo rollouts
//! ...`: plugin dispatch is real), the way a person would call it.

mod rollout_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use rollout_support::{NAMESPACE, Pod, REPOSITORY, Run, World, http_get, image, require_tool};

/// `kubectl argo rollouts ARGS -n shop`, through the kubectl double and the real kubectl.
fn rollouts(world: &World, args: &[&str]) -> Run {
    let output = Command::new("kubectl")
        .args(["argo", "rollouts"])
        .args(args)
        .args(["-n", NAMESPACE])
        .env("PATH", world.path())
        .env("ARGO_ROLLOUTS_DOUBLE_STATE", &world.state_path)
        .env(rollout_support::MARKER, &world.marker)
        .output()
        .unwrap();
    Run::from(output)
}

fn status(world: &World) -> Run {
    rollouts(world, &["status", "api", "--watch=false"])
}

fn wait_for(world: &World, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if status(world).stdout.trim() == line {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never reached {line:?}:\n{}", status(world));
}

#[test]
fn kubectl_dispatches_to_the_plugin_double() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    let run = rollouts(&world, &["version", "--short"]);
    run.ok();
    assert_eq!(run.stdout, "kubectl-argo-rollouts: v1.8.3+test-double\n");
    world.assert_no_process_left();
}

#[test]
fn a_new_image_progresses_then_pauses_for_promotion() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    // Ready after 3s: time enough to see it progress, even on a loaded machine.
    world.behaviour("v2", Some(3.0), None);
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
    let set = rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v2"))],
    );
    assert_eq!(set.ok().stdout, "rollout \"api\" image updated\n");
    assert_eq!(
        status(&world).ok().stdout,
        "Progressing - updated replicas are still becoming available\n"
    );
    wait_for(&world, "Paused - BlueGreenPause");
    assert_eq!(
        world.active_image(),
        Some(image("v1")),
        "the pause switched traffic"
    );
}

#[test]
fn promote_before_the_pause_changes_nothing() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    world.behaviour("v2", Some(3.0), None);
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v2"))],
    )
    .ok();
    let promote = rollouts(&world, &["promote", "api"]);
    assert!(
        status(&world).stdout.starts_with("Progressing"),
        "the machine was too slow: the promote came after the pause"
    );
    assert_eq!(
        promote.ok().stdout,
        "rollout 'api' promoted\n",
        "it says so all the same"
    );
    wait_for(&world, "Paused - BlueGreenPause");
    assert_eq!(world.active_image(), Some(image("v1")));
    rollouts(&world, &["promote", "api"]).ok();
    let watch = rollouts(&world, &["status", "api", "--timeout", "5s"]);
    assert!(watch.ok().stdout.ends_with("Healthy\n"), "{watch}");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn the_first_image_of_a_new_rollout_goes_active_without_a_pause() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(None);
    world.behaviour("v1", Some(0.2), None);
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v1"))],
    )
    .ok();
    let watch = rollouts(&world, &["status", "api", "--timeout", "5s"]);
    watch.ok();
    assert!(!watch.stdout.contains("Paused"), "{watch}");
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn abort_leaves_active_alone_and_reports_degraded_until_undo() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    world.behaviour("v2", Some(0.0), None);
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v2"))],
    )
    .ok();
    wait_for(&world, "Paused - BlueGreenPause");
    assert_eq!(
        rollouts(&world, &["abort", "api"]).ok().stdout,
        "rollout 'api' aborted\n"
    );

    let degraded = status(&world);
    degraded.failed();
    assert_eq!(degraded.stdout, "Degraded\n");
    assert_eq!(
        degraded.stderr,
        "Error: The rollout is in a degraded state with message: RolloutAborted: Rollout aborted update to revision 2\n"
    );
    let watch = rollouts(&world, &["status", "api"]);
    assert_eq!(
        watch.failed().stdout,
        "Degraded - RolloutAborted: Rollout aborted update to revision 2\n"
    );
    assert_eq!(world.active_image(), Some(image("v1")));

    assert_eq!(
        rollouts(&world, &["undo", "api"]).ok().stdout,
        "rollout 'api' undo\n"
    );
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn pods_that_never_become_ready_turn_the_rollout_degraded() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    world.behaviour("v2", None, Some(0.2));
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v2"))],
    )
    .ok();
    let watch = rollouts(&world, &["status", "api", "--timeout", "5s"]);
    watch.failed();
    assert!(
        watch
            .stdout
            .ends_with("Degraded - ProgressDeadlineExceeded: ReplicaSet \"api-")
            || watch
                .stdout
                .contains("Degraded - ProgressDeadlineExceeded: ReplicaSet \"api-"),
        "{watch}"
    );
    assert!(
        watch.stderr.starts_with(
            "Error: The rollout is in a degraded state with message: ProgressDeadlineExceeded"
        ),
        "{watch}"
    );
}

#[test]
fn the_watch_ends_at_its_timeout_with_the_plugins_error() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    world.behaviour("v2", None, None);
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={}", image("v2"))],
    )
    .ok();
    let watch = rollouts(&world, &["status", "api", "-t", "300ms"]);
    watch.failed();
    assert_eq!(
        watch.stdout,
        "Progressing - updated replicas are still becoming available\n"
    );
    assert_eq!(
        watch.stderr,
        "Error: Rollout status watch exceeded timeout\n"
    );
}

#[test]
fn errors_are_one_error_line_and_exit_1() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    let cases: &[(&[&str], &str)] = &[
        // viewcontroller.go GetRolloutInfo: the lister's NotFound, Resource("rollout").
        (
            &["status", "nope", "--watch=false"],
            "Error: rollout.argoproj.io \"nope\" not found\n",
        ),
        // set_image.go SetImage, promote.go PromoteRollout, abort.go AbortRollout: the API server's Status.
        (
            &["set", "image", "nope", "api=x:1"],
            "Error: rollouts.argoproj.io \"nope\" not found\n",
        ),
        (
            &["promote", "nope"],
            "Error: rollouts.argoproj.io \"nope\" not found\n",
        ),
        (
            &["abort", "nope"],
            "Error: rollouts.argoproj.io \"nope\" not found\n",
        ),
        (
            &["set", "image", "api", "web=x:1"],
            "Error: unable to find container named \"web\"\n",
        ),
        (
            &["status", "api", "--timeout", "5x"],
            "Error: invalid argument \"5x\" for \"-t, --timeout\" flag: time: unknown unit \"x\" in duration \"5x\"\n",
        ),
        (
            &["status", "api", "--frobnicate"],
            "Error: unknown flag: --frobnicate\n",
        ),
    ];
    for (args, stderr) in cases {
        let run = rollouts(&world, args);
        assert_eq!(run.code, Some(1), "{args:?}\n{run}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr, *stderr, "{args:?}");
    }
    let usage = rollouts(&world, &["promote"]);
    assert_eq!(usage.code, Some(1));
    assert!(
        usage
            .stderr
            .starts_with("Usage:\n  kubectl argo rollouts promote ROLLOUT_NAME"),
        "{usage}"
    );
}

#[test]
fn port_forward_reaches_the_pods_the_preview_service_selects() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    let blue = Pod::answering(200, r#"{"status":"ok","version":"v1"}"#);
    let green = Pod::answering(200, r#"{"status":"ok","version":"v2"}"#);
    world.pods("v1", &blue.addr);
    world.pods("v2", &green.addr);
    rollouts(
        &world,
        &["set", "image", "api", &format!("api={REPOSITORY}:v2")],
    )
    .ok();
    for (service, version) in [("api-preview", "v2"), ("api-active", "v1")] {
        let mut child = rollout_support::Spawned::new(
            Command::new("kubectl")
                .args([
                    "port-forward",
                    &format!("service/{service}"),
                    ":80",
                    "-n",
                    NAMESPACE,
                ])
                .env("PATH", world.path())
                .env("ARGO_ROLLOUTS_DOUBLE_STATE", &world.state_path)
                .env(rollout_support::MARKER, &world.marker)
                .stdout(Stdio::piped()),
        );
        let (addr, target) = rollout_support::forwarded_address(child.child());
        assert_eq!(
            target, "8080",
            "the Service's port 80 leads to the container's 8080"
        );
        let answer = http_get(&addr, "/health");
        drop(child);
        let (code, body) = answer.expect("an answer through the forward");
        assert_eq!(code, 200);
        assert!(body.contains(version), "{service}: {body}");
    }
    world.assert_no_process_left();
}

#[test]
fn port_forward_fails_as_kubectl_does_without_a_service_or_a_pod() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    let run = |args: &[&str]| {
        Run::from(
            Command::new("kubectl")
                .args(args)
                .env("PATH", world.path())
                .env("ARGO_ROLLOUTS_DOUBLE_STATE", &world.state_path)
                .output()
                .unwrap(),
        )
    };
    let missing = run(&["port-forward", "service/api-previw", ":80", "-n", NAMESPACE]);
    assert_eq!(missing.code, Some(1));
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): services \"api-previw\" not found\n"
    );
    let wrong_port = run(&[
        "port-forward",
        "service/api-preview",
        ":8080",
        "-n",
        NAMESPACE,
    ]);
    assert_eq!(
        wrong_port.stderr,
        "error: Service api-preview does not have a service port 8080\n"
    );
    let no_pod = run(&[
        "port-forward",
        "service/api-preview",
        ":80",
        "-n",
        NAMESPACE,
    ]);
    assert_eq!(
        no_pod.stderr,
        "error: unable to forward port because pod is not running. Current status=Pending\n"
    );
}

#[test]
fn other_kubectl_commands_go_to_the_real_kubectl() {
    if !require_tool("kubectl") {
        return;
    }
    let world = World::new(Some("v1"));
    let run = Run::from(
        Command::new("kubectl")
            .args(["version", "--client"])
            .env("PATH", world.path())
            .output()
            .unwrap(),
    );
    run.ok();
    assert!(run.stdout.starts_with("Client Version: "), "{run}");
}
