//! What the rollout tests share: a "world" (the state of the plugin double, the
//! doubles first on PATH, a marker to find every process a test started), the
//! `api` pods (real binaries, or tiny std servers for broken ones), the
//! built xtask binary to run, and the steps that set a world up.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The namespace the tests deploy to (not `default`, so `-n` is exercised).
pub const NAMESPACE: &str = "shop";
pub const REPOSITORY: &str = "registry.example.com/shop/api";

pub use crate::support::{Ran, root};
use crate::support::{needs, on_path};

/// `kubectl get rollouts.argoproj.io api -o json -n shop`: the read every wait polls.
pub const GET_ROLLOUT: [&str; 7] = [
    "get",
    "rollouts.argoproj.io",
    "api",
    "-o",
    "json",
    "-n",
    NAMESPACE,
];

pub fn doubles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/doubles")
}

pub fn image(tag: &str) -> String {
    format!("{REPOSITORY}:{tag}")
}

/// Where a tool that CI must have is missing: a failure under CI, a skip (with why) elsewhere.
pub fn require_tool(name: &str) -> bool {
    needs(name, on_path(name), ".ci/run installs it")
}

/// One test's world: the plugin double's state file, and the marker every
/// process it starts carries in its environment. Dropping it fails the test
/// if a process with that marker is still running.
pub struct World {
    pub dir: PathBuf,
    pub state_path: PathBuf,
    pub marker: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl World {
    /// A Rollout `api` in namespace `shop` whose active Service serves `active`
    /// (None: a new Rollout that never had an active ReplicaSet), and the
    /// Services of rollout.yaml.
    pub fn new(active: Option<&str>) -> World {
        let marker = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let dir = std::env::temp_dir().join(format!("xtask-rollout-{marker}"));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = Manifest::read();
        let initial = active.map_or_else(|| manifest.image.clone(), image);
        let containers = json!({ manifest.container.clone(): initial });
        let active_containers = match active {
            Some(_) => containers.clone(),
            None => Value::Null,
        };
        let state = json!({
            "rollouts": {
                format!("{NAMESPACE}/{}", manifest.rollout): {
                    "name": manifest.rollout,
                    "containers": containers,
                    "active": active_containers,
                    "revision": 1,
                    "history": [{"revision": 1, "containers": containers}],
                    "updated_at": 0.0,
                }
            },
            "services": {
                format!("{NAMESPACE}/{}", manifest.active_service): {
                    "port": manifest.service_port, "targetPort": manifest.container_port,
                    "rollout": manifest.rollout, "role": "active",
                },
                format!("{NAMESPACE}/{}", manifest.preview_service): {
                    "port": manifest.service_port, "targetPort": manifest.container_port,
                    "rollout": manifest.rollout, "role": "preview",
                },
            },
            "pods": {},
            // The placeholder image of rollout.yaml never pulls: its pods never become
            // ready, and the Rollout turns Degraded after progressDeadlineSeconds.
            "behaviour": {
                manifest.image.clone(): {"ready_after": null, "degrade_after": manifest.progress_deadline},
            },
            "calls": [],
        });
        let world = World {
            state_path: dir.join("state.json"),
            dir,
            marker,
        };
        world.write_state(&state);
        world
    }

    /// [`World::new`] where kubectl is on PATH; None where it is not (the
    /// test is skipped, or fails under CI).
    pub fn needing_kubectl(active: Option<&str>) -> Option<World> {
        require_tool("kubectl").then(|| World::new(active))
    }

    /// v1 active and served by a real api v1 (kubectl needed, as above).
    pub fn blue() -> Option<(World, Pod)> {
        let world = World::needing_kubectl(Some("v1"))?;
        let blue = world.api_pods("v1", "v1");
        Some((world, blue))
    }

    /// v1 active, v2 deployed by xtask and paused on the preview, ready.
    pub fn paused_on_v2() -> World {
        let world = World::new(Some("v1"));
        world.deploy_paused("v2");
        world
    }

    /// `deploy --wait` of `tag` (ready at once) with the built xtask, until it
    /// is the preview paused for promotion.
    pub fn deploy_paused(&self, tag: &str) {
        self.deploy_paused_with(tag, &[]);
    }

    /// As [`World::deploy_paused`], with `--replace`: a newer pipeline takes the preview.
    pub fn deploy_paused_replacing(&self, tag: &str) {
        self.deploy_paused_with(tag, &["--replace"]);
    }

    fn deploy_paused_with(&self, tag: &str, extra: &[&str]) {
        self.behaviour(tag, Some(0.0), None);
        let flags = [
            &["--tag", tag, "--wait", "--poll-interval", "100ms"][..],
            extra,
        ]
        .concat();
        self.run(&deploy_args(&flags)).ok();
        let phase = self.rollout_object()["status"]["phase"].clone();
        assert_eq!(phase, "Paused", "the preview {tag} is not paused");
    }

    /// `release` with `flags`, started and left running, its output piped.
    pub fn start_release(&self, flags: &[&str]) -> Spawned {
        Spawned::new(
            self.xtask(&release_args(flags))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
    }

    /// The pods of `tag` are `pod` (what port-forward reaches); the pod back.
    pub fn serve(&self, tag: &str, pod: Pod) -> Pod {
        self.pods(tag, &pod.addr);
        pod
    }

    /// The pods of `tag` are a real api compiled with `version`.
    pub fn api_pods(&self, tag: &str, version: &str) -> Pod {
        self.serve(tag, Pod::api(self, version))
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state_path).unwrap()).unwrap()
    }

