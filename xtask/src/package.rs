//! `cargo xtask package`: placeholder, filled by the api/package work.

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;

/// Build the container image, tagged with the commit SHA
#[derive(Args, Debug)]
#[command(after_long_help = "Examples:\n  cargo xtask package")]
pub struct Package {}

impl Package {
    pub fn run(self, _cx: &Context) -> Result<()> {
        bail!("package is not built yet")
    }
}
