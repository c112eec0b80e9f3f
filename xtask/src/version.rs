//! Which version a build says it is: `API_VERSION`, else what `git describe`
//! says, and what a version may hold.

use anyhow::{Context as _, Result, bail};
use camino::Utf8Path;

use crate::context::Context;
use crate::git;

/// Environment variable that overrides the version `git describe` gives.
pub const API_VERSION: &str = "API_VERSION";

/// `API_VERSION` if set and not empty, else `git describe --tags --always --dirty`.
pub fn resolve(cx: &Context, dir: &Utf8Path) -> Result<String> {
    resolve_with(cx, dir, std::env::var(API_VERSION).ok())
}

fn resolve_with(cx: &Context, dir: &Utf8Path, from_env: Option<String>) -> Result<String> {
    match checked(from_env)? {
        Some(version) => Ok(version),
        None => describe(cx, dir),
    }
}

/// `API_VERSION` if set and not empty, checked; None otherwise.
pub fn from_env() -> Result<Option<String>> {
    checked(std::env::var(API_VERSION).ok())
}

fn checked(from_env: Option<String>) -> Result<Option<String>> {
    let Some(version) = from_env.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    check_version(&version).with_context(|| format!("{API_VERSION}={version:?}"))?;
    Ok(Some(version))
}

/// `git describe --tags --always --dirty` of the checkout at `dir`.
pub fn describe(cx: &Context, dir: &Utf8Path) -> Result<String> {
    git::read(cx, dir, &["describe", "--tags", "--always", "--dirty"]).map_err(|err| {
        git::failed(
            cx,
            err,
            "cannot tell the version",
            &format!("{dir} is not a git checkout with a commit; run from a clone"),
            &format!("or set {API_VERSION}"),
        )
    })
}

/// A version goes into JSON, logs and labels: keep it to what a tag may hold.
pub fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if !ok {
        bail!(
            "invalid version {version:?}: use 1 to 128 characters of letters, digits, '.', '_', '-' and '+'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use camino::Utf8PathBuf;
    use xshell::Shell;

    use super::*;
    use crate::git::tests::{Repo, context_in};

    #[test]
    fn no_tags_gives_the_short_sha() {
        let repo = Repo::new();
        repo.commit("a", "1");
        let version = repo.describe();
        assert!(version.len() >= 7, "{version}");
        assert!(
            repo.head().starts_with(&version),
            "{version} vs {}",
            repo.head()
        );
    }

    #[test]
    fn a_tagged_commit_gives_the_tag() {
        let repo = Repo::new();
        repo.commit("a", "1");
        repo.tag("v1.2.3");
        assert_eq!(repo.describe(), "v1.2.3");
    }

    #[test]
    fn commits_after_a_tag_count_and_name_the_commit() {
        let repo = Repo::new();
        repo.commit("a", "1");
        repo.tag("v1.2.3");
        repo.commit("b", "2");
        repo.commit("c", "3");
        let short = &repo.head()[..7];
        let version = repo.describe();
        assert!(version.starts_with("v1.2.3-2-g"), "{version}");
        assert!(version.contains(short), "{version} lacks {short}");
    }

    #[test]
    fn a_dirty_tree_says_dirty() {
        let repo = Repo::new();
        repo.commit("a", "1");
        repo.tag("v1.0.0");
        assert!(!git::is_dirty(&repo.cx, &repo.dir).unwrap());
        repo.cx
            .sh
            .write_file(repo.dir.join("a"), "changed")
            .unwrap();
        assert_eq!(repo.describe(), "v1.0.0-dirty");
        assert!(git::is_dirty(&repo.cx, &repo.dir).unwrap());
    }

    #[test]
    fn no_repository_is_a_clear_error() {
        let sh = Shell::new().unwrap();
        let tmp = sh.create_temp_dir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
        // GIT_CEILING_DIRECTORIES keeps git from finding a repository above the temp folder.
        let _ceiling = sh.push_env("GIT_CEILING_DIRECTORIES", tmp.path().parent().unwrap());
        let cx = context_in(sh.clone(), &dir);
        let err = format!("{:#}", describe(&cx, &dir).unwrap_err());
        assert!(err.contains("not a git checkout"), "{err}");
        assert!(err.contains(API_VERSION), "{err}");
    }

    #[test]
    fn api_version_overrides_git() {
        let repo = Repo::new();
        repo.commit("a", "1");
        let set = |v: &str| resolve_with(&repo.cx, &repo.dir, Some(v.to_owned()));
        assert_eq!(set("v9.9.9").unwrap(), "v9.9.9");
        assert!(set("bad version").is_err());
        assert_eq!(set("").unwrap(), repo.describe());
        assert_eq!(
            resolve_with(&repo.cx, &repo.dir, None).unwrap(),
            repo.describe()
        );
    }
}
