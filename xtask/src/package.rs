//! `cargo xtask package`: the container image, built with the `Dockerfile`,
//! tagged with the commit it holds, and optionally pushed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{Cmd, cmd};

use crate::cli::{self, Task};
use crate::context::{Context, Step};
use crate::image::{ImageArgs, ImageRef};
use crate::process::Stdout;
use crate::{git, tools, version};

/// GitLab's predefined variables for the project's registry and its credentials.
const CI_REGISTRY: &str = "CI_REGISTRY";
const CI_REGISTRY_USER: &str = "CI_REGISTRY_USER";
const CI_REGISTRY_PASSWORD: &str = "CI_REGISTRY_PASSWORD";

const ABOUT: &str = "Build the container image, tagged with the commit SHA; --push pushes it";

const LONG_ABOUT: &str =
    "Build the container image with the Dockerfile, tagged IMAGE:TAG, and print \
the image reference on stdout (the only line there; docker's own output goes to stderr; under \
--dry-run the plan's last line, `# result: IMAGE`).

IMAGE is --image, else $API_IMAGE, else $CI_REGISTRY_IMAGE, else `api`. TAG is --tag, \
else $API_IMAGE_TAG, else $CI_COMMIT_SHA, else the full SHA of HEAD. A work tree with \
uncommitted changes is refused unless --allow-dirty (the tag then ends in -dirty): an \
image must say truthfully what it holds. The version compiled into the service is the \
one `cargo xtask build` uses ($API_VERSION, else git describe). The image carries the OCI \
labels org.opencontainers.image.version, .revision (the full SHA of HEAD), .source and \
.created.

Before any work it checks that the docker CLI is on PATH and that its engine answers. \
Each docker command has a deadline (login 2 minutes, build 45, push 15), after which it \
is stopped and the task fails.

With --push, a tag names one image forever: the tag is pulled first, and if the registry \
has it already, built from this commit (its org.opencontainers.image.revision label) out of \
a clean tree, nothing is built or pushed and its digest is reported as below (a re-run \
pipeline, a tag pipeline of a commit already built); if it holds anything else, the task \
fails and the tag stays. Only a tag the registry does not have (`manifest unknown`) is \
built and pushed; any other pull failure stops the task before the build.

With --push, the tag is pushed after a successful build, and stdout says which image \
was pushed, by digest: IMAGE:TAG@sha256:... (the manifest digest the registry confirmed \
to docker push). --dotenv FILE also writes API_IMAGE_DIGEST=sha256:... to FILE, for \
GitLab's dotenv report. When $CI_REGISTRY, $CI_REGISTRY_USER and $CI_REGISTRY_PASSWORD \
are all set, it first logs in, giving the password to docker on stdin: it never appears \
in an argument or in any output.

Runs:
  git rev-parse --verify HEAD, git status --porcelain, git describe --tags --always --dirty
  docker version --format {{.Server.Version}}                (does the engine answer?)
  docker login --username <user> --password-stdin <registry>  (--push, credentials set)
  docker pull IMAGE:TAG                                       (--push: is the tag there?)
  docker image inspect --format {{index .Config.Labels ...}} IMAGE:TAG   (--push, it is)
  docker build --file Dockerfile --tag IMAGE:TAG --build-arg API_VERSION=<version> \\
      --build-arg REVISION=<sha> --build-arg CREATED=<time> [--build-arg SOURCE=<url>] [ARGS...] .
  docker push IMAGE:TAG                                       (--push)
  # write API_IMAGE_DIGEST=sha256:... to FILE                 (--dotenv FILE)";

