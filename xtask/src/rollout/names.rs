//! The names Kubernetes allows (DNS-1123 labels and subdomains) and kubeconfig
//! context names, checked before any call so that a bad one is refused with
//! what is allowed, not passed to kubectl.

use anyhow::{Result, bail};

use crate::context::{is_hidden, outside_text};

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
/// whitespace, control characters or the invisible ones that reorder or hide
/// text (a bidi override would make a plan line show other than it runs).
pub fn check_context(context: &str) -> Result<()> {
    if context.is_empty()
        || context.starts_with('-')
        || context.chars().any(|c| c.is_whitespace() || is_hidden(c))
    {
        bail!(
            "invalid kubeconfig context \"{}\": give a context name from `kubectl config get-contexts -o name` \
             (not empty, not starting with '-', no spaces, control or bidi characters)",
            outside_text(context, 200)
        );
    }
    Ok(())
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
        for bad in [
            "",
            "--kubeconfig=/etc/x",
            "a b",
            "prod\u{202e}ue-ved",
            "a\u{200b}b",
        ] {
            assert!(check_context(bad).is_err(), "{bad}");
        }
        let err = check_context("prod\u{202e}x").unwrap_err().to_string();
        assert!(err.contains(r"prod\u{202e}x"), "{err}");
    }
}
