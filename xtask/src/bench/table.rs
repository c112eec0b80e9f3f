//! The figures as a person reads them: one row per figure, one column per server.

use super::report::Report;
use super::*;

/// The report for a person: one row per figure, one column per server.
pub fn table(report: &Report) -> String {
    let api = &report.api;
    let go = report.go.as_ref();
    let mut out = format!(
        "bench {version}: GET {path}, {c} keep-alive connections from CPU {wc} (wrk -t1 at \
         saturation; our open-loop generator at fixed rates), server on CPU {sc}, {rounds} \
         round(s) of {d} s, medians unless said\n",
        version = report.version,
        path = report.path,
        c = report.connections,
        wc = report.wrk_cpu,
        sc = report.server_cpu,
        rounds = report.rounds,
        d = report.duration_secs,
    );
    let api_name = format!("api ({})", report.linking);
    out.push_str(&format!(
        "{:<28} {:>16} {:>16} {:>9}\n",
        "", api_name, "go net/http", "api/go"
    ));
    let mut row = |label: &str, a: String, g: Option<String>, ratio: Option<f64>| {
        out.push_str(&format!(
            "{label:<28} {a:>16} {:>16} {:>9}\n",
            g.unwrap_or_else(|| "-".into()),
            ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        ));
    };
    let ratios = report.ratios.as_ref();
    latency::rows(&report.latency, &mut row);
    row(
        "requests/s, saturated",
        thousands(api.requests_per_sec.round() as u64),
        go.map(|g| thousands(g.requests_per_sec.round() as u64)),
        ratios.map(|r| r.requests_per_sec),
    );
    row(
        "requests/s, best round",
        thousands(api.requests_per_sec_best.round() as u64),
        go.map(|g| thousands(g.requests_per_sec_best.round() as u64)),
        ratios.map(|r| r.requests_per_sec_best),
    );
    row(
        "CPU/request, saturated",
        format!("{:.2} us", api.cpu_us_per_request),
        go.map(|g| format!("{:.2} us", g.cpu_us_per_request)),
        ratios.map(|r| 1.0 / r.requests_per_cpu_second),
    );
    row(
        "server CPU busy",
        format!("{:.0}%", api.server_busy_percent),
        go.map(|g| format!("{:.0}%", g.server_busy_percent)),
        None,
    );
    row(
        "RSS idle",
        format!("{} KiB", thousands(api.rss_idle_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_idle_kib))),
        ratios.map(|r| r.rss_idle),
    );
    row(
        "RSS after load",
        format!("{} KiB", thousands(api.rss_after_load_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_after_load_kib))),
        ratios.map(|r| r.rss_after_load),
    );
    row(
        "RSS peak",
        format!("{} KiB", thousands(api.rss_peak_kib)),
        go.map(|g| format!("{} KiB", thousands(g.rss_peak_kib))),
        None,
    );
    row(
        &format!("exec to first 200 (of {STARTS})"),
        format!("{:.2} ms", api.startup_ms_median),
        go.map(|g| format!("{:.2} ms", g.startup_ms_median)),
        ratios.map(|r| r.startup),
    );
    row(
        "binary size",
        format!("{} B", thousands(api.binary_bytes)),
        go.map(|g| format!("{} B", thousands(g.binary_bytes))),
        ratios.map(|r| r.binary_size),
    );
    row(
        "wrk errors",
        api.errors.to_string(),
        go.map(|g| g.errors.to_string()),
        None,
    );
    if let Some(why) = &report.go_skipped {
        out.push_str(&format!("no Go comparison: {why}\n"));
    }
    let redone: u32 = report.latency.iter().map(|at| at.redone).sum();
    out.push_str(&format!(
        "latency: open loop at fixed rates (% of {}'s saturated requests/s in brackets), {} s a \
         server in one run, the servers in turn every {} ms; from the time a request was due \
         when it waited for a connection (a stall counts against every request it holds up), \
         else from the time it went out, to the time the kernel received its answer{}{}{}\n",
        report.rate_base,
        report.latency_secs,
        load::SLICE_MS,
        if report.idle_polling {
            "; idle CPUs polling"
        } else {
            "; idle CPUs halting (not root: the wake-ups are in the figures)"
        },
        if report.realtime {
            "; servers and generator under SCHED_FIFO"
        } else {
            ""
        },
        match redone {
            0 => String::new(),
            n => format!("; {n} run(s) made again: disturbed by other work"),
        }
    ));
    for figures in std::iter::once(api).chain(go) {
        out.push_str(&format!(
            "saturated requests/s of {}: bound by {}\n",
            figures.name,
            bound(figures.server_busy_percent)
        ));
    }
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let goals = &report.goals;
    out.push_str(&format!(
        "goals, at every fixed rate: p99 <= go: {}; requests per CPU-second >= {GOAL_CPU_RATIO}x \
         go: {}; and idle RSS <= 2 MB: {}; binary < 2 MB: {}",
        verdict(goals.p99_no_worse_than_go),
        verdict(goals.requests_per_cpu_second_at_least_1_8x_go),
        verdict(Some(goals.idle_rss_at_most_2_mb)),
        verdict(Some(goals.binary_under_2_mb)),
    ));
    out
}

/// What bounds a server's saturated requests/s, from how busy its CPU was.
fn bound(busy_percent: f64) -> String {
    if busy_percent >= 90.0 {
        format!("its own CPU ({busy_percent:.0}% busy)")
    } else {
        format!(
            "wrk's one CPU, not the server's ({busy_percent:.0}% busy): compare CPU per request"
        )
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
