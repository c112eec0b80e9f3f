//! `api`: reads its configuration, serves the router from `lib.rs`, and shuts
//! down gracefully on SIGTERM or SIGINT. `api --version` and `api healthcheck`
//! serve a container that has no shell.

mod healthcheck;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use api::config::{self, Config};
use api::log::{self, Level, Line};
use api::{State, VERSION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

fn usage() -> String {
    format!(
        "Usage: api [--version | healthcheck [--url URL [--expect-version VERSION|SELF]] | --help]

  api               serve HTTP: GET / and GET /health answer JSON with the version
  api --version     print the version compiled in ({VERSION}) and exit
  api healthcheck   GET http://127.0.0.1:$PORT/health: exit 0 on 200, 1 otherwise
  api healthcheck --url URL [--expect-version VERSION|SELF]
                    GET URL/health: 200, with that version in its body when asked (SELF:
                    the version compiled into this binary, {VERSION}); then GET URL/: 200.
                    Exit 0 when both pass, 1 otherwise. Each request has a 5 s deadline.
                    The analysis Job of rollout.yaml runs the preview's own image with
                    --url http://api-preview/ --expect-version SELF.

Environment:
{}

The limits' defaults fit the 128 MiB memory limit of rollout.yaml (measured with
`cargo xtask bench --abuse`): the worst mix they admit, 2048 active connections that
pipeline and never read beside 6144 silent ones, takes about 113 MiB.

GET /health answers 200 while the process runs (for a liveness probe); GET /ready
answers 200, and 503 once shutdown has begun (for a readiness probe).

SIGTERM or SIGINT: for DRAIN_DELAY_SECS keep serving, /ready answering 503 and every
answer closing its connection; then stop accepting, let in-flight requests finish
within SHUTDOWN_TIMEOUT_SECS (idle connections close at once), exit 0.
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
        [Some("healthcheck"), rest @ ..] => match healthcheck::parse(rest) {
            Ok(check) => healthcheck::run(check),
            Err(problem) => unexpected_arguments(&problem),
        },
        [Some("--help" | "-h")] => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        _ => unexpected_arguments("not a mode of api"),
    }
}

fn unexpected_arguments(problem: &str) -> ExitCode {
    let shown: Vec<_> = std::env::args_os()
        .skip(1)
        .map(|a| format!("{a:?}"))
        .collect();
    eprint!(
        "error: unexpected arguments: {} ({problem})\n\n{}",
        shown.join(" "),
        usage()
    );
    ExitCode::from(2)
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

/// Whether shutdown has begun: read by every request (one relaxed load).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// How long one accept failure pauses accepting at first, and at most; and
/// how often failures are summed up in one log line while they go on.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept free of connections: the listener, stdio, the
/// runtime's own (epoll, eventfd, signals) and room to spare.
const RESERVED_FDS: usize = 64;

/// What every connection task shares.
struct Shared {
    http: http1::Builder,
    /// One permit per connection served: taken before accept, so that past the
    /// limit new clients wait in the kernel's listen queue, costing us nothing.
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// One permit per connection that has sent bytes and so holds hyper's buffers.
    active: Arc<Semaphore>,
    header_read_timeout: Duration,
    /// Pipelined requests take turns here, one per worker at a time.
    pipelined: Arc<Semaphore>,
    /// Set once, when draining ends: connections finish their request and close.
    stop: watch::Receiver<bool>,
    /// The most connections open at once since memory was last returned.
    peak_open: AtomicUsize,
}

/// How often the service looks whether a burst of connections has ended.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// A burst worth returning memory after: this many connections open at once.
const TRIM_AFTER_PEAK: usize = 64;

/// Returns the memory a burst of connections freed to the system, once the
/// burst is over (open connections down to half their peak or less).
///
/// glibc's malloc gives back only the top of its heaps on free: after 5,000
/// connections RSS stayed at 88-102 MB where idle is 2-3 MB, and
/// `malloc_trim(0)` brought it back to 3-4 MB. mimalloc, measured instead,
/// kept it too (it purges on a later allocation, and an idle service makes
/// none) and starts at 7 MB.
async fn return_freed_memory(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let open = shared.max_connections - shared.connections.available_permits();
        let peak = shared.peak_open.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER_PEAK && open <= peak / 2 {
            shared.peak_open.store(open, Ordering::Relaxed);
            trim::malloc_trim();
        }
    }
}