    /// Replaces the state file at once (a rename), so a double never reads half of it.
    pub fn write_state(&self, state: &Value) {
        let tmp = self.dir.join("state.json.world-tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(state).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.state_path).unwrap();
    }

    /// Changes the state under the lock the doubles take, so an edit made while
    /// xtask runs is neither lost to a double's write nor half-read.
    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let _lock = StateLock::take(self);
        let mut state = self.state();
        f(&mut state);
        self.write_state(&state);
    }

    /// How long after `promote` the active Service switches to `tag` (default 0.1s).
    pub fn switch_after(&self, tag: &str, seconds: f64) {
        self.edit(|s| s["behaviour"][image(tag)]["switch_after"] = json!(seconds));
    }

    /// The pods of `tag` answer at `addr` (what port-forward reaches).
    pub fn pods(&self, tag: &str, addr: &str) {
        self.edit(|s| s["pods"][image(tag)] = json!(addr));
    }

    /// The gate is on: the controller runs rollout.yaml's pre-promotion
    /// analysis, whose Job takes `run_for` seconds (None: until
    /// [`World::gate_jobs_take`] says). No image has a Job binary yet (its
    /// Job cannot pull it): see [`World::image_binary`].
    pub fn gate(&self, run_for: Option<f64>) {
        self.edit(|s| s["analysis"] = json!({"jobs": {}, "run_for": run_for}));
    }

    /// The analysis Jobs take `seconds` from their start (0: a running one ends now).
    pub fn gate_jobs_take(&self, seconds: f64) {
        self.edit(|s| s["analysis"]["run_for"] = json!(seconds));
    }

    /// The image of `tag` holds an api compiled with `version`: what the
    /// analysis Job runs (`api healthcheck --expect-version SELF`).
    pub fn image_binary(&self, tag: &str, version: &str) {
        let binary = api_binary(version);
        self.edit(|s| s["analysis"]["jobs"][image(tag)] = json!(binary));
    }

    /// The analysis Jobs cannot be created (the controller lacks RBAC for Jobs).
    pub fn gate_jobs_forbidden(&self) {
        self.edit(|s| s["analysis"]["fault"] = json!("error"));
    }

    /// How the pods of `tag` behave: seconds until ready (None: never), until Degraded.
    pub fn behaviour(&self, tag: &str, ready_after: Option<f64>, degrade_after: Option<f64>) {
        self.edit(|s| {
            s["behaviour"][image(tag)] =
                json!({"ready_after": ready_after, "degrade_after": degrade_after})
        });
    }

