//! `cargo xtask` given bad input or a hostile peer: it refuses clearly, it
//! ends, and what it prints can be pasted. The built xtask binary, the real
//! git and bash, and std servers on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{self, output as run, text, xtask_with as xtask};

// --- Dry-run lines can be pasted ------------------------------------------

/// A plan line, pasted into bash with its program replaced by `printf`,
/// gives back exactly the words xtask would have run: nothing expands.
#[test]
fn a_pasted_dry_run_line_runs_exactly_what_xtask_would() {
    let marker = std::env::temp_dir().join(format!("xtask-pwned-{}", std::process::id()));
    let hostile = format!("$(touch {})", marker.display());
    let words = [hostile.as_str(), "`id`", "a b", "it's", "${HOME}", "*", ""];
    let mut args = vec!["--dry-run", "test", "--no-nextest", "--"];
    args.extend(words);
    let out = run(&mut xtask(&args));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let cargo = std::env::var("CARGO").unwrap();
    let line = stdout
        .lines()
        .find(|l| l.contains(" test --workspace"))
        .unwrap_or_else(|| panic!("no cargo test line: {stdout}"));
    let rest = line
        .strip_prefix(&cargo)
        .unwrap_or_else(|| panic!("{line} does not start with {cargo}"));
    let pasted = format!("printf '%s\\n'{rest}");
    let shell = Command::new("bash")
        .args(["-c", &pasted])
        .output()
        .expect("run bash");
    assert!(shell.status.success(), "{pasted}: {shell:?}");
    let expected: String = ["test", "--workspace"]
        .iter()
        .chain(&words)
        .map(|w| format!("{w}\n"))
        .collect();
    assert_eq!(text(&shell.stdout), expected, "{line}");
    assert!(!marker.exists(), "pasting {line} ran $(...)");
}

