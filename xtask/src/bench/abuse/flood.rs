//! The floods: what abusive clients do to the connections they open, and
//! the phases that hold them, each against a running subject.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use camino::Utf8Path;

use super::client::{PROBE_TIMEOUT, Prober, read_answer};
use super::report::{Burst, Phase};
use super::spawn_named;
use super::subject::{Sampler, Subject};
use super::threads::Snapshot;
use crate::context::Context;

/// Opens up to `n` connections, stopping early when the server stops
/// taking them (20 connects in a row time out) or after `limit`.
pub fn open_many(addr: SocketAddr, n: usize, limit: Duration) -> Vec<TcpStream> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    let mut failed_in_a_row = 0;
    while streams.len() < n && failed_in_a_row < 20 && started.elapsed() < limit {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                failed_in_a_row = 0;
                streams.push(stream);
            }
            Err(_) => failed_in_a_row += 1,
        }
    }
    streams
}

/// Whether the server has closed `stream` (EOF or reset), without blocking.
pub fn closed_by_server(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    let mut s = stream;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// A flood: what its clients do to the connections they open. Each client
/// opens its connection again when the server closes it, as flooding tools do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Connect and send nothing.
    Silent,
    /// Send one byte, then nothing.
    Trickle,
    /// Send a request head a byte every half second, never finishing it.
    Slowloris,
    /// Send pipelined requests as fast as the socket takes them; never read.
    Pipeliner,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Silent => "silent",
            Kind::Trickle => "one-byte trickle",
            Kind::Slowloris => "slowloris",
            Kind::Pipeliner => "pipelining non-readers",
        }
    }
}

/// How many clients of each kind; the phases are each kind alone, then all
/// of them at once (the mix).
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub silent: usize,
    pub trickle: usize,
    pub slowloris: usize,
    pub pipeliners: usize,
}

