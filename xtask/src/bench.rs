//! `cargo xtask bench`: placeholder, filled by the api/bench work.

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;

/// Measure the service: requests/s, latency, memory, start time, size
#[derive(Args, Debug)]
#[command(after_long_help = "Examples:\n  cargo xtask bench")]
pub struct Bench {}

impl Bench {
    pub fn run(self, _cx: &Context) -> Result<()> {
        bail!("bench is not built yet")
    }
}