#[test]
fn dry_run_of_run_quotes_the_service_arguments() {
    let out =
        run(xtask(&["--dry-run", "run", "--", "$(id)", "--port=1 2"]).env("API_VERSION", "v1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last = text(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    // Where cargo puts the edit profile's build (under $CARGO_TARGET_DIR when set).
    assert!(last.ends_with("/edit/api '$(id)' '--port=1 2'"), "{last}");
}

#[test]
fn run_help_describes_its_plan() {
    let out = run(xtask(&["--dry-run", "run"]).env("API_VERSION", "v1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert_eq!(plan.lines().count(), 2, "{plan}");
    support::runs::assert_runs_describe("run", &plan);
}

// --- Empty flags are refused, empty variables are unset --------------------

#[test]
fn an_empty_image_or_tag_flag_is_refused() {
    for task in ["package", "deploy"] {
        for (flag, default) in [
            ("--image=", "$CI_REGISTRY_IMAGE"),
            ("--tag=", "$CI_COMMIT_SHA"),
        ] {
            let out = run(&mut xtask(&["--dry-run", task, flag]));
            assert_eq!(out.status.code(), Some(2), "{task} {flag}: {out:?}");
            let stderr = text(&out.stderr);
            let name = flag.trim_end_matches('=');
            assert!(
                stderr.contains(&format!(
                    "{name} is empty: give a value, or leave {name} out"
                )),
                "{stderr}"
            );
            assert!(stderr.contains(default), "{stderr}");
            assert!(out.stdout.is_empty(), "{task} {flag} planned something");
        }
    }
}

/// CI templates set variables to empty: that means unset, as it always did.
#[test]
fn an_empty_image_variable_means_the_default() {
    let out = run(
        xtask(&["--dry-run", "package", "--allow-dirty", "--tag", "t1"])
            .env("API_IMAGE", "")
            .env("API_IMAGE_TAG", ""),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().any(|l| l == "# result: api:t1"),
        "{}",
        text(&out.stdout)
    );
}

// --- Without git -----------------------------------------------------------

#[test]
fn build_without_git_says_git_is_missing_and_how_to_install_it() {
    let empty = std::env::temp_dir().join(format!("xtask-no-git-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    // cargo is found through $CARGO, as under `cargo xtask`; git nowhere.
    let out = run(xtask(&["--dry-run", "build"]).env("PATH", &empty));
    std::fs::remove_dir_all(&empty).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("git is not installed"), "{stderr}");
    assert!(stderr.contains("apt-get install git"), "{stderr}");
    assert!(stderr.contains("API_VERSION"), "{stderr}");
    assert!(!stderr.contains("not a git checkout"), "{stderr}");
}

// --- --url -------------------------------------------------------------------

#[test]
fn a_url_that_is_not_http_host_port_is_refused_before_anything_runs() {
    for (url, why) in [
        ("http://127.0.0.1:8080\r\nX-Injected: 1", "carriage return"),
        ("http://127.0.0.1 :8080", "a space"),
        ("http://127.0.0.1:8080/health", "no path"),
        ("http://127.0.0.1:99999", "1 to 65535"),
        ("http://deploy:hunter2@127.0.0.1:8080", "userinfo"),
    ] {
        for task in ["sanity", "release"] {
            let out = run(&mut xtask(&[task, "--url", url, "--expect-version", "v1"]));
            assert_eq!(out.status.code(), Some(2), "{task} {url:?}: {out:?}");
            let stderr = text(&out.stderr);
            assert!(stderr.starts_with("error: --url: invalid URL"), "{stderr}");
            assert!(stderr.contains(why), "{stderr}");
            assert!(!stderr.contains("hunter2"), "{stderr}");
            assert!(!stderr.contains('\r'), "{stderr:?}");
        }
    }
}

// --- Durations ---------------------------------------------------------------

/// What the plugin (Go's time.Duration) cannot take is refused when the
/// command line is parsed, before any image is set: no panic, no half-done release.
#[test]
fn a_duration_longer_than_go_holds_is_refused_before_anything_runs() {
    for (flag, value) in [
        ("--timeout", "2562047h47m16.854775808s"),
        ("--timeout", "10000000000000000000s"),
        ("--sanity-timeout", "99999999999999999999999h"),
    ] {
        let out = run(&mut xtask(&[
            "release",
            flag,
            value,
            "--expect-version",
            "v1",
        ]));
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("2562047h47m16.854775807s"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = run(&mut xtask(&[
        "--dry-run",
        "sanity",
        "--url",
        "http://127.0.0.1:9",
        "--expect-version",
        "v1",
        "--timeout",
        "2562047h47m16.854775807s",
    ]));
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("retried for at most 9223372036854775807ns"),
        "{out:?}"
    );
}

// --- A hostile preview -------------------------------------------------------

/// A loopback peer answering every connection with `serve` until stopped.
struct Peer {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    fn start(serve: fn(TcpStream, &AtomicBool)) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        // Bounded: 30s and 64 connections at most, whatever the client does.
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            let mut served = Vec::new();
            while !stopping.load(Ordering::Relaxed) && Instant::now() < end && served.len() < 64 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let stop = Arc::clone(&stopping);
                        served.push(std::thread::spawn(move || serve(stream, &stop)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            stopping.store(true, Ordering::Relaxed);
            for thread in served {
                let _ = thread.join();
            }
        });
        Peer {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &mut TcpStream) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        request.push(byte[0]);
    }
}

/// The peak resident memory of a running process, in KiB (Linux's VmHWM).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `sanity --url` with a generous outer bound that only proves it ended;
/// also gives the highest peak RSS seen while it ran (a figure, not a check).
fn sanity_against(peer: &Peer, timeout: &str) -> (Output, Option<u64>) {
    let mut child = xtask(&[
        "sanity",
        "--url",
        &peer.url,
        "--expect-version",
        "v1",
        "--timeout",
        timeout,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start xtask");
    let bound = Instant::now() + Duration::from_secs(60);
    let mut peak = None;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kib(child.id()));
        if Instant::now() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sanity --timeout {timeout} was still running after 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), peak)
}

#[test]
fn sanity_against_a_trickling_preview_ends_at_its_timeout() {
    let peer = Peer::start(|mut stream, stop| {
        read_request(&mut stream);
        let head = b"HTTP/1.1 200 OK\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(400) {
            if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (out, _) = sanity_against(&peer, "2s");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sanity failed after"), "{stderr}");
    assert!(stderr.contains("no complete answer within"), "{stderr}");
}

#[test]
fn sanity_against_a_flooding_preview_stops_reading_at_the_limit() {
    let peer = Peer::start(|mut stream, stop| {
        read_request(&mut stream);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let chunk = [b'x'; 64 * 1024];
        // 64 MiB at most per connection.
        for _ in 0..1024 {
            if stop.load(Ordering::Relaxed) || stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (out, peak) = sanity_against(&peer, "2s");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("larger than 1 MiB"), "{stderr}");
    // A figure for whoever runs this with --nocapture, not a check.
    match peak {
        Some(kib) => println!("xtask sanity against a 64 MiB-per-answer flood: peak RSS {kib} KiB"),
        None => println!("xtask sanity against a flood: peak RSS not readable (no /proc)"),
    }
}
