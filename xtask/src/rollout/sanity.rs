//! `cargo xtask sanity`: is the preview the version we built, and does it answer?

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::Utf8PathBuf;
use clap::Args;

use super::{
    DEFAULT_PREVIEW_SERVICE, HEALTH_PATH, SERVICE_PORT, Target, check_label, go_duration,
    interrupt, parse_duration, timing,
};
use crate::context::{Context, command_line};
use crate::{http, tools, version};

/// Check the preview: /health answers 200 with the expected version, / answers 200
#[derive(Args, Debug)]
#[command(
    long_about = "Check the preview before it gets traffic: GET /health must answer 200 with \
{\"status\":\"ok\",\"version\":V}, V being the version this commit builds ($API_VERSION, else \
`git describe --tags --always --dirty`) or --expect-version; GET / must answer 200.

The preview is reached through `kubectl port-forward` to the preview Service, started in the \
background and always stopped afterwards (also on failure and on Ctrl-C), or at --url. The checks \
are retried until they pass or --timeout runs out, since a Service's endpoints follow it with a \
delay; every failure says what was expected and what came back. Changes nothing.

kubectl port-forward picks one pod from the Service's selector (not from its Endpoints) and waits \
--pod-running-timeout for one to exist; a pod that is not Running is refused at once. Either way \
its own reason is shown, and it is started again until --timeout.

Runs:
  kubectl port-forward service/PREVIEW_SERVICE :80 --address 127.0.0.1 \\
      --pod-running-timeout=DURATION [-n NAMESPACE] [--context CONTEXT]
  GET http://127.0.0.1:<forwarded port>/health, then GET /",
    after_long_help = "Environment:
  API_VERSION                          the expected version, instead of git describe's
  API_PREVIEW_SERVICE                  the preview Service [default: api-preview]
  API_NAMESPACE, KUBE_NAMESPACE        the namespace (in that order)
  API_KUBE_CONTEXT                     the kubeconfig context

Examples:
  cargo xtask sanity -n staging
  cargo xtask sanity --url http://127.0.0.1:8080 --expect-version v1.4.0"
)]
pub struct Sanity {
    #[command(flatten)]
    pub target: Target,

    #[command(flatten)]
    pub check: CheckArgs,

    /// The longest time to retry the checks, such as 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// What `sanity` checks and where; shared with `release`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Check this base URL (http://HOST[:PORT]) instead of port-forwarding to the preview Service
    #[arg(long, value_name = "URL", value_parser = CheckUrl)]
    pub url: Option<http::BaseUrl>,

    /// The Service in front of the preview pods
    #[arg(long, env = "API_PREVIEW_SERVICE", default_value = DEFAULT_PREVIEW_SERVICE, value_name = "NAME")]
    pub preview_service: String,

    /// The version /health must report [default: the version this commit builds]
    #[arg(long, value_name = "VERSION")]
    pub expect_version: Option<String>,
}

impl CheckArgs {
    /// The version the preview must report.
    pub fn expected_version(&self, cx: &Context) -> Result<String> {
        match &self.expect_version {
            Some(v) => {
                version::check(v).context("--expect-version")?;
                Ok(v.clone())
            }
            None => version::resolve(&cx.sh, &cx.root),
        }
    }

    /// Finds kubectl (unless --url says where to look) and checks the names.
    pub fn prepare(&self) -> Result<Option<Utf8PathBuf>> {
        check_label("Service", &self.preview_service)?;
        match &self.url {
            Some(_) => Ok(None),
            None => Ok(Some(tools::require(&[&tools::KUBECTL])?.remove(0))),
        }
    }
}

impl Sanity {
    pub fn run(self, cx: &Context) -> Result<()> {
        let target = self.target.checked()?;
        let kubectl = self.check.prepare()?;
        let expected = self.check.expected_version(cx)?;
        interrupt::install();
        let place = match &self.check.url {
            Some(url) => Place::Url(url.clone()),
            None => Place::Service {
                kubectl: kubectl.expect("prepare finds kubectl when there is no --url"),
                name: self.check.preview_service.clone(),
            },
        };
        check(cx, &target, &place, &expected, self.timeout)?;
        Ok(())
    }
}

/// Where the pods under test answer.
pub enum Place {
    Url(http::BaseUrl),
    Service { kubectl: Utf8PathBuf, name: String },
}

