//! `cargo xtask` end to end: the built xtask binary, the real cargo and git.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, output as run, root, text, xtask_with as xtask};

fn git_describe() -> String {
    let out = Command::new("git")
        .args(["describe", "--tags", "--always", "--dirty"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git describe: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn dry_run_build_prints_the_cargo_command_and_builds_nothing() {
    let out = run(xtask(&["--dry-run", "build"])
        .env("API_VERSION", "v0.0.0-plan")
        .env_remove("CARGO_TARGET_DIR"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let cargo = std::env::var("CARGO").unwrap();
    let bin = root().join("bin/api");
    let built = root().join("target/release/api");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "API_VERSION=v0.0.0-plan {cargo} build --message-format=json-render-diagnostics --release --package api"
            ),
            format!("# copy {} to {}", built.display(), bin.display()),
        ]
    );
    support::runs::assert_runs_describe("build", &stdout);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("Compiling") && !stderr.contains("Finished"),
        "{stderr}"
    );
}

#[test]
fn dry_run_static_build_names_the_target_and_crt_static() {
    let out = run(xtask(&["build", "--static", "--dry-run"]).env("API_VERSION", "v1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    support::runs::assert_runs_describe("build", &text(&out.stdout));
    let first = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        first.starts_with("RUSTFLAGS='-C target-feature=+crt-static' API_VERSION=v1 ")
            && first.ends_with(
                " build --message-format=json-render-diagnostics --release --package api --target x86_64-unknown-linux-gnu"
            ),
        "{first}"
    );
}

#[test]
fn dry_run_build_works_from_any_folder() {
    let elsewhere = std::env::temp_dir();
    let out = run(xtask(&["--dry-run", "build"]).current_dir(&elsewhere));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("API_VERSION={} ", git_describe())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&root().join("bin/api").display().to_string()),
        "{stdout}"
    );
}

#[test]
fn dry_run_test_plans_fmt_clippy_then_tests() {
    // A target folder of its own: whether an earlier report is there decides a plan line.
    let target = std::env::temp_dir().join(format!("xtask-plan-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    let plan = || {
        run(
            xtask(&["--dry-run", "test", "--no-nextest", "--", "some_filter"])
                .env("CARGO_TARGET_DIR", &target),
        )
    };
    let out = plan();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cargo = std::env::var("CARGO").unwrap();
    let steps = [
        format!("{cargo} fmt --all -- --check"),
        format!("{cargo} clippy --workspace --all-targets -- -D warnings"),
        format!("{cargo} test --workspace some_filter"),
    ];
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), steps);
    support::runs::assert_runs_describe("test", &text(&out.stdout));

    // With an earlier run's report there, the plan removes it first.
    let report = target.join("nextest/ci/junit.xml");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    std::fs::write(&report, "<testsuites/>").unwrap();
    let out = plan();
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let _ = std::fs::remove_dir_all(&target);
    assert!(
        lines[0].starts_with(&format!("# remove {}", report.display())),
        "{lines:?}"
    );
    assert_eq!(lines[1..], steps);
}

