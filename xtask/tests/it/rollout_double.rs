//! The test doubles behave as the real tools do where xtask can see it. The
//! plugin double is reached through the real kubectl (`kubectl argo rollouts
//! ...`: plugin dispatch is real), the way a person would call it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::rollout_support::{
    self, GET_ROLLOUT, NAMESPACE, Pod, Ran, Spawned, World, http_get, image, require_tool,
};
use crate::support::{self, run};
use serde_json::{Value, json};

/// `kubectl argo rollouts ARGS -n shop`, through the kubectl double and the real kubectl.
fn rollouts(world: &World, args: &[&str]) -> Ran {
    run(world
        .kubectl(&["argo", "rollouts"])
        .args(args)
        .args(["-n", NAMESPACE]))
}

fn set_image(world: &World, tag: &str) -> Ran {
    rollouts(
        world,
        &["set", "image", "api", &format!("api={}", image(tag))],
    )
}

/// `set image` of v2, whose pods get ready after `ready_after` (None: never)
/// and the Rollout Degraded after `degrade_after`.
fn set_v2(world: &World, ready_after: Option<f64>, degrade_after: Option<f64>) {
    world.behaviour("v2", ready_after, degrade_after);
    set_image(world, "v2").ok();
}

/// v1 active, v2 (ready at once) paused on the preview.
fn paused_on_v2(world: &World) {
    set_v2(world, Some(0.0), None);
    wait_for(world, "Paused - BlueGreenPause");
}

/// The pods of `tag` are a std server whose /health says it is version `tag`.
fn healthy_pods(world: &World, tag: &str) -> Pod {
    let health = format!(r#"{{"status":"ok","version":"{tag}"}}"#);
    world.serve(tag, Pod::answering(200, health))
}

fn status(world: &World) -> Ran {
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let run = rollouts(&world, &["version", "--short"]);
    run.ok();
    assert_eq!(run.stdout, "kubectl-argo-rollouts: v1.8.3+test-double\n");
}

#[test]
fn a_new_image_progresses_then_pauses_for_promotion() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    // Ready after 3s: time enough to see it progress, even on a loaded machine.
    world.behaviour("v2", Some(3.0), None);
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
    let set = set_image(&world, "v2");
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    // Ready after 12 s: a promote and a status take well under that even on
    // a loaded 2-core machine (3 s was not enough at load 15).
    set_v2(&world, Some(12.0), None);
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
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    world.behaviour("v1", Some(0.2), None);
    set_image(&world, "v1").ok();
    let watch = rollouts(&world, &["status", "api", "--timeout", "5s"]);
    watch.ok();
    assert!(!watch.stdout.contains("Paused"), "{watch}");
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn abort_leaves_active_alone_and_reports_degraded_until_undo() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    paused_on_v2(&world);
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    set_v2(&world, None, Some(0.2));
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    set_v2(&world, None, None);
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
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
        rollouts(&world, args).failed_with(stderr);
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
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let _blue = healthy_pods(&world, "v1");
    let _green = healthy_pods(&world, "v2");
    set_image(&world, "v2").ok();
    for (service, version) in [("api-preview", "v2"), ("api-active", "v1")] {
        let service_arg = format!("service/{service}");
        let forward = ["port-forward", &service_arg, ":80", "-n", NAMESPACE];
        let mut child = Spawned::new(world.kubectl(&forward).stdout(Stdio::piped()));
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
}

#[test]
fn port_forward_fails_as_kubectl_does_without_a_service_or_a_pod() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let forward = |service: &str, port: &str| {
        run(&mut world.kubectl(&["port-forward", service, port, "-n", NAMESPACE]))
    };
    let missing = forward("service/api-previw", ":80");
    assert_eq!(missing.code, Some(1));
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): services \"api-previw\" not found\n"
    );
    let wrong_port = forward("service/api-preview", ":8080");
    assert_eq!(
        wrong_port.stderr,
        "error: Service api-preview does not have a service port 8080\n"
    );
    let no_pod = forward("service/api-preview", ":80");
    assert_eq!(
        no_pod.stderr,
        "error: unable to forward port because pod is not running. Current status=Pending\n"
    );
}

