//! What every test of `cargo xtask` shares: the workspace root, the built
//! xtask with a clean environment, a finished command as text, the CI rule
//! for a test whose tool is missing, and a minimal HTTP client.

pub mod runs;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Variables that change what a task resolves (image, version, rollout,
/// registry, git) or how cargo words its output: the pipeline sets some of
/// them, so each test sets exactly those it means to.
const RESOLVED_FROM_THE_ENVIRONMENT: &[&str] = &[
    "API_IMAGE",
    "API_IMAGE_TAG",
    "API_IMAGE_DIGEST",
    "API_EXPECT_IMAGE",
    "API_VERSION",
    "API_ROLLOUT",
    "API_CONTAINER",
    "API_NAMESPACE",
    "API_KUBE_CONTEXT",
    "API_KUBE_REQUEST_TIMEOUT",
    "API_PREVIEW_SERVICE",
    "API_ACTIVE_SERVICE",
    "KUBE_NAMESPACE",
    "CI_REGISTRY_IMAGE",
    "CI_COMMIT_SHA",
    "CI_PROJECT_URL",
    "CI_REGISTRY",
    "CI_REGISTRY_USER",
    "CI_REGISTRY_PASSWORD",
    "SOURCE_DATE_EPOCH",
    "GIT_DIR",
    "GIT_WORK_TREE",
    // The debug-only hook of `release`: only the test that means it sets it.
    "XTASK_TEST_PANIC_AFTER_SET_IMAGE",
];

/// The built `cargo xtask`, run from the workspace root with none of the
/// variables above, no stdin, and cargo's words without colour codes.
pub fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.current_dir(root())
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null());
    for key in RESOLVED_FROM_THE_ENVIRONMENT {
        cmd.env_remove(key);
    }
    cmd
}

/// [`xtask`] with its arguments.
pub fn xtask_with(args: &[&str]) -> Command {
    let mut cmd = xtask();
    cmd.args(args);
    cmd
}

/// Runs a command to its end, with no stdin unless it set one.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished command: what ran, how it ended and what it said, as text.
pub struct Ran {
    /// The program and its arguments, as a shell would take them back.
    pub argv: String,
    /// The exit code; None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// What `cmd` ended with, once it has.
    pub fn of(cmd: &Command, output: Output) -> Ran {
        Ran {
            argv: argv(cmd),
            code: output.status.code(),
            stdout: text(&output.stdout),
            stderr: text(&output.stderr),
        }
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn ok(&self) -> &Ran {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        self
    }

    pub fn failed(&self) -> &Ran {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected a non-zero exit\n{self}"
        );
        self
    }

    /// Exit 1, nothing on stdout and exactly `stderr`: how kubectl and the
    /// plugin (Go programs) end on an error.
    pub fn failed_with(&self, stderr: &str) -> &Ran {
        assert_eq!(self.code, Some(1), "{self}");
        assert_eq!(self.stdout, "", "{self}");
        assert_eq!(self.stderr, stderr, "{self}");
        self
    }

    pub fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The `error: ...` line xtask's main prints.
    pub fn error(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line\n{self}"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.argv, self.code, self.stdout, self.stderr
        )
    }
}

/// A command's program and arguments, each quoted where a shell would split it.
pub fn argv(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| {
            let word = word.to_string_lossy();
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+%".contains(c));
            if plain {
                word.into_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to its end (no stdin unless it set one): what it ended with.
pub fn run(cmd: &mut Command) -> Ran {
    let output = output(cmd);
    Ran::of(cmd, output)
}

/// Whether a test that needs `what` can run: yes when `present`; when not, a
/// failure under CI (CI must run every test) and a skip, saying why, elsewhere.
pub fn needs(what: &str, present: bool, how: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this test must run, but {what} is missing: {how}");
    }
    eprintln!("skipped: {what} is missing ({how}); in CI this is a failure");
    false
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A minimal HTTP/1.1 GET: status and body.
pub fn http_get(
    address: &str,
    path: &str,
    basic_auth: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http("GET", address, path, basic_auth, &[]).map(|r| (r.status, r.body))
}

/// What an HTTP server answered.
pub struct Response {
    pub status: u16,
    /// Header lines as `name: value`, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`, bounded by 5 s per read.
pub fn http(
    method: &str,
    address: &str,
    path: &str,
    basic_auth: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let socket = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{address} has no address")))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(credentials) = basic_auth {
        head.push_str(&format!("Authorization: Basic {}\r\n", base64(credentials)));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete response: {raw:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

pub fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
