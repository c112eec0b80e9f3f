//! What every task shares: the workspace root, one `Shell`, and the one place
//! where commands are echoed, run, or (under `--dry-run`) only printed.

use std::ffi::OsStr;
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
        let root = find_workspace_root()?;
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
        self.execute(env, cmd, false).map(drop)
    }

    /// [`Context::run_with_env`] for a command whose stdout is data for us
    /// (cargo's JSON messages, say): it is returned, not shown; stderr shows
    /// as usual. `None` under `--dry-run`, where nothing runs.
    pub fn run_for_output(&self, env: &[(&str, &str)], cmd: Cmd<'_>) -> Result<Option<String>> {
        self.execute(env, cmd, true)
    }

    fn execute(&self, env: &[(&str, &str)], cmd: Cmd<'_>, capture: bool) -> Result<Option<String>> {
        let mut command = Command::from(cmd);
        let line = echo_line(env, &command);
        if self.dry_run {
            println!("{line}");
            return Ok(None);
        }
        eprintln!("$ {line}");
        for (key, value) in env {
            command.env(key, value);
        }
        command.stdin(Stdio::null());
        if !capture {
            let status = command
                .status()
                .map_err(|err| start_error(err, &command, &line))?;
            if !status.success() {
                bail!("`{line}` failed ({status})");
            }
            return Ok(Some(String::new()));
        }
        stdout_of(&mut command, &line).map(Some)
    }

    /// Runs a read-only probe (it changes nothing, so it runs under `--dry-run`
    /// too) and returns its stdout without the final line break. Echoed with
    /// `--verbose`. A probe that fails is an error.
    pub fn read(&self, cmd: Cmd<'_>) -> Result<String> {
        let mut command = Command::from(cmd);
        let line = line_of(&command);
        if self.verbose {
            eprintln!("$ {line}");
        }
        let mut text = stdout_of(command.stdin(Stdio::null()), &line)?;
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

/// [`find_workspace_root`] for tests, where cargo always says where they are.
#[cfg(test)]
pub fn workspace_root() -> Utf8PathBuf {
    find_workspace_root().unwrap_or_else(|err| panic!("{err:#}"))
}

/// The workspace root of the checkout we run in, found at run time (a
/// checkout moved with its target/ works at its new place): the parent of
/// `$CARGO_MANIFEST_DIR`, which `cargo xtask` (`cargo run`) sets to this
/// checkout's xtask/; else the nearest folder at or above the current one,
/// then above this executable, whose Cargo.toml has a `[workspace]` with the
/// xtask member. A few small file reads, no process: `cargo xtask` starts as
/// fast as before.
pub fn find_workspace_root() -> Result<Utf8PathBuf> {
    if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Ok(manifest_dir) = Utf8PathBuf::from_path_buf(manifest_dir.into())
        && let Some(root) = manifest_dir.parent()
        && manifest_dir.file_name() == Some("xtask")
        && is_xtask_workspace(root)
    {
        return Ok(root.to_owned());
    }
    let cwd = std::env::current_dir().context("read the current folder")?;
    let cwd = Utf8PathBuf::from_path_buf(cwd)
        .map_err(|dir| anyhow::anyhow!("the current folder {} is not UTF-8", dir.display()))?;
    // Then where this binary is (checkout/target/debug/xtask, run by path).
    let exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Utf8PathBuf::from_path_buf(exe).ok());
    let beside_exe = exe.iter().flat_map(|exe| exe.ancestors().skip(1));
    match cwd
        .ancestors()
        .chain(beside_exe)
        .find(|dir| is_xtask_workspace(dir))
    {
        Some(root) => Ok(root.to_owned()),
        None => bail!(
            "cannot find the workspace: no Cargo.toml with a [workspace] whose members include \
             \"xtask\" in {cwd} or above; run cargo xtask from inside the checkout"
        ),
    }
}

/// Whether `dir/Cargo.toml` declares a workspace with the member `xtask`.
fn is_xtask_workspace(dir: &Utf8Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| has_xtask_member(&text))
}

/// Just enough TOML for `[workspace]` ... `members = [..., "xtask", ...]`:
/// the table's lines up to the next table header, then the members array.
fn has_xtask_member(manifest: &str) -> bool {
    let mut lines = manifest
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim());
    if !lines.any(|line| line == "[workspace]") {
        return false;
    }
    let mut table = String::new();
    for line in lines {
        if line.starts_with('[') && line.ends_with(']') && !table.trim_end().ends_with([',', '[']) {
            break;
        }
        table.push_str(line);
        table.push('\n');
    }
    let Some(members) = table
        .find("members")
        .map(|i| &table[i + "members".len()..])
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .and_then(|rest| rest.trim_start().strip_prefix('['))
        .and_then(|rest| rest.split_once(']'))
        .map(|(members, _)| members)
    else {
        return false;
    };
    members
        .split(',')
        .map(|member| member.trim().trim_matches(['"', '\'']))
        .any(|member| member == "xtask")
}

/// Runs `command` to its end and returns its stdout; its stderr goes where
/// it was set to go (ours, unless the command said otherwise).
fn stdout_of(command: &mut Command, line: &str) -> Result<String> {
    // spawn, not output(): output() would capture stderr too, and hide it.
    let output = command
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|child| child.wait_with_output())
        .map_err(|err| start_error(err, command, line))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{line}` printed something that is not UTF-8"))
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
    line.push_str(&line_of(command));
    line
}

/// A command line that, pasted into a shell (sh, bash, zsh), runs exactly
/// this program with exactly these arguments: every word is quoted as
/// [`shell_quote`] does, so `$(...)`, `;`, quotes and spaces in an argument
/// stay in that argument. For `--dry-run` plans and `$ ...` echoes.
///
/// From a program and its arguments, or from a command (an xshell `Cmd`
/// becomes one with `std::process::Command::from(cmd)`):
/// `command_line(command.get_program(), command.get_args())`. Environment
/// variables are not part of it: put them before it, quoted.
pub fn command_line<A: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = A>,
) -> String {
    let mut line = shell_quote(&program.as_ref().to_string_lossy());
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(&arg.as_ref().to_string_lossy()));
    }
    line
}

/// [`command_line`] of a command.
fn line_of(command: &Command) -> String {
    command_line(command.get_program(), command.get_args())
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
            line_of(&Command::from(cmd)),
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
        let line = command_line(words[0], &words[1..]);
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
    fn the_workspace_is_the_manifest_with_the_xtask_member() {
        assert!(has_xtask_member(
            "[workspace]\nresolver = \"3\"\nmembers = [\"api\", \"xtask\"]\n\n[workspace.package]\n"
        ));
        assert!(has_xtask_member(
            "[package]\nname = \"x\"\n\n[workspace]\nmembers = [\n  \"api\",\n  'xtask', # the tool\n]\n"
        ));
        for no in [
            "[package]\nname = \"xtask\"\n",
            "[workspace]\nmembers = [\"api\"]\n",
            "[workspace]\nmembers = [\"api\"]\n[other]\nmembers = [\"xtask\"]\n",
            "[workspace]\nmembers = [\"tools/xtask\"]\n",
            "# [workspace]\n",
        ] {
            assert!(!has_xtask_member(no), "{no}");
        }
        let root = workspace_root();
        assert!(is_xtask_workspace(&root), "{root}");
        assert!(root.join("xtask/Cargo.toml").is_file(), "{root}");
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
