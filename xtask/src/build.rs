//! `cargo xtask build`: the release binary with its version compiled in.

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;
use xshell::cmd;

use crate::cli::{self, ArgMatches, Task, switch};
use crate::context::Context;
use crate::process::Stdout;
use crate::{tools, version};

/// The target a static build names explicitly: `+crt-static` on the host
/// target would also apply to proc-macro crates, which cannot link statically.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

const ABOUT: &str = "Build `api` in release mode, with its version compiled in, into bin/api";

const LONG_ABOUT: &str = "Build `api` in release mode, with its version compiled in, into bin/api.

The version is $API_VERSION if set, else `git describe --tags --always --dirty`. \
It reaches the binary as the API_VERSION environment variable of the build, which \
the crate reads with option_env!; `/`, `/health` and `bin/api --version` report it. \
When nothing changed, a second build compiles nothing.

Runs:
  git describe --tags --always --dirty
  API_VERSION=<version> cargo build --message-format=json-render-diagnostics \\
      --release --package api [--target x86_64-unknown-linux-gnu]
then copies the executable cargo names (under $CARGO_TARGET_DIR when set) to bin/api and \
prints `<version> <path>` on stdout.";

const AFTER_LONG_HELP: &str = "Environment:
  API_VERSION  the version to compile in, instead of git describe's

Examples:
  cargo xtask build
  API_VERSION=v1.4.0 cargo xtask build --static
  cargo xtask --dry-run build";

/// `cargo xtask build`.
#[derive(Debug, Default)]
pub struct Build {
    pub static_link: bool,
}

impl Task for Build {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("build", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .arg(switch(
                "static",
                "Link statically (glibc +crt-static, for x86_64-unknown-linux-gnu), as an image from scratch needs",
            ))
    }

    fn from(matches: &ArgMatches) -> Build {
        Build {
            static_link: matches.get_flag("static"),
        }
    }

    /// Builds, then prints `<version> <path>` on stdout.
    fn run(self, cx: &Context) -> Result<()> {
        let built = self.compile(cx)?;
        if !cx.dry_run {
            cx.result(format_args!("{} {}", built.version, built.binary));
        }
        Ok(())
    }
}

/// The cargo profile `api` is built with: cargo's flags for it and the
/// directory under the target dir it builds into.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// What ships and what is measured: `build`, `package`, `bench`.
    Release,
    /// Cargo.toml's `[profile.edit]`, quick to rebuild after an edit: `run`.
    Edit,
}

impl Profile {
    fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Profile::Release => &["--release"],
            Profile::Edit => &["--profile", "edit"],
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Edit => "edit",
        }
    }
}

/// What a build made.
pub struct Built {
    pub version: String,
    pub binary: Utf8PathBuf,
}

impl Build {
    /// Builds and copies to bin/api, printing nothing on stdout (for tasks
    /// whose stdout is their own result, such as `bench --json`).
    pub fn compile(&self, cx: &Context) -> Result<Built> {
        let built = self.cargo_build(cx, Profile::Release)?;
        let binary = cx.path("bin/api");
        cx.copy(&built.binary, &binary)?;
        Ok(Built {
            version: built.version,
            binary,
        })
    }

    /// Builds with `profile`, printing nothing on stdout; the binary is
    /// where cargo put it.
    pub fn cargo_build(&self, cx: &Context, profile: Profile) -> Result<Built> {
        tools::require(&[&tools::CARGO])?;
        let version = version::resolve(cx, &cx.root)?;
        let sh = &cx.sh;
        let cargo = tools::cargo();

        let profile_args = profile.cargo_args();
        let target_args: &[&str] = match self.static_link {
            true => &["--target", STATIC_TARGET],
            false => &[],
        };
        // Cargo says where it put the executable (CARGO_TARGET_DIR, a config's
        // build.target-dir): its JSON messages on stdout, diagnostics on stderr.
        let mut compile = cx.change(cmd!(
            sh,
            "{cargo} build --message-format=json-render-diagnostics {profile_args...} --package api {target_args...}"
        ));
        if self.static_link {
            compile = compile.env("RUSTFLAGS", "-C target-feature=+crt-static");
        }
        let messages = compile
            .env(version::API_VERSION, &version)
            .stdout(Stdout::Kept)
            .run(cx)
            .context("compile api")?
            .map(|done| done.stdout);
        let binary = match messages {
            Some(messages) => api_executable(&messages)?,
            // --dry-run: where it would be, by the same rules cargo follows for the environment.
            None => {
                let target_dir = match std::env::var("CARGO_TARGET_DIR") {
                    Ok(dir) if !dir.is_empty() => cx.root.join(dir),
                    _ => cx.path("target"),
                };
                let target_dir = match self.static_link {
                    true => target_dir.join(STATIC_TARGET),
                    false => target_dir,
                };
                target_dir.join(profile.dir()).join("api")
            }
        };
        Ok(Built { version, binary })
    }
}

/// The `api` executable from cargo's `--message-format=json` messages: the
/// `compiler-artifact` of the `api` binary target names it (also when
/// nothing was compiled: cargo reports fresh artifacts too).
fn api_executable(messages: &str) -> Result<Utf8PathBuf> {
    let executable = messages
        .lines()
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["target"]["name"] == "api"
                && message["target"]["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
        })
        .find_map(|message| message["executable"].as_str().map(Utf8PathBuf::from));
    executable.context(
        "cargo build reported no executable for the api binary, so bin/api is left as it was; \
         is there a [[bin]] api in api/Cargo.toml?",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_is_the_one_cargo_names() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/api#0.1.0","target":{"kind":["lib"],"name":"api"},"executable":null}
{"reason":"compiler-artifact","package_id":"registry+https://x#other@1.0.0","target":{"kind":["bin"],"name":"other"},"executable":"/t/release/other"}
{"reason":"compiler-artifact","package_id":"path+file:///w/api#0.1.0","target":{"kind":["bin"],"name":"api"},"executable":"/elsewhere/release/api"}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(api_executable(messages).unwrap(), "/elsewhere/release/api");
        let err = api_executable(r#"{"reason":"build-finished","success":true}"#).unwrap_err();
        assert!(
            err.to_string().contains("bin/api is left as it was"),
            "{err}"
        );
    }
}
