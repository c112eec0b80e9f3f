//! `cargo xtask package` and the `Dockerfile`, with the real Docker engine,
//! the real git and a real registry.
//!
//! The image is built from this checkout by `cargo xtask package` itself. This
//! machine can pull no image: .ci/builder-image makes the builder's base image
//! locally, under the exact tag the Dockerfile names, once per machine.
//!
//! Tests that need the engine (or the registry) fail when CI is set and it is
//! missing; elsewhere they skip, saying why.

mod engine;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, *};
use engine::*;

// --- The image that `cargo xtask package` builds --------------------------

#[test]
fn package_prints_only_the_image_reference_on_stdout() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let tag = match image.describe.ends_with("-dirty") {
        true => format!("{}-dirty", image.head),
        false => image.head.clone(),
    };
    assert_eq!(image.stdout, format!("api:{tag}\n"));
    let id = read(&mut docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &image.reference,
    ]));
    assert!(id.starts_with("sha256:"), "{id}");
}

#[test]
fn the_image_answers_health_with_the_version_git_describe_gives() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let container = Container::start(&image.reference, &[]);
    let (status, body) = container.get("/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    assert_eq!(health["version"], image.describe.as_str(), "{body}");
}

#[test]
fn the_image_runs_as_a_non_root_user() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let user = read(&mut docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &image.reference,
    ]));
    assert_eq!(user, "65534:65534");
    let container = Container::start(&image.reference, &[]);
    container.get("/health");
    // The running process itself, as the kernel sees it.
    let top = read(&mut docker(&["top", &container.id, "-o", "pid,uid,comm"]));
    let uids: Vec<&str> = top
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert_eq!(uids, ["65534"], "{top}");
}

#[test]
fn the_image_holds_only_the_binary() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let layers = read(&mut docker(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}} {{.Size}} {{json .Config.Entrypoint}}",
        &image.reference,
    ]));
    let fields: Vec<&str> = layers.split(' ').collect();
    assert_eq!(fields[0], "1", "one layer, the binary: {layers}");
    assert_eq!(fields[2], r#"["/api"]"#);
    let size: u64 = fields[1].parse().unwrap();
    eprintln!("image size: {size} bytes");
    // A sanity bound, not the goal (the figure is reported): Go on Alpine is ~10 MB.
    assert!(size < 10_000_000, "{size} bytes");
}

#[test]
fn the_image_carries_the_oci_labels() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let labels = read(&mut docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image.reference,
    ]));
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    let label = |name: &str| {
        labels[format!("org.opencontainers.image.{name}")]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} label in {labels}"))
            .to_owned()
    };
    assert_eq!(label("version"), image.describe);
    assert_eq!(label("revision"), image.head);
    // packaged() sets SOURCE_DATE_EPOCH to the commit's time, so builds repeat exactly.
    let committed = read(
        std::process::Command::new("git")
            .args([
                "log",
                "-1",
                "--format=%cd",
                "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
            ])
            .env("TZ", "UTC")
            .current_dir(root()),
    );
    assert_eq!(label("created"), committed);
    assert_eq!(label("source"), "https://gitlab.example.com/team/api");
}

