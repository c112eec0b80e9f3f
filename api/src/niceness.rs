//! The service's own threads give way to the probe thread: each worker, and
//! the thread that accepts, raises its nice value, so that when a flood keeps
//! them busy the kernel runs the probe thread first as soon as a probe
//! arrives. Nice is per thread on Linux, and raising one's own needs no
//! privilege (lowering it back would, so it is done once, at start).
//!
//! Measured with `cargo xtask bench --abuse` (README.md, "Floods and
//! probes"): under the pipelining flood the probe thread waited 6.6 ms for a
//! CPU per timeslice at nice 0 beside the workers, 0.3 ms with the workers at
//! [`WORKER_NICE`]. The workers lose nothing to it: the probe thread sleeps
//! but for one short request every few seconds.

/// The nice value of the workers when a probe port is served: weight 110
/// against the probe thread's 1024 (the kernel's sched_prio_to_weight).
pub const WORKER_NICE: i32 = 10;

/// Raises the calling thread's nice value to [`WORKER_NICE`]; the value read
/// back, `None` when it could not be read.
pub fn give_way_to_probes() -> Option<i32> {
    sys::set_own_nice(WORKER_NICE);
    sys::own_nice()
}

/// The two calls into C: setpriority(2) and getpriority(2), which std does
/// not bind.
#[allow(unsafe_code)]
mod sys {
    const PRIO_PROCESS: i32 = 0;

    unsafe extern "C" {
        fn setpriority(which: i32, who: u32, prio: i32) -> i32;
        fn getpriority(which: i32, who: u32) -> i32;
        fn __errno_location() -> *mut i32;
    }

    /// Who 0 is the calling thread: Linux keeps a nice value per thread.
    pub fn set_own_nice(nice: i32) {
        // SAFETY: setpriority(2) takes three integers and changes only the
        // calling thread's scheduling weight; a failure leaves it as it was.
        unsafe {
            setpriority(PRIO_PROCESS, 0, nice);
        }
    }

    pub fn own_nice() -> Option<i32> {
        // SAFETY: getpriority(2) takes two integers and reads only; -1 is
        // also a valid nice value, so errno is cleared before and read after
        // (the calling thread's own errno, as __errno_location gives it).
        unsafe {
            *__errno_location() = 0;
            let nice = getpriority(PRIO_PROCESS, 0);
            (*__errno_location() == 0).then_some(nice)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_gives_way() {
        let before = sys::own_nice().expect("this thread's nice value");
        let niced = std::thread::spawn(give_way_to_probes)
            .join()
            .expect("the thread ran")
            .expect("its nice value read back");
        // A process started nicer than WORKER_NICE stays as nice: raising is all that is allowed.
        assert_eq!(niced, WORKER_NICE.max(before));
        assert_eq!(sys::own_nice(), Some(before), "this thread unchanged");
    }
}
