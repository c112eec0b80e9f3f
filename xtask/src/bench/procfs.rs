//! What /proc says about a process: its CPU time, its memory, the CPUs it may use.

use anyhow::{Context as _, Result, bail};

/// Clock ticks per second in /proc/<pid>/stat: USER_HZ, 100 on every Linux
/// that exports it to user space.
pub const USER_HZ: f64 = 100.0;

/// utime + stime from /proc/<pid>/stat: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces.
pub fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after_name = &stat[stat.rfind(')').context("no (comm) field")? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("too few fields")?
            .parse()
            .context("not a number")
    };
    Ok(tick(11)? + tick(12)?)
}

/// Time on the CPU from a /proc/<pid>/task/<tid>/schedstat line: its first
/// field, in nanoseconds (then the time it waited to run, and its timeslices).
pub fn schedstat_cpu_ns(line: &str) -> Result<u64> {
    line.split_whitespace()
        .next()
        .context("an empty schedstat")?
        .parse()
        .context("its first field is not a number")
}

/// Time tasks ran on CPU `cpu`, from /proc/stat, in clock ticks: user,
/// nice and system, whoever ran. Not idle or iowait; not irq and softirq,
/// mostly the servers' own network traffic, which their tasks' CPU time
/// leaves out; and not steal, the host's own use of the CPU, which an idle
/// CPU that polls (bench's latency runs) accrues while it only waits.
pub fn cpu_busy_ticks(stat: &str, cpu: usize) -> Result<u64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("no {name} line in /proc/stat"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not numbers: {line:?}"))?;
    match ticks[..] {
        [user, nice, system, _idle, ..] => Ok(user + nice + system),
        _ => bail!("too few fields: {line:?}"),
    }
}

pub fn status_field_kib(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} line"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("{field} is not a number of kB: {line:?}"))
}

/// The first two CPUs this process may run on, from `Cpus_allowed_list` in
/// /proc/self/status: the server gets the first, wrk the second.
pub fn two_cpus(status: &str) -> Result<(usize, usize)> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list in /proc/self/status")?
        .trim();
    let cpus = parse_cpu_list(list)?;
    match cpus[..] {
        [server, wrk, ..] => Ok((server, wrk)),
        _ => bail!(
            "bench pins the server and wrk to different CPUs, but this process may only use \
             CPU {list}: run it where two CPUs are available"
        ),
    }
}

/// `0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11].
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("not a CPU list: {list:?}");
        match part.split_once('-') {
            Some((from, to)) => {
                let from: usize = from.parse().with_context(bad)?;
                let to: usize = to.parse().with_context(bad)?;
                cpus.extend(from..=to);
            }
            None => cpus.push(part.parse().with_context(bad)?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7").unwrap(), [0, 2, 3, 4, 7]);
        assert!(parse_cpu_list("0-x").is_err());
    }

    #[test]
    fn the_server_and_wrk_get_the_first_two_allowed_cpus() {
        let status = "Name:\tx\nCpus_allowed_list:\t2-3,6\n";
        assert_eq!(two_cpus(status).unwrap(), (2, 3));
    }

    #[test]
    fn one_cpu_is_refused_with_the_reason() {
        let err = two_cpus("Cpus_allowed_list:\t5\n").unwrap_err().to_string();
        assert!(
            err.contains("different CPUs") && err.contains("CPU 5"),
            "{err}"
        );
    }

    #[test]
    fn cpu_time_is_utime_plus_stime_even_when_the_name_has_spaces() {
        let stat = "4242 (api go (x)) S 1 2 3 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 1 0 9 1 1";
        assert_eq!(stat_cpu_ticks(stat).unwrap(), 1234 + 567);
        assert!(stat_cpu_ticks("4242 (api) S 1").is_err());
    }

    #[test]
    fn a_cpu_is_busy_with_tasks_in_user_nice_and_system_time() {
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 100 2 30 900 50 4 5 6 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(cpu_busy_ticks(stat, 0).unwrap(), 100 + 2 + 30);
        assert_eq!(cpu_busy_ticks(stat, 1).unwrap(), 3);
        assert!(cpu_busy_ticks(stat, 2).is_err());
        assert!(cpu_busy_ticks("cpu0 1 2 3\n", 0).is_err());
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "VmPeak:\t  10000 kB\nVmHWM:\t    2532 kB\nVmRSS:\t    1532 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS").unwrap(), 1532);
        assert_eq!(status_field_kib(status, "VmHWM").unwrap(), 2532);
        assert!(status_field_kib(status, "VmSwap").is_err());
    }
}
