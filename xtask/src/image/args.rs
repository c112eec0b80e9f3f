//! Which image a task means: the flags `package` and the blue/green tasks
//! share, resolved the same way by each (flag, environment, GitLab's
//! variables, the commit) into a checked [`ImageRef`].

use anyhow::{Result, bail};

use super::{ImageRef, check_digest, check_repository, check_tag};
use crate::cli::{self, Arg, ArgMatches, option, switch};
use crate::context::Context;
use crate::git;

/// The repository part of an image reference when nothing else names one.
const DEFAULT_IMAGE: &str = "api";

/// Which image: the flags `package` and the blue/green tasks share.
#[derive(Debug, Clone, Default)]
pub struct ImageArgs {
    pub image: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub allow_dirty: bool,
    /// Whether the tag and the digest were given on the command line (else by
    /// their variables): one from each would join one image's tag to
    /// another's digest.
    pub tag_on_command_line: bool,
    pub digest_on_command_line: bool,
}

impl ImageArgs {
    /// Exactly `image`, as if its repository, tag and digest were all given
    /// on the command line (what `rollback` releases).
    pub fn exactly(image: &ImageRef) -> ImageArgs {
        ImageArgs {
            image: Some(image.repository.clone()),
            tag: Some(image.tag.clone()),
            digest: image.digest.clone(),
            allow_dirty: false,
            tag_on_command_line: true,
            digest_on_command_line: true,
        }
    }

    pub fn args() -> [Arg; 4] {
        [
            option(
                "image",
                "REPOSITORY",
                "Image repository, without tag [default: $CI_REGISTRY_IMAGE, then `api`]",
            )
            .env("API_IMAGE")
            .value_parser(NotEmptyOnTheCommandLine),
            option(
                "tag",
                "TAG",
                "Image tag [default: $CI_COMMIT_SHA, then the full SHA of HEAD]",
            )
            .env("API_IMAGE_TAG")
            .value_parser(NotEmptyOnTheCommandLine),
            option(
                "digest",
                "DIGEST",
                "The image's digest (sha256:...), as `package --push` reports it: the image is then set \
                 as IMAGE:TAG@DIGEST, so the cluster runs exactly what was built, whatever the tag points to later",
            )
            .env("API_IMAGE_DIGEST")
            .value_parser(NotEmptyOnTheCommandLine),
            switch(
                "allow-dirty",
                "Accept a work tree with uncommitted changes; the tag then ends in `-dirty`",
            ),
        ]
    }

    pub fn from(matches: &ArgMatches) -> ImageArgs {
        ImageArgs {
            image: cli::optional(matches, "image"),
            tag: cli::optional(matches, "tag"),
            digest: cli::optional(matches, "digest"),
            allow_dirty: matches.get_flag("allow-dirty"),
            tag_on_command_line: on_command_line(matches, "tag"),
            digest_on_command_line: on_command_line(matches, "digest"),
        }
    }
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
                let sha = git::head_sha(cx, &cx.root)?;
                if git::is_dirty(cx, &cx.root)? {
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
        let digest = first_set([self.digest.clone()]);
        self.refuse_mixed_sources(&tag, digest.as_deref())?;
        if let Some(digest) = &digest {
            check_digest(digest)?;
        }
        Ok(ImageRef {
            repository,
            tag,
            digest,
        })
    }
}

impl ImageArgs {
    /// A tag from the command line with a digest from the environment (the
    /// pipeline's API_IMAGE_DIGEST, say), or the other way round, names two
    /// images at once: the runtime would run the digest's, whatever the tag
    /// says. Refused: nothing is guessed.
    fn refuse_mixed_sources(&self, tag: &str, digest: Option<&str>) -> Result<()> {
        let Some(digest) = digest else {
            return Ok(());
        };
        let tag_from_env = self.tag.is_some() && !self.tag_on_command_line;
        if self.tag_on_command_line && !self.digest_on_command_line {
            bail!(
                "--tag {tag} was given on the command line, and the digest {digest} comes from \
                 API_IMAGE_DIGEST: that digest is another image's (the pipeline's build, say), and \
                 IMAGE:{tag}@{digest} would run it whatever the tag says. Give both (--tag and \
                 --digest) of the image you mean, or unset API_IMAGE_DIGEST to deploy by tag"
            );
        }
        if self.digest_on_command_line && tag_from_env {
            bail!(
                "--digest {digest} was given on the command line, and the tag {tag} comes from \
                 API_IMAGE_TAG: they may name two images. Give both (--tag and --digest) of the image \
                 you mean, or unset API_IMAGE_TAG"
            );
        }
        Ok(())
    }
}

fn on_command_line(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn first_set<const N: usize>(candidates: [Option<String>; N]) -> Option<String> {
    candidates.into_iter().flatten().find(|s| !s.is_empty())
}
