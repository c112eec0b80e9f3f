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
//! it held up). The uncorrected latency, from the actual send, is reported
//! beside it.
//!
//! One thread sleeps in ppoll(2) until the next request is due or an answer
//! arrives, with its timer slack cut to 1 ns (the default 50 us would send
//! every request up to 50 us late, and charge it to the server). It used to
//! poll without sleeping, and the scheduler then took its CPU away for
//! milliseconds at a time as a CPU hog's (15-21 runs redone per bench). A
//! wake-up later than planned by more than 100 us is a stall: the CPU was
//! taken away, and the requests due then go out late. Shorter lateness is the
//! kernel's wake-up latency under other work (often 20-100 us at load 6 on a
//! PREEMPT_NONE kernel, even under SCHED_FIFO), which every run carries alike.
//! Pin it to a CPU of its own (`taskset`). Std only (ppoll and prctl are
//! declared here, from the C library std links anyway), one file: xtask
//! compiles it with `rustc -O`, in a few seconds, the way it builds the Go
//! server.
//!
//! Prints one line, `XTASK-LOAD {json}`, latencies in nanoseconds; exits 1
//! with `error: ...` on stderr when it cannot run at all (bad arguments, no
//! connection).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: load --rate PER_SEC --duration SECS [--warmup SECS] \
[--connections N] [--timeout SECS] http://HOST:PORT/PATH";

/// What the line is marked with, for the caller to find it.
pub const MARKER: &str = "XTASK-LOAD ";

#[allow(dead_code)] // the entry point of the binary; the tests use the parts
fn main() {
    match Args::parse(std::env::args().skip(1)).and_then(|args| run(&args)) {
        Ok(report) => println!("{MARKER}{}", report.json()),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Args {
    pub rate: u64,
    pub duration: Duration,
    /// Sent at the same rate before the measured part, not counted.
    pub warmup: Duration,
    pub connections: usize,
    /// An answer that takes longer counts as an error; its connection is replaced.
    pub timeout: Duration,
    pub host: String,
    pub path: String,
}

impl Args {
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut rate = None;
        let mut duration = None;
        let mut warmup = 1;
        let mut connections = 64;
        let mut timeout = 2;
        let mut url = None;
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
                _ if word.starts_with('-') => return Err(format!("unknown flag {word}; {USAGE}")),
                _ if url.is_none() => url = Some(word),
                _ => return Err(format!("one URL only, got another: {word}; {USAGE}")),
            }
        }
        let url = url.ok_or(format!("no URL; {USAGE}"))?;
        let (host, path) = split_url(&url)?;
        Ok(Args {
            rate: rate.ok_or(format!("no --rate; {USAGE}"))?,
            duration: Duration::from_secs(duration.ok_or(format!("no --duration; {USAGE}"))?),
            warmup: Duration::from_secs(warmup),
            connections: connections as usize,
            timeout: Duration::from_secs(timeout),
            host,
            path,
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

/// What one run measured.
pub struct Report {
    rate: u64,
    duration: Duration,
    connections: usize,
    /// Requests due in the measured part, and how many were answered there.
    due: u64,
    answered: u64,
    errors_status: u64,
    errors_io: u64,
    errors_timeout: u64,
    /// From the time each request was due: what a user sees.
    corrected: Histogram,
    /// From the time each request went out: what a closed-loop tool reports.
    uncorrected: Histogram,
    /// How long requests waited to go out: for a connection (the server
    /// answering late) or for this loop (the generator falling behind).
    send_delay: Histogram,
    /// Wake-ups later than planned by more than STALL_NS, in the measured
    /// part: how often and how long this generator lost its CPU.
    stalls: u64,
    stalled_ns: u64,
    stall_max_ns: u64,
    /// Time in the turns that sent or received something, in the measured
    /// part: the rest of the time the loop only waits. Near the run's length
    /// means this generator, not the server, sets the pace.
    working_ns: u64,
    /// From the end of the warm-up to the last answer (or giving up).
    measured_ns: u64,
}

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
            "{{\"rate\":{},\"duration_us\":{},\"connections\":{},\"due\":{},\"answered\":{},\
             \"errors_status\":{},\"errors_io\":{},\"errors_timeout\":{},\
             \"stalls\":{},\"stalled_ns\":{},\"stall_max_ns\":{},\"working_ns\":{},\"measured_ns\":{},\
             \"corrected\":{},\"uncorrected\":{},\"send_delay\":{}}}",
            self.rate,
            self.duration.as_micros(),
            self.connections,
            self.due,
            self.answered,
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
        )
    }
}

