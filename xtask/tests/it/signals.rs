//! Every way of stopping `release` after `set image` ends with the preview
//! aborted, read from the plugin double's state: SIGTERM while `set image`
//! waits for its answer (the write landed), SIGHUP and SIGQUIT during the
//! wait, Ctrl-C four times at a terminal, and a closed stderr
//! (`release ... 2>&1 | head -n 3`). The built xtask, the doubles first on
//! PATH, real `api` binaries as pods.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::rollout_support::{
    self, NAMESPACE, Ran, Spawned, World, image, promote_args, release_args,
};
use crate::support;

const SET_IMAGE_V2: &str =
    "set image api api=registry.example.com/shop/api:v2 -n shop --request-timeout=10s";
const ABORT: &str = "abort api -n shop --request-timeout=10s";

/// v1 active and served by a real api v1; the preview v2 never gets ready
/// unless a test says otherwise.
fn world() -> Option<(World, rollout_support::Pod)> {
    let (world, blue) = World::blue()?;
    world.behaviour("v2", None, None);
    Some((world, blue))
}

/// The preview was aborted (read from the double), once, and v1 still serves.
fn assert_aborted_once(world: &World, run: &Ran) {
    run.failed();
    assert_ne!(run.code, Some(101), "xtask panicked\n{run}");
    assert!(world.is_aborted(), "the rollout is not aborted\n{run}");
    assert_eq!(
        world.changes(),
        [SET_IMAGE_V2.to_owned(), ABORT.to_owned()],
        "{run}"
    );
    assert_eq!(world.active_image(), Some(image("v1")));
}

/// Waits until `ready` holds, for at most 30 s.
fn until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn polls(world: &World) -> usize {
    world
        .kubectl_calls()
        .iter()
        .filter(|c| c[0] == "get")
        .count()
}

