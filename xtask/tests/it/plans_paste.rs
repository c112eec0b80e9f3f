//! Every task's `--dry-run` plan, made with hostile values wherever a task
//! takes a free one (line breaks, quotes, `$(...)`, backquotes, `;`, a
//! terminal escape, a bidi override), pasted into bash: it runs exactly the
//! commands xtask would run, with exactly their arguments, and nothing else.
//!
//! While xtask makes the plan, the tools it names are stand-ins at paths of
//! this test that run the real ones (kubectl and the plugin: the doubles);
//! while bash runs the plan, the same paths are recorders that write down
//! each argv (after `API_VERSION=...` when the plan sets it for the call).
//! `lint` runs its linters under --dry-run (they change nothing): the lines
//! it echoes are pasted, and must run what it ran. `bench`'s plan names what
//! is only known when it runs as placeholders (`<port>`, `<pid>`, `<phase>`):
//! they reach the recorders as the words they are. Not pasted: `status`,
//! `history` and `doctor` (read-only: stdout is their report, not a plan).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rollout_support::{NAMESPACE, REPOSITORY, World, doubles, image};
use crate::support;

/// What a shell would run if a plan let it: each of these creates CANARY.
const HOSTILE: &str =
    "a'b\"c $(touch CANARY) `touch CANARY`; touch CANARY\ntouch CANARY\r\u{1b}[2K\u{202e}dcba #";
/// A kubeconfig context may hold no space, control or bidi character; all else is free.
const HOSTILE_CONTEXT: &str = "ctx$(touch${IFS}CANARY);`touch${IFS}CANARY`'\"#";

/// The tools' paths for one test: stand-ins, then recorders.
struct Tools {
    dir: PathBuf,
    record: PathBuf,
}

