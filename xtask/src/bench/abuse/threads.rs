//! Where the CPU went during a phase, to tell why a probe was slow: each
//! thread's time on a CPU and time runnable but waiting for one
//! (/proc/<pid>/task/<tid>/schedstat: run ns, wait ns, timeslices), and the
//! CPU cgroup's quota throttling (cpu.stat: nr_periods, nr_throttled).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bench::json::ToJson;

/// One thread's counters, as schedstat gives them.
#[derive(Clone, Copy, Debug, Default)]
struct Sched {
    run_ns: u64,
    wait_ns: u64,
    slices: u64,
}

/// Run and wait summed over the threads of one name (workers share theirs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Share {
    /// Time on a CPU, as a share of one CPU over the phase.
    pub cpu: f64,
    /// The mean time runnable before getting a CPU, per timeslice.
    pub wait_per_slice_us: u64,
}

/// A process's threads and its cgroup's throttling at one moment.
pub struct Snapshot {
    at: Instant,
    threads: BTreeMap<u32, (String, Sched)>,
    throttled: Option<(u64, u64)>,
}

impl Snapshot {
    /// `pid`'s threads now; `cpu_cgroup` is where its cpu.stat is, if any.
    pub fn take(pid: u32, cpu_cgroup: Option<&Path>) -> Snapshot {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in dir.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let path = task.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if let Some(sched) = read_schedstat(&path.join("schedstat")) {
                    threads.insert(tid, (name.trim().to_owned(), sched));
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            threads,
            throttled: cpu_cgroup.and_then(read_throttling),
        }
    }

    /// What happened between `self` and `later`, per thread name.
    pub fn until(&self, later: &Snapshot) -> Usage {
        let mut threads: BTreeMap<String, Sched> = BTreeMap::new();
        for (tid, (name, now)) in &later.threads {
            let before = self.threads.get(tid).map(|(_, s)| *s).unwrap_or_default();
            let sum = threads.entry(name.clone()).or_default();
            sum.add(&Sched {
                run_ns: now.run_ns.saturating_sub(before.run_ns),
                wait_ns: now.wait_ns.saturating_sub(before.wait_ns),
                slices: now.slices.saturating_sub(before.slices),
            });
        }
        Usage {
            elapsed: later
                .at
                .duration_since(self.at)
                .max(Duration::from_millis(1)),
            threads,
            throttled: match (self.throttled, later.throttled) {
                (Some((p0, t0)), Some((p1, t1))) => Some((t1 - t0, p1 - p0)),
                _ => None,
            },
        }
    }
}

impl Sched {
    fn add(&mut self, other: &Sched) {
        self.run_ns += other.run_ns;
        self.wait_ns += other.wait_ns;
        self.slices += other.slices;
    }
}

/// A process's CPU use over a phase.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    elapsed: Duration,
    /// Per thread name (`probe`, `tokio-runtime-w`, ...).
    threads: BTreeMap<String, Sched>,
    /// Quota periods throttled, of all periods (None: no CPU cgroup read).
    pub throttled: Option<(u64, u64)>,
}

impl Usage {
    /// The threads named `name`, together.
    pub fn thread(&self, name: &str) -> Option<Share> {
        self.threads.get(name).map(|s| self.share(s))
    }

    /// Every thread but those named `name`, together.
    pub fn others(&self, name: &str) -> Share {
        let mut sum = Sched::default();
        for (_, s) in self.threads.iter().filter(|(n, _)| *n != name) {
            sum.add(s);
        }
        self.share(&sum)
    }

    pub fn total(&self) -> Share {
        self.others("")
    }

    fn share(&self, s: &Sched) -> Share {
        Share {
            cpu: s.run_ns as f64 / self.elapsed.as_nanos().max(1) as f64,
            wait_per_slice_us: s.wait_ns / s.slices.max(1) / 1000,
        }
    }
}

/// Its total, each thread's share, and the throttled periods.
impl ToJson for Usage {
    fn to_json(&self) -> serde_json::Value {
        let share = |s: Share| serde_json::json!({ "cpu": s.cpu, "wait_per_slice_us": s.wait_per_slice_us });
        serde_json::json!({
            "total": share(self.total()),
            "threads": self.threads.iter().map(|(n, s)| (n.clone(), share(self.share(s)))).collect::<serde_json::Map<_, _>>(),
            "throttled_periods": self.throttled.map(|t| t.0),
            "periods": self.throttled.map(|t| t.1),
        })
    }
}

/// The schedstat file of `pid`'s first thread named `name`.
pub fn named(pid: u32, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .map(|task| task.path())
        .find(|path| std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|path| path.join("schedstat"))
}

/// A thread's time runnable without a CPU so far, from its schedstat file.
pub fn wait_ns(schedstat: &Path) -> Option<u64> {
    read_schedstat(schedstat).map(|s| s.wait_ns)
}

fn read_schedstat(path: &Path) -> Option<Sched> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(Sched {
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
        slices: fields.next()??,
    })
}

/// nr_periods and nr_throttled from a cgroup's cpu.stat (v1 and v2 alike).
fn read_throttling(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    Some((field("nr_periods ")?, field("nr_throttled ")?))
}

/// The CPU cgroup directory of `pid` (v1's `cpu` controller, or v2's).
pub fn cpu_cgroup(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "cpu") {
            let dir = PathBuf::from(format!("/sys/fs/cgroup/{controllers}{path}"));
            return dir.join("cpu.stat").exists().then_some(dir);
        }
        if controllers.is_empty() {
            let dir = PathBuf::from(format!("/sys/fs/cgroup{path}"));
            if dir.join("cpu.stat").exists() {
                return Some(dir);
            }
        }
    }
    None
}
