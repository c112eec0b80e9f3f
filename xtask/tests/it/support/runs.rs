//! A task's help holds to what it runs: every command a `--dry-run` plan
//! prints is described by a line of the task's "Runs:" help for the same
//! program (and subcommand) that names each of its long flags, or says `...`
//! for the rest. A flag added to a command and not to its help fails here.

use super::{output, text, xtask_with};

/// The entries of `cargo xtask TASK --help`'s "Runs:" (or "Runs (read-only):")
/// block, one command each: an entry starts two spaces in; a line further in
/// (or after a trailing `\`) goes on the entry before it.
pub fn runs_of(task: &str) -> Vec<String> {
    // Wide enough that clap wraps nothing (it reads COLUMNS when stdout is no terminal).
    let help = output(xtask_with(&[task, "--help"]).env("COLUMNS", "10000"));
    assert!(help.status.success(), "{task} --help: {help:?}");
    let help = text(&help.stdout);
    let mut entries: Vec<String> = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Runs") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        match (indent, entries.last_mut()) {
            (2, _) => entries.push(line.trim().trim_end_matches('\\').to_owned()),
            (3.., Some(entry)) => {
                entry.push(' ');
                entry.push_str(line.trim().trim_end_matches('\\'));
            }
            _ => break,
        }
    }
    assert!(
        !entries.is_empty(),
        "`{task} --help` has no Runs: block:\n{help}"
    );
    entries
}

/// Checks every command line of `plan` (comment lines aside) against the
/// "Runs:" help of `task`; at least one line must be a command.
pub fn assert_runs_describe(task: &str, plan: &str) {
    let entries = runs_of(task);
    let commands: Vec<&str> = plan
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect();
    assert!(
        !commands.is_empty(),
        "no command in the plan of {task}:\n{plan}"
    );
    for line in commands {
        let (program, sub, flags) = shape(line);
        // An entry may name an alternative: `cargo nextest run ... (or: cargo test ...)`.
        let alternatives = entries.iter().flat_map(|entry| entry.split("(or:"));
        let described = alternatives.into_iter().any(|entry| {
            let (p, s, f) = shape(entry);
            let words: Vec<&str> = entry.split_whitespace().collect();
            p == program
                && (!is_plain(&s) || s == sub)
                && (words.contains(&"...") || flags.iter().all(|flag| f.contains(flag)))
        });
        assert!(
            described,
            "`cargo xtask {task} --help` does not describe what it runs:\n  {line}\n\
             (program {program:?}, subcommand {sub:?}, flags {flags:?}); its Runs: says\n  {}",
            entries.join("\n  ")
        );
    }
}

/// A command line's program (its file name, after any `KEY=value`), its first
/// word after the program that is not a flag, and its long flags (`--name`,
/// without a value).
fn shape(line: &str) -> (String, String, Vec<String>) {
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|word| word.trim_matches(['\'', '"', '[', ']']))
        .collect();
    let at = words
        .iter()
        .position(|word| !word.contains('='))
        .unwrap_or(0);
    let program = words.get(at).copied().unwrap_or("");
    let program = program.rsplit('/').next().unwrap_or(program).to_owned();
    let rest = &words[(at + 1).min(words.len())..];
    let sub = rest
        .iter()
        .find(|word| !word.starts_with('-'))
        .copied()
        .unwrap_or("")
        .to_owned();
    let flags = rest
        .iter()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.split('=').next().unwrap_or(word).to_owned())
        .collect();
    (program, sub, flags)
}

/// A word that names a subcommand (`build`, `set`), not a placeholder (`<cpu1>`, `ROLLOUT`).
fn is_plain(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}
