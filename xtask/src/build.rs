//! `cargo xtask build`: the release binary with its version compiled in.

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use clap::Args;
use xshell::cmd;

use crate::context::Context;
use crate::{tools, version};

/// The target a static build names explicitly: `+crt-static` on the host
/// target would also apply to proc-macro crates, which cannot link statically.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Build `api` in release mode, with its version compiled in, into bin/api
#[derive(Args, Debug, Default)]
#[command(
    long_about = "Build `api` in release mode, with its version compiled in, into bin/api.

The version is $API_VERSION if set, else `git describe --tags --always --dirty`. \
It reaches the binary as the API_VERSION environment variable of the build, which \
the crate reads with option_env!; `/`, `/health` and `bin/api --version` report it. \
When nothing changed, a second build compiles nothing.

Runs:
  git describe --tags --always --dirty
  API_VERSION=<version> cargo build --release --package api [--target x86_64-unknown-linux-gnu]
then copies the binary to bin/api and prints `<version> <path>` on stdout.",
    after_long_help = "Environment:
  API_VERSION  the version to compile in, instead of git describe's

Examples:
  cargo xtask build
  API_VERSION=v1.4.0 cargo xtask build --static
  cargo xtask --dry-run build"
)]
pub struct Build {
    /// Link statically (glibc +crt-static, for x86_64-unknown-linux-gnu), as an image from scratch needs
    #[arg(long = "static")]
    pub static_link: bool,
}

/// What a build made.
pub struct Built {
    pub version: String,
    pub binary: Utf8PathBuf,
}

impl Build {
    /// Builds, then prints `<version> <path>` on stdout.
    pub fn run(&self, cx: &Context) -> Result<Built> {
        let built = self.compile(cx)?;
        if !cx.dry_run {
            cx.result(format_args!("{} {}", built.version, built.binary));
        }
        Ok(built)
    }

    /// Builds and copies to bin/api, printing nothing on stdout (for tasks
    /// whose stdout is their own result, such as `bench --json`).
    pub fn compile(&self, cx: &Context) -> Result<Built> {
        tools::require(&[&tools::CARGO])?;
        let version = version::resolve(&cx.sh, &cx.root)?;
        let sh = &cx.sh;
        let cargo = tools::cargo();

        let mut target_args: Vec<&str> = Vec::new();
        let mut env = vec![(version::API_VERSION, version.as_str())];
        if self.static_link {
            target_args.extend(["--target", STATIC_TARGET]);
            env.insert(0, ("RUSTFLAGS", "-C target-feature=+crt-static"));
        }
        cx.run_with_env(
            &env,
            cmd!(sh, "{cargo} build --release --package api {target_args...}"),
        )
        .context("compile api")?;

        let built = match self.static_link {
            true => cx.path(&format!("target/{STATIC_TARGET}/release/api")),
            false => cx.path("target/release/api"),
        };
        let binary = cx.path("bin/api");
        cx.copy(&built, &binary)?;
        Ok(Built { version, binary })
    }
}
