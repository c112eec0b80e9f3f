//! The service port: the accept loop and its limits, one task per
//! connection with its header read timeout, and the end of accepting after
//! the drain delay.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use api::State;
use api::config::Config;
use api::log::{self, Level, Line};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::shed::{SHED, What};

/// Whether shutdown has begun: read by every request (one relaxed load).
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// How long one accept failure pauses accepting at first, and at most; and
/// how often failures are summed up in one log line while they go on.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept free of connections: the listener, stdio, the
/// runtime's own (epoll, eventfd, signals) and room to spare; the probe
/// port's are kept on top of these.
pub const RESERVED_FDS: usize = 64;

/// What every connection task shares.
pub struct Shared {
    http: http1::Builder,
    /// One permit per connection served: taken before accept, so that past the
    /// limit new clients wait in the kernel's listen queue, costing us nothing.
    pub connections: Arc<Semaphore>,
    pub max_connections: usize,
    /// One permit per connection that has sent bytes and so holds hyper's buffers.
    active: Arc<Semaphore>,
    max_active: usize,
    header_read_timeout: Duration,
    /// Pipelined requests take turns here, one per worker at a time.
    pipelined: Arc<Semaphore>,
    /// Set once, when draining ends: connections finish their request and close.
    stop: watch::Receiver<bool>,
    /// The most connections open at once since memory was last returned.
    pub peak_open: AtomicUsize,
}

impl Shared {
    pub fn new(config: &Config, max_connections: usize, stop: watch::Receiver<bool>) -> Shared {
        let mut http = http1::Builder::new();
        // The header read timeout is `close_when_idle`, not hyper's: hyper's allocates and
        // arms a timer for every request, 17% of a request's user-space instructions.
        http.header_read_timeout(None);
        // Bounds what a client that pipelines requests and never reads can make us
        // buffer: the read buffer, and the answers queued behind an unread one.
        http.max_buf_size(config.max_head_bytes);
        Shared {
            http,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            active: Arc::new(Semaphore::new(config.max_active_connections)),
            max_active: config.max_active_connections,
            header_read_timeout: config.header_read_timeout,
            pipelined: Arc::new(Semaphore::new(config.workers)),
            stop,
            peak_open: AtomicUsize::new(0),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// Of those, the ones holding an active slot.
    pub fn active(&self) -> usize {
        self.max_active - self.active.available_permits()
    }
}

/// The listening socket, with the backlog and the per-connection kernel
/// buffers of the configuration (accepted sockets inherit them).
pub fn listen(config: &Config) -> std::io::Result<TcpListener> {
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
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long the end of accepting may take: the listen queue emptied, our
/// own connection into it made.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Stops accepting so that new clients are refused, not reset mid-request.
///
/// Closing a listener resets the connections in its listen queue, whose
/// clients may have sent their request already. So first the queue is
/// shrunk to one (listen again with a backlog of 0: the kernel then drops
/// new handshakes, and the client retries its SYN), what is queued is
/// accepted and served, and one connection of our own takes the last place:
/// while it waits there, every new handshake is dropped. Closing then resets
/// only that one; the clients whose SYN was dropped are refused on their
/// retry. What the kernel still lets through is a handshake that completes
/// in the microseconds between the last accept and our own connection.
pub async fn close_listener(listener: TcpListener, shared: &Arc<Shared>) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let Ok(listener) = relisten(listener, 0) else {
        // Could not shrink the queue: close it as it is.
        return;
    };
    let started = Instant::now();
    let target = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
        }
        _ => local,
    };
    while started.elapsed() < CLOSE_WITHIN {
        accept_queued(&listener, shared);
        // On this host a handshake takes microseconds; none within this
        // means the queue's one place was taken again: accept and retry.
        let ours =
            tokio::time::timeout(Duration::from_millis(20), TcpStream::connect(target)).await;
        if let Ok(Ok(ours)) = ours {
            drop(listener);
            drop(ours);
            return;
        }
    }
}

