//! The rollout tasks as a state machine: seeded random sequences of `deploy`,
//! `release`, `promote`, `abort`, `status` and controller steps (the clock
//! moves, pods become ready or not, answer well or badly), some with a fault
//! of the doubles, run with the built xtask against the plugin and kubectl
//! doubles. After every step the Rollout is read back from the doubles and
//! four rules are checked:
//!
//! - (a) the active image changes only through a promote of a preview that
//!   passed its checks, the first revision of a new Rollout, or an explicit
//!   fast rollback;
//! - (b) a non-zero exit after a change leaves no preview in flight, or says
//!   what is left and how to clean it up;
//! - (c) every claim printed about the end state matches what is read back;
//! - (d) no task outlives its bound (the sum of the waits and call deadlines
//!   its help documents; a step past it is killed).
//!
//! A failing sequence is printed with its seed, shrunk to the fewest steps
//! that still fail, and can be replayed. Time in the doubles is virtual: every
//! controller delay is 0 or `LATER`, which only a clock step reaches, so a
//! sequence does the same thing every time it runs.
//!
//! - `ROLLOUT_MODEL_CASES=N`: run N sequences (default: as many as end
//!   within `ROLLOUT_MODEL_SECONDS`, 45 s, if each takes no longer than the
//!   longest so far).
//! - `ROLLOUT_MODEL_BASE_SEED=B`: draw the sequences of base seed B (as
//!   printed; with `CI` set it is 18 by default, else a new one each run).
//! - `ROLLOUT_MODEL_SEED=S`: replay the sequence of seed S (as printed), and
//!   `ROLLOUT_MODEL_STEPS=0,3,5` only those of its steps (a shrunk sequence).
//! - `ROLLOUT_MODEL_THREADS=N`: sequences run side by side (default 2).
//! - `ROLLOUT_MODEL_VERBOSE=1`: print every step and what its task printed.
//! - `ROLLOUT_MODEL_GAPS_FAIL=1` (or the step kinds of some, `promote,deploy`):
//!   a known gap met fails like any broken rule (to see whether one is still
//!   open, and its shrunk sequence).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::rollout_support::{
    self, Collected, GET_ROLLOUT, NAMESPACE, Pod, READ_FAILURE_KINDS, REPOSITORY, World, doubles,
    image,
};
use crate::support::{self, Ran};
use serde_json::{Value, json};

/// What only a clock step reaches: every controller delay is 0 or this (seconds).
const LATER: f64 = 1000.0;
/// The base seed under `CI` (unless `ROLLOUT_MODEL_BASE_SEED` says another).
const CI_BASE_SEED: u64 = 18;
/// The tags deployed over the active v1.
const TAGS: [&str; 3] = ["v2", "v3", "v4"];

// The knobs that make a step quick: short polls and waits (the state cannot
// change during a wait, since nothing real-time is left in the doubles), and a
// request timeout that bounds a hanging API server to a second a call.
const POLL: &str = "50ms";
const TIMEOUT: Duration = Duration::from_millis(500);
const SANITY_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Process start-up and a loaded machine, on top of a task's documented bound.
const SLACK: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// The faults: each a line, drawn for one task step, and cleared after it or,
// for the controller's own lag, at the next clock step.

struct Fault {
    name: String,
    weight: u32,
    /// Switches it on in the doubles' state.
    on: Box<dyn Fn(&mut Value) + Send + Sync>,
    /// Lasts until the next clock step, not only for its own step.
    until_tick: bool,
}

impl Fault {
    fn new(
        name: impl Into<String>,
        weight: u32,
        on: impl Fn(&mut Value) + Send + Sync + 'static,
    ) -> Fault {
        Fault {
            name: name.into(),
            weight,
            on: Box::new(on),
            until_tick: false,
        }
    }

    fn until_tick(self) -> Fault {
        Fault {
            until_tick: true,
            ..self
        }
    }
}

/// The faults a task step may meet, each once in the table.
fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let mut faults = vec![
            // kubectl-argo-rollouts hang_request, kubectl hang: the API server accepts and never answers.
            Fault::new("the API server never answers", 1, |s| {
                s["faults"]["api_hangs"] = json!(true)
            }),
            // kubectl-argo-rollouts fail_after_write: the write lands, then the connection is lost.
            Fault::new("set image lands, then the connection is lost", 2, |s| {
                change_then_fail(s, "set image")
            }),
            Fault::new("promote lands, then the connection is lost", 2, |s| {
                change_then_fail(s, "promote")
            }),
            Fault::new("abort lands, then the connection is lost", 2, |s| {
                change_then_fail(s, "abort")
            }),
            // kubectl-argo-rollouts reconcile/observe: the controller sees a new template only later.
            Fault::new(
                "the controller lags: it observes a new template only at the next clock step",
                2,
                |s| s["observe_after"] = json!(LATER),
            )
            .until_tick(),
            // kubectl-argo-rollouts reconcile (abort_lag): status.abort is there, abortedAt not yet.
            Fault::new(
                "the controller lags: it acts on an abort (abortedAt) only at the next clock step",
                2,
                |s| s["abort_lag"] = json!(LATER),
            )
            .until_tick(),
            // kubectl read_failure: five in a row, where the waits give up early.
            Fault::new("5 reads in a row are refused", 1, |s| {
                read_fails(s, "refused", 5)
            }),
        ];
        // kubectl read_failure (READ_FAILURES): one failed read of each kind,
        // before any change, and right after each change landed.
        for kind in READ_FAILURE_KINDS {
            faults.push(Fault::new(
                format!("a read fails once ({kind})"),
                1,
                move |s| read_fails(s, kind, 1),
            ));
        }
        for call in ["set image", "promote", "abort"] {
            for kind in READ_FAILURE_KINDS {
                // The weather kinds more often than the verdicts (401, no namespace).
                let weight = if ["unauthorized", "namespace_not_found"].contains(&kind) {
                    1
                } else {
                    2
                };
                faults.push(Fault::new(
                    format!("the 2 reads right after {call} fail ({kind})"),
                    weight,
                    move |s| {
                        s["faults"]["read_failures_after"] =
                            json!({"call": call, "kind": kind, "count": 2})
                    },
                ));
            }
        }
        faults
    })
}

fn change_then_fail(state: &mut Value, subcommand: &str) {
    state["faults"]["change_then_fail"] = json!([subcommand]);
}

/// kubectl's next `count` reads fail as it reports `kind` (its READ_FAILURES).
fn read_fails(state: &mut Value, kind: &str, count: u32) {
    state["faults"]["read_failures"] = json!({"kind": kind, "left": count});
}

/// Clears the faults of one step.
fn clear_faults(state: &mut Value) {
    state["faults"] = json!({});
}

/// The controller catches up: it observes a new template, and acts on an
/// abort, at once again.
fn clear_lag(state: &mut Value) {
    state["observe_after"] = json!(0.0);
    state["abort_lag"] = json!(0.0);
}

