//! The git plumbing: read-only git commands in a checkout, bounded in time,
//! with errors that say whether git is missing or the folder is no checkout.

use std::time::Duration;

use anyhow::Result;
use camino::Utf8Path;
use xshell::cmd;

use crate::context::Context;
use crate::tools;

/// The full SHA of `HEAD`.
pub fn head_sha(cx: &Context, dir: &Utf8Path) -> Result<String> {
    read(cx, dir, &["rev-parse", "--verify", "HEAD"]).map_err(|err| {
        failed(
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
        read(cx, dir, &["status", "--porcelain", "--untracked-files=no"]).map_err(|err| {
            failed(
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
pub fn read(cx: &Context, dir: &Utf8Path, args: &[&str]) -> Result<String> {
    let sh = &cx.sh;
    let _cd = sh.push_dir(dir);
    cx.probe(cmd!(sh, "git {args...}"))
        .drop_stderr()
        .within(GIT_LIMIT, "check that the checkout's file system answers")
        .read(cx)
}

/// A local git read takes milliseconds; this bounds one on a file system that hangs.
const GIT_LIMIT: Duration = Duration::from_secs(60);

/// The error of a failed git read: "git is not installed" with its install
/// hint when git is not on the shell's PATH, else `what: why, otherwise`.
pub fn failed(
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

/// A real repository to run git in, shared with `version`'s tests.
#[cfg(test)]
pub mod tests {
    use camino::Utf8PathBuf;
    use xshell::Shell;

    use super::*;

    /// A context in `dir`, quiet, not a dry run.
    pub fn context_in(sh: Shell, dir: &Utf8Path) -> Context {
        Context {
            sh,
            root: dir.to_owned(),
            dry_run: false,
            verbose: false,
        }
    }

    /// A real git repository in a temporary folder, removed on drop.
    pub struct Repo {
        pub cx: Context,
        pub dir: Utf8PathBuf,
        _tmp: xshell::TempDir,
    }

    impl Repo {
        pub fn new() -> Repo {
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

        pub fn commit(&self, file: &str, text: &str) {
            let sh = &self.cx.sh;
            sh.write_file(self.dir.join(file), text).unwrap();
            cmd!(sh, "git add {file}").run().unwrap();
            cmd!(sh, "git commit -q -m {file}").run().unwrap();
        }

        pub fn tag(&self, name: &str) {
            let sh = &self.cx.sh;
            cmd!(sh, "git tag -a {name} -m {name}").run().unwrap();
        }

        pub fn describe(&self) -> String {
            crate::version::describe(&self.cx, &self.dir).unwrap()
        }

        pub fn head(&self) -> String {
            head_sha(&self.cx, &self.dir).unwrap()
        }
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
            crate::version::describe(&cx, &dir).unwrap_err(),
            head_sha(&cx, &dir).unwrap_err(),
            is_dirty(&cx, &dir).unwrap_err(),
        ] {
            let err = format!("{err:#}");
            assert!(err.contains("git is not installed"), "{err}");
            assert!(err.contains("apt-get install git"), "{err}");
            assert!(!err.contains("not a git checkout"), "{err}");
        }
    }
}
