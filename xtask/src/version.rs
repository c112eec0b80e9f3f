//! Which version a build says it is, and which commit it comes from.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use camino::Utf8Path;
use xshell::cmd;

use crate::context::Context;
use crate::tools;

/// Environment variable that overrides the version `git describe` gives.
pub const API_VERSION: &str = "API_VERSION";

/// `API_VERSION` if set and not empty, else `git describe --tags --always --dirty`.
pub fn resolve(cx: &Context, dir: &Utf8Path) -> Result<String> {
    resolve_with(cx, dir, std::env::var(API_VERSION).ok())
}

fn resolve_with(cx: &Context, dir: &Utf8Path, from_env: Option<String>) -> Result<String> {
    if let Some(version) = from_env
        && !version.is_empty()
    {
        check_version(&version).with_context(|| format!("{API_VERSION}={version:?}"))?;
        return Ok(version);
    }
    describe(cx, dir)
}

/// `git describe --tags --always --dirty` of the checkout at `dir`.
pub fn describe(cx: &Context, dir: &Utf8Path) -> Result<String> {
    git(cx, dir, &["describe", "--tags", "--always", "--dirty"]).map_err(|err| {
        git_failed(
            cx,
            err,
            "cannot tell the version",
            &format!("{dir} is not a git checkout with a commit; run from a clone"),
            &format!("or set {API_VERSION}"),
        )
    })
}

/// The full SHA of `HEAD`.
pub fn head_sha(cx: &Context, dir: &Utf8Path) -> Result<String> {
    git(cx, dir, &["rev-parse", "--verify", "HEAD"]).map_err(|err| {
        git_failed(
            cx,
            err,
            &format!("cannot read the commit of {dir}"),
            "not a git checkout with a commit",
            "or give --tag",
        )
    })
}

/// Whether tracked files differ from `HEAD` (what `--dirty` means to `git describe`).
pub fn is_dirty(cx: &Context, dir: &Utf8Path) -> Result<bool> {
    let status =
        git(cx, dir, &["status", "--porcelain", "--untracked-files=no"]).map_err(|err| {
            git_failed(
                cx,
                err,
                &format!("git status in {dir}"),
                "not a git checkout",
                "or give --tag",
            )
        })?;
    Ok(!status.is_empty())
}

/// A read-only git command in `dir` (echoed with --verbose); its stdout. Its
/// stderr is dropped: the error says what it means.
pub fn git(cx: &Context, dir: &Utf8Path, args: &[&str]) -> Result<String> {
    let sh = &cx.sh;
    let _cd = sh.push_dir(dir);
    cx.probe(cmd!(sh, "git {args...}"))
        .drop_stderr()
        .within(GIT_LIMIT, "check that the checkout's file system answers")
        .read(cx)
}

/// A local git read takes milliseconds; this bounds one on a file system that hangs.
const GIT_LIMIT: Duration = Duration::from_secs(60);

fn git_failed(
    cx: &Context,
    err: anyhow::Error,
    what: &str,
    why: &str,
    otherwise: &str,
) -> anyhow::Error {
    // Where the shell's commands look for git: its PATH, which may not be ours.
    let sh = &cx.sh;
    let found = which::which_in(tools::GIT.name, sh.var_os("PATH"), sh.current_dir()).is_ok();
    if !found {
        return anyhow::anyhow!(
            "{what}: git is not installed (not found on PATH); install it ({}), {otherwise}",
            tools::GIT.install
        );
    }
    err.context(format!("{what}: {why}, {otherwise}"))
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
    use super::*;
    use camino::Utf8PathBuf;
    use xshell::Shell;

    /// A context in `dir`, quiet, not a dry run.
    fn context_in(sh: Shell, dir: &Utf8Path) -> Context {
        Context {
            sh,
            root: dir.to_owned(),
            dry_run: false,
            verbose: false,
        }
    }

    /// A real git repository in a temporary folder, removed on drop.
    struct Repo {
        cx: Context,
        dir: Utf8PathBuf,
        _tmp: xshell::TempDir,
    }

    impl Repo {
        fn new() -> Repo {
            let sh = Shell::new().unwrap();
            let tmp = sh.create_temp_dir().unwrap();
            let dir = Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
            sh.change_dir(&dir);
            cmd!(sh, "git init -q -b main").run().unwrap();
            cmd!(sh, "git config user.email test@example.com")
                .run()
                .unwrap();
            cmd!(sh, "git config user.name test").run().unwrap();
            cmd!(sh, "git config commit.gpgsign false").run().unwrap();
            let cx = context_in(sh, &dir);
            Repo { cx, dir, _tmp: tmp }
        }

        fn commit(&self, file: &str, text: &str) {
            let sh = &self.cx.sh;
            sh.write_file(self.dir.join(file), text).unwrap();
            cmd!(sh, "git add {file}").run().unwrap();
            cmd!(sh, "git commit -q -m {file}").run().unwrap();
        }

        fn tag(&self, name: &str) {
            let sh = &self.cx.sh;
            cmd!(sh, "git tag -a {name} -m {name}").run().unwrap();
        }

        fn describe(&self) -> String {
            describe(&self.cx, &self.dir).unwrap()
        }

        fn head(&self) -> String {
            head_sha(&self.cx, &self.dir).unwrap()
        }
    }

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
        assert!(!is_dirty(&repo.cx, &repo.dir).unwrap());
        repo.cx
            .sh
            .write_file(repo.dir.join("a"), "changed")
            .unwrap();
        assert_eq!(repo.describe(), "v1.0.0-dirty");
        assert!(is_dirty(&repo.cx, &repo.dir).unwrap());
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
    fn no_git_says_git_is_missing_and_how_to_install_it() {
        let sh = Shell::new().unwrap();
        let tmp = sh.create_temp_dir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
        // An empty PATH: git is nowhere. Only this Shell's children see it.
        let _path = sh.push_env("PATH", tmp.path());
        let cx = context_in(sh.clone(), &dir);
        for err in [
            describe(&cx, &dir).unwrap_err(),
            head_sha(&cx, &dir).unwrap_err(),
            is_dirty(&cx, &dir).unwrap_err(),
        ] {
            let err = format!("{err:#}");
            assert!(err.contains("git is not installed"), "{err}");
            assert!(err.contains("apt-get install git"), "{err}");
            assert!(!err.contains("not a git checkout"), "{err}");
        }
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
