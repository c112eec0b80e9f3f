//! What every task shares: the workspace root, one `Shell`, and [`Step`], the
//! one way a task runs a program: echoed, run, or (under `--dry-run`) only
//! printed.

use std::ffi::OsStr;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::Shell;

use crate::interrupt;
use crate::process::{self, Background, Cut, Ended, Finished, Io, Stderr, Stdout};

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

    /// A program that changes something: echoed to stderr (`$ ...`) before it
    /// runs; under `--dry-run` printed to stdout, exactly as it would run, and
    /// not run at all.
    pub fn change(&self, command: impl Into<Command>) -> Step {
        Step::new(command.into(), true)
    }

    /// A read-only probe: it changes nothing, so it runs under `--dry-run`
    /// too; echoed with `--verbose`. Its stdout is kept.
    pub fn probe(&self, command: impl Into<Command>) -> Step {
        Step::new(command.into(), false).stdout(Stdout::Kept)
    }

    /// A check that changes nothing but is the point of the task (a linter):
    /// it runs under `--dry-run` too, and is always echoed.
    pub fn linter(&self, command: impl Into<Command>) -> Step {
        let mut step = Step::new(command.into(), false);
        step.echoed = true;
        step
    }

    /// A step that is not a program (a file written, copied or removed): under
    /// `--dry-run` its line is printed to stdout and `false` returned, so the
    /// caller does nothing; else it is shown on stderr and `true` returned.
    pub fn announce(&self, line: impl std::fmt::Display) -> bool {
        if self.dry_run {
            self.plan(line);
            return false;
        }
        say_line(line);
        true
    }

    /// A line of the `--dry-run` plan (a command, or `# ...` for what is not
    /// one, such as a wait): stdout. Pasted into a shell, it stays one line:
    /// a control character in it (a line break in a file name, say) is written
    /// as an escape, so a comment cannot end early and run the rest. A command
    /// line has none to escape ([`command_line`] quotes them already).
    pub fn plan(&self, line: impl std::fmt::Display) {
        self.result(escape_controls(&line.to_string()));
    }

    /// Copies a file, atomically (a running `bin/api` keeps running). Under
    /// `--dry-run` it is printed as a comment line, since no command runs.
    pub fn copy(&self, from: &Utf8Path, to: &Utf8Path) -> Result<()> {
        if !self.announce(format_args!("# copy {from} to {to}")) {
            return Ok(());
        }
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
        say_line(msg);
    }

    /// The result of a task that changes something (the image reference
    /// `deploy` set): stdout, one line; under `--dry-run` the plan's last
    /// line, as a comment (`# result: api:TAG`), since every line of a plan
    /// is a command or a comment.
    pub fn change_result(&self, msg: impl std::fmt::Display) {
        match self.dry_run {
            true => self.plan(format_args!("# result: {msg}")),
            false => self.result(msg),
        }
    }

    /// A result for whoever called us: stdout, one line.
    pub fn result(&self, msg: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        // A closed pipe (`cargo xtask ... | head -1`) is not worth a panic.
        let _ = writeln!(out, "{msg}");
    }
}

/// One line on stderr. A closed stderr (`cargo xtask ... 2>&1 | head -n 3`)
/// is not worth a panic, and must not cut short what follows (an abort): the
/// line is lost, the task goes on. Every line xtask writes to stderr goes
/// through here (`eprintln!` panics on a closed pipe).
pub fn say_line(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Text that came from outside (a tool's stderr, a server's body) as it may
/// be shown: control characters and the invisible ones that reorder or hide
/// text (bidi overrides, zero-width) written as escapes (`\n`, `\u{202e}`), so
/// it can neither forge a line nor move the cursor, and cut to `max` characters.
pub fn outside_text(text: &str, max: usize) -> String {
    let mut shown = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        push_escaped(&mut shown, c);
    }
    let rest = chars.as_str().len();
    if rest > 0 {
        shown.push_str(&format!("... ({rest} bytes more)"));
    }
    shown
}