/// One keep-alive connection and the request it waits on, if any.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    filled: usize,
    /// When the request in flight was due and when it went out, in ns since the start.
    due: u64,
    sent: u64,
}

enum Answer {
    Pending,
    Complete { ok: bool },
    Broken,
}

impl Connection {
    fn open(address: &SocketAddr, timeout: Duration) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(address, timeout)
            .map_err(|err| format!("connect to {address}: {err}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|err| format!("set up the connection to {address}: {err}"))?;
        Ok(Connection {
            stream,
            buffer: vec![0; 4096],
            filled: 0,
            due: 0,
            sent: 0,
        })
    }

    /// Reads what has arrived; complete once the head and Content-Length bytes are in.
    fn poll(&mut self) -> Answer {
        loop {
            if self.filled == self.buffer.len() {
                return Answer::Broken; // an answer larger than 4 KiB: not /health's
            }
            match self.stream.read(&mut self.buffer[self.filled..]) {
                Ok(0) => return Answer::Broken,
                Ok(n) => self.filled += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Answer::Broken,
            }
        }
        match parse_answer(&self.buffer[..self.filled]) {
            Parsed::Partial => Answer::Pending,
            Parsed::Complete { status, length } if length == self.filled => {
                self.filled = 0;
                Answer::Complete { ok: status == 200 }
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

pub fn run(args: &Args) -> Result<Report, String> {
    let address = args
        .host
        .to_socket_addrs()
        .map_err(|err| format!("resolve {}: {err}", args.host))?
        .next()
        .ok_or(format!("{} resolves to no address", args.host))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask-bench-load\r\n\r\n",
        args.path, args.host
    )
    .into_bytes();
    let mut connections = (0..args.connections)
        .map(|_| Connection::open(&address, args.timeout))
        .collect::<Result<Vec<_>, _>>()?;

    let nanos = |d: Duration| d.as_nanos() as u64;
    let warmup = nanos(args.warmup);
    let total = (args.warmup + args.duration).as_secs() * args.rate;
    let due_at = |i: u64| (u128::from(i) * 1_000_000_000 / u128::from(args.rate)) as u64;
    let timeout = nanos(args.timeout);
    let mut report = Report {
        rate: args.rate,
        duration: args.duration,
        connections: args.connections,
        due: total - args.warmup.as_secs() * args.rate,
        answered: 0,
        errors_status: 0,
        errors_io: 0,
        errors_timeout: 0,
        corrected: Histogram::new(),
        uncorrected: Histogram::new(),
        send_delay: Histogram::new(),
        stalls: 0,
        stalled_ns: 0,
        stall_max_ns: 0,
        working_ns: 0,
        measured_ns: 0,
    };
    let mut idle: Vec<usize> = (0..connections.len()).rev().collect();
    let mut busy: Vec<usize> = Vec::with_capacity(connections.len());
    let mut next = 0;
    // Past this, answers still missing count as timeouts.
    let give_up = due_at(total) + timeout;

    sleep::precise_timers();
    let start = Instant::now();
    // When the last sleep planned to wake, had nothing woken it before.
    let mut planned_wake: Option<u64> = None;
    loop {
        let now = nanos(start.elapsed());
        if let Some(planned) = planned_wake.take() {
            let late = now.saturating_sub(planned);
            if late > STALL_NS && now >= warmup {
                report.stalls += 1;
                report.stalled_ns += late;
                report.stall_max_ns = report.stall_max_ns.max(late);
            }
        }
        let before = (next, idle.len());
        while next < total && due_at(next) <= now {
            let Some(c) = idle.pop() else { break };
            let due = due_at(next);
            next += 1;
            let connection = &mut connections[c];
            // A request this small goes out whole on a healthy connection.
            if connection.stream.write(&request).ok() == Some(request.len()) {
                connection.due = due;
                connection.sent = now;
                busy.push(c);
            } else {
                if due >= warmup {
                    report.errors_io += 1;
                }
                connections[c] = Connection::open(&address, args.timeout)?;
                idle.push(c);
            }
        }
        let mut k = 0;
        while k < busy.len() {
            let c = busy[k];
            let connection = &mut connections[c];
            let answer = connection.poll();
            let done = nanos(start.elapsed());
            let counted = connection.due >= warmup;
            match answer {
                Answer::Pending if done - connection.sent <= timeout => {
                    k += 1;
                    continue;
                }
                Answer::Complete { ok } => {
                    if counted {
                        report.answered += 1;
                        report.errors_status += u64::from(!ok);
                        report.corrected.record(done - connection.due);
                        report.uncorrected.record(done - connection.sent);
                        report.send_delay.record(connection.sent - connection.due);
                    }
                }
                Answer::Pending => {
                    report.errors_timeout += u64::from(counted);
                    connections[c] = Connection::open(&address, args.timeout)?;
                }
                Answer::Broken => {
                    report.errors_io += u64::from(counted);
                    connections[c] = Connection::open(&address, args.timeout)?;
                }
            }
            busy.swap_remove(k);
            idle.push(c);
        }
        if next >= total && busy.is_empty() {
            break;
        }
        let end = nanos(start.elapsed());
        if (next, idle.len()) != before && now >= warmup {
            report.working_ns += end - now;
        }
        if now > give_up {
            // Due but never sent, or sent and never answered: timeouts all.
            let measured = |i: &u64| due_at(*i) >= warmup;
            report.errors_timeout += (next..total).filter(measured).count() as u64;
            report.errors_timeout += busy
                .iter()
                .filter(|&&c| connections[c].due >= warmup)
                .count() as u64;
            break;
        }
        // Sleep until the next request is due (when a connection is free for
        // it), the first answer in flight times out, or an answer arrives.
        let next_due = (next < total && !idle.is_empty()).then(|| due_at(next));
        let first_timeout = busy
            .iter()
            .map(|&c| connections[c].sent + timeout + 1)
            .min();
        let wake = [next_due, first_timeout, Some(give_up + 1)]
            .into_iter()
            .flatten()
            .min()
            .expect("give_up is always there");
        if wake > end {
            let fds: Vec<i32> = busy
                .iter()
                .map(|&c| connections[c].stream.as_raw_fd())
                .collect();
            if sleep::until_readable(&fds, wake - end)? == 0 {
                planned_wake = Some(wake);
            }
        }
    }
    report.measured_ns = nanos(start.elapsed()).saturating_sub(warmup);
    Ok(report)
}

/// ppoll(2) and prctl(2), declared from the C library std links anyway.
// std has no sleep that also wakes on a socket, and xtask takes no libc crate
// for one generator: these two calls are the only unsafe code of the project's tools.
#[allow(unsafe_code)]
mod sleep {
    use std::ffi::{c_int, c_long, c_short, c_ulong, c_void};

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

    const POLLIN: c_short = 1;
    const PR_SET_TIMERSLACK: c_int = 29;

    unsafe extern "C" {
        fn ppoll(
            fds: *mut PollFd,
            nfds: c_ulong,
            timeout: *const Timespec,
            sigmask: *const c_void,
        ) -> c_int;
        fn prctl(option: c_int, arg2: c_ulong, ...) -> c_int;
    }

    /// Timers of this thread fire when asked, not up to 50 us later (the
    /// default slack, which would send every request late).
    pub fn precise_timers() {
        // SAFETY: PR_SET_TIMERSLACK takes one integer and touches no memory of ours.
        // If it fails the wake-ups are only later, and the stalls count them.
        unsafe { prctl(PR_SET_TIMERSLACK, 1) };
    }

    /// Sleeps until one of `fds` is readable or `ns` have passed; returns
    /// how many are readable (0: the time passed).
    pub fn until_readable(fds: &[c_int], ns: u64) -> Result<usize, String> {
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
            n if n >= 0 => Ok(n as usize),
            _ => match std::io::Error::last_os_error() {
                err if err.kind() == std::io::ErrorKind::Interrupted => Ok(1),
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
        assert_eq!(
            (
                args.rate,
                args.connections,
                args.host.as_str(),
                args.path.as_str()
            ),
            (1000, 64, "127.0.0.1:8080", "/health")
        );
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
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
        }
    }
}