impl Tools {
    /// Each `(name, real)` as a stand-in that runs `real`.
    fn new(tag: &str, tools: &[(&str, PathBuf)]) -> Tools {
        let dir = std::env::temp_dir().join(format!("xtask-paste-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let record = dir.join("record");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(&record).unwrap();
        for (name, real) in tools {
            script(
                &dir.join("bin").join(name),
                &format!("#!/bin/sh\nexec '{}' \"$@\"\n", real.display()),
            );
        }
        Tools { dir, record }
    }

    fn path(&self, rest: impl Into<std::ffi::OsString>) -> std::ffi::OsString {
        let mut dirs = vec![self.dir.join("bin")];
        dirs.extend(std::env::split_paths(&rest.into()));
        std::env::join_paths(dirs).unwrap()
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// Pastes `plan` into bash with every tool a recorder: the argv of each
    /// call, in order. Fails if bash said anything or a canary was made.
    fn paste(&self, plan: &str) -> Vec<Vec<String>> {
        self.record_calls();
        let workdir = self.dir.join("work");
        std::fs::create_dir_all(&workdir).unwrap();
        let mut bash = Command::new("bash");
        bash.args(["--norc", "--noprofile", "-s"])
            .current_dir(&workdir)
            .env("PLAN_RECORD", &self.record)
            // Only the plan may set it, for the call it names.
            .env_remove("API_VERSION")
            // No UTF-8 locale, as in the official rust image: escapes must not depend on one.
            .env("LC_ALL", "C")
            // A plan may name a tool by name (docker): the recorders come first.
            .env(
                "PATH",
                self.path(std::env::var_os("PATH").unwrap_or_default()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = bash.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(plan.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.is_empty() && out.stdout.is_empty(),
            "bash ran the plan with {:?}: {said}\n--- plan ---\n{plan}",
            out.status
        );
        assert!(
            !workdir.join("CANARY").exists() && !support::root().join("CANARY").exists(),
            "the plan ran more than its commands:\n{plan}"
        );
        self.calls()
    }

    /// Makes every tool a recorder of its argv in `record`, the value of
    /// API_VERSION first when it is set (`API_VERSION=... cargo build`).
    fn record_calls(&self) {
        for entry in std::fs::read_dir(self.dir.join("bin")).unwrap() {
            script(
                &entry.unwrap().path(),
                "#!/bin/sh\nn=$(ls \"$PLAN_RECORD\" | wc -l)\n\
                 set -- \"$(basename \"$0\")\" \"$@\"\n\
                 if [ -n \"${API_VERSION+set}\" ]; then set -- \"API_VERSION=$API_VERSION\" \"$@\"; fi\n\
                 printf '%s\\0' \"$@\" > \"$PLAN_RECORD/$(printf %04d \"$n\")\"\n",
            );
        }
    }

    /// The calls recorded so far, in order; the record is emptied.
    fn calls(&self) -> Vec<Vec<String>> {
        let mut files: Vec<_> = std::fs::read_dir(&self.record)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|file| {
                let bytes = std::fs::read(file).unwrap();
                let mut argv: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8(w.to_vec()).unwrap())
                    .collect();
                argv.pop(); // after the last NUL
                std::fs::remove_file(file).unwrap();
                argv
            })
            .collect()
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every line of a plan is a command or a comment.
fn assert_commands_or_comments(plan: &str, commands: usize) {
    let lines: Vec<&str> = plan.lines().collect();
    let run = lines.iter().filter(|l| !l.starts_with('#')).count();
    assert_eq!(run, commands, "{plan}");
    assert!(
        !plan.contains(['\r', '\u{1b}', '\u{202e}']),
        "a plan line holds a raw control or bidi character:\n{plan}"
    );
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn dry_run(cmd: &mut Command) -> String {
    let ran = support::run(cmd);
    ran.ok();
    ran.stdout
}

/// The rollout tasks, with a hostile context.
fn rollout_plan(world: &World, tools: &Tools, args: &[&str]) -> String {
    let mut cmd =
        world.xtask(&[&["--dry-run"][..], args, &["--context", HOSTILE_CONTEXT]].concat());
    cmd.env("PATH", tools.path(world.path()));
    dry_run(&mut cmd)
}

fn rollout_tools() -> Tools {
    Tools::new(
        "rollout",
        &[
            ("kubectl", doubles().join("kubectl")),
            (
                "kubectl-argo-rollouts",
                doubles().join("kubectl-argo-rollouts"),
            ),
        ],
    )
}

fn kube_flags() -> Vec<String> {
    words(&[
        "-n",
        NAMESPACE,
        "--context",
        HOSTILE_CONTEXT,
        "--request-timeout=10s",
    ])
}

fn plugin_call(args: &[&str]) -> Vec<String> {
    let mut argv = words(&["kubectl-argo-rollouts"]);
    argv.extend(words(args));
    argv.extend(kube_flags());
    argv
}

#[test]
fn deploy_and_release_plans_run_exactly_their_commands() {
    let world = World::new(Some("v1"));
    let tools = rollout_tools();
    let image_args = ["-n", NAMESPACE, "--image", REPOSITORY, "--tag", "v2"];
    let deploy = rollout_plan(
        &world,
        &tools,
        &[&["deploy", "--wait"][..], &image_args].concat(),
    );
    let release = rollout_plan(
        &world,
        &tools,
        &[&["release", "--expect-version", "v2"][..], &image_args].concat(),
    );
    let set_image = plugin_call(&["set", "image", "api", &format!("api={}", image("v2"))]);
    assert_commands_or_comments(&deploy, 1);
    assert!(
        deploy.ends_with(&format!("# result: {}\n", image("v2"))),
        "{deploy}"
    );
    assert_eq!(tools.paste(&deploy), std::slice::from_ref(&set_image));
    assert_commands_or_comments(&release, 2);
    assert_eq!(
        tools.paste(&release),
        [set_image, plugin_call(&["promote", "api"])]
    );
}

#[test]
fn promote_abort_and_sanity_plans_run_exactly_their_commands() {
    let world = World::paused_on_v2();
    let expect = image("v2");
    let cases: [(&[&str], Vec<Vec<String>>); 3] = [
        (
            &["promote", "-n", NAMESPACE, "--expect-image", &expect],
            vec![plugin_call(&["promote", "api"])],
        ),
        (
            &["abort", "-n", NAMESPACE],
            vec![plugin_call(&["abort", "api"])],
        ),
        (
            &["sanity", "-n", NAMESPACE, "--expect-version", "v2"],
            vec![],
        ),
    ];
    for (args, expected) in cases {
        let tools = rollout_tools();
        let plan = rollout_plan(&world, &tools, args);
        assert_commands_or_comments(&plan, expected.len());
        assert_eq!(tools.paste(&plan), expected, "{args:?}");
    }
}

#[test]
fn test_plan_passes_hostile_arguments_through_as_they_are() {
    let cargo = PathBuf::from(std::env::var_os("CARGO").expect("cargo sets CARGO"));
    let tools = Tools::new(&hostile_folder("test"), &[("cargo", cargo)]);
    let mut cmd = support::xtask_with(&["--dry-run", "test", "--", HOSTILE]);
    cmd.env("CARGO", tools.tool("cargo"));
    let plan = dry_run(&mut cmd);
    assert_commands_or_comments(&plan, 3);
    let calls = tools.paste(&plan);
    assert_eq!(calls.len(), 3, "{plan}");
    assert_eq!(calls[0], words(&["cargo", "fmt", "--all", "--", "--check"]));
    assert_eq!(calls[2].last().map(String::as_str), Some(HOSTILE), "{plan}");
}

#[test]
fn build_plan_runs_exactly_the_cargo_build() {
    let cargo = PathBuf::from(std::env::var_os("CARGO").expect("cargo sets CARGO"));
    let tools = Tools::new(&hostile_folder("build"), &[("cargo", cargo)]);
    for (flags, target) in [(&[][..], &[][..]), (&["--static"][..], &["--target"][..])] {
        let mut cmd = support::xtask_with(&[&["--dry-run", "build"][..], flags].concat());
        cmd.env("CARGO", tools.tool("cargo"))
            .env("API_VERSION", "v1.2.3-rc.1+b_7");
        let plan = dry_run(&mut cmd);
        assert_commands_or_comments(&plan, 1);
        let calls = tools.paste(&plan);
        let build = words(&[
            "API_VERSION=v1.2.3-rc.1+b_7",
            "cargo",
            "build",
            "--message-format=json-render-diagnostics",
            "--release",
            "--package",
            "api",
        ]);
        assert_eq!(calls.len(), 1, "{plan}");
        assert_eq!(calls[0][..build.len()], build, "{plan}");
        assert_eq!(
            calls[0][build.len()..].first().map(String::as_str),
            target.first().copied()
        );
    }
}

#[test]
fn package_plan_runs_docker_with_the_given_arguments_and_no_comment_escapes() {
    let Some(docker) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("docker"))
        .find(|p| p.is_file())
    else {
        // The engine's gate is package's own test; without docker there is no plan.
        assert!(std::env::var_os("CI").is_none(), "CI has docker");
        eprintln!("skipped: no docker on PATH");
        return;
    };
    let tools = Tools::new("package", &[("docker", docker)]);
    let reports = tools.dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let dotenv = reports.join("x.env\ntouch CANARY\n# ");
    let mut cmd = support::xtask_with(&[
        "--dry-run",
        "package",
        "--allow-dirty",
        "--push",
        "--tag",
        "v1",
    ]);
    cmd.arg("--dotenv")
        .arg(&dotenv)
        .args(["--", "--label", HOSTILE])
        .env(
            "PATH",
            tools.path(std::env::var_os("PATH").unwrap_or_default()),
        );
    let ran = support::run(&mut cmd);
    if ran.code != Some(0) && ran.stderr.contains("engine") && std::env::var_os("CI").is_none() {
        eprintln!("skipped: no Docker engine answers\n{ran}");
        return;
    }
    ran.ok();
    let plan = ran.stdout;
    assert_commands_or_comments(&plan, 3);
    let calls = tools.paste(&plan);
    assert_eq!(calls.len(), 3, "{plan}");
    // Is the tag there already? A tag names one image forever.
    assert_eq!(calls[0], words(&["docker", "pull", "api:v1"]));
    let build = &calls[1];
    assert_eq!(build[..2], words(&["docker", "build"]));
    assert_eq!(
        build[build.len() - 3..],
        words(&["--label", HOSTILE, "."]),
        "{plan}"
    );
    assert_eq!(calls[2], words(&["docker", "push", "api:v1"]));
    assert!(!dotenv.exists(), "a dry run wrote the report");
}

/// A folder name as hostile as a file name may be (no `/`; no `:`, which
/// PATH cannot hold): where a task's tools live, named in its plan.
fn hostile_folder(task: &str) -> String {
    format!("{task} {HOSTILE}")
}

#[test]
fn run_plan_builds_then_starts_api_with_the_arguments_as_they_are() {
    let cargo = PathBuf::from(std::env::var_os("CARGO").expect("cargo sets CARGO"));
    // The binary is never started by a dry run; pasted, the plan's last line starts it.
    let tools = Tools::new(
        &hostile_folder("run"),
        &[("cargo", cargo), ("api", PathBuf::from("false"))],
    );
    // The tools' folder is a workspace of its own (it holds xtask/Cargo.toml), so the
    // binary the plan names is its target/edit/api: the recorder, under that name.
    std::fs::create_dir_all(tools.dir.join("xtask")).unwrap();
    std::fs::write(tools.dir.join("xtask/Cargo.toml"), "").unwrap();
    std::fs::create_dir_all(tools.dir.join("target/edit")).unwrap();
    std::os::unix::fs::symlink(tools.tool("api"), tools.dir.join("target/edit/api")).unwrap();
    let mut cmd = support::xtask_with(&["--dry-run", "run", "--", HOSTILE, "", "--port=1"]);
    cmd.current_dir(&tools.dir)
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO", tools.tool("cargo"))
        .env("API_VERSION", "v1.2.3-rc.1+b_7");
    let plan = dry_run(&mut cmd);
    assert_commands_or_comments(&plan, 2);
    assert_eq!(
        tools.paste(&plan),
        [
            words(&[
                "API_VERSION=v1.2.3-rc.1+b_7",
                "cargo",
                "build",
                "--message-format=json-render-diagnostics",
                "--profile",
                "edit",
                "--package",
                "api",
            ]),
            words(&["api", HOSTILE, "", "--port=1"]),
        ],
        "{plan}"
    );
}

#[test]
fn lint_echoes_exactly_what_it_runs() {
    const LINTERS: [&str; 4] = [
        "hadolint",
        "yamllint",
        "check-jsonschema",
        "kubernetes-validate",
    ];
    // Recorders from the start: what lint runs under --dry-run is written down too.
    let tools = Tools::new(
        &hostile_folder("lint"),
        &LINTERS.map(|name| (name, PathBuf::from("true"))),
    );
    tools.record_calls();
    let mut cmd = support::xtask_with(&["--dry-run", "lint"]);
    cmd.env_remove("CI").env(
        "PATH",
        tools.path(std::env::var_os("PATH").unwrap_or_default()),
    );
    cmd.env("PLAN_RECORD", &tools.record);
    let ran = support::run(&mut cmd);
    ran.ok();
    let ran_calls = tools.calls();
    let echoed: String = ran
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("$ "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_commands_or_comments(&echoed, 5);
    let pasted = tools.paste(&echoed);
    assert_eq!(pasted, ran_calls, "{echoed}");
    assert_eq!(pasted.len(), 5, "{echoed}");
    assert_eq!(pasted[0], words(&["hadolint", "Dockerfile"]));
    assert_eq!(
        pasted[4][..3],
        words(&[
            "check-jsonschema",
            "--schemafile",
            "xtask/lint/analysis.schema.json"
        ])
    );
}

/// The tools of a bench plan in a folder that is a workspace of its own
/// (it holds xtask/Cargo.toml), so that the binaries the plan names (bin/api,
/// target/bench/api-go and load) are recorders too; its name is hostile.
fn bench_tools(tag: &str, extra: &[(&str, PathBuf)]) -> Tools {
    let cargo = PathBuf::from(std::env::var_os("CARGO").expect("cargo sets CARGO"));
    let mut tools = vec![("cargo", cargo.clone())];
    // The generator is built by the rustc beside the cargo that runs bench.
    tools.push(("rustc", cargo.with_file_name("rustc")));
    for name in ["api", "api-go", "load", "taskset", "wrk", "chrt", "prlimit"] {
        tools.push((name, PathBuf::from("false")));
    }
    tools.extend(extra.iter().cloned());
    let tools = Tools::new(&hostile_folder(tag), &tools);
    std::fs::create_dir_all(tools.dir.join("xtask")).unwrap();
    std::fs::write(tools.dir.join("xtask/Cargo.toml"), "").unwrap();
    std::fs::create_dir_all(tools.dir.join("target/bench")).unwrap();
    for name in ["api-go", "load"] {
        let at = tools.dir.join("target/bench").join(name);
        std::os::unix::fs::symlink(tools.tool(name), at).unwrap();
    }
    tools
}

/// `--dry-run bench ARGS` in the tools' workspace, with `env` set.
fn bench_plan(tools: &Tools, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = support::xtask_with(&[&["--dry-run", "bench"][..], args].concat());
    cmd.current_dir(&tools.dir)
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("DOCKER_HOST")
        .env("CARGO", tools.tool("cargo"))
        .env("API_VERSION", "v1.2.3-rc.1+b_7")
        .env(
            "PATH",
            tools.path(std::env::var_os("PATH").unwrap_or_default()),
        )
        .envs(env.iter().copied());
    dry_run(&mut cmd)
}

#[test]
fn bench_plan_runs_exactly_the_builds_servers_and_loads_with_placeholders_as_words() {
    let tools = bench_tools("bench", &[("go", PathBuf::from("false"))]);
    let args = [
        "--duration",
        "7",
        "--connections",
        "32",
        "--rates",
        "1000,3000",
    ];
    let plan = bench_plan(&tools, &[&args[..], &["--realtime"]].concat(), &[]);
    // The CPUs bench chose: the server's, and wrk's and the generator's.
    let cpu_after = |start: &str| {
        let line = plan.lines().find_map(|line| line.strip_prefix(start));
        let cpu = line.and_then(|rest| rest.split(' ').next());
        cpu.unwrap_or_else(|| panic!("no `{start}` in the plan:\n{plan}"))
            .to_owned()
    };
    let server = cpu_after("PORT='<port>' HOST=127.0.0.1 taskset -c ");
    let load = cpu_after("taskset -c ");
    let root = tools.dir.display().to_string();
    let (api, go, generator) = (
        format!("{root}/bin/api"),
        format!("{root}/target/bench/api-go"),
        format!("{root}/target/bench/load"),
    );
    let url = "http://127.0.0.1:<port>/health";
    let wrk = |secs: &str, measured: bool| {
        let mut argv = words(&["taskset", "-c", &load, "wrk", "-t1", "-c32", secs]);
        if measured {
            argv.extend(words(&["--latency", "-s", "xtask/bench/report.lua"]));
        }
        argv.push(url.to_owned());
        argv
    };
    let pinned = |binary: &str| words(&["taskset", "-c", &server, binary]);
    let fifo = words(&["chrt", "--all-tasks", "--fifo", "--pid", "50", "<pid>"]);
    let rate = |rate: &str| {
        let mut argv = words(&["chrt", "--fifo", "50", "taskset", "-c", &load, &generator]);
        argv.extend(words(&[
            "--rate",
            rate,
            "--duration",
            "21",
            "--warmup",
            "1",
        ]));
        argv.extend(words(&["--connections", "32", "--slice", "100", url, url]));
        argv
    };
    let expected = vec![
        words(&[
            "API_VERSION=v1.2.3-rc.1+b_7",
            "cargo",
            "build",
            "--message-format=json-render-diagnostics",
            "--release",
            "--package",
            "api",
            "--target",
            "x86_64-unknown-linux-gnu",
        ]),
        words(&[
            "go",
            "build",
            "-trimpath",
            "-ldflags=-s -w -X main.version=v1.2.3-rc.1+b_7",
            "-o",
            &go,
            &format!("{root}/xtask/bench/main.go"),
        ]),
        words(&[
            "rustc",
            "--edition",
            "2024",
            "-C",
            "opt-level=3",
            "-o",
            &generator,
            &format!("{root}/xtask/bench/load.rs"),
        ]),
        words(&["api"]),
        words(&["api-go"]),
        pinned(&api),
        wrk("-d1s", false),
        wrk("-d7s", true),
        pinned(&go),
        wrk("-d1s", false),
        wrk("-d7s", true),
        pinned(&api),
        fifo.clone(),
        pinned(&go),
        fifo,
        rate("1000"),
        rate("3000"),
    ];
    assert_commands_or_comments(&plan, expected.len());
    assert_eq!(tools.paste(&plan), expected, "{plan}");
}

#[test]
fn bench_abuse_plan_runs_exactly_its_commands_with_the_service_settings_as_they_are() {
    let tools = bench_tools("abuse", &[]);
    let settings = [("LOG_LEVEL", HOSTILE), ("MAX_CONNECTIONS", "4096")];
    let args = ["--abuse", "--silent", "300", "--hold", "2"];
    // Without the engine: the server as a plain process, its settings in its environment.
    let plan = bench_plan(
        &tools,
        &[&args[..], &["--no-container"]].concat(),
        &settings,
    );
    assert_commands_or_comments(&plan, 4);
    let calls = tools.paste(&plan);
    assert_eq!(calls.len(), 4, "{plan}");
    assert_eq!(
        calls[0][..3],
        words(&["API_VERSION=v1.2.3-rc.1+b_7", "cargo", "build"])
    );
    assert_eq!(calls[1][..2], words(&["prlimit", "--pid"]), "{plan}");
    assert_eq!(calls[1][3], "--nofile=65536:65536", "{plan}");
    // This process (its floods and clients) on one CPU, the server on another.
    let pid = calls[1][2].clone();
    let pin = &calls[2];
    assert_eq!(
        pin[..3],
        words(&["taskset", "--cpu-list", "--pid"]),
        "{plan}"
    );
    assert_eq!(pin[4], pid, "{plan}");
    let (bench_cpu, server_cpu) = (pin[3].clone(), &calls[3][2]);
    assert_ne!(&bench_cpu, server_cpu, "{plan}");
    // taskset is the recorder here: the server is its argument, by its path.
    let api = tools.tool("api").display().to_string();
    assert_eq!(
        calls[3],
        words(&["taskset", "-c", server_cpu, &api]),
        "{plan}"
    );
    assert!(
        plan.contains("PORT='<port>' PROBE_PORT='<port>' HOST=127.0.0.1 LOG_LEVEL=$'a\\'b"),
        "{plan}"
    );

    // With docker (a recorder: a dry run runs no docker, not even `docker version`).
    let tools = bench_tools("abuse-docker", &[("docker", PathBuf::from("false"))]);
    let plan = bench_plan(&tools, &args, &settings);
    assert_commands_or_comments(&plan, 5);
    let mut calls = tools.paste(&plan);
    assert_eq!(calls.len(), 5, "{plan}");
    let pin = calls.remove(2);
    assert_eq!(pin[0], "taskset", "{plan}");
    let pid = calls[1][2].clone();
    let root = tools.dir.display().to_string();
    let build_dir = format!("{root}/target/bench/abuse-{pid}");
    let tag = format!("api-abuse-{pid}:bench");
    assert_eq!(
        calls[2],
        words(&["docker", "build", "--tag", &tag, &build_dir])
    );
    let mut run = words(&["docker", "run", "--detach", "--name"]);
    run.push(format!("api-abuse-{pid}-<phase>"));
    run.extend(words(&[
        "--network",
        "host",
        "--memory",
        "128m",
        "--memory-swap",
        "128m",
        "--cpuset-cpus",
    ]));
    let server_cpu = if pin[3] == "0" { "1" } else { "0" };
    run.push(server_cpu.to_owned());
    run.extend(words(&[
        "--env",
        "PORT=<port>",
        "--env",
        "PROBE_PORT=<port>",
    ]));
    run.extend(words(&["--env", "HOST=127.0.0.1"]));
    run.extend(words(&["--env", &format!("LOG_LEVEL={HOSTILE}")]));
    run.extend(words(&["--env", "MAX_CONNECTIONS=4096", &tag]));
    assert_eq!(calls[3], run, "{plan}");
}