/// The known gap of `rule` for this step's kind, unless `ROLLOUT_MODEL_GAPS_FAIL` names it.
fn known_gap(rule: &str, op: &Op) -> Option<&'static str> {
    let gaps_fail = std::env::var("ROLLOUT_MODEL_GAPS_FAIL").unwrap_or_default();
    let fails = |gap: &Gap| gaps_fail == "1" || gaps_fail.split(',').any(|k| k == gap.kind);
    KNOWN_GAPS
        .iter()
        .find(|g| g.rule == rule && g.kind == kind(op) && !fails(g))
        .map(|g| g.what)
}

/// What the tasks do not do yet, met but not failed on: counted in the
/// figures, each to be removed with the fix.
struct Gap {
    rule: &'static str,
    /// The step kind (see `kind`).
    kind: &'static str,
    what: &'static str,
}

const KNOWN_GAPS: &[Gap] = &[
    Gap {
        rule: "(b)",
        kind: "abort",
        what: "abort sent while the controller has not observed the template: after its wait (6 request \
               timeouts) the error says `did not reach the abort holds`, not which preview is left, that \
               status.abort is set and will be erased when the controller observes the template \
               (resetRolloutStatus), nor to abort again",
    },
    Gap {
        rule: "(b)",
        kind: "promote",
        what: "promote sent (or landed before the connection was lost) and read back pending (`waiting for \
               rollout to unpause`, `active service cutover pending`), the switch not seen within --timeout: \
               the error says `did not reach Healthy on the promoted ReplicaSet`, not that the promotion was \
               sent and its switch is pending, nor the image or how to look (\"promotion sent, state \
               unknown\" comes only when no read succeeds)",
    },
    Gap {
        rule: "(b)",
        kind: "deploy --wait",
        what: "deploy --wait leaves its preview when the wait fails (by design: it does not abort), \
               and its error names the image and the last phase but not how to clean up (`cargo xtask abort`)",
    },
    Gap {
        rule: "(b)",
        kind: "deploy",
        what: "deploy leaves its preview when it fails after `set image` landed, and does not say how to \
               clean up (`cargo xtask abort`): read in the code (set image lands, then its read-back fails: \
               \"whether the image was set is unknown\"), not reached by the model, which draws one fault a \
               step (a write that lands and fails alone is read back and goes on, exit 0)",
    },
];

// ---------------------------------------------------------------------------
// A sequence: the world it starts from, and its steps.

/// How the pods of a tag become ready (the plugin double's `behaviour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Ready at once.
    Ready,
    /// Ready after a clock step.
    Slow,
    /// Never ready; no progress deadline.
    Never,
    /// Never ready; Degraded (ProgressDeadlineExceeded) after a clock step.
    Stuck,
}

/// How the pods of a tag answer `kubectl port-forward` and HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    Good,
    WrongVersion,
    Error500,
    Silent,
    Pending,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pods {
    readiness: Readiness,
    serving: Serving,
    /// The active Service switches only after a clock step once promoted.
    slow_switch: bool,
}

impl Pods {
    fn good() -> Pods {
        Pods {
            readiness: Readiness::Ready,
            serving: Serving::Good,
            slow_switch: false,
        }
    }

    /// Whether `sanity` passes on them once they are selected.
    fn pass_sanity(&self) -> bool {
        self.serving == Serving::Good
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Deploy {
        tag: &'static str,
        wait: bool,
        replace: bool,
        /// The flag that allows a deploy the controller fast-tracks to active.
        fast_rollback: bool,
    },
    Release {
        tag: &'static str,
        no_promote: bool,
        replace: bool,
        fast_rollback: bool,
    },
    Promote {
        expect: &'static str,
    },
    Abort {
        only_expected: Option<&'static str>,
    },
    Status,
    /// The controller's clock moves on by LATER seconds.
    Tick,
    /// The pods of a tag change.
    Pods {
        tag: &'static str,
        pods: Pods,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    op: Op,
    /// An index into `faults()`, on for this step only.
    fault: Option<usize>,
}

#[derive(Debug, Clone)]
struct Sequence {
    seed: u64,
    /// A new Rollout: its active Service never selected pods.
    new_rollout: bool,
    controller: &'static str,
    /// scaleDownDelaySeconds: an old active ReplicaSet keeps its pods (and
    /// fast-tracks a template equal to it) until the next clock step; else
    /// it is scaled down at once.
    scale_down_delay: bool,
    /// abortScaleDownDelaySeconds, the same for an aborted ReplicaSet.
    abort_scale_down_delay: bool,
    /// A new Rollout with no status until the next clock step (right after
    /// `kubectl create`, before the controller's first reconcile).
    without_status: bool,
    pods: BTreeMap<&'static str, Pods>,
    steps: Vec<Step>,
    /// The indices of `steps` in the sequence the seed draws (for replay).
    kept: Vec<usize>,
}

/// splitmix64: small, and the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn by weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut n = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if n < u64::from(*w) {
                return i;
            }
            n -= u64::from(*w);
        }
        unreachable!()
    }
}

fn draw_pods(rng: &mut Rng) -> Pods {
    let readiness = match rng.below(10) {
        0..=6 => Readiness::Ready,
        7 => Readiness::Slow,
        8 => Readiness::Never,
        _ => Readiness::Stuck,
    };
    let serving = match rng.below(14) {
        0..=8 => Serving::Good,
        9 => Serving::WrongVersion,
        10 => Serving::Error500,
        11 => Serving::Silent,
        12 => Serving::Pending,
        _ => Serving::Missing,
    };
    Pods {
        readiness,
        serving,
        slow_switch: rng.percent(15),
    }
}

