//! The wrapper around `kubectl-argo-rollouts`, for the calls that change the
//! Rollout: its command lines (flags after the subcommand, as the plugin
//! takes them), run with a deadline. Reading the Rollout is `kubectl get`'s
//! job (`kube.rs`): the plugin's `status` waits for its informer caches with
//! no deadline, and its watching form can panic after it printed `Healthy`.

use anyhow::Result;
use camino::Utf8PathBuf;

use super::RolloutArgs;
use super::kube::call;
use crate::context::Context;
use crate::context::{SAID_MAX, command_line, outside_text, say_line};
use crate::image::ImageRef;

/// The plugin, bound to one Rollout (names already checked).
pub struct Plugin {
    path: Utf8PathBuf,
    pub target: RolloutArgs,
}

impl Plugin {
    pub fn new(path: Utf8PathBuf, target: RolloutArgs) -> Plugin {
        Plugin { path, target }
    }

    pub fn rollout(&self) -> &str {
        &self.target.rollout
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(self.target.kube_flags());
        all
    }

    /// The exact command line, for plans and messages.
    pub fn line(&self, args: &[&str]) -> String {
        command_line(&self.path, self.args(args))
    }

    pub fn set_image(&self, cx: &Context, image: &ImageRef) -> Result<()> {
        let assignment = format!("{}={image}", self.target.container);
        let asking = format!("set image {assignment} on rollout {}", self.rollout());
        self.change(cx, &["set", "image", self.rollout(), &assignment], &asking)
    }

    pub fn promote(&self, cx: &Context) -> Result<()> {
        let asking = format!("promote rollout {}", self.rollout());
        self.change(cx, &["promote", self.rollout()], &asking)
    }

    pub fn abort(&self, cx: &Context) -> Result<()> {
        let asking = format!("abort rollout {}", self.rollout());
        self.change(cx, &["abort", self.rollout()], &asking)
    }

    /// A call that changes the rollout: echoed to stderr, or under --dry-run
    /// printed to stdout and not run. The plugin's own output goes to stderr,
    /// since stdout is for our results. An error here does not say whether
    /// the change landed (the write may have succeeded before the failure):
    /// callers read the Rollout back before they say what happened.
    fn change(&self, cx: &Context, args: &[&str], asking: &str) -> Result<()> {
        let args = self.args(args);
        if let Some(done) = call(cx, &self.path, &args, asking, &self.target, true)? {
            for line in done.stdout.lines() {
                say_line(outside_text(line, SAID_MAX));
            }
        }
        Ok(())
    }
}
