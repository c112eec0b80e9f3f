//! Image references, `REPOSITORY:TAG[@DIGEST]`: Docker's grammar for each
//! part, checked before use, and the rule that says whether a pod
//! template's image is the one expected. Where a task's image comes from
//! (its flags, the environment, the commit) is `args`.

mod args;

use anyhow::{Result, bail};

pub use args::ImageArgs;

/// A checked image reference, `repository:tag`, pinned to a digest when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Parses `REPOSITORY:TAG[@DIGEST]`, checked as `package` and `deploy` check theirs.
    pub fn parse(text: &str) -> Result<ImageRef> {
        let seen = Seen::parse(text);
        let Some(tag) = seen.tag else {
            bail!(
                "invalid image reference {text:?}: give REPOSITORY:TAG or REPOSITORY:TAG@sha256:DIGEST, \
                 such as registry.example.com/team/api:3f2c1d0"
            );
        };
        check_repository(seen.repository)?;
        check_tag(tag)?;
        if let Some(digest) = seen.digest {
            check_digest(digest)?;
        }
        Ok(ImageRef {
            repository: seen.repository.to_owned(),
            tag: tag.to_owned(),
            digest: seen.digest.map(str::to_owned),
        })
    }

    /// Whether `image`, as a pod template names it, is this image: the same
    /// repository, and the same digest when this one has a digest, else the
    /// same tag (a tag says less than a digest, so it is all that can be compared).
    pub fn is(&self, image: &str) -> bool {
        let seen = Seen::parse(image);
        if seen.repository != self.repository {
            return false;
        }
        match &self.digest {
            Some(digest) => {
                seen.digest == Some(digest.as_str()) && seen.tag.is_none_or(|t| t == self.tag)
            }
            None => seen.tag == Some(self.tag.as_str()),
        }
    }
}

/// An image reference as found in a pod template, taken apart but not checked.
struct Seen<'a> {
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl Seen<'_> {
    fn parse(text: &str) -> Seen<'_> {
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        Seen {
            repository,
            tag,
            digest,
        }
    }
}

/// `sha256:` and 64 lowercase hex digits: what a registry reports for a pushed manifest.
pub fn check_digest(digest: &str) -> Result<()> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!(
            "invalid image digest {digest:?}: a digest is sha256: and 64 lowercase hex digits, \
             as `cargo xtask package --push` prints it after the @"
        );
    }
    Ok(())
}

/// Docker's grammar: `[HOST[:PORT]/]PATH`, each path component lowercase
/// `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s.
pub fn check_repository(repository: &str) -> Result<()> {
    let allowed = "an image repository is [HOST[:PORT]/]NAME[/NAME...], each NAME lowercase letters and digits \
                   joined by '.', '_', '__' or '-', with no tag (use --tag) and at most 255 characters";
    if repository.is_empty() || repository.len() > 255 {
        bail!("invalid image {repository:?}: {allowed}");
    }
    let mut parts: Vec<&str> = repository.split('/').collect();
    let first = parts[0];
    let has_host =
        parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        if !valid_host(first) {
            bail!(
                "invalid image {repository:?}: registry host {first:?} is not HOST[:PORT]; {allowed}"
            );
        }
        parts.remove(0);
    }
    for part in parts {
        if !valid_path_component(part) {
            bail!("invalid image {repository:?}: {part:?} is not allowed; {allowed}");
        }
    }
    Ok(())
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && name_ok
}

fn valid_path_component(part: &str) -> bool {
    let alnum = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let mut rest = part;
    loop {
        let end = rest.find(['.', '_', '-']).unwrap_or(rest.len());
        if !alnum(&rest[..end]) {
            return false;
        }
        rest = &rest[end..];
        if rest.is_empty() {
            return true;
        }
        let sep_len = if rest.starts_with("__") {
            2
        } else if rest.starts_with('-') {
            rest.len() - rest.trim_start_matches('-').len()
        } else {
            1
        };
        rest = &rest[sep_len..];
        if rest.is_empty() {
            return false;
        }
    }
}

/// Docker's grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!(
            "invalid image tag {tag:?}: a tag is 1 to 128 letters, digits, '_', '.' and '-', \
             and does not start with '.' or '-'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_docker_accepts_pass() {
        for ok in [
            "api",
            "registry.gitlab.com/group/project/api",
            "localhost:5000/api",
            "my-registry.example:443/a__b/c.d-e",
            "a--b",
        ] {
            check_repository(ok).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
    }

    #[test]
    fn repositories_docker_refuses_fail_with_what_is_allowed() {
        for bad in [
            "",
            "API",
            "api:v1",
            "api/",
            "/api",
            "a..b",
            "a._b",
            "-a",
            "a-",
            "re gistry/api",
            "host:port/api",
        ] {
            let err = check_repository(bad).expect_err(bad).to_string();
            assert!(err.contains("lowercase letters and digits"), "{bad}: {err}");
        }
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_and_without_a_digest() {
        let plain = ImageRef::parse("localhost:5000/shop/api:v2").unwrap();
        assert_eq!(
            (plain.repository.as_str(), plain.tag.as_str(), plain.digest),
            ("localhost:5000/shop/api", "v2", None)
        );
        let pinned = ImageRef::parse(&format!("localhost:5000/shop/api:v2@{DIGEST}")).unwrap();
        assert_eq!(pinned.digest.as_deref(), Some(DIGEST));
        assert_eq!(
            pinned.to_string(),
            format!("localhost:5000/shop/api:v2@{DIGEST}")
        );
        for bad in ["localhost:5000/api", "api:v2@sha256:abc", "API:v2"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_digest_decides_when_there_is_one_else_the_tag() {
        let by_tag = ImageRef::parse("reg.example/api:v2").unwrap();
        assert!(by_tag.is("reg.example/api:v2"));
        assert!(by_tag.is(&format!("reg.example/api:v2@{DIGEST}")));
        assert!(!by_tag.is("reg.example/api:v3"));
        assert!(!by_tag.is("other.example/api:v2"));
        let by_digest = ImageRef::parse(&format!("reg.example/api:v2@{DIGEST}")).unwrap();
        assert!(by_digest.is(&format!("reg.example/api:v2@{DIGEST}")));
        assert!(by_digest.is(&format!("reg.example/api@{DIGEST}")));
        assert!(
            !by_digest.is("reg.example/api:v2"),
            "a tag alone may point elsewhere now"
        );
        let other = DIGEST.replace("0123", "3210");
        assert!(!by_digest.is(&format!("reg.example/api:v2@{other}")));
    }

    #[test]
    fn tags_follow_docker_grammar() {
        check_tag("0123456789abcdef0123456789abcdef01234567").unwrap();
        check_tag("v1.2.3-dirty").unwrap();
        check_tag("_x").unwrap();
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            let err = check_tag(bad).expect_err(bad).to_string();
            assert!(err.contains("1 to 128"), "{bad}: {err}");
        }
    }
}
