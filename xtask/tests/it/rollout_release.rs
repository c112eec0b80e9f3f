//! `release` (and the tasks it is made of) end to end: the built xtask, the
//! plugin and kubectl doubles first on PATH, and real `api` binaries, built
//! with the version they must report, as the active and preview pods. Broken
//! previews (500, silent) are tiny std servers. Every test's world checks, as
//! it is dropped, that no process the test started is left running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::rollout_support::{
    self, NAMESPACE, Pod, Ran, Spawned, World, deploy_args, image, promote_args, release_args,
    require_tool,
};

/// v1 active and served by a real api v1; the preview image v2 gets ready after 0.3s.
fn blue_world() -> Option<(World, Pod)> {
    let (world, blue) = World::blue()?;
    world.behaviour("v2", Some(0.3), None);
    Some((world, blue))
}

fn set_image_v2() -> String {
    format!(
        "set image api api={} -n shop --request-timeout=10s",
        image("v2")
    )
}

const PROMOTE: &str = "promote api -n shop --request-timeout=10s";
const ABORT: &str = "abort api -n shop --request-timeout=10s";

/// The rollout was aborted, v1 still serves, and the run named its step.
fn assert_aborted(world: &World, run: &Ran, step: &str) {
    run.failed();
    let error = run.error();
    assert!(
        error.contains(&format!(
            "release stopped at step `{step}`; aborted rollout api, read back: Degraded - RolloutAborted"
        )),
        "{run}"
    );
    assert_eq!(world.changes(), [set_image_v2(), ABORT.to_owned()]);
    assert_eq!(world.active_image(), Some(image("v1")));
    assert!(
        run.stdout.is_empty(),
        "a failed release printed a result:\n{run}"
    );
    assert!(
        run.stderr.contains("so the active version is unchanged"),
        "{run}"
    );
}

#[test]
fn release_promotes_a_good_preview() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");

    let run = world.run(&release_args(&[]));
    run.ok();
    assert_eq!(run.stdout, format!("{}\n", image("v2")));
    assert!(run.stderr.contains("Paused - BlueGreenPause"), "{run}");
    assert!(
        run.stderr.contains("port-forward service/api-preview :80"),
        "{run}"
    );
    assert!(run.stderr.contains("sanity passed"), "{run}");
    assert_eq!(world.changes(), [set_image_v2(), PROMOTE.to_owned()]);
    assert_eq!(world.active_image(), Some(image("v2")));
}

/// A release (of `blue_world`) that must end aborted: what makes it fail,
/// the flags it runs with, the step it stops at, and what it says.
struct Aborted {
    /// Breaks the preview v2; the pod that plays it, if one does.
    preview: fn(&World) -> Option<Pod>,
    flags: &'static [&'static str],
    step: &'static str,
    /// What the `error:` line says, each.
    error_says: &'static [&'static str],
    /// What the rest of stderr says, each.
    stderr_says: &'static [&'static str],
}

impl Aborted {
    fn at(step: &'static str) -> Aborted {
        Aborted {
            preview: |_| None,
            flags: &[],
            step,
            error_says: &[],
            stderr_says: &[],
        }
    }
}

fn release_aborts(case: Aborted) {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _preview = (case.preview)(&world);
    let run = world.run(&release_args(case.flags));
    assert_aborted(&world, &run, case.step);
    for says in case.error_says {
        assert!(run.error().contains(says), "{run}");
    }
    for says in case.stderr_says {
        assert!(run.stderr.contains(says), "{run}");
    }
}

#[test]
fn release_aborts_a_preview_with_the_wrong_version() {
    release_aborts(Aborted {
        // The preview answers, healthy, but with the old version: a stale image.
        preview: |world| Some(world.api_pods("v2", "v1")),
        error_says: &[
            r#"/health: expected 200 with {"status":"ok","version":"v2"}, got 200 with"#,
            r#""version":"v1""#,
        ],
        ..Aborted::at("sanity")
    });
}

