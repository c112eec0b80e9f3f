//! Open-loop HTTP/1.1 load at a fixed rate, for `cargo xtask bench`: the
//! latency a server gives at a given offered load, corrected for coordinated
//! omission.
//!
//! Request i is due at `start + i / rate`, whatever happened to the ones
//! before it (open loop: a slow answer does not slow the schedule down). It
//! goes out on an idle keep-alive connection as soon as it is due; when every
//! connection still waits for an answer, it waits for one, and its latency is
//! counted from the time it was due, not from the time it went out (the
//! correction wrk2 and HdrHistogram make: a stall is charged to every request
//! it held up). A request this generator sent late while a connection was
//! free is its own lateness, not the server's: it counts from the time it went
//! out. A latency ends when the kernel received the answer's last bytes
//! (SO_TIMESTAMPING's software receive stamp), not when this generator read
//! them: on a virtual machine its own wake-up took 35-40 us of every p50, and
//! milliseconds of the p99 when the host took its CPU. The uncorrected
//! latency, from the actual send, is reported beside it.
//!
//! One thread sleeps in ppoll(2) until the next request is due or an answer
//! arrives, with its timer slack cut to 1 ns (the default 50 us would send
//! every request up to 50 us late). It reads only the connections ppoll
//! found readable. A wake-up later than planned by more than 100 us is a
//! stall: the CPU was taken away, and the requests due then go out late (and
//! count from then). Pin it to a CPU of its own (`taskset`). Std only (its
//! few system calls are declared here, from the C library std links anyway),
//! one file: xtask compiles it with `rustc -O`, in a few seconds, the way it
//! builds the Go server.
//!
//! Given several URLs, it loads them in turn from one stream: the stream of
//! requests due at `--rate` is cut in slices of `--slice` milliseconds, and
//! each slice goes to the next URL, each with its own connections; the
//! requests due in the first tenth of a slice go to no one, so that the
//! answers the server before still owes (the servers may share a CPU) are
//! not the next one's to wait for. Each URL gets `--warmup` and then
//! `--duration` seconds of the load in all, and the servers behind them face
//! the machine's weather alike: what lasts longer than a slice or two (other
//! work, the host taking a CPU for a while) falls on both, and what is
//! shorter on either, at random. A request waits only for a connection of its
//! own target.
//!
//! Prints one line per URL, `XTASK-LOAD {json}`, in the order given,
//! latencies in nanoseconds; exits 1 with `error: ...` on stderr when it
//! cannot run at all (bad arguments, no connection).

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: load --rate PER_SEC --duration SECS [--warmup SECS] \
[--connections N] [--timeout SECS] [--slice MS] http://HOST:PORT/PATH [URL ...]";

/// What the line is marked with, for the caller to find it.
pub const MARKER: &str = "XTASK-LOAD ";

#[allow(dead_code)] // the entry point of the binary; the tests use the parts
fn main() {
    match Args::parse(std::env::args().skip(1)).and_then(|args| run(&args)) {
        Ok(reports) => {
            for report in reports {
                println!("{MARKER}{}", report.json());
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Args {
    /// Requests/s each target gets while it has the load.
    pub rate: u64,
    /// Each target's measured time, in all.
    pub duration: Duration,
    /// Each target's time at the same rate before the measured part, not counted.
    pub warmup: Duration,
    /// Each target's keep-alive connections.
    pub connections: usize,
    /// An answer that takes longer counts as an error; its connection is replaced.
    pub timeout: Duration,
    /// How long one target has the load before the next takes it.
    pub slice: Duration,
    pub targets: Vec<Target>,
}

/// Where requests go: `HOST:PORT` and `/PATH`.
#[derive(Debug, PartialEq, Clone)]
pub struct Target {
    pub host: String,
    pub path: String,
}

/// The targets a run may take turns between.
const MAX_TARGETS: usize = 8;

impl Args {
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut rate = None;
        let mut duration = None;
        let mut warmup = 1;
        let mut connections = 64;
        let mut timeout = 2;
        let mut slice = 100;
        let mut targets = Vec::new();
        while let Some(word) = words.next() {
            let mut number = |min: u64, max: u64| -> Result<u64, String> {
                let value = words
                    .next()
                    .ok_or(format!("{word} needs a value; {USAGE}"))?;
                match value.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{word} {value}: expected a whole number from {min} to {max}"
                    )),
                }
            };
            match word.as_str() {
                "--rate" => rate = Some(number(1, 10_000_000)?),
                "--duration" => duration = Some(number(1, 3_600)?),
                "--warmup" => warmup = number(0, 3_600)?,
                "--connections" => connections = number(1, 10_000)?,
                "--timeout" => timeout = number(1, 600)?,
                "--slice" => slice = number(1, 60_000)?,
                _ if word.starts_with('-') => return Err(format!("unknown flag {word}; {USAGE}")),
                _ if targets.len() == MAX_TARGETS => {
                    return Err(format!(
                        "at most {MAX_TARGETS} URLs, got another: {word}; {USAGE}"
                    ));
                }
                _ => {
                    let (host, path) = split_url(&word)?;
                    targets.push(Target { host, path });
                }
            }
        }
        if targets.is_empty() {
            return Err(format!("no URL; {USAGE}"));
        }
        let rate = rate.ok_or(format!("no --rate; {USAGE}"))?;
        let slice = Duration::from_millis(slice);
        if targets.len() > 1 && slice.as_nanos() * u128::from(rate) < 1_000_000_000 {
            return Err(format!(
                "--slice {} ms at --rate {rate}: a slice would hold no request; \
                 give a longer slice or a higher rate",
                slice.as_millis()
            ));
        }
        Ok(Args {
            rate,
            duration: Duration::from_secs(duration.ok_or(format!("no --duration; {USAGE}"))?),
            warmup: Duration::from_secs(warmup),
            connections: connections as usize,
            timeout: Duration::from_secs(timeout),
            slice,
            targets,
        })
    }
}

