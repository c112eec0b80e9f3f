//! The built `api` binary, run for real on an ephemeral loopback port: start,
//! configuration, logs, the command line, healthcheck, and graceful shutdown.
//! Signals are sent with the system's `kill` command.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const API: &str = env!("CARGO_BIN_EXE_api");

fn health_body() -> String {
    format!(r#"{{"status":"ok","version":"{}"}}"#, api::VERSION)
}

/// A running `api`, killed and reaped when dropped.
struct Api {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    /// Every stdout line so far, in order.
    seen: Vec<Value>,
}

impl Api {
    /// Starts on 127.0.0.1 and a free port (PORT=0) and waits for the start line.
    fn start(env: &[(&str, &str)]) -> Api {
        let mut command = Command::new(API);
        command
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            // Tests that are not about the drain delay stop at once.
            .env("DRAIN_DELAY_SECS", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start api");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut api = Api {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
        };
        let started = api.wait_for_log("started", Duration::from_secs(10));
        api.addr = started["addr"].as_str().unwrap().parse().unwrap();
        api
    }

    /// The next stdout line whose `msg` is `msg` (each line must be JSON).
    fn wait_for_log(&mut self, msg: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let value: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                    self.seen.push(value.clone());
                    if value["msg"] == msg {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {msg:?} log line within {limit:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    let mut stderr = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut stderr);
                    }
                    panic!("api closed stdout before a {msg:?} line; stderr: {stderr}")
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "api still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to api");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How reading a response ended, when it did not end in a response.
#[derive(Debug, PartialEq)]
enum ReadEnd {
    /// Closed or reset before the first byte of a response: nothing was answered.
    ClosedBeforeResponse,
    /// Closed or reset after part of a response: the one thing that must never happen.
    CutMidResponse(usize),
}

/// Reads exactly one response (Content-Length framed) from `stream`;
/// `head_only` for the answer to a HEAD.
fn read_response(stream: &mut TcpStream, head_only: bool) -> Result<Response, ReadEnd> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line: no read-ahead into the next response.
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) | Err(_) if raw.is_empty() => return Err(ReadEnd::ClosedBeforeResponse),
            Ok(_) | Err(_) => return Err(ReadEnd::CutMidResponse(raw.len())),
        }
    }
    let head = String::from_utf8(raw.clone()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("every answer has a Content-Length");
    let mut body = vec![0u8; if head_only { 0 } else { length }];
    if stream.read_exact(&mut body).is_err() {
        return Err(ReadEnd::CutMidResponse(raw.len()));
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

fn get(stream: &mut TcpStream, method: &str, path: &str) -> Response {
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_response(stream, method == "HEAD").expect("a full response")
}

fn run_api(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(API)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run api")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- starting, answering, logging ----

#[test]
fn starts_and_answers_with_the_compiled_in_version() {
    let mut api = Api::start(&[]);
    let started = api.seen[0].clone();
    assert_eq!(started["level"], "info");
    assert_eq!(started["version"], api::VERSION);
    assert_eq!(started["addr"], api.addr.to_string());

    let mut stream = api.connect();
    let health = get(&mut stream, "GET", "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.body, health_body());
    let root = get(&mut stream, "GET", "/");
    assert_eq!(root.status, 200);
    assert_eq!(
        root.body,
        format!(r#"{{"service":"api","version":"{}"}}"#, api::VERSION)
    );
    api.signal("TERM");
    assert!(api.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn head_sends_the_length_but_no_body_on_the_wire() {
    let api = Api::start(&[]);
    let mut stream = api.connect();
    let head = get(&mut stream, "HEAD", "/health");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(health_body().len().to_string().as_str())
    );
    // Had HEAD sent a body, this would read it instead of the next answer.
    let next = get(&mut stream, "GET", "/health");
    assert_eq!(next.body, health_body());
}

#[test]
fn unknown_paths_and_wrong_methods_get_json_errors_on_the_wire() {
    let api = Api::start(&[]);
    let mut stream = api.connect();
    let missing = get(&mut stream, "GET", "/missing");
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, r#"{"error":"not found"}"#)
    );
    let wrong = get(&mut stream, "DELETE", "/health");
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    assert_eq!(wrong.header("content-type"), Some("application/json"));
}

#[test]
fn debug_level_logs_each_request_as_one_json_line() {
    let mut api = Api::start(&[("LOG_LEVEL", "debug")]);
    let mut stream = api.connect();
    get(&mut stream, "GET", "/health?from=test");
    let line = api.wait_for_log("request", Duration::from_secs(5));
    assert_eq!(line["level"], "debug");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/health");
    assert_eq!(line["status"], 200);
}

#[test]
fn info_level_logs_start_and_stop_but_no_requests() {
    let mut api = Api::start(&[]);
    let mut stream = api.connect();
    for _ in 0..10 {
        get(&mut stream, "GET", "/health");
    }
    drop(stream);
    api.signal("TERM");
    api.wait_for_log("stopped", Duration::from_secs(10));
    assert!(api.wait_exit(Duration::from_secs(10)).success());
    let msgs: Vec<_> = api.seen.iter().map(|l| l["msg"].clone()).collect();
    assert_eq!(msgs, ["started", "stopping", "stopped"]);
}

// ---- configuration ----

#[test]
fn bad_configuration_is_one_error_line_and_nothing_starts() {
    for (var, value) in [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("HOST", "somewhere"),
        ("LOG_LEVEL", "loud"),
        ("SHUTDOWN_TIMEOUT_SECS", "soon"),
        ("HEADER_READ_TIMEOUT_SECS", "0"),
        ("WORKERS", "0"),
        ("WORKERS", "abc"),
        // Threads past the CPUs only cost memory: 41 MiB idle at 1024.
        ("WORKERS", "1024"),
        ("PROBE_PORT", "probe"),
        ("MAX_CONNECTIONS", "0"),
        ("DRAIN_DELAY_SECS", "soon"),
    ] {
        let port = free_port().to_string();
        let mut env = vec![("PORT", port.as_str()), ("HOST", "127.0.0.1")];
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let out = run_api(&[], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {var}={value:?} ")),
            "{var}={value}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty(), "{var}={value}: no start line");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_api(&[], &[("PORT", &port), ("HOST", "127.0.0.1")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: bind 127.0.0.1:{port}: ")),
        "{stderr}"
    );
}

// ---- the command line ----

#[test]
fn version_flag_prints_the_compiled_in_version() {
    for flag in ["--version", "-V"] {
        let out = run_api(&[flag], &[]);
        assert!(out.status.success(), "{flag}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{}\n", api::VERSION)
        );
    }
}

#[test]
fn help_lists_the_modes_and_the_environment() {
    let out = run_api(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "healthcheck",
        "--version",
        "PORT",
        "HOST",
        "LOG_LEVEL",
        "SHUTDOWN_TIMEOUT_SECS",
        "MAX_CONNECTIONS",
        "MAX_ACTIVE_CONNECTIONS",
        "LISTEN_BACKLOG",
        "SOCKET_BUFFER_BYTES",
        "MAX_HEAD_BYTES",
        "DRAIN_DELAY_SECS",
        "/ready",
    ] {
        assert!(text.contains(word), "help mentions {word}: {text}");
    }
}

#[test]
fn unknown_arguments_print_usage_on_stderr_and_exit_2() {
    for args in [&["--bogus"][..], &["serve"], &["healthcheck", "now"]] {
        let out = run_api(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr.starts_with("error: unexpected arguments"),
            "{stderr}"
        );
        assert!(stderr.contains("Usage: api"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

// ---- healthcheck ----

#[test]
fn healthcheck_passes_against_a_live_service() {
    let api = Api::start(&[]);
    let port = api.addr.port().to_string();
    let out = run_api(&["healthcheck"], &[("PORT", &port), ("HOST", "0.0.0.0")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthcheck_by_url_passes_with_its_own_version() {
    let api = Api::start(&[]);
    let url = format!("http://{}/", api.addr);
    let out = run_api(
        &["healthcheck", "--url", &url, "--expect-version", "SELF"],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("with version {}", api::VERSION))
            && stdout.contains("/ answered 200"),
        "{stdout}"
    );
}

#[test]
fn healthcheck_by_url_fails_on_another_version() {
    let api = Api::start(&[]);
    let url = format!("http://{}", api.addr);
    let out = run_api(
        &["healthcheck", "--url", &url, "--expect-version", "v0-other"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not version \"v0-other\"") && stderr.contains(&health_body()),
        "{stderr}"
    );
}

#[test]
fn healthcheck_by_url_fails_when_the_root_does_not_answer_200() {
    // /health is right, / is not: both must pass.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = health_body();
    let server = std::thread::spawn(move || {
        for answer in [
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_string(),
        ] {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            conn.write_all(answer.as_bytes()).unwrap();
        }
    });
    let url = format!("http://{addr}/");
    let out = run_api(
        &["healthcheck", "--url", &url, "--expect-version", "SELF"],
        &[],
    );
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/ answered 500"), "{stderr}");
}

#[test]
fn healthcheck_refuses_a_url_it_cannot_use() {
    let out = run_api(&["healthcheck", "--url", "https://api-preview/"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only http:// URLs"), "{stderr}");
}

#[test]
fn healthcheck_fails_against_a_dead_port() {
    let port = free_port().to_string();
    let out = run_api(&["healthcheck"], &[("PORT", &port)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unhealthy") && stderr.contains("connect"),
        "{stderr}"
    );
}

#[test]
fn healthcheck_fails_when_the_answer_is_not_200() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let out = run_api(&["healthcheck"], &[("PORT", &port), ("HOST", "127.0.0.1")]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 503"), "{stderr}");
}

// ---- timeouts and shutdown ----

#[test]
fn a_client_that_sends_nothing_is_disconnected_after_the_header_read_timeout() {
    let api = Api::start(&[("HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut silent = api.connect();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = silent.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "closed, no answer: {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}

#[test]
fn a_client_that_trickles_its_headers_is_disconnected_all_the_same() {
    let api = Api::start(&[("HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut slow = api.connect();
    let started = Instant::now();
    let head =
        b"GET /health HTTP/1.1\r\nHost: test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    for byte in head {
        // A byte every 100 ms: never idle, never done.
        if slow.write_all(&[*byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        slow.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let read = slow.read(&mut buf);
        slow.set_nonblocking(false).unwrap();
        match read {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(n) => panic!("answered a request never sent: {:?}", &buf[..n]),
        }
    }
    let closed_after = closed_after.expect("closed before the head was complete");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_within_two_header_timeouts() {
    let api = Api::start(&[("HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut stream = api.connect();
    assert_eq!(get(&mut stream, "GET", "/health").status, 200);
    let answered = Instant::now();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    let idle = answered.elapsed();
    assert!(
        matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "closed, nothing more sent: {read:?} {rest:?}"
    );
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after {idle:?} idle"
    );
}

/// A drain delay no test waits out: a SIGINT that paid it would fail on a
/// deadline long before it ended.
const KUBELET_DRAIN_DELAY: &str = "600";

#[test]
fn sigint_with_nothing_open_stops_without_the_drain_delay() {
    let mut api = Api::start(&[("DRAIN_DELAY_SECS", KUBELET_DRAIN_DELAY)]);
    api.signal("INT");
    let stopping = api.wait_for_log("stopping", Duration::from_secs(10));
    assert_eq!(stopping["drain_delay_secs"], 0);
    let stopped = api.wait_for_log("stopped", Duration::from_secs(10));
    assert_eq!(stopped["signal"], "SIGINT");
    assert_eq!(stopped["drained"], true);
    assert!(api.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_request_in_flight_at_sigint_is_answered_before_the_service_exits() {
    let mut api = Api::start(&[
        ("DRAIN_DELAY_SECS", KUBELET_DRAIN_DELAY),
        ("SHUTDOWN_TIMEOUT_SECS", KUBELET_DRAIN_DELAY),
        ("HEADER_READ_TIMEOUT_SECS", KUBELET_DRAIN_DELAY),
    ]);
    let mut in_flight = api.connect();
    // Half a request: the connection is accepted and its head is on the way.
    in_flight
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    api.signal("INT");
    let stopping = api.wait_for_log("stopping", Duration::from_secs(10));
    assert_eq!(stopping["drain_delay_secs"], 0);
    assert!(
        api.child.try_wait().unwrap().is_none(),
        "waits for the request in flight"
    );

    in_flight.write_all(b"\r\n").unwrap();
    let response = read_response(&mut in_flight, false).expect("answered in full");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, health_body());
    assert_eq!(response.header("connection"), Some("close"));

    let stopped = api.wait_for_log("stopped", Duration::from_secs(10));
    assert_eq!(stopped["signal"], "SIGINT");
    assert_eq!(stopped["drained"], true);
    assert!(api.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_second_sigint_stops_waiting_for_the_request_in_flight() {
    let mut api = Api::start(&[
        ("SHUTDOWN_TIMEOUT_SECS", KUBELET_DRAIN_DELAY),
        ("HEADER_READ_TIMEOUT_SECS", KUBELET_DRAIN_DELAY),
    ]);
    let mut stalled = api.connect();
    stalled.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    api.signal("INT");
    api.wait_for_log("stopping", Duration::from_secs(10));
    api.signal("INT");
    let stopped = api.wait_for_log("stopped", Duration::from_secs(10));
    assert_eq!(stopped["drained"], false);
    assert_eq!(stopped["dropped_connections"], 1);
    assert!(api.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_request_in_flight_at_sigterm_is_answered_and_new_connections_are_refused() {
    let mut api = Api::start(&[("SHUTDOWN_TIMEOUT_SECS", "10")]);
    let mut in_flight = api.connect();
    // Half a request: the connection is accepted and its head is on the way.
    in_flight
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    api.signal("TERM");
    api.wait_for_log("stopping", Duration::from_secs(5));
    // Well into the drain (the connections hear of it just after that line).
    std::thread::sleep(Duration::from_millis(200));

    assert!(
        TcpStream::connect(api.addr).is_err(),
        "no new connection while draining"
    );
    assert!(api.child.try_wait().unwrap().is_none(), "still draining");

    in_flight.write_all(b"\r\n").unwrap();
    let response = read_response(&mut in_flight, false).expect("answered in full");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, health_body());
    assert_eq!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    in_flight.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "then closed");

    let stopped = api.wait_for_log("stopped", Duration::from_secs(5));
    assert_eq!(stopped["drained"], true);
    assert!(api.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn a_stalled_client_cannot_hold_shutdown_past_the_drain_timeout() {
    let mut api = Api::start(&[
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
        ("HEADER_READ_TIMEOUT_SECS", "60"),
    ]);
    // Accepted, half a request, then silent: it would hold the drain for 60 s.
    let mut stalled = api.connect();
    stalled.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    api.signal("TERM");
    let stopped = api.wait_for_log("stopped", Duration::from_secs(5));
    let status = api.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert_eq!(stopped["drained"], false);
    assert_eq!(stopped["dropped_connections"], 1);
    assert_eq!(stopped["level"], "warn");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exited {took:?} after SIGTERM, drain timeout 1 s"
    );
}

#[test]
fn sigterm_under_keep_alive_load_answers_every_accepted_request_in_full() {
    const CLIENTS: usize = 8;
    let drain = Duration::from_secs(5);
    let mut api = Api::start(&[("SHUTDOWN_TIMEOUT_SECS", "5")]);
    let addr = api.addr;
    let answered = Arc::new(AtomicUsize::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    let answered_after_signal = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (answered, signalled, after, failures) = (
                answered.clone(),
                signalled.clone(),
                answered_after_signal.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                // Reconnect whenever the server closes; stop once it refuses.
                while Instant::now() < deadline {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        return;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    loop {
                        if stream
                            .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                            .is_err()
                        {
                            break; // closed between requests: nothing was accepted
                        }
                        match read_response(&mut stream, false) {
                            Ok(response) => {
                                if response.status != 200 || response.body != health_body() {
                                    failures.lock().unwrap().push(format!("{response:?}"));
                                }
                                answered.fetch_add(1, Ordering::Relaxed);
                                if signalled.load(Ordering::Relaxed) {
                                    after.fetch_add(1, Ordering::Relaxed);
                                }
                                if response.header("connection") == Some("close") {
                                    break;
                                }
                            }
                            Err(ReadEnd::ClosedBeforeResponse) => break,
                            Err(cut) => {
                                failures.lock().unwrap().push(format!("{cut:?}"));
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let warmup = Instant::now();
    while answered.load(Ordering::Relaxed) < 200 {
        assert!(warmup.elapsed() < Duration::from_secs(10), "no load");
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = answered.load(Ordering::Relaxed);
    signalled.store(true, Ordering::Relaxed);
    let at = Instant::now();
    api.signal("TERM");
    let status = api.wait_exit(drain + Duration::from_secs(2));
    let took = at.elapsed();
    for client in clients {
        client.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "cut or wrong answers: {failures:?}");
    assert!(status.success(), "{status}");
    assert!(took < drain, "exited {took:?} after SIGTERM");
    let stopped = api.wait_for_log("stopped", Duration::from_secs(1));
    assert_eq!(stopped["drained"], true);
    eprintln!(
        "{before} answered before SIGTERM, {} after it; exit {took:?} after SIGTERM",
        answered_after_signal.load(Ordering::Relaxed)
    );
}

// ---- abuse: limits, floods, memory, drain ----

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn past_the_connection_limit_clients_wait_unaccepted_and_are_served_when_room_frees() {
    let mut api = Api::start(&[
        ("MAX_CONNECTIONS", "20"),
        ("HEADER_READ_TIMEOUT_SECS", "30"),
    ]);
    // A well-behaved client, connected before the flood.
    let mut kept = api.connect();
    assert_eq!(get(&mut kept, "GET", "/health").status, 200);
    // 200 silent clients: 19 are accepted, the rest wait in the listen queue.
    let silent: Vec<TcpStream> = (0..200).map(|_| api.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(
            get(&mut kept, "GET", "/health").status,
            200,
            "served through the flood"
        );
    }
    let mut waiting = api.connect();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(waiting.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "not answered while the limit is reached"
    );
    let limit = api.wait_for_log(
        "at the connection limit: new clients wait unaccepted",
        Duration::from_secs(5),
    );
    assert_eq!(limit["max_connections"], 20);
    drop(silent);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answer = read_response(&mut waiting, false).expect("answered once room freed");
    assert_eq!(answer.status, 200);
    api.signal("TERM");
    api.wait_for_log("stopped", Duration::from_secs(10));
    let limit_lines = api
        .seen
        .iter()
        .filter(|l| l["msg"] == "at the connection limit: new clients wait unaccepted")
        .count();
    assert_eq!(limit_lines, 1, "one line, not one per waiting client");
}

#[test]
fn the_connection_limit_is_lowered_to_fit_the_open_file_limit() {
    // util-linux's prlimit lowers the limit for the one process it starts.
    let prlimit = Command::new("prlimit").arg("--version").output();
    assert!(
        prlimit.is_ok_and(|o| o.status.success()),
        "this test needs prlimit (util-linux): apt-get install util-linux"
    );
    let mut child = Command::new("prlimit")
        .args(["--nofile=200:200", API])
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        first["msg"],
        "connection limit lowered to fit the open-file limit"
    );
    assert_eq!(first["open_file_limit"], 200);
    assert_eq!(first["max_connections"], 136);
}

#[test]
fn a_client_that_pipelines_and_never_reads_is_closed_and_others_are_served() {
    let api = Api::start(&[("HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut hog = api.connect();
    hog.set_nonblocking(true).unwrap();
    let requests = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n".repeat(400);
    let mut sent = 0;
    // Bounded: as much as the sockets take, 16 MiB at most.
    while sent < 16 << 20 {
        match hog.write(&requests) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("closed before its buffers filled: {e}"),
        }
    }
    assert!(sent > 0);
    let mut kept = api.connect();
    for _ in 0..20 {
        assert_eq!(get(&mut kept, "GET", "/health").status, 200);
    }
    // Stuck on answers it does not read: no request completes, so within two
    // header timeouts it is closed (give a loaded machine room).
    std::thread::sleep(Duration::from_secs(3));
    // Reading would unblock it; a write sees the reset once it is closed.
    let waited = Instant::now();
    let closed = loop {
        match hog.write(b"G") {
            Err(e) if e.kind() != ErrorKind::WouldBlock => break true,
            _ if waited.elapsed() > Duration::from_secs(10) => break false,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    eprintln!(
        "sent {sent} bytes; closed: {closed}, {:?} after the 3 s",
        waited.elapsed()
    );
    assert!(closed, "a pipelining non-reader is closed");
    // (The kept connection idled past the header timeout meanwhile.)
    let mut fresh = api.connect();
    assert_eq!(
        get(&mut fresh, "GET", "/health").status,
        200,
        "still serving"
    );
}

#[test]
fn memory_freed_by_a_burst_of_connections_is_returned() {
    const BURST: usize = 2_000;
    let mut api = Api::start(&[]);
    let pid = api.child.id();
    let mut warm = api.connect();
    get(&mut warm, "GET", "/health");
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let idle = vm_rss_kib(pid);
    let mut burst: Vec<TcpStream> = (0..BURST).map(|_| api.connect()).collect();
    for stream in &mut burst {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
    }
    for stream in &mut burst {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(read_response(stream, false).unwrap().status, 200);
    }
    let peak = vm_rss_kib(pid);
    drop(burst);
    // The service looks every 5 s; allow a loaded machine three looks.
    let deadline = Instant::now() + Duration::from_secs(16);
    let mut now = peak;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = vm_rss_kib(pid);
        if now <= idle * 2 + 1024 {
            break;
        }
    }
    eprintln!("RSS idle {idle} KiB, after {BURST} connections {peak} KiB, then {now} KiB");
    // Loose on purpose: glibc alone kept ~10 KiB per connection (20 MB here).
    assert!(
        now <= idle * 2 + 1024,
        "RSS {now} KiB after the burst, idle {idle} KiB, peak {peak} KiB"
    );
    assert!(api.child.try_wait().unwrap().is_none());
    api.signal("TERM");
}

#[test]
fn no_host_or_two_hosts_is_a_400_on_the_wire() {
    let api = Api::start(&[]);
    for (request, error) in [
        ("GET /health HTTP/1.1\r\n\r\n", "no Host header"),
        (
            "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "more than one Host header",
        ),
    ] {
        let mut stream = api.connect();
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut stream, false).expect("an answer");
        assert_eq!(response.status, 400, "{request:?}");
        assert_eq!(response.body, format!(r#"{{"error":"{error}"}}"#));
        assert_eq!(response.header("connection"), Some("close"));
    }
}

#[test]
fn during_the_drain_delay_ready_is_503_health_is_200_and_every_answer_closes() {
    let mut api = Api::start(&[("DRAIN_DELAY_SECS", "2"), ("SHUTDOWN_TIMEOUT_SECS", "5")]);
    let mut before = api.connect();
    assert_eq!(get(&mut before, "GET", "/ready").status, 200);
    let signalled = Instant::now();
    api.signal("TERM");
    let stopping = api.wait_for_log("stopping", Duration::from_secs(5));
    assert_eq!(stopping["drain_delay_secs"], 2);
    // A new connection is still accepted and answered during the delay.
    let mut during = api.connect();
    let ready = get(&mut during, "GET", "/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains(r#""status":"draining""#),
        "{}",
        ready.body
    );
    assert_eq!(ready.header("connection"), Some("close"));
    let mut during = api.connect();
    let health = get(&mut during, "GET", "/health");
    assert_eq!(health.status, 200, "liveness holds while draining");
    assert_eq!(health.header("connection"), Some("close"));
    // The connection from before: its next answer closes it.
    let last = get(&mut before, "GET", "/health");
    assert_eq!(last.header("connection"), Some("close"));
    let status = api.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(1900),
        "served through the delay: exited {took:?} after SIGTERM"
    );
    let stopped = api.wait_for_log("stopped", Duration::from_secs(1));
    assert_eq!(stopped["drained"], true);
}

#[test]
fn sigterm_with_a_drain_delay_under_keep_alive_load_fails_no_request() {
    const CLIENTS: usize = 8;
    let mut api = Api::start(&[("DRAIN_DELAY_SECS", "2"), ("SHUTDOWN_TIMEOUT_SECS", "5")]);
    let addr = api.addr;
    let answered = Arc::new(AtomicUsize::new(0));
    let after_signal = Arc::new(AtomicUsize::new(0));
    let signalled = Arc::new(AtomicBool::new(false));
    // As a Kubernetes Service would: shortly after SIGTERM the endpoint is
    // removed and no new connection comes here; open ones keep going.
    let removed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (answered, after_signal, signalled, removed, failures) = (
                answered.clone(),
                after_signal.clone(),
                signalled.clone(),
                removed.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline && !removed.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        failures
                            .lock()
                            .unwrap()
                            .push("connect refused before the delay ended".into());
                        return;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    loop {
                        if let Err(e) =
                            stream.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                        {
                            failures.lock().unwrap().push(format!("send: {e}"));
                            return;
                        }
                        match read_response(&mut stream, false) {
                            Ok(response) => {
                                if response.status != 200 {
                                    failures.lock().unwrap().push(format!("{response:?}"));
                                }
                                answered.fetch_add(1, Ordering::Relaxed);
                                if signalled.load(Ordering::Relaxed) {
                                    after_signal.fetch_add(1, Ordering::Relaxed);
                                }
                                if response.header("connection") == Some("close") {
                                    break;
                                }
                            }
                            Err(end) => {
                                // A request sent on an open connection and not answered.
                                failures.lock().unwrap().push(format!("{end:?}"));
                                return;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let warmup = Instant::now();
    while answered.load(Ordering::Relaxed) < 200 {
        assert!(warmup.elapsed() < Duration::from_secs(10), "no load");
        std::thread::sleep(Duration::from_millis(5));
    }
    signalled.store(true, Ordering::Relaxed);
    api.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    removed.store(true, Ordering::Relaxed);
    let status = api.wait_exit(Duration::from_secs(12));
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(status.success(), "{status}");
    assert!(
        after_signal.load(Ordering::Relaxed) > 0,
        "served after SIGTERM"
    );
    let stopped = api.wait_for_log("stopped", Duration::from_secs(1));
    assert_eq!(stopped["drained"], true);
}

// ---- probes, floods, the end of accepting ----

/// The probe port's address, from the start line.
fn probe_addr(api: &Api) -> SocketAddr {
    let started = api
        .seen
        .iter()
        .find(|l| l["msg"] == "started")
        .expect("a start line");
    started["probe_addr"]
        .as_str()
        .expect("a probe_addr in the start line")
        .parse()
        .unwrap()
}

/// One request on a new connection, as the kubelet probes: its answer, or
/// why there was none within `limit`.
fn probe(addr: SocketAddr, path: &str, limit: Duration) -> Result<Response, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    read_response(&mut stream, false).map_err(|e| format!("{e:?}"))
}

/// Whether the server closed `stream` within `limit` (EOF or reset), rather
/// than keep it open.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn probes_on_their_own_port_are_answered_while_the_service_port_is_full() {
    let mut api = Api::start(&[
        ("PROBE_PORT", "0"),
        ("MAX_CONNECTIONS", "20"),
        ("MAX_ACTIVE_CONNECTIONS", "4"),
        ("LISTEN_BACKLOG", "8"),
        ("HEADER_READ_TIMEOUT_SECS", "30"),
        ("DRAIN_DELAY_SECS", "30"),
    ]);
    let probes = probe_addr(&api);
    assert_ne!(probes.port(), api.addr.port());
    // Every active slot taken by heads that never end, every connection
    // slot and the listen queue by silent clients.
    let mut flood: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut slow = api.connect();
            slow.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            slow
        })
        .collect();
    flood
        .extend((0..100).filter_map(|_| {
            TcpStream::connect_timeout(&api.addr, Duration::from_millis(100)).ok()
        }));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        probe(api.addr, "/health", Duration::from_millis(500)).is_err(),
        "the service port is full: a new client there is not answered"
    );
    for path in ["/health", "/ready", "/health"] {
        let answer =
            probe(probes, path, Duration::from_secs(5)).expect("answered on the probe port");
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
    // While draining: /ready says so there too, /health still passes.
    api.signal("TERM");
    api.wait_for_log("stopping", Duration::from_secs(5));
    let ready = probe(probes, "/ready", Duration::from_secs(5)).unwrap();
    assert_eq!(ready.status, 503);
    assert_eq!(
        probe(probes, "/health", Duration::from_secs(5))
            .unwrap()
            .status,
        200
    );
    drop(flood);
}

/// Each thread of `pid`: its name and nice value, from /proc/<pid>/task/*/stat
/// (nice is field 19, counted after the name in parentheses).
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let (head, tail) = stat.rsplit_once(')').unwrap();
            let name = head.split_once('(').unwrap().1.to_owned();
            let nice = tail.split_whitespace().nth(16).unwrap().parse().unwrap();
            (name, nice)
        })
        .collect()
}

#[test]
fn with_a_probe_port_every_thread_but_the_probe_thread_gives_way() {
    let api = Api::start(&[("PROBE_PORT", "0"), ("WORKERS", "2")]);
    let started = api.seen.iter().find(|l| l["msg"] == "started").unwrap();
    assert_eq!(started["worker_nice"], 10, "{started}");
    // A runtime thread gives way from its start hook, which may run just after
    // the start line: read until every thread has started (or 10 s passed).
    let wanted = |name: &str| if name == "probe" { 0 } else { 10 };
    let deadline = Instant::now() + Duration::from_secs(10);
    let nices = loop {
        let nices = thread_nices(api.child.id());
        let settled = nices.len() >= 4 && nices.iter().all(|(name, nice)| *nice == wanted(name));
        if settled || Instant::now() > deadline {
            break nices;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(nices.len() >= 4, "main, two workers, probe: {nices:?}");
    for (name, nice) in &nices {
        assert_eq!(*nice, wanted(name), "{name}: {nices:?}");
    }
    // Without a probe port nothing changes.
    let plain = Api::start(&[("WORKERS", "2")]);
    let started = plain.seen.iter().find(|l| l["msg"] == "started").unwrap();
    assert!(started.get("worker_nice").is_none(), "{started}");
    assert!(thread_nices(plain.child.id()).iter().all(|(_, n)| *n == 0));
}

#[test]
fn the_probe_port_makes_room_for_a_new_probe_and_floods_are_summed_up_in_the_log() {
    let mut api = Api::start(&[("PROBE_PORT", "0"), ("HEADER_READ_TIMEOUT_SECS", "1")]);
    let probes = probe_addr(&api);
    // More silent connections than the probe port serves: the oldest go.
    let mut silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(probes).unwrap())
        .collect();
    let answer = probe(probes, "/health", Duration::from_secs(5)).expect("a new probe is answered");
    assert_eq!(answer.status, 200);
    assert!(
        closed_within(&mut silent[0], Duration::from_millis(500)),
        "the oldest silent connection was closed for the newer ones"
    );
    assert!(
        !closed_within(&mut silent[39], Duration::from_millis(100)),
        "the newest stays until its time is up"
    );
    // On the service port: 3 silent clients and 2 that never finish a head,
    // all closed after the header read timeout.
    let _quiet: Vec<TcpStream> = (0..3).map(|_| api.connect()).collect();
    let _slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut slow = api.connect();
            slow.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
            slow
        })
        .collect();
    // One line per interval (10 s) sums it all up.
    let shed = api.wait_for_log("shed", Duration::from_secs(15));
    assert_eq!(shed["level"], "warn");
    assert_eq!(shed["interval_secs"], 10);
    assert_eq!(shed["closed_silent"], 3, "{shed}");
    assert_eq!(shed["closed_slow_head"], 2, "{shed}");
    assert!(shed["probe_evicted"].as_u64().unwrap() >= 9, "{shed}");
    assert!(shed["open_connections"].is_u64(), "{shed}");
}

#[test]
fn after_the_drain_delay_new_clients_are_refused_not_reset() {
    const CLIENTS: usize = 8;
    let mut api = Api::start(&[("DRAIN_DELAY_SECS", "1"), ("SHUTDOWN_TIMEOUT_SECS", "5")]);
    let addr = api.addr;
    let signalled = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    // Clients that keep coming after SIGTERM, as through a stale kube-proxy
    // rule: each a new connection and one request.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (signalled, answered) = (signalled.clone(), answered.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    {
                        Ok(stream) => stream,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                            return if signalled.load(Ordering::Relaxed) {
                                Ok(())
                            } else {
                                Err("refused before SIGTERM".into())
                            };
                        }
                        Err(e) => return Err(format!("connect: {e}")),
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    stream
                        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                        .map_err(|e| format!("send: {e}"))?;
                    match read_response(&mut stream, false) {
                        Ok(response) if response.status == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => return Err(format!("{response:?}")),
                        Err(end) => return Err(format!("accepted, then {end:?}")),
                    }
                }
                Err("never refused".into())
            })
        })
        .collect();
    let warmup = Instant::now();
    while answered.load(Ordering::Relaxed) < 100 {
        assert!(warmup.elapsed() < Duration::from_secs(10), "no load");
        std::thread::sleep(Duration::from_millis(5));
    }
    signalled.store(true, Ordering::Relaxed);
    api.signal("TERM");
    let failures: Vec<String> = clients
        .into_iter()
        .filter_map(|client| client.join().unwrap().err())
        .collect();
    assert!(
        failures.is_empty(),
        "clients not refused cleanly: {failures:?}"
    );
    assert!(api.wait_exit(Duration::from_secs(10)).success());
}