/// The one call into C: glibc's `malloc_trim`, which has no safe binding in
/// std. It takes a number and touches only malloc's own state.
#[allow(unsafe_code)]
mod trim {
    unsafe extern "C" {
        #[link_name = "malloc_trim"]
        fn c_malloc_trim(pad: usize) -> i32;
    }

    /// Gives every free page of every malloc arena back to the system.
    pub fn malloc_trim() {
        // SAFETY: malloc_trim(3) takes a byte count, may be called at any
        // time from any thread, and only releases memory malloc holds free.
        unsafe {
            c_malloc_trim(0);
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("listen for SIGTERM: {e}"))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| format!("listen for SIGINT: {e}"))?;
    let listener = listen(&config).map_err(|e| format!("bind {}: {e}", config.addr()))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("address of the bound socket: {e}"))?;

    let mut max_connections = config.max_connections;
    if let Some(fds) = open_file_limit()
        && fds < max_connections + RESERVED_FDS
    {
        // Past the open-file limit accept fails (EMFILE) instead of waiting.
        max_connections = fds.saturating_sub(RESERVED_FDS).max(1);
        Line::new(
            Level::Warn,
            "connection limit lowered to fit the open-file limit",
        )
        .num("max_connections", max_connections as u64)
        .num("asked", config.max_connections as u64)
        .num("open_file_limit", fds as u64)
        .emit();
    }

    let mut http = http1::Builder::new();
    // The header read timeout is `close_when_idle`, not hyper's: hyper's allocates and
    // arms a timer for every request, 17% of a request's user-space instructions.
    http.header_read_timeout(None);
    // Bounds what a client that pipelines requests and never reads can make us
    // buffer: the read buffer, and the answers queued behind an unread one.
    http.max_buf_size(config.max_head_bytes);
    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared {
        http,
        connections: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        active: Arc::new(Semaphore::new(config.max_active_connections)),
        header_read_timeout: config.header_read_timeout,
        pipelined: Arc::new(Semaphore::new(config.workers)),
        stop,
        peak_open: AtomicUsize::new(0),
    });
    tokio::spawn(return_freed_memory(Arc::clone(&shared)));

    Line::new(Level::Info, "started")
        .str("version", VERSION)
        .str("addr", &local.to_string())
        .num("workers", config.workers as u64)
        .str("log_level", config.log_level.as_str())
        .num("max_connections", max_connections as u64)
        .num(
            "max_active_connections",
            config.max_active_connections as u64,
        )
        .num("drain_delay_secs", config.drain_delay.as_secs())
        .num("shutdown_timeout_secs", config.shutdown_timeout.as_secs())
        .num(
            "header_read_timeout_secs",
            config.header_read_timeout.as_secs(),
        )
        .emit();

    let mut acceptor = Acceptor::default();
    let signal = acceptor
        .serve_until(&listener, &shared, async {
            tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            }
        })
        .await;

    // Out of rotation: /ready says 503 and every answer closes its connection,
    // while the endpoints that still send clients here are being removed.
    DRAINING.store(true, Ordering::Relaxed);
    let open = |shared: &Shared| shared.max_connections - shared.connections.available_permits();
    Line::new(Level::Info, "stopping")
        .str("signal", signal)
        .num("open_connections", open(&shared) as u64)
        .num("drain_delay_secs", config.drain_delay.as_secs())
        .emit();
    let started = Instant::now();
    // A second signal ends the delay early.
    acceptor
        .serve_until(&listener, &shared, async {
            tokio::select! {
                () = tokio::time::sleep(config.drain_delay) => {}
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        })
        .await;

    // Stop accepting: new connections are refused from here on. Open ones
    // finish the request they are in (answered with Connection: close); idle
    // ones are closed now.
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(shared.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        config.shutdown_timeout,
        shared.connections.acquire_many(all),
    )
    .await
    .is_ok();
    let left = open(&shared);
    Line::new(if drained { Level::Info } else { Level::Warn }, "stopped")
        .str("signal", signal)
        .bool("drained", drained)
        .num("dropped_connections", if drained { 0 } else { left as u64 })
        .num("drain_ms", started.elapsed().as_millis() as u64)
        .emit();
    Ok(())
}

