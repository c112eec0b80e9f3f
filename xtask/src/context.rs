//! What every task shares: the workspace root, one `Shell`, and the one place
//! where commands are echoed, run, or (under `--dry-run`) only printed.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
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
    pub fn run_with_env(&self, env: &[(&str, &str)], cmd: Cmd<'_>) -> Result<()> {
        let mut command = Command::from(cmd);
        let line = echo_line(env, &command);
        if self.dry_run {
            println!("{line}");
            return Ok(());
        }
        eprintln!("$ {line}");
        for (key, value) in env {
            command.env(key, value);
        }
        let status = command
            .stdin(Stdio::null())
            .status()
            .map_err(|err| start_error(err, &command, &line))?;
        if !status.success() {
            bail!("`{line}` failed ({status})");
        }
        Ok(())
    }

    /// Runs a read-only probe (it changes nothing, so it runs under `--dry-run`
    /// too) and returns its stdout without the final line break. Echoed with
    /// `--verbose`. A probe that fails is an error.
    pub fn read(&self, cmd: Cmd<'_>) -> Result<String> {
        let mut command = Command::from(cmd);
        let line = command_line(&command);
        if self.verbose {
            eprintln!("$ {line}");
        }
        let output = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .output()
            .map_err(|err| start_error(err, &command, &line))?;
        if !output.status.success() {
            bail!("`{line}` failed ({})", output.status);
        }
        let mut text = String::from_utf8(output.stdout)
            .with_context(|| format!("`{line}` printed something that is not UTF-8"))?;
        if text.ends_with('\n') {
            text.pop();
        }
        if text.ends_with('\r') {
            text.pop();
        }
        Ok(text)
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

fn start_error(err: std::io::Error, command: &Command, line: &str) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "command not found: {} (for `{line}`)",
            shell_quote(&command.get_program().to_string_lossy())
        )
    } else {
        anyhow::Error::new(err).context(format!("start `{line}`"))
    }
}

/// The command as it would be typed: `KEY=value prog 'arg with space'`.
fn echo_line(env: &[(&str, &str)], command: &Command) -> String {
    let mut line = String::new();
    for (key, value) in env {
        line.push_str(&format!("{key}={} ", shell_quote(value)));
    }
    line.push_str(&command_line(command));
    line
}

/// A command line that, pasted into a shell (sh, bash, zsh), runs exactly
/// this program with exactly these arguments: every word is quoted as
/// [`shell_quote`] does, so `$(...)`, `;`, quotes and spaces in an argument
/// stay in that argument. For `--dry-run` plans and `$ ...` echoes.
/// Build it from an xshell command with `Command::from(cmd)`. Environment
/// variables set on the command are not shown (put them before it, quoted).
pub fn command_line(command: &Command) -> String {
    let mut line = shell_quote(&command.get_program().to_string_lossy());
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    line
}

/// Quotes a word for display only; nothing here ever reaches a shell. Plain
/// words stay as they are; others go in single quotes, inside which a shell
/// expands nothing; a word with a control character (a line break, say) is
/// written `$'...'` with escapes, so the line stays one line and shows it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && !word.starts_with(['=', '%'])
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        return word.to_owned();
    }
    if word.chars().any(char::is_control) {
        let mut quoted = String::from("$'");
        for c in word.chars() {
            match c {
                '\\' => quoted.push_str(r"\\"),
                '\'' => quoted.push_str(r"\'"),
                '\n' => quoted.push_str(r"\n"),
                '\r' => quoted.push_str(r"\r"),
                '\t' => quoted.push_str(r"\t"),
                c if c.is_control() && (c as u32) < 0x100 => {
                    quoted.push_str(&format!(r"\x{:02x}", c as u32))
                }
                c if c.is_control() => quoted.push_str(&format!(r"\u{:04x}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('\'');
        return quoted;
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shows_env_then_command() {
        let sh = Shell::new().unwrap();
        let cmd = xshell::cmd!(sh, "cargo build --release");
        assert_eq!(
            echo_line(&[("API_VERSION", "v1 2")], &Command::from(cmd)),
            "API_VERSION='v1 2' cargo build --release"
        );
    }

    #[test]
    fn command_lines_quote_every_word_that_a_shell_would_change() {
        let sh = Shell::new().unwrap();
        let hostile = "$(touch pwned) `x` ; a&&b | \"q\" 'it' *";
        let program = "/opt/my tools/docker";
        let cmd = xshell::cmd!(sh, "{program} build --tag {hostile} plain-word_1.2:x=y");
        assert_eq!(
            command_line(&Command::from(cmd)),
            r#"'/opt/my tools/docker' build --tag '$(touch pwned) `x` ; a&&b | "q" '\''it'\'' *' plain-word_1.2:x=y"#
        );
    }

    /// The real shell reads each line back into exactly the words xtask runs.
    #[test]
    fn a_pasted_command_line_gives_the_shell_the_same_words() {
        let words = [
            "printf",
            "%s\\n",
            "$(echo pwned)",
            "`echo pwned`",
            "${HOME}",
            "a b",
            "it's",
            "\"",
            "\\",
            "line\nbreak",
            "cr\rtab\t",
            "~",
            "=x",
            "%1",
            "*",
            "#",
            "!",
            "",
        ];
        let mut command = Command::new(words[0]);
        command.args(&words[1..]);
        let line = command_line(&command);
        assert!(!line.contains('\n'), "{line}");
        // bash reads `$'...'`; so does sh on most systems, but not every sh.
        let out = Command::new("bash")
            .args(["-c", &line])
            .output()
            .expect("run bash");
        assert!(out.status.success(), "{line}: {out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        let expected: String = words[2..].iter().map(|w| format!("{w}\n")).collect();
        assert_eq!(printed, expected, "{line}");
    }

    #[test]
    fn quoting_leaves_plain_words_alone() {
        assert_eq!(shell_quote("api:v1.2"), "api:v1.2");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("--format={{.X}}"), "'--format={{.X}}'");
        assert_eq!(
            shell_quote("-C target-feature=+crt-static"),
            "'-C target-feature=+crt-static'"
        );
        assert_eq!(shell_quote("a\nb"), r"$'a\nb'");
    }
}
