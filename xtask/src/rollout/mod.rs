//! The blue/green tasks: `deploy`, `status`, `sanity`, `promote`, `abort`,
//! `release`. They change an Argo Rollout through the `kubectl-argo-rollouts`
//! plugin and read it back with `kubectl get`, every call bounded in time;
//! `rollout.yaml` at the root is the Rollout. README.md ("Blue/green with
//! Argo Rollouts") says how the controller behaves and what each task relies on.

mod abort;
mod deploy;
pub mod interrupt;
mod kube;
#[cfg(test)]
mod manifest;
mod plugin;
mod promote;
mod release;
mod sanity;
mod state;
mod status;
mod timing;
mod wait;

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

pub use abort::Abort;
pub use deploy::Deploy;
pub use promote::Promote;
pub use release::Release;
pub use sanity::Sanity;
pub use status::Status;

use crate::context::Context;
use crate::tools;
use kube::Kubectl;
use plugin::Plugin;
use state::RolloutState;

/// The defaults, which are the names in `rollout.yaml` (a test holds the two together).
pub const DEFAULT_ROLLOUT: &str = "api";
pub const DEFAULT_CONTAINER: &str = "api";
pub const DEFAULT_ACTIVE_SERVICE: &str = "api-active";
pub const DEFAULT_PREVIEW_SERVICE: &str = "api-preview";
/// The port both Services expose (their targetPort is the container's 8080).
pub const SERVICE_PORT: u16 = 80;
/// What the readiness and liveness probes ask, and what `sanity` checks first.
pub const HEALTH_PATH: &str = "/health";

/// Which Rollout, in which namespace and cluster: the flags every blue/green task takes.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The Argo Rollout to act on
    #[arg(long, env = "API_ROLLOUT", default_value = DEFAULT_ROLLOUT, value_name = "NAME")]
    pub rollout: String,

    /// The container in the Rollout's pod template that runs the api
    #[arg(long, env = "API_CONTAINER", default_value = DEFAULT_CONTAINER, value_name = "NAME")]
    pub container: String,

    /// Kubernetes namespace [default: $KUBE_NAMESPACE, then the kubeconfig context's]
    #[arg(short = 'n', long, env = "API_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// kubeconfig context [default: the current context]
    #[arg(long, env = "API_KUBE_CONTEXT", value_name = "CONTEXT")]
    pub context: Option<String>,

    /// The longest wait for one answer of the API server (kubectl's and the plugin's
    /// --request-timeout); a call is stopped after three times this
    #[arg(long, env = "API_KUBE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
}

/// The tools that change the Rollout (the plugin) and read it (kubectl).
pub struct Cluster {
    pub plugin: Plugin,
    pub kubectl: Kubectl,
}

impl Cluster {
    pub fn target(&self) -> &Target {
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

impl Target {
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
    fn checked(&self) -> Result<Target> {
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
        Ok(Target {
            namespace,
            ..self.clone()
        })
    }
}

/// A DNS-1123 label: what Kubernetes allows for namespaces, Services and container names.
pub fn check_label(what: &str, name: &str) -> Result<()> {
    if !is_label(name) {
        bail!(
            "invalid {what} name {name:?}: a Kubernetes name (DNS-1123 label) is 1 to 63 lowercase letters, \
             digits and '-', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// A DNS-1123 subdomain: what Kubernetes allows for most object names, a Rollout's among them.
pub fn check_object_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 253 || !name.split('.').all(is_label) {
        bail!(
            "invalid {what} name {name:?}: a Kubernetes object name (DNS-1123 subdomain) is at most 253 \
             characters of lowercase letters, digits, '-' and '.', each dot-separated part starting and \
             ending with a letter or digit"
        );
    }
    Ok(())
}

fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// kubeconfig context names are free-form (`gke_project_zone_name`,
/// `arn:aws:eks:...`), but one must not be empty, look like a flag, or hold
/// whitespace or control characters.
fn check_context(context: &str) -> Result<()> {
    if context.is_empty()
        || context.starts_with('-')
        || context.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "invalid kubeconfig context {context:?}: give a context name from `kubectl config get-contexts -o name` \
             (not empty, not starting with '-', no spaces)"
        );
    }
    Ok(())
}

/// The longest duration the plugin accepts: Go's `time.Duration` is an i64 of nanoseconds.
const GO_MAX_DURATION_NANOS: u128 = i64::MAX as u128;
/// [`GO_MAX_DURATION_NANOS`] as Go writes it.
const GO_MAX_DURATION_TEXT: &str = "2562047h47m16.854775807s";

/// A duration as the plugin takes it (Go's `time.ParseDuration` units): `300s`, `5m`, `1m30s`, `500ms`, `1h`.
/// Exact integer arithmetic, as Go's: anything longer than Go's `time.Duration`
/// holds is refused here rather than overflowing later.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: use a number with a unit, h, m, s or ms, such as 300s, 5m or 1m30s"
        )
    };
    let too_long = || {
        format!(
            "invalid duration {text:?}: it is longer than the longest the plugin accepts \
             ({GO_MAX_DURATION_TEXT}, Go's time.Duration); use a shorter one, such as 300s or 1h"
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (whole, fraction) = rest[..number_len]
            .split_once('.')
            .unwrap_or((&rest[..number_len], ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        // Leading zeros make no number longer; more than 30 digits always are too long.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 30 {
            return Err(too_long());
        }
        let whole: u128 = match whole {
            "" => 0,
            digits => digits.parse().map_err(|_| invalid())?,
        };
        // Digits beyond the 18th are below a nanosecond even for hours: dropped, as Go does.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = match fraction {
            "" => 0,
            digits => {
                let value: u128 = digits.parse().map_err(|_| invalid())?;
                value * unit_nanos / 10u128.pow(digits.len() as u32)
            }
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|n| *n <= GO_MAX_DURATION_NANOS)
            .ok_or_else(too_long)?;
    }
    if total < 1_000_000 {
        // The plugin reads a zero --timeout as "wait forever".
        return Err(format!(
            "invalid duration {text:?}: it must be at least 1ms, such as 300s or 5m"
        ));
    }
    let total = u64::try_from(total).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(total))
}