impl Sequence {
    fn draw(seed: u64) -> Sequence {
        let mut rng = Rng(seed);
        let new_rollout = rng.percent(15);
        let controller = if rng.percent(15) { "v1.6.1" } else { "v1.8.3" };
        let scale_down_delay = rng.percent(50);
        let abort_scale_down_delay = rng.percent(50);
        let without_status = new_rollout && rng.percent(40);
        let mut pods: BTreeMap<_, _> = TAGS.iter().map(|&t| (t, draw_pods(&mut rng))).collect();
        // The image active at the start: deploying it again is a rollback.
        pods.insert("v1", Pods::good());
        let length = 3 + rng.below(6) as usize;
        let weights: Vec<u32> = faults().iter().map(|f| f.weight).collect();
        let mut steps = Vec::new();
        // The tag most steps are about: the one deployed last (a pipeline's
        // own), else another (an older or a newer pipeline's).
        let mut latest = TAGS[0];
        while steps.len() < length {
            // Mostly the tag deployed last (a pipeline's own), else another (an
            // older or a newer pipeline's), at times v1 (`deploy --tag
            // <previous>`: a fast rollback while its ReplicaSet keeps its pods).
            let tag = if rng.percent(60) {
                latest
            } else if !new_rollout && rng.percent(25) {
                "v1"
            } else {
                rng.pick(&TAGS)
            };
            let op = match rng.weighted(&[20, 24, 15, 12, 7, 12, 8]) {
                0 => Op::Deploy {
                    tag,
                    wait: rng.percent(60),
                    replace: rng.percent(30),
                    fast_rollback: rng.percent(25),
                },
                1 => Op::Release {
                    tag,
                    no_promote: rng.percent(30),
                    replace: rng.percent(40),
                    fast_rollback: rng.percent(20),
                },
                2 => {
                    // Half of the promotes come after a preview was made ready.
                    if rng.percent(50) {
                        latest = rng.pick(&TAGS);
                        steps.push(Step {
                            op: Op::Deploy {
                                tag: latest,
                                wait: true,
                                replace: true,
                                fast_rollback: false,
                            },
                            fault: None,
                        });
                    }
                    let expect = if rng.percent(60) {
                        latest
                    } else {
                        rng.pick(&TAGS)
                    };
                    Op::Promote { expect }
                }
                3 => Op::Abort {
                    only_expected: rng.percent(30).then_some(tag),
                },
                4 => Op::Status,
                5 => Op::Tick,
                _ => Op::Pods {
                    tag,
                    pods: draw_pods(&mut rng),
                },
            };
            if let Op::Deploy { tag, .. } | Op::Release { tag, .. } = op {
                latest = tag;
            }
            let aborted = matches!(op, Op::Abort { .. });
            let task = !matches!(op, Op::Tick | Op::Pods { .. } | Op::Status);
            let fault = (task && rng.percent(25)).then(|| rng.weighted(&weights));
            steps.push(Step { op, fault });
            // The pipeline's deploy job re-run after its own abort: the aborted image again.
            if aborted && rng.percent(40) {
                let op = if rng.percent(50) {
                    Op::Deploy {
                        tag: latest,
                        wait: rng.percent(50),
                        replace: false,
                        fast_rollback: rng.percent(25),
                    }
                } else {
                    Op::Release {
                        tag: latest,
                        no_promote: false,
                        replace: false,
                        fast_rollback: rng.percent(25),
                    }
                };
                steps.push(Step { op, fault: None });
            }
        }
        let kept = (0..steps.len()).collect();
        Sequence {
            seed,
            new_rollout,
            controller,
            scale_down_delay,
            abort_scale_down_delay,
            without_status,
            pods,
            steps,
            kept,
        }
    }

    /// The same sequence with only the steps at these positions (of `steps`).
    fn only(&self, positions: &[usize]) -> Sequence {
        Sequence {
            steps: positions.iter().map(|&i| self.steps[i].clone()).collect(),
            kept: positions.iter().map(|&i| self.kept[i]).collect(),
            ..self.clone()
        }
    }

    fn replay_line(&self) -> String {
        let steps: Vec<String> = self.kept.iter().map(usize::to_string).collect();
        format!(
            "ROLLOUT_MODEL_SEED={} ROLLOUT_MODEL_STEPS={} cargo test -p xtask --test rollout_model",
            self.seed,
            steps.join(",")
        )
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {}, controller {}; old ReplicaSets keep their pods {}, aborted ones {}",
            self.seed,
            match (self.new_rollout, self.without_status) {
                (false, _) => "v1 active",
                (true, false) => "a new Rollout (no active pods yet)",
                (true, true) =>
                    "a new Rollout (no active pods yet) without status until the clock moves",
            },
            self.controller,
            until_tick(self.scale_down_delay),
            until_tick(self.abort_scale_down_delay),
        )?;
        for (tag, pods) in &self.pods {
            writeln!(f, "  pods of {tag}: {pods:?}")?;
        }
        for (step, index) in self.steps.iter().zip(&self.kept) {
            writeln!(f, "  {index:>2}. {step}")?;
        }
        Ok(())
    }
}

fn until_tick(kept: bool) -> &'static str {
    if kept {
        "until the clock moves"
    } else {
        "not at all"
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Tick => write!(f, "the clock moves {LATER}s")?,
            Op::Pods { tag, pods } => write!(f, "the pods of {tag} become {pods:?}")?,
            op => write!(f, "cargo xtask {}", task_args(op).join(" "))?,
        }
        if let Some(i) = self.fault {
            write!(f, "   [fault: {}]", faults()[i].name)?;
        }
        Ok(())
    }
}

/// The task's arguments, with the namespace and the quick knobs.
fn task_args(op: &Op) -> Vec<String> {
    let image_of = |tag: &str| ["--image", REPOSITORY, "--tag", tag].map(str::to_owned);
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut args: Vec<String> = Vec::new();
    match op {
        Op::Deploy {
            tag,
            wait,
            replace,
            fast_rollback,
        } => {
            args.push("deploy".into());
            args.extend(image_of(tag));
            if *wait {
                args.push("--wait".into());
            }
            // Also the wait for a new Rollout's first status.
            args.extend(["--timeout".into(), ms(TIMEOUT)]);
            args.extend(["--poll-interval".into(), POLL.into()]);
            if *replace {
                args.push("--replace".into());
            }
            if *fast_rollback {
                args.push("--fast-rollback".into());
            }
        }
        Op::Release {
            tag,
            no_promote,
            replace,
            fast_rollback,
        } => {
            args.push("release".into());
            args.extend(image_of(tag));
            args.extend(["--expect-version".into(), tag.to_string()]);
            args.extend(["--timeout".into(), ms(TIMEOUT)]);
            args.extend(["--sanity-timeout".into(), ms(SANITY_TIMEOUT)]);
            args.extend(["--poll-interval".into(), POLL.into()]);
            if *no_promote {
                args.push("--no-promote".into());
            }
            if *replace {
                args.push("--replace".into());
            }
            if *fast_rollback {
                args.push("--fast-rollback".into());
            }
        }
        Op::Promote { expect } => {
            args.push("promote".into());
            args.extend(image_of(expect));
            args.extend(["--timeout".into(), ms(TIMEOUT)]);
            args.extend(["--poll-interval".into(), POLL.into(), "--yes".into()]);
        }
        Op::Abort { only_expected } => {
            args.extend(["abort".into(), "--yes".into()]);
            if let Some(tag) = only_expected {
                args.push("--only-expected".into());
                args.extend(image_of(tag));
            }
        }
        Op::Status => args.extend(["status".into(), "--json".into()]),
        Op::Tick | Op::Pods { .. } => return args,
    }
    args.extend(["-n".into(), NAMESPACE.into()]);
    args.extend(["--request-timeout".into(), ms(REQUEST_TIMEOUT)]);
    args
}