const AFTER_LONG_HELP: &str = "Environment:
  API_IMAGE             image repository, instead of $CI_REGISTRY_IMAGE or `api`
  API_IMAGE_TAG         image tag, instead of $CI_COMMIT_SHA or the SHA of HEAD
  API_VERSION           the version to compile in, instead of git describe's
  CI_REGISTRY_IMAGE     GitLab: the project's image repository
  CI_COMMIT_SHA         GitLab: the commit being built
  CI_PROJECT_URL        GitLab: the project's page, for the source label (else the `origin` remote)
  CI_REGISTRY, CI_REGISTRY_USER, CI_REGISTRY_PASSWORD
                        GitLab: registry credentials, used with --push
  SOURCE_DATE_EPOCH     the creation time to label, instead of now (reproducible builds)
  DOCKER_HOST           the engine to use (read by docker itself)

Examples:
  cargo xtask package
  cargo xtask package --image registry.example.com/team/api --push
  cargo xtask package --push --dotenv package.env    (the pipeline's package job)
  cargo xtask package --allow-dirty -- --no-cache --network host
  cargo xtask --dry-run package";

#[derive(Debug)]
pub struct Package {
    pub image: ImageArgs,
    pub push: bool,
    /// With `push`: where to write the digest as a dotenv line.
    pub dotenv: Option<Utf8PathBuf>,
    /// Passed to `docker build` unchanged.
    pub docker_args: Vec<String>,
}

impl Task for Package {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("package", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(ImageArgs::args())
            .arg(cli::switch(
                "push",
                "Push the tag after a successful build (logging in first when $CI_REGISTRY_* are set)",
            ))
            .arg(
                cli::option(
                    "dotenv",
                    "FILE",
                    "With --push: write `API_IMAGE_DIGEST=sha256:...` to FILE (a GitLab dotenv report)",
                )
                .value_parser(clap::value_parser!(Utf8PathBuf))
                .requires("push"),
            )
            .arg(cli::trailing(
                "docker_args",
                "DOCKER_BUILD_ARGS",
                "Arguments for `docker build`, passed unchanged (e.g. -- --no-cache --network host)",
            ))
    }

    fn from(matches: &cli::ArgMatches) -> Package {
        Package {
            image: ImageArgs::from(matches),
            push: matches.get_flag("push"),
            dotenv: cli::optional(matches, "dotenv"),
            docker_args: cli::all(matches, "docker_args"),
        }
    }

    fn run(self, cx: &Context) -> Result<()> {
        tools::require(&[&tools::DOCKER, &tools::GIT])?;
        let credentials = match self.push {
            true => Credentials::from_env()?,
            false => None,
        };
        let image = self.image.resolve(cx)?;
        if let Some(file) = &self.dotenv {
            check_dotenv_dir(file)?;
        }
        let version = version::resolve(cx, &cx.root)?;
        let revision = git::head_sha(cx, &cx.root)?;
        check_engine(cx)?;

        if let Some(credentials) = &credentials {
            login(cx, credentials)?;
        }
        if self.push
            && let Some(digest) = existing(cx, &image, &revision)?
        {
            if let Some(file) = &self.dotenv {
                write_dotenv(file, &digest)?;
            }
            cx.result(format!("{image}@{digest}"));
            return Ok(());
        }
        build(cx, &image, &version, &revision, &self.docker_args)?;
        if !self.push {
            cx.change_result(&image);
            return Ok(());
        }
        let sh = &cx.sh;
        let reference = image.to_string();
        let pushed = docker(cx, cmd!(sh, "docker push {reference}"), PUSH_LIMIT)
            .run(cx)
            .with_context(|| format!("push {image}"))?;
        let Some(pushed) = pushed else {
            if let Some(file) = &self.dotenv {
                cx.plan(format_args!(
                    "# write {DIGEST_VARIABLE}=<the digest docker push reports> to {file}"
                ));
            }
            cx.change_result(&image);
            return Ok(());
        };
        let said = pushed.stdout;
        let digest = pushed_digest(&said, &image.tag).with_context(|| {
            format!(
                "`docker push {reference}` succeeded but printed no `{}: digest: sha256:...` line, \
                 so the pushed manifest is unknown; its output was:\n{}",
                image.tag,
                crate::context::outside_text(said.trim(), crate::context::SAID_MAX)
            )
        })?;
        if let Some(file) = &self.dotenv {
            write_dotenv(file, &digest)?;
        }
        cx.result(format!("{image}@{digest}"));
        Ok(())
    }
}

/// A docker command that changes something: its stdout goes to our stderr
/// (docker's progress is not a result; stdout carries only the image
/// reference) and is kept, and it is stopped after `limit`.
fn docker(cx: &Context, cmd: Cmd<'_>, limit: Duration) -> Step {
    cx.change(cmd).stdout(Stdout::OnStderr).within(
        limit,
        "check that the engine and the registry answer, then run it again",
    )
}

/// Deadlines: a cold release build on a busy 2-core runner takes minutes, a
/// login seconds.
const LOGIN_LIMIT: Duration = Duration::from_secs(120);
const BUILD_LIMIT: Duration = Duration::from_secs(45 * 60);
const PUSH_LIMIT: Duration = Duration::from_secs(15 * 60);
const PULL_LIMIT: Duration = Duration::from_secs(15 * 60);
const INSPECT_LIMIT: Duration = Duration::from_secs(60);

/// The variable the dotenv report sets for the deploy jobs.
const DIGEST_VARIABLE: &str = "API_IMAGE_DIGEST";

/// The manifest digest that `docker push` reports for `tag`: the engine prints
/// `TAG: digest: sha256:HEX size: N` once the registry has accepted the
/// manifest and answered with its Docker-Content-Digest (moby
/// distribution/push_v2.go, `pushV2Tag`; the containerd image store prints the
/// same line).
fn pushed_digest(output: &str, tag: &str) -> Option<String> {
    let prefix = format!("{tag}: digest: ");
    output.lines().rev().find_map(|line| {
        let digest = line.trim().strip_prefix(&prefix)?.split(' ').next()?;
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| digest.to_owned())
    })
}

