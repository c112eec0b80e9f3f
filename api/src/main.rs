//! `api`: reads its configuration, serves the router from `lib.rs`, and shuts
//! down gracefully on SIGTERM or SIGINT. `api --version` and `api healthcheck`
//! serve a container that has no shell.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use api::VERSION;
use api::config::{self, Config};
use api::log::{self, Level, Line};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use server::{Acceptor, DRAINING, Shared};

mod healthcheck;
mod memory;
mod niceness;
mod probe;
mod server;
mod shed;

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

SIGTERM (the kubelet's): for DRAIN_DELAY_SECS keep serving, /ready answering 503 and
every answer closing its connection; then stop accepting, let in-flight requests finish
within SHUTDOWN_TIMEOUT_SECS (idle connections close at once), exit 0.
SIGINT (Ctrl-C, a person): the same without the drain delay, so it stops at once when
nothing is in flight; a second SIGINT stops waiting for requests in flight.
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

    let mut builder = match config.workers {
        // One thread (the default on one CPU): no work-stealing, no cross-thread
        // wakeups. Measured: 5% fewer instructions per request than a multi-thread
        // runtime with one worker, and a lower p99 than two workers on one CPU.
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_io().enable_time();
    if config.probe_addr().is_some() {
        // The workers give way to the probe thread (niceness.rs), spawned later at nice 0.
        builder.on_thread_start(|| {
            niceness::give_way_to_probes();
        });
    }
    let runtime = match builder.build() {
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
    let listener = server::listen(&config).map_err(|e| format!("bind {}: {e}", config.addr()))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("address of the bound socket: {e}"))?;
    let probe = match config.probe_addr() {
        Some(addr) => {
            let listener = probe::bind(addr).map_err(|e| format!("bind PROBE_PORT {addr}: {e}"))?;
            let local = listener
                .local_addr()
                .map_err(|e| format!("address of the probe socket: {e}"))?;
            probe::spawn(listener).map_err(|e| format!("start the probe thread: {e}"))?;
            // This thread accepts (and with WORKERS=1 serves): it gives way
            // too, now that the probe thread has started at nice 0.
            Some((local, niceness::give_way_to_probes()))
        }
        None => None,
    };

    let mut max_connections = config.max_connections;
    let reserved = server::RESERVED_FDS + probe.map_or(0, |_| probe::PROBE_CONNECTIONS + 3);
    if let Some(fds) = server::open_file_limit()
        && fds < max_connections + reserved
    {
        // Past the open-file limit accept fails (EMFILE) instead of waiting.
        max_connections = fds.saturating_sub(reserved).max(1);
        Line::new(
            Level::Warn,
            "connection limit lowered to fit the open-file limit",
        )
        .num("max_connections", max_connections as u64)
        .num("asked", config.max_connections as u64)
        .num("open_file_limit", fds as u64)
        .emit();
    }

    let (stop_tx, stop) = watch::channel(false);
    let shared = Arc::new(Shared::new(&config, max_connections, stop));
    tokio::spawn(memory::return_freed_memory(Arc::clone(&shared)));
    let gauges = Arc::clone(&shared);
    tokio::spawn(shed::summarize(server::SUMMARY_EVERY, move || {
        vec![
            ("open_connections", gauges.open() as u64),
            ("active_connections", gauges.active() as u64),
        ]
    }));

    let mut started = Line::new(Level::Info, "started")
        .str("version", VERSION)
        .str("addr", &local.to_string());
    if let Some((probe, nice)) = probe {
        started = started.str("probe_addr", &probe.to_string());
        // What the kernel says, not what was asked.
        started = match nice.map(u64::try_from) {
            Some(Ok(nice)) => started.num("worker_nice", nice),
            Some(Err(_)) | None => started.str(
                "worker_nice",
                &nice.map_or("unknown".into(), |n| n.to_string()),
            ),
        };
    }
    started
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
    // The delay is for the kubelet's SIGTERM. Ctrl-C comes from a person at a
    // terminal, with no endpoints to wait for, who would pay it on every restart.
    let drain_delay = match signal {
        "SIGINT" => Duration::ZERO,
        _ => config.drain_delay,
    };
    Line::new(Level::Info, "stopping")
        .str("signal", signal)
        .num("open_connections", shared.open() as u64)
        .num("drain_delay_secs", drain_delay.as_secs())
        .emit();
    let started = Instant::now();
    if !drain_delay.is_zero() {
        // A second signal ends the delay early.
        acceptor
            .serve_until(&listener, &shared, async {
                tokio::select! {
                    () = tokio::time::sleep(drain_delay) => {}
                    _ = sigterm.recv() => {}
                    _ = sigint.recv() => {}
                }
            })
            .await;
    }

    // Stop accepting: new connections are refused from here on. Open ones
    // finish the request they are in (answered with Connection: close); idle
    // ones are closed now.
    server::close_listener(listener, &shared).await;
    let _ = stop_tx.send(true);
    let all = u32::try_from(shared.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::select! {
        done = tokio::time::timeout(
            config.shutdown_timeout,
            shared.connections.acquire_many(all),
        ) => done.is_ok(),
        // A person who presses Ctrl-C again does not want to wait.
        _ = sigint.recv() => false,
    };
    let left = shared.open();
    Line::new(if drained { Level::Info } else { Level::Warn }, "stopped")
        .str("signal", signal)
        .bool("drained", drained)
        .num("dropped_connections", if drained { 0 } else { left as u64 })
        .num("drain_ms", started.elapsed().as_millis() as u64)
        .emit();
    Ok(())
}
