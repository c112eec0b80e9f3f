//! Memory a burst of connections freed, given back to the system once the
//! burst is over.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::server::Shared;

/// How often the service looks whether a burst of connections has ended.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// A burst worth returning memory after: this many connections open at once.
const TRIM_AFTER_PEAK: usize = 64;

/// Returns the memory a burst of connections freed to the system, once the
/// burst is over (open connections down to half their peak or less).
///
/// glibc's malloc gives back only the top of its heaps on free: after 5,000
/// connections RSS stayed at 88-102 MB where idle is 2-3 MB, and
/// `malloc_trim(0)` brought it back to 3-4 MB. mimalloc, measured instead,
/// kept it too (it purges on a later allocation, and an idle service makes
/// none) and starts at 7 MB.
pub async fn return_freed_memory(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let open = shared.open();
        let peak = shared.peak_open.load(Ordering::Relaxed);
        if peak >= TRIM_AFTER_PEAK && open <= peak / 2 {
            shared.peak_open.store(open, Ordering::Relaxed);
            trim::malloc_trim();
        }
    }
}

/// The one call into C: glibc's `malloc_trim`, which has no safe binding in
/// std. It takes a number and touches only malloc's own state.
#[allow(unsafe_code)]
mod trim {
    unsafe extern "C" {
        #[link_name = "malloc_trim"]
        fn c_malloc_trim(pad: usize) -> i32;
    }

    /// Gives every free page of every malloc arena back to the system.
    pub fn malloc_trim() {
        // SAFETY: malloc_trim(3) takes a byte count, may be called at any
        // time from any thread, and only releases memory malloc holds free.
        unsafe {
            c_malloc_trim(0);
        }
    }
}
