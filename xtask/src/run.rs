//! `cargo xtask run`: build, then become the service.

use std::process::ExitCode;

use anyhow::Result;

use crate::build::Build;
use crate::cli::{self, ArgMatches, Task, trailing};
use crate::context::Context;

const ABOUT: &str = "Build, then start bin/api in the foreground";

const LONG_ABOUT: &str = "Build (as `cargo xtask build`), then start bin/api in the foreground.

The service replaces this process (exec), so Ctrl-C and SIGTERM reach it directly \
and it drains in-flight requests before it exits; its exit status is the task's. \
The environment passes through unchanged.

Runs:
  API_VERSION=<version> cargo build --message-format=json-render-diagnostics \\
      --release --package api
  bin/api [ARGS...]";

const AFTER_LONG_HELP: &str = "Environment (read by the service):
  PORT          port to listen on (default 8080)
  API_VERSION   the version to compile in, instead of git describe's

Examples:
  cargo xtask run
  PORT=3000 cargo xtask run
  cargo xtask run -- --version";

/// `cargo xtask run`.
#[derive(Debug)]
pub struct Run {
    /// Arguments for bin/api.
    pub args: Vec<String>,
}

impl Task for Run {
    type Outcome = ExitCode;

    fn command() -> cli::Command {
        cli::task("run", ABOUT, LONG_ABOUT, AFTER_LONG_HELP).arg(trailing(
            "args",
            "ARGS",
            "Arguments for bin/api",
        ))
    }

    fn from(matches: &ArgMatches) -> Run {
        Run {
            args: cli::all(matches, "args"),
        }
    }

    fn run(self, cx: &Context) -> Result<ExitCode> {
        let built = Build::default().compile(cx)?;
        let mut service = std::process::Command::new(&built.binary);
        service.args(&self.args);
        match cx.change(service).into_command(cx) {
            Some(service) => exec(service, &built.binary),
            None => Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(unix)]
fn exec(mut service: std::process::Command, binary: &camino::Utf8Path) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    // Only returns on failure.
    let err = service.exec();
    Err(anyhow::Error::new(err).context(format!("start {binary}")))
}

#[cfg(not(unix))]
fn exec(mut service: std::process::Command, binary: &camino::Utf8Path) -> Result<ExitCode> {
    use anyhow::Context as _;
    let status = service
        .status()
        .with_context(|| format!("start {binary}"))?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}
