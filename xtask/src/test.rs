//! `cargo xtask test`: exactly what CI's test stage runs.

use anyhow::{Context as _, Result};
use clap::Args;
use xshell::cmd;

use crate::context::Context;
use crate::tools;

/// Check formatting, run clippy, then run the test suite (what CI runs)
#[derive(Args, Debug)]
#[command(
    long_about = "Check formatting, run clippy, then run the workspace's tests: what CI's test stage runs.

The tests run under cargo-nextest when it is installed, writing a JUnit report to \
target/nextest/ci/junit.xml for CI; with `cargo test` otherwise. Each step that \
fails is named. Tests that need the Docker engine fail, rather than skip, when CI is set.

Runs:
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo nextest run --workspace --profile ci [ARGS...]   (or: cargo test --workspace [ARGS...])",
    after_long_help = "Environment:
  CI   when set, tests that need Docker or other tools fail instead of skipping

Examples:
  cargo xtask test
  cargo xtask test -- version      # only tests whose name contains `version`"
)]
pub struct Test {
    /// Use `cargo test` even when cargo-nextest is installed
    #[arg(long)]
    pub no_nextest: bool,

    /// Arguments for the test runner (a filter, --nocapture, ...)
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl Test {
    pub fn run(self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::CARGO])?;
        let sh = &cx.sh;
        let cargo = tools::cargo();
        let args = &self.args;

        cx.run(cmd!(sh, "{cargo} fmt --all -- --check"))
            .context("step `fmt` failed: run `cargo fmt --all` and commit the result")?;
        cx.run(cmd!(
            sh,
            "{cargo} clippy --workspace --all-targets -- -D warnings"
        ))
        .context("step `clippy` failed: fix the warnings above")?;
        let nextest = !self.no_nextest && tools::locate(tools::NEXTEST.name).is_some();
        let tests = if nextest {
            cmd!(sh, "{cargo} nextest run --workspace --profile ci {args...}")
        } else {
            cmd!(sh, "{cargo} test --workspace {args...}")
        };
        cx.run(tests).context("step `tests` failed")?;
        Ok(())
    }
}
