//! The abuse bench's figures, their JSON, and the tables for a person.

use std::collections::BTreeMap;

use super::client::PROBE_TIMEOUT;
use super::threads::{self, Usage};
use crate::bench::json::json_struct;

/// The goal for the probes: none fails.
pub const GOAL_PROBE_FAILURES: usize = 0;
/// The goal for the well-behaved client's p99 during a flood.
pub const GOAL_HEALTH_P99_US: u64 = 10_000;

json_struct! {
    /// How many abusive clients of each kind, and how long each phase lasts.
    #[derive(Debug, Clone)]
    pub struct Plan {
        pub silent: usize,
        pub trickle: usize,
        pub slowloris: usize,
        pub pipeliners: usize,
        pub burst: usize,
        pub hold_secs: u64,
        pub settle_secs: u64,
        /// Run the server in a container with `--memory 128m` (else a plain process).
        pub container: bool,
    }
}

json_struct! {
    #[derive(Debug, Default)]
    pub struct Latency {
        pub requests: usize,
        pub errors: usize,
        pub p50_us: u64,
        pub p99_us: u64,
        pub max_us: u64,
        /// Of the slowest 1% (at least one), the mean time the measuring thread
        /// and the server thread that answered were runnable without a CPU:
        /// what of the tail is the scheduler's. Probe port only.
        pub slowest_client_wait_us: Option<u64>,
        pub slowest_server_wait_us: Option<u64>,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Phase {
        pub name: String,
        /// Abusive connections opened in all (reopened ones included) and how
        /// many the client keeps open.
        pub opened: usize,
        pub asked: usize,
        /// Connections the server held (its open sockets), the most during the hold.
        pub held_by_server: Option<usize>,
        /// Abusive connections the server closed (each then opened again).
        pub closed_by_server: usize,
        pub rss_idle_kib: u64,
        pub rss_peak_kib: u64,
        pub rss_end_kib: u64,
        /// The container's memory cgroup: its usage (plus TCP buffers, which
        /// cgroup v1 counts apart) at the end, and its peak.
        pub cgroup_peak_bytes: Option<u64>,
        pub cgroup_tcp_bytes: Option<u64>,
        /// A keep-alive client opened before the flood, one GET /health every 2 ms.
        pub keep_alive: Latency,
        /// A new connection per GET /health every 100 ms on the service port.
        pub new_connection: Latency,
        /// The same on the probe port (`PROBE_PORT`), as the kubelet's probes.
        pub probe: Latency,
        pub alive: bool,
        pub oom_killed: bool,
        /// The machine's 1-minute load average as the phase began and ended:
        /// latencies on a busy machine are the machine's.
        pub load: (Option<f64>, Option<f64>) => "load_average_1m",
        /// Where the server's CPU went (per thread), and its cgroup's throttling.
        pub server_cpu: Usage,
        /// The same for this process: the floods and the measuring clients.
        pub client_cpu: Usage,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Burst {
        pub connections: usize,
        pub rss_idle_kib: u64,
        pub rss_peak_kib: u64,
        /// RSS every second after the burst's connections closed.
        pub rss_after_kib: Vec<u64>,
        pub ratio_to_idle: f64,
    }
}

json_struct! {
    #[derive(Debug)]
    pub struct Report {
        pub plan: Plan,
        pub where_: String,
        pub server_env: BTreeMap<String, String>,
        pub phases: Vec<Phase>,
        pub burst: Option<Burst>,
    }
}

/// The second table: each latency whole, and where the CPU went (the
/// server's threads and this process's: the floods and the measuring clients).
pub fn cpu_table(phases: &[Phase]) -> String {
    let mut out = String::from(
        "latency p50/p99/max in ms and failures; CPU as a share of one CPU; wait: the mean time \
         a thread was runnable before it got a CPU, per timeslice (schedstat); throttled: CFS \
         quota periods throttled / all; slowest 1% waits: of the slowest probes, the \
         mean time the probe client + the server's probe thread waited for a CPU\n",
    );
    out.push_str(&format!(
        "{:<24} {:>26} {:>26} {:>10} {:>16} {:>16} {:>11} {:>10} {:>16} {:>18}\n",
        "phase",
        "keep-alive",
        "probe",
        "server CPU",
        "probe thread",
        "other threads",
        "throttled",
        "bench CPU",
        "probe client",
        "slowest 1% waits"
    ));
    let ms = |us: u64| us as f64 / 1000.0;
    let lat = |l: &Latency| {
        format!(
            "{:.1}/{:.1}/{:.1} {}/{}",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.errors,
            l.errors + l.requests
        )
    };
    let share = |s: Option<threads::Share>| {
        s.map_or("-".into(), |s| {
            format!("{:.0}% {:.2}ms", s.cpu * 100.0, ms(s.wait_per_slice_us))
        })
    };
    for p in phases {
        out.push_str(&format!(
            "{:<24} {:>26} {:>26} {:>9.0}% {:>16} {:>16} {:>11} {:>9.0}% {:>16} {:>18}\n",
            p.name,
            lat(&p.keep_alive),
            lat(&p.probe),
            p.server_cpu.total().cpu * 100.0,
            share(p.server_cpu.thread("probe")),
            share(Some(p.server_cpu.others("probe"))),
            p.server_cpu
                .throttled
                .map_or("-".into(), |(t, n)| format!("{t}/{n}")),
            p.client_cpu.total().cpu * 100.0,
            share(p.client_cpu.thread("probe-client")),
            match (
                p.probe.slowest_client_wait_us,
                p.probe.slowest_server_wait_us
            ) {
                (Some(c), Some(s)) => format!("{:.1}+{:.1} ms", ms(c), ms(s)),
                _ => "-".into(),
            },
        ));
    }
    out
}

/// The report for a person.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "bench --abuse: the server {}; goals: keep-alive and probe p99 <= {} ms, probes failed: \
         {GOAL_PROBE_FAILURES}; each probe on a new connection every 100 ms, {} s timeout, on the \
         probe port (PROBE_PORT) and, for comparison, on the service port; load: the machine's \
         1-minute load average as the phase began and ended\n",
        report.where_,
        GOAL_HEALTH_P99_US / 1000,
        PROBE_TIMEOUT.as_secs()
    );
    out.push_str(&format!(
        "{:<24} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>19} {:>19} {:>19} {:>5} {:>11}\n",
        "phase",
        "clients",
        "opened",
        "closed",
        "held",
        "RSS idle",
        "RSS peak",
        "cgroup",
        "keep-alive p99",
        "probe p99",
        "service new p99",
        "alive",
        "load"
    ));
    let mib = |kib: u64| format!("{:.1}M", kib as f64 / 1024.0);
    for p in &report.phases {
        let cgroup = p
            .cgroup_peak_bytes
            .map(|b| {
                format!(
                    "{:.1}M",
                    (b + p.cgroup_tcp_bytes.unwrap_or(0)) as f64 / 1048576.0
                )
            })
            .unwrap_or_else(|| "-".into());
        let ms = |l: &Latency| {
            format!(
                "{:.2} ms {}/{} fail",
                l.p99_us as f64 / 1000.0,
                l.errors,
                l.errors + l.requests
            )
        };
        out.push_str(&format!(
            "{:<24} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>19} {:>19} {:>19} {:>5} {:>11}\n",
            p.name,
            p.asked,
            p.opened,
            p.closed_by_server,
            p.held_by_server.map_or("-".into(), |h| h.to_string()),
            mib(p.rss_idle_kib),
            mib(p.rss_peak_kib),
            cgroup,
            ms(&p.keep_alive),
            ms(&p.probe),
            ms(&p.new_connection),
            if p.oom_killed {
                "OOM"
            } else if p.alive {
                "yes"
            } else {
                "NO"
            },
            match p.load {
                (Some(a), Some(b)) => format!("{a:.1}-{b:.1}"),
                _ => "-".into(),
            },
        ));
    }
    out.push_str(&cpu_table(&report.phases));
    if let Some(b) = &report.burst {
        let after: Vec<String> = b.rss_after_kib.iter().step_by(5).map(|k| mib(*k)).collect();
        out.push_str(&format!(
            "burst of {} connections: RSS idle {}, peak {}, after (every 5 s) {}; last/idle {:.2}x (goal <= 2x)\n",
            b.connections,
            mib(b.rss_idle_kib),
            mib(b.rss_peak_kib),
            after.join(" "),
            b.ratio_to_idle
        ));
    }
    out
}
