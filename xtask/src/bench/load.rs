//! The open-loop load generator (`xtask/bench/load.rs`) as bench uses it:
//! built with `rustc -O`, run pinned at a fixed rate, its figures read back.
//!
//! Why our own: wrk is closed loop (each connection waits for its answer, so
//! a stall delays the requests it should have counted); wrk2, its open-loop
//! fork, is in no package registry reached here; `oha -q --latency-correction`
//! is a crates.io install of several hundred crates, with a Tokio and hyper
//! client per request on the load generator's one CPU. Ours is one std-only
//! file: a few seconds of `rustc`, no new dependency for xtask.

use std::process::Command;
use std::time::Duration;

use super::json::json_struct;
use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::context::{Context, Step};
use crate::process::Stdout;
use crate::tools;

/// Its source and where it is built.
pub const SOURCE: &str = "xtask/bench/load.rs";
pub const BINARY: &str = "target/bench/load";
/// The line it prints its JSON on.
const MARKER: &str = "XTASK-LOAD ";
/// Sent at the rate before the measured part of each run, not counted.
pub const WARMUP_SECS: u32 = 1;
/// How long one server has the load before the next takes it, in a run of
/// several: short beside the machine's weather (a stall, a slower CPU for a
/// while), so that it falls on every server alike; long beside a request.
pub const SLICE_MS: u32 = 100;
/// How long `rustc` may take: a few seconds on a quiet machine.
const BUILD_LIMIT: Duration = Duration::from_secs(300);

// The generator's own tests run with xtask's (`cargo test -p xtask`), and
// clippy sees it as it sees xtask.
#[cfg(test)]
#[path = "../../bench/load.rs"]
mod generator;

/// The rustc of the cargo that runs us (the same toolchain), else PATH's.
fn rustc() -> Utf8PathBuf {
    let cargo = tools::cargo();
    match cargo.parent().map(|dir| dir.join("rustc")) {
        Some(beside) if beside.is_file() => beside,
        _ => tools::locate("rustc").unwrap_or_else(|| "rustc".into()),
    }
}

/// Builds the generator (`--dry-run`: prints the line); returns its path.
pub fn build(cx: &Context) -> Result<Utf8PathBuf> {
    let out = cx.path(BINARY);
    let source = cx.path(SOURCE);
    if let Some(dir) = out.parent()
        && !cx.dry_run
    {
        std::fs::create_dir_all(dir).with_context(|| format!("create {dir}"))?;
    }
    let mut rustc = std::process::Command::new(rustc().as_std_path());
    rustc.args(["--edition", "2024", "-C", "opt-level=3", "-o"]);
    rustc.args([out.as_str(), source.as_str()]);
    cx.change(rustc)
        .within(BUILD_LIMIT, "is the machine very busy?")
        .run(cx)
        .context("build the load generator")?;
    Ok(out)
}

/// The generator's arguments for one run: each of `urls` gets `secs` of the
/// load at `rate`, in slices of [`SLICE_MS`], in turn.
pub fn args(rate: &str, secs: u32, connections: u32, urls: &[String]) -> Vec<String> {
    let mut args = vec![
        "--rate".into(),
        rate.into(),
        "--duration".into(),
        secs.to_string(),
        "--warmup".into(),
        WARMUP_SECS.to_string(),
        "--connections".into(),
        connections.to_string(),
    ];
    if urls.len() > 1 {
        args.extend(["--slice".into(), SLICE_MS.to_string()]);
    }
    args.extend(urls.iter().cloned());
    args
}

/// The generator pinned to `cpu` (under SCHED_FIFO when `realtime`) at
/// `rate` for `secs` a URL, on `connections` to each of `urls`, in turn.
#[allow(clippy::too_many_arguments)] // one run's settings, each a plain value
pub fn step(
    cx: &Context,
    binary: &Utf8Path,
    cpu: usize,
    realtime: bool,
    rate: u64,
    secs: u32,
    connections: u32,
    urls: &[String],
) -> Step {
    let mut command = match realtime {
        true => {
            let mut chrt = Command::new("chrt");
            chrt.args(["--fifo", "50", "taskset"]);
            chrt
        }
        false => Command::new("taskset"),
    };
    command.args(["-c", &cpu.to_string(), binary.as_str()]);
    command.args(args(&rate.to_string(), secs, connections, urls));
    // Its own give-up is 2 s after the last request is due.
    let run_secs = (secs + WARMUP_SECS) as usize * urls.len();
    let limit = Duration::from_secs(run_secs as u64 + 30);
    cx.change(command)
        .stdout(Stdout::Kept)
        .keep_stderr()
        .within(limit, "is the machine very busy?")
}

