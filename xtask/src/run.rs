//! `cargo xtask run`: build for the edit loop, then become the service.

use std::process::ExitCode;

use anyhow::Result;

use crate::build::{Build, Profile};
use crate::cli::{self, ArgMatches, Task, trailing};
use crate::context::Context;

const ABOUT: &str = "Build quickly (the edit profile), then start api in the foreground";

const LONG_ABOUT: &str = "Build `api` for trying a change, then start it in the foreground.

The build uses Cargo.toml's [profile.edit], chosen for the edit loop: dev, with the \
dependencies optimized (built once). After a one-line edit it serves in a second or two, \
where the release profile's fat LTO takes tens of seconds. Its answers and version are \
the release build's; its speed and memory are not, so measure with `cargo xtask bench`, \
which builds for release. bin/api is left alone: it stays what `cargo xtask build` made.

The service replaces this process (exec), so Ctrl-C and SIGTERM reach it directly; \
its exit status is the task's. Ctrl-C stops it at once, letting requests in flight \
finish (a second Ctrl-C stops waiting for them); SIGTERM first serves for \
DRAIN_DELAY_SECS, as in a pod. The environment passes through unchanged.

Runs:
  git describe --tags --always --dirty   (when API_VERSION is unset)
  API_VERSION=<version> cargo build --message-format=json-render-diagnostics \\
      --profile edit --package api
  target/edit/api [ARGS...]  (where cargo put it, under $CARGO_TARGET_DIR when set)";

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
    /// Arguments for api.
    pub args: Vec<String>,
}

impl Task for Run {
    type Outcome = ExitCode;

    fn command() -> cli::Command {
        cli::task("run", ABOUT, LONG_ABOUT, AFTER_LONG_HELP).arg(trailing(
            "args",
            "ARGS",
            "Arguments for api",
        ))
    }

    fn from(matches: &ArgMatches) -> Run {
        Run {
            args: cli::all(matches, "args"),
        }
    }

    fn run(self, cx: &Context) -> Result<ExitCode> {
        let built = Build::default().cargo_build(cx, Profile::Edit)?;
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
