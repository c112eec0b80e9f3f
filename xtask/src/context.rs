//! What every task shares: the workspace root, one `Shell`, and the one place
//! where commands are echoed, run, or (under `--dry-run`) only printed.

use std::io::Write;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Cmd, Shell};

pub struct Context {
    pub sh: Shell,
    pub root: Utf8PathBuf,
    pub dry_run: bool,
    pub verbose: bool,
}

impl Context {
    pub fn new(dry_run: bool, verbose: bool) -> Result<Context> {
        let root = workspace_root();
        let sh = Shell::new().context("create a shell")?;
        sh.change_dir(&root);
        Ok(Context {
            sh,
            root,
            dry_run,
            verbose,
        })
    }

    /// A path below the workspace root.
    pub fn path(&self, rel: &str) -> Utf8PathBuf {
        self.root.join(rel)
    }

    /// Runs a command that changes something. It is echoed to stderr first;
    /// under `--dry-run` it is printed to stdout, exactly as it would run, and
    /// not run at all.
    pub fn run(&self, cmd: Cmd<'_>) -> Result<()> {
        self.run_with_env(&[], cmd)
    }

    /// [`Context::run`] with environment variables that the echo shows too.
    /// Never pass a secret here: pass it on stdin instead.
    pub fn run_with_env(&self, env: &[(&str, &str)], mut cmd: Cmd<'_>) -> Result<()> {
        let line = echo_line(env, &cmd);
        if self.dry_run {
            println!("{line}");
            return Ok(());
        }
        eprintln!("$ {line}");
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        cmd.quiet().run().map_err(Into::into)
    }

    /// Runs a read-only probe (it changes nothing, so it runs under `--dry-run`
    /// too) and returns its trimmed stdout. Echoed with `--verbose`.
    pub fn read(&self, cmd: Cmd<'_>) -> Result<String> {
        if self.verbose {
            eprintln!("$ {cmd}");
        }
        cmd.quiet().read().map_err(Into::into)
    }

    /// Copies a file, atomically (a running `bin/api` keeps running). Under
    /// `--dry-run` it is printed as a comment line, since no command runs.
    pub fn copy(&self, from: &Utf8Path, to: &Utf8Path) -> Result<()> {
        let line = format!("# copy {from} to {to}");
        if self.dry_run {
            println!("{line}");
            return Ok(());
        }
        eprintln!("{line}");
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {dir}"))?;
        }
        let partial = to.with_extension("partial");
        std::fs::copy(from, &partial).with_context(|| format!("copy {from} to {partial}"))?;
        std::fs::rename(&partial, to).with_context(|| format!("move {partial} to {to}"))?;
        Ok(())
    }

    /// Progress for the person at the terminal: stderr, never stdout.
    pub fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("{msg}");
    }

    /// A result for whoever called us: stdout, one line.
    pub fn result(&self, msg: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`cargo xtask ... | head -1`) is not worth a panic.
        let _ = writeln!(out, "{msg}");
    }
}

/// The workspace root, from where cargo compiled us, so that `cargo xtask`
/// works from any folder of the checkout.
pub fn workspace_root() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// The command as it would be typed: `KEY=value prog 'arg with space'`.
fn echo_line(env: &[(&str, &str)], cmd: &Cmd<'_>) -> String {
    let mut line = String::new();
    for (key, value) in env {
        line.push_str(&format!("{key}={} ", shell_quote(value)));
    }
    line.push_str(&cmd.to_string());
    line
}

/// Quotes a word for display only; nothing here ever reaches a shell.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shows_env_then_command() {
        let sh = Shell::new().unwrap();
        let cmd = xshell::cmd!(sh, "cargo build --release");
        assert_eq!(
            echo_line(&[("API_VERSION", "v1 2")], &cmd),
            "API_VERSION='v1 2' cargo build --release"
        );
    }

    #[test]
    fn quoting_leaves_plain_words_alone() {
        assert_eq!(shell_quote("api:v1.2"), "api:v1.2");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
