//! The blue/green tasks: `deploy`, `status`, `sanity`, `promote`, `abort`,
//! `release`, `history`, `rollback`. They change an Argo Rollout through the `kubectl-argo-rollouts`
//! plugin and read it back with `kubectl get`, every call bounded in time;
//! `rollout.yaml` at the root is the Rollout. README.md ("Blue/green with
//! Argo Rollouts") says how the controller behaves and what each task relies on.

mod abort;
mod analysis;
mod confirm;
mod deploy;
mod duration;
mod history;

mod kube;
#[cfg(test)]
mod manifest;
mod names;
mod plugin;
mod port_forward;
mod promote;
mod release;
mod rollback;
mod sanity;
mod state;
mod status;

mod wait;

use std::time::Duration;

use anyhow::Result;

pub use abort::Abort;
pub use deploy::Deploy;
pub use history::History;
pub use promote::Promote;
pub use release::Release;
pub use rollback::Rollback;
pub use sanity::Sanity;
pub use status::Status;

pub use duration::{go_duration, parse_duration};
pub use names::{check_label, check_object_name};

use crate::cli::{self, Arg, ArgMatches, option, switch};
use crate::context::Context;
use crate::tools;
use kube::Kubectl;
use names::check_context;
use plugin::Plugin;
use state::RolloutState;

/// The defaults, which are the names in `rollout.yaml` (a test holds the two together).
pub const DEFAULT_ROLLOUT: &str = "api";
pub const DEFAULT_CONTAINER: &str = "api";
pub const DEFAULT_ACTIVE_SERVICE: &str = "api-active";
pub const DEFAULT_PREVIEW_SERVICE: &str = "api-preview";
/// The port both Services expose (their targetPort is the container's 8080).
pub const SERVICE_PORT: u16 = 80;
/// What the liveness probe asks, and what `sanity` checks first (readiness asks `/ready`).
pub const HEALTH_PATH: &str = "/health";

/// Which Rollout, in which namespace and cluster: the flags every blue/green task takes.
#[derive(Debug, Clone)]
pub struct RolloutArgs {
    pub rollout: String,
    pub container: String,
    pub namespace: Option<String>,
    pub context: Option<String>,
    /// The longest wait for one answer of the API server.
    pub request_timeout: Duration,
}

impl RolloutArgs {
    pub fn args() -> [Arg; 5] {
        [
            option("rollout", "NAME", "The Argo Rollout to act on")
                .env("API_ROLLOUT")
                .default_value(DEFAULT_ROLLOUT),
            option(
                "container",
                "NAME",
                "The container in the Rollout's pod template that runs the api",
            )
            .env("API_CONTAINER")
            .default_value(DEFAULT_CONTAINER),
            option(
                "namespace",
                "NAMESPACE",
                "Kubernetes namespace [default: $KUBE_NAMESPACE, then the kubeconfig context's]",
            )
            .short('n')
            .env("API_NAMESPACE"),
            option(
                "context",
                "CONTEXT",
                "kubeconfig context [default: the current context]",
            )
            .env("API_KUBE_CONTEXT"),
            duration(
                "request-timeout",
                "10s",
                "The longest wait for one answer of the API server (kubectl's and the plugin's \
                 --request-timeout); a call is stopped after three times this",
            )
            .env("API_KUBE_REQUEST_TIMEOUT"),
        ]
    }

    pub fn from(matches: &ArgMatches) -> RolloutArgs {
        RolloutArgs {
            rollout: cli::value(matches, "rollout"),
            container: cli::value(matches, "container"),
            namespace: cli::optional(matches, "namespace"),
            context: cli::optional(matches, "context"),
            request_timeout: cli::value(matches, "request-timeout"),
        }
    }
}

/// `--LONG DURATION`: a Go duration (`90s`, `5m`), checked as it is parsed.
fn duration(long: &'static str, default: &'static str, help: &'static str) -> Arg {
    option(long, "DURATION", help)
        .default_value(default)
        .value_parser(parse_duration)
}

/// `--yes`: `promote` and `abort` ask at a terminal, unless given this.
fn yes() -> Arg {
    switch("yes", "Do not ask for confirmation at a terminal").short('y')
}

/// The tools that change the Rollout (the plugin) and read it (kubectl).
pub struct Cluster {
    pub plugin: Plugin,
    pub kubectl: Kubectl,
}

impl Cluster {
    pub fn target(&self) -> &RolloutArgs {
        &self.kubectl.target
    }

    pub fn rollout(&self) -> &str {
        &self.kubectl.target.rollout
    }

    /// The Rollout as the API has it now.
    pub fn read(&self, cx: &Context) -> Result<RolloutState> {
        self.kubectl.read(cx)
    }
}

impl RolloutArgs {
    /// Checks every name, then finds the plugin and kubectl: nothing runs
    /// before all of that succeeds, and every missing tool is named at once.
    fn cluster(&self) -> Result<Cluster> {
        let checked = self.checked()?;
        let mut found = tools::require(&[&tools::ARGO_ROLLOUTS, &tools::KUBECTL])?;
        let kubectl = found.remove(1);
        let plugin = found.remove(0);
        Ok(Cluster {
            plugin: Plugin::new(plugin, checked.clone()),
            kubectl: Kubectl {
                path: kubectl,
                target: checked,
            },
        })
    }

    /// Only kubectl, for the tasks that only read.
    fn kubectl(&self) -> Result<Kubectl> {
        let checked = self.checked()?;
        let path = tools::require(&[&tools::KUBECTL])?.remove(0);
        Ok(Kubectl {
            path,
            target: checked,
        })
    }

    /// The names checked, and the namespace fallback ($KUBE_NAMESPACE, GitLab's) applied.
    fn checked(&self) -> Result<RolloutArgs> {
        let namespace = self.namespace.clone().or_else(|| {
            std::env::var("KUBE_NAMESPACE")
                .ok()
                .filter(|ns| !ns.is_empty())
        });
        check_object_name("rollout", &self.rollout)?;
        check_label("container", &self.container)?;
        if let Some(ns) = &namespace {
            check_label("namespace", ns)?;
        }
        if let Some(context) = &self.context {
            check_context(context)?;
        }
        Ok(RolloutArgs {
            namespace,
            ..self.clone()
        })
    }
}