/// Control characters written as escapes; everything else as it is.
fn escape_controls(line: &str) -> String {
    if !line.chars().any(is_hidden) {
        return line.to_owned();
    }
    let mut shown = String::new();
    for c in line.chars() {
        push_escaped(&mut shown, c);
    }
    shown
}

fn push_escaped(shown: &mut String, c: char) {
    match c {
        '\n' => shown.push_str(r"\n"),
        '\r' => shown.push_str(r"\r"),
        '\t' => shown.push_str(r"\t"),
        c if is_hidden(c) => shown.push_str(&format!(r"\u{{{:x}}}", c as u32)),
        c => shown.push(c),
    }
}

/// A character that does not show as itself: a control character, or one
/// that reorders or hides text (bidi embeddings, overrides and isolates, the
/// marks, zero-width ones, the byte-order mark).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{061c}'
                | '\u{feff}'
        )
}

/// How much of a program's stderr an error quotes.
pub const SAID_MAX: usize = 2000;

/// A program to run, and how: the one way a task runs one. Made by
/// [`Context::change`], [`Context::probe`] or [`Context::linter`]; then, as
/// needed, variables that the echo shows ([`Step::env`]), where stdout goes
/// ([`Step::stdout`]), a secret on stdin ([`Step::secret_stdin`]) and a
/// deadline ([`Step::within`]). Its time counts as time in the tools (`timing`).
#[must_use]
pub struct Step {
    command: Command,
    env: Vec<(String, String)>,
    /// Under `--dry-run` printed, not run.
    changes: bool,
    /// Echoed even without `--verbose` (a change always is).
    echoed: bool,
    io: Io,
    hint: &'static str,
}

impl Step {
    fn new(command: Command, changes: bool) -> Step {
        Step {
            command,
            env: Vec::new(),
            changes,
            echoed: changes,
            io: Io {
                stdout: Stdout::Shown,
                stderr: Stderr::Shown,
                stdin: None,
                limit: None,
            },
            hint: "",
        }
    }