/// The listener, listening again with another backlog (Linux applies a new
/// backlog to a socket that already listens).
fn relisten(listener: TcpListener, backlog: u32) -> std::io::Result<TcpListener> {
    let fd = std::os::fd::OwnedFd::from(listener.into_std()?);
    // A listening socket is a TCP socket; tokio takes one only as a stream.
    TcpSocket::from_std_stream(std::net::TcpStream::from(fd)).listen(backlog)
}

/// Accepts what the listen queue holds now, and serves it.
fn accept_queued(listener: &TcpListener, shared: &Arc<Shared>) {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    while let Poll::Ready(Ok((stream, peer))) = listener.poll_accept(&mut cx) {
        // Past the limit it is closed: no worse than before, when all of the
        // queue was reset.
        if let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() {
            tokio::spawn(serve_connection(stream, peer, Arc::clone(shared), permit));
        }
    }
}

/// Accepts connections, and keeps the log readable when that fails or when
/// the connection limit is reached: one line when it starts, then one summary
/// line every [`SUMMARY_EVERY`] while it goes on.
#[derive(Default)]
pub struct Acceptor {
    backoff: Duration,
    failures: u64,
    last_error: String,
    failures_logged_at: Option<Instant>,
    full_logged_at: Option<Instant>,
}

impl Acceptor {
    pub async fn serve_until<T>(
        &mut self,
        listener: &TcpListener,
        shared: &Arc<Shared>,
        until: impl Future<Output = T>,
    ) -> T {
        let mut until = std::pin::pin!(until);
        loop {
            let full = (shared.connections.available_permits() == 0).then(Instant::now);
            if full.is_some() {
                self.at_limit(shared.max_connections);
            }
            let permit = tokio::select! {
                biased;
                done = &mut until => return done,
                permit = Arc::clone(&shared.connections).acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            };
            if let Some(since) = full {
                SHED.paused_at_limit(since.elapsed());
            }
            let accepted = tokio::select! {
                biased;
                done = &mut until => return done,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.recovered();
                    shared.peak_open.fetch_max(shared.open(), Ordering::Relaxed);
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
    // A request already there is served even once stopping: closing with it
    // unread would reset the connection.
    tokio::select! {
        biased;
        // tokio may report a new socket readable before it is (a false
        // positive its docs allow): peek waits until a byte is really there.
        readable = tokio::time::timeout(period, stream.peek(&mut first)) => match readable {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => {
                SHED.count(What::Silent);
                return Err(closed());
            }
        },
        _ = stop.changed() => return Ok(()),
    }
    let _active = match shared.active.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            SHED.count(What::WaitedForActive);
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                permit = tokio::time::timeout(period, shared.active.acquire()) => match permit {
                    Ok(permit) => permit.expect("the active semaphore is never closed"),
                    Err(_) => {
                        SHED.count(What::NoActiveSlot);
                        return Err(closed());
                    }
                },
            }
        }
    };
    // Small responses: send each at once rather than wait for an ACK.
    let _ = stream.set_nodelay(true);
    let requests = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let reads_at_last_request = AtomicU64::new(0);
    let write_blocked = AtomicBool::new(false);
    let conn = shared.http.serve_connection(
        TokioIo::new(CountReads {
            stream,
            reads: &reads,
            write_blocked: &write_blocked,
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
        None => {
            if write_blocked.load(Ordering::Relaxed) {
                SHED.count(What::NotReading);
            } else if requests.load(Ordering::Relaxed) == 0 {
                SHED.count(What::SlowHead);
            }
            Err(closed())
        }
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
/// it is in and close (at once, if it is idle; hyper counts a connection that
/// has not read its first request yet as busy, so that request is answered).
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

/// A connection's socket, counting the reads that brought bytes (a request
/// the service sees with no read since the previous one was pipelined), and
/// saying whether its last write found the socket full (a client that does
/// not read its answers).
struct CountReads<'a> {
    stream: TcpStream,
    reads: &'a AtomicU64,
    write_blocked: &'a AtomicBool,
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
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
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
