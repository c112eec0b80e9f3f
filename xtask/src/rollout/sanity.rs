//! `cargo xtask sanity`: is the preview the version we built, and does it answer?

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use camino::Utf8PathBuf;

use super::port_forward;
use super::{
    DEFAULT_PREVIEW_SERVICE, HEALTH_PATH, RolloutArgs, check_label, duration, go_duration,
};
use crate::cli::{self, Arg, ArgMatches, Task, option};
use crate::context::{Context, command_line, outside_text};
use crate::interrupt;
use crate::timing;
use crate::{http, tools, version};

const ABOUT: &str =
    "Check the preview: /health answers 200 with the expected version, / answers 200";

const LONG_ABOUT: &str =
    "Check the preview before it gets traffic: GET /health must answer 200 with \
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
  GET http://127.0.0.1:<forwarded port>/health, then GET /";

const AFTER_LONG_HELP: &str = "Environment:
  API_VERSION                          the expected version, instead of git describe's
  API_PREVIEW_SERVICE                  the preview Service [default: api-preview]
  API_NAMESPACE, KUBE_NAMESPACE        the namespace (in that order)
  API_KUBE_CONTEXT                     the kubeconfig context

Examples:
  cargo xtask sanity -n staging
  cargo xtask sanity --url http://127.0.0.1:8080 --expect-version v1.4.0";

#[derive(Debug)]
pub struct Sanity {
    pub target: RolloutArgs,
    pub check: SanityArgs,
    /// The longest time to retry the checks.
    pub timeout: Duration,
}

/// What `sanity` checks and where; shared with `release`.
#[derive(Debug, Clone)]
pub struct SanityArgs {
    /// Where to check instead of the preview Service.
    pub url: Option<http::BaseUrl>,
    pub preview_service: String,
    /// The version /health must report, if not this commit's.
    pub expect_version: Option<String>,
}

impl SanityArgs {
    pub fn args() -> [Arg; 3] {
        [
            option(
                "url",
                "URL",
                "Check this base URL (http://HOST[:PORT]) instead of port-forwarding to the preview Service",
            )
            .value_parser(CheckUrl),
            option(
                "preview-service",
                "NAME",
                "The Service in front of the preview pods",
            )
            .env("API_PREVIEW_SERVICE")
            .default_value(DEFAULT_PREVIEW_SERVICE),
            option(
                "expect-version",
                "VERSION",
                "The version /health must report [default: the version this commit builds]",
            ),
        ]
    }

    pub fn from(matches: &ArgMatches) -> SanityArgs {
        SanityArgs {
            url: cli::optional(matches, "url"),
            preview_service: cli::value(matches, "preview-service"),
            expect_version: cli::optional(matches, "expect-version"),
        }
    }

    /// The version the preview must report.
    pub fn expected_version(&self, cx: &Context) -> Result<String> {
        match &self.expect_version {
            Some(v) => {
                version::check_version(v).context("--expect-version")?;
                Ok(v.clone())
            }
            None => version::resolve(cx, &cx.root),
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

impl Task for Sanity {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("sanity", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .args(SanityArgs::args())
            .arg(duration(
                "timeout",
                "60s",
                "The longest time to retry the checks, such as 60s",
            ))
    }

    fn from(matches: &ArgMatches) -> Sanity {
        Sanity {
            target: RolloutArgs::from(matches),
            check: SanityArgs::from(matches),
            timeout: cli::value(matches, "timeout"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        let target = self.target.checked()?;
        let kubectl = self.check.prepare()?;
        let expected = self.check.expected_version(cx)?;
        let place = match &self.check.url {
            Some(url) => Endpoint::Url(url.clone()),
            None => Endpoint::Service {
                kubectl: kubectl.expect("prepare finds kubectl when there is no --url"),
                name: self.check.preview_service.clone(),
            },
        };
        check_preview(cx, &target, &place, &expected, self.timeout)?;
        Ok(())
    }
}

/// Where the pods under test answer.
pub enum Endpoint {
    Url(http::BaseUrl),
    Service { kubectl: Utf8PathBuf, name: String },
}

/// Checks `/health` and `/` at `place`, retrying until `timeout`.
pub fn check_preview(
    cx: &Context,
    target: &RolloutArgs,
    place: &Endpoint,
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
        Endpoint::Url(url) => {
            if cx.dry_run {
                cx.plan(format_args!(
                    "# check {url}: {what}; retried for at most {}",
                    go_duration(timeout)
                ));
                return Ok(());
            }
            (None, url.base())
        }
        Endpoint::Service { kubectl, name } => {
            let args = port_forward::args(target, name, port_forward::pod_running_timeout(timeout));
            forward_line = command_line(kubectl, &args);
            if cx.dry_run {
                cx.plan(format_args!(
                    "# {forward_line}   (in the background, stopped afterwards)"
                ));
                cx.plan(format_args!(
                    "# check http://127.0.0.1:<forwarded port>: {what}; retried for at most {}",
                    go_duration(timeout)
                ));
                return Ok(());
            }
            let forward = port_forward::start_within(cx, kubectl, target, name, deadline)
                .with_context(|| {
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
            Err(failure) if interrupt::is_interrupted(&failure) => return Err(failure),
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

/// The body as it may be shown: escaped (a line break or a terminal escape in
/// it cannot forge a line of ours) and cut.
fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "an empty body".to_owned();
    }
    outside_text(body, 200)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut() {
        assert_eq!(excerpt(""), "an empty body");
        assert_eq!(
            excerpt(&"x".repeat(300)),
            format!("{}... (100 bytes more)", "x".repeat(200))
        );
        assert_eq!(
            excerpt("bad\nsanity passed: \u{1b}[2K\u{202e}ok"),
            r"bad\nsanity passed: \u{1b}[2K\u{202e}ok"
        );
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
