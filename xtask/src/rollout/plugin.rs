//! The wrapper around `kubectl-argo-rollouts`: its command lines (flags after
//! the subcommand, as the plugin takes them), and what its output means.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use camino::Utf8PathBuf;
use xshell::{Cmd, cmd};

use super::{Target, go_duration, interrupt, timing};
use crate::context::Context;
use crate::image::ImageRef;

/// The plugin, bound to one Rollout (names already checked).
pub struct Plugin {
    path: Utf8PathBuf,
    pub target: Target,
}

/// The phases `status` reports (`GetRolloutPhase` in Argo Rollouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Healthy,
    Progressing,
    Paused,
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Healthy => "Healthy",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Degraded => "Degraded",
        }
    }
}

/// Where a rollout stands: `Paused - BlueGreenPause`, `Degraded - RolloutAborted: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStatus {
    pub phase: Phase,
    pub message: String,
}

/// The pause a blue/green rollout makes when the preview is ready.
pub const BLUE_GREEN_PAUSE: &str = "BlueGreenPause";

impl RolloutStatus {
    pub fn is_blue_green_pause(&self) -> bool {
        self.phase == Phase::Paused && self.message == BLUE_GREEN_PAUSE
    }
}

impl std::fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message.as_str() {
            "" => f.write_str(self.phase.as_str()),
            message => write!(f, "{} - {message}", self.phase.as_str()),
        }
    }
}

impl Plugin {
    pub fn new(path: Utf8PathBuf, target: Target) -> Plugin {
        Plugin { path, target }
    }

    pub fn rollout(&self) -> &str {
        &self.target.rollout
    }

    /// `-n NS --context C`, after the subcommand: the plugin's kubeconfig flags.
    fn kube_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(ns) = &self.target.namespace {
            flags.extend(["-n".to_owned(), ns.clone()]);
        }
        if let Some(context) = &self.target.context {
            flags.extend(["--context".to_owned(), context.clone()]);
        }
        flags
    }

    fn cmd<'a>(&self, cx: &'a Context, args: &[&str]) -> Cmd<'a> {
        let path = &self.path;
        let flags = self.kube_flags();
        let sh = &cx.sh;
        cmd!(sh, "{path} {args...} {flags...}")
    }

    /// The exact command line, for plans and messages.
    pub fn line(&self, cx: &Context, args: &[&str]) -> String {
        self.cmd(cx, args).to_string()
    }

    pub fn status_args(&self) -> [&str; 3] {
        ["status", self.rollout(), "--watch=false"]
    }

    pub fn set_image(&self, cx: &Context, image: &ImageRef) -> Result<()> {
        let assignment = format!("{}={image}", self.target.container);
        self.change(cx, &["set", "image", self.rollout(), &assignment])
            .with_context(|| format!("set image {assignment} on rollout {}", self.rollout()))
    }

    pub fn promote(&self, cx: &Context) -> Result<()> {
        self.change(cx, &["promote", self.rollout()])
            .with_context(|| format!("promote rollout {}", self.rollout()))
    }

    pub fn abort(&self, cx: &Context) -> Result<()> {
        self.change(cx, &["abort", self.rollout()])
            .with_context(|| format!("abort rollout {}", self.rollout()))
    }

    /// A command that changes the rollout. Like `Context::run` (echo to stderr;
    /// under --dry-run print to stdout and do not run), but the plugin's own
    /// output goes to stderr too, since stdout is for our results, and its
    /// `Error: ...` line becomes part of our error.
    fn change(&self, cx: &Context, args: &[&str]) -> Result<()> {
        let cmd = self.cmd(cx, args);
        let line = cmd.to_string();
        if cx.dry_run {
            println!("{line}");
            return Ok(());
        }
        eprintln!("$ {line}");
        let output = timing::in_tools(|| cmd.quiet().ignore_status().output())
            .with_context(|| format!("run {line}"))?;
        relay_stdout(&output);
        if !output.status.success() {
            bail!("{}{}", failure(&output), self.not_found_hint(&output));
        }
        Ok(())
    }

    /// When the plugin says the Rollout does not exist: how it comes to exist.
    fn not_found_hint(&self, output: &Output) -> String {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing = format!("rollouts.argoproj.io \"{}\" not found", self.rollout());
        if !stderr.contains(&missing) {
            return String::new();
        }
        let ns = match &self.target.namespace {
            Some(ns) => format!(" -n {ns}"),
            None => String::new(),
        };
        format!(
            " (no Rollout {} there: check --namespace and --context, or create it once with \
             `kubectl create{ns} -f rollout.yaml`; see README.md, Deploying)",
            self.rollout()
        )
    }

    /// `status ROLLOUT --watch=false`: one look, read-only (runs under --dry-run too).
    pub fn status(&self, cx: &Context) -> Result<RolloutStatus> {
        let cmd = self.cmd(cx, &self.status_args());
        if cx.verbose {
            eprintln!("$ {cmd}");
        }
        let line = cmd.to_string();
        let output = timing::in_tools(|| cmd.quiet().ignore_status().output())
            .with_context(|| format!("run {line}"))?;
        parse_status(&output)
            .map_err(|e| anyhow!("{e:#}{}", self.not_found_hint(&output)))
            .with_context(|| format!("read the status of rollout {}", self.rollout()))
    }

    pub fn watch_args(&self, timeout: Duration) -> Vec<String> {
        vec![
            "status".to_owned(),
            self.rollout().to_owned(),
            "--timeout".to_owned(),
            go_duration(timeout),
        ]
    }

    /// `status ROLLOUT --timeout T`: the plugin watches until Healthy (exit 0),
    /// Degraded or its timeout (exit 1). Its progress lines go to stderr.
    /// Read-only, so it is our caller that decides whether it runs under --dry-run.
    pub fn wait_healthy(&self, cx: &Context, timeout: Duration) -> Result<()> {
        timing::in_tools(|| self.watch_until_healthy(cx, timeout))
    }

    fn watch_until_healthy(&self, cx: &Context, timeout: Duration) -> Result<()> {
        let args = self.watch_args(timeout);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = self.line(cx, &args);
        eprintln!("$ {line}");
        let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        argv.extend(self.kube_flags());
        let handle = duct::cmd(self.path.as_std_path(), &argv)
            .dir(cx.root.as_std_path())
            // Inner first: stderr is captured (for the error), then stdout joins
            // our own stderr (the progress lines), not the capture.
            .stderr_capture()
            .stdout_to_stderr()
            .unchecked()
            .start()
            .with_context(|| format!("start {line}"))?;
        // The plugin's own timeout ends it; this bound is for a plugin that hangs
        // (an API server that does not answer).
        let deadline = Instant::now() + timeout + Duration::from_secs(30);
        let output = loop {
            if let Some(output) = handle.wait_timeout(Duration::from_millis(50))? {
                break output;
            }
            if interrupt::interrupted() || Instant::now() >= deadline {
                let _ = handle.kill();
                let _ = handle.wait_timeout(Duration::from_secs(5));
                interrupt::check()?;
                bail!("{line} did not end within {}", go_duration(timeout));
            }
        };
        if !output.status.success() {
            bail!("{}", failure(output));
        }
        Ok(())
    }
}

