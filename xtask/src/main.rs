//! `cargo xtask`: builds, tests, packages and ships the `api` service.
//! This file parses the command line and dispatches; each task is a module.

mod bench;
mod build;
mod context;
mod doctor;
mod http;
mod image;
mod lint;
mod package;
mod process;
mod rollout;
mod run;
mod test;
mod tools;
mod version;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use crate::context::Context;

/// Build, test, package and ship the `api` service.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    disable_help_subcommand = false,
    after_help = "Run `cargo xtask <TASK> --help` for what a task runs, the environment it reads, and examples."
)]
struct Cli {
    /// Print every command that would change something, exactly as it would run, and run none of them
    #[arg(long, global = true)]
    dry_run: bool,

    /// Echo read-only probes too (git describe, status polls, ...)
    #[arg(long, short, global = true)]
    verbose: bool,

    #[command(subcommand)]
    task: Option<Task>,
}

/// The tasks, in workflow order.
#[derive(Subcommand, Debug)]
enum Task {
    Build(build::Build),
    Run(run::Run),
    Test(test::Test),
    Bench(bench::Bench),
    Lint(lint::Lint),
    Package(package::Package),
    Deploy(rollout::Deploy),
    Status(rollout::Status),
    Sanity(rollout::Sanity),
    Promote(rollout::Promote),
    Abort(rollout::Abort),
    Release(rollout::Release),
    Doctor(doctor::Doctor),
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
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
    match task {
        Task::Build(task) => task.run(&cx).map(|_| ExitCode::SUCCESS),
        Task::Run(task) => task.run(&cx),
        Task::Test(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Bench(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Lint(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Package(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Deploy(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Status(task) => task.run(&cx),
        Task::Sanity(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Promote(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Abort(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Release(task) => task.run(&cx).map(|()| ExitCode::SUCCESS),
        Task::Doctor(task) => task.run(&cx),
    }
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
                "promote", "abort", "release", "doctor"
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

    /// Every `cargo xtask ...` line of the pipeline, parsed by the real command line:
    /// a renamed flag breaks this test, not the next deploy.
    #[test]
    fn pipeline_commands_parse() {
        let pipeline = pipeline();
        let mut seen = 0;
        for line in script_lines(&pipeline) {
            let Some(args) = line.strip_prefix("cargo xtask") else {
                continue;
            };
            assert!(
                !args.contains(['$', '"', '\'', '|', ';', '&', '`']),
                "keep `cargo xtask` lines free of shell syntax, so this test sees what runs: {line}"
            );
            let argv = std::iter::once("cargo-xtask").chain(args.split_whitespace());
            if let Err(err) = Cli::try_parse_from(argv) {
                panic!("`{line}` in .gitlab-ci.yml does not parse:\n{err}");
            }
            seen += 1;
        }
        assert!(
            seen >= 6,
            "only {seen} cargo xtask lines found in .gitlab-ci.yml"
        );
    }

    #[test]
    fn pipeline_jobs_name_existing_stages_and_needs() {
        let pipeline = pipeline();
        let stages: Vec<&str> = pipeline["stages"]
            .as_sequence()
            .expect("stages")
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(stages, ["test", "build", "deploy"]);
        let jobs = jobs(&pipeline);
        for (name, job) in &jobs {
            let stage = job_key(&pipeline, job, "stage")
                .and_then(|s| s.as_str())
                .unwrap_or("test");
            assert!(
                stages.contains(&stage),
                "job {name}: stage {stage} is not in stages"
            );
            for need in job["needs"].as_sequence().into_iter().flatten() {
                let need = need.as_str().or_else(|| need["job"].as_str()).unwrap();
                assert!(
                    jobs.iter().any(|(n, _)| n == need),
                    "job {name} needs {need}, which is no job"
                );
            }
        }
    }

    fn pipeline() -> serde_yaml_ng::Value {
        let path = crate::context::workspace_root().join(".gitlab-ci.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }

    /// Jobs: top-level keys that are not keywords and not hidden templates.
    fn jobs(pipeline: &serde_yaml_ng::Value) -> Vec<(String, &serde_yaml_ng::Value)> {
        const KEYWORDS: &[&str] = &[
            "stages",
            "variables",
            "default",
            "workflow",
            "include",
            "image",
            "services",
            "cache",
            "before_script",
            "after_script",
        ];
        pipeline
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v))
            .filter(|(k, _)| !k.starts_with('.') && !KEYWORDS.contains(&k.as_str()))
            .collect()
    }

    /// A job's key, following `extends` into templates.
    fn job_key<'a>(
        pipeline: &'a serde_yaml_ng::Value,
        job: &'a serde_yaml_ng::Value,
        key: &str,
    ) -> Option<&'a serde_yaml_ng::Value> {
        if let Some(value) = job.get(key) {
            return Some(value);
        }
        let extends = match &job["extends"] {
            serde_yaml_ng::Value::String(one) => vec![one.as_str()],
            serde_yaml_ng::Value::Sequence(many) => {
                many.iter().filter_map(|t| t.as_str()).collect()
            }
            _ => vec![],
        };
        extends
            .into_iter()
            .rev()
            .find_map(|t| job_key(pipeline, &pipeline[t], key))
    }

    /// Every script line of every job and template, folded lines joined and
    /// nested lists (YAML anchors of other scripts) flattened, as GitLab does.
    fn script_lines(pipeline: &serde_yaml_ng::Value) -> Vec<String> {
        fn flatten(value: &serde_yaml_ng::Value, lines: &mut Vec<String>) {
            match value {
                serde_yaml_ng::Value::Sequence(items) => {
                    items.iter().for_each(|v| flatten(v, lines))
                }
                serde_yaml_ng::Value::String(line) => {
                    lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "))
                }
                other => panic!("a script line that is not a string: {other:?}"),
            }
        }
        let mut lines = Vec::new();
        for (_, job) in pipeline.as_mapping().unwrap() {
            for key in ["before_script", "script", "after_script"] {
                if let Some(script) = job.get(key) {
                    flatten(script, &mut lines);
                }
            }
        }
        lines
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
