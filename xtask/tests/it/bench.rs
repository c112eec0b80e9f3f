//! `cargo xtask bench` through the built xtask binary: its `--dry-run` plan
//! and its refusal when tools are missing. A real run takes a minute of load
//! and is a measurement, not a test.
//!
//! A dry run only locates wrk, taskset and go on PATH; it must run none of
//! them. So PATH holds stand-ins that record any call and fail: only their
//! presence matters, and a call would be the bug.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, root};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const VERSION: &str = "v9.9.9-plan";

/// A fresh folder under the workspace's target dir (no temp-dir crate), one per test.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/xtask-tests/bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A PATH folder with a stand-in for each of `tools`, which appends its name
/// to `calls` and exits 1 if anything runs it.
fn stand_ins(dir: &Path, tools: &[&str]) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.join("calls");
    for tool in tools {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\necho 'a dry run ran {tool}' >&2\nexit 1\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, calls)
}

fn xtask(path: &Path, args: &[&str]) -> Output {
    Command::new(XTASK)
        .args(args)
        .env("PATH", path)
        .env("API_VERSION", VERSION)
        // The stand-in docker is this host's engine, whatever DOCKER_HOST the job has.
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run xtask")
}

/// The plan on stdout, after checking the run succeeded. With fewer than two
/// CPUs there is no plan: bench must refuse, saying why.
fn plan_of(out: &Output) -> Option<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cpus().is_none() {
        assert!(
            !out.status.success() && stderr.contains("different CPUs"),
            "{stderr}"
        );
        return None;
    }
    assert!(out.status.success(), "{stderr}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first two CPUs this process may use, as bench picks them.
fn cpus() -> Option<(usize, usize)> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim()
        .to_owned();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some((*cpus.first()?, *cpus.get(1)?))
}

#[test]
fn dry_run_prints_every_command_and_runs_none() {
    let dir = scratch("plan");
    let (bin, calls) = stand_ins(&dir, &["wrk", "taskset", "chrt", "go"]);
    let out = xtask(
        &bin,
        &[
            "--dry-run",
            "bench",
            "--duration",
            "7",
            "--connections",
            "32",
            "--rates",
            "1000,3000",
            "--realtime",
        ],
    );
    let Some(stdout) = plan_of(&out) else { return };
    let (server, load) = cpus().unwrap();

    let root = root();
    let root = root.display();
    let cargo = std::env::var("CARGO").unwrap();
    let go = bin.join("go");
    let go = go.display();
    // The load generator is built by the rustc of the cargo that runs the task.
    let rustc = Path::new(&cargo).with_file_name("rustc");
    let rustc = rustc.display();
    let expected = format!(
        "RUSTFLAGS='-C target-feature=+crt-static' API_VERSION={VERSION} {cargo} build --message-format=json-render-diagnostics --release --package api --target x86_64-unknown-linux-gnu
# copy {root}/target/x86_64-unknown-linux-gnu/release/api to {root}/bin/api
{go} build -trimpath '-ldflags=-s -w -X main.version={VERSION}' -o {root}/target/bench/api-go {root}/xtask/bench/main.go
{rustc} --edition 2024 -C opt-level=3 -o {root}/target/bench/load {root}/xtask/bench/load.rs
# 20 times each, unpinned: start, GET /health until 200, stop
PORT='<port>' HOST=127.0.0.1 {root}/bin/api
PORT='<port>' HOST=127.0.0.1 {root}/target/bench/api-go
# 3 rounds, the servers in turn: start pinned, read /proc/<pid>/status VmRSS, warm up, measure (with /proc/<pid>/stat CPU time), read VmRSS and VmHWM, stop
PORT='<port>' HOST=127.0.0.1 taskset -c {server} {root}/bin/api
taskset -c {load} wrk -t1 -c32 -d1s 'http://127.0.0.1:<port>/health'
taskset -c {load} wrk -t1 -c32 -d7s --latency -s xtask/bench/report.lua 'http://127.0.0.1:<port>/health'
PORT='<port>' HOST=127.0.0.1 taskset -c {server} {root}/target/bench/api-go
taskset -c {load} wrk -t1 -c32 -d1s 'http://127.0.0.1:<port>/health'
taskset -c {load} wrk -t1 -c32 -d7s --latency -s xtask/bench/report.lua 'http://127.0.0.1:<port>/health'
# then both servers started once, pinned, and /dev/cpu_dma_latency held at 0 (idle CPUs poll) where it can be opened; at each rate (1000/s, 3000/s), one run of the load generator, open loop, 21 s a server, the servers in turn every 100 ms, with /proc/<pid>/task/*/schedstat CPU time; a run disturbed (other work on the servers' CPU, from /proc/stat) is made again, twice at most
PORT='<port>' HOST=127.0.0.1 taskset -c {server} {root}/bin/api
chrt --all-tasks --fifo --pid 50 '<pid>'
PORT='<port>' HOST=127.0.0.1 taskset -c {server} {root}/target/bench/api-go
chrt --all-tasks --fifo --pid 50 '<pid>'
chrt --fifo 50 taskset -c {load} {root}/target/bench/load --rate 1000 --duration 21 --warmup 1 --connections 32 --slice 100 'http://127.0.0.1:<port>/health' 'http://127.0.0.1:<port>/health'
chrt --fifo 50 taskset -c {load} {root}/target/bench/load --rate 3000 --duration 21 --warmup 1 --connections 32 --slice 100 'http://127.0.0.1:<port>/health' 'http://127.0.0.1:<port>/health'
"
    );
    assert_eq!(stdout, expected);
    support::runs::assert_runs_describe("bench", &stdout);
    assert!(
        !calls.exists(),
        "ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn dry_run_of_the_dynamic_build_plans_cargo_without_a_target() {
    let dir = scratch("dynamic");
    let (bin, _) = stand_ins(&dir, &["wrk", "taskset"]);
    let out = xtask(&bin, &["--dry-run", "bench", "--dynamic", "--no-go"]);
    let Some(stdout) = plan_of(&out) else { return };
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("API_VERSION={VERSION} ")),
        "{first}"
    );
    assert!(
        first.ends_with(" build --message-format=json-render-diagnostics --release --package api"),
        "{first}"
    );
}