#[test]
fn the_image_healthcheck_passes() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    // The image's own HEALTHCHECK command, asked every second instead of every ten.
    let container = Container::start(&image.reference, &["--health-interval", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = container.inspect("{{.State.Health.Status}}");
        if health == "healthy" {
            break;
        }
        assert_ne!(
            health,
            "unhealthy",
            "{}",
            container.inspect("{{json .State.Health}}")
        );
        assert!(
            Instant::now() < deadline,
            "still {health} after 30 s: {}",
            container.inspect("{{json .State.Health}}")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn sigterm_stops_the_container_with_exit_0_within_the_drain_timeout() {
    if !needs_engine() {
        return;
    }
    let image = packaged();
    let container = Container::start(&image.reference, &[]);
    container.get("/health");
    // `docker stop` sends SIGTERM, and SIGKILL (exit 137) if the service is
    // still running when the drain timeout (10 s) is over.
    read(&mut docker(&["stop", "--time", "10", &container.id]));
    assert_eq!(container.inspect("{{.State.Running}}"), "false");
    assert_eq!(
        container.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        container.logs()
    );
}

#[test]
fn the_build_context_holds_only_what_the_build_needs() {
    if !needs_engine() {
        return;
    }
    // The real .dockerignore at work: a throwaway Dockerfile lists what reached the engine.
    let tag = format!("api-context-test:{}", unique());
    let _image = RemoveImages(vec![tag.clone()]);
    let mut list = docker(&["build", "--no-cache", "--tag", &tag, "--file", "-"]);
    list.args(labels()).arg(".");
    // Read as text: BuildKit's plain progress (on stderr), or the classic builder's (stdout).
    list.env("BUILDKIT_PROGRESS", "plain");
    list.current_dir(root()).stdin(std::process::Stdio::piped());
    list.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = list.spawn().unwrap();
    let base = base_image();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("FROM {base}\nCOPY . /context\nRUN cd /context && find . -type f | sort\n")
            .as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let text = without_colours(&format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    assert!(output.status.success(), "{text}");
    let files: Vec<&str> = text
        .lines()
        .map(step_output)
        .filter(|l| l.starts_with("./"))
        .collect();
    assert!(files.contains(&"./Cargo.lock"), "{files:?}");
    assert!(files.contains(&"./api/src/main.rs"), "{files:?}");
    assert!(files.contains(&"./xtask/Cargo.toml"), "{files:?}");
    for file in &files {
        let needed = [
            "./Cargo.toml",
            "./Cargo.lock",
            "./api/Cargo.toml",
            "./xtask/Cargo.toml",
        ]
        .contains(file)
            || file.starts_with("./api/src/");
        assert!(needed, "{file} is in the build context: {files:?}");
    }
}

// --- The dependency layer ---------------------------------------------------

#[test]
fn a_source_only_change_reuses_the_dependency_layer() {
    if !needs_engine() {
        return;
    }
    // A copy of the checkout's tracked files, so the change touches no one's work tree.
    let context = TempDir::new("context");
    for file in git(&["ls-files"]).lines() {
        let from = root().join(file);
        if !from.is_file() {
            continue;
        }
        let to = context.path.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    // Tags of this run only: the engine may be shared with other runs.
    let before = format!("api-layer-test:before-{}", unique());
    let after = format!("api-layer-test:after-{}", unique());
    let _images = RemoveImages(vec![before.clone(), after.clone()]);
    // The version `package` compiles in, so that the first build finds the
    // service that `package` built cached, or leaves it cached for `package`.
    let version = format!(
        "API_VERSION={}",
        git(&["describe", "--tags", "--always", "--dirty"])
    );
    let build = |tag: &str| {
        let mut cmd = docker(&["build", "--tag", tag, "--build-arg", &version]);
        cmd.args(labels()).arg(".");
        cmd.current_dir(&context.path)
            .env("BUILDKIT_PROGRESS", "plain");
        let ran = run(&mut serialised(&cmd));
        assert!(ran.success(), "docker build failed:\n{}", ran.both());
        without_colours(&ran.both())
    };

    build(&before);
    let main_rs = context.path.join("api/src/main.rs");
    let mut source = std::fs::read_to_string(&main_rs).unwrap();
    // Different on every run, or the second run would find this change cached too.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    source.push_str(&format!("\n// A source-only change ({stamp}).\n"));
    std::fs::write(&main_rs, source).unwrap();
    let output = build(&after);

    assert_eq!(
        step_cached(&output, "cargo build --release --locked --package api", 0),
        Some(true),
        "the dependency layer was rebuilt:\n{output}"
    );
    assert_eq!(
        step_cached(&output, "cargo build --release --locked --package api", 1),
        Some(false),
        "the service was not rebuilt:\n{output}"
    );
    assert!(output.contains("Compiling api"), "{output}");
    assert!(
        !output.contains("Compiling tokio"),
        "dependencies were compiled again:\n{output}"
    );
}

/// What a build step printed, without BuildKit's `#N SECONDS ` in front of
/// each line (the classic builder prints it as it is).
fn step_output(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('#') else {
        return line;
    };
    let mut words = rest.splitn(3, ' ');
    let (step, time, said) = (words.next(), words.next(), words.next());
    let is_number = |w: Option<&str>, extra: &[u8]| {
        w.is_some_and(|w| {
            !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit() || extra.contains(&b))
        })
    };
    match said {
        Some(said) if is_number(step, b"") && is_number(time, b".") => said,
        _ => line,
    }
}

#[test]
fn buildkit_step_prefixes_are_removed_from_build_output() {
    assert_eq!(step_output("#8 0.215 ./Cargo.lock"), "./Cargo.lock");
    assert_eq!(step_output("./Cargo.lock"), "./Cargo.lock");
    assert_eq!(step_output("#8 DONE 0.3s"), "#8 DONE 0.3s");
}

/// The classic builder colours the build's stderr in chunks that may split a
/// word (`Compiling\x1b[0m\x1b[91m api`): the text without those sequences.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colour_sequences_are_removed_from_build_output() {
    assert_eq!(
        without_colours("\x1b[91m   Compiling\x1b[0m\x1b[91m api v0.1.0\n"),
        "   Compiling api v0.1.0\n"
    );
}

/// Whether the `nth` build step whose command contains `needle` came from the
/// cache: the classic builder prints `Step N/M : RUN ...` then ` ---> Using
/// cache`; BuildKit prints `#N [stage i/j] RUN ...` then `#N CACHED`.
fn step_cached(output: &str, needle: &str, nth: usize) -> Option<bool> {
    let lines: Vec<&str> = output.lines().collect();
    let (at, line) = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| {
            (line.starts_with("Step ") || line.starts_with('#')) && line.contains(needle)
        })
        .nth(nth)?;
    if line.starts_with("Step ") {
        return Some(lines.get(at + 1)?.trim() == "---> Using cache");
    }
    let id = line.split(' ').next()?;
    Some(lines.iter().any(|l| *l == format!("{id} CACHED")))
}

#[test]
fn build_steps_are_told_cached_or_not_in_both_builders_output() {
    let classic = "Step 9/23 : RUN cargo build x\n ---> Using cache\n ---> 1\n\
                   Step 12/23 : RUN cargo build x\n ---> Running in 2\n";
    assert_eq!(step_cached(classic, "cargo build", 0), Some(true));
    assert_eq!(step_cached(classic, "cargo build", 1), Some(false));
    assert_eq!(step_cached(classic, "cargo build", 2), None);
    let buildkit = "#9 [builder 5/8] RUN cargo build x\n#9 CACHED\n\n\
                    #11 [builder 7/8] RUN cargo build x\n#11 0.3 Compiling api\n#11 DONE 9.1s\n";
    assert_eq!(step_cached(buildkit, "cargo build", 0), Some(true));
    assert_eq!(step_cached(buildkit, "cargo build", 1), Some(false));
}

/// Removes test-only tags when dropped.
struct RemoveImages(Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = run(&mut docker(&["rmi", "--force", image]));
        }
    }
}

