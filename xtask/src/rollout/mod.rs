//! The blue/green tasks: placeholders, filled by the rollout work.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;

macro_rules! placeholder {
    ($name:ident, $task:literal, $about:literal) => {
        #[doc = $about]
        #[derive(Args, Debug)]
        #[command(after_long_help = concat!("Examples:\n  cargo xtask ", $task))]
        pub struct $name {}

        impl $name {
            #[allow(dead_code)]
            pub fn run(self, _cx: &Context) -> Result<()> {
                bail!(concat!($task, " is not built yet"))
            }
        }
    };
}

placeholder!(
    Deploy,
    "deploy",
    "Set the new image on the Rollout: it goes to the preview pods"
);
placeholder!(
    Sanity,
    "sanity",
    "Check the preview: /health answers 200 with the expected version"
);
placeholder!(
    Promote,
    "promote",
    "Switch traffic to the preview, atomically"
);
placeholder!(Abort, "abort", "Drop the preview; the active version stays");
placeholder!(
    Release,
    "release",
    "Deploy, wait, check, promote; abort on any failure"
);

/// Show where the rollout stands
#[derive(Args, Debug)]
#[command(after_long_help = "Examples:\n  cargo xtask status")]
pub struct Status {}

impl Status {
    pub fn run(self, _cx: &Context) -> Result<ExitCode> {
        bail!("status is not built yet")
    }
}