#[test]
fn without_go_the_plan_has_no_go_server_and_says_why() {
    let dir = scratch("no-go");
    let (bin, calls) = stand_ins(&dir, &["wrk", "taskset"]);
    let out = xtask(&bin, &["--dry-run", "bench"]);
    let Some(stdout) = plan_of(&out) else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("api-go"), "{stdout}");
    assert!(
        stderr.contains("no Go comparison: go is not installed: apt-get install golang-go"),
        "{stderr}"
    );
    assert!(!calls.exists());
}

#[test]
fn missing_wrk_and_taskset_are_reported_together_before_any_work() {
    let dir = scratch("missing");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = xtask(&empty, &["bench"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "error: missing tools on PATH:\n  wrk: apt-get install wrk\n  taskset: apt-get install util-linux\n"
    );
    assert!(out.stdout.is_empty(), "nothing planned or built");
}

#[test]
fn bad_numbers_are_refused_by_the_command_line() {
    let dir = scratch("flags");
    let (bin, calls) = stand_ins(&dir, &["wrk", "taskset"]);
    for args in [
        &["bench", "--duration", "0"][..],
        &["bench", "--rounds", "x"],
        &["bench", "--connections", "0"],
    ] {
        let out = xtask(&bin, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: invalid value"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!calls.exists());
}

#[test]
fn rates_out_of_order_are_refused_with_the_fix() {
    let dir = scratch("rates");
    let (bin, calls) = stand_ins(&dir, &["wrk", "taskset"]);
    let out = xtask(&bin, &["bench", "--rates", "20000,5000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '20000,5000' for '--rates <RATES>'")
            && stderr.contains("give the rates in ascending order, each once"),
        "{stderr}"
    );
    assert!(!calls.exists());
}

#[test]
fn dry_run_of_abuse_plans_the_image_and_the_memory_limited_container_and_runs_nothing() {
    let dir = scratch("abuse-plan");
    let (bin, calls) = stand_ins(&dir, &["docker", "prlimit"]);
    let out = xtask(
        &bin,
        &[
            "--dry-run",
            "bench",
            "--abuse",
            "--silent",
            "300",
            "--hold",
            "2",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let docker = bin.join("docker");
    let docker = docker.display();
    assert!(
        stdout.contains(&format!("{docker} build --tag api-abuse-")),
        "{stdout}"
    );
    assert!(
        stdout.contains("--network host --memory 128m --memory-swap 128m"),
        "{stdout}"
    );
    assert!(stdout.contains("300 silent"), "{stdout}");
    assert!(stdout.contains("held 2 s each"), "{stdout}");
    assert!(
        !calls.exists(),
        "ran: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn abuse_counts_beyond_what_a_client_can_hold_are_refused() {
    let dir = scratch("abuse-flags");
    let (bin, calls) = stand_ins(&dir, &["docker"]);
    for args in [
        &["bench", "--abuse", "--silent", "0"][..],
        &["bench", "--abuse", "--silent", "30000"],
        &["bench", "--abuse", "--hold", "0"],
        &["bench", "--abuse", "--settle", "x"],
    ] {
        let out = xtask(&bin, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: invalid value"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!calls.exists());
}

/// Whether the Docker engine answers: a failure under CI (CI runs every
/// test), a skip that says why elsewhere.
fn engine_or_skip() -> bool {
    let answered = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    support::needs(
        "the Docker engine",
        answered,
        "install Docker Engine (apt-get install docker.io) and start it",
    )
}

/// A small abuse run for real, in the container with the manifest's memory
/// limit: the service survives every kind and gives memory back after the
/// burst. Behaviour only; the figures are `cargo xtask bench --abuse`'s.
#[test]
fn abuse_in_a_memory_limited_container_kills_nothing_and_memory_comes_back() {
    if !engine_or_skip() {
        return;
    }
    // With the engine on another host (GitLab's dind service) the floods cannot
    // reach a container there over loopback: the bench runs the server as a
    // process here, and says so; the container run is the engine host's CI.
    let remote = std::env::var("DOCKER_HOST").is_ok_and(|h| {
        h.strip_prefix("tcp://")
            .is_some_and(|r| !r.starts_with("127.") && !r.starts_with("localhost"))
    });
    if remote {
        eprintln!("note: the engine is on another host: the server runs as a plain process");
    }
    let out = Command::new(XTASK)
        .args([
            "bench",
            "--abuse",
            "--json",
            "--silent",
            "400",
            "--trickle",
            "100",
            "--slowloris",
            "100",
            "--pipeliners",
            "100",
            "--burst",
            "400",
            "--hold",
            "2",
            "--settle",
            "8",
        ])
        .env_remove("API_VERSION")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run xtask");
    // Its containers and image are named after its pid.
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["plan"]["container"], !remote, "{stderr}");
    let names: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "silent",
            "one-byte trickle",
            "slowloris",
            "pipelining non-readers",
            "mix"
        ]
    );
    for phase in report["phases"].as_array().unwrap() {
        let name = &phase["name"];
        assert_eq!(phase["alive"], true, "{name}: {phase}");
        assert_eq!(phase["oom_killed"], false, "{name}");
        assert_eq!(phase["opened"], phase["asked"], "{name}");
        assert!(phase["held_by_server"].as_u64().unwrap() > 0, "{name}");
        assert_eq!(phase["keep_alive"]["errors"], 0, "{name}: {phase}");
        assert!(
            phase["keep_alive"]["requests"].as_u64().unwrap() > 0,
            "{name}"
        );
        // The probes on their own port (PROBE_PORT), each on a new connection.
        assert_eq!(phase["probe"]["errors"], 0, "{name}: {phase}");
        assert!(phase["probe"]["requests"].as_u64().unwrap() > 0, "{name}");
        // Where the CPU went: the server's probe thread apart from the rest,
        // and what of the slowest probes was waiting for a CPU.
        let probe_thread = &phase["server_cpu"]["threads"]["probe"];
        assert!(
            probe_thread["cpu"].as_f64().unwrap() > 0.0,
            "{name}: {phase}"
        );
        assert!(phase["server_cpu"]["total"]["cpu"].as_f64().unwrap() > 0.0);
        assert!(
            phase["probe"]["slowest_server_wait_us"].is_u64(),
            "{name}: {phase}"
        );
        assert!(
            phase["probe"]["slowest_client_wait_us"].is_u64(),
            "{name}: {phase}"
        );
    }
    let burst = &report["burst"];
    assert_eq!(burst["connections"], 400, "every burst connection answered");
    let peak = burst["rss_peak_kib"].as_u64().unwrap();
    let last = burst["rss_after_kib"].as_array().unwrap().last().unwrap();
    let last = last.as_u64().unwrap();
    let idle = burst["rss_idle_kib"].as_u64().unwrap();
    // Back: below the peak, or (a server with a CPU of its own answers the
    // burst as it comes, and barely grows) within 1 MiB of idle.
    assert!(
        last < peak || last <= idle + 1024,
        "RSS {last} KiB after the burst, peak {peak} KiB, idle {idle} KiB"
    );
    // No container or image of the run is left behind.
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let name = format!("name=api-abuse-{pid}-");
    assert_eq!(docker(&["ps", "--all", "--quiet", "--filter", &name]), "");
    let image = format!("api-abuse-{pid}:bench");
    assert_eq!(docker(&["images", "--quiet", &image]), "");
}