/// The phases of a run: a name, and the floods it holds at once. The mix
/// fits `room` connections by holding fewer silent ones (its phase line
/// says how many).
pub fn phases(counts: Counts, room: usize) -> Vec<(&'static str, Vec<(Kind, usize)>)> {
    let all: Vec<(Kind, usize)> = [
        (Kind::Silent, counts.silent),
        (Kind::Trickle, counts.trickle),
        (Kind::Slowloris, counts.slowloris),
        (Kind::Pipeliner, counts.pipeliners),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    let mut phases: Vec<_> = all
        .iter()
        .map(|&(kind, n)| (kind.name(), vec![(kind, n)]))
        .collect();
    if all.len() > 1 {
        let others: usize = all
            .iter()
            .filter(|(kind, _)| *kind != Kind::Silent)
            .map(|(_, n)| n)
            .sum();
        let mix = all
            .into_iter()
            .map(|(kind, n)| match kind {
                Kind::Silent => (kind, n.min(room.saturating_sub(others))),
                _ => (kind, n),
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        phases.push(("mix", mix));
    }
    phases
}

pub const PIPELINED: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";
pub const SLOW_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Slow: ";
/// A connect on this host takes microseconds; one that takes this long was
/// dropped by a full listen queue.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// The clients of one kind, each a connection or a place to open one again.
pub struct Flood {
    pub kind: Kind,
    pub streams: Vec<Option<TcpStream>>,
    pub sent: Vec<usize>,
    /// Connections opened in all, and those the server closed.
    pub opened: usize,
    pub closed: usize,
}

impl Flood {
    pub fn open(addr: SocketAddr, kind: Kind, n: usize) -> Flood {
        let mut streams: Vec<Option<TcpStream>> = open_many(addr, n, Duration::from_secs(30))
            .into_iter()
            .map(Some)
            .collect();
        let opened = streams.len();
        streams.resize_with(n, || None);
        Flood {
            kind,
            sent: vec![0; n],
            streams,
            opened,
            closed: 0,
        }
    }

    /// One round: every client acts once; closed ones are opened again
    /// while connects succeed (three in a row that do not end the round).
    pub fn round(&mut self, addr: SocketAddr, chunk: &[u8]) {
        let mut failed_connects = 0;
        for (slot, sent) in self.streams.iter_mut().zip(&mut self.sent) {
            let Some(stream) = slot else {
                if failed_connects >= 3 {
                    continue;
                }
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        *slot = Some(stream);
                        *sent = 0;
                        self.opened += 1;
                    }
                    Err(_) => failed_connects += 1,
                }
                continue;
            };
            let open = match self.kind {
                // The server sends these nothing before it closes them.
                Kind::Silent => !closed_by_server(stream),
                Kind::Trickle => {
                    if *sent == 0 && stream.write(b"G").is_ok() {
                        *sent = 1;
                    }
                    !closed_by_server(stream)
                }
                Kind::Slowloris => {
                    let byte = SLOW_HEAD.get(*sent).copied().unwrap_or(b'a');
                    if stream.write(&[byte]).is_ok() {
                        *sent += 1;
                    }
                    !closed_by_server(stream)
                }
                // Never read: the server's close shows as a failed write.
                Kind::Pipeliner => {
                    let _ = stream.set_nonblocking(true);
                    let mut open = true;
                    // Bounded: at most 1 MiB per connection.
                    while *sent < 1 << 20 {
                        match stream.write(chunk) {
                            Ok(0) => break,
                            Ok(k) => *sent += k,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(_) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    open
                }
            };
            if !open {
                *slot = None;
                self.closed += 1;
            }
        }
    }
}

/// One phase against a running subject: `floods` at once, held `hold`.
pub fn phase(
    cx: &Context,
    subject: &mut Subject,
    docker: Option<&Utf8Path>,
    name: &str,
    floods: &[(Kind, usize)],
    hold: Duration,
) -> Result<Phase> {
    let what: Vec<String> = floods
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    eprintln!(
        "# {name}: {}, held {} s, reopened when closed; a keep-alive client and new-connection \
         probes measuring",
        what.join(", "),
        hold.as_secs()
    );
    let load_before = load_average();
    let rss_idle_kib = subject.rss_kib();
    let server_before = Snapshot::take(subject.pid, subject.cpu_cgroup.as_deref());
    let client_before = Snapshot::take(std::process::id(), None);
    let prober = Prober::start(subject.addr, subject.probe, subject.pid)?;
    let sampler = Sampler::start(subject.pid);
    // Let the well-behaved client take a few calm measurements first.
    std::thread::sleep(Duration::from_millis(200));
    let floods = flood(subject.addr, floods.to_vec(), hold)
        .join()
        .unwrap_or_default();
    let rss_end_kib = subject.rss_kib();
    let server_cpu =
        server_before.until(&Snapshot::take(subject.pid, subject.cpu_cgroup.as_deref()));
    let client_cpu = client_before.until(&Snapshot::take(std::process::id(), None));
    let (held_by_server, rss_peak_kib) = sampler.finish();
    let rss_peak_kib = rss_peak_kib.max(rss_end_kib);
    let cgroup_tcp_bytes = subject.cgroup_tcp();
    let cgroup_peak_bytes = subject.cgroup_peak();
    let (keep_alive, new_connection, probe) = prober.finish();
    let opened = floods.iter().map(|f| f.opened).sum();
    let closed = floods.iter().map(|f| f.closed).sum();
    let asked = floods.iter().map(|f| f.streams.len()).sum();
    drop(floods);
    let (alive, oom_killed) = subject.alive(cx, docker);
    Ok(Phase {
        name: name.to_owned(),
        opened,
        asked,
        held_by_server,
        closed_by_server: closed,
        rss_idle_kib,
        rss_peak_kib,
        rss_end_kib,
        cgroup_peak_bytes,
        cgroup_tcp_bytes,
        keep_alive,
        new_connection,
        probe,
        alive,
        oom_killed,
        load: (load_before, load_average()),
        server_cpu,
        client_cpu,
    })
}

/// Opens the floods and keeps them up for `hold`, on a thread of its own
/// ("flood"), so that its CPU is told apart from the measuring clients'.
pub fn flood(
    addr: SocketAddr,
    floods: Vec<(Kind, usize)>,
    hold: Duration,
) -> JoinHandle<Vec<Flood>> {
    spawn_named("flood", move || {
        let mut floods: Vec<Flood> = floods
            .iter()
            .map(|&(kind, n)| Flood::open(addr, kind, n))
            .collect();
        let chunk: Vec<u8> = PIPELINED.repeat(16_384 / PIPELINED.len());
        let started = Instant::now();
        while started.elapsed() < hold {
            let round = Instant::now();
            for flood in &mut floods {
                flood.round(addr, &chunk);
            }
            std::thread::sleep(Duration::from_millis(500).saturating_sub(round.elapsed()));
        }
        floods
    })
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// `n` connections, each answered once and held until all are, then all
/// closed; RSS each second for `settle` after.
pub fn burst(subject: &Subject, n: usize, settle: Duration) -> Result<Burst> {
    eprintln!(
        "# burst: {n} connections at once, one GET /health each, each closed once answered, \
         then RSS each second for {} s",
        settle.as_secs()
    );
    let rss_idle_kib = subject.rss_kib();
    // From before the first connection: a server with a CPU of its own may
    // have answered them all before the last is written.
    let sampler = Sampler::start(subject.pid);
    let mut streams = open_many(subject.addr, n, Duration::from_secs(30));
    for stream in &mut streams {
        let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
        let _ = stream.write_all(PIPELINED);
    }
    let mut answered = 0;
    // Each closed once answered: past the active limit, the rest wait for those.
    for mut stream in streams {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        if read_answer(&mut stream).is_ok() {
            answered += 1;
        }
    }
    let (_, rss_peak_kib) = sampler.finish();
    let mut rss_after_kib = Vec::new();
    for _ in 0..settle.as_secs() {
        std::thread::sleep(Duration::from_secs(1));
        rss_after_kib.push(subject.rss_kib());
    }
    let last = rss_after_kib.last().copied().unwrap_or(rss_peak_kib);
    Ok(Burst {
        connections: answered,
        rss_idle_kib,
        rss_peak_kib,
        ratio_to_idle: last as f64 / rss_idle_kib.max(1) as f64,
        rss_after_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(silent: usize, trickle: usize, slowloris: usize, pipeliners: usize) -> Counts {
        Counts {
            silent,
            trickle,
            slowloris,
            pipeliners,
        }
    }

    #[test]
    fn each_kind_alone_then_all_at_once() {
        let phases = phases(counts(10, 2, 3, 4), 1_000);
        let names: Vec<&str> = phases.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "silent",
                "one-byte trickle",
                "slowloris",
                "pipelining non-readers",
                "mix"
            ]
        );
        assert_eq!(phases[2].1, [(Kind::Slowloris, 3)]);
        let mix = &phases[4].1;
        assert_eq!(
            mix,
            &[
                (Kind::Silent, 10),
                (Kind::Trickle, 2),
                (Kind::Slowloris, 3),
                (Kind::Pipeliner, 4)
            ]
        );
    }

    #[test]
    fn a_kind_of_none_has_no_phase_and_one_kind_no_mix() {
        let phases = phases(counts(10, 0, 0, 0), 1_000);
        assert_eq!(phases, [("silent", vec![(Kind::Silent, 10)])]);
    }

    #[test]
    fn the_mix_holds_fewer_silent_ones_to_fit_the_room() {
        let mix = |counts, room| phases(counts, room).pop().unwrap().1;
        assert_eq!(
            mix(counts(100, 20, 0, 30), 120),
            [
                (Kind::Silent, 70),
                (Kind::Trickle, 20),
                (Kind::Pipeliner, 30)
            ]
        );
        // No room for any silent one: the mix leaves them out.
        assert_eq!(
            mix(counts(100, 60, 0, 60), 100),
            [(Kind::Trickle, 60), (Kind::Pipeliner, 60)]
        );
    }
}
