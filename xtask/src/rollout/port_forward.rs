//! `kubectl port-forward` to a Service, in the background, for `sanity`:
//! started again until a deadline (right after a deploy the Service may have
//! no running pod), kubectl's own reason shown when it gives up, and always
//! stopped when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::Utf8PathBuf;

use super::{RolloutArgs, SERVICE_PORT, go_duration};
use crate::context::{Context, SAID_MAX, command_line, outside_text, say_line};
use crate::interrupt;
use crate::process::{Background, Stdout};
use crate::timing;

/// Starts the port-forward, retrying until `deadline`: right after a deploy
/// the Service may have no running pod yet, and kubectl then refuses. Each
/// try waits at most what is left for a pod (`--pod-running-timeout`).
pub fn start_within(
    cx: &Context,
    kubectl: &Utf8PathBuf,
    target: &RolloutArgs,
    service: &str,
    deadline: Instant,
) -> Result<PortForward> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let pod_wait = pod_running_timeout(left);
        let args = args(target, service, pod_wait);
        let line = command_line(kubectl, &args);
        match timing::in_tools(|| PortForward::start(cx, kubectl, &args, &line, pod_wait)) {
            Ok(forward) => return Ok(forward),
            Err(err) if interrupt::is_interrupted(&err) || Instant::now() >= deadline => {
                return Err(err);
            }
            Err(err) => cx.say(format!("  not yet: {err:#}")),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        timing::waiting(|| interrupt::sleep(Duration::from_secs(1).min(remaining)))?;
    }
}

/// How long one port-forward waits for a pod behind the Service: what is
/// left, whole seconds, between 1s and 30s; kubectl's own default (60s) would
/// outlast our bound and hide its reason.
pub fn pod_running_timeout(left: Duration) -> Duration {
    Duration::from_secs(left.as_secs().clamp(1, 30))
}

/// Not `--request-timeout`: it would cut the forwarding stream itself.
pub fn args(target: &RolloutArgs, service: &str, pod_wait: Duration) -> Vec<String> {
    let mut args = vec![
        "port-forward".to_owned(),
        format!("service/{service}"),
        format!(":{SERVICE_PORT}"),
        "--address".to_owned(),
        "127.0.0.1".to_owned(),
        format!("--pod-running-timeout={}", go_duration(pod_wait)),
    ];
    if let Some(ns) = &target.namespace {
        args.extend(["-n".to_owned(), ns.clone()]);
    }
    if let Some(context) = &target.context {
        args.extend(["--context".to_owned(), context.clone()]);
    }
    args
}

/// `kubectl port-forward` in the background; killed when dropped (its
/// `Background` is), so it stops on success, on failure, and when Ctrl-C
/// unwinds the task.
pub struct PortForward {
    _process: Background,
    lines: Receiver<Option<String>>,
    pub port: u16,
}

impl PortForward {
    /// Its stderr joins its stdout, so kubectl's reason for ending is ours to show.
    fn start(
        cx: &Context,
        kubectl: &Utf8PathBuf,
        args: &[String],
        line: &str,
        pod_wait: Duration,
    ) -> Result<PortForward> {
        let mut command = Command::new(kubectl.as_std_path());
        command.args(args);
        let mut process = cx
            .change(command)
            .stdout(Stdout::Kept)
            .keep_stderr()
            .spawn(cx)?
            .with_context(|| format!("{line}: not started under --dry-run"))?;
        let (send, lines) = channel();
        // Both pipes are read to their end, so kubectl never blocks on a full
        // one; each reader marks its end with None.
        let child = process.child();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as _),
            child.stderr.take().map(|p| Box::new(p) as _),
        ];
        for pipe in pipes.into_iter().flatten() {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if send.send(Some(line)).is_err() {
                        break;
                    }
                }
                let _ = send.send(None);
            });
        }
        let mut forward = PortForward {
            _process: process,
            lines,
            port: 0,
        };
        // kubectl gives up on its own after pod_wait; this bound is for one that hangs.
        let bound = pod_wait + Duration::from_secs(10);
        forward.port = forward.wait_for_port(line, bound)?;
        Ok(forward)
    }

    /// kubectl prints `Forwarding from 127.0.0.1:PORT -> TARGET` once it
    /// listens; anything before that is its reason for not forwarding.
    fn wait_for_port(&self, line: &str, bound: Duration) -> Result<u16> {
        let deadline = Instant::now() + bound;
        let mut said: Vec<String> = Vec::new();
        let mut open = 2;
        loop {
            interrupt::check()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(remaining.min(Duration::from_millis(100)))
            {
                Ok(Some(text)) => {
                    if let Some(port) = forwarded_port(&text) {
                        say_line(outside_text(&text, SAID_MAX));
                        return Ok(port);
                    }
                    said.push(text);
                }
                Ok(None) if open > 1 => open -= 1,
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    let reason = match said.iter().rev().find(|l| !l.trim().is_empty()) {
                        Some(last) => {
                            format!("kubectl said: {}", outside_text(last.trim(), SAID_MAX))
                        }
                        None => "kubectl said nothing".to_owned(),
                    };
                    bail!("{line} ended before it forwarded a port; {reason}")
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    bail!(
                        "{line} did not start forwarding within {} and was stopped",
                        go_duration(bound)
                    )
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

fn forwarded_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_port_is_read_from_kubectls_line() {
        assert_eq!(
            forwarded_port("Forwarding from 127.0.0.1:41234 -> 8080"),
            Some(41234)
        );
        assert_eq!(forwarded_port("Forwarding from [::1]:41234 -> 8080"), None);
        assert_eq!(forwarded_port("Handling connection for 41234"), None);
    }
}