/// What the plugin printed on stdout goes to our stderr, as progress.
fn relay_stdout(output: &Output) {
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        eprintln!("{line}");
    }
}

/// The plugin's `Error: ...` line (or its usage text), for our error message.
fn failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let said = if stderr.is_empty() {
        "nothing on stderr".to_owned()
    } else {
        stderr.to_owned()
    };
    format!(
        "kubectl-argo-rollouts exited with {}: {said}",
        output.status
    )
}

/// Reads `status --watch=false`: `Healthy`, `Degraded` (with the reason on
/// stderr and exit 1), or `Phase - Message`.
pub fn parse_status(output: &Output) -> Result<RolloutStatus> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        bail!("{}", failure(output));
    };
    let (word, message) = match line.split_once(" - ") {
        Some((word, message)) => (word, message.to_owned()),
        None => (line, String::new()),
    };
    let phase = match word {
        "Healthy" => Phase::Healthy,
        "Progressing" => Phase::Progressing,
        "Paused" => Phase::Paused,
        "Degraded" => Phase::Degraded,
        _ => bail!(
            "kubectl-argo-rollouts printed a status this tool does not know: {line:?} (expected Healthy, \
             Progressing - ..., Paused - ... or Degraded)"
        ),
    };
    let message = if phase == Phase::Degraded && message.is_empty() {
        // --watch=false prints the bare word; the reason comes as the error.
        let stderr = String::from_utf8_lossy(&output.stderr);
        stderr
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Error: The rollout is in a degraded state with message: ")
            })
            .unwrap_or_default()
            .to_owned()
    } else {
        message
    };
    Ok(RolloutStatus { phase, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_paused_blue_green_rollout_is_ready_for_promotion() {
        let status = parse_status(&output(0, "Paused - BlueGreenPause\n", "")).unwrap();
        assert_eq!(status.phase, Phase::Paused);
        assert!(status.is_blue_green_pause());
        assert_eq!(status.to_string(), "Paused - BlueGreenPause");
    }

    #[test]
    fn a_manual_pause_is_not_the_blue_green_pause() {
        let status = parse_status(&output(0, "Paused - manually paused\n", "")).unwrap();
        assert!(!status.is_blue_green_pause());
    }

    #[test]
    fn healthy_and_progressing_read_as_such() {
        let healthy = parse_status(&output(0, "Healthy\n", "")).unwrap();
        assert_eq!(
            (healthy.phase, healthy.message.as_str()),
            (Phase::Healthy, "")
        );
        let progressing = parse_status(&output(
            0,
            "Progressing - more replicas need to be updated\n",
            "",
        ))
        .unwrap();
        assert_eq!(progressing.phase, Phase::Progressing);
        assert_eq!(progressing.message, "more replicas need to be updated");
    }

    #[test]
    fn degraded_takes_its_reason_from_the_error_line() {
        let status = parse_status(&output(
            1,
            "Degraded\n",
            "Error: The rollout is in a degraded state with message: RolloutAborted: Rollout aborted update to revision 2\n",
        ))
        .unwrap();
        assert_eq!(status.phase, Phase::Degraded);
        assert_eq!(
            status.to_string(),
            "Degraded - RolloutAborted: Rollout aborted update to revision 2"
        );
    }

    #[test]
    fn an_error_without_status_is_an_error_that_quotes_the_plugin() {
        let err = parse_status(&output(
            1,
            "",
            "Error: rollouts.argoproj.io \"api\" not found\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rollouts.argoproj.io \"api\" not found"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_status_word_is_refused() {
        let err = parse_status(&output(0, "Sideways - ???\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not know"), "{err}");
    }
}