/// Runs [`step`] and reads the generator's figures, a run for each of its
/// `urls` in their order.
pub fn run(cx: &Context, step: Step, urls: &[String]) -> Result<Option<Vec<LoadRun>>> {
    let line = step.line();
    let Some(done) = step.run(cx)? else {
        return Ok(None);
    };
    if cx.verbose {
        eprint!("{}", done.stdout);
    }
    parse(&done.stdout, urls)
        .with_context(|| format!("read the figures of `{line}`"))
        .map(Some)
}

json_struct! {
    read
    /// Latency quantiles of one run, in nanoseconds.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Quantiles {
        pub p50: u64 => "p50_ns",
        pub p90: u64 => "p90_ns",
        pub p99: u64 => "p99_ns",
        pub p999: u64 => "p999_ns",
        pub max: u64 => "max_ns",
    }
}

json_struct! {
    read
    /// One run of the generator, as it prints it.
    #[derive(Debug, Clone, PartialEq)]
    pub struct LoadRun {
        pub url: String,
        pub rate: u64,
        /// Requests due in the measured part, and answered.
        pub due: u64,
        pub answered: u64,
        /// Answers other than 200, connections broken, answers later than 2 s.
        pub errors_status: u64,
        pub errors_io: u64,
        pub errors_timeout: u64,
        /// Times the generator woke more than 100 us later than planned (its CPU
        /// was taken), and how late in all.
        pub stalls: u64,
        pub stalled_ns: u64,
        pub stall_max_ns: u64,
        /// Time it spent sending and receiving: the rest it waited.
        pub working_ns: u64,
        /// From the end of the warm-up to the last answer.
        pub measured_ns: u64,
        /// From the time each request was due (what a user sees).
        pub corrected: Quantiles,
        /// From the time it went out (what a closed-loop tool reports).
        pub uncorrected: Quantiles,
        /// How long requests waited to go out.
        pub send_delay: Quantiles,
        /// Answers the kernel stamped on arrival: the others count until read.
        pub stamped: u64,
        /// How long answers waited to be read: the generator's own delay, not counted.
        pub read_delay: Quantiles,
        /// The server's CPU time during the run (/proc/<pid>/task/*/schedstat),
        /// and the time other work took on its CPU (that CPU's busy time in
        /// /proc/stat less the servers' own): filled by bench, not printed by
        /// the generator.
        pub server_cpu_ns: u64 = 0,
        pub server_cpu_other_ns: u64 = 0,
    }
}

impl LoadRun {
    /// The share of the measured time it spent sending and receiving.
    pub fn working_share(&self) -> f64 {
        self.working_ns as f64 / self.measured_ns.max(1) as f64
    }

    /// The server's CPU time per answered request, in nanoseconds.
    pub fn cpu_per_request_ns(&self) -> u64 {
        self.server_cpu_ns / self.answered.max(1)
    }

    pub fn errors(&self) -> u64 {
        self.errors_status + self.errors_io + self.errors_timeout
    }
}