    /// A variable set for the program and shown before it in the echo. Never
    /// a secret: that goes on stdin ([`Step::secret_stdin`]).
    pub fn env(mut self, key: &str, value: &str) -> Step {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Where the program's stdout goes (shown, unless this says otherwise).
    pub fn stdout(mut self, stdout: Stdout) -> Step {
        self.io.stdout = stdout;
        self
    }

    /// Keeps the program's stderr (for an error that quotes it) instead of showing it.
    pub fn keep_stderr(mut self) -> Step {
        self.io.stderr = Stderr::Kept;
        self
    }

    /// Shows the program's stderr nowhere: for a probe whose status says enough.
    pub fn drop_stderr(mut self) -> Step {
        self.io.stderr = Stderr::Dropped;
        self
    }

    /// Written to the program's stdin and shown nowhere: not in the echo, not in the plan.
    pub fn secret_stdin(mut self, secret: &str) -> Step {
        self.io.stdin = Some(secret.to_owned());
        self
    }

    /// Killed after `limit`; [`Step::run`]'s error then ends with `hint`,
    /// what to check before trying again.
    pub fn within(mut self, limit: Duration, hint: &'static str) -> Step {
        self.io.limit = Some(limit);
        self.hint = hint;
        self
    }

    /// The command as it would be typed: `KEY=value prog 'arg with space'`.
    pub fn line(&self) -> String {
        let mut line = String::new();
        for (key, value) in &self.env {
            line.push_str(&format!("{key}={} ", shell_quote(value)));
        }
        line.push_str(&line_of(&self.command));
        line
    }

    /// Runs it to its end, or, a change under `--dry-run`, prints it and
    /// returns `None`. A start that fails, a non-zero exit, the deadline and
    /// Ctrl-C are errors (the last one [`interrupt::Interrupted`]) that quote the line.
    pub fn run(self, cx: &Context) -> Result<Option<Finished>> {
        let line = self.line();
        let hint = self.hint;
        let Some(ended) = self.finish_as(cx, &line)? else {
            return Ok(None);
        };
        match ended {
            Ok(done) if done.stdout_cut => bail!(
                "`{line}` printed more than {} on stdout, the most xtask keeps of a program's \
                 output; what it printed is not read",
                process::STDOUT_CAP_TEXT
            ),
            Ok(done) if done.status.success() => Ok(Some(done)),
            // The program's own words, when they were kept rather than shown.
            Ok(done) => match done.stderr.trim() {
                "" => bail!("`{line}` failed ({})", done.status),
                said => bail!(
                    "`{line}` failed ({}): {}",
                    done.status,
                    outside_text(said, SAID_MAX)
                ),
            },
            Err((Cut::Interrupted, _)) => Err(interrupt::Interrupted.into()),
            Err((Cut::Deadline(limit), _)) => bail!(
                "`{line}` did not finish within {} s, so it was stopped; {hint}",
                limit.as_secs()
            ),
        }
    }

    /// [`Step::run`] of a probe: its stdout without the final line break.
    pub fn read(self, cx: &Context) -> Result<String> {
        let mut text = self
            .stdout(Stdout::Kept)
            .run(cx)?
            .map(|done| done.stdout)
            .unwrap_or_default();
        if text.ends_with('\n') {
            text.pop();
        }
        if text.ends_with('\r') {
            text.pop();
        }
        Ok(text)
    }

    /// [`Step::run`] for a caller that reads the end itself (a tool's own
    /// exit codes and messages): `Err` only when it could not start.
    pub fn finish(self, cx: &Context) -> Result<Option<Ended>> {
        let line = self.line();
        self.finish_as(cx, &line)
    }

    fn finish_as(self, cx: &Context, line: &str) -> Result<Option<Ended>> {
        let Some((command, io)) = self.prepare(cx, line, "") else {
            return Ok(None);
        };
        crate::timing::in_tools(|| process::run(command, &io))
            .map(Some)
            .with_context(|| format!("run `{line}`"))
    }

    /// Starts it in the background, echoed with ` &`; stopped when the
    /// [`Background`] is dropped. `None` for a change under `--dry-run`.
    pub fn spawn(self, cx: &Context) -> Result<Option<Background>> {
        let line = self.line();
        let Some((command, io)) = self.prepare(cx, &line, " &") else {
            return Ok(None);
        };
        process::spawn(command, &io)
            .map(Some)
            .with_context(|| format!("start `{line}`"))
    }

    /// Echoes it (under `--dry-run`, prints a change and gives `None`), then
    /// hands the command over, for a caller that runs it in a way no `Step`
    /// does: `run` replaces this process with the service (exec).
    pub fn into_command(self, cx: &Context) -> Option<Command> {
        let line = self.line();
        self.prepare(cx, &line, "").map(|(command, _)| command)
    }

    /// Echoes it, or under `--dry-run` prints a change and gives `None`; else
    /// the command with its variables.
    fn prepare(mut self, cx: &Context, line: &str, suffix: &str) -> Option<(Command, Io)> {
        if self.changes && cx.dry_run {
            cx.plan(line);
            return None;
        }
        if self.echoed || cx.verbose {
            say_line(format_args!("$ {line}{suffix}"));
        }
        for (key, value) in &self.env {
            self.command.env(key, value);
        }
        Some((self.command, self.io))
    }
}

/// [`find_workspace_root`] for tests, where cargo always says where they are.
#[cfg(test)]
pub fn workspace_root() -> Utf8PathBuf {
    find_workspace_root().unwrap_or_else(|err| panic!("{err:#}"))
}

/// The workspace root of the checkout we run in, found at run time (a
/// checkout moved with its target/ works at its new place): the parent of
/// xtask's manifest folder, as rust-analyzer's xtask finds it (`project_root`
/// in its xtask/src/main.rs). That is `$CARGO_MANIFEST_DIR`, which `cargo
/// xtask` (`cargo run`) sets to this checkout's xtask/; run by path, the
/// nearest folder at or above the current one, then above this executable
/// (checkout/target/debug/xtask), that holds `xtask/Cargo.toml`. A few file
/// lookups, no process: `cargo xtask` starts as fast as before.
pub fn find_workspace_root() -> Result<Utf8PathBuf> {
    if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Ok(manifest_dir) = Utf8PathBuf::from_path_buf(manifest_dir.into())
        && manifest_dir.file_name() == Some("xtask")
        && let Some(root) = manifest_dir.parent()
        && is_checkout(root)
    {
        return Ok(root.to_owned());
    }
    let cwd = std::env::current_dir().context("read the current folder")?;
    let cwd = Utf8PathBuf::from_path_buf(cwd)
        .map_err(|dir| anyhow::anyhow!("the current folder {} is not UTF-8", dir.display()))?;
    let exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Utf8PathBuf::from_path_buf(exe).ok());
    let beside_exe = exe.iter().flat_map(|exe| exe.ancestors().skip(1));
    match cwd
        .ancestors()
        .chain(beside_exe)
        .find(|dir| is_checkout(dir))
    {
        Some(root) => Ok(root.to_owned()),
        None => bail!(
            "cannot find the workspace: no xtask/Cargo.toml in {cwd} or above; run cargo xtask \
             from inside the checkout"
        ),
    }
}