#[test]
fn release_aborts_a_preview_that_answers_500() {
    release_aborts(Aborted {
        preview: |world| {
            let broken = Pod::answering(500, r#"{"error":"database unreachable"}"#);
            Some(world.serve("v2", broken))
        },
        error_says: &[r#"got 500: {"error":"database unreachable"}"#],
        ..Aborted::at("sanity")
    });
}

#[test]
fn release_aborts_a_preview_that_never_answers() {
    release_aborts(Aborted {
        preview: |world| Some(world.serve("v2", Pod::silent())),
        // Each GET was bounded: the failure is the silence, within --sanity-timeout.
        error_says: &["got no answer", "sanity failed after"],
        ..Aborted::at("sanity")
    });
}

#[test]
fn release_aborts_when_the_rollout_turns_degraded() {
    release_aborts(Aborted {
        preview: |world| {
            world.behaviour("v2", None, Some(0.3));
            None
        },
        error_says: &["is Degraded - ProgressDeadlineExceeded: ReplicaSet"],
        ..Aborted::at("wait for the preview")
    });
}

#[test]
fn release_aborts_when_the_wait_times_out() {
    release_aborts(Aborted {
        preview: |world| {
            world.behaviour("v2", None, None);
            None
        },
        flags: &["--timeout", "1s"],
        error_says: &["did not reach a ready preview within 1s; last read: Progressing"],
        ..Aborted::at("wait for the preview")
    });
}

#[test]
fn release_aborts_when_the_preview_service_does_not_exist() {
    release_aborts(Aborted {
        flags: &["--preview-service", "api-previw"],
        error_says: &["no port-forward to api-previw within 2s"],
        stderr_says: &["Error from server (NotFound): services \"api-previw\" not found"],
        ..Aborted::at("sanity")
    });
}

#[test]
fn release_aborts_when_promotion_does_not_end_healthy_in_time() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");
    world.switch_after("v2", 60.0);

    // --timeout bounds both the wait for the pause (ready after 0.3s) and the
    // wait for Healthy after promote (never within it).
    let run = world.run(&release_args(&["--timeout", "5s"]));
    run.failed();
    assert!(
        run.error().contains(
            "release stopped at step `promote`; aborted rollout api, read back: Degraded"
        ) && run
            .error()
            .contains("did not reach Healthy on the promoted ReplicaSet within 5s"),
        "{run}"
    );
    assert_eq!(
        world.changes(),
        [set_image_v2(), PROMOTE.to_owned(), ABORT.to_owned()]
    );
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn ctrl_c_during_the_wait_aborts() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.behaviour("v2", None, None);

    let child = world.start_release(&["--timeout", "60s"]);
    // Wait until it is polling, then press Ctrl-C (SIGINT, as a terminal sends it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while world
        .kubectl_calls()
        .iter()
        .filter(|c| c[0] == "get")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "release never started polling");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.signal("INT");
    let run = child.finish();

    assert_aborted(&world, &run, "wait for the preview");
    assert!(
        run.stderr
            .contains("release interrupted at step `wait for the preview`"),
        "{run}"
    );
    assert!(
        run.error()
            .contains("interrupted (Ctrl-C, SIGTERM, SIGHUP or SIGQUIT)"),
        "{run}"
    );
}

#[test]
fn ctrl_c_during_sanity_stops_the_port_forward_and_aborts() {
    let Some((world, blue)) = blue_world() else {
        return;
    };
    let _silent = world.serve("v2", Pod::silent());

    let child = world.start_release(&["--sanity-timeout", "60s"]);
    world.wait_for_port_forward();
    child.signal("INT");
    let run = child.finish();

    assert_aborted(&world, &run, "sanity");
    assert!(run.error().contains("interrupted"), "{run}");
    drop(blue);
    world.assert_no_process_left();
}