#[test]
fn other_kubectl_commands_go_to_the_real_kubectl() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let run = run(&mut world.kubectl(&["version", "--client"]));
    run.ok();
    assert!(run.stdout.starts_with("Client Version: "), "{run}");
}

// --- the Rollout object, as `kubectl get -o json` prints it -------------------

/// The plugin double itself, without kubectl's plugin dispatch in between.
fn plugin(world: &World, args: &[&str]) -> Command {
    let mut cmd = world.command(rollout_support::doubles().join("kubectl-argo-rollouts"));
    cmd.args(args).args(["-n", NAMESPACE]);
    cmd
}

/// `kubectl get` of the Rollout, through the kubectl double.
fn get_rollout(world: &World) -> Value {
    let run = run(&mut world.kubectl(&GET_ROLLOUT));
    run.ok();
    serde_json::from_str(&run.stdout).unwrap()
}

/// Waits (bounded) until `check` holds for the Rollout object.
fn wait_for_object(world: &World, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ro = world.rollout_object();
        if check(&ro) {
            return ro;
        }
        if Instant::now() >= deadline {
            panic!("the Rollout never got {what}:\n{ro:#}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kubectl_get_prints_the_rollout_as_the_api_server_returns_it() {
    // pkg/apis/rollouts/v1alpha1/types.go Rollout, RolloutStatus (json tags, omitempty)
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let ro = get_rollout(&world);
    assert_eq!(ro["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(ro["kind"], "Rollout");
    assert_eq!(ro["metadata"]["name"], "api");
    assert_eq!(ro["metadata"]["namespace"], NAMESPACE);
    assert_eq!(ro["metadata"]["generation"], json!(1), "an integer");
    assert!(ro["metadata"]["uid"].is_string() && ro["metadata"]["resourceVersion"].is_string());
    let blue_green = &ro["spec"]["strategy"]["blueGreen"];
    assert_eq!(blue_green["activeService"], "api-active");
    assert_eq!(blue_green["previewService"], "api-preview");
    assert_eq!(blue_green["autoPromotionEnabled"], json!(false));
    let container = &ro["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "api");
    assert_eq!(container["image"], image("v1"));
    assert_eq!(container["ports"][0]["containerPort"], json!(8080));
    let status = &ro["status"];
    assert_eq!(
        status["observedGeneration"], "1",
        "a string, as v1.x writes it"
    );
    assert_eq!(status["phase"], "Healthy");
    let stable = status["stableRS"].as_str().unwrap();
    assert_eq!(status["currentPodHash"], stable);
    assert_eq!(status["blueGreen"]["activeSelector"], stable);
    for absent in [
        "message",
        "pauseConditions",
        "abort",
        "abortedAt",
        "controllerPause",
    ] {
        assert!(
            status.get(absent).is_none(),
            "{absent} is omitempty: {status:#}"
        );
    }
    assert_eq!(status["replicas"], json!(2));
    assert_eq!(status["availableReplicas"], json!(2));

    set_v2(&world, Some(0.0), None);
    let paused = wait_for_object(&world, "the pause", |ro| ro["status"]["phase"] == "Paused");
    let status = &paused["status"];
    assert_eq!(paused["metadata"]["generation"], json!(2));
    assert_eq!(status["observedGeneration"], "2");
    assert_eq!(status["message"], "BlueGreenPause");
    assert_eq!(status["pauseConditions"][0]["reason"], "BlueGreenPause");
    assert!(
        status["pauseConditions"][0]["startTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(status["controllerPause"], json!(true));
    assert_eq!(
        status["stableRS"], stable,
        "the stable ReplicaSet is still v1's"
    );
    let current = status["currentPodHash"].as_str().unwrap();
    assert_ne!(current, stable);
    assert_eq!(status["blueGreen"]["previewSelector"], current);
    assert_eq!(status["blueGreen"]["activeSelector"], stable);
    assert_eq!(
        paused["spec"]["template"]["spec"]["containers"][0]["image"],
        image("v2")
    );
    assert_eq!(world.preview_image(), Some(image("v2")));

    rollouts(&world, &["abort", "api"]).ok();
    let aborted = get_rollout(&world);
    let status = &aborted["status"];
    assert_eq!(status["abort"], json!(true));
    assert!(status["abortedAt"].is_string());
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(
        status["message"],
        "RolloutAborted: Rollout aborted update to revision 2"
    );
    assert!(status.get("pauseConditions").is_none());
    assert!(world.is_aborted());
    assert_eq!(
        world.kubectl_calls(),
        [GET_ROLLOUT; 2],
        "each get the kubectl double served, and not the test's own looks"
    );
}

#[test]
fn a_rollout_that_never_gets_ready_is_degraded_with_the_progress_deadline_message() {
    // rollout/sync.go calculateRolloutConditions: TimedOutReason, ReplicaSetTimeOutMessage
    let world = World::new(Some("v1"));
    set_v2(&world, None, Some(0.2));
    let ro = wait_for_object(&world, "Degraded", |ro| ro["status"]["phase"] == "Degraded");
    let hash = ro["status"]["currentPodHash"].as_str().unwrap();
    assert_eq!(
        ro["status"]["message"],
        format!("ProgressDeadlineExceeded: ReplicaSet \"api-{hash}\" has timed out progressing.")
    );
    assert!(ro["status"].get("abort").is_none());
}

#[test]
fn kubectl_get_of_a_missing_rollout_is_the_api_servers_not_found() {
    // staging/src/k8s.io/kubectl/pkg/cmd/util/helpers.go checkErr: "Error from server (NotFound): ..."
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let mut elsewhere = GET_ROLLOUT;
    elsewhere[6] = "elsewhere";
    run(&mut world.kubectl(&elsewhere))
        .failed_with("Error from server (NotFound): rollouts.argoproj.io \"api\" not found\n");
}

#[test]
fn kubectl_get_replicasets_by_hash_lists_the_templates_with_it() {
    // rollout/sync.go syncReplicaSetRevision: one ReplicaSet per template, labelled rollouts-pod-template-hash
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    set_v2(&world, Some(0.0), None);
    let ro = world.rollout_object();
    let list = |hash: &str| -> Value {
        // Flags before and after the subcommand, in pflag's forms.
        let selector = format!("rollouts-pod-template-hash={hash}");
        let run = run(&mut world.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "replicasets.apps",
            "-o=json",
            "-l",
            &selector,
            "--context",
            "prod",
            "--request-timeout=5s",
        ]));
        run.ok();
        serde_json::from_str(&run.stdout).unwrap()
    };
    for (hash, tag) in [
        (ro["status"]["currentPodHash"].as_str().unwrap(), "v2"),
        (ro["status"]["stableRS"].as_str().unwrap(), "v1"),
    ] {
        let found = list(hash);
        assert_eq!(found["apiVersion"], "v1");
        assert_eq!(found["kind"], "List");
        let items = found["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{found:#}");
        let rs = &items[0];
        assert_eq!(rs["kind"], "ReplicaSet");
        assert_eq!(rs["metadata"]["name"], format!("api-{hash}"));
        assert_eq!(rs["metadata"]["labels"]["rollouts-pod-template-hash"], hash);
        assert_eq!(
            rs["spec"]["template"]["spec"]["containers"][0]["image"],
            image(tag)
        );
    }
    assert_eq!(list("nothing")["items"], json!([]));
    assert_eq!(world.kubectl_calls().len(), 3);
}

// --- the controller's lag -------------------------------------------------------

/// v2 set (ready at once) with a controller lag longer than any test: the
/// controller observes the new template when the test says so.
fn set_v2_unobserved(world: &World) {
    world.observe_after(600.0);
    set_v2(world, Some(0.0), None);
}

#[test]
fn the_controller_observes_a_template_change_late() {
    // utils/rollout/rolloututil.go GetRolloutPhase, isGenerationObserved
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    set_v2_unobserved(&world);
    let ro = get_rollout(&world);
    let status = rollouts(&world, &["status", "api", "--watch=false"]);
    assert_eq!(
        ro["metadata"]["generation"],
        json!(2),
        "spec changed at once"
    );
    assert_eq!(
        ro["spec"]["template"]["spec"]["containers"][0]["image"],
        image("v2")
    );
    assert_eq!(ro["status"]["observedGeneration"], "1");
    assert_eq!(
        ro["status"]["currentPodHash"], ro["status"]["stableRS"],
        "the status still describes the previous template"
    );
    assert_eq!(ro["status"]["phase"], "Healthy");
    assert_eq!(
        status.ok().stdout,
        "Progressing - waiting for rollout spec update to be observed\n"
    );
    assert_eq!(world.preview_image(), Some(image("v2")));
    world.observe_after(0.0);
    wait_for(&world, "Paused - BlueGreenPause");
    assert_eq!(world.rollout_object()["status"]["observedGeneration"], "2");
}

#[test]
fn an_abort_sent_before_the_controller_observes_the_template_is_erased() {
    // rollout/sync.go resetRolloutStatus -> pauseContext.RemoveAbort on a pod spec change
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    set_v2_unobserved(&world);
    assert_eq!(
        rollouts(&world, &["abort", "api"]).ok().stdout,
        "rollout 'api' aborted\n"
    );
    let before = world.rollout_object();
    assert_eq!(before["status"]["observedGeneration"], "1");
    assert_eq!(
        before["status"]["abort"],
        json!(true),
        "the abort landed in status"
    );
    assert_eq!(
        before["status"]["phase"], "Healthy",
        "the controller has not acted on it"
    );
    assert_eq!(
        status(&world).stdout,
        "Progressing - waiting for rollout spec update to be observed\n"
    );
    world.observe_after(0.0); // the controller catches up
    wait_for(&world, "Paused - BlueGreenPause");
    assert!(
        !world.is_aborted(),
        "observing the new template removed the abort"
    );
    assert_eq!(world.active_image(), Some(image("v1")));
    assert_eq!(world.preview_image(), Some(image("v2")));

    rollouts(&world, &["abort", "api"]).ok();
    let again = status(&world);
    assert_eq!(again.failed().stdout, "Degraded\n");
    assert!(world.is_aborted(), "an abort after the observation stays");
}

#[test]
fn an_abort_of_a_fully_promoted_rollout_is_removed_from_v1_6_1() {
    // rollout/controller.go newRolloutContext: "Removing abort condition from fully promoted rollout"
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    rollouts(&world, &["abort", "api"]).ok();
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
    assert!(!world.is_aborted());
    assert_eq!(world.preview_image(), None);

    let old = World::new(Some("v1"));
    old.controller_version("v1.6.0");
    rollouts(&old, &["abort", "api"]).ok();
    let degraded = status(&old);
    assert_eq!(degraded.failed().stdout, "Degraded\n");
    assert_eq!(
        degraded.stderr,
        "Error: The rollout is in a degraded state with message: RolloutAborted: Rollout aborted update to revision 1\n"
    );
    assert!(old.is_aborted(), "before v1.6.1 the abort stays");
}

// --- faults ---------------------------------------------------------------------

/// Runs `cmd` to its end, or kills it after `bound` (a generous bound that only proves it ended).
fn run_within(mut cmd: Command, bound: Duration) -> Option<Ran> {
    let mut child = Spawned::new(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if child.child().try_wait().unwrap().is_some() {
            return Some(child.finish());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None // dropped: killed and reaped
}

/// Starts `cmd`, checks it is still running after `after`, then sends SIGTERM and collects it.
fn still_running_after(mut cmd: Command, after: Duration) -> Ran {
    let mut child = Spawned::new(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    std::thread::sleep(after);
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "it ended instead of hanging"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.finish()
}

#[test]
fn with_the_api_server_hanging_status_hangs_even_with_a_request_timeout() {
    // pkg/kubectl-argo-rollouts/viewcontroller/viewcontroller.go Start -> cache.WaitForCacheSync, no deadline
    let world = World::new(Some("v1"));
    world.api_hangs();
    for args in [
        &["status", "api", "--watch=false", "--request-timeout=1s"][..],
        &[
            "status",
            "api",
            "--timeout",
            "1s",
            "--request-timeout",
            "1s",
        ],
    ] {
        let run = still_running_after(plugin(&world, args), Duration::from_secs(3));
        // cmd/signals SetupSignalHandler cancels the context: the unsynced lister finds nothing.
        run.failed_with("Error: rollout.argoproj.io \"api\" not found\n");
    }
    assert_eq!(world.calls().len(), 2, "each call was made");
    if require_tool("kubectl") {
        // Through kubectl's plugin dispatch (an exec: the signal reaches the plugin).
        let mut through = world.kubectl(&["argo", "rollouts", "status", "api", "-n", NAMESPACE]);
        through.args(["--watch=false", "--request-timeout=1s"]);
        let run = still_running_after(through, Duration::from_secs(3));
        assert_eq!(run.code, Some(1), "{run}");
        assert_eq!(run.stderr, "Error: rollout.argoproj.io \"api\" not found\n");
        assert_eq!(world.calls().len(), 3);
    }
    world.assert_no_process_left();
}

#[test]
fn with_the_api_server_hanging_the_other_commands_end_at_their_request_timeout() {
    // k8s.io/client-go rest.Request: http.Client.Timeout from --request-timeout, a *url.Error
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.api_hangs();
    let base = "https://127.0.0.1:6443/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/api";
    let timeout = "net/http: request canceled (Client.Timeout exceeded while awaiting headers)";
    let cases: [(&[&str], String); 3] = [
        (
            &["set", "image", "api", "api=x:2", "--request-timeout", "1s"],
            format!("Error: Get \"{base}?timeout=1s\": {timeout}\n"),
        ),
        (
            &["promote", "api", "--request-timeout=1s"],
            format!("Error: Get \"{base}?timeout=1s\": {timeout}\n"),
        ),
        (
            &["abort", "api", "--request-timeout=1"],
            format!("Error: Patch \"{base}/status?timeout=1s\": {timeout}\n"),
        ),
    ];
    for (args, stderr) in &cases {
        run_within(plugin(&world, args), Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{args:?} did not end at its request timeout"))
            .failed_with(stderr);
    }
    // Verified against the real kubectl and a loopback server that answers discovery and never the GET.
    let unable = "Unable to connect to the server: net/http: request canceled (Client.Timeout exceeded while awaiting headers)\n";
    let get_within_its_timeout = |args: &[&str]| {
        let mut get = world.kubectl(args);
        get.arg("--request-timeout=1s");
        run_within(get, Duration::from_secs(30)).expect("kubectl get ends at its request timeout")
    };
    get_within_its_timeout(&GET_ROLLOUT).failed_with(unable);
    let list = get_within_its_timeout(&[
        "get",
        "replicasets.apps",
        "-l",
        "rollouts-pod-template-hash=x",
        "-o",
        "json",
        "-n",
        NAMESPACE,
    ]);
    assert_eq!(list.code, Some(1), "{list}");
    let empty: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        empty["items"],
        json!([]),
        "a list prints its empty List first"
    );
    assert_eq!(list.stderr, unable);

    // Without --request-timeout they hang; a kill ends them (no child left behind).
    let run = still_running_after(plugin(&world, &["promote", "api"]), Duration::from_secs(2));
    assert_eq!(
        run.code, None,
        "killed by the signal, as a Go program is: {run}"
    );
    assert_eq!(world.rollout_object()["status"]["phase"], "Healthy");
    assert_eq!(world.active_image(), Some(image("v1")), "nothing changed");
    world.assert_no_process_left();
}

#[test]
fn without_discovery_cached_kubectl_takes_several_request_timeouts() {
    // k8s.io/client-go/discovery/cached/memory/memcache.go: each retried discovery ends at --request-timeout
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.api_hangs_before_discovery();
    // Attempts measured with the real kubectl v1.32.5 against a loopback listener that never answers.
    for (args, attempts) in [
        (&["get", "rollouts.argoproj.io", "api", "-o", "json"][..], 7),
        (
            &[
                "get",
                "replicasets.apps",
                "-l",
                "rollouts-pod-template-hash=x",
                "-o",
                "json",
            ],
            5,
        ),
        (&["port-forward", "service/api-preview", ":80"], 4),
    ] {
        let mut cmd = world.kubectl(args);
        cmd.args(["-n", NAMESPACE, "--request-timeout=100ms"]);
        let run = run_within(cmd, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{args:?} did not end"));
        assert_eq!(run.code, Some(1), "{args:?}\n{run}");
        assert_eq!(run.stdout, "", "{args:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), attempts + 1, "{args:?}\n{run}");
        for line in &lines[..attempts] {
            assert!(
                line.contains(
                    "memcache.go:265] \"Unhandled Error\" err=\"couldn't get current server API group list: \
                     Get \\\"https://127.0.0.1:6443/api?timeout=100ms\\\": context deadline exceeded\""
                ),
                "{line}"
            );
        }
        assert_eq!(
            lines[attempts],
            "Unable to connect to the server: context deadline exceeded"
        );
    }
}

#[test]
fn the_watching_status_can_panic_after_it_printed_healthy() {
    // pkg/kubectl-argo-rollouts/cmd/status/status.go NewCmdStatus: defer close(rolloutUpdates) while a callback sends
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.watch_panics();
    paused_on_v2(&world);
    rollouts(&world, &["promote", "api"]).ok();
    let watch = rollouts(&world, &["status", "api", "--timeout", "10s"]);
    assert_eq!(watch.code, Some(2), "{watch}");
    assert!(watch.stdout.ends_with("Healthy\n"), "{watch}");
    assert!(
        watch
            .stderr
            .contains("panic: send on closed channel [recovered]\n\tpanic: send on closed channel\n\ngoroutine "),
        "{watch}"
    );
    assert!(watch.stderr.contains("cmd/status/status.go:76"), "{watch}");
    assert_eq!(
        world.active_image(),
        Some(image("v2")),
        "traffic switched all the same"
    );
    // The one-shot form has no watch, so no panic.
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
}

/// `kubectl port-forward service/api-preview :80 -n shop`, then `extra`.
fn port_forward(world: &World, extra: &[&str]) -> Command {
    let mut cmd = world.kubectl(&[
        "port-forward",
        "service/api-preview",
        ":80",
        "-n",
        NAMESPACE,
    ]);
    cmd.args(extra);
    cmd
}

#[test]
fn port_forward_waits_for_a_pod_until_its_pod_running_timeout() {
    // staging/src/k8s.io/kubectl/pkg/polymorphichelpers/helpers.go GetPodList: watch until a pod is added
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let _green = healthy_pods(&world, "v2");
    world.pods_missing("v2");
    set_image(&world, "v2").ok();
    let run = run_within(
        port_forward(&world, &["--pod-running-timeout=1s"]),
        Duration::from_secs(30),
    )
    .expect("port-forward ends at its --pod-running-timeout");
    run.failed_with("error: timed out waiting for the condition\n");

    // A pod that appears meanwhile is taken.
    let mut child = Spawned::new(
        port_forward(&world, &["--pod-running-timeout", "30s"]).stdout(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.child().try_wait().unwrap().is_none(), "it waits");
    world.pods_running("v2");
    let (addr, _) = rollout_support::forwarded_address(child.child());
    let (code, body) = http_get(&addr, "/health").expect("an answer through the forward");
    assert_eq!(code, 200);
    assert!(body.contains("v2"), "{body}");
    drop(child);

    let zero = support::run(&mut port_forward(&world, &["--pod-running-timeout=0s"]));
    assert_eq!(zero.code, Some(1));
    assert!(
        zero.stderr
            .starts_with("error: --pod-running-timeout must be higher than zero\n"),
        "{zero}"
    );
    assert_eq!(
        world.kubectl_calls().len(),
        2,
        "a bad flag is refused before any call"
    );
}

#[test]
fn port_forward_to_a_pending_pod_fails_at_once() {
    // staging/src/k8s.io/kubectl/pkg/cmd/portforward/portforward.go RunPortForwardContext: pod.Status.Phase != Running
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    let _green = healthy_pods(&world, "v2");
    world.pods_pending("v2");
    set_image(&world, "v2").ok();
    let run = run_within(port_forward(&world, &[]), Duration::from_secs(30))
        .expect("port-forward to a pending pod ends");
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        run.stderr,
        "error: unable to forward port because pod is not running. Current status=Pending\n"
    );
}

#[test]
fn a_change_can_land_and_the_command_still_fail() {
    // k8s.io/client-go rest.Request: the write reached the API server, the answer was lost
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.behaviour("v2", Some(0.0), None);
    for subcommand in ["set image", "promote", "abort"] {
        world.change_then_fail(subcommand);
    }
    let base = "https://127.0.0.1:6443/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/api";
    let lost = "http2: client connection lost";

    set_image(&world, "v2").failed_with(&format!("Error: Put \"{base}\": {lost}\n"));
    assert_eq!(
        world.preview_image(),
        Some(image("v2")),
        "the new image landed"
    );
    wait_for(&world, "Paused - BlueGreenPause");

    let promote = rollouts(&world, &["promote", "api"]);
    assert_eq!(promote.code, Some(1), "{promote}");
    assert_eq!(
        promote.stderr,
        format!("Error: Patch \"{base}/status\": {lost}\n")
    );
    wait_for(&world, "Healthy");
    assert_eq!(
        world.active_image(),
        Some(image("v2")),
        "the promotion landed"
    );

    world.behaviour("v3", Some(0.0), None);
    set_image(&world, "v3").failed();
    wait_for(&world, "Paused - BlueGreenPause");
    let abort = rollouts(&world, &["abort", "api"]);
    assert_eq!(abort.code, Some(1), "{abort}");
    assert_eq!(
        abort.stderr,
        format!("Error: Patch \"{base}/status\": {lost}\n")
    );
    assert!(world.is_aborted(), "the abort landed");
    assert_eq!(world.active_image(), Some(image("v2")));
}

// --- weather and shortcuts ---------------------------------------------------------

/// `kubectl get rollouts.argoproj.io api -o json -n shop`, as xtask runs it (faults apply).
fn get_faulty(world: &World) -> Ran {
    run(&mut world.kubectl(&GET_ROLLOUT))
}

#[test]
fn failed_reads_fail_k_times_with_kubectls_text_then_recover() {
    // pkg/cmd/util/helpers.go StandardErrorMessage: a *url.Error saying "connection refused".
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.read_fails("refused", 2);
    for _ in 0..2 {
        get_faulty(&world).failed_with(
            "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?\n",
        );
    }
    get_faulty(&world).ok();
    world.read_fails("server_error_500", 1);
    get_faulty(&world).failed_with(
        "Error from server (InternalError): an error on the server (\"unknown\") has prevented the request \
         from succeeding (get rollouts.argoproj.io api)\n",
    );
    get_faulty(&world).ok();
}

#[test]
fn read_failures_after_a_call_are_armed_by_its_success() {
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    world.read_fails_after("set image", "unauthorized", 1);
    get_faulty(&world).ok();
    set_v2(&world, Some(0.0), None);
    get_faulty(&world).failed_with("error: You must be logged in to the server (Unauthorized)\n");
    get_faulty(&world).ok();
}

#[test]
fn a_new_rollouts_first_template_is_stable_at_once() {
    // rollout/sync.go shouldFullPromote: "Initial deploy" while the active selector is empty.
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    let status = &world.rollout_object()["status"];
    assert_eq!(status["stableRS"], status["currentPodHash"], "{status}");
    assert_eq!(status["blueGreen"].get("activeSelector"), None, "{status}");
    // An abort of it is removed at the next reconcile (a fully promoted rollout).
    rollouts(&world, &["abort", "api"]).ok();
    assert!(!world.is_aborted());
}

#[test]
fn the_controller_writes_aborted_at_after_its_lag() {
    // rollout/pause.go CalculatePauseStatus: abortedAt and the RolloutAborted condition are the controller's.
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    paused_on_v2(&world);
    // Long enough for the reads below on a loaded machine.
    world.abort_lag(5.0);
    rollouts(&world, &["abort", "api"]).ok();
    let status = world.rollout_object()["status"].clone();
    assert_eq!(status["abort"], true, "{status}");
    assert_eq!(status.get("abortedAt"), None, "{status}");
    assert_eq!(
        status["phase"], "Paused",
        "the phase is stale until then: {status}"
    );
    std::thread::sleep(Duration::from_millis(5100));
    let status = world.rollout_object()["status"].clone();
    assert!(status["abortedAt"].is_string(), "{status}");
    assert_eq!(status["phase"], "Degraded", "{status}");
    assert_eq!(
        status["conditions"][0]["reason"], "RolloutAborted",
        "{status}"
    );
}

/// The ReplicaSets of the Rollout, as `kubectl get replicasets.apps -l SELECTOR -o json` lists them.
fn replica_sets(world: &World) -> Vec<Value> {
    let listed = run(&mut world.kubectl(&[
        "get",
        "replicasets.apps",
        "-l",
        "app.kubernetes.io/name=api",
        "-o",
        "json",
        "-n",
        NAMESPACE,
    ]));
    let list: Value = serde_json::from_str(&listed.ok().stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

#[test]
fn the_old_replica_set_keeps_its_pods_and_a_template_equal_to_it_is_fast_tracked() {
    // rollout/replicaset.go addScaleDownDelay; rollout/bluegreen.go isBlueGreenFastTracked (v1.8.3).
    let Some(world) = World::needing_kubectl(Some("v1")) else {
        return;
    };
    paused_on_v2(&world);
    rollouts(&world, &["promote", "api"]).ok();
    wait_for(&world, "Healthy");
    let old = replica_sets(&world)
        .into_iter()
        .find(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"] == json!(image("v1")))
        .expect("v1's ReplicaSet");
    assert!(
        old["metadata"]["annotations"]["scale-down-deadline"].is_string(),
        "{old}"
    );
    assert_eq!(old["spec"]["replicas"], 2, "{old}");

    set_image(&world, "v1").ok();
    // No pause: the active Service is on v1 at the first reconcile.
    assert_eq!(status(&world).ok().stdout, "Healthy\n");
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn a_new_rollout_has_no_status_before_the_first_reconcile() {
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    world.without_status_for(60.0);
    assert_eq!(world.rollout_object().get("status"), None);
}