/// The most a task may take: the waits and call deadlines its help documents
/// (each call is stopped after three request timeouts), plus SLACK.
/// `statusless`: the Rollout has no status yet, and the first read waits for it.
fn bound(op: &Op, statusless: bool) -> Duration {
    let call = REQUEST_TIMEOUT * 3;
    let poll = Duration::from_millis(50);
    // wait::until: its timeout, then the read in progress and one interval.
    let wait = |timeout: Duration| timeout + call + poll;
    // promote, abort and status wait 6 request timeouts for a first status (500ms interval).
    let short_wait = wait(REQUEST_TIMEOUT * 6) + Duration::from_millis(500);
    // abort: the call, then a wait of 6 request timeouts, up to 3 times.
    let abort = (call + short_wait) * 3;
    // deploy and release: the read (a wait for a first status), the old
    // ReplicaSets (or the stable one, to name its revision), set image (twice
    // on a conflict), read back.
    let deploy = if statusless { wait(TIMEOUT) } else { call } + call * 4;
    let first_read = if statusless { short_wait } else { call };
    let tasks = match op {
        Op::Status => first_read + call,
        Op::Deploy { wait: w, .. } => deploy + if *w { wait(TIMEOUT) } else { Duration::ZERO },
        // read, promote, read back, the wait for Healthy
        Op::Promote { .. } => first_read + call * 2 + wait(TIMEOUT),
        Op::Abort { .. } => first_read + abort,
        // deploy, its wait, sanity (its port-forward within the same deadline),
        // read, promote, read back, the wait for Healthy, then the recovery:
        // a read and the abort.
        Op::Release { .. } => {
            deploy
                + wait(TIMEOUT)
                + SANITY_TIMEOUT
                + Duration::from_millis(500)
                + call * 3
                + wait(TIMEOUT)
                + call
                + abort
        }
        Op::Tick | Op::Pods { .. } => Duration::ZERO,
    };
    tasks + SLACK
}

// ---------------------------------------------------------------------------
// The truth, read from the doubles after each step.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Truth {
    /// The image the active Service serves.
    active: Option<String>,
    /// The pod template's image.
    template: String,
    observed: bool,
    /// status.phase and status.message as the controller wrote them.
    phase: String,
    message: String,
    /// status.abort, which the plugin itself writes.
    abort: bool,
    /// status.abortedAt, which only the controller writes, once it acted on the abort.
    aborted_at: bool,
    /// The images of old ReplicaSets that still have their pods (a
    /// scale-down deadline ahead): a template equal to one is fast-tracked.
    kept: Vec<String>,
    /// The preview of the current template waits at the blue/green pause.
    paused: bool,
    /// An update is in flight: unobserved, or the current ReplicaSet is not the stable one.
    updating: bool,
}

impl Truth {
    fn read(world: &World, path: &OsString) -> Truth {
        let run = support::run(
            world
                .command(doubles().join("kubectl"))
                .args(GET_ROLLOUT)
                .env("ARGO_ROLLOUTS_DOUBLE_TEST_READ", "1")
                .env("PATH", path),
        );
        assert_eq!(run.code, Some(0), "reading the truth failed\n{run}");
        let ro: Value = serde_json::from_str(&run.stdout).unwrap();
        let status = &ro["status"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let observed = text(&status["observedGeneration"]).parse::<i64>().ok()
            == ro["metadata"]["generation"].as_i64();
        let abort = status["abort"] == json!(true);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let history = world.state()["rollouts"][format!("{NAMESPACE}/api")]["history"].clone();
        let kept = history
            .as_array()
            .into_iter()
            .flatten()
            .filter(|rs| rs["scale_down_at"].as_f64().is_some_and(|at| at > now))
            .filter_map(|rs| rs["containers"].as_object()?.values().next()?.as_str())
            .map(str::to_owned)
            .collect();
        let current = text(&status["currentPodHash"]);
        let paused = observed
            && !abort
            && status["pauseConditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "BlueGreenPause"))
            && text(&status["blueGreen"]["previewSelector"]) == current;
        Truth {
            active: world.active_image(),
            template: text(&ro["spec"]["template"]["spec"]["containers"][0]["image"]),
            observed,
            phase: text(&status["phase"]),
            message: text(&status["message"]),
            abort,
            aborted_at: !status["abortedAt"].is_null(),
            kept,
            paused,
            updating: !observed || current != text(&status["stableRS"]),
        }
    }

    /// The abort holds: the controller saw the template and acted on the
    /// abort (abortedAt), which the plugin's status.abort alone does not say.
    fn abort_holds(&self) -> bool {
        self.abort && self.aborted_at && self.observed && self.phase == "Degraded"
    }

    /// A preview someone has to deal with: an update in flight over an active
    /// version, not aborted.
    fn preview_in_flight(&self) -> bool {
        self.active.is_some() && self.updating && !self.abort_holds()
    }

    fn healthy(&self) -> bool {
        self.observed && !self.updating && self.phase == "Healthy"
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "active {}, template {}{}, {} {:?}{}{}",
            self.active.as_deref().unwrap_or("none"),
            self.template,
            if self.observed { "" } else { " (unobserved)" },
            self.phase,
            self.message,
            match (self.abort, self.aborted_at) {
                (true, true) => ", abort set and acted on (abortedAt)",
                (true, false) => ", abort set, not acted on yet (no abortedAt)",
                _ => "",
            },
            if self.paused { ", at the pause" } else { "" },
        )?;
        if !self.kept.is_empty() {
            write!(f, ", old ReplicaSets up: {:?}", self.kept)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Running a sequence.

/// A rule broken at a step.
#[derive(Debug)]
struct Violation {
    step: usize,
    rule: &'static str,
    what: String,
    /// What the step printed, when it was a task.
    ran: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rule {} broken at step {}: {}",
            self.rule, self.step, self.what
        )?;
        if let Some(ran) = &self.ran {
            write!(f, "{ran}")?;
        }
        Ok(())
    }
}

/// What a run counted, for the figures.
#[derive(Default)]
struct Figures {
    sequences: usize,
    steps: usize,
    /// Steps of each kind, and the time they took.
    by_kind: BTreeMap<&'static str, (usize, Duration)>,
    faults: BTreeMap<&'static str, usize>,
    claims: BTreeMap<&'static str, usize>,
    exits: BTreeMap<String, usize>,
    /// Known gaps met (see KNOWN_GAPS).
    gaps: BTreeMap<&'static str, usize>,
    /// The largest share of its bound a task took, and which.
    closest: (f64, String),
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.sequences += other.sequences;
        self.steps += other.steps;
        for (k, (n, took)) in other.by_kind {
            let entry = self.by_kind.entry(k).or_default();
            entry.0 += n;
            entry.1 += took;
        }
        for (k, v) in other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in other.claims {
            *self.claims.entry(k).or_default() += v;
        }
        for (k, v) in other.gaps {
            *self.gaps.entry(k).or_default() += v;
        }
        for (k, v) in other.exits {
            *self.exits.entry(k).or_default() += v;
        }
        if other.closest.0 > self.closest.0 {
            self.closest = other.closest;
        }
    }
}

fn kind(op: &Op) -> &'static str {
    match op {
        Op::Deploy { wait: true, .. } => "deploy --wait",
        Op::Deploy { .. } => "deploy",
        Op::Release {
            no_promote: true, ..
        } => "release --no-promote",
        Op::Release { .. } => "release",
        Op::Promote { .. } => "promote",
        Op::Abort { .. } => "abort",
        Op::Status => "status",
        Op::Tick => "clock",
        Op::Pods { .. } => "pods change",
    }
}