/// `http://HOST:PORT/PATH` -> (`HOST:PORT`, `/PATH`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or(format!(
        "{url}: only http:// URLs, as http://127.0.0.1:8080/health"
    ))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if !host.contains(':') || host.ends_with(':') {
        return Err(format!(
            "{url}: the URL needs a port, as http://127.0.0.1:8080/health"
        ));
    }
    Ok((host.to_owned(), path.to_owned()))
}

/// Log-linear buckets, as HdrHistogram's: values below 128 exactly, above it
/// with 7 significant bits (each bucket under 0.8% wide), in constant memory.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 7;
const HALF: u64 = 1 << (SUB_BITS - 1);

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; Histogram::index(u64::MAX) + 1],
            total: 0,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < 2 * HALF {
            return value as usize;
        }
        // The shift that leaves the top SUB_BITS bits: value >> shift is in [64, 128).
        let shift = 63 - value.leading_zeros() - (SUB_BITS - 1);
        ((shift as u64) * HALF + (value >> shift)) as usize
    }

    /// The highest value that falls in bucket `index`.
    fn highest(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * HALF {
            return index;
        }
        let shift = index / HALF - 1;
        let top = index % HALF + HALF;
        (top << shift) + ((1 << shift) - 1)
    }

    pub fn record(&mut self, value: u64) {
        self.counts[Histogram::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// The value at or below which `fraction` of the values lie (the
    /// bucket's highest value, never above the largest recorded); 0 when empty.
    pub fn quantile(&self, fraction: f64) -> u64 {
        let rank = ((fraction * self.total as f64).ceil() as u64).clamp(1, self.total.max(1));
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank && *count > 0 {
                return Histogram::highest(index).min(self.max);
            }
        }
        0
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// What one run measured of one target.
pub struct Report {
    url: String,
    rate: u64,
    duration: Duration,
    connections: usize,
    /// Requests due in the measured part, how many were answered there, and
    /// of those how many the kernel stamped on arrival.
    due: u64,
    answered: u64,
    stamped: u64,
    errors_status: u64,
    errors_io: u64,
    errors_timeout: u64,
    /// The latency: from the time each request was due, when it waited for a
    /// connection (the server held it up, as it holds up a user), else from
    /// the time it went out; to the time the answer's last bytes arrived.
    corrected: Histogram,
    /// From the time each request went out: what a closed-loop tool reports.
    uncorrected: Histogram,
    /// How long requests waited to go out: for a connection (the server
    /// answering late) or for this loop (the generator falling behind).
    send_delay: Histogram,
    /// How long an answer waited to be read after it arrived: this
    /// generator's own delay, left out of the latency.
    read_delay: Histogram,
    /// Wake-ups later than planned by more than STALL_NS, in the measured
    /// part of this target's slices: how often and how long this generator
    /// lost its CPU.
    stalls: u64,
    stalled_ns: u64,
    stall_max_ns: u64,
    /// Time in the turns that sent or received something, in the measured
    /// part: the rest of the time the loop only waits. Near the run's length
    /// means this generator, not the server, sets the pace.
    working_ns: u64,
    /// From the end of the warm-up to the last answer (or giving up),
    /// this target's share of it.
    measured_ns: u64,
}

/// With several targets, the first tenth of each slice is a gap.
const GAP_DIVISOR: u64 = 10;

/// How late a wake-up may be before it counts as a stall.
const STALL_NS: u64 = 100_000;

impl Report {
    pub fn json(&self) -> String {
        let figures = |h: &Histogram| {
            format!(
                "{{\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{}}}",
                h.quantile(0.5),
                h.quantile(0.9),
                h.quantile(0.99),
                h.quantile(0.999),
                h.max()
            )
        };
        format!(
            "{{\"url\":\"{}\",\"rate\":{},\"duration_us\":{},\"connections\":{},\"due\":{},\"answered\":{},\"stamped\":{},\
             \"errors_status\":{},\"errors_io\":{},\"errors_timeout\":{},\
             \"stalls\":{},\"stalled_ns\":{},\"stall_max_ns\":{},\"working_ns\":{},\"measured_ns\":{},\
             \"corrected\":{},\"uncorrected\":{},\"send_delay\":{},\"read_delay\":{}}}",
            self.url.escape_default(),
            self.rate,
            self.duration.as_micros(),
            self.connections,
            self.due,
            self.answered,
            self.stamped,
            self.errors_status,
            self.errors_io,
            self.errors_timeout,
            self.stalls,
            self.stalled_ns,
            self.stall_max_ns,
            self.working_ns,
            self.measured_ns,
            figures(&self.corrected),
            figures(&self.uncorrected),
            figures(&self.send_delay),
            figures(&self.read_delay),
        )
    }
}

/// One keep-alive connection and the request it waits on, if any.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    filled: usize,
    /// When the request in flight was due and when it went out, in ns since
    /// the start; the time its latency counts from (`due`, or `sent` when
    /// only this generator held it up).
    due: u64,
    sent: u64,
    charged_from: u64,
    /// When the kernel received the last bytes read (CLOCK_REALTIME, ns).
    arrived: Option<u128>,
    /// ppoll found something to read (or the connection closed).
    readable: bool,
}

enum Answer {
    Pending,
    /// `arrived`: when the kernel received its last bytes (CLOCK_REALTIME, ns).
    Complete {
        ok: bool,
        arrived: Option<u128>,
    },
    Broken,
}

impl Connection {
    fn open(address: &SocketAddr, timeout: Duration) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(address, timeout)
            .map_err(|err| format!("connect to {address}: {err}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .and_then(|()| sys::receive_timestamps(stream.as_raw_fd()))
            .map_err(|err| format!("set up the connection to {address}: {err}"))?;
        Ok(Connection {
            stream,
            buffer: vec![0; 4096],
            filled: 0,
            due: 0,
            sent: 0,
            charged_from: 0,
            arrived: None,
            readable: false,
        })
    }

    /// Reads what has arrived; complete once the head and Content-Length bytes are in.
    fn poll(&mut self) -> Answer {
        loop {
            if self.filled == self.buffer.len() {
                return Answer::Broken; // an answer larger than 4 KiB: not /health's
            }
            let fd = self.stream.as_raw_fd();
            match sys::receive(fd, &mut self.buffer[self.filled..]) {
                Ok((0, _)) => return Answer::Broken,
                Ok((n, arrived)) => {
                    self.filled += n;
                    self.arrived = arrived.or(self.arrived);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Answer::Broken,
            }
        }
        match parse_answer(&self.buffer[..self.filled]) {
            Parsed::Partial => Answer::Pending,
            Parsed::Complete { status, length } if length == self.filled => {
                self.filled = 0;
                Answer::Complete {
                    ok: status == 200,
                    arrived: self.arrived.take(),
                }
            }
            // Bytes beyond the answer, or one we cannot read: start afresh.
            _ => Answer::Broken,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Partial,
    /// The status, and the length of the whole answer, head and body.
    Complete {
        status: u16,
        length: usize,
    },
    Invalid,
}

/// An HTTP/1.1 answer with a Content-Length (what both servers send).
pub fn parse_answer(bytes: &[u8]) -> Parsed {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&bytes[..head_end]) else {
        return Parsed::Invalid;
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let body = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match (status, body) {
        (Some(status), Some(body)) if bytes.len() >= head_end + 4 + body => Parsed::Complete {
            status,
            length: head_end + 4 + body,
        },
        (Some(_), Some(_)) => Parsed::Partial,
        _ => Parsed::Invalid,
    }
}

/// Which target each request is for: the stream of requests due at `rate`
/// (request i at i / rate), cut in slices of `slice_ns`, each slice to the
/// targets in turn. With several targets, the requests due in the first
/// `gap_ns` of a slice are no one's: the servers may share a CPU, and the
/// answers the one before still owes are not the next one's to wait for.
struct Schedule {
    rate: u64,
    slice_ns: u64,
    gap_ns: u64,
    targets: u64,
    /// Requests in all, warm-up included.
    total: u64,
}

impl Schedule {
    /// When request `i` is due, in ns since the start.
    fn due(&self, i: u64) -> u64 {
        (u128::from(i) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// The target whose slice `ns` falls in.
    fn target_at(&self, ns: u64) -> usize {
        (ns / self.slice_ns % self.targets) as usize
    }

    /// The target request `i` is for, if any: none in a gap.
    fn owner(&self, i: u64) -> Option<usize> {
        let due = self.due(i);
        (due % self.slice_ns >= self.gap_ns).then(|| self.target_at(due))
    }

    /// The first request from `i` on that is `target`'s, or `total`.
    fn next_for(&self, target: usize, mut i: u64) -> u64 {
        while i < self.total {
            if self.owner(i) == Some(target) {
                return i;
            }
            let due = self.due(i);
            let slice = due / self.slice_ns;
            let ahead = (target as u64 + self.targets - slice % self.targets) % self.targets;
            // The first request due in the target's slice after its gap: this
            // slice's, when `i` is in its gap, else the target's next.
            let start = u128::from((slice + ahead) * self.slice_ns + self.gap_ns);
            let next = (start * u128::from(self.rate)).div_ceil(1_000_000_000) as u64;
            i = next.max(i + 1);
        }
        self.total
    }
}

/// One target's connections, the next request it is due, and its figures.
struct Load {
    address: SocketAddr,
    request: Vec<u8>,
    connections: Vec<Connection>,
    /// Idle connections, least recently used first: each is used in turn, so
    /// that none idles long enough for the server to close it.
    idle: VecDeque<usize>,
    busy: Vec<usize>,
    next: u64,
    /// A request was due and no connection was free: the ones sent until
    /// this generator catches up waited for the server.
    starved: bool,
    report: Report,
}

pub fn run(args: &Args) -> Result<Vec<Report>, String> {
    let nanos = |d: Duration| d.as_nanos() as u64;
    let targets = args.targets.len() as u64;
    let schedule = Schedule {
        rate: args.rate,
        slice_ns: nanos(args.slice),
        gap_ns: match targets {
            1 => 0,
            _ => nanos(args.slice) / GAP_DIVISOR,
        },
        targets,
        total: (args.warmup + args.duration).as_secs() * args.rate * targets,
    };
    // The warm-up is the start of the stream: each target's warm-up in all.
    let warmup = nanos(args.warmup) * targets;
    let timeout = nanos(args.timeout);
    let measured = |i: u64| schedule.due(i) >= warmup;
    let mut due = vec![0; args.targets.len()];
    for i in (0..schedule.total).filter(|&i| measured(i)) {
        if let Some(target) = schedule.owner(i) {
            due[target] += 1;
        }
    }
    let mut loads = Vec::new();
    for (t, target) in args.targets.iter().enumerate() {
        let address = target
            .host
            .to_socket_addrs()
            .map_err(|err| format!("resolve {}: {err}", target.host))?
            .next()
            .ok_or(format!("{} resolves to no address", target.host))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask-bench-load\r\n\r\n",
            target.path, target.host
        )
        .into_bytes();
        let connections = (0..args.connections)
            .map(|_| Connection::open(&address, args.timeout))
            .collect::<Result<Vec<_>, _>>()?;
        loads.push(Load {
            address,
            request,
            idle: (0..connections.len()).collect(),
            busy: Vec::with_capacity(connections.len()),
            connections,
            next: schedule.next_for(t, 0),
            starved: false,
            report: Report {
                url: format!("http://{}{}", target.host, target.path),
                rate: args.rate,
                duration: args.duration,
                connections: args.connections,
                due: due[t],
                answered: 0,
                stamped: 0,
                errors_status: 0,
                errors_io: 0,
                errors_timeout: 0,
                corrected: Histogram::new(),
                uncorrected: Histogram::new(),
                send_delay: Histogram::new(),
                read_delay: Histogram::new(),
                stalls: 0,
                stalled_ns: 0,
                stall_max_ns: 0,
                working_ns: 0,
                measured_ns: 0,
            },
        });
    }
    // Past this, answers still missing count as timeouts.
    let give_up = schedule.due(schedule.total) + timeout;

    sys::precise_timers();
    let start = Instant::now();
    // The kernel stamps arrivals on CLOCK_REALTIME: the start on that clock.
    let start_real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // When the last sleep planned to wake, had nothing woken it before.
    let mut planned_wake: Option<u64> = None;
    loop {
        let now = nanos(start.elapsed());
        if let Some(planned) = planned_wake.take() {
            let late = now.saturating_sub(planned);
            if late > STALL_NS && now >= warmup {
                let report = &mut loads[schedule.target_at(planned)].report;
                report.stalls += 1;
                report.stalled_ns += late;
                report.stall_max_ns = report.stall_max_ns.max(late);
            }
        }
        let mut worked = false;
        for (t, load) in loads.iter_mut().enumerate() {
            loop {
                if load.next >= schedule.total || schedule.due(load.next) > now {
                    load.starved = false;
                    break;
                }
                let Some(c) = load.idle.pop_front() else {
                    load.starved = true;
                    break;
                };
                let due = schedule.due(load.next);
                load.next = schedule.next_for(t, load.next + 1);
                worked = true;
                let connection = &mut load.connections[c];
                // A request this small goes out whole on a healthy connection.
                if connection.stream.write(&load.request).ok() == Some(load.request.len()) {
                    connection.due = due;
                    connection.sent = now;
                    // It waited for a connection: the server held it up, from
                    // when it was due. Else it went out as soon as this
                    // generator woke: its lateness is the generator's.
                    connection.charged_from = if load.starved { due } else { now };
                    load.busy.push(c);
                } else {
                    load.report.errors_io += u64::from(due >= warmup);
                    load.connections[c] = Connection::open(&load.address, args.timeout)?;
                    load.idle.push_back(c);
                }
            }
        }
        for load in &mut loads {
            let mut k = 0;
            while k < load.busy.len() {
                let c = load.busy[k];
                let connection = &mut load.connections[c];
                // Only what ppoll found readable is read: a read of each
                // connection in flight on every turn costs a system call each,
                // and at 64 in flight the generator fell behind its own schedule.
                let answer = match std::mem::take(&mut connection.readable) {
                    true => connection.poll(),
                    false => Answer::Pending,
                };
                let done = nanos(start.elapsed());
                let counted = connection.due >= warmup;
                let report = &mut load.report;
                match answer {
                    Answer::Pending if done - connection.sent <= timeout => {
                        k += 1;
                        continue;
                    }
                    Answer::Complete { ok, arrived } => {
                        // When the answer reached the socket, if the kernel said.
                        let stamped = arrived
                            .map(|at| at.saturating_sub(start_real) as u64)
                            .map(|at| at.clamp(connection.sent, done));
                        if counted {
                            let arrived = stamped.unwrap_or(done);
                            report.answered += 1;
                            report.stamped += u64::from(stamped.is_some());
                            report.errors_status += u64::from(!ok);
                            report.corrected.record(arrived - connection.charged_from);
                            report.uncorrected.record(arrived - connection.sent);
                            report.send_delay.record(connection.sent - connection.due);
                            report.read_delay.record(done - arrived);
                        }
                    }
                    Answer::Pending => {
                        report.errors_timeout += u64::from(counted);
                        load.connections[c] = Connection::open(&load.address, args.timeout)?;
                    }
                    Answer::Broken => {
                        report.errors_io += u64::from(counted);
                        load.connections[c] = Connection::open(&load.address, args.timeout)?;
                    }
                }
                worked = true;
                load.busy.swap_remove(k);
                load.idle.push_back(c);
            }
        }
        if loads
            .iter()
            .all(|load| load.next >= schedule.total && load.busy.is_empty())
        {
            break;
        }
        let end = nanos(start.elapsed());
        if worked && now >= warmup {
            loads[schedule.target_at(now)].report.working_ns += end - now;
        }
        if now > give_up {
            // Due but never sent, or sent and never answered: timeouts all.
            for (t, load) in loads.iter_mut().enumerate() {
                let unsent = (load.next..schedule.total)
                    .filter(|&i| measured(i) && schedule.owner(i) == Some(t));
                load.report.errors_timeout += unsent.count() as u64;
                let connections = &load.connections;
                let unanswered = load.busy.iter().filter(|&&c| connections[c].due >= warmup);
                load.report.errors_timeout += unanswered.count() as u64;
            }
            break;
        }
        // Sleep until the next request is due (when a connection is free for
        // it), the first answer in flight times out, or an answer arrives.
        let next_due = loads
            .iter()
            .filter(|load| load.next < schedule.total && !load.idle.is_empty())
            .map(|load| schedule.due(load.next))
            .min();
        let first_timeout = loads
            .iter()
            .flat_map(|load| load.busy.iter().map(|&c| load.connections[c].sent))
            .min()
            .map(|sent| sent + timeout + 1);
        let wake = [next_due, first_timeout, Some(give_up + 1)]
            .into_iter()
            .flatten()
            .min()
            .expect("give_up is always there");
        if wake > end {
            let waiting: Vec<(usize, usize)> = (loads.iter().enumerate())
                .flat_map(|(t, load)| load.busy.iter().map(move |&c| (t, c)))
                .collect();
            let fds: Vec<i32> = (waiting.iter())
                .map(|&(t, c)| loads[t].connections[c].stream.as_raw_fd())
                .collect();
            let (timed_out, readable) = sys::until_readable(&fds, wake - end)?;
            if timed_out {
                planned_wake = Some(wake);
            }
            for at in readable {
                let (t, c) = waiting[at];
                loads[t].connections[c].readable = true;
            }
        }
    }
    let measured_ns = nanos(start.elapsed()).saturating_sub(warmup) / targets;
    Ok(loads
        .into_iter()
        .map(|load| Report {
            measured_ns,
            ..load.report
        })
        .collect())
}

/// ppoll(2), prctl(2), setsockopt(2) and recvmsg(2), declared from the C
/// library std links anyway.
// std has no sleep that also wakes on a socket and no read that returns the
// kernel's receive time, and xtask takes no libc crate for one generator:
// these four calls are the only unsafe code of the project's tools.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::{c_int, c_long, c_short, c_ulong, c_void};
    use std::io;

    #[repr(C)]
    struct PollFd {
        fd: c_int,
        events: c_short,
        revents: c_short,
    }

    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }

    #[repr(C)]
    struct IoVec {
        base: *mut c_void,
        len: usize,
    }

    #[repr(C)]
    struct MsgHdr {
        name: *mut c_void,
        name_len: u32,
        iov: *mut IoVec,
        iov_len: usize,
        control: *mut c_void,
        control_len: usize,
        flags: c_int,
    }

    /// The head of a control message; its data follows, 8-aligned.
    #[repr(C)]
    struct CmsgHdr {
        len: usize,
        level: c_int,
        kind: c_int,
    }

    const POLLIN: c_short = 1;
    const PR_SET_TIMERSLACK: c_int = 29;
    const SOL_SOCKET: c_int = 1;
    /// SO_TIMESTAMPING, and the control message it adds (asm-generic/socket.h).
    const SO_TIMESTAMPING: c_int = 37;
    /// Stamp what is received, in software, and report those stamps
    /// (linux/net_tstamp.h).
    const SOF_TIMESTAMPING_RX_SOFTWARE: c_int = 1 << 3;
    const SOF_TIMESTAMPING_SOFTWARE: c_int = 1 << 4;
    const MSG_DONTWAIT: c_int = 0x40;

    unsafe extern "C" {
        fn ppoll(
            fds: *mut PollFd,
            nfds: c_ulong,
            timeout: *const Timespec,
            sigmask: *const c_void,
        ) -> c_int;
        fn prctl(option: c_int, arg2: c_ulong, ...) -> c_int;
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
        fn recvmsg(fd: c_int, message: *mut MsgHdr, flags: c_int) -> isize;
    }

    /// Asks the kernel to stamp each segment `fd` receives with the time it
    /// arrived, so that an answer's latency ends there, not when this
    /// generator got round to reading it.
    pub fn receive_timestamps(fd: c_int) -> io::Result<()> {
        let flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
        // SAFETY: the value is a c_int that outlives the call, and its size is given.
        let set = unsafe {
            setsockopt(
                fd,
                SOL_SOCKET,
                SO_TIMESTAMPING,
                (&raw const flags).cast(),
                size_of::<c_int>() as u32,
            )
        };
        match set {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Reads into `buffer` without blocking: the bytes read and, when the
    /// kernel stamped them, when the last of them arrived (CLOCK_REALTIME, ns).
    pub fn receive(fd: c_int, buffer: &mut [u8]) -> io::Result<(usize, Option<u128>)> {
        let mut iov = IoVec {
            base: buffer.as_mut_ptr().cast(),
            len: buffer.len(),
        };
        // Room for one struct scm_timestamping (three timespecs) and more.
        let mut control = [0u64; 16];
        let mut message = MsgHdr {
            name: std::ptr::null_mut(),
            name_len: 0,
            iov: &raw mut iov,
            iov_len: 1,
            control: control.as_mut_ptr().cast(),
            control_len: size_of_val(&control),
            flags: 0,
        };
        // SAFETY: `message` points at `iov`, `buffer` and `control`, all of
        // which outlive the call, with their lengths.
        let read = unsafe { recvmsg(fd, &raw mut message, MSG_DONTWAIT) };
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        // The control messages, as CMSG_FIRSTHDR and CMSG_NXTHDR walk them.
        let bytes: Vec<u8> = control.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let bytes = &bytes[..message.control_len.min(bytes.len())];
        let head = size_of::<CmsgHdr>();
        let mut at = 0;
        let mut arrived = None;
        while at + head <= bytes.len() {
            let word = |from: usize, n: usize| &bytes[at + from..at + from + n];
            let len = usize::from_ne_bytes(word(0, 8).try_into().expect("8 bytes"));
            let level = c_int::from_ne_bytes(word(8, 4).try_into().expect("4 bytes"));
            let kind = c_int::from_ne_bytes(word(12, 4).try_into().expect("4 bytes"));
            if len < head || at + len > bytes.len() {
                break;
            }
            // The first of the three timespecs is the software stamp.
            if level == SOL_SOCKET && kind == SO_TIMESTAMPING && len >= head + 16 {
                let secs = i64::from_ne_bytes(word(head, 8).try_into().expect("8 bytes"));
                let nanos = i64::from_ne_bytes(word(head + 8, 8).try_into().expect("8 bytes"));
                if secs > 0 {
                    arrived = Some(secs as u128 * 1_000_000_000 + nanos as u128);
                }
            }
            at += len.next_multiple_of(8);
        }
        Ok((read as usize, arrived))
    }

    /// Timers of this thread fire when asked, not up to 50 us later (the
    /// default slack, which would send every request late).
    pub fn precise_timers() {
        // SAFETY: PR_SET_TIMERSLACK takes one integer and touches no memory of ours.
        // If it fails the wake-ups are only later, and the stalls count them.
        unsafe { prctl(PR_SET_TIMERSLACK, 1) };
    }

    /// Sleeps until one of `fds` is readable or `ns` have passed; returns
    /// whether the time passed, and the places in `fds` of those readable
    /// (or closed, or in error: a read says which).
    pub fn until_readable(fds: &[c_int], ns: u64) -> Result<(bool, Vec<usize>), String> {
        let mut polled: Vec<PollFd> = fds
            .iter()
            .map(|&fd| PollFd {
                fd,
                events: POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = Timespec {
            tv_sec: (ns / 1_000_000_000) as c_long,
            tv_nsec: (ns % 1_000_000_000) as c_long,
        };
        // SAFETY: `polled` and `timeout` outlive the call, and the length is polled's.
        let ready = unsafe {
            ppoll(
                polled.as_mut_ptr(),
                polled.len() as c_ulong,
                &timeout,
                std::ptr::null(),
            )
        };
        match ready {
            0 => Ok((true, Vec::new())),
            n if n > 0 => Ok((
                false,
                (polled.iter().enumerate())
                    .filter(|(_, p)| p.revents != 0)
                    .map(|(at, _)| at)
                    .collect(),
            )),
            _ => match std::io::Error::last_os_error() {
                err if err.kind() == std::io::ErrorKind::Interrupted => Ok((false, Vec::new())),
                err => Err(format!("ppoll: {err}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_narrow() {
        let mut previous = None;
        for value in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let index = Histogram::index(value);
            let highest = Histogram::highest(index);
            assert!(
                highest >= value,
                "{value} in bucket {index} up to {highest}"
            );
            assert!(
                (highest - value) as f64 <= value as f64 / 64.0,
                "{value}: bucket up to {highest} is too wide"
            );
            if let Some(previous) = previous.filter(|_| value < 100_000) {
                assert!(index == previous || index == previous + 1, "{value}");
            }
            previous = Some(index);
        }
    }

    #[test]
    fn quantiles_come_from_the_ranks() {
        let mut h = Histogram::new();
        for value in 1..=1000 {
            h.record(value * 1000);
        }
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 / 100.0;
        assert!(near(h.quantile(0.5), 500_000), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 990_000), "{}", h.quantile(0.99));
        assert!(near(h.quantile(0.999), 999_000), "{}", h.quantile(0.999));
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!((h.total(), h.max()), (1000, 1_000_000));
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }

    /// Slices of 100 ms at 1,000/s, the first 10 ms of each a gap: requests
    /// 10-99 for the first target, 110-199 for the second, and so on; a
    /// target's next request skips the others' and the gaps.
    #[test]
    fn the_slices_go_to_the_targets_in_turn() {
        let schedule = Schedule {
            rate: 1000,
            slice_ns: 100_000_000,
            gap_ns: 10_000_000,
            targets: 2,
            total: 1000,
        };
        assert_eq!(schedule.next_for(0, 0), 10);
        assert_eq!(schedule.next_for(1, 0), 110);
        assert_eq!(schedule.next_for(0, 99), 99);
        assert_eq!(schedule.next_for(0, 100), 210);
        assert_eq!(schedule.next_for(1, 250), 310);
        assert_eq!(schedule.next_for(0, 901), 1000, "none left");
        let mut owned = [0; 2];
        for i in 0..1000 {
            match schedule.owner(i) {
                Some(mine) => {
                    owned[mine] += 1;
                    assert_eq!(schedule.next_for(mine, i), i);
                    assert!(schedule.next_for(1 - mine, i) > i);
                }
                None => assert!(i % 100 < 10, "{i} is in a gap"),
            }
        }
        assert_eq!(owned, [450, 450]);
        // One target: no gap, every request its own.
        let one = Schedule {
            gap_ns: 0,
            targets: 1,
            ..schedule
        };
        assert!((0..1000).all(|i| one.owner(i) == Some(0) && one.next_for(0, i) == i));
        // At 2/s, 400 ms slices: the first target's slice at 1.6-2 s holds no
        // request; its next after the second target's at 1.5 s is at 2.5 s.
        let sparse = Schedule {
            rate: 2,
            slice_ns: 400_000_000,
            gap_ns: 0,
            targets: 2,
            total: 6,
        };
        let owners: Vec<Option<usize>> = (0..6).map(|i| sparse.owner(i)).collect();
        assert_eq!(owners, [0, 1, 0, 1, 1, 0].map(Some));
        assert_eq!(sparse.next_for(0, 3), 5);
    }

    #[test]
    fn answers_are_complete_with_their_body() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx: y\r\n\r\nhello";
        assert_eq!(
            parse_answer(answer),
            Parsed::Complete {
                status: 200,
                length: answer.len()
            }
        );
        assert_eq!(parse_answer(&answer[..answer.len() - 1]), Parsed::Partial);
        assert_eq!(parse_answer(b"HTTP/1.1 404 Not"), Parsed::Partial);
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Invalid
        );
    }

    #[test]
    fn arguments_are_checked() {
        let parse = |line: &str| Args::parse(line.split_whitespace().map(String::from));
        let args = parse("--rate 1000 --duration 5 http://127.0.0.1:8080/health").unwrap();
        assert_eq!((args.rate, args.connections), (1000, 64));
        let target = |host: &str, path: &str| Target {
            host: host.into(),
            path: path.into(),
        };
        assert_eq!(args.targets, [target("127.0.0.1:8080", "/health")]);
        let two = parse("--rate 1000 --duration 5 http://a:1/x http://b:2").unwrap();
        assert_eq!(two.targets, [target("a:1", "/x"), target("b:2", "/")]);
        assert_eq!(two.slice, Duration::from_millis(100));
        for (line, says) in [
            ("--duration 5 http://127.0.0.1:1/", "no --rate"),
            (
                "--rate 0 --duration 5 http://127.0.0.1:1/",
                "--rate 0: expected",
            ),
            ("--rate 5 --duration 5 https://x:1/", "only http://"),
            ("--rate 5 --duration 5 http://x/", "needs a port"),
            (
                "--rate 5 --duration 5 --fast http://x:1/",
                "unknown flag --fast",
            ),
            (
                "--rate 5 --duration 5 --slice 100 http://x:1/ http://y:1/",
                "a slice would hold no request",
            ),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
        }
    }
}