// --- Plans, refusals and errors ----------------------------------------------

#[test]
fn dry_run_prints_the_exact_build_and_runs_nothing() {
    if !needs_engine() {
        return;
    }
    let describe = git(&["describe", "--tags", "--always", "--dirty"]);
    let head = git(&["rev-parse", "--verify", "HEAD"]);
    let ran = run(xtask()
        .args(["--dry-run", "package", "--allow-dirty"])
        .args([
            "--image",
            "registry.example.com/team/api",
            "--tag",
            "dry-run-test",
        ])
        .args(["--", "--network", "host", "--no-cache"])
        .env("CI_PROJECT_URL", "https://gitlab.example.com/team/api")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(ran.success(), "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        format!(
            "docker build --file Dockerfile --tag registry.example.com/team/api:dry-run-test \
             --build-arg API_VERSION={describe} --build-arg REVISION={head} \
             --build-arg CREATED=2023-11-14T22:13:20Z \
             --build-arg SOURCE=https://gitlab.example.com/team/api --network host --no-cache .\n\
             # result: registry.example.com/team/api:dry-run-test\n"
        )
    );
    let inspect = run(&mut docker(&[
        "image",
        "inspect",
        "registry.example.com/team/api:dry-run-test",
    ]));
    assert!(!inspect.success(), "a dry run built an image");
}