/// A tag names one image forever: a deployed Rollout is pinned to the digest
/// its tag named, and a registry's clean-up deletes manifests no tag names. So
/// before building for a push, the tag is pulled: absent, `None` (build and
/// push); present with this commit's revision label and a clean work tree,
/// its digest, and nothing is built or pushed again (a pipeline re-run, a tag
/// pipeline of a commit already built); present otherwise, an error, and the
/// tag stays where it is. Under --dry-run the pull is planned and `None` given.
fn existing(cx: &Context, image: &ImageRef, revision: &str) -> Result<Option<String>> {
    let sh = &cx.sh;
    let reference = image.to_string();
    let pull = docker(cx, cmd!(sh, "docker pull {reference}"), PULL_LIMIT).keep_stderr();
    let Some(ended) = pull.finish(cx)? else {
        return Ok(None);
    };
    let pulled = match ended {
        Ok(done) => done,
        Err((_, _)) => bail!(
            "`docker pull {reference}` did not finish within {} s, so whether the tag exists \
             is unknown and nothing was built or pushed (a tag is never moved); check that \
             the registry answers, then run it again",
            PULL_LIMIT.as_secs()
        ),
    };
    if !pulled.status.success() {
        let said = pulled.stderr.trim();
        if tag_absent(said) {
            eprintln!("# {reference} is not in the registry yet: building and pushing it");
            return Ok(None);
        }
        bail!(
            "`docker pull {reference}` failed ({}): {said}\nwhether the tag exists is unknown, so \
             nothing was built or pushed (a tag is never moved); check the registry and the \
             login, then run it again",
            pulled.status
        );
    }
    let digest = pulled_digest(&pulled.stdout).with_context(|| {
        format!(
            "`docker pull {reference}` printed no `Digest: sha256:...` line, so the tag's \
             manifest is unknown; its output was:\n{}",
            pulled.stdout.trim()
        )
    })?;
    let labelled = cx
        .probe(cmd!(
            sh,
            "docker image inspect --format {REVISION_FORMAT} {reference}"
        ))
        .within(INSPECT_LIMIT, "check that the engine answers")
        .read(cx)?;
    if labelled != revision {
        bail!(
            "{reference} exists already ({digest}) and holds revision {labelled:?}, not this \
             commit's {revision}: a tag names one image forever, so it is not pushed again. \
             Push this build under another tag (--tag), or find out how {reference} came to \
             name another commit"
        );
    }
    if git::is_dirty(cx, &cx.root)? {
        bail!(
            "{reference} exists already ({digest}), built from this commit's clean tree, and \
             the work tree has uncommitted changes: a tag names one image forever, so it is \
             not pushed again. Commit the changes (a new SHA, a new tag) or use another --tag"
        );
    }
    eprintln!(
        "# {reference} exists already and holds this commit (label \
         org.opencontainers.image.revision={revision}): not built or pushed again, its tag \
         keeps naming {digest}"
    );
    Ok(Some(digest))
}