#[test]
fn sigterm_while_set_image_awaits_its_answer_reads_back_and_aborts() {
    let Some((world, blue)) = world() else {
        return;
    };
    // The write lands at once; the answer would come 20 s later.
    world.answer_late("set image", 20.0);
    let child = world.start_release(&[]);
    until("the image is set", || {
        world.rollout()["containers"]["api"] == image("v2").as_str()
    });
    std::thread::sleep(Duration::from_millis(200));
    child.signal("TERM");
    let run = child.finish();

    assert_aborted_once(&world, &run);
    assert!(
        run.stderr
            .contains("interrupted while setting the image; reading the rollout back"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("release interrupted at step `deploy`: aborting rollout api"),
        "{run}"
    );
    assert!(
        run.error()
            .contains("the rollout's template is registry.example.com/shop/api:v2 now (read back)"),
        "{run}"
    );
    // Nothing xtask started is left: not the plugin whose answer was late.
    drop(blue);
    world.assert_no_process_left();
}

#[test]
fn sighup_or_sigquit_during_the_wait_aborts_as_sigterm_does() {
    for signal in ["HUP", "QUIT"] {
        let Some((world, _blue)) = world() else {
            return;
        };
        let child = world.start_release(&["--timeout", "60s"]);
        until("release polls", || polls(&world) >= 3);
        child.signal(signal);
        let run = child.finish();

        assert_aborted_once(&world, &run);
        assert!(
            run.stderr
                .contains("release interrupted at step `wait for the preview`"),
            "SIG{signal}\n{run}"
        );
    }
}

/// xtask with `args`, leading a process group of its own as a shell's job
/// does, its output piped.
fn at_a_terminal(world: &World, args: &[&str]) -> Spawned {
    Spawned::new(
        world
            .xtask(args)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// A terminal sends Ctrl-C to its foreground process group: `kill -INT -PGID`.
fn press_ctrl_c(child: &Spawned) {
    let kill = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
}

#[test]
fn ctrl_c_four_times_at_a_terminal_ends_aborted() {
    let Some((world, blue)) = world() else {
        return;
    };
    // The abort's answer takes 2 s: the later presses come while it is in flight.
    world.answer_late("abort", 2.0);
    let child = at_a_terminal(&world, &release_args(&["--timeout", "60s"]));
    until("release polls", || polls(&world) >= 3);
    press_ctrl_c(&child);
    until("the abort is sent", || {
        world.changes().iter().any(|c| c == ABORT)
    });
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        press_ctrl_c(&child);
    }
    let run = child.finish();

    assert_aborted_once(&world, &run);
    assert_eq!(
        run.stderr
            .matches("interrupted again: the abort is in progress and goes on")
            .count(),
        3,
        "{run}"
    );
    assert!(!run.stderr.contains("erased the abort"), "{run}");
    assert!(
        run.error()
            .contains("release stopped at step `wait for the preview`; aborted rollout api"),
        "{run}"
    );
    // Nothing xtask started is left: not the plugin whose answer was late.
    drop(blue);
    world.assert_no_process_left();
}

/// `cargo xtask release ... 2>&1 | head -n 3` with a preview that fails its
/// checks: the pipe closes after three lines, and the abort still happens.
#[test]
fn a_closed_stderr_neither_panics_nor_skips_the_abort() {
    let Some((world, _blue)) = world() else {
        return;
    };
    world.behaviour("v2", Some(0.3), None);
    let _broken = world.serve("v2", rollout_support::Pod::answering(500, "{}"));
    let xtask = world.xtask(&release_args(&["--sanity-timeout", "2s"]));
    let mut bash = world.command("bash");
    bash.arg("-c")
        .arg(r#""$0" "$@" 2>&1 | head -n 3; exit "${PIPESTATUS[0]}""#)
        .arg(xtask.get_program())
        .args(xtask.get_args())
        .current_dir(support::root());
    for (key, value) in xtask.get_envs() {
        match value {
            Some(value) => bash.env(key, value),
            None => bash.env_remove(key),
        };
    }
    let run = support::run(&mut bash);

    assert_eq!(run.stdout.lines().count(), 3, "{run}");
    assert_aborted_once(&world, &run);
    assert_eq!(run.code, Some(1), "{run}");
}

/// The standalone abort, Ctrl-C pressed four times once it sent the abort:
/// while the plugin's answer is late (1 s) and while the controller has not
/// acted yet (abortedAt 1.5 s later). Each press is reported; neither the
/// call nor the read-back is cut, and what it says was read back.
#[test]
fn ctrl_c_during_a_standalone_abort_is_reported_and_the_abort_read_back() {
    let world = World::paused_on_v2();
    world.answer_late("abort", 1.0);
    world.abort_lag(1.5);
    let child = at_a_terminal(&world, &["abort", "-n", NAMESPACE, "--yes"]);
    until("the abort is sent", || {
        world.changes().iter().any(|c| c == ABORT)
    });
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        press_ctrl_c(&child);
    }
    let run = child.finish();

    run.ok();
    assert!(world.is_aborted(), "{run}");
    assert_eq!(
        world.changes().iter().filter(|c| *c == ABORT).count(),
        1,
        "{run}"
    );
    assert_eq!(
        run.stderr
            .matches("interrupted: the abort is in progress and goes on")
            .count(),
        1,
        "{run}"
    );
    assert_eq!(
        run.stderr
            .matches("interrupted again: the abort is in progress and goes on")
            .count(),
        3,
        "{run}"
    );
    assert!(!run.stderr.contains("quitting now"), "{run}");
    assert!(
        run.stderr.contains("aborted rollout api, read back"),
        "{run}"
    );
    assert!(run.stderr.contains("(abortedAt 20"), "{run}");
    world.assert_no_process_left();
}

/// Ctrl-C twice in quick succession at a terminal after `promote` sent the
/// promotion (the switch comes 30 s later): it never quits unsaid, and
/// claims neither a promotion nor its absence.
#[test]
fn ctrl_c_twice_after_promote_sent_says_the_state_is_unknown() {
    let world = World::paused_on_v2();
    world.switch_after("v2", 30.0);
    let child = at_a_terminal(
        &world,
        &promote_args(&["--yes", "--timeout", "60s", "--poll-interval", "100ms"]),
    );
    until("the promotion is sent", || {
        world.changes().iter().any(|c| c.starts_with("promote"))
    });
    std::thread::sleep(Duration::from_millis(300));
    press_ctrl_c(&child);
    press_ctrl_c(&child);
    let run = child.finish();

    assert_eq!(run.code, Some(1), "{run}");
    assert!(!run.stderr.contains("quitting now"), "{run}");
    assert!(
        run.error()
            .contains("promotion may have been sent, state unknown"),
        "{run}"
    );
    assert!(!run.stderr.contains("promoted: rollout"), "{run}");
    world.assert_no_process_left();
}