    pub fn rollout(&self) -> Value {
        self.state()["rollouts"][format!("{NAMESPACE}/api")].clone()
    }

    /// The image the active Service serves, if any.
    pub fn active_image(&self) -> Option<String> {
        self.rollout()["active"]["api"].as_str().map(str::to_owned)
    }

    /// Every plugin invocation, as argv.
    pub fn calls(&self) -> Vec<Vec<String>> {
        serde_json::from_value(self.state()["calls"].clone()).unwrap()
    }

    /// The plugin subcommands that changed something, in order.
    pub fn changes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|argv| argv[0] != "status")
            .map(|argv| argv.join(" "))
            .collect()
    }

    /// The controller observes a template change (set image, undo) `seconds`
    /// after it (default 0): until then metadata.generation is ahead of
    /// status.observedGeneration and the status describes the previous template;
    /// when it observes it, it clears the pause conditions and the abort.
    pub fn observe_after(&self, seconds: f64) {
        self.edit(|s| s["observe_after"] = json!(seconds));
    }

    /// The controller's version (default v1.8.3): before v1.6.1 an abort of a
    /// fully promoted rollout stays (Degraded) instead of being removed.
    pub fn controller_version(&self, version: &str) {
        self.edit(|s| s["controller_version"] = json!(version));
    }

    /// The API server accepts connections and never answers: the plugin's
    /// `status` hangs forever, its other commands and kubectl's until
    /// --request-timeout (if given).
    pub fn api_hangs(&self) {
        self.edit(|s| s["faults"]["api_hangs"] = json!(true));
    }

    /// As `api_hangs`, and kubectl has no discovery cache for the server (a
    /// fresh CI runner): `kubectl get`/`port-forward` retry discovery several
    /// times, each ended by --request-timeout, so they take a multiple of it.
    pub fn api_hangs_before_discovery(&self) {
        self.edit(|s| {
            s["faults"]["api_hangs"] = json!(true);
            s["faults"]["discovery_uncached"] = json!(true);
        });
    }

    /// The watching `status ROLLOUT` panics right after it printed `Healthy`
    /// (exit code 2), as argoproj/argo-rollouts#4372 does.
    pub fn watch_panics(&self) {
        self.edit(|s| s["faults"]["watch_panics"] = json!(true));
    }

    /// No pod of `tag` exists: `kubectl port-forward` waits --pod-running-timeout for one.
    pub fn pods_missing(&self, tag: &str) {
        self.edit(|s| s["pod_faults"][image(tag)] = json!("missing"));
    }

    /// The pods of `tag` exist but are not Running (Pending).
    pub fn pods_pending(&self, tag: &str) {
        self.edit(|s| s["pod_faults"][image(tag)] = json!("pending"));
    }

    /// The pods of `tag` are there and Running again (undoes `pods_missing`/`pods_pending`).
    pub fn pods_running(&self, tag: &str) {
        self.edit(|s| {
            if let Some(faults) = s["pod_faults"].as_object_mut() {
                faults.remove(&image(tag));
            }
        });
    }

    /// `subcommand` ("set image" or "abort") makes its change, then answers
    /// `seconds` later (a slow API server), every time from now on.
    pub fn answer_late(&self, subcommand: &str, seconds: f64) {
        assert!(
            ["set image", "abort"].contains(&subcommand),
            "answer_late: {subcommand:?} is neither \"set image\" nor \"abort\""
        );
        self.edit(|s| s["faults"]["answer_late"][subcommand] = json!(seconds));
    }

    /// `subcommand` ("set image", "promote", "abort") makes its change, then
    /// fails with a network error (exit 1), every time from now on.
    pub fn change_then_fail(&self, subcommand: &str) {
        assert!(
            ["set image", "promote", "abort"].contains(&subcommand),
            "change_then_fail: {subcommand:?} is none of \"set image\", \"promote\", \"abort\""
        );
        self.edit(|s| {
            let list = &mut s["faults"]["change_then_fail"];
            if !list.is_array() {
                *list = json!([]);
            }
            list.as_array_mut().unwrap().push(json!(subcommand));
        });
    }

    /// The next `count` reads of `kubectl get` fail as kubectl reports `kind`
    /// (one of [`READ_FAILURE_KINDS`]), exit 1; then reads recover.
    pub fn read_fails(&self, kind: &str, count: u32) {
        assert!(READ_FAILURE_KINDS.contains(&kind), "read_fails: {kind:?}");
        self.edit(|s| s["faults"]["read_failures"] = json!({"kind": kind, "left": count}));
    }

    /// As [`World::read_fails`], from the moment the plugin's `call` ("set
    /// image", "promote", "abort") succeeded: the reads right after it fail.
    pub fn read_fails_after(&self, call: &str, kind: &str, count: u32) {
        assert!(
            READ_FAILURE_KINDS.contains(&kind),
            "read_fails_after: {kind:?}"
        );
        assert!(
            ["set image", "promote", "abort"].contains(&call),
            "read_fails_after: {call:?}"
        );
        self.edit(|s| {
            s["faults"]["read_failures_after"] = json!({"call": call, "kind": kind, "count": count})
        });
    }

    /// How many failing reads are still to come.
    pub fn read_failures_left(&self) -> u64 {
        self.state()["faults"]["read_failures"]["left"]
            .as_u64()
            .unwrap_or(0)
    }

    /// scaleDownDelaySeconds (default 30): how long a ReplicaSet that left the
    /// active Service keeps its pods (and fast-tracks a template equal to it).
    pub fn scale_down_delay(&self, seconds: f64) {
        self.edit(|s| s["scale_down_delay"] = json!(seconds));
    }

    /// spec.revisionHistoryLimit (rollout.yaml's 3; None: unset, Argo's default 10).
    pub fn revision_history_limit(&self, limit: Option<u32>) {
        self.edit(|s| s["revision_history_limit"] = json!(limit));
    }

    /// The controller acts on an abort `seconds` after the plugin set
    /// status.abort (default 0): until then no abortedAt, and the phase is stale.
    pub fn abort_lag(&self, seconds: f64) {
        self.edit(|s| s["abort_lag"] = json!(seconds));
    }

    /// The Rollout has no status at all for `seconds` from now, as right
    /// after `kubectl create`, before the controller's first reconcile.
    pub fn without_status_for(&self, seconds: f64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        self.edit(|s| {
            let ro = &mut s["rollouts"][format!("{NAMESPACE}/api")];
            ro["created_at"] = json!(now);
            ro["status_after"] = json!(seconds);
        });
    }

    /// Every `kubectl` call the kubectl double served (get, port-forward), as argv.
    pub fn kubectl_calls(&self) -> Vec<Vec<String>> {
        match self.state().get("kubectl_calls") {
            Some(calls) => serde_json::from_value(calls.clone()).unwrap(),
            None => Vec::new(),
        }
    }

    /// `kubectl argo rollouts ARGS -n shop` through the kubectl double, as a
    /// person with the plugin runs it, past xtask (what it says is not checked).
    pub fn plugin_by_hand(&self, args: &[&str]) {
        let mut cmd = self.kubectl(&["argo", "rollouts"]);
        cmd.args(args).args(["-n", NAMESPACE]);
        crate::support::run(&mut cmd).ok();
    }

    /// Waits up to 10 s for the Rollout's status.phase to be `phase`.
    pub fn wait_for_phase(&self, phase: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.rollout_object()["status"]["phase"] != phase {
            assert!(
                Instant::now() < deadline,
                "never {phase}: {:#}",
                self.rollout_object()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `kubectl get rollouts.argoproj.io api -o json -n shop` prints now
    /// (the kubectl double, reconciled from the clock; the test's own look, so
    /// not logged in `kubectl_calls` and not subject to the faults).
    pub fn rollout_object(&self) -> Value {
        let run = crate::support::run(
            self.command(doubles().join("kubectl"))
                .args(GET_ROLLOUT)
                .env("ARGO_ROLLOUTS_DOUBLE_TEST_READ", "1"),
        );
        assert_eq!(
            run.code,
            Some(0),
            "kubectl get of the Rollout failed\n{run}"
        );
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
    }

    /// Whether the Rollout's status.abort is set now.
    pub fn is_aborted(&self) -> bool {
        self.rollout_object()["status"]["abort"] == json!(true)
    }

    /// The template's image while an update is in flight (the template is not
    /// the stable one, or the controller has not observed it yet); None when
    /// the rollout is fully promoted.
    pub fn preview_image(&self) -> Option<String> {
        let ro = self.rollout_object();
        let status = &ro["status"];
        let unobserved = status["observedGeneration"].as_str()
            != Some(&ro["metadata"]["generation"].to_string());
        let in_flight = status["currentPodHash"] != status["stableRS"];
        (unobserved || in_flight)
            .then(|| ro["spec"]["template"]["spec"]["containers"][0]["image"].as_str())
            .flatten()
            .map(str::to_owned)
    }

    /// The doubles first on PATH, then the machine's PATH.
    pub fn path(&self) -> std::ffi::OsString {
        let mut dirs = vec![doubles()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }

    /// Puts `cmd` in this world: the doubles first on PATH, its state, its marker.
    fn enter<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("PATH", self.path())
            .env("ARGO_ROLLOUTS_DOUBLE_STATE", &self.state_path)
            .env(MARKER, &self.marker)
    }

    /// `program` (a path, or a name looked up on the world's PATH) in this
    /// world, with no stdin.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter(&mut cmd).stdin(Stdio::null());
        cmd
    }

    /// `kubectl ARGS`: the kubectl double (first on PATH), as xtask calls it.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = self.command("kubectl");
        cmd.args(args);
        cmd
    }

    /// The built xtask, in this world: doubles on PATH, no stray configuration.
    pub fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = crate::support::xtask();
        cmd.args(args);
        self.enter(&mut cmd);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        crate::support::run(&mut self.xtask(args))
    }

    /// Waits until a `kubectl port-forward` this world started runs (sanity
    /// is then checking through it), and a moment more for it to forward.
    pub fn wait_for_port_forward(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !processes_with_marker(&self.marker)
            .iter()
            .any(|p| p.contains("port-forward"))
        {
            assert!(
                Instant::now() < deadline,
                "sanity never started its port-forward"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Fails if any process this world started (xtask, the doubles, a
    /// port-forward, an api) is still there. Waits a moment for ones being
    /// killed. Dropping the world checks the same; this checks now.
    pub fn assert_no_process_left(&self) {
        let left = self.processes_left();
        assert!(
            left.is_empty(),
            "processes left running after the test: {left:#?}"
        );
    }

    /// The processes with this world's marker still there after up to 5 s.
    fn processes_left(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with_marker(&self.marker);
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The lock the doubles take on the state file, held by a helper process (the
/// plugin double with ARGO_ROLLOUTS_DOUBLE_LOCK set) until this is dropped.
struct StateLock(Child);

impl StateLock {
    fn take(world: &World) -> StateLock {
        let mut child = world
            .command(doubles().join("kubectl-argo-rollouts"))
            .env("ARGO_ROLLOUTS_DOUBLE_LOCK", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line, "locked\n",
            "the state lock helper did not take the lock"
        );
        StateLock(child)
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take()); // the helper lets go of the lock at end of input
        let _ = self.0.wait();
    }
}

impl Drop for World {
    /// Removes the world's folder, and fails the test if a process of this
    /// world is left (the same check as [`World::assert_no_process_left`]),
    /// except while the test is failing already: a panic in a panic would
    /// abort the test binary and hide the first failure.
    fn drop(&mut self) {
        let left = if std::thread::panicking() {
            Vec::new()
        } else {
            self.processes_left()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        assert!(
            left.is_empty(),
            "processes left running after the test: {left:#?}"
        );
    }
}

/// The kinds of failed read the kubectl double knows (its READ_FAILURES).
pub const READ_FAILURE_KINDS: [&str; 6] = [
    "refused",
    "tls_timeout",
    "server_error_500",
    "credential_plugin",
    "unauthorized",
    "namespace_not_found",
];

/// The environment variable that marks a test's processes.
pub const MARKER: &str = "XTASK_ROLLOUT_TEST_MARKER";

/// Live processes (pid and command line) whose environment holds MARKER=marker.
pub fn processes_with_marker(marker: &str) -> Vec<String> {
    let needle = format!("{MARKER}={marker}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 3 of stat is the state; a zombie (Z) has exited and is only waiting to be reaped.
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push(format!("{pid} [{state}] {cmdline}"));
    }
    found
}

/// The manifest's names and numbers, read from rollout.yaml.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub rollout: String,
    pub container: String,
    pub image: String,
    pub active_service: String,
    pub preview_service: String,
    pub service_port: u64,
    pub container_port: u64,
    pub progress_deadline: u64,
}

impl Manifest {
    pub fn documents() -> Vec<serde_yaml_ng::Value> {
        let text = std::fs::read_to_string(root().join("rollout.yaml")).unwrap();
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect()
    }

    pub fn read() -> Manifest {
        let docs = Manifest::documents();
        let rollout = docs.iter().find(|d| d["kind"] == "Rollout").unwrap();
        let container = &rollout["spec"]["template"]["spec"]["containers"][0];
        let blue_green = &rollout["spec"]["strategy"]["blueGreen"];
        let service = docs
            .iter()
            .find(|d| d["kind"] == "Service")
            .expect("a Service");
        let str_of = |v: &serde_yaml_ng::Value| v.as_str().unwrap().to_owned();
        Manifest {
            rollout: str_of(&rollout["metadata"]["name"]),
            container: str_of(&container["name"]),
            image: str_of(&container["image"]),
            active_service: str_of(&blue_green["activeService"]),
            preview_service: str_of(&blue_green["previewService"]),
            service_port: service["spec"]["ports"][0]["port"].as_u64().unwrap(),
            container_port: container["ports"][0]["containerPort"].as_u64().unwrap(),
            progress_deadline: rollout["spec"]["progressDeadlineSeconds"].as_u64().unwrap(),
        }
    }
}

/// A free port on 127.0.0.1 (free when asked; the caller retries on a race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `api` binary built with `version` compiled in: `API_VERSION=V cargo build -p api`.
/// Each version gets a target folder of its own, so parallel tests (nextest
/// runs each in its own process) never see a binary swapped under them; the
/// dependencies are compiled once, in a shared build folder (cargo's
/// `build.build-dir`, which also serializes the builds; a cargo older than
/// 1.91 ignores it and compiles them per version).
pub fn api_binary(version: &str) -> PathBuf {
    static BUILDS: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_at_a_time = BUILDS.get_or_init(Default::default).lock().unwrap();
    let base = root().join("target/rollout-e2e");
    let target_dir = base.join(version);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--package", "api", "--bin", "api"])
        .env("API_VERSION", version)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_BUILD_BUILD_DIR", base.join("build"))
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "building api {version} failed");
    target_dir.join("debug/api")
}

/// Pods played by processes: killed (and reaped) when dropped.
pub struct Pod {
    pub addr: String,
    child: Option<Child>,
    server: Option<Arc<AtomicBool>>,
}

impl Pod {
    /// The real `api` binary, compiled with `version`, on a free port.
    pub fn api(world: &World, version: &str) -> Pod {
        let binary = api_binary(version);
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .env("LOG_LEVEL", "warn")
                .env(MARKER, &world.marker)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken after all: try another
                }
                if http_get(&addr, "/health").is_some_and(|(status, _)| status == 200) {
                    return Pod {
                        addr,
                        child: Some(child),
                        server: None,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("api {version} did not start");
    }

    /// A std server that answers every request with `status` and `body`.
    pub fn answering(status: u16, body: impl Into<String>) -> Pod {
        let body = body.into();
        Pod::serve(move |mut stream| {
            let _ = read_request(&mut stream);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        })
    }

    /// A std server that accepts connections and never answers.
    pub fn silent() -> Pod {
        Pod::serve(|stream| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(30));
                drop(stream);
            });
        })
    }

    fn serve(handle: impl Fn(TcpStream) + Send + 'static) -> Pod {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        handle(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Pod {
            addr,
            child: None,
            server: Some(stop),
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(stop) = &self.server {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            return Ok(());
        }
    }
}

/// A GET for the tests themselves: (status, body), or None if nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    crate::support::http_get(addr, path, None).ok()
}

