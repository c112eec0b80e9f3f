//! `cargo xtask rollback`: an earlier revision's exact image (read from its
//! ReplicaSet) through the whole release gate, expecting the version that
//! image reports.

use anyhow::{Context as _, Result, anyhow, bail};

use super::history::{self, Revision};
use super::release::Release;
use super::{RolloutArgs, check_label};
use crate::cli::{self, ArgMatches, Task, option};
use crate::context::Context;
use crate::image::{ImageArgs, ImageRef};
use crate::version;

const ABOUT: &str =
    "Release an earlier revision's exact image again: preview, checks, promote; abort on failure";

const LONG_ABOUT: &str = "Go back to an earlier revision of the Rollout through the same gate as a \
release: its ReplicaSet's image, by digest, goes to the preview, the in-cluster analysis and `sanity` \
check it, and `promote` switches traffic to it; on any failure after the image was set the rollout \
is aborted and the active version stays (all as `cargo xtask release`, whose flags it takes).

Which revision: --to-revision N, else the newest kept revision older than the stable one (the one \
before what serves now). The revisions are read from the Rollout's ReplicaSets, as `cargo xtask \
history` lists them, never from the plugin's text. Refused before any change: a revision that is not \
kept (the error lists those that are), a ReplicaSet whose image has no digest (set by tag, so what \
it runs is not known), and an image whose old ReplicaSet still has its pods, which the controller \
would fast-track to active with no preview, no analysis and no promote (pass --fast-rollback to do \
that on purpose, as with `deploy`). A revision that is the stable one already, served by the \
active Service, is nothing to do: it says so and exits 0, so running a rollback again after it \
succeeded (a retried job, say) is not a failure.

The version `sanity` expects: --expect-version, else $API_VERSION, else the version the image was \
built with, found from its tag: `package` tags each image with the full SHA of its commit, and \
builds it with `git describe --tags --always` of that commit (unless $API_VERSION was set for \
the build: then give that version here too), so rollback runs \
`git describe --tags --always COMMIT` in this clone. This works in CI, where the clone has the \
whole history and the tags (GIT_DEPTH 0, --tags); when the commit is not in the clone (a shallow \
clone, tags not fetched) it stops before any change and says so: `git fetch --tags origin`, or \
give the version with --expect-version. A tag that is not a commit SHA needs --expect-version.

