//! wrk at saturation: its command line, and its figures as report.lua prints them.

use std::time::Duration;

use anyhow::{Context as _, Result};
use xshell::cmd;

use super::json::json_struct;
use crate::context::{Context, Step};
use crate::process::Stdout;

/// The wrk script that prints wrk's figures as JSON.
pub const WRK_SCRIPT: &str = "xtask/bench/report.lua";
/// The line the wrk script prints its JSON on.
pub const WRK_MARKER: &str = "XTASK-BENCH ";

json_struct! {
    read
    /// wrk's figures for one run, as xtask/bench/report.lua prints them.
    #[derive(Debug, Clone, PartialEq)]
    pub struct WrkRun {
        pub requests: u64,
        pub duration_us: u64,
        pub bytes: u64,
        pub p50_us: u64,
        pub p90_us: u64,
        pub p99_us: u64,
        pub max_us: u64,
        pub errors_connect: u64,
        pub errors_read: u64,
        pub errors_write: u64,
        pub errors_status: u64,
        pub errors_timeout: u64,
    }
}

impl WrkRun {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
    }
}

/// The JSON line of xtask/bench/report.lua among wrk's output.
pub fn parse_wrk(stdout: &str) -> Result<WrkRun> {
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix(WRK_MARKER))
        .with_context(|| format!("wrk printed no `{WRK_MARKER}` line: is {WRK_SCRIPT} loaded?"))?;
    serde_json::from_str(json)
        .map_err(anyhow::Error::from)
        .and_then(|value| WrkRun::from_json(&value))
        .with_context(|| format!("parse {json}"))
}

/// wrk with `connections` on `cpu` for `secs`; `measured` adds the latency
/// histogram and report.lua. wrk stops itself after `secs`; a wrk that does
/// not is stopped.
pub fn step(
    cx: &Context,
    connections: u32,
    cpu: usize,
    secs: u32,
    url: &str,
    measured: bool,
) -> Step {
    let sh = &cx.sh;
    let cpu = cpu.to_string();
    let connections = format!("-c{connections}");
    let duration = format!("-d{secs}s");
    let report: &[&str] = if measured {
        &["--latency", "-s", WRK_SCRIPT]
    } else {
        &[]
    };
    cx.change(cmd!(
        sh,
        "taskset -c {cpu} wrk -t1 {connections} {duration} {report...} {url}"
    ))
    .stdout(Stdout::Kept)
    .keep_stderr()
    .within(
        Duration::from_secs(u64::from(secs) + 30),
        "is the server answering?",
    )
}

/// Runs wrk; its figures when `measured`.
pub fn run(
    cx: &Context,
    connections: u32,
    cpu: usize,
    secs: u32,
    url: &str,
    measured: bool,
) -> Result<Option<WrkRun>> {
    let step = step(cx, connections, cpu, secs, url, measured);
    let line = step.line();
    let Some(output) = step.run(cx)? else {
        return Ok(None);
    };
    if !measured {
        return Ok(None);
    }
    let stdout = output.stdout;
    if cx.verbose {
        eprint!("{stdout}");
    }
    parse_wrk(&stdout)
        .with_context(|| format!("read the figures of `{line}`"))
        .map(Some)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_figures_come_from_the_script_line() {
        let out = "Running 5s test @ http://127.0.0.1:1/health\n  1 threads and 64 connections\n\
            XTASK-BENCH {\"requests\":700000,\"duration_us\":5000000,\"bytes\":1,\"p50_us\":345,\
            \"p90_us\":500,\"p99_us\":763,\"max_us\":9000,\"errors_connect\":0,\"errors_read\":0,\
            \"errors_write\":0,\"errors_status\":2,\"errors_timeout\":0}\n";
        let run = parse_wrk(out).unwrap();
        assert_eq!((run.p50_us, run.p99_us, run.errors()), (345, 763, 2));
        assert_eq!(run.requests_per_sec(), 140_000.0);
    }

    #[test]
    fn wrk_output_without_the_script_line_is_an_error() {
        let err = parse_wrk("Requests/sec: 1000\n").unwrap_err().to_string();
        assert!(err.contains("report.lua"), "{err}");
    }
}