/// The folder of `fast_path`'s link to the Python interpreter, removed at the end.
static PYTHON_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// The doubles first on PATH, then the Python interpreter itself (not a
/// version manager's shim, a shell script that costs ~0.3 s a start), then the
/// machine's PATH.
fn fast_path() -> OsString {
    let dir = PYTHON_DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        let python = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        let dir = std::env::temp_dir().join(format!("xtask-rollout-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let link = dir.join("python3");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(python, &link).ok()?;
        Some(dir)
    });
    let mut dirs = vec![doubles()];
    dirs.extend(dir.clone());
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// One sequence in its own world.
struct Run<'s> {
    seq: &'s Sequence,
    world: World,
    path: OsString,
    pods: BTreeMap<&'static str, Pods>,
    servers: BTreeMap<&'static str, Pod>,
    /// Images a checked promote or an explicit fast rollback was sent for,
    /// whose switch is still to come.
    approved: Vec<String>,
    /// The Rollout has no status yet (until the first clock step).
    statusless: bool,
    figures: Figures,
}

impl<'s> Run<'s> {
    fn new(seq: &'s Sequence) -> Run<'s> {
        let world = World::new((!seq.new_rollout).then_some("v1"));
        let mut run = Run {
            seq,
            world,
            path: fast_path(),
            pods: BTreeMap::new(),
            servers: BTreeMap::new(),
            approved: Vec::new(),
            statusless: seq.without_status,
            figures: Figures::default(),
        };
        let mut state = run.world.state();
        state["controller_version"] = json!(seq.controller);
        let later = |kept: bool| if kept { LATER } else { 0.0 };
        state["scale_down_delay"] = json!(later(seq.scale_down_delay));
        state["abort_scale_down_delay"] = json!(later(seq.abort_scale_down_delay));
        clear_faults(&mut state);
        clear_lag(&mut state);
        run.world.write_state(&state);
        if seq.without_status {
            run.world.without_status_for(LATER);
        }
        let world_facts = [
            (
                seq.scale_down_delay,
                "(world) old ReplicaSets keep their pods until the clock moves",
            ),
            (
                seq.abort_scale_down_delay,
                "(world) aborted ReplicaSets keep their pods until the clock moves",
            ),
            (
                seq.without_status,
                "(world) a new Rollout without status until the clock moves",
            ),
        ];
        for (on, name) in world_facts {
            if on {
                *run.figures.faults.entry(name).or_default() += 1;
            }
        }
        run.set_pods("v1", Pods::good());
        for (tag, pods) in &seq.pods {
            run.set_pods(tag, *pods);
        }
        run
    }

    /// Edits the state without the doubles' lock: between steps no process of
    /// the world runs (checked after every step).
    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut state = self.world.state();
        f(&mut state);
        self.world.write_state(&state);
    }

