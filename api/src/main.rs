//! `api`: reads its configuration, serves the router from `lib.rs`, and shuts
//! down gracefully on SIGTERM or SIGINT. `api --version` and `api healthcheck`
//! serve a container that has no shell.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::VERSION;
use api::config::{self, Config};
use api::log::{self, Level, Line};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, body::Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

fn usage() -> String {
    format!(
        "Usage: api [--version | healthcheck | --help]

  api               serve HTTP: GET / and GET /health answer JSON with the version
  api --version     print the version compiled in ({VERSION}) and exit
  api healthcheck   GET http://127.0.0.1:$PORT/health: exit 0 on 200, 1 otherwise

Environment:
{}

SIGTERM or SIGINT: stop accepting, let in-flight requests finish, exit 0.
",
        config::ENV_HELP
    )
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let args: Vec<_> = args.iter().map(|a| a.to_str()).collect();
    match args.as_slice() {
        [] => serve(),
        [Some("--version" | "-V")] => {
            println!("{VERSION}");
            ExitCode::SUCCESS
        }
        [Some("healthcheck")] => healthcheck(),
        [Some("--help" | "-h")] => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        _ => {
            let shown: Vec<_> = std::env::args_os()
                .skip(1)
                .map(|a| format!("{a:?}"))
                .collect();
            eprint!(
                "error: unexpected arguments: {}\n\n{}",
                shown.join(" "),
                usage()
            );
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    log::set_level(config.log_level);

    let runtime = match config.workers {
        // One thread (the default on one CPU): no work-stealing, no cross-thread
        // wakeups. Measured: 5% fewer instructions per request than a multi-thread
        // runtime with one worker, and a lower p99 than two workers on one CPU.
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
    .enable_io()
    .enable_time()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    // Returning drops the runtime, and with it whatever a timed-out drain left behind.
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("listen for SIGTERM: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("listen for SIGINT: {e}"))?;
    let listener = TcpListener::bind(config.addr())
        .await
        .map_err(|e| format!("bind {}: {e}", config.addr()))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("address of the bound socket: {e}"))?;

    let mut http = http1::Builder::new();
    // The header read timeout is `close_when_idle`, not hyper's: hyper's allocates and
    // arms a timer for every request, 17% of a request's user-space instructions.
    http.header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));

    Line::new(Level::Info, "started")
        .str("version", VERSION)
        .str("addr", &local.to_string())
        .num("workers", config.workers as u64)
        .str("log_level", config.log_level.as_str())
        .num("shutdown_timeout_secs", config.shutdown_timeout.as_secs())
        .num(
            "header_read_timeout_secs",
            config.header_read_timeout.as_secs(),
        )
        .emit();

    let signal = loop {
        tokio::select! {
            biased;
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses: send each at once rather than wait for an ACK.
                    let _ = stream.set_nodelay(true);
                    let requests = Arc::new(AtomicU64::new(0));
                    let counted = Arc::clone(&requests);
                    let conn = http.serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| {
                            // hyper calls the service as soon as a request's head is read.
                            counted.fetch_add(1, Ordering::Relaxed);
                            respond(req, peer)
                        }),
                    );
                    let conn = graceful.watch(conn);
                    let open = OpenConnection::new(&open);
                    let period = config.header_read_timeout;
                    tokio::spawn(async move {
                        let error = match close_when_idle(conn, &requests, period).await {
                            Some(Ok(())) => None,
                            Some(Err(err)) => Some(err.to_string()),
                            None => Some(format!(
                                "no request head within {}s: closed",
                                period.as_secs()
                            )),
                        };
                        if let Some(error) = error
                            && log::enabled(Level::Debug)
                        {
                            Line::new(Level::Debug, "connection error")
                                .str("peer", &peer.to_string())
                                .str("error", &error)
                                .emit();
                        }
                        drop(open);
                    });
                }
                Err(err) => {
                    // Out of file descriptors, most likely: back off, keep serving the rest.
                    Line::new(Level::Warn, "accept failed").str("error", &err.to_string()).emit();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };

    // Stop accepting: new connections are refused from here on.
    drop(listener);
    let draining = open.load(Ordering::Relaxed);
    Line::new(Level::Info, "stopping")
        .str("signal", signal)
        .num("open_connections", draining as u64)
        .emit();
    let started = Instant::now();
    let drained = tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_ok();
    let left = open.load(Ordering::Relaxed);
    Line::new(if drained { Level::Info } else { Level::Warn }, "stopped")
        .str("signal", signal)
        .bool("drained", drained)
        .num("dropped_connections", if drained { 0 } else { left as u64 })
        .num("drain_ms", started.elapsed().as_millis() as u64)
        .emit();
    Ok(())
}

async fn respond(req: Request<Incoming>, peer: SocketAddr) -> Result<api::Response, Infallible> {
    let response = api::handle(&req);
    if log::enabled(Level::Debug) {
        Line::new(Level::Debug, "request")
            .str("method", req.method().as_str())
            .str("path", req.uri().path())
            .num("status", u64::from(response.status().as_u16()))
            .str("peer", &peer.to_string())
            .emit();
    }
    Ok(response)
}

/// Runs a connection until it ends, or until a whole `period` passes in which
/// it completes no request head (`requests`, counted by the service, did not
/// move): then it is dropped, which closes it, and the result is `None`.
///
/// This is the header read timeout. A client that sends nothing, or trickles
/// a head too slowly, is closed `period` after it connected or at most two
/// periods after its last request; an idle keep-alive connection likewise.
/// One timer per connection, re-armed only when it fires, so a request costs
/// one relaxed increment.
async fn close_when_idle<F: Future>(
    conn: F,
    requests: &AtomicU64,
    period: Duration,
) -> Option<F::Output> {
    let mut conn = std::pin::pin!(conn);
    let mut timer = std::pin::pin!(tokio::time::sleep(period));
    let mut seen = 0;
    loop {
        tokio::select! {
            biased;
            output = &mut conn => return Some(output),
            () = &mut timer => {
                let now = requests.load(Ordering::Relaxed);
                if now == seen {
                    return None;
                }
                seen = now;
                timer.as_mut().reset(tokio::time::Instant::now() + period);
            }
        }
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(count: &Arc<AtomicUsize>) -> OpenConnection {
        count.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(count))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `api healthcheck`: a Docker HEALTHCHECK for an image with no shell and no curl.
fn healthcheck() -> ExitCode {
    let addr = match config::healthcheck_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match check(addr, Duration::from_secs(3)) {
        Ok(()) => {
            println!("healthy: http://{addr}/health answered 200");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: unhealthy: http://{addr}/health: {err}");
            ExitCode::FAILURE
        }
    }
}

fn check(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    // One write: a server that answers early must not find half a request.
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: api-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; it is the first line of the answer.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
        if head.len() > 8192 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default();
    match status_line.split(' ').nth(1) {
        Some("200") if status_line.starts_with("HTTP/1.") => Ok(()),
        Some(code) if status_line.starts_with("HTTP/1.") => Err(format!("answered {code}")),
        _ => Err(format!("not an HTTP answer: {status_line:?}")),
    }
}
