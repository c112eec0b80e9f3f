//! The probe listener (`PROBE_PORT`): the kubelet's liveness and readiness
//! probes get a port, a thread and a connection budget of their own, so that
//! no flood of the service port (connection limits full, a listen queue of
//! thousands, every CPU busy) stands between a probe and its answer.
//!
//! A probe opens a connection, sends one request and reads one answer, so a
//! connection here serves one request and lives at most [`PROBE_LIFETIME`].
//! When all [`PROBE_CONNECTIONS`] are taken, the oldest is closed for the new
//! one: whoever floods this port too cannot keep a fresh probe out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::State;
use api::log::{Level, Line};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::server::DRAINING;
use crate::shed::{SHED, What};

/// Connections served at once on the probe port; past it the oldest is closed.
pub const PROBE_CONNECTIONS: usize = 32;
/// How long a probe connection may take, from accept to its answer sent: a
/// kubelet's probe gives up sooner (timeoutSeconds, 1 s by default).
pub const PROBE_LIFETIME: Duration = Duration::from_secs(2);

/// Binds the probe port now, so that a port in use is an error before the
/// service starts; serving starts with [`spawn`].
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the probe port on a thread of its own (a one-thread runtime) until
/// the process exits: the kernel schedules it apart from the service's
/// workers, so a busy service does not queue the probes behind its requests.
pub fn spawn(listener: std::net::TcpListener) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || runtime.block_on(serve(listener)))?;
    Ok(())
}

async fn serve(listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            Line::new(Level::Error, "probe listener failed")
                .str("error", &err.to_string())
                .emit();
            return;
        }
    };
    let mut http = http1::Builder::new();
    http.keep_alive(false);
    http.header_read_timeout(None);
    let mut open: VecDeque<AbortHandle> = VecDeque::with_capacity(PROBE_CONNECTIONS);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, most likely: the service's own
                // listener says so; try again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        open.retain(|task| !task.is_finished());
        if open.len() >= PROBE_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
            SHED.count(What::ProbeEvicted);
        }
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(|req| async move {
                let state = if DRAINING.load(Ordering::Relaxed) {
                    State::Draining
                } else {
                    State::Serving
                };
                Ok::<_, Infallible>(api::handle(&req, state))
            }),
        );
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(PROBE_LIFETIME, conn).await;
        });
        open.push_back(task.abort_handle());
    }
}