/// What `docker image inspect` prints for the revision label.
const REVISION_FORMAT: &str = "{{index .Config.Labels \"org.opencontainers.image.revision\"}}";

/// A pull that failed because the registry has no such tag: the distribution
/// spec's MANIFEST_UNKNOWN, which the engine relays as `manifest for REF not
/// found: manifest unknown: manifest unknown` (moby distribution/pull_v2.go,
/// `pullV2Tag`; a missing repository gives the same). Anything else (refused
/// login, no answer) is not taken for "absent": that could move a tag.
fn tag_absent(said: &str) -> bool {
    said.contains("manifest unknown")
}

/// The manifest digest `docker pull` reports: `Digest: sha256:HEX` (moby
/// distribution/pull_v2.go, `pullV2Tag`).
fn pulled_digest(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let digest = line.trim().strip_prefix("Digest: ")?;
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| digest.to_owned())
    })
}

/// Refuses, before any work, a dotenv file that could not be written after
/// the push: its folder must exist.
fn check_dotenv_dir(file: &Utf8Path) -> Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_str().is_empty() => dir,
        _ => Utf8Path::new("."),
    };
    if file.file_name().is_none() || !dir.is_dir() {
        bail!(
            "--dotenv {file}: no folder {dir} to write it in; name a file in an existing folder \
             (the pipeline uses --dotenv package.env)"
        );
    }
    Ok(())
}

/// `API_IMAGE_DIGEST=sha256:...`, one line, written whole (a temporary file
/// renamed into place) so a reader never sees half of it.
fn write_dotenv(file: &Utf8Path, digest: &str) -> Result<()> {
    let line = format!("{DIGEST_VARIABLE}={digest}");
    crate::context::say_line(format_args!("# write {line} to {file}"));
    let partial = Utf8PathBuf::from(format!("{file}.partial"));
    std::fs::write(&partial, format!("{line}\n")).with_context(|| format!("write {partial}"))?;
    std::fs::rename(&partial, file).with_context(|| format!("move {partial} to {file}"))?;
    Ok(())
}

fn check_engine(cx: &Context) -> Result<()> {
    let host = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => format!("DOCKER_HOST={host}"),
        _ => "the default socket (DOCKER_HOST is not set)".to_owned(),
    };
    let Err(said) = tools::engine_version(cx).context("run `docker version`")? else {
        return Ok(());
    };
    bail!(
        "the docker CLI is installed, but no Docker engine answers at {host}: {said}\n\
         start the engine (e.g. `systemctl start docker`), or point DOCKER_HOST at one that runs"
    )
}