Runs:
  kubectl get rollouts.argoproj.io ROLLOUT -o json [-n NS] [--context CTX] --request-timeout=10s
  kubectl get replicasets.apps -l SELECTOR -o json ...    (the Rollout's revisions)
  git describe --tags --always COMMIT    (unless --expect-version or $API_VERSION)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (from here on, what `release` runs)
  kubectl get replicasets.apps -l SELECTOR -o json ...    (is its old ReplicaSet still up?)
  kubectl-argo-rollouts set image ROLLOUT CONTAINER=IMAGE:TAG@DIGEST ...    (the revision's image)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (every --poll-interval, to the pause)
  kubectl port-forward service/api-preview :80 --address 127.0.0.1 ...    (unless --url)
  GET /health, GET /
  kubectl-argo-rollouts promote ROLLOUT ...    (unless --no-promote)
  kubectl get rollouts.argoproj.io ROLLOUT -o json ...    (every --poll-interval, until Healthy)
  kubectl-argo-rollouts abort ROLLOUT ...    (only on failure)
Prints the released image reference on stdout (under --dry-run, last: `# result: IMAGE`).";

const AFTER_LONG_HELP: &str = "Environment:
  API_VERSION                         the version the preview must report, instead of the commit's
  API_ROLLOUT, API_CONTAINER          the Rollout and its container [default: api, api]
  API_PREVIEW_SERVICE, API_ACTIVE_SERVICE   the Services [default: api-preview, api-active]
  API_NAMESPACE, KUBE_NAMESPACE       the namespace (in that order)
  API_KUBE_CONTEXT                    the kubeconfig context

Examples:
  cargo xtask history -n production                 # which revisions there are
  cargo xtask rollback -n production                # back to the one before the stable one
  cargo xtask rollback -n production --to-revision 7 --expect-version v1.4.0
  cargo xtask --dry-run rollback -n production";

/// `cargo xtask rollback`.
#[derive(Debug)]
pub struct Rollback {
    pub to_revision: Option<u64>,
    /// The gate's flags; its image is filled in from the revision.
    pub release: Release,
}

impl Task for Rollback {
    type Outcome = ();

    fn command() -> cli::Command {
        cli::task("rollback", ABOUT, LONG_ABOUT, AFTER_LONG_HELP)
            .args(RolloutArgs::args())
            .arg(
                option(
                    "to-revision",
                    "N",
                    "The revision to go back to, as `cargo xtask history` numbers them [default: the \
                     newest one older than the stable one]",
                )
                .value_parser(clap::value_parser!(u64)),
            )
            .args(Release::gate_args())
    }

    fn from(matches: &ArgMatches) -> Rollback {
        Rollback {
            to_revision: matches.get_one::<u64>("to-revision").copied(),
            release: Release::of_image(matches, ImageArgs::default()),
        }
    }

    fn run(mut self, cx: &Context) -> Result<()> {
        let kubectl = self.release.target.kubectl()?;
        check_label("Service", &self.release.check.preview_service)?;
        let rollout = kubectl.rollout().to_owned();
        let (_, revisions) = history::read(cx, &kubectl)?;
        let revision = match choose(&revisions, self.to_revision, &rollout)? {
            Choice::AlreadyStable(r) => {
                cx.say(format!(
                    "revision {} of rollout {rollout} ({}) is the stable one already, and the active \
                     Service serves it: nothing to roll back (`cargo xtask status` shows any update \
                     in flight)",
                    r.revision, r.image
                ));
                return Ok(());
            }
            Choice::Revision(r) => r,
        };
        let image = exact_image(revision)?;
        let version = self.version_of(cx, &image)?;
        let from = revisions
            .iter()
            .find(|r| r.stable)
            .map_or(String::new(), |s| format!(" from revision {}", s.revision));
        let line = format!(
            "rollback of rollout {rollout}{from} to revision {}: {image}, which reports version {version}",
            revision.revision
        );
        match cx.dry_run {
            true => cx.plan(format_args!("# {line}")),
            false => cx.say(line),
        }
        self.release.image = ImageArgs::exactly(&image);
        self.release.check.expect_version = Some(version);
        self.release.run(cx).context("rollback")
    }
}

impl Rollback {
    /// The version the image reports: --expect-version, $API_VERSION, or its commit's describe.
    fn version_of(&self, cx: &Context, image: &ImageRef) -> Result<String> {
        if self.release.check.expect_version.is_some() {
            return self.release.check.expected_version(cx);
        }
        match version::from_env()? {
            Some(v) => Ok(v),
            None => built_version(cx, image),
        }
    }
}

/// The revision to go back to, or that there is nothing to do.
#[derive(Debug, PartialEq, Eq)]
enum Choice<'a> {
    Revision(&'a Revision),
    AlreadyStable(&'a Revision),
}

fn choose<'a>(revisions: &'a [Revision], wanted: Option<u64>, rollout: &str) -> Result<Choice<'a>> {
    let kept = || listed(revisions);
    let stable = revisions.iter().find(|r| r.stable);
    let Some(n) = wanted else {
        let Some(stable) = stable else {
            bail!(
                "rollout {rollout} has no stable revision (none was ever fully promoted), so there is \
                 none before it; name one with --to-revision N. Kept: {}",
                kept()
            );
        };
        // Newest first: the first older one is the one right before the stable one.
        return revisions
            .iter()
            .find(|r| r.revision < stable.revision)
            .map(Choice::Revision)
            .ok_or_else(|| {
                anyhow!(
                    "rollout {rollout} keeps no revision older than the stable one ({}): nothing to roll \
                     back to. Kept: {}",
                    stable.revision,
                    kept()
                )
            });
    };
    let Some(found) = revisions.iter().find(|r| r.revision == n) else {
        bail!(
            "rollout {rollout} has no revision {n} (the controller keeps revisionHistoryLimit old \
             ReplicaSets and drops the oldest); give one of those kept with --to-revision: {}",
            kept()
        );
    };
    match found.stable && found.active {
        true => Ok(Choice::AlreadyStable(found)),
        false => Ok(Choice::Revision(found)),
    }
}

/// The revisions, for an error: `5 (preview) IMAGE, 4 (active, stable) IMAGE, ...`.
fn listed(revisions: &[Revision]) -> String {
    if revisions.is_empty() {
        return "none".to_owned();
    }
    revisions
        .iter()
        .map(|r| format!("{} ({}) {}", r.revision, r.roles(), r.image))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The revision's image as it ran: it must name a digest.
fn exact_image(revision: &Revision) -> Result<ImageRef> {
    if revision.digest().is_none() {
        bail!(
            "revision {} runs {}, set by tag without a digest: what the tag points to may have changed \
             since, so rollback does not take it. Release the image you mean by digest: \
             `cargo xtask release --image REPOSITORY --tag TAG --digest sha256:...`",
            revision.revision,
            revision.image
        );
    }
    ImageRef::parse(&revision.image)
        .with_context(|| format!("the image of revision {}", revision.revision))
}

/// The version `package` compiled into `image`: `git describe --tags --always`
/// of the commit its tag names (with `-dirty` when the tag says so, as
/// `--allow-dirty` builds it).
fn built_version(cx: &Context, image: &ImageRef) -> Result<String> {
    let (commit, dirty) = match image.tag.strip_suffix("-dirty") {
        Some(commit) => (commit, "-dirty"),
        None => (image.tag.as_str(), ""),
    };
    let is_sha = (7..=40).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit());
    if !is_sha {
        bail!(
            "the tag of {image} is not a commit SHA (as `package` tags images), so the version it \
             reports is not known here; give it with --expect-version VERSION (or API_VERSION)"
        );
    }
    let described = crate::git::read(cx, &cx.root, &["describe", "--tags", "--always", commit])
        .map_err(|error| {
            error.context(format!(
                "the commit {commit} of {image} is not in the clone at {}, so the version it reports \
                 is not known here: fetch it (`git fetch --tags origin`), or give the version with \
                 --expect-version VERSION (or API_VERSION)",
                cx.root
            ))
        })?;
    let version = format!("{described}{dirty}");
    version::check_version(&version)?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(n: u64, image: &str, roles: &[&str]) -> Revision {
        Revision {
            revision: n,
            pod_hash: format!("h{n}"),
            image: image.to_owned(),
            created: "2026-12-01T08:00:00Z".to_owned(),
            active: roles.contains(&"active"),
            preview: roles.contains(&"preview"),
            stable: roles.contains(&"stable"),
        }
    }

    fn digest(fill: &str) -> String {
        format!("sha256:{}", fill.repeat(64))
    }

    fn kept() -> Vec<Revision> {
        vec![
            revision(9, &format!("r/api:c@{}", digest("c")), &["preview"]),
            revision(
                7,
                &format!("r/api:b@{}", digest("b")),
                &["active", "stable"],
            ),
            revision(4, "r/api:a", &[]),
            revision(2, &format!("r/api:z@{}", digest("a")), &[]),
        ]
    }

    #[test]
    fn by_default_the_newest_revision_older_than_the_stable_one() {
        let kept = kept();
        assert_eq!(
            choose(&kept, None, "api").unwrap(),
            Choice::Revision(&kept[2])
        );
    }

    #[test]
    fn the_stable_revision_is_nothing_to_do() {
        let kept = kept();
        assert_eq!(
            choose(&kept, Some(7), "api").unwrap(),
            Choice::AlreadyStable(&kept[1])
        );
    }

    #[test]
    fn a_revision_not_kept_is_refused_with_those_that_are() {
        let err = choose(&kept(), Some(3), "api").unwrap_err().to_string();
        assert!(err.contains("rollout api has no revision 3"), "{err}");
        assert!(
            err.contains(&format!(
                "9 (preview) r/api:c@{}, 7 (active, stable) r/api:b@{}",
                digest("c"),
                digest("b")
            )),
            "{err}"
        );
    }

    #[test]
    fn nothing_older_than_the_stable_one_is_refused() {
        let kept = [revision(1, "r/api:a", &["active", "stable"])];
        let err = choose(&kept, None, "api").unwrap_err().to_string();
        assert!(
            err.contains("keeps no revision older than the stable one (1)"),
            "{err}"
        );
    }

    #[test]
    fn an_image_without_a_digest_is_refused() {
        let err = exact_image(&kept()[2]).unwrap_err().to_string();
        assert!(
            err.contains("revision 4 runs r/api:a, set by tag without a digest"),
            "{err}"
        );
        let image = exact_image(&kept()[3]).unwrap();
        assert_eq!(image.digest, Some(digest("a")));
    }
}
