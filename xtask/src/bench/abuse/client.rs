//! The well-behaved clients that measure while the abuse goes on.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::report::Latency;
use super::{spawn_named, threads};

/// A well-behaved client's deadline per request: a kubelet probe's
/// timeoutSeconds, 1 s by default.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One GET /health on a new connection, `Connection: close`.
pub fn get_once(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    read_answer(&mut stream)
}

/// Reads one answer to a GET (Content-Length framed); an error unless 200.
pub fn read_answer(stream: &mut TcpStream) -> Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("closed before a whole answer");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("answer head too long");
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200 ") {
        bail!("not a 200: {}", head.lines().next().unwrap_or_default());
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(())
}

/// A well-behaved client measuring while the abuse goes on.
pub struct Prober {
    pub stop: Arc<AtomicBool>,
    pub threads: Vec<JoinHandle<Latency>>,
}

impl Prober {
    /// Opens the keep-alive connection now (before any flood), then measures
    /// on it, and on a new connection each 100 ms to the service port and to
    /// the probe port, until stopped.
    pub fn start(addr: SocketAddr, probe: SocketAddr, server_pid: u32) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let kept = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
            .context("the well-behaved client's connection")?;
        kept.set_read_timeout(Some(PROBE_TIMEOUT))?;
        kept.set_write_timeout(Some(PROBE_TIMEOUT))?;
        let _ = kept.set_nodelay(true);
        let keep_alive = {
            let stop = Arc::clone(&stop);
            spawn_named("keep-alive", move || {
                let mut times = Vec::new();
                let mut errors = 0;
                let mut stream = Some(kept);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = match &mut stream {
                        Some(s) => s
                            .write_all(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
                            .map_err(anyhow::Error::from)
                            .and_then(|()| read_answer(s)),
                        None => TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
                            .map_err(anyhow::Error::from)
                            .map(|s| {
                                let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
                                let _ = s.set_nodelay(true);
                                stream = Some(s);
                            }),
                    };
                    match result {
                        Ok(()) if stream.is_some() => times.push(started.elapsed()),
                        Ok(()) => {}
                        Err(_) => {
                            errors += 1;
                            stream = None;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                latency(times, errors)
            })
        };
        let new_connections = |name: &str, addr: SocketAddr, server: Option<PathBuf>| {
            let stop = Arc::clone(&stop);
            spawn_named(name, move || {
                let mut times = Vec::new();
                let mut waits = Vec::new();
                let mut errors = 0;
                let ours = PathBuf::from("/proc/thread-self/schedstat");
                let wait = |path: &Option<PathBuf>| path.as_deref().and_then(threads::wait_ns);
                let sample = || (wait(&Some(ours.clone())), wait(&server));
                while !stop.load(Ordering::Relaxed) {
                    let before = sample();
                    let started = Instant::now();
                    match get_once(addr, PROBE_TIMEOUT) {
                        Ok(()) => {
                            let elapsed = started.elapsed();
                            let after = sample();
                            let delta = |a: Option<u64>, b: Option<u64>| Some(b? - a?);
                            times.push(elapsed);
                            waits.push((
                                elapsed,
                                delta(before.0, after.0),
                                delta(before.1, after.1),
                            ));
                        }
                        Err(_) => errors += 1,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut latency = latency(times, errors);
                if let Some((client, server)) =
                    server.is_some().then(|| slowest_waits(waits)).flatten()
                {
                    latency.slowest_client_wait_us = Some(client);
                    latency.slowest_server_wait_us = Some(server);
                }
                latency
            })
        };
        let fresh = new_connections("service-client", addr, None);
        let probes = new_connections("probe-client", probe, threads::named(server_pid, "probe"));
        Ok(Prober {
            stop,
            threads: vec![keep_alive, fresh, probes],
        })
    }

    /// The keep-alive client's, the service port's and the probe port's latencies.
    pub fn finish(self) -> (Latency, Latency, Latency) {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default());
        let keep_alive = results.next().unwrap_or_default();
        let fresh = results.next().unwrap_or_default();
        let probes = results.next().unwrap_or_default();
        (keep_alive, fresh, probes)
    }
}

/// One probe: how long it took, and how long (ns) the measuring thread and
/// the server's probe thread were runnable without a CPU meanwhile.
pub type ProbeSample = (Duration, Option<u64>, Option<u64>);

/// The mean waits (client, server) of the slowest 1% of `samples`, at least one.
pub fn slowest_waits(mut samples: Vec<ProbeSample>) -> Option<(u64, u64)> {
    samples.sort_by_key(|s| std::cmp::Reverse(s.0));
    let slowest = &samples[..samples.len().div_ceil(100)];
    let mean = |pick: fn(&ProbeSample) -> Option<u64>| {
        let sum: Option<u64> = slowest.iter().map(pick).sum();
        Some(sum? / slowest.len().max(1) as u64 / 1000)
    };
    Some((mean(|s| s.1)?, mean(|s| s.2)?))
}

pub fn latency(mut times: Vec<Duration>, errors: usize) -> Latency {
    times.sort();
    let at = |q: f64| -> u64 {
        if times.is_empty() {
            return 0;
        }
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_micros() as u64
    };
    Latency {
        requests: times.len(),
        errors,
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: times.last().map_or(0, |t| t.as_micros() as u64),
        slowest_client_wait_us: None,
        slowest_server_wait_us: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_of_the_answered_requests() {
        let times = (1..=200).rev().map(Duration::from_micros).collect();
        let l = latency(times, 3);
        assert_eq!((l.requests, l.errors), (200, 3));
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (100, 198, 200));
        assert_eq!(l.slowest_client_wait_us, None);
    }

    #[test]
    fn no_answer_is_zeros_not_a_panic() {
        let l = latency(Vec::new(), 5);
        assert_eq!((l.requests, l.errors, l.p99_us, l.max_us), (0, 5, 0, 0));
    }

    #[test]
    fn the_slowest_waits_are_the_mean_of_the_slowest_percent() {
        // 200 probes: the slowest 1% is two, whose waits are 4 and 8 ms (client)
        // and 2 and 6 ms (server).
        let mut samples: Vec<ProbeSample> = (0..198)
            .map(|i| (Duration::from_micros(i), Some(0), Some(0)))
            .collect();
        samples.push((Duration::from_secs(1), Some(4_000_000), Some(2_000_000)));
        samples.push((Duration::from_secs(2), Some(8_000_000), Some(6_000_000)));
        assert_eq!(slowest_waits(samples), Some((6_000, 4_000)));
        // A wait that could not be read leaves the figure out.
        let one = vec![(Duration::from_millis(1), Some(1_000), None)];
        assert_eq!(slowest_waits(one), None);
    }
}