#[test]
fn an_unknown_task_is_refused() {
    let out = run(&mut xtask(&["deploi"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unrecognized subcommand 'deploi'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a similar subcommand exists: 'deploy'"),
        "{stderr}"
    );
}

#[test]
fn a_bad_flag_is_refused() {
    let out = run(&mut xtask(&["build", "--statik"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unexpected argument '--statik'"),
        "{stderr}"
    );
}

#[test]
fn a_missing_tool_is_named_with_how_to_install_it() {
    let empty = std::env::temp_dir().join(format!("xtask-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(xtask(&["build"]).env("PATH", &empty).env_remove("CARGO"));
    std::fs::remove_dir_all(&empty).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: missing tool on PATH:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo: install Rust with rustup"),
        "{stderr}"
    );
}

#[test]
fn help_lists_the_tasks_in_workflow_order() {
    for args in [&[][..], &["--help"], &["help"]] {
        let out = run(&mut xtask(args));
        assert!(out.status.success(), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: cargo xtask"), "{stdout}");
        let positions: Vec<usize> = [
            "build", "run", "test", "package", "deploy", "promote", "doctor",
        ]
        .iter()
        .map(|task| {
            stdout
                .find(&format!("\n  {task} "))
                .unwrap_or_else(|| panic!("{task} missing: {stdout}"))
        })
        .collect();
        assert!(positions.is_sorted(), "{args:?}: {stdout}");
    }
}

#[test]
fn doctor_finds_cargo_and_git() {
    let out = run(&mut xtask(&["doctor"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.lines().any(|l| l.starts_with("ok       cargo ")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("ok       git ")),
        "{stdout}"
    );
}

/// The real thing: a release build whose binary reports what `git describe` says.
#[test]
fn build_compiles_in_the_git_describe_version() {
    let out = run(&mut xtask(&["build"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = git_describe();
    let bin = root().join("bin/api");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{expected} {}", bin.display())
    );

    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.status.success());
    assert_eq!(text(&version.stdout).trim(), expected);

    let service = Service::start(&bin);
    let (status, health) = service.get("/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health,
        format!(r#"{{"status":"ok","version":"{expected}"}}"#)
    );

    // Nothing changed: the second build compiles nothing.
    let again = run(&mut xtask(&["build"]));
    assert!(again.status.success(), "{}", text(&again.stderr));
    let stderr = text(&again.stderr);
    assert!(!stderr.contains("Compiling"), "{stderr}");
}

/// A workspace like this one, with an `api` that prints the version compiled
/// into it, in a folder of its own (removed on drop): a checkout somewhere
/// else than where the xtask under test was compiled.
struct Checkout {
    dir: PathBuf,
}

impl Checkout {
    fn new(name: &str) -> Checkout {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = [
            (
                "Cargo.toml",
                "[workspace]\nresolver = \"3\"\nmembers = [\"api\", \"xtask\"]\n",
            ),
            (
                "api/Cargo.toml",
                "[package]\nname = \"api\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            (
                "api/src/main.rs",
                "fn main() { println!(\"{}\", option_env!(\"API_VERSION\").unwrap_or(\"none\")); }\n",
            ),
            (
                "xtask/Cargo.toml",
                "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("xtask/src/main.rs", "fn main() {}\n"),
        ];
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Checkout { dir }
    }

    /// `xtask build` run in this checkout, as when it is not `cargo run`.
    fn build(&self, version: &str, target_dir: Option<&Path>) -> Output {
        let mut cmd = xtask(&["build"]);
        cmd.current_dir(&self.dir)
            .env_remove("CARGO_MANIFEST_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env("API_VERSION", version);
        match target_dir {
            Some(dir) => cmd.env("CARGO_TARGET_DIR", dir),
            None => cmd.env_remove("CARGO_TARGET_DIR"),
        };
        run(&mut cmd)
    }

    /// What the copied bin/api says it is.
    fn bin_api_version(&self) -> String {
        let out = run(&mut Command::new(self.dir.join("bin/api")));
        assert!(out.status.success(), "{out:?}");
        text(&out.stdout).trim().to_owned()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The root is found where xtask runs, not where it was compiled: a checkout
/// moved (with its target/) builds and writes at its new place.
#[test]
fn a_checkout_elsewhere_than_where_xtask_was_compiled_builds_in_its_own_place() {
    let mut checkout = Checkout::new("moved");

    let out = checkout.build("v-moved-1", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bin = checkout.dir.join("bin/api");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("v-moved-1 {}", bin.display())
    );
    assert_eq!(checkout.bin_api_version(), "v-moved-1");
    assert!(checkout.dir.join("target/release/api").is_file());

    // Moved again, with its target/: it builds and writes at the new place.
    let old = checkout.dir.clone();
    checkout.dir = old.with_file_name(format!(
        "{}-again",
        old.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&checkout.dir);
    std::fs::rename(&old, &checkout.dir).unwrap();
    let out = checkout.build("v-moved-2", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bin = checkout.dir.join("bin/api");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("v-moved-2 {}", bin.display())
    );
    assert_eq!(checkout.bin_api_version(), "v-moved-2");
    assert!(!old.exists(), "{} was written again", old.display());

    // Under `cargo xtask` (cargo run), CARGO_MANIFEST_DIR names the checkout,
    // wherever the current folder is.
    let plan = run(xtask(&["--dry-run", "build"])
        .current_dir(std::env::temp_dir())
        .env("CARGO_MANIFEST_DIR", checkout.dir.join("xtask"))
        .env("API_VERSION", "v1")
        .env_remove("CARGO_TARGET_DIR"));
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).ends_with(&format!(
            "# copy {} to {}\n",
            checkout.dir.join("target/release/api").display(),
            bin.display()
        )),
        "{}",
        text(&plan.stdout)
    );
}

/// With CARGO_TARGET_DIR set, cargo builds there: bin/api is that build, not
/// a stale target/release/api.
#[test]
fn with_cargo_target_dir_set_bin_api_is_the_new_build() {
    let checkout = Checkout::new("target-dir");
    let first = checkout.build("v-first", None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(checkout.bin_api_version(), "v-first");

    let elsewhere = checkout.dir.join("elsewhere");
    let second = checkout.build("v-second", Some(&elsewhere));
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(checkout.bin_api_version(), "v-second");
    assert!(elsewhere.join("release/api").is_file());
    let stderr = text(&second.stderr);
    // cargo's own progress still shows: only its JSON on stdout is taken.
    assert!(stderr.contains("Compiling api v0.1.0"), "{stderr}");
    assert!(
        !text(&second.stdout).contains("compiler-artifact"),
        "{second:?}"
    );
    assert!(
        stderr.contains(&format!(
            "# copy {}",
            elsewhere.join("release/api").display()
        )),
        "{stderr}"
    );
}

/// A running `bin/api`, killed on drop.
struct Service {
    child: std::process::Child,
    port: u16,
}

impl Service {
    fn start(bin: &Path) -> Service {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let service = Service { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "api did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }

    fn get(&self, path: &str) -> (u16, String) {
        support::http_get(&format!("127.0.0.1:{}", self.port), path, None).unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