fn build(
    cx: &Context,
    image: &ImageRef,
    version: &str,
    revision: &str,
    docker_args: &[String],
) -> Result<()> {
    let sh = &cx.sh;
    let reference = image.to_string();
    let mut build_args = vec![
        format!("API_VERSION={version}"),
        format!("REVISION={revision}"),
        format!("CREATED={}", created()?),
    ];
    if let Some(source) = source_url(cx) {
        build_args.push(format!("SOURCE={source}"));
    }
    let build_args: Vec<String> = build_args
        .into_iter()
        .flat_map(|arg| ["--build-arg".to_owned(), arg])
        .collect();
    let build = cmd!(
        sh,
        "docker build --file Dockerfile --tag {reference} {build_args...} {docker_args...} ."
    );
    docker(cx, build, BUILD_LIMIT)
        .run(cx)
        .map(drop)
        .with_context(|| format!("build {image}"))
}

/// Registry credentials, all three or none: a half-set is a mistake worth naming.
struct Credentials {
    registry: String,
    user: String,
    password: String,
}

impl Credentials {
    fn from_env() -> Result<Option<Credentials>> {
        let get = |key| std::env::var(key).ok().filter(|v| !v.is_empty());
        let (registry, user, password) = (
            get(CI_REGISTRY),
            get(CI_REGISTRY_USER),
            get(CI_REGISTRY_PASSWORD),
        );
        match (registry, user, password) {
            (Some(registry), Some(user), Some(password)) => Ok(Some(Credentials {
                registry,
                user,
                password,
            })),
            (None, None, None) => Ok(None),
            (registry, user, password) => {
                let missing: Vec<_> = [
                    (CI_REGISTRY, registry.is_none()),
                    (CI_REGISTRY_USER, user.is_none()),
                    (CI_REGISTRY_PASSWORD, password.is_none()),
                ]
                .into_iter()
                .filter_map(|(key, missing)| missing.then_some(key))
                .collect();
                bail!(
                    "registry credentials are only partly set: {} missing; set all of \
                     {CI_REGISTRY}, {CI_REGISTRY_USER} and {CI_REGISTRY_PASSWORD} to log in, \
                     or none of them to push with docker's stored login",
                    missing.join(", ")
                )
            }
        }
    }
}

/// The password goes to docker on stdin, never in argv, so neither the echo nor
/// a process listing shows it.
fn login(cx: &Context, credentials: &Credentials) -> Result<()> {
    let sh = &cx.sh;
    let Credentials {
        registry,
        user,
        password,
    } = credentials;
    let login = cmd!(
        sh,
        "docker login --username {user} --password-stdin {registry}"
    );
    docker(cx, login, LOGIN_LIMIT)
        .secret_stdin(password)
        .run(cx)
        .map(drop)
        .with_context(|| format!("log in to {registry} as {user}"))
}

/// Where the source lives, for the label: GitLab's project page, else the
/// `origin` remote, either without any credentials; else none.
fn source_url(cx: &Context) -> Option<String> {
    if let Ok(url) = std::env::var("CI_PROJECT_URL")
        && !url.is_empty()
    {
        return Some(public_url(&url));
    }
    git::read(cx, &cx.root, &["remote", "get-url", "origin"])
        .ok()
        .filter(|url| !url.is_empty())
        .map(|url| public_url(&url))
}

/// A remote URL as a public label may show it: a remote may carry a token as
/// userinfo (`https://user:token@host/path`, `https://token@host/path`) or in
/// the query (`?private_token=`, `?access_token=`, `?job_token=`, a signed
/// URL's `X-Amz-Signature=`, ...), and labels are public. Every one of those
/// goes: the userinfo, and the whole query and fragment, which a source URL
/// never needs. `scheme://host/path` stays; scp-like `git@host:path` (ssh,
/// which carries no secret in the URL) stays as it is.
fn public_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#` (RFC 3986, 3.2).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..authority_end],
        None => &rest[..authority_end],
    };
    let path = &rest[authority_end..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    format!("{scheme}://{host}{path}")
}

