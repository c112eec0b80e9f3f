//! Image references: where an image goes (`IMAGE`) and which one (`TAG`),
//! resolved the same way by `package` and `deploy`, and checked before use.

use anyhow::{Result, bail};
use clap::Args;

use crate::context::Context;
use crate::version;

/// The repository part of an image reference when nothing else names one.
pub const DEFAULT_IMAGE: &str = "api";

#[derive(Args, Debug, Clone, Default)]
pub struct ImageArgs {
    /// Image repository, without tag [default: $CI_REGISTRY_IMAGE, then `api`]
    #[arg(long, env = "API_IMAGE", value_name = "REPOSITORY", value_parser = NotEmptyOnTheCommandLine)]
    pub image: Option<String>,

    /// Image tag [default: $CI_COMMIT_SHA, then the full SHA of HEAD]
    #[arg(long, env = "API_IMAGE_TAG", value_parser = NotEmptyOnTheCommandLine)]
    pub tag: Option<String>,

    /// Accept a work tree with uncommitted changes; the tag then ends in `-dirty`
    #[arg(long)]
    pub allow_dirty: bool,
}

/// Refuses `--image=` and `--tag=`: an empty flag is a mistake (an unset
/// variable in a script, say), and silently taking the default would build or
/// deploy something else than asked. An empty `API_IMAGE` or `API_IMAGE_TAG`
/// counts as unset, as before: CI templates often set a variable to empty.
#[derive(Clone)]
struct NotEmptyOnTheCommandLine;

impl clap::builder::TypedValueParser for NotEmptyOnTheCommandLine {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        self.parse_ref_(cmd, arg, value, clap::parser::ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
        source: clap::parser::ValueSource,
    ) -> Result<String, clap::Error> {
        let value = clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)?;
        if value.is_empty() && source == clap::parser::ValueSource::CommandLine {
            let flag = arg
                .and_then(clap::Arg::get_long)
                .map_or(String::new(), |long| format!("--{long}"));
            let default = arg
                .and_then(|arg| arg.get_help())
                .map_or(String::new(), |help| {
                    let help = help.to_string();
                    help.find("[default: ")
                        .map(|i| format!(" ({})", help[i + 1..].trim_end_matches(']')))
                        .unwrap_or_default()
                });
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "{flag} is empty: give a value, or leave {flag} out for the default{default}\n"
                ),
            )
            .with_cmd(cmd));
        }
        Ok(value)
    }
}

/// A checked image reference, `repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

impl ImageArgs {
    /// Flag, then environment, then GitLab's predefined variables, then the commit.
    /// A dirty work tree is refused unless `--allow-dirty`: an image must say
    /// truthfully what it holds.
    pub fn resolve(&self, cx: &Context) -> Result<ImageRef> {
        let repository = first_set([self.image.clone(), env("CI_REGISTRY_IMAGE")])
            .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        check_repository(&repository)?;
        let tag = match first_set([self.tag.clone(), env("CI_COMMIT_SHA")]) {
            Some(tag) => tag,
            None => {
                let sha = version::head_sha(&cx.sh, &cx.root)?;
                if version::is_dirty(&cx.sh, &cx.root)? {
                    if !self.allow_dirty {
                        bail!(
                            "the work tree has uncommitted changes, so an image tagged {sha} would not hold what that commit holds; \
                             commit or stash them, or pass --allow-dirty (the tag then ends in -dirty)"
                        );
                    }
                    format!("{sha}-dirty")
                } else {
                    sha
                }
            }
        };
        check_tag(&tag)?;
        Ok(ImageRef { repository, tag })
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn first_set<const N: usize>(candidates: [Option<String>; N]) -> Option<String> {
    candidates.into_iter().flatten().find(|s| !s.is_empty())
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