/// The listening socket, with the backlog and the per-connection kernel
/// buffers of the configuration (accepted sockets inherit them).
fn listen(config: &Config) -> std::io::Result<TcpListener> {
    let addr = config.addr();
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(config.socket_buffer_bytes)?;
    socket.set_recv_buffer_size(config.socket_buffer_bytes)?;
    socket.bind(addr)?;
    socket.listen(config.listen_backlog)
}

/// The soft limit on open files, from /proc/self/limits.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Accepts connections, and keeps the log readable when that fails or when
/// the connection limit is reached: one line when it starts, then one summary
/// line every [`SUMMARY_EVERY`] while it goes on.
#[derive(Default)]
struct Acceptor {
    backoff: Duration,
    failures: u64,
    last_error: String,
    failures_logged_at: Option<Instant>,
    full_logged_at: Option<Instant>,
}

impl Acceptor {
    async fn serve_until<T>(
        &mut self,
        listener: &TcpListener,
        shared: &Arc<Shared>,
        until: impl Future<Output = T>,
    ) -> T {
        let mut until = std::pin::pin!(until);
        loop {
            if shared.connections.available_permits() == 0 {
                self.at_limit(shared.max_connections);
            }
            let permit = tokio::select! {
                biased;
                done = &mut until => return done,
                permit = Arc::clone(&shared.connections).acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            };
            let accepted = tokio::select! {
                biased;
                done = &mut until => return done,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.recovered();
                    let open = shared.max_connections - shared.connections.available_permits();
                    shared.peak_open.fetch_max(open, Ordering::Relaxed);
                    tokio::spawn(serve_connection(stream, peer, Arc::clone(shared), permit));
                }
                Err(err) => {
                    drop(permit);
                    self.failed(&err);
                    // Out of file descriptors or memory, most likely: back off,
                    // keep serving the connections already open.
                    tokio::select! {
                        biased;
                        done = &mut until => return done,
                        () = tokio::time::sleep(self.backoff) => {}
                    }
                }
            }
        }
    }

    fn failed(&mut self, err: &std::io::Error) {
        self.failures += 1;
        self.last_error = err.to_string();
        self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        let due = self
            .failures_logged_at
            .is_none_or(|at| at.elapsed() >= SUMMARY_EVERY);
        if due {
            Line::new(Level::Warn, "accept failing")
                .str("error", &self.last_error)
                .num("failures", self.failures)
                .num("backoff_ms", self.backoff.as_millis() as u64)
                .emit();
            self.failures_logged_at = Some(Instant::now());
            self.failures = 0;
        }
    }

    fn recovered(&mut self) {
        self.backoff = Duration::ZERO;
        if self.failures_logged_at.take().is_some() {
            Line::new(Level::Info, "accept recovered")
                .num("failures", self.failures)
                .str("last_error", &self.last_error)
                .emit();
            self.failures = 0;
        }
    }

    fn at_limit(&mut self, max: usize) {
        if self
            .full_logged_at
            .is_none_or(|at| at.elapsed() >= SUMMARY_EVERY)
        {
            Line::new(
                Level::Warn,
                "at the connection limit: new clients wait unaccepted",
            )
            .num("max_connections", max as u64)
            .emit();
            self.full_logged_at = Some(Instant::now());
        }
    }
}

/// Serves one accepted connection, holding its permit until it closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let error = serve_stream(stream, peer, &shared).await.err();
    if let Some(error) = error
        && log::enabled(Level::Debug)
    {
        Line::new(Level::Debug, "connection error")
            .str("peer", &peer.to_string())
            .str("error", &error)
            .emit();
    }
    drop(permit);
}

