//! `cargo xtask doctor`: what this machine has for each task.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use xshell::cmd;

use crate::cli::{self, ArgMatches, Task};
use crate::context::Context;
use crate::tools::{self, Tool};

const ABOUT: &str =
    "Show which tools are found, their versions, and how to install what is missing";

const LONG_ABOUT: &str =
    "Show which tools are found, their paths and versions, which tasks need them, \
and how to install what is missing. Changes nothing.

Exits 0 when what `build` and `test` need is present: cargo, git, and the toolchain's \
rustfmt and clippy (rustup's minimal profile, as in the official rust images, has \
neither: `rustup component add rustfmt clippy`).

Runs (read-only):
  TOOL --version              for each tool
  cargo fmt --version, cargo clippy --version   (the toolchain's components)
  docker version --format {{.Server.Version}}   (does the engine answer?)";

const AFTER_LONG_HELP: &str = "Examples:
  cargo xtask doctor";

/// `cargo xtask doctor`: it takes no arguments.
#[derive(Debug)]
pub struct Doctor {}

impl Task for Doctor {
    type Outcome = ExitCode;

    fn command() -> cli::Command {
        cli::task("doctor", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
    }

    fn from(_: &ArgMatches) -> Doctor {
        Doctor {}
    }

    fn run(self, cx: &Context) -> Result<ExitCode> {
        let mut essentials_present = true;
        for tool in tools::ALL.iter().chain(tools::LINTERS) {
            let line = match tools::locate(tool.name) {
                Some(path) => {
                    let version = probe_version(cx, tool, path.as_str());
                    format!("ok       {:<24} {version}  ({path})", tool.name)
                }
                None => {
                    essentials_present &= !tools::ESSENTIAL.iter().any(|e| e.name == tool.name);
                    format!("missing  {:<24} {}", tool.name, tool.install)
                }
            };
            cx.result(format_args!(
                "{line}\n         {:<24} needed by: {}",
                "", tool.used_by
            ));
        }
        // On PATH is not enough: rustup puts a proxy there for each, installed or not.
        if tools::locate(tools::CARGO.name).is_some() {
            for component in tools::COMPONENTS {
                let line = match tools::component_version(cx, component)? {
                    Ok(version) => format!("ok       {:<24} {version}", component.name),
                    Err(said) => {
                        essentials_present = false;
                        format!(
                            "missing  {:<24} {} (`cargo {} --version` says: {said})",
                            component.name,
                            tools::COMPONENTS_INSTALL,
                            component.subcommand
                        )
                    }
                };
                cx.result(format_args!(
                    "{line}\n         {:<24} needed by: test (a toolchain component)",
                    ""
                ));
            }
        }
        if tools::locate(tools::DOCKER.name).is_some() {
            let engine = match tools::engine_version(cx) {
                Ok(Ok(version)) => format!("ok       {:<24} {version}", "docker engine"),
                _ => format!(
                    "missing  {:<24} the docker CLI is here but no engine answers (is dockerd running? is DOCKER_HOST right?)",
                    "docker engine"
                ),
            };
            cx.result(engine);
        }
        Ok(if essentials_present {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// The first line a tool prints for `--version`, or why there is none.
fn probe_version(cx: &Context, tool: &Tool, path: &str) -> String {
    let sh = &cx.sh;
    let args = tool.version_args;
    let probe = cx
        .probe(cmd!(sh, "{path} {args...}"))
        .drop_stderr()
        .within(PROBE_LIMIT, "");
    // wrk prints its version with a usage text and exits 1: take the first line either way.
    match probe.finish(cx) {
        Ok(Some(Ok(done))) => done
            .stdout
            .lines()
            .next()
            .unwrap_or("(no version printed)")
            .to_owned(),
        Ok(Some(Err(_))) => format!("(version unknown: no answer within {PROBE_LIMIT:?})"),
        Ok(None) => "(version unknown: not run)".to_owned(),
        Err(err) => format!("(version unknown: {err:#})"),
    }
}

/// How long a `--version` may take.
const PROBE_LIMIT: Duration = Duration::from_secs(30);