    fn set_pods(&mut self, tag: &'static str, pods: Pods) {
        let server = match pods.serving {
            Serving::Good => Some(Pod::answering(200, health(tag))),
            Serving::WrongVersion => Some(Pod::answering(200, health("v0"))),
            Serving::Error500 => Some(Pod::answering(500, r#"{"error":"boom"}"#)),
            Serving::Silent => Some(Pod::silent()),
            Serving::Pending | Serving::Missing => None,
        };
        let later = |slow: bool| if slow { LATER } else { 0.0 };
        let behaviour = match pods.readiness {
            Readiness::Ready | Readiness::Slow => json!({
                "ready_after": later(pods.readiness == Readiness::Slow),
                "degrade_after": null,
            }),
            Readiness::Never => json!({"ready_after": null, "degrade_after": null}),
            Readiness::Stuck => json!({"ready_after": null, "degrade_after": LATER}),
        };
        let addr = server.as_ref().map(|s| s.addr.clone());
        self.edit(|s| {
            let img = image(tag);
            s["behaviour"][&img] = behaviour;
            s["behaviour"][&img]["switch_after"] = json!(later(pods.slow_switch));
            match addr {
                Some(addr) => s["pods"][&img] = json!(addr),
                None => {
                    if let Some(p) = s["pods"].as_object_mut() {
                        p.remove(&img);
                    }
                }
            }
            let fault = match pods.serving {
                Serving::Pending => json!("pending"),
                Serving::Missing => json!("missing"),
                _ => Value::Null,
            };
            s["pod_faults"][&img] = fault;
        });
        self.pods.insert(tag, pods);
        match server {
            Some(server) => self.servers.insert(tag, server),
            None => self.servers.remove(tag),
        };
    }

    /// Moves every time the controller keeps back by `seconds`: to the
    /// doubles, that much time has passed.
    fn tick(&mut self, seconds: f64) {
        let earlier = |object: &mut Value| {
            for (key, value) in object.as_object_mut().unwrap() {
                if key.ends_with("_at")
                    && let Some(t) = value.as_f64()
                {
                    *value = json!(t - seconds);
                }
            }
        };
        self.edit(|s| {
            for ro in s["rollouts"].as_object_mut().unwrap().values_mut() {
                earlier(ro);
                // The ReplicaSets' creation and scale-down deadlines.
                for rs in ro["history"].as_array_mut().into_iter().flatten() {
                    earlier(rs);
                }
            }
        });
        self.statusless = false;
    }

    fn sequence(mut self) -> Result<Figures, Violation> {
        let mut before = Truth::read(&self.world, &self.path);
        for (i, step) in self.seq.steps.iter().enumerate() {
            let at = self.seq.kept[i];
            if let Some(f) = step.fault {
                self.edit(|s| (faults()[f].on)(s));
                *self
                    .figures
                    .faults
                    .entry(faults()[f].name.as_str())
                    .or_default() += 1;
            }
            let changes_before = self.world.changes().len();
            let step_started = Instant::now();
            let ran = match &step.op {
                Op::Tick => {
                    self.tick(LATER);
                    self.edit(clear_lag);
                    None
                }
                Op::Pods { tag, pods } => {
                    self.set_pods(tag, *pods);
                    None
                }
                op => Some(self.task(op, at)?),
            };
            let step_took = step_started.elapsed();
            if std::env::var_os("ROLLOUT_MODEL_VERBOSE").is_some() {
                eprintln!("step {at}: {step} ({step_took:.1?})");
                if let Some(ran) = &ran {
                    eprintln!("{ran}");
                }
            }
            let after = Truth::read(&self.world, &self.path);
            let changes: Vec<String> = self.world.changes().split_off(changes_before);
            let check = Check {
                step: at,
                op: &step.op,
                before: &before,
                after: &after,
                ran: ran.as_ref(),
                changes: &changes,
                pods: &self.pods,
            };
            check.active_changes(&mut self.approved)?;
            if let Some(ran) = &ran {
                if let Some(gap) = check.failure_says_what_is_left(ran)? {
                    *self.figures.gaps.entry(gap).or_default() += 1;
                }
                for claim in check.claims(ran, &self.world, &self.path)? {
                    *self.figures.claims.entry(claim).or_default() += 1;
                }
                let exit = format!(
                    "{} exit {}",
                    kind(&step.op),
                    ran.code.map_or("signal".into(), |c| c.to_string())
                );
                *self.figures.exits.entry(exit).or_default() += 1;
            }
            let left = rollout_support::processes_with_marker(&self.world.marker);
            if !left.is_empty() {
                // A moment for processes being reaped, as World's own check allows.
                std::thread::sleep(Duration::from_millis(500));
                let left = rollout_support::processes_with_marker(&self.world.marker);
                if !left.is_empty() {
                    return Err(Violation {
                        step: at,
                        rule: "(d)",
                        what: format!("processes left running after the step: {left:#?}"),
                        ran: ran.map(|r| r.to_string()),
                    });
                }
            }
            let count = self.figures.by_kind.entry(kind(&step.op)).or_default();
            count.0 += 1;
            count.1 += step_took;
            self.figures.steps += 1;
            before = after;
            if step.fault.is_some_and(|f| !faults()[f].until_tick) {
                self.edit(clear_faults);
            }
        }
        self.figures.sequences = 1;
        Ok(self.figures)
    }

    /// Runs the task, killed (with its process group) at its bound: rule (d).
    fn task(&mut self, op: &Op, at: usize) -> Result<Ran, Violation> {
        let args = task_args(op);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.world.xtask(&args);
        cmd.env("PATH", &self.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let argv = support::argv(&cmd);
        let limit = bound(op, self.statusless);
        let start = Instant::now();
        let mut child: Child = cmd.spawn().unwrap();
        let stdout = Collected::new(child.stdout.take().unwrap());
        let stderr = Collected::new(child.stderr.take().unwrap());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        let ran = Ran {
            argv,
            code: status.and_then(|s| s.code()),
            stdout: stdout.finish(),
            stderr: stderr.finish(),
        };
        let share = took.as_secs_f64() / limit.as_secs_f64();
        if share > self.figures.closest.0 {
            self.figures.closest = (share, format!("{} took {took:.1?} of {limit:?}", kind(op)));
        }
        if status.is_none() {
            return Err(Violation {
                step: at,
                rule: "(d)",
                what: format!(
                    "`{}` outlived its bound of {limit:?} and was killed",
                    kind(op)
                ),
                ran: Some(ran.to_string()),
            });
        }
        Ok(ran)
    }
}

fn health(version: &str) -> String {
    format!(r#"{{"status":"ok","version":"{version}"}}"#)
}

/// One step's facts, for the rules.
struct Check<'a> {
    step: usize,
    op: &'a Op,
    before: &'a Truth,
    after: &'a Truth,
    ran: Option<&'a Ran>,
    /// The plugin's changing calls during the step.
    changes: &'a [String],
    pods: &'a BTreeMap<&'static str, Pods>,
}

impl Check<'_> {
    fn violation(&self, rule: &'static str, what: String) -> Violation {
        Violation {
            step: self.step,
            rule,
            what: format!(
                "{what}\n  before: {}\n  after:  {}",
                self.before, self.after
            ),
            ran: self.ran.map(|r| r.to_string()),
        }
    }

    fn sent(&self, subcommand: &str) -> bool {
        self.changes.iter().any(|c| c.starts_with(subcommand))
    }

    /// The image a checked promote of this step is for: the promote task's
    /// expected image, or release's image once sanity can pass on it.
    fn promoted_image(&self) -> Result<Option<String>, Violation> {
        if !self.sent("promote") {
            return Ok(None);
        }
        match self.op {
            Op::Promote { expect } => Ok(Some(image(expect))),
            Op::Release {
                tag,
                no_promote: false,
                ..
            } => {
                if !self.pods[tag].pass_sanity() {
                    return Err(self.violation(
                        "(a)",
                        format!(
                            "release sent promote for {tag}, whose pods are {:?}: sanity cannot have passed",
                            self.pods[tag]
                        ),
                    ));
                }
                Ok(Some(image(tag)))
            }
            op => Err(self.violation("(a)", format!("{op:?} sent promote"))),
        }
    }

    /// Rule (a): the active image changes only through a checked promote, a
    /// new Rollout's first revision, or an explicit fast rollback.
    fn active_changes(&self, approved: &mut Vec<String>) -> Result<(), Violation> {
        if let Some(promoted) = self.promoted_image()? {
            approved.push(promoted);
        }
        // An explicit fast rollback: the flag, and the image of an old
        // ReplicaSet that still had its pods (the switch may come at a later
        // clock step, when the controller lags).
        if let Op::Deploy {
            tag,
            fast_rollback: true,
            ..
        }
        | Op::Release {
            tag,
            fast_rollback: true,
            ..
        } = self.op
            && self.sent("set image")
            && self.before.kept.contains(&image(tag))
        {
            approved.push(image(tag));
        }
        if self.after.active == self.before.active {
            return Ok(());
        }
        let Some(to) = self.after.active.clone() else {
            return Err(self.violation("(a)", "the active Service lost its pods".into()));
        };
        let first_revision = self.before.active.is_none();
        let promoted = approved.iter().position(|a| *a == to);
        if let Some(i) = promoted {
            approved.remove(i);
        }
        if first_revision || promoted.is_some() {
            return Ok(());
        }
        Err(self.violation(
            "(a)",
            format!(
                "the active image changed to {to}, and no checked promote, first revision or fast rollback explains it \
                 (checked promotes pending: {approved:?})"
            ),
        ))
    }

    /// Rule (b): a non-zero exit after a change leaves no preview in flight,
    /// or says which one is left, in what state, and how to clean it up.
    /// Ok(Some(gap)) when it does not, and that is a known gap.
    fn failure_says_what_is_left(&self, ran: &Ran) -> Result<Option<&'static str>, Violation> {
        if ran.success() || self.changes.is_empty() || !self.after.preview_in_flight() {
            return Ok(None);
        }
        let names_it = ran.stderr.contains(&self.after.template);
        let cleanup = [
            "cargo xtask abort",
            "abort by hand",
            "kubectl-argo-rollouts abort",
        ]
        .iter()
        .any(|way| ran.stderr.contains(way));
        if names_it && cleanup {
            return Ok(None);
        }
        // After a promote that may have landed, what is left is a switch to
        // look for, not a preview to abort (the claim is checked in `claims`).
        let look = ["cargo xtask status", "kubectl get"]
            .iter()
            .any(|way| ran.stderr.contains(way));
        if self.sent("promote") && ran.stderr.contains("state unknown") && look {
            return Ok(None);
        }
        if let Some(gap) = known_gap("(b)", self.op) {
            return Ok(Some(gap));
        }
        Err(self.violation(
            "(b)",
            format!(
                "exit {:?} after {:?}, and the preview {} is left in flight; the output {}",
                ran.code,
                self.changes,
                self.after.template,
                match (names_it, cleanup) {
                    (false, false) => "neither names it nor says how to clean it up",
                    (false, true) => "does not name it",
                    _ => "does not say how to clean it up",
                }
            ),
        ))
    }

    /// Rule (c): each claim the output makes about the end state, checked
    /// against what is read back. Returns the claims checked.
    fn claims(
        &self,
        ran: &Ran,
        world: &World,
        path: &OsString,
    ) -> Result<Vec<&'static str>, Violation> {
        let (before, after) = (self.before, self.after);
        let out = &ran.stderr;
        let mut checked = Vec::new();
        let mut claim = |name: &'static str, holds: bool, why: &str| {
            checked.push(name);
            match holds {
                true => Ok(()),
                false => Err(self.violation("(c)", format!("it claims {name:?}, but {why}"))),
            }
        };
        if out.contains("aborted rollout api, read back: Degraded - RolloutAborted") {
            claim(
                "aborted",
                after.abort_holds() && after.active == before.active,
                "the abort does not hold, or the active image moved",
            )?;
        }
        if out.contains("so the active version is unchanged") {
            claim(
                "the active version is unchanged",
                after.active == before.active,
                "it changed",
            )?;
        }
        if let Some(rest) = after_text(
            out,
            "promoted: rollout api is Healthy and its active Service selects ReplicaSet ",
        ) {
            let img = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(i, _)| i);
            claim(
                "promoted",
                img.is_some() && after.active.as_deref() == img && after.healthy(),
                "the active image or the phase read back differ",
            )?;
        }
        if out.contains("nothing to abort") {
            claim(
                "nothing to abort",
                !after.updating && !self.sent("abort"),
                "an update is in flight, or an abort was sent",
            )?;
        }
        if out.contains("a new Rollout's first revision is made stable") {
            claim(
                "nothing in flight: a first revision is stable at once",
                self.before.active.is_none() && !after.updating && !self.sent("abort"),
                "the Rollout had an active image, an update is in flight, or an abort was sent",
            )?;
        }
        if out.contains("state unknown") {
            claim(
                "promotion sent, state unknown",
                self.sent("promote") && !self.sent("abort") && !ran.success(),
                "no promote was sent, an abort was, or it exits 0",
            )?;
        }
        if out.contains("not aborted: ") && !out.contains("not aborted: not confirmed") {
            claim("not aborted", !self.sent("abort"), "an abort was sent")?;
        }
        let tag = match self.op {
            Op::Deploy { tag, .. } | Op::Release { tag, .. } => Some(image(tag)),
            _ => None,
        };
        if out.contains("aborted the update to this same image") {
            claim(
                "refused: the aborted image again",
                before.abort && before.observed && Some(&before.template) == tag.as_ref(),
                "the template is not that image, or its update is not aborted",
            )?;
        }
        if out.contains("The controller would fast-track it") {
            claim(
                "refused: a fast rollback without the flag",
                tag.as_ref().is_some_and(|t| before.kept.contains(t))
                    && Some(&before.template) != tag.as_ref(),
                "the image has no old ReplicaSet with its pods, or it is the template already",
            )?;
        }
        if out.contains("a fast rollback of rollout") {
            claim(
                "a fast rollback",
                tag.as_ref().is_some_and(|t| before.kept.contains(t)),
                "the image has no old ReplicaSet with its pods",
            )?;
        }
        if out.contains("nothing is left to abort") {
            claim(
                "nothing is left to abort",
                !after.updating,
                "an update is in flight",
            )?;
        }
        if let Some(rest) = after_text(out, "the preview is ready on ") {
            let img = rest.split(';').next().unwrap_or_default();
            claim(
                "the preview is ready",
                after.paused && after.template == img,
                "it is not at the pause with that image",
            )?;
        }
        if let Op::Release { tag, .. } = self.op
            && out.contains("passed its checks and waits for promotion")
        {
            claim(
                "the checked preview waits",
                after.paused && after.template == image(tag) && self.pods[tag].pass_sanity(),
                "it is not at the pause with that image, or its pods cannot pass sanity",
            )?;
        }
        if out.contains("went straight to Healthy without a pause") {
            claim(
                "went straight to active",
                after.active.as_deref() == Some(after.template.as_str()) && after.healthy(),
                "the active image is not the template's, or it is not Healthy",
            )?;
        }
        if let Some(rest) = after_text(out, "read back, its template is still ") {
            let img = rest.split_whitespace().next().unwrap_or_default();
            claim(
                "the template was not changed",
                after.template == img,
                "the template differs",
            )?;
        }
        if out.contains("not promoted: read back, the preview still waits at the pause") {
            claim(
                "not promoted, still paused",
                after.paused,
                "it is not at the pause",
            )?;
        }
        if out.contains("after the promotion switched traffic: read back") {
            let to = match self.op {
                Op::Release { tag, .. } => Some(image(tag)),
                _ => None,
            };
            claim(
                "traffic switched",
                after.active == to,
                "the active image is another",
            )?;
        }
        if out.contains("error: refusing to") || out.contains("error: not aborting") {
            claim(
                "refused",
                self.changes.is_empty() && after == before,
                "a change was sent or the rollout moved",
            )?;
        }
        // The exit code is a claim too.
        if ran.success() {
            match self.op {
                Op::Deploy { tag, .. } => claim(
                    "deploy succeeded",
                    after.template == image(tag),
                    "the template is not the deployed image",
                )?,
                Op::Promote { expect } => claim(
                    "promote succeeded",
                    after.active == Some(image(expect)) && after.healthy(),
                    "the expected image is not active and Healthy",
                )?,
                Op::Release {
                    tag,
                    no_promote: false,
                    ..
                } => claim(
                    "release succeeded",
                    after.active == Some(image(tag)) && after.healthy(),
                    "its image is not active and Healthy",
                )?,
                Op::Release { tag, .. } => claim(
                    "release --no-promote succeeded",
                    after.template == image(tag) && (after.paused || after.healthy()),
                    "its image is neither the preview at the pause nor active",
                )?,
                _ => {}
            }
        }
        if *self.op == Op::Status && !ran.success() && ran.stderr.contains("still has no status") {
            claim(
                "status: no status yet",
                after.phase.is_empty(),
                "the Rollout has a status",
            )?;
        } else if *self.op == Op::Status {
            let view = plugin_view(world, path);
            let status: Value = match serde_json::from_str(&ran.stdout) {
                Ok(v) => v,
                Err(_) => return Err(self.violation("(c)", "status --json printed no JSON".into())),
            };
            let preview =
                after.updating || after.active.as_deref() != Some(after.template.as_str());
            claim(
                "status",
                status["phase"] == view.split(" - ").next().unwrap_or_default()
                    && status["aborted"] == json!(after.abort)
                    && status["promotion_waiting"] == json!(after.paused)
                    && status["active"]["image"].as_str() == after.active.as_deref()
                    && (status["preview"]["image"].as_str() == Some(after.template.as_str()))
                        == preview
                    && ran.success() == (after.phase != "Degraded" || !after.observed),
                &format!("the plugin's view is {view:?}"),
            )?;
        }
        Ok(checked)
    }
}