/// The `XTASK-LOAD` lines among the generator's output: one for each of
/// `urls`, in their order.
pub fn parse(stdout: &str, urls: &[String]) -> Result<Vec<LoadRun>> {
    let runs = stdout
        .lines()
        .filter_map(|line| line.strip_prefix(MARKER))
        .map(|json| {
            serde_json::from_str(json)
                .map_err(anyhow::Error::from)
                .and_then(|value| LoadRun::from_json(&value))
                .with_context(|| format!("parse {json}"))
        })
        .collect::<Result<Vec<LoadRun>>>()?;
    let got: Vec<&str> = runs.iter().map(|run| run.url.as_str()).collect();
    if got != urls {
        bail!(
            "the load generator printed `{MARKER}` lines for {got:?}, not one for each of {urls:?}"
        );
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_prints_what_bench_reads() {
        assert_eq!(MARKER, generator::MARKER);
        let urls = ["http://127.0.0.1:9/health".to_owned()];
        let mut args = generator::Args::parse(args("1000", 3, 8, &urls).into_iter()).unwrap();
        assert_eq!((args.rate, args.connections), (1000, 8));
        let two = [urls[0].clone(), "http://127.0.0.1:10/health".to_owned()];
        let slices = generator::Args::parse(super::args("1000", 3, 8, &two).into_iter()).unwrap();
        assert_eq!(slices.slice, Duration::from_millis(SLICE_MS.into()));
        assert_eq!(slices.targets.len(), 2);
        assert_eq!(args.warmup, Duration::from_secs(WARMUP_SECS.into()));
        // Nothing listens on port 9 of loopback: the generator says so.
        args.timeout = Duration::from_secs(1);
        let err = generator::run(&args).err().unwrap();
        assert!(err.contains("connect to 127.0.0.1:9"), "{err}");
    }

    /// A server that answers every request at once, except that the one
    /// request 300 ms in holds every answer up for 200 ms.
    fn stalling_server() -> u16 {
        server(Some(300), Duration::from_millis(200))
    }

    /// A server that answers every request at once, except that its
    /// `stall`th request holds every answer up for `hold`.
    fn server(stall: Option<u32>, hold: Duration) -> u16 {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = Arc::new(Mutex::new(0u32));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (mut stream, answers) = (stream.unwrap(), answers.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0; 1];
                    while stream.read(&mut byte).is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                        if !head.ends_with(b"\r\n\r\n") {
                            continue;
                        }
                        head.clear();
                        let mut answered = answers.lock().unwrap();
                        *answered += 1;
                        if Some(*answered) == stall {
                            std::thread::sleep(hold);
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    /// The stall holds up the requests due while it lasts: they count from
    /// when they were due (what wrk, closed loop, would leave out).
    #[test]
    fn a_stall_counts_against_every_request_it_holds_up() {
        let port = stalling_server();
        let urls = [format!("http://127.0.0.1:{port}/health")];
        let mut args = generator::Args::parse(args("1000", 1, 4, &urls).into_iter()).unwrap();
        args.warmup = Duration::ZERO;
        let reports = generator::run(&args).unwrap();
        let out: String = reports
            .iter()
            .map(|report| format!("{}{}\n", generator::MARKER, report.json()))
            .collect();
        let [run] = &parse(&out, &urls).unwrap()[..] else {
            panic!("one run: {out}")
        };
        assert_eq!(
            (run.due, run.answered, run.errors()),
            (1000, 1000, 0),
            "{out}"
        );
        // Some 200 requests fall due during the stall; the 10th longest of
        // 1000 waited nearly all of it.
        assert!(run.corrected.p99 >= 150_000_000, "{out}");
        // All but the 4 in flight waited for a connection, not for an answer.
        assert!(run.send_delay.p99 >= 100_000_000, "{out}");
    }

    /// Two servers in turn, 100 ms each: the one that stalls is charged its
    /// stall, the other nothing, though its slices come while the first's
    /// requests still wait.
    #[test]
    fn a_stall_counts_against_its_own_server_only() {
        let hold = Duration::from_millis(400);
        let (stalling, steady) = (server(Some(300), hold), server(None, hold));
        let urls = [stalling, steady].map(|port| format!("http://127.0.0.1:{port}/health"));
        let mut args = generator::Args::parse(args("1000", 1, 4, &urls).into_iter()).unwrap();
        args.warmup = Duration::ZERO;
        let out: String = generator::run(&args)
            .unwrap()
            .iter()
            .map(|report| format!("{}{}\n", generator::MARKER, report.json()))
            .collect();
        let runs = parse(&out, &urls).unwrap();
        // 1000 requests a second each, less the first tenth of each slice (a gap).
        for run in &runs {
            assert_eq!(
                (run.due, run.answered, run.errors()),
                (900, 900, 0),
                "{out}"
            );
        }
        // Its 300th answer ends its third slice (0.4-0.5 s of the run): its next
        // slice's requests all wait 200-300 ms for the stall to end, more than
        // 1% of its 1000.
        assert!(runs[0].corrected.p99 >= 150_000_000, "{out}");
        assert!(runs[1].corrected.p99 < 50_000_000, "{out}");
    }

    #[test]
    fn figures_come_from_the_marked_line() {
        let q =
            r#"{"p50_ns":40000,"p90_ns":50000,"p99_ns":90000,"p999_ns":200000,"max_ns":900000}"#;
        let line = |url: &str| {
            format!(
                "XTASK-LOAD {{\"url\":\"{url}\",\"rate\":1000,\"duration_us\":5000000,\"connections\":64,\
             \"due\":5000,\"answered\":4999,\"stamped\":4999,\"errors_status\":1,\"errors_io\":0,\
             \"errors_timeout\":1,\"stalls\":2,\"stalled_ns\":70000,\"stall_max_ns\":40000,\
             \"working_ns\":1000000,\"measured_ns\":5000000000,\
             \"corrected\":{q},\"uncorrected\":{q},\"send_delay\":{q},\"read_delay\":{q}}}\n"
            )
        };
        let urls = [
            "http://a:1/health".to_owned(),
            "http://b:2/health".to_owned(),
        ];
        let out = format!("noise\n{}{}", line(&urls[0]), line(&urls[1]));
        let runs = parse(&out, &urls).unwrap();
        let run = &runs[1];
        assert_eq!(run.url, urls[1]);
        assert_eq!((run.rate, run.answered, run.errors()), (1000, 4999, 2));
        assert_eq!((run.corrected.p99, run.corrected.p999), (90_000, 200_000));
        assert!(parse("XTASK-LOAD {}", &urls[..1]).is_err());
        let err = format!("{:#}", parse("nothing", &urls[..1]).unwrap_err());
        assert!(err.contains("printed `XTASK-LOAD ` lines for []"), "{err}");
        let swapped = format!("{}{}", line(&urls[1]), line(&urls[0]));
        assert!(parse(&swapped, &urls).is_err(), "each run is its URL's");
    }
}
