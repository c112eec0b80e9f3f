//! `cargo xtask lint`: placeholder, filled by the api/lint work.

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;

/// Run every linter on the config files
#[derive(Args, Debug)]
#[command(after_long_help = "Examples:\n  cargo xtask lint")]
pub struct Lint {}

impl Lint {
    pub fn run(self, _cx: &Context) -> Result<()> {
        bail!("lint is not built yet")
    }
}