/// The build time for `org.opencontainers.image.created`, RFC 3339 in UTC;
/// $SOURCE_DATE_EPOCH instead when set, for reproducible builds.
fn created() -> Result<String> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) if !epoch.is_empty() => epoch.parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds since 1970")
        })?,
        _ => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    Ok(rfc3339_utc(seconds))
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (the civil-from-days
/// algorithm of Howard Hinnant's date library, for years 1970 onwards).
fn rfc3339_utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (hour, minute, second) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_time_is_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_utc(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn source_label_drops_credentials_from_the_remote() {
        let cases = [
            (
                "https://gitlab-ci-token:s3cr3t@gitlab.example.com/team/api.git",
                "https://gitlab.example.com/team/api.git",
            ),
            (
                "https://glpat-s3cr3t@gitlab.example.com/team/api",
                "https://gitlab.example.com/team/api",
            ),
            (
                "https://gitlab.example.com/team/api.git?private_token=s3cr3t",
                "https://gitlab.example.com/team/api.git",
            ),
            (
                "https://gitlab.example.com/team/api?ref=main&access_token=s3cr3t",
                "https://gitlab.example.com/team/api",
            ),
            (
                "https://gitlab.example.com?job_token=s3cr3t",
                "https://gitlab.example.com",
            ),
            (
                "https://oauth2:s3cr3t@gitlab.example.com/team/api?private_token=s3cr3t#s3cr3t",
                "https://gitlab.example.com/team/api",
            ),
            (
                "ssh://git:s3cr3t@gitlab.example.com:2222/team/api.git",
                "ssh://gitlab.example.com:2222/team/api.git",
            ),
            (
                "https://gitlab.example.com/team/api",
                "https://gitlab.example.com/team/api",
            ),
            (
                "git@gitlab.example.com:team/api.git",
                "git@gitlab.example.com:team/api.git",
            ),
            ("https://host/path/with@sign", "https://host/path/with@sign"),
        ];
        for (remote, label) in cases {
            assert_eq!(public_url(remote), label, "{remote}");
            assert!(!public_url(remote).contains("s3cr3t"), "{remote}");
        }
    }

    #[test]
    fn the_pushed_digest_is_read_from_docker_push() {
        let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let output = format!(
            "The push refers to repository [127.0.0.1:5000/team/api]\n\
             5f70bf18a086: Pushed\n\
             v1: digest: sha256:{hex} size: 528\n"
        );
        assert_eq!(pushed_digest(&output, "v1"), Some(format!("sha256:{hex}")));
        // Another tag's line, a short digest, or none at all: unknown.
        assert_eq!(pushed_digest(&output, "v2"), None);
        assert_eq!(
            pushed_digest("v1: digest: sha256:0123 size: 1\n", "v1"),
            None
        );
        assert_eq!(pushed_digest("5f70bf18a086: Pushed\n", "v1"), None);
    }

    #[test]
    fn the_pulled_digest_is_read_from_docker_pull() {
        let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let output = format!(
            "v1: Pulling from team/api\n\
             Digest: sha256:{hex}\n\
             Status: Downloaded newer image for 127.0.0.1:5000/team/api:v1\n"
        );
        assert_eq!(pulled_digest(&output), Some(format!("sha256:{hex}")));
        assert_eq!(pulled_digest("Digest: sha256:0123\n"), None);
        assert_eq!(pulled_digest("Status: Image is up to date\n"), None);
    }

    #[test]
    fn only_an_unknown_manifest_means_the_tag_is_absent() {
        assert!(tag_absent(
            "Error response from daemon: manifest for 127.0.0.1:5000/team/api:v1 not found: \
             manifest unknown: manifest unknown"
        ));
        assert!(!tag_absent(
            "Error response from daemon: Head \"https://registry/v2/team/api/manifests/v1\": \
             unauthorized: HTTP Basic: Access denied"
        ));
        assert!(!tag_absent(
            "Error response from daemon: Get \"https://registry/v2/\": dial tcp: lookup \
             registry: no such host"
        ));
    }
}