/// Checks `/health` and `/` at `place`, retrying until `timeout`.
pub fn check(
    cx: &Context,
    target: &Target,
    place: &Place,
    expected: &str,
    timeout: Duration,
) -> Result<()> {
    let what = format!(
        "GET {HEALTH_PATH} answers 200 with status \"ok\" and version {expected:?}, GET / answers 200"
    );
    let start = Instant::now();
    let deadline = start + timeout;
    let forward_line;
    let (_forward, base) = match place {
        Place::Url(url) => {
            if cx.dry_run {
                println!(
                    "# check {url}: {what}; retried for at most {}",
                    go_duration(timeout)
                );
                return Ok(());
            }
            (None, url.base())
        }
        Place::Service { kubectl, name } => {
            let args = port_forward_args(target, name, pod_running_timeout(timeout));
            forward_line = command_line(kubectl, &args);
            if cx.dry_run {
                println!("# {forward_line}   (in the background, stopped afterwards)");
                println!(
                    "# check http://127.0.0.1:<forwarded port>: {what}; retried for at most {}",
                    go_duration(timeout)
                );
                return Ok(());
            }
            let forward =
                forward_within(cx, kubectl, target, name, deadline).with_context(|| {
                    format!(
                        "sanity failed: no port-forward to {name} within {}",
                        go_duration(timeout)
                    )
                })?;
            let base = format!("http://127.0.0.1:{}", forward.port);
            (Some(forward), base)
        }
    };
    cx.say(format!("checking {base}: {what}"));
    let mut attempts = 0;
    loop {
        interrupt::check()?;
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request_timeout = remaining.clamp(Duration::from_millis(200), Duration::from_secs(5));
        match timing::in_tools(|| check_once(&base, expected, request_timeout)) {
            Ok(()) => {
                cx.say(format!(
                    "sanity passed: {base} runs version {expected} ({attempts} attempt{}, {:.1}s)",
                    if attempts == 1 { "" } else { "s" },
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            Err(failure) => {
                if Instant::now() >= deadline {
                    bail!(
                        "sanity failed after {attempts} attempt{} in {}: {failure:#}",
                        if attempts == 1 { "" } else { "s" },
                        go_duration(timeout)
                    );
                }
                cx.say(format!("  not yet: {failure:#}"));
            }
        }
        let now = Instant::now();
        timing::waiting(|| {
            interrupt::sleep(
                Duration::from_millis(500).min(deadline.saturating_duration_since(now)),
            )
        })?;
    }
}

/// Starts the port-forward, retrying until `deadline`: right after a deploy
/// the Service may have no running pod yet, and kubectl then refuses. Each
/// try waits at most what is left for a pod (`--pod-running-timeout`).
fn forward_within(
    cx: &Context,
    kubectl: &Utf8PathBuf,
    target: &Target,
    service: &str,
    deadline: Instant,
) -> Result<PortForward> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let pod_wait = pod_running_timeout(left);
        let args = port_forward_args(target, service, pod_wait);
        let line = command_line(kubectl, &args);
        match timing::in_tools(|| PortForward::start(kubectl, &args, &line, pod_wait)) {
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
fn pod_running_timeout(left: Duration) -> Duration {
    Duration::from_secs(left.as_secs().clamp(1, 30))
}

/// Not `--request-timeout`: it would cut the forwarding stream itself.
fn port_forward_args(target: &Target, service: &str, pod_wait: Duration) -> Vec<String> {
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

/// One round of checks; the error says what was expected and what came back.
fn check_once(base: &str, expected: &str, timeout: Duration) -> Result<()> {
    let url = format!("{base}{HEALTH_PATH}");
    let health = http::get(&url, timeout).with_context(|| {
        format!("GET {url}: expected 200 with version {expected:?}, got no answer")
    })?;
    let want = format!("200 with {{\"status\":\"ok\",\"version\":{expected:?}}}");
    if health.status != 200 {
        bail!(
            "GET {url}: expected {want}, got {}: {}",
            health.status,
            excerpt(&health.body)
        );
    }
    let body: serde_json::Value = serde_json::from_str(&health.body).map_err(|_| {
        anyhow::anyhow!(
            "GET {url}: expected {want}, got 200 with a body that is not JSON: {}",
            excerpt(&health.body)
        )
    })?;
    let status = body.get("status").and_then(|s| s.as_str());
    let version = body.get("version").and_then(|v| v.as_str());
    if status != Some("ok") || version != Some(expected) {
        bail!(
            "GET {url}: expected {want}, got 200 with {}",
            excerpt(&health.body)
        );
    }
    let url = format!("{base}/");
    let root = http::get(&url, timeout)
        .with_context(|| format!("GET {url}: expected 200, got no answer"))?;
    if root.status != 200 {
        bail!(
            "GET {url}: expected 200, got {}: {}",
            root.status,
            excerpt(&root.body)
        );
    }
    Ok(())
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "an empty body".to_owned();
    }
    let cut: String = body.chars().take(200).collect();
    if cut.len() < body.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// `--url`, checked when the command line is parsed: `http://HOST[:PORT]` and nothing else.
fn check_url(value: &std::ffi::OsStr) -> Result<http::BaseUrl, String> {
    let text = value.to_str().ok_or(
        "invalid URL: it is not UTF-8; give http://HOST[:PORT], such as http://127.0.0.1:8080",
    )?;
    http::parse_base_url(text)
}

/// [`check_url`] as clap's parser. Its error is ours alone: clap's own would
/// repeat the value as given, and a refused URL may hold a password.
#[derive(Clone)]
struct CheckUrl;

impl clap::builder::TypedValueParser for CheckUrl {
    type Value = http::BaseUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<http::BaseUrl, clap::Error> {
        check_url(value).map_err(|why| {
            let flag = arg.and_then(clap::Arg::get_long).unwrap_or("url");
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--{flag}: {why}\n"),
            )
            .with_cmd(cmd)
        })
    }
}

/// `kubectl port-forward` in the background; killed when dropped, so it
/// stops on success, on failure, and when Ctrl-C unwinds the task.
struct PortForward {
    handle: Arc<duct::ReaderHandle>,
    lines: Receiver<Option<String>>,
    port: u16,
}

impl PortForward {
    /// Its stderr joins its stdout, so kubectl's reason for ending is ours to show.
    fn start(
        kubectl: &Utf8PathBuf,
        args: &[String],
        line: &str,
        pod_wait: Duration,
    ) -> Result<PortForward> {
        eprintln!("$ {line} &");
        let handle = Arc::new(
            duct::cmd(kubectl.as_std_path(), args)
                .stdin_null()
                .stderr_to_stdout()
                .unchecked()
                .reader()
                .with_context(|| format!("start {line}"))?,
        );
        let (send, lines) = channel();
        let reader = Arc::clone(&handle);
        // Keeps reading, so kubectl never blocks on a full pipe; None marks the end.
        std::thread::spawn(move || {
            for line in BufReader::new(&*reader).lines() {
                let Ok(line) = line else { break };
                if send.send(Some(line)).is_err() {
                    break;
                }
            }
            let _ = send.send(None);
        });
        let mut forward = PortForward {
            handle,
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
        loop {
            interrupt::check()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(remaining.min(Duration::from_millis(100)))
            {
                Ok(Some(text)) => {
                    if let Some(port) = forwarded_port(&text) {
                        eprintln!("{text}");
                        return Ok(port);
                    }
                    said.push(text);
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    let reason = match said.iter().rev().find(|l| !l.trim().is_empty()) {
                        Some(last) => format!("kubectl said: {}", last.trim()),
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

impl Drop for PortForward {
    fn drop(&mut self) {
        timing::in_tools(|| self.stop());
    }
}

impl PortForward {
    fn stop(&mut self) {
        let _ = self.handle.kill();
        // The reader thread sees the end of the pipe; then the child is reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.handle.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
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

    #[test]
    fn long_bodies_are_cut() {
        assert_eq!(excerpt(""), "an empty body");
        assert_eq!(excerpt(&"x".repeat(300)).len(), 203);
    }

    #[test]
    fn urls_must_be_http_bases() {
        let check = |url: &str| check_url(url.as_ref());
        check("http://127.0.0.1:8080").unwrap();
        assert!(check("https://example.com").is_err());
        assert!(check("127.0.0.1:8080").is_err());
        let err = check("http://127.0.0.1:8080\r\nX-Injected: 1").unwrap_err();
        assert!(err.contains("carriage return"), "{err}");
        let err = check("http://exa mple.com").unwrap_err();
        assert!(err.contains("a space"), "{err}");
    }
}