#[test]
fn the_first_release_of_a_new_rollout_checks_the_active_service() {
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    let _green = world.api_pods("v2", "v2");
    world.behaviour("v2", Some(0.3), None);

    let run = world.run(&release_args(&[]));
    run.ok();
    assert!(
        run.stderr
            .contains("went straight to Healthy without a pause"),
        "{run}"
    );
    assert!(
        run.stderr.contains("port-forward service/api-active :80"),
        "{run}"
    );
    assert!(run.stderr.contains("sanity passed"), "{run}");
    assert_eq!(world.changes(), [set_image_v2()], "no promote, no abort");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn a_failing_first_release_is_reported_but_not_aborted() {
    let Some(world) = World::needing_kubectl(None) else {
        return;
    };
    let _wrong = world.api_pods("v2", "v1");
    world.behaviour("v2", Some(0.1), None);

    let run = world.run(&release_args(&[]));
    run.failed();
    assert!(
        run.error().contains(
            "release stopped at step `sanity`; not aborted: this was the rollout's first version"
        ),
        "{run}"
    );
    assert_eq!(world.changes(), [set_image_v2()]);
}

#[test]
fn deploy_wait_sanity_promote_step_by_step() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");
    let scope = ["-n", NAMESPACE];

    let deploy = world.run(&deploy_args(&["--wait", "--poll-interval", "100ms"]));
    assert_eq!(deploy.ok().stdout, format!("{}\n", image("v2")));
    assert!(deploy.stderr.contains("the preview is ready"), "{deploy}");

    let status = world.run(&[&["status"][..], &scope].concat());
    assert!(
        status
            .ok()
            .stdout
            .starts_with("rollout api in namespace shop: Paused - BlueGreenPause")
    );
    let json = world.run(&[&["status", "--json"][..], &scope].concat());
    let json: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(json["phase"], "Paused");
    assert_eq!(json["message"], "BlueGreenPause");
    assert_eq!(json["namespace"], "shop");

    let sanity = world.run(
        &[
            &["sanity", "--expect-version", "v2", "--timeout", "5s"][..],
            &scope,
        ]
        .concat(),
    );
    sanity.ok();
    assert!(sanity.stderr.contains("sanity passed"), "{sanity}");
    assert_eq!(
        world.active_image(),
        Some(image("v1")),
        "sanity changed traffic"
    );

    let promote = world.run(&promote_args(&[]));
    promote.ok();
    assert!(
        promote.stderr.contains("promoted: rollout api is Healthy"),
        "{promote}"
    );
    assert_eq!(world.active_image(), Some(image("v2")));

    let abort = world.run(&[&["abort"][..], &scope].concat());
    abort.ok();
    assert!(
        abort
            .stderr
            .contains("nothing to abort: rollout api is Healthy"),
        "{abort}"
    );
    assert_eq!(world.changes(), [set_image_v2(), PROMOTE.to_owned()]);
}

#[test]
fn promote_refuses_before_the_pause() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.behaviour("v2", None, None);
    world.run(&deploy_args(&[])).ok();

    let promote = world.run(&["promote", "-n", NAMESPACE, "--expect-image", &image("v2")]);
    promote.failed();
    assert!(
        promote.error().contains(
            "refusing to promote rollout api: it is `Progressing - updated replicas are still becoming available`, \
             not a preview waiting at `Paused - BlueGreenPause`"
        ),
        "{promote}"
    );
    assert_eq!(world.changes(), [set_image_v2()]);
}

#[test]
fn abort_keeps_the_active_version_and_says_how_to_recover() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.deploy_paused("v2");

    let abort = world.run(&["abort", "-n", NAMESPACE]);
    abort.ok();
    assert!(
        abort.stderr.contains("the active version is unchanged"),
        "{abort}"
    );
    assert!(
        abort
            .stderr
            .contains("kubectl-argo-rollouts undo api --to-revision=1 -n shop"),
        "{abort}"
    );
    assert_eq!(world.active_image(), Some(image("v1")));

    let status = world.run(&["status", "-n", NAMESPACE]);
    status.failed();
    assert!(
        status
            .stdout
            .starts_with("rollout api in namespace shop: Degraded - RolloutAborted: Rollout aborted update to revision 2"),
        "{status}"
    );
}