/// Whether `dir` is a checkout's root: the folder of the xtask crate's folder.
fn is_checkout(dir: &Utf8Path) -> bool {
    dir.join("xtask/Cargo.toml").is_file()
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
    if word.chars().any(is_hidden) {
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
                // As its UTF-8 bytes: bash reads `\u202e` as that character only
                // in a UTF-8 locale (the official rust image sets none), `\xe2`
                // in every locale.
                c if is_hidden(c) => {
                    let mut bytes = [0; 4];
                    for byte in c.encode_utf8(&mut bytes).bytes() {
                        quoted.push_str(&format!(r"\x{byte:02x}"));
                    }
                }
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
        let step = Step::new(cmd.into(), true).env("API_VERSION", "v1 2");
        assert_eq!(step.line(), "API_VERSION='v1 2' cargo build --release");
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
            "rtl\u{202e}x\u{200b}",
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
        // In every locale: a job image may set none (C), a person's terminal UTF-8.
        for locale in ["C", "C.UTF-8"] {
            let out = Command::new("bash")
                .args(["-c", &line])
                .env("LC_ALL", locale)
                .output()
                .expect("run bash");
            assert!(out.status.success(), "{line}: {out:?}");
            let printed = String::from_utf8(out.stdout).unwrap();
            let expected: String = words[2..].iter().map(|w| format!("{w}\n")).collect();
            assert_eq!(printed, expected, "LC_ALL={locale}: {line}");
        }
    }

    #[test]
    fn the_workspace_is_the_folder_that_holds_the_xtask_crate() {
        let root = workspace_root();
        assert!(is_checkout(&root), "{root}");
        assert!(root.join("Cargo.toml").is_file(), "{root}");
        for below in ["xtask", "api", "xtask/src"] {
            assert!(!is_checkout(&root.join(below)), "{below}");
        }
    }

    #[test]
    fn what_does_not_show_as_itself_is_escaped() {
        // A bidi override would show `ls` below as something else, yet run it.
        assert_eq!(shell_quote("prod\u{202e}x"), r"$'prod\xe2\x80\xaex'");
        assert_eq!(
            escape_controls("# write A=1\nrm -rf x to f"),
            r"# write A=1\nrm -rf x to f"
        );
        assert_eq!(escape_controls("plain line"), "plain line");
        assert_eq!(
            outside_text("ok\r\u{1b}[1A\u{200b}", 100),
            r"ok\r\u{1b}[1A\u{200b}"
        );
        assert_eq!(outside_text("abcdef", 3), "abc... (3 bytes more)");
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