/// A duration written the way the plugin's `--timeout` parses it: `300s`,
/// `1500ms`, and in nanoseconds when nothing coarser is exact.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos % 1_000_000_000 == 0 {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{nanos}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_dns_1123() {
        for ok in ["api", "a", "api-preview", "a1-b2", &"x".repeat(63)] {
            check_label("namespace", ok).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for bad in [
            "",
            "API",
            "-api",
            "api-",
            "a_b",
            "a.b",
            "a b",
            &"x".repeat(64),
        ] {
            let err = check_label("namespace", bad).expect_err(bad).to_string();
            assert!(err.contains("DNS-1123 label"), "{bad}: {err}");
            assert!(err.contains("namespace"), "{bad}: {err}");
        }
    }

    #[test]
    fn object_names_may_have_dots() {
        check_object_name("rollout", "api.v2").unwrap();
        for bad in ["", "api..v2", ".api", "Api", "api_v2"] {
            let err = check_object_name("rollout", bad)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("DNS-1123 subdomain"), "{bad}: {err}");
        }
    }

    #[test]
    fn contexts_are_free_form_but_not_flags() {
        check_context("arn:aws:eks:eu-west-1:123:cluster/prod").unwrap();
        check_context("gke_project_zone_name").unwrap();
        for bad in ["", "--kubeconfig=/etc/x", "a b"] {
            assert!(check_context(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_take_go_units() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "300", "5x", "s", "m5", "-5s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("300s, 5m or 1m30s"), "{bad}: {err}");
        }
        let err = parse_duration("0s").unwrap_err();
        assert!(err.contains("at least 1ms"), "{err}");
    }

    #[test]
    fn durations_go_cannot_hold_are_refused_when_parsed() {
        let max = Duration::from_nanos(i64::MAX as u64);
        assert_eq!(parse_duration("2562047h47m16.854775807s"), Ok(max));
        for bad in [
            "2562047h47m16.854775808s",
            "2562048h",
            "9223372036855s",
            "10000000000000000000s",
            "18446744073709551616s",
            "99999999999999999999999999999999999999999h",
            "2562047h2562047h",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("2562047h47m16.854775807s"), "{bad}: {err}");
            assert!(err.contains("use a shorter one"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_exact_not_rounded_through_a_float() {
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1.0000001s"),
            Ok(Duration::from_nanos(1_000_000_100))
        );
        assert_eq!(
            parse_duration("0000000000000000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
        for bad in [".s", "1..5s", "1.5.5s", "."] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("300s, 5m or 1m30s"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_written_as_the_plugin_parses_them() {
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        let max = Duration::from_nanos(i64::MAX as u64);
        assert_eq!(go_duration(max), "9223372036854775807ns");
        assert_eq!(
            go_duration(Duration::from_nanos(1_000_000_100)),
            "1000000100ns"
        );
    }
}