/// The text after `marker` in `text`, if it is there.
fn after_text<'t>(text: &'t str, marker: &str) -> Option<&'t str> {
    text.find(marker).map(|i| &text[i + marker.len()..])
}

/// The phase line the plugin's `status --watch=false` prints now (the test's own look).
fn plugin_view(world: &World, path: &OsString) -> String {
    let run = support::run(
        world
            .command(doubles().join("kubectl-argo-rollouts"))
            .args(["status", "api", "--watch=false", "-n", NAMESPACE])
            .env("ARGO_ROLLOUTS_DOUBLE_TEST_READ", "1")
            .env("PATH", path),
    );
    run.stdout.lines().next().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------
// The test: draw, run, and on failure shrink.

fn run(seq: &Sequence) -> Result<Figures, Violation> {
    Run::new(seq).sequence()
}

/// The fewest steps of `seq` that still break a rule: drops halves, then
/// quarters, ..., then single steps, for as long as the sequence fails.
fn shrink(seq: &Sequence, first: Violation) -> (Sequence, Violation, usize) {
    let mut best = (seq.clone(), first);
    let mut runs = 0;
    let started = Instant::now();
    let mut chunk = best.0.steps.len().div_ceil(2);
    while chunk >= 1 && started.elapsed() < Duration::from_secs(300) {
        let mut start = 0;
        let mut shrunk = false;
        while start < best.0.steps.len() {
            let keep: Vec<usize> = (0..best.0.steps.len())
                .filter(|i| *i < start || *i >= start + chunk)
                .collect();
            if keep.is_empty() {
                start += chunk;
                continue;
            }
            let candidate = best.0.only(&keep);
            runs += 1;
            match run(&candidate) {
                Err(violation) => {
                    best = (candidate, violation);
                    shrunk = true;
                }
                Ok(_) => start += chunk,
            }
        }
        if !shrunk {
            chunk /= 2;
        }
    }
    (best.0, best.1, runs)
}

/// Removes a folder when dropped (also when the test fails).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
    )
}