#[test]
fn dry_run_labels_the_current_time_by_default() {
    if !needs_engine() {
        return;
    }
    let utc_now = || read(std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    let before = utc_now();
    let ran = run(xtask().args(["--dry-run", "package", "--allow-dirty"]));
    let after = utc_now();
    assert!(ran.success(), "{}", ran.stderr);
    let created = ran
        .stdout
        .split(' ')
        .find_map(|word| word.strip_prefix("CREATED="))
        .unwrap_or_else(|| panic!("no CREATED in {}", ran.stdout));
    // RFC 3339 in UTC compares as text.
    assert!(
        before.as_str() <= created && created <= after.as_str(),
        "{before} <= {created} <= {after}"
    );
}

#[test]
fn dry_run_with_push_plans_login_build_and_push_without_the_password() {
    if !needs_engine() {
        return;
    }
    let ran = run(xtask()
        .args([
            "--dry-run",
            "package",
            "--allow-dirty",
            "--push",
            "--tag",
            "v1",
        ])
        .env("CI_REGISTRY_IMAGE", "registry.example.com/team/api")
        .env("CI_REGISTRY", "registry.example.com")
        .env("CI_REGISTRY_USER", "gitlab-ci-token")
        .env("CI_REGISTRY_PASSWORD", "hunter2-dry-run-secret"));
    assert!(ran.success(), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", ran.stdout);
    assert_eq!(
        lines[0],
        "docker login --username gitlab-ci-token --password-stdin registry.example.com"
    );
    // Is the tag there already? A tag names one image forever.
    assert_eq!(lines[1], "docker pull registry.example.com/team/api:v1");
    assert!(
        lines[2]
            .starts_with("docker build --file Dockerfile --tag registry.example.com/team/api:v1 "),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "docker push registry.example.com/team/api:v1");
    assert_eq!(lines[4], "# result: registry.example.com/team/api:v1");
    assert!(!ran.both().contains("hunter2"), "{}", ran.both());
    // The commands (the last line is the result, the image reference, as a comment).
    support::runs::assert_runs_describe("package", &lines[..4].join("\n"));
}

#[test]
fn partial_registry_credentials_are_refused_naming_what_is_missing() {
    if !needs_docker_cli() {
        return;
    }
    let ran = run(xtask()
        .args(["--dry-run", "package", "--allow-dirty", "--push"])
        .env("CI_REGISTRY", "registry.example.com")
        .env("CI_REGISTRY_PASSWORD", "hunter2-partial-secret"));
    assert!(!ran.success());
    assert!(
        ran.stderr.contains("CI_REGISTRY_USER missing"),
        "{}",
        ran.stderr
    );
    assert!(!ran.both().contains("hunter2"), "{}", ran.both());
    assert_eq!(ran.stdout, "");
}

#[test]
fn a_dirty_work_tree_is_refused_unless_allowed() {
    if !needs_engine() {
        return;
    }
    // A real repository with an uncommitted change, which git (and so xtask)
    // uses instead of this checkout through GIT_DIR and GIT_WORK_TREE.
    let repo = TempDir::new("dirty-repo");
    let git_in = |args: &[&str]| {
        read(
            std::process::Command::new("git")
                .args(args)
                .current_dir(&repo.path)
                .env_remove("GIT_DIR")
                .env_remove("GIT_WORK_TREE"),
        )
    };
    git_in(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.path.join("file"), "committed").unwrap();
    git_in(&["add", "file"]);
    git_in(&[
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "first",
    ]);
    git_in(&["tag", "v1.0.0"]);
    std::fs::write(repo.path.join("file"), "changed").unwrap();
    let sha = git_in(&["rev-parse", "HEAD"]);
    let package = |extra: &[&str]| {
        run(xtask()
            .args(["--dry-run", "package"])
            .args(extra)
            .env("GIT_DIR", repo.path.join(".git"))
            .env("GIT_WORK_TREE", &repo.path))
    };

    let refused = package(&[]);
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("uncommitted changes"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--allow-dirty"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "", "nothing planned");

    let allowed = package(&["--allow-dirty"]);
    assert!(allowed.success(), "{}", allowed.stderr);
    assert!(
        allowed.stdout.contains(&format!("--tag api:{sha}-dirty ")),
        "{}",
        allowed.stdout
    );
    assert!(
        allowed
            .stdout
            .contains("--build-arg API_VERSION=v1.0.0-dirty "),
        "{}",
        allowed.stdout
    );
    assert!(allowed.stdout.ends_with(&format!("api:{sha}-dirty\n")));
}

#[test]
fn an_invalid_image_name_is_refused_with_what_is_allowed() {
    if !needs_docker_cli() {
        return;
    }
    for bad in ["Team/API", "api:v1", "registry.example.com//api"] {
        let ran = run(xtask().args(["--dry-run", "package", "--allow-dirty", "--image", bad]));
        assert!(!ran.success(), "{bad} accepted");
        assert!(
            ran.stderr.contains("invalid image"),
            "{bad}: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains("lowercase letters and digits"),
            "{bad}: {}",
            ran.stderr
        );
        assert_eq!(ran.stdout, "", "{bad}: nothing planned");
    }
}

#[test]
fn an_invalid_tag_is_refused_with_what_is_allowed() {
    if !needs_docker_cli() {
        return;
    }
    let ran = run(xtask().args(["--dry-run", "package", "--allow-dirty", "--tag", "v1/2"]));
    assert!(!ran.success());
    assert!(ran.stderr.contains("invalid image tag"), "{}", ran.stderr);
    assert!(ran.stderr.contains("1 to 128 letters"), "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
}

#[test]
fn no_engine_is_one_clear_error_before_any_work() {
    if !needs_docker_cli() {
        return;
    }
    let dead = TempDir::new("dead-engine");
    let host = format!("unix://{}/docker.sock", dead.path.display());
    let ran = run(xtask()
        .args(["package", "--allow-dirty"])
        .env("DOCKER_HOST", &host));
    assert!(!ran.success());
    let errors: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", ran.stderr);
    assert!(
        errors[0].contains(&format!("no Docker engine answers at DOCKER_HOST={host}")),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("start the engine"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("$ docker build"), "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
}

#[test]
fn a_missing_docker_cli_is_named_with_how_to_install_it() {
    // PATH with git only: the docker CLI is nowhere to be found.
    let bin = TempDir::new("path-without-docker");
    let git_path = read(std::process::Command::new("sh").args(["-c", "command -v git"]));
    std::os::unix::fs::symlink(git_path, bin.path.join("git")).unwrap();
    let ran = run(xtask()
        .args(["--dry-run", "package", "--allow-dirty"])
        .env("PATH", &bin.path));
    assert!(!ran.success());
    assert!(
        ran.stderr.contains("missing tool on PATH"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("docker: install Docker Engine"),
        "{}",
        ran.stderr
    );
    assert_eq!(ran.stdout, "");
}

// --- Pushing to a real registry ----------------------------------------------

#[test]
fn push_logs_in_with_the_password_on_stdin_and_pushes_the_tag() {
    if !needs_engine() || !needs_registry() {
        return;
    }
    let registry = Registry::start();
    // docker login stores what it is given: keep it out of the user's ~/.docker.
    let docker_config = TempDir::new("docker-config");
    let reports = TempDir::new("dotenv");
    let dotenv = reports.path.join("package.env");
    let repository = format!("{}/team/api", registry.address);
    let tag = "push-test";
    let reference = format!("{repository}:{tag}");
    let mut package = xtask();
    package
        .args([
            "package",
            "--allow-dirty",
            "--push",
            "--tag",
            tag,
            "--dotenv",
        ])
        .arg(&dotenv)
        .env("CI_REGISTRY_IMAGE", &repository)
        .env("CI_REGISTRY", &registry.address)
        .env("CI_REGISTRY_USER", registry.user)
        .env("CI_REGISTRY_PASSWORD", registry.password)
        .env("DOCKER_CONFIG", &docker_config.path);
    let ran = run(&mut serialised(&package));
    let _pushed = RemoveImage(reference.clone());

    assert!(ran.success(), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "$ docker login --username {} --password-stdin {}",
            registry.user, registry.address
        )),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("Login Succeeded"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!("$ docker push {reference}")),
        "{}",
        ran.stderr
    );
    assert!(
        !ran.both().contains(registry.password),
        "the password was shown"
    );
    assert!(
        registry.tags("team/api").contains(tag),
        "{}",
        registry.tags("team/api")
    );
    // The digest printed is the one the registry itself gives for the tag.
    let digest = registry.manifest_digest("team/api", tag);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(ran.stdout, format!("{reference}@{digest}\n"));
    assert_eq!(
        std::fs::read_to_string(&dotenv).unwrap(),
        format!("API_IMAGE_DIGEST={digest}\n")
    );
}

#[test]
fn dry_run_with_dotenv_plans_the_report_and_writes_nothing() {
    if !needs_docker_cli() {
        return;
    }
    let reports = TempDir::new("dotenv-dry-run");
    let dotenv = reports.path.join("package.env");
    let ran = run(xtask()
        .args([
            "--dry-run",
            "package",
            "--allow-dirty",
            "--push",
            "--tag",
            "v1",
        ])
        .arg("--dotenv")
        .arg(&dotenv));
    assert!(ran.success(), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", ran.stdout);
    assert_eq!(lines[0], "docker pull api:v1");
    assert_eq!(lines[2], "docker push api:v1");
    assert_eq!(
        lines[3],
        format!(
            "# write API_IMAGE_DIGEST=<the digest docker push reports> to {}",
            dotenv.display()
        )
    );
    assert_eq!(lines[4], "# result: api:v1");
    assert!(!dotenv.exists(), "a dry run wrote the report");
}

#[test]
fn dotenv_without_push_is_refused() {
    let ran = run(xtask().args(["--dry-run", "package", "--dotenv", "package.env"]));
    assert!(!ran.success());
    assert!(ran.stderr.contains("--push"), "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
}

#[test]
fn dotenv_in_a_missing_folder_is_refused_before_any_work() {
    if !needs_docker_cli() {
        return;
    }
    let ran = run(xtask().args([
        "--dry-run",
        "package",
        "--allow-dirty",
        "--push",
        "--dotenv",
        "no/such/folder/package.env",
    ]));
    assert!(!ran.success());
    assert!(
        ran.stderr.contains("--dotenv no/such/folder/package.env"),
        "{}",
        ran.stderr
    );
    assert_eq!(ran.stdout, "", "nothing planned");
}

#[test]
fn a_wrong_registry_password_fails_before_the_build_and_is_never_shown() {
    if !needs_engine() || !needs_registry() {
        return;
    }
    let registry = Registry::start();
    let docker_config = TempDir::new("docker-config");
    let wrong = "wr0ng-Pa55-never-shown";
    // The registry is there and answers: the right password is let in, the wrong one not.
    let (status, _) = http_get(
        &registry.http_address,
        "/v2/",
        Some(&registry.credentials()),
    )
    .expect("the registry answers");
    assert_eq!(status, 200);
    let (status, _) = http_get(
        &registry.http_address,
        "/v2/",
        Some(&format!("{}:{wrong}", registry.user)),
    )
    .unwrap();
    assert_eq!(status, 401);
    let refusals_before = refusals(&registry.logs());

    let ran = run(xtask()
        .args([
            "package",
            "--allow-dirty",
            "--push",
            "--tag",
            "wrong-password",
        ])
        .env(
            "CI_REGISTRY_IMAGE",
            format!("{}/team/api", registry.address),
        )
        .env("CI_REGISTRY", &registry.address)
        .env("CI_REGISTRY_USER", registry.user)
        .env("CI_REGISTRY_PASSWORD", wrong)
        .env("DOCKER_CONFIG", &docker_config.path));
    assert!(!ran.success());
    assert!(ran.stderr.contains("error: log in to"), "{}", ran.stderr);
    // Refused by the registry, not unreachable: docker relays its 401...
    assert!(
        ran.stderr.contains("401 Unauthorized") || ran.stderr.contains("unauthorized"),
        "{}",
        ran.stderr
    );
    // ...and the registry logged one more refused password, for this user.
    let logs = registry.logs();
    assert!(
        refusals(&logs) > refusals_before,
        "the registry logged no refused login:\n{logs}"
    );
    assert!(
        !ran.stderr.contains("$ docker build"),
        "built after a failed login"
    );
    assert!(!ran.both().contains(wrong), "the password was shown");
    assert_eq!(ran.stdout, "");
}

/// The registry's log lines for a refused password (distribution's htpasswd
/// access controller: `authentication failure`, `invalid authorization credential`).
fn refusals(logs: &str) -> usize {
    logs.lines()
        .filter(|line| {
            line.contains("authentication failure") || line.contains("invalid authorization")
        })
        .count()
}

/// Removes one image tag when dropped.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = run(&mut docker(&["rmi", &self.0]));
    }
}

// --- A tag names one image forever ----------------------------------------------

/// A clean clone of this checkout's HEAD, where `package` runs as a pipeline's
/// job does (xtask finds its workspace from the current folder).
struct Clone {
    _dir: TempDir,
    path: std::path::PathBuf,
    head: String,
}

impl Clone {
    fn of_head(name: &str) -> Clone {
        let dir = TempDir::new(name);
        let path = dir.path.join("api");
        let root = support::root();
        let ran = run(Command::new("git")
            .args(["clone", "--quiet", "--no-local"])
            .arg(&root)
            .arg(&path));
        assert!(ran.success(), "{ran}");
        let head = git(&["rev-parse", "--verify", "HEAD"]);
        let ran = run(Command::new("git")
            .args(["checkout", "--quiet", "--detach", &head])
            .current_dir(&path));
        assert!(ran.success(), "{ran}");
        Clone {
            _dir: dir,
            path,
            head,
        }
    }

    /// `cargo xtask package --push` there, as the package job runs it.
    fn push(&self, registry: &Registry, docker_config: &TempDir, args: &[&str]) -> support::Ran {
        let mut package = xtask();
        package
            .current_dir(&self.path)
            .env_remove("CARGO_MANIFEST_DIR")
            .args(["package", "--push"])
            .args(args)
            .env(
                "CI_REGISTRY_IMAGE",
                format!("{}/team/api", registry.address),
            )
            .env("CI_REGISTRY", &registry.address)
            .env("CI_REGISTRY_USER", registry.user)
            .env("CI_REGISTRY_PASSWORD", registry.password)
            .env("DOCKER_CONFIG", &docker_config.path);
        run(&mut serialised(&package))
    }
}

/// A re-run pipeline (or a tag pipeline of a commit already built) on a fresh
/// engine: no local image, no build cache. The tag must keep naming the digest
/// the first run pushed, which a Rollout may be pinned to.
#[test]
fn a_second_push_of_the_same_commit_keeps_the_tag_and_prints_its_digest() {
    if !needs_engine() || !needs_registry() {
        return;
    }
    let registry = Registry::start();
    let docker_config = TempDir::new("docker-config-twice");
    let clone = Clone::of_head("push-twice");
    let reports = TempDir::new("dotenv-twice");
    let dotenv = reports.path.join("package.env");
    let reference = format!("{}/team/api:{}", registry.address, clone.head);
    let _pushed = RemoveImage(reference.clone());

    let first = clone.push(
        &registry,
        &docker_config,
        &["--dotenv", dotenv.to_str().unwrap()],
    );
    assert!(first.success(), "{first}");
    assert!(
        first.stderr.contains("is not in the registry yet"),
        "{first}"
    );
    assert!(first.stderr.contains("$ docker push "), "{first}");
    let digest = registry.manifest_digest("team/api", &clone.head);
    assert_eq!(first.stdout, format!("{reference}@{digest}\n"));
    std::fs::remove_file(&dotenv).unwrap();

    // As on a fresh engine: the image is gone here, and the build may use no
    // cache (--no-cache; pruning the engine's whole build cache would take
    // every other user's on a shared engine). `--no-prune`, under the build
    // lock: the untagged layers below it are the cache that builds running
    // beside this test stand on ("failed to get digest" when they vanish).
    let removed = run(&mut serialised(&docker(&["rmi", "--no-prune", &reference])));
    assert!(removed.success(), "{removed}");
    let second = clone.push(
        &registry,
        &docker_config,
        &["--dotenv", dotenv.to_str().unwrap(), "--", "--no-cache"],
    );

    assert!(second.success(), "{second}");
    assert!(
        second
            .stderr
            .contains(&format!("$ docker pull {reference}")),
        "{second}"
    );
    assert!(
        second
            .stderr
            .contains("exists already and holds this commit"),
        "{second}"
    );
    assert!(
        !second.stderr.contains("$ docker build"),
        "rebuilt:\n{second}"
    );
    assert!(
        !second.stderr.contains("$ docker push"),
        "pushed again:\n{second}"
    );
    // The registry's tag still names the first digest, and the second run says it.
    assert_eq!(registry.manifest_digest("team/api", &clone.head), digest);
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(
        std::fs::read_to_string(&dotenv).unwrap(),
        format!("API_IMAGE_DIGEST={digest}\n")
    );
    assert!(!second.both().contains(registry.password));

    // A tag that names another commit's image is refused, before any build,
    // and stays where it is.
    let committed = run(Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "--quiet",
            "--allow-empty",
            "--message",
            "another commit",
        ])
        .current_dir(&clone.path));
    assert!(committed.success(), "{committed}");
    let other = clone.push(&registry, &docker_config, &["--tag", &clone.head]);
    assert!(!other.success(), "{other}");
    assert!(
        other.stderr.contains(&format!(
            "holds revision \"{}\", not this commit's",
            clone.head
        )),
        "{other}"
    );
    assert!(!other.stderr.contains("$ docker build"), "built:\n{other}");
    assert!(!other.stderr.contains("$ docker push"), "pushed:\n{other}");
    assert_eq!(other.stdout, "");
    assert_eq!(registry.manifest_digest("team/api", &clone.head), digest);
}