/// A child process a test started: killed and reaped when dropped, so a
/// failing assertion never leaves it running.
pub struct Spawned {
    child: Option<Child>,
    argv: String,
}

impl Spawned {
    pub fn new(command: &mut Command) -> Spawned {
        Spawned {
            child: Some(command.spawn().unwrap()),
            argv: crate::support::argv(command),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Sends it `signal` (`INT`: a Ctrl-C, as a terminal sends it; `TERM`).
    pub fn signal(&self, signal: &str) {
        let kill = Command::new("kill")
            .args([format!("-{signal}"), self.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success(), "kill -{signal} {}", self.argv);
    }

    pub fn wait_with_output(mut self) -> Output {
        self.child.take().unwrap().wait_with_output().unwrap()
    }

    /// Waits for its end: what it ended with (stdout and stderr if piped).
    pub fn finish(self) -> Ran {
        let argv = self.argv.clone();
        let output = self.wait_with_output();
        Ran {
            argv,
            code: output.status.code(),
            stdout: crate::support::text(&output.stdout),
            stderr: crate::support::text(&output.stderr),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads kubectl's `Forwarding from 127.0.0.1:PORT -> TARGET` line: the
/// local address, and the container port it forwards to.
pub fn forwarded_address(child: &mut Child) -> (String, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (port, target) = line
        .trim_end()
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_once(" -> "))
        .unwrap_or_else(|| panic!("not kubectl's forwarding line: {line:?}"));
    (format!("127.0.0.1:{port}"), target.to_owned())
}

/// A pipe read into a string by a thread, as it comes.
pub struct Collected {
    pub text: Arc<Mutex<String>>,
    thread: std::thread::JoinHandle<()>,
}

impl Collected {
    pub fn new(mut pipe: impl Read + Send + 'static) -> Collected {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push_str(&chunk);
            }
        });
        Collected { text, thread }
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.text.lock().unwrap().contains(needle)
    }

    /// Everything, once the writer closed the pipe.
    pub fn finish(self) -> String {
        self.thread.join().unwrap();
        Arc::try_unwrap(self.text).unwrap().into_inner().unwrap()
    }
}

/// `release` of image v2 expecting version v2, with short waits; `extra` flags replace these.
pub fn release_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    task_args(
        "release",
        &[
            ("-n", NAMESPACE),
            ("--image", REPOSITORY),
            ("--tag", "v2"),
            ("--expect-version", "v2"),
            ("--poll-interval", "100ms"),
            ("--timeout", "20s"),
            ("--sanity-timeout", "2s"),
        ],
        extra,
    )
}

/// `deploy -n shop --image REPOSITORY --tag v2`; `extra` flags replace these.
pub fn deploy_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    image_v2_args("deploy", extra)
}

/// `promote -n shop --image REPOSITORY --tag v2`; `extra` flags replace these.
pub fn promote_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    image_v2_args("promote", extra)
}

/// `task -n shop --image REPOSITORY --tag v2`; `extra` flags replace these.
pub fn image_v2_args<'a>(task: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    task_args(
        task,
        &[("-n", NAMESPACE), ("--image", REPOSITORY), ("--tag", "v2")],
        extra,
    )
}

/// `task`, each default flag that `extra` does not give, then `extra`.
fn task_args<'a>(
    task: &'a str,
    defaults: &[(&'a str, &'a str)],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![task];
    for &(flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    args
}