#[test]
fn sanity_checks_a_given_url_without_kubectl() {
    let Some((world, blue)) = blue_world() else {
        return;
    };
    let url = format!("http://{}", blue.addr);
    let sanity = |version: &str, timeout: &str| {
        world.run(&[
            "sanity",
            "--url",
            &url,
            "--expect-version",
            version,
            "--timeout",
            timeout,
        ])
    };
    sanity("v1", "2s").ok();
    let wrong = sanity("v9", "1s");
    wrong.failed();
    assert!(
        wrong
            .error()
            .contains(r#"expected 200 with {"status":"ok","version":"v9"}, got 200 with"#),
        "{wrong}"
    );
    assert!(world.calls().is_empty());
}

/// Not a test: prints how long `release` takes in the happy path beyond the
/// waits it is told to do. The preview is ready at once, so no poll interval
/// is slept; release reports its time split three ways (in the tools, in
/// waits, its own) and the wall time seen from outside adds its start-up and
/// checks before the first command.
/// Run: cargo test -p xtask --test rollout_release -- --ignored --nocapture release_overhead
#[test]
#[ignore = "a benchmark: prints figures, asserts nothing about time"]
fn release_overhead_figures() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    let _green = world.api_pods("v2", "v2");
    world.behaviour("v1", Some(0.0), None);
    world.behaviour("v2", Some(0.0), None);
    // Each release goes through the preview: the old ReplicaSet is scaled down at
    // once, so going back to it is not a fast rollback (which deploy refuses).
    world.scale_down_delay(0.0);
    let runs = 15;
    let (mut wall, mut outside, mut tools, mut waits, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let tag = if i % 2 == 0 { "v2" } else { "v1" };
        let started = Instant::now();
        let run = world.run(&release_args(&[
            "--tag",
            tag,
            "--expect-version",
            tag,
            "--poll-interval",
            "2s",
        ]));
        wall.push(started.elapsed().as_secs_f64() * 1e3);
        run.ok();
        // "released IMAGE (version V) in 0.9s: 851.2ms in ..., 0.0ms in waits, 1.2ms own"
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with("released "))
            .expect("a summary line");
        let millis: Vec<f64> = line
            .split(' ')
            .filter_map(|word| word.strip_suffix("ms")?.parse().ok())
            .collect();
        let [in_tools, in_waits, own_time] = millis[..] else {
            panic!("{line}")
        };
        tools.push(in_tools);
        waits.push(in_waits);
        own.push(own_time);
        outside.push(wall.last().unwrap() - (in_tools + in_waits + own_time));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wall, tools, waits, own) = (median(wall), median(tools), median(waits), median(own));
    let outside = median(outside);
    println!("release, happy path, preview ready at once: median of {runs} runs");
    println!("  wall time seen from outside:               {wall:7.1} ms");
    println!("  in the tools (plugin, port-forward, GETs):  {tools:7.1} ms");
    println!("  in waits it was told to do:                {waits:7.1} ms");
    println!("  its own, between those:                    {own:7.1} ms");
    println!("  outside its timer (start-up, checks):      {outside:7.1} ms");
}

/// Runs xtask on a pseudo-terminal (Python's pty module, arguments passed one
/// by one), typing `answer` once it asks; returns what the terminal showed and the exit code.
fn at_a_terminal(world: &World, args: &[&str], answer: &str) -> (String, Option<i32>) {
    at_a_terminal_after(world, args, || {}, answer)
}

