//! `test` and `doctor` on a toolchain without rustfmt and clippy, as rustup's
//! `minimal` profile installs it (the official `rust` images): this
//! machine's own `cargo` and `rustc`, alone in a folder, with an empty
//! CARGO_HOME, so that cargo finds no `cargo-fmt` or `cargo-clippy` anywhere.

use std::path::Path;
use std::process::Command;

use crate::support::{self, Ran, run, xtask};

/// A toolchain of this machine's real `cargo` and `rustc` and nothing else.
struct Minimal {
    dir: std::path::PathBuf,
}

impl Minimal {
    fn new(name: &str) -> Minimal {
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .expect("rustc runs");
        assert!(sysroot.status.success(), "rustc --print sysroot failed");
        let sysroot = String::from_utf8(sysroot.stdout).unwrap();
        let sysroot = Path::new(sysroot.trim());
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("cargo-home")).unwrap();
        for tool in ["cargo", "rustc"] {
            std::os::unix::fs::symlink(sysroot.join("bin").join(tool), dir.join("bin").join(tool))
                .unwrap();
        }
        Minimal { dir }
    }

    /// The built xtask with this toolchain's cargo, and no other on PATH.
    fn xtask(&self, args: &[&str]) -> Ran {
        let mut cmd = xtask();
        cmd.args(args)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.join("bin").display()),
            )
            .env("CARGO", self.dir.join("bin/cargo"))
            .env("CARGO_HOME", self.dir.join("cargo-home"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC");
        run(&mut cmd)
    }
}

impl Drop for Minimal {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn test_stops_at_once_naming_rustup_component_add() {
    let toolchain = Minimal::new("no-components-test");
    let ran = toolchain.xtask(&["test"]);

    assert!(!ran.success(), "{ran}");
    assert!(
        ran.stderr
            .contains("install them with: rustup component add rustfmt clippy"),
        "{ran}"
    );
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        assert!(
            ran.stderr.contains(&format!(
                "  {component}: `cargo {subcommand} --version` says: "
            )),
            "{component} is not named:\n{ran}"
        );
    }
    // At once: no step started, not fmt, not clippy, not the tests (each is echoed as `$ ...`).
    assert!(!ran.stderr.contains("$ "), "a step ran:\n{ran}");
}

#[test]
fn doctor_names_the_missing_components_and_fails() {
    let toolchain = Minimal::new("no-components-doctor");
    let ran = toolchain.xtask(&["doctor"]);

    assert!(!ran.success(), "{ran}");
    for component in ["rustfmt", "clippy"] {
        let line = ran
            .stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(component))
            .unwrap_or_else(|| panic!("no line for {component}:\n{ran}"));
        assert!(line.starts_with("missing "), "{line}");
        assert!(
            line.contains("rustup component add rustfmt clippy"),
            "{line}"
        );
    }
}

#[test]
fn with_the_components_doctor_shows_their_versions() {
    let ran = run(&mut support::xtask_with(&["doctor"]));
    for component in ["rustfmt", "clippy"] {
        let line = ran
            .stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(component))
            .unwrap_or_else(|| panic!("no line for {component}:\n{ran}"));
        // This workspace's own checks need them, so they are here.
        assert!(line.starts_with("ok "), "{line}");
        assert!(line.contains(component), "{line}");
    }
}
