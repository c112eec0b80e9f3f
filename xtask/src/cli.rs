//! The pieces every task's command line is made of, on clap's builder API.
//!
//! Not clap's derive: the derive is a proc macro that brings syn, quote and
//! proc-macro2 into the first build of the day, on its critical path (the
//! table is in Cargo.toml, `[profile.dev]`). A task's arguments are a plain
//! struct with `command()` (its `Command`: summary, help, arguments) and
//! `from(&ArgMatches)` (the struct, read back by the same ids): its [`Task`]
//! impl. An argument's id is its long name, so what is declared and what is
//! read say the same word.
//!
//! `Command` is clap's only as `cli::Command`; a bare `Command` anywhere in
//! xtask is std's, the program a `Step` runs.

use std::process::Termination;

use anyhow::Result;
pub use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::context::Context;

/// A task of `cargo xtask`: its subcommand, itself read back from it, and
/// what it does. A new task is a module with this impl and one row of the
/// table in `main.rs`.
pub trait Task: Sized + 'static {
    /// How it ends when it does not fail: `()` (exit 0), or an `ExitCode`
    /// of its own (`run`, `status`, `doctor`).
    type Outcome: Termination;

    /// Its subcommand: [`task`] and its arguments.
    fn command() -> Command;

    /// Itself, read from what `command()` declared, by the same ids.
    fn from(matches: &ArgMatches) -> Self;

    fn run(self, cx: &Context) -> Result<Self::Outcome>;
}

/// A task's subcommand and its help: `about` is its line in the task list and
/// `-h`; `long_about` opens `--help` (what it does, the commands it runs) and
/// `after_long_help` ends it (its environment, examples).
pub fn task(
    name: &'static str,
    about: &'static str,
    long_about: &'static str,
    after_long_help: &'static str,
) -> Command {
    Command::new(name)
        .about(about)
        .long_about(long_about)
        .after_long_help(after_long_help)
}

/// `--LONG`: false unless given.
pub fn switch(long: &'static str, help: &'static str) -> Arg {
    Arg::new(long)
        .long(long)
        .action(ArgAction::SetTrue)
        .help(help)
}

/// `--LONG VALUE`: one value, the last one given wins.
pub fn option(long: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(long)
        .long(long)
        .value_name(value_name)
        .action(ArgAction::Set)
        .help(help)
}

/// `-- ARGS...`: everything after `--`, passed on unchanged.
pub fn trailing(id: &'static str, value_name: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .value_name(value_name)
        .action(ArgAction::Append)
        .num_args(1..)
        .last(true)
        .help(help)
}

/// The value of an option that has a default (or was given): present by construction.
pub fn value<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> T {
    matches
        .get_one::<T>(id)
        .cloned()
        .unwrap_or_else(|| panic!("--{id} has a default value"))
}

/// The value of an option without a default, if given (or set through its variable).
pub fn optional<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<T> {
    matches.get_one::<T>(id).cloned()
}

/// The values of a `trailing` argument, none when not given.
pub fn all(matches: &ArgMatches, id: &str) -> Vec<String> {
    matches
        .get_many::<String>(id)
        .map(|values| values.cloned().collect())
        .unwrap_or_default()
}