#[test]
fn promote_asks_at_a_terminal_and_takes_no_for_an_answer() {
    if !require_tool("python3") {
        return;
    }
    let world = World::paused_on_v2();
    let (screen, code) = at_a_terminal(&world, &promote_args(&[]), "n\n");
    assert!(
        screen.contains(&format!(
            "switch all traffic of rollout api to the preview {}? [y/N]",
            image("v2")
        )),
        "{screen}"
    );
    assert!(
        screen.contains("error: not promoted: not confirmed"),
        "{screen}"
    );
    assert_ne!(code, Some(0));
    assert_eq!(world.changes(), [set_image_v2()]);

    let (screen, code) = at_a_terminal(&world, &promote_args(&[]), "y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn promote_with_stdin_not_a_terminal_never_asks() {
    let world = World::paused_on_v2();
    // stdin is an open pipe nobody writes to: a prompt would hang here.
    let child = Spawned::new(
        world
            .xtask(&promote_args(&[]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let run = child.finish();
    run.ok();
    assert!(!run.stderr.contains("[y/N]"), "{run}");
    assert_eq!(world.active_image(), Some(image("v2")));
}

#[test]
fn sanity_waits_for_a_pod_behind_the_preview_service() {
    let Some((world, _blue)) = blue_world() else {
        return;
    };
    world.behaviour("v2", Some(0.0), None);
    world.run(&deploy_args(&[])).ok();
    // No pod of v2 runs yet: kubectl port-forward refuses until one does.
    let mut sanity = Spawned::new(
        world
            .xtask(&[
                "sanity",
                "-n",
                NAMESPACE,
                "--expect-version",
                "v2",
                "--timeout",
                "20s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stderr = rollout_support::Collected::new(sanity.child().stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stderr.contains("not yet: ") {
        assert!(
            Instant::now() < deadline,
            "sanity never tried to port-forward"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _green = world.api_pods("v2", "v2");
    let output = sanity.wait_with_output();
    let stderr = stderr.finish();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("pod is not running"), "{stderr}");
    assert!(stderr.contains("sanity passed"), "{stderr}");
}

/// Runs xtask on a pseudo-terminal (Python's pty module, arguments passed one
/// by one); once the question is on the screen, runs `meanwhile` (what
/// happens while a person reads it), then types `answer`. Returns what the
/// terminal showed and the exit code.
fn at_a_terminal_after(
    world: &World,
    args: &[&str],
    meanwhile: impl FnOnce(),
    answer: &str,
) -> (String, Option<i32>) {
    const SPAWN: &str =
        "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))";
    let cmd = world.xtask(&[]);
    let xtask = cmd.get_program().to_owned();
    let mut terminal = Command::new("python3");
    terminal.args(["-c", SPAWN]).arg(xtask).args(args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => terminal.env(key, value),
            None => terminal.env_remove(key),
        };
    }
    let mut child = Spawned::new(
        terminal
            .current_dir(rollout_support::root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let screen = rollout_support::Collected::new(child.child().stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !screen.contains("[y/N]") {
        assert!(Instant::now() < deadline, "never asked");
        std::thread::sleep(Duration::from_millis(20));
    }
    meanwhile();
    use std::io::Write;
    let mut stdin = child.child().stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    let code = child.child().wait().unwrap().code();
    drop(stdin);
    (screen.finish(), code)
}

#[test]
fn promote_reads_again_after_the_question_and_ships_only_what_was_confirmed() {
    if !require_tool("python3") {
        return;
    }
    let world = World::paused_on_v2();
    // While the person reads the question, a newer pipeline takes the preview.
    let (screen, code) = at_a_terminal_after(
        &world,
        &promote_args(&[]),
        || world.deploy_paused_replacing("v3"),
        "y\n",
    );
    assert_ne!(code, Some(0), "{screen}");
    assert!(
        screen.contains("not promoted: the rollout changed while you were asked"),
        "{screen}"
    );
    assert!(
        world.changes().iter().all(|c| !c.starts_with("promote")),
        "{:?}",
        world.changes()
    );
    assert_eq!(world.active_image(), Some(image("v1")));
}

#[test]
fn abort_reads_again_after_the_question_and_sends_nothing_when_nothing_is_left() {
    if !require_tool("python3") {
        return;
    }
    let world = World::paused_on_v2();
    // While the person reads the question, someone promotes the preview.
    let (screen, code) = at_a_terminal_after(
        &world,
        &["abort", "-n", NAMESPACE],
        || {
            world.run(&promote_args(&["--yes"])).ok();
        },
        "y\n",
    );
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("nothing to abort"), "{screen}");
    assert!(
        world.changes().iter().all(|c| !c.starts_with("abort")),
        "{:?}",
        world.changes()
    );
    assert_eq!(world.active_image(), Some(image("v2")));
}
