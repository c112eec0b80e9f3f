//! Where a task's time goes: in the tools it runs (every `Step`: the plugin,
//! kubectl; and the preview answering), in the waits it was told to do (the
//! poll interval, the sanity retries), and what is left, its own. `release`
//! prints the sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static IN_TOOLS: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicU64 = AtomicU64::new(0);

fn add(counter: &AtomicU64, since: Instant) {
    let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(nanos, Ordering::Relaxed);
}

/// Runs `f`, counting its time as time spent in the tools.
pub fn in_tools<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    add(&IN_TOOLS, start);
    result
}

/// Runs `f`, counting its time as a wait the task was told to do.
pub fn waiting<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    add(&WAITING, start);
    result
}

/// `1900.2ms in the tools, 300.0ms in waits, 1.2ms own`, for a run that took `total`.
pub fn summary(total: Duration) -> String {
    let tools = Duration::from_nanos(IN_TOOLS.load(Ordering::Relaxed));
    let waits = Duration::from_nanos(WAITING.load(Ordering::Relaxed));
    let own = total.saturating_sub(tools + waits);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.1}ms in the tools (kubectl-argo-rollouts, kubectl, git) and the preview's answers, {:.1}ms in waits, {:.1}ms own",
        ms(tools),
        ms(waits),
        ms(own)
    )
}