async fn serve_stream(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), String> {
    let period = shared.header_read_timeout;
    let mut stop = shared.stop.clone();
    let closed = || format!("no request head within {}s: closed", period.as_secs());
    let mut first = [0u8; 1];
    // Until its first byte, a connection is a socket and a timer: hyper's
    // buffers (16 KiB) are made only for a client that sends something.
    tokio::select! {
        biased;
        _ = stop.changed() => return Ok(()),
        // tokio may report a new socket readable before it is (a false
        // positive its docs allow): peek waits until a byte is really there.
        readable = tokio::time::timeout(period, stream.peek(&mut first)) => match readable {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(closed()),
        },
    }
    let _active = tokio::select! {
        biased;
        _ = stop.changed() => return Ok(()),
        permit = tokio::time::timeout(period, shared.active.acquire()) => match permit {
            Ok(permit) => permit.expect("the active semaphore is never closed"),
            Err(_) => return Err(closed()),
        },
    };
    // Small responses: send each at once rather than wait for an ACK.
    let _ = stream.set_nodelay(true);
    let requests = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let reads_at_last_request = AtomicU64::new(0);
    let conn = shared.http.serve_connection(
        TokioIo::new(CountReads {
            stream,
            reads: &reads,
        }),
        service_fn(|req| {
            // hyper calls the service as soon as a request's head is read.
            requests.fetch_add(1, Ordering::Relaxed);
            // No read since the last request: this one was pipelined behind it.
            let now = reads.load(Ordering::Relaxed);
            let pipelined = reads_at_last_request.swap(now, Ordering::Relaxed) == now;
            respond(req, peer, pipelined.then_some(&*shared.pipelined))
        }),
    );
    // Boxed, so that a connection still waiting for its first byte is a small task.
    let conn = Box::pin(conn);
    match close_when_idle(conn, &requests, period, stop, |conn| {
        conn.as_mut().graceful_shutdown()
    })
    .await
    {
        Some(Ok(())) => Ok(()),
        Some(Err(err)) => Err(err.to_string()),
        None => Err(closed()),
    }
}

async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    pipelined: Option<&Semaphore>,
) -> Result<api::Response, Infallible> {
    // A pipelined request waits its turn for one of few permits, off the run
    // queue, and with it yields once: the tasks already queued (a client that
    // does not pipeline, the I/O driver) run first. A thousand clients that
    // pipeline without reading then cannot crowd out the others. Measured
    // (1,000 such clients, /health p99 of a keep-alive client): 64 ms with
    // neither, 50 ms with the turns alone, 0.5-1.1 ms with both, for the same
    // CPU time spent on the pipelined requests.
    let _turn = match pipelined {
        Some(turns) => {
            let turn = turns.acquire().await;
            tokio::task::yield_now().await;
            Some(turn)
        }
        None => None,
    };
    let state = if DRAINING.load(Ordering::Relaxed) {
        State::Draining
    } else {
        State::Serving
    };
    let response = api::handle(&req, state);
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
/// When `stop` changes, `shutdown` asks the connection to finish the request
/// it is in and close (at once, if it is idle).
///
/// This is the header read timeout. A client that sends nothing, or trickles
/// a head too slowly, is closed `period` after it connected or at most two
/// periods after its last request; an idle keep-alive connection likewise,
/// and one stuck because its client does not read the answers.
/// One timer per connection, re-armed only when it fires, so a request costs
/// one relaxed increment.
async fn close_when_idle<F: Future + Unpin>(
    mut conn: F,
    requests: &AtomicU64,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    shutdown: impl Fn(&mut F),
) -> Option<F::Output> {
    let mut timer = std::pin::pin!(tokio::time::sleep(period));
    let mut seen = 0;
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            output = &mut conn => return Some(output),
            _ = stop.changed(), if !stopping => {
                stopping = true;
                shutdown(&mut conn);
            }
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

/// A connection's socket, counting the reads that brought bytes: a request
/// the service sees with no read since the previous one was pipelined.
struct CountReads<'a> {
    stream: TcpStream,
    reads: &'a AtomicU64,
}

impl tokio::io::AsyncRead for CountReads<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for CountReads<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
