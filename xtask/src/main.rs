//! `cargo xtask`: builds, tests, packages and ships the `api` service.
//! This file holds the task table, parses the command line and dispatches;
//! each task is a module.

mod bench;
mod build;
mod cli;
mod context;
mod doctor;
mod git;
mod http;
mod image;
mod interrupt;
mod lint;
mod package;
#[cfg(test)]
mod pipeline;
mod process;
mod rollout;
mod run;
mod test;
mod timing;
mod tools;
mod version;

use std::process::{ExitCode, Termination};

use anyhow::Result;

use crate::cli::{ArgMatches, Command, Task, switch};
use crate::context::Context;

const DRY_RUN_HELP: &str = "Print every command that would change something, exactly as it would run, and run none of them";
const VERBOSE_HELP: &str =
    "Echo read-only probes too (git describe, kubectl get of the Rollout, ...)";

/// The tasks, in workflow order: a new task is a module and a row here.
const TASKS: &[Row] = &[
    row::<build::Build>(),
    row::<run::Run>(),
    row::<test::Test>(),
    row::<bench::Bench>(),
    row::<lint::Lint>(),
    row::<package::Package>(),
    row::<rollout::Deploy>(),
    row::<rollout::Status>(),
    row::<rollout::Sanity>(),
    row::<rollout::Promote>(),
    row::<rollout::Abort>(),
    row::<rollout::Release>(),
    row::<rollout::History>(),
    row::<rollout::Rollback>(),
    row::<doctor::Doctor>(),
];

/// A task as the table holds it: its subcommand, and how it is read from
/// the command line into a job.
struct Row {
    command: fn() -> Command,
    read: fn(&ArgMatches) -> Job,
}

/// A task read from the command line, to run once the context is made.
type Job = Box<dyn FnOnce(&Context) -> Result<ExitCode>>;

const fn row<T: Task>() -> Row {
    Row {
        command: T::command,
        read: read::<T>,
    }
}

fn read<T: Task>(matches: &ArgMatches) -> Job {
    let task = T::from(matches);
    Box::new(move |cx| task.run(cx).map(Termination::report))
}

/// The parsed command line: the global flags and the task, if one was named.
struct Cli {
    dry_run: bool,
    verbose: bool,
    task: Option<Job>,
}

impl Cli {
    fn command() -> Command {
        Command::new("cargo xtask")
            .bin_name("cargo xtask")
            .about("Build, test, package and ship the `api` service")
            .after_help(
                "Run `cargo xtask <TASK> --help` for what a task runs, the environment it reads, and examples.",
            )
            .arg(switch("dry-run", DRY_RUN_HELP).global(true))
            .arg(switch("verbose", VERBOSE_HELP).short('v').global(true))
            .subcommands(TASKS.iter().map(|row| (row.command)()))
    }

    /// `matches` as `command` (the one that parsed them) read them: a task's
    /// subcommand stands at its row's place, so no task's `Command` is made again.
    fn from(command: &Command, matches: &ArgMatches) -> Cli {
        let task = matches.subcommand().map(|(name, m)| {
            let row = command
                .get_subcommands()
                .position(|c| c.get_name() == name)
                .and_then(|at| TASKS.get(at))
                .unwrap_or_else(|| unreachable!("`{name}` is not among Cli::command()'s tasks"));
            (row.read)(m)
        });
        Cli {
            dry_run: matches.get_flag("dry-run"),
            verbose: matches.get_flag("verbose"),
            task,
        }
    }

    /// Parses the process's arguments; on a usage error (or --help), prints and exits as clap does.
    fn parse() -> Cli {
        let mut command = Cli::command();
        let matches = command.get_matches_mut();
        Cli::from(&command, &matches)
    }

    #[cfg(test)]
    fn try_parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(argv)?;
        Ok(Cli::from(&command, &matches))
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            context::say_line(format_args!("error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let Some(task) = cli.task else {
        Cli::command().print_help()?;
        return Ok(ExitCode::SUCCESS);
    };
    let cx = Context::new(cli.dry_run, cli.verbose)?;
    // The children run in process groups of their own, out of a terminal's
    // reach: xtask stops them when a signal comes, for every task.
    interrupt::install();
    task(&cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tasks_are_listed_in_workflow_order() {
        let names: Vec<_> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|name| name != "help")
            .collect();
        assert_eq!(
            names,
            [
                "build", "run", "test", "bench", "lint", "package", "deploy", "status", "sanity",
                "promote", "abort", "release", "history", "rollback", "doctor"
            ]
        );
    }

    #[test]
    fn every_task_has_a_summary_and_an_example() {
        for task in Cli::command()
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
        {
            let name = task.get_name();
            assert!(task.get_about().is_some(), "{name} has no summary");
            let long = task
                .get_after_long_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                long.contains("cargo xtask"),
                "{name} has no example in after_long_help"
            );
        }
    }

    /// Each task listed is read back from its name.
    #[test]
    fn every_task_listed_is_read_back() {
        for task in Cli::command().get_subcommands() {
            let name = task.get_name();
            if name == "help" {
                continue;
            }
            let cli = Cli::try_parse_from(["cargo-xtask", name])
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(cli.task.is_some(), "{name}");
        }
    }

    #[test]
    fn global_flags_go_before_or_after_the_task() {
        for args in [
            ["cargo-xtask", "--dry-run", "build"],
            ["cargo-xtask", "build", "--dry-run"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(cli.dry_run, "{args:?}");
        }
    }
}
