//! `api healthcheck`: the image checks a running service with no shell and no curl.
//!
//! Two forms:
//! - `api healthcheck`: GET `http://127.0.0.1:$PORT/health`, 200 or not (the
//!   Dockerfile's HEALTHCHECK).
//! - `api healthcheck --url URL [--expect-version V]`: GET `URL/health`, which
//!   must answer 200 (with `"version":V` in its body when asked; `SELF` is the
//!   version compiled into this binary), then GET `URL/`, which must answer 200.
//!   The analysis Job in `rollout.yaml` runs this with the preview's own image
//!   against the preview Service.
//!
//! Each request has one deadline for connect, send and read; the name in URL
//! is resolved by the system resolver (in a pod: the cluster's DNS).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use api::VERSION;
use api::config;
use api::log::json_string;

/// One request's bound: connect, send and the whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// More than any answer of the api; a larger one is not the api.
const MAX_ANSWER: usize = 64 * 1024;

/// What `api healthcheck ...` was asked to do.
#[derive(Debug, PartialEq)]
pub enum Check {
    /// The local service on $PORT: /health answers 200.
    Local,
    /// A service by URL: /health answers 200 (with that version), / answers 200.
    Remote {
        url: Url,
        expect_version: Option<String>,
    },
}

/// `http://HOST[:PORT][/PREFIX]`: all the healthcheck needs of a URL.
#[derive(Debug, PartialEq)]
pub struct Url {
    host: String,
    port: u16,
    prefix: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

impl Url {
    fn parse(text: &str) -> Result<Url, String> {
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            format!("--url {text:?}: only http:// URLs, e.g. --url http://api-preview/")
        })?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if path.contains(['?', '#']) {
            return Err(format!(
                "--url {text:?}: no query or fragment; the check adds /health and /"
            ));
        }
        let bad_port = || format!("--url {text:?}: the port must be a number from 1 to 65535");
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(bad_port)?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(bad_port)?,
            None => 80,
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(format!(
                "--url {text:?}: no host, e.g. --url http://api-preview/"
            ));
        }
        Ok(Url {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// The arguments after `healthcheck`; `Err` for anything else (the caller
/// prints the usage).
pub fn parse(args: &[Option<&str>]) -> Result<Check, String> {
    if args.is_empty() {
        return Ok(Check::Local);
    }
    let mut url = None;
    let mut expect_version = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg {
            Some(a) => a.split_once('=').map_or((*a, None), |(n, v)| (n, Some(v))),
            None => return Err("an argument is not UTF-8".into()),
        };
        let slot = match name {
            "--url" => &mut url,
            "--expect-version" => &mut expect_version,
            _ => return Err(format!("unknown argument {name:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => rest
                .next()
                .copied()
                .flatten()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(format!("{name} given twice"));
        }
    }
    let Some(url) = url else {
        return Err("--expect-version needs --url".into());
    };
    let expect_version = expect_version.map(|v| if v == "SELF" { VERSION.to_string() } else { v });
    if expect_version.as_deref() == Some("") {
        return Err("--expect-version is empty: give a version or SELF".into());
    }
    Ok(Check::Remote {
        url: Url::parse(&url)?,
        expect_version,
    })
}

/// Runs the check; exit 0 when it passes, 1 with one `error:` line otherwise.
pub fn run(check: Check) -> ExitCode {
    match check {
        Check::Local => local(),
        Check::Remote {
            url,
            expect_version,
        } => match remote(&url, expect_version.as_deref()) {
            Ok(said) => {
                println!("healthy: {said}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: unhealthy: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn local() -> ExitCode {
    let addr = match config::healthcheck_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match get(&[addr], &addr.to_string(), "/health") {
        Ok(answer) if answer.status == 200 => {
            println!("healthy: http://{addr}/health answered 200");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!(
                "error: unhealthy: http://{addr}/health: answered {}",
                answer.status
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: unhealthy: http://{addr}/health: {err}");
            ExitCode::FAILURE
        }
    }
}

/// /health (200, and the version when asked), then / (200).
fn remote(url: &Url, expect_version: Option<&str>) -> Result<String, String> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {:?}: {e}", url.host))?
        .collect();
    let host_header = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let health = format!("{}/health", url.prefix);
    let answer = get(&addrs, &host_header, &health).map_err(|e| format!("{url}/health: {e}"))?;
    if answer.status != 200 {
        return Err(format!("{url}/health answered {}", answer.status));
    }
    let version = match expect_version {
        Some(expected) => {
            // The api writes `"version":` followed by the JSON string, as log::json_string makes it.
            let wanted = format!("\"version\":{}", json_string(expected));
            if !answer.body.contains(&wanted) {
                return Err(format!(
                    "{url}/health answered 200 but not version {expected:?}: {}",
                    answer.body.trim()
                ));
            }
            format!(" with version {expected}")
        }
        None => String::new(),
    };
    let root = format!("{}/", url.prefix);
    let answer = get(&addrs, &host_header, &root).map_err(|e| format!("{url}/: {e}"))?;
    if answer.status != 200 {
        return Err(format!("{url}/ answered {}", answer.status));
    }
    Ok(format!(
        "{url}/health answered 200{version}, {url}/ answered 200"
    ))
}

struct Answer {
    status: u16,
    body: String,
}

/// One GET with `Connection: close`, to the first address that accepts,
/// all of it within TIMEOUT.
fn get(addrs: &[SocketAddr], host: &str, path: &str) -> Result<Answer, String> {
    let deadline = Instant::now() + TIMEOUT;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {}s", TIMEOUT.as_secs()))
    };
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, left()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let _ = stream.set_write_timeout(Some(left()?));
    // One write: a server that answers early must not find half a request.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: api-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("read: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => return Err(format!("read: {e}")),
            // An answer cut short still has its status line; the body check says the rest.
            Err(_) => break,
        }
        if raw.len() > MAX_ANSWER {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    match (
        status_line.starts_with("HTTP/1."),
        status_line.split(' ').nth(1),
    ) {
        (true, Some(code)) => Ok(Answer {
            status: code
                .parse()
                .map_err(|_| format!("not an HTTP answer: {status_line:?}"))?,
            body: body.to_string(),
        }),
        _ => Err(format!("not an HTTP answer: {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&'static str]) -> Vec<Option<&'static str>> {
        words.iter().map(|w| Some(*w)).collect()
    }

    #[test]
    fn urls_keep_host_port_and_prefix() {
        let url = |t| Url::parse(t).unwrap();
        assert_eq!(
            url("http://api-preview/").to_string(),
            "http://api-preview:80"
        );
        assert_eq!(
            url("http://api-preview").to_string(),
            "http://api-preview:80"
        );
        assert_eq!(
            url("http://127.0.0.1:8080/x/").to_string(),
            "http://127.0.0.1:8080/x"
        );
        assert_eq!(url("http://[::1]:81/").host, "::1");
        for bad in [
            "https://a/",
            "a",
            "http://:80/",
            "http://a:0/",
            "http://a:x/",
            "http://a/?q",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn self_is_the_version_compiled_in() {
        let check = parse(&args(&[
            "--url",
            "http://api-preview/",
            "--expect-version",
            "SELF",
        ]));
        assert_eq!(
            check.unwrap(),
            Check::Remote {
                url: Url::parse("http://api-preview/").unwrap(),
                expect_version: Some(VERSION.to_string()),
            }
        );
        assert!(matches!(
            parse(&args(&["--url=http://a/", "--expect-version=v1"])),
            Ok(Check::Remote { expect_version: Some(v), .. }) if v == "v1"
        ));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["now"][..],
            &["--url"],
            &["--expect-version", "v1"],
            &["--url", "http://a/", "--url", "http://b/"],
            &["--url", "http://a/", "--expect-version", ""],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&[]), Ok(Check::Local));
    }
}
