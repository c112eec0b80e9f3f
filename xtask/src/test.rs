//! `cargo xtask test`: exactly what CI's test stage runs.

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::cmd;

use crate::cli::{self, ArgMatches, Task, switch, trailing};
use crate::context::Context;
use crate::tools;

const ABOUT: &str = "Check formatting, run clippy, then run the test suite (what CI runs)";

const LONG_ABOUT: &str = "Check formatting, run clippy, then run the workspace's tests: what CI's test stage runs.

The tests run under cargo-nextest when it is installed, writing a JUnit report to \
target/nextest/ci/junit.xml for CI; with `cargo test` otherwise. A report left by an \
earlier run is removed first, so a run that stops at fmt or clippy leaves none, never \
the last one's. Each step that fails is named. Tests that need the Docker engine fail, rather than skip, when CI is set.

Before anything else it checks that the toolchain has rustfmt and clippy (rustup's \
minimal profile, as in the official rust images, has neither) and, when one is missing, \
stops naming `rustup component add rustfmt clippy`.

Runs:
  cargo fmt --version, cargo clippy --version            (read-only: are the components there?)
  # remove target/nextest/ci/junit.xml                  (an earlier run's report)
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo nextest run --workspace --profile ci [ARGS...]   (or: cargo test --workspace [ARGS...])";

const AFTER_LONG_HELP: &str = "Environment:
  CI                when set, tests that need Docker or other tools fail instead of skipping
  CARGO_TARGET_DIR  where the report is, instead of target/

Examples:
  cargo xtask test
  cargo xtask test -- version      # only tests whose name contains `version`";

/// `cargo xtask test`.
#[derive(Debug)]
pub struct Test {
    pub no_nextest: bool,
    /// Arguments for the test runner.
    pub args: Vec<String>,
}

impl Task for Test {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("test", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .arg(switch(
                "no-nextest",
                "Use `cargo test` even when cargo-nextest is installed",
            ))
            .arg(trailing(
                "args",
                "ARGS",
                "Arguments for the test runner (a filter, --nocapture, ...)",
            ))
    }

    fn from(matches: &ArgMatches) -> Test {
        Test {
            no_nextest: matches.get_flag("no-nextest"),
            args: cli::all(matches, "args"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO])?;
        tools::require_components(cx, tools::COMPONENTS)?;
        let sh = &cx.sh;
        let cargo = tools::cargo();
        let args = &self.args;

        remove_stale_report(cx, &junit_report(cx))?;
        cx.change(cmd!(sh, "{cargo} fmt --all -- --check"))
            .run(cx)
            .context("step `fmt` failed: run `cargo fmt --all` and commit the result")?;
        cx.change(cmd!(
            sh,
            "{cargo} clippy --workspace --all-targets -- -D warnings"
        ))
        .run(cx)
        .context("step `clippy` failed: fix the warnings above")?;
        let nextest = !self.no_nextest && nextest_installed();
        let tests = if nextest {
            cmd!(sh, "{cargo} nextest run --workspace --profile ci {args...}")
        } else {
            cmd!(sh, "{cargo} test --workspace {args...}")
        };
        cx.change(tests).run(cx).context("step `tests` failed")?;
        Ok(())
    }
}

/// Whether `cargo nextest` would run: cargo finds a subcommand in
/// $CARGO_HOME/bin before PATH (cargo's `search_directories`,
/// src/bin/cargo/main.rs), and `cargo install` puts it there, which is not on
/// PATH when CARGO_HOME is moved (the pipeline keeps it in the project).
fn nextest_installed() -> bool {
    if tools::locate(tools::NEXTEST.name).is_some() {
        return true;
    }
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => std::path::PathBuf::from(home),
        _ => match std::env::var_os("HOME") {
            Some(home) => std::path::Path::new(&home).join(".cargo"),
            None => return false,
        },
    };
    cargo_home.join("bin").join(tools::NEXTEST.name).is_file()
}

/// The JUnit report the `ci` profile writes (.config/nextest.toml), which CI
/// uploads whatever the outcome: with target/ cached between pipelines, an
/// earlier run's report would otherwise stand for this one when fmt or clippy
/// fails before the tests write a new one.
fn junit_report(cx: &Context) -> Utf8PathBuf {
    let target = match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) if !dir.is_empty() => cx.root.join(dir),
        _ => cx.path("target"),
    };
    target.join("nextest/ci/junit.xml")
}

fn remove_stale_report(cx: &Context, report: &Utf8Path) -> Result<()> {
    if !report.exists() {
        return Ok(());
    }
    if !cx.announce(format_args!(
        "# remove {report}   (an earlier run's report)"
    )) {
        return Ok(());
    }
    std::fs::remove_file(report).with_context(|| format!("remove {report}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_report_is_removed_and_a_dry_run_keeps_it() {
        let dir = std::env::temp_dir().join(format!("xtask-junit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = Utf8PathBuf::try_from(dir.join("junit.xml")).unwrap();
        std::fs::write(&report, "<testsuites/>").unwrap();

        remove_stale_report(&Context::new(true, false).unwrap(), &report).unwrap();
        assert!(report.exists(), "a dry run removed the report");
        remove_stale_report(&Context::new(false, false).unwrap(), &report).unwrap();
        assert!(!report.exists(), "the earlier report is still there");
        // Nothing to remove is no error.
        remove_stale_report(&Context::new(false, false).unwrap(), &report).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