#[test]
fn random_sequences_of_rollout_tasks_keep_the_four_rules() {
    let started = Instant::now();
    let replay = env_number("ROLLOUT_MODEL_SEED");
    let cases = env_number("ROLLOUT_MODEL_CASES");
    let seconds = env_number("ROLLOUT_MODEL_SECONDS").unwrap_or(45);
    let threads = env_number("ROLLOUT_MODEL_THREADS").unwrap_or(2).max(1) as usize;
    // In CI a fixed base seed: a red pipeline from a seed never drawn before
    // would block everyone; a new seed finds new sequences locally.
    let base = replay
        .or_else(|| env_number("ROLLOUT_MODEL_BASE_SEED"))
        .unwrap_or_else(|| match std::env::var_os("CI") {
            Some(_) => CI_BASE_SEED,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        });
    let seed_of = |i: usize| match replay {
        Some(seed) => seed,
        None => Rng(base.wrapping_add(i as u64)).next(),
    };
    let steps: Option<Vec<usize>> = std::env::var("ROLLOUT_MODEL_STEPS").ok().map(|text| {
        text.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("ROLLOUT_MODEL_STEPS: numbers separated by commas")
            })
            .collect()
    });
    let draw = |i: usize| {
        let seq = Sequence::draw(seed_of(i));
        match &steps {
            Some(keep) => {
                let positions: Vec<usize> = keep
                    .iter()
                    .copied()
                    .filter(|&k| k < seq.steps.len())
                    .collect();
                seq.only(&positions)
            }
            None => seq,
        }
    };
    let wanted = match (replay, cases) {
        (Some(_), _) => 1,
        (None, Some(n)) => n as usize,
        (None, None) => usize::MAX,
    };
    let budget = Duration::from_secs(seconds);
    eprintln!(
        "rollout model: base seed {base}, {}, {threads} at a time",
        if wanted == usize::MAX {
            format!("as many sequences as fit in {seconds}s")
        } else {
            format!("{wanted} sequences")
        }
    );

    let next = AtomicUsize::new(0);
    let longest_ms = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let figures = Mutex::new(Figures::default());
    let failed: Mutex<Option<(Sequence, Violation)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    // Within the budget, a sequence starts only if one as long as the
                    // longest so far still ends within it.
                    let longest = Duration::from_millis(longest_ms.load(Ordering::SeqCst));
                    if stop.load(Ordering::SeqCst)
                        || (wanted == usize::MAX && started.elapsed() + longest > budget)
                    {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= wanted {
                        return;
                    }
                    let seq = draw(i);
                    let seq_started = Instant::now();
                    let result = run(&seq);
                    let took = seq_started.elapsed().as_millis() as u64;
                    longest_ms.fetch_max(took, Ordering::SeqCst);
                    match result {
                        Ok(f) => figures.lock().unwrap().add(f),
                        Err(violation) => {
                            stop.store(true, Ordering::SeqCst);
                            failed.lock().unwrap().get_or_insert((seq, violation));
                            return;
                        }
                    }
                }
            });
        }
    });
    let figures = figures.into_inner().unwrap();
    let ran_for = started.elapsed();
    let _remove = RemoveOnDrop(PYTHON_DIR.get().cloned().flatten());
    if let Some((seq, violation)) = failed.into_inner().unwrap() {
        eprintln!(
            "FAILED: sequence of seed {}:\n{seq}{violation}\nshrinking...",
            seq.seed
        );
        let (small, why, runs) = shrink(&seq, violation);
        panic!(
            "a sequence breaks a rule (seed {seed}, base seed {base}; {n} sequences passed before it).\n\
             Shrunk in {runs} runs to {len} step(s):\n{small}{why}\nreplay: {replay}",
            seed = seq.seed,
            n = figures.sequences,
            len = small.steps.len(),
            replay = small.replay_line(),
        );
    }
    eprintln!(
        "rollout model: {} sequences, {} steps in {:.1}s ({:.2}s a sequence of wall time)",
        figures.sequences,
        figures.steps,
        ran_for.as_secs_f64(),
        ran_for.as_secs_f64() / figures.sequences.max(1) as f64
    );
    for (kind, (n, took)) in &figures.by_kind {
        eprintln!(
            "  {kind:<22} {n:>5} steps, {:>6.2}s each",
            took.as_secs_f64() / *n as f64
        );
    }
    eprintln!(
        "  faults drawn: {} {:?}",
        figures.faults.values().sum::<usize>(),
        figures.faults
    );
    eprintln!("  exits: {:?}", figures.exits);
    eprintln!(
        "  claims checked: {} {:?}",
        figures.claims.values().sum::<usize>(),
        figures.claims
    );
    eprintln!("  known gaps met: {:?}", figures.gaps);
    eprintln!(
        "  closest to a bound: {:.0}% ({})",
        figures.closest.0 * 100.0,
        figures.closest.1
    );
    assert!(figures.sequences > 0, "no sequence ran");
}
