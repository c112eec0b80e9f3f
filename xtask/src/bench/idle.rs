//! Idle CPUs that poll rather than halt while latency is measured.
//!
//! A CPU with nothing to run halts; a request then wakes it with an
//! interrupt. On bare metal that costs a few microseconds. On a virtual
//! machine a halted vCPU is a sleeping thread of the host, woken through the
//! host's scheduler: here (a Firecracker VM, cpuidle-haltpoll with
//! guest_halt_poll_ns 0) that wake-up was 50-60 us of both servers' p50 and,
//! when the host was busy, milliseconds of their p99, and it moved the p99
//! 2-4x from one run to the next. Holding /dev/cpu_dma_latency at 0, as
//! cyclictest and tuned's latency-performance profile do, tells cpuidle that
//! no wake-up latency is acceptable: idle CPUs poll. The kernel drops the
//! request when the file is closed, however the process ends.

use std::fs::File;
use std::io::Write as _;

/// The PM QoS file: the wake-up latency, in microseconds, the system accepts.
pub const PATH: &str = "/dev/cpu_dma_latency";

/// Held while alive: idle CPUs poll.
pub struct Polling {
    _file: File,
}

/// Holds wake-up latency at 0 until the result is dropped; why not, when it
/// cannot (the file is root's, or absent).
pub fn poll() -> Result<Polling, String> {
    let mut file = File::options()
        .write(true)
        .open(PATH)
        .map_err(|err| format!("open {PATH}: {err}"))?;
    // The kernel reads a binary s32 (or a hex string); 0 us.
    file.write_all(&0i32.to_ne_bytes())
        .map_err(|err| format!("write 0 to {PATH}: {err}"))?;
    Ok(Polling { _file: file })
}
