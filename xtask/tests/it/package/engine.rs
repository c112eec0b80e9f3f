//! What the package tests share beyond `support`: the Docker engine
//! gate, the one image build they all use, containers and a real registry
//! that are always removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{http, http_get, needs, on_path, root, run, xtask};

/// Runs a command that must succeed and returns its trimmed stdout.
pub fn read(cmd: &mut Command) -> String {
    let ran = run(cmd);
    assert!(ran.success(), "{cmd:?} failed:\n{}", ran.stderr);
    ran.stdout.trim().to_owned()
}

pub fn docker(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args).stdin(Stdio::null());
    cmd
}

pub fn git(args: &[&str]) -> String {
    read(Command::new("git").args(args).current_dir(root()))
}

/// The docker CLI, for tests that stop before the engine is asked.
pub fn needs_docker_cli() -> bool {
    needs(
        "the docker CLI",
        on_path("docker"),
        "apt-get install docker.io",
    )
}

/// The address of the engine's host as this process reaches it: the host of a
/// `tcp://` DOCKER_HOST (GitLab's `docker:dind` service at `docker:2375`,
/// another machine), else this machine's loopback. Ports a container
/// publishes are published there, and found there.
pub fn engine_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
        engine_host_of(&docker_host).unwrap_or_else(|why| panic!("{why}"))
    })
}

/// [`engine_host`] for a given DOCKER_HOST: an IPv4 address, since that is
/// what `docker run --publish IP::PORT` takes.
pub fn engine_host_of(docker_host: &str) -> Result<String, String> {
    if docker_host.is_empty() || docker_host.starts_with("unix://") {
        return Ok("127.0.0.1".to_owned());
    }
    let Some(authority) = docker_host
        .strip_prefix("tcp://")
        .or_else(|| docker_host.strip_prefix("http://"))
    else {
        return Err(format!(
            "DOCKER_HOST={docker_host}: the engine tests know unix:// and tcp://HOST:PORT \
             engines only; use one of those"
        ));
    };
    let authority = authority.split('/').next().unwrap_or_default();
    use std::net::ToSocketAddrs as _;
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("DOCKER_HOST={docker_host}: cannot resolve {authority}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("DOCKER_HOST={docker_host}: {authority} has no IPv4 address"))?;
    Ok(address.ip().to_string())
}

/// A Docker engine that answers, and the builder base image the Dockerfile
/// names (made by .ci/builder-image when this machine cannot pull it).
pub fn needs_engine() -> bool {
    static ENGINE: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = ENGINE.get_or_init(|| {
        if !on_path("docker") {
            return Err("the docker CLI is not on PATH".into());
        }
        let version = run(&mut docker(&["version", "--format", "{{.Server.Version}}"]));
        if !version.success() {
            return Err(format!("no engine answers: {}", version.stderr.trim()));
        }
        builder_image()
    });
    match ready {
        Ok(()) => true,
        Err(why) => needs(
            "a Docker engine with the builder image",
            false,
            &format!("{why}; start dockerd, and run .ci/builder-image as root"),
        ),
    }
}

/// .ci/builder-image is the one place that makes the base image; it does
/// nothing when the image is present.
fn builder_image() -> Result<(), String> {
    let script = root().join(".ci/builder-image");
    let made = run(Command::new("bash").arg(&script).current_dir(root()));
    match made.success() {
        true => Ok(()),
        false => Err(format!(
            "{} failed: {}",
            script.display(),
            made.both().trim()
        )),
    }
}

/// Image builds are serialised across test processes (nextest runs each test in
/// its own), so the first one builds and the others find every layer cached
/// instead of compiling the same dependencies side by side on two cores.
pub fn serialised(cmd: &Command) -> Command {
    let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-image-build.lock");
    let mut flock = Command::new("flock");
    flock.arg(lock).arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => flock.env(key, value),
            None => flock.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        flock.current_dir(dir);
    }
    flock.stdin(Stdio::null());
    flock
}

/// The image that `cargo xtask package` built from this checkout.
pub struct Packaged {
    pub reference: String,
    pub stdout: String,
    /// What `git describe --tags --always --dirty` says of the checkout.
    pub describe: String,
    pub head: String,
}

/// Builds the image once per test process (nextest: once per test; every
/// build after the first finds its layers cached).
pub fn packaged() -> &'static Packaged {
    static IMAGE: OnceLock<Packaged> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let describe = git(&["describe", "--tags", "--always", "--dirty"]);
        let head = git(&["rev-parse", "--verify", "HEAD"]);
        // --allow-dirty: a developer may run the tests with uncommitted changes;
        // the tag and the version then both say so, which is what is checked.
        // The commit's time as the creation time, so that every test process
        // builds the very same image, and a fixed source for the label.
        let committed = git(&["log", "-1", "--format=%ct"]);
        let mut package = xtask();
        package
            .args(["package", "--allow-dirty"])
            .env("SOURCE_DATE_EPOCH", committed)
            .env("CI_PROJECT_URL", "https://gitlab.example.com/team/api");
        let ran = run(&mut serialised(&package));
        assert!(ran.success(), "cargo xtask package failed:\n{}", ran.stderr);
        let reference = ran.stdout.trim().to_owned();
        Packaged {
            reference,
            stdout: ran.stdout,
            describe,
            head,
        }
    })
}

/// A container, removed (stopped first if need be) when dropped.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run --detach` of the image, its port 8080 published on a free
    /// port of the engine's host (loopback for a local engine).
    pub fn start(image: &str, extra: &[&str]) -> Container {
        let publish = format!("{}::8080", engine_host());
        let labels = labels();
        let mut args = vec!["run", "--detach", "--publish", &publish];
        args.extend(labels.iter().map(String::as_str));
        args.extend(extra);
        args.push(image);
        Container {
            id: read(&mut docker(&args)),
        }
    }

    pub fn inspect(&self, format: &str) -> String {
        read(&mut docker(&["inspect", "--format", format, &self.id]))
    }

    /// The address its port 8080 is published on, on the engine's host.
    pub fn address(&self) -> String {
        published(&self.id, "8080/tcp", engine_host())
    }

    /// GET `path` once the service answers, retrying for a few seconds while it starts.
    pub fn get(&self, path: &str) -> (u16, String) {
        let address = self.address();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http_get(&address, path, None) {
                Ok(response) => return response,
                Err(e) if Instant::now() > deadline => {
                    panic!(
                        "GET http://{address}{path} failed: {e}\nlogs:\n{}",
                        self.logs()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn logs(&self) -> String {
        run(&mut docker(&["logs", &self.id])).both()
    }
}

/// A name part no other run on a shared engine uses: this process, and the
/// time (a job container's process ids repeat from run to run).
pub fn unique() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `--label` arguments for every container and image a test creates: the GitLab job
/// that ran it ($CI_JOB_ID, when set), so that whoever runs the job can
/// remove what a killed test left behind, and nothing else.
pub fn labels() -> Vec<String> {
    let job = std::env::var("CI_JOB_ID").unwrap_or_default();
    vec![
        "--label".to_owned(),
        format!("org.example.api.test.ci-job-id={job}"),
    ]
}

/// Where `docker port` says a container's `port` is published on `host`
/// (`127.0.0.1:49153`; it lists one line per binding).
pub fn published(container: &str, port: &str, host: &str) -> String {
    let ports = read(&mut docker(&["port", container, port]));
    let prefix = format!("{host}:");
    ports
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{container}'s {port} is not published on {host}: {ports}"))
        .to_owned()
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A real registry (Debian's `docker-registry`, the CNCF distribution
/// registry) with one htpasswd user, run where the engine can reach it: in a
/// container on the engine, from the builder base image (which has the libc
/// it links) with the binary and its configuration copied in, so that a
/// remote engine (GitLab's dind service) runs it as well as a local one. It
/// is published on the engine host's loopback, where the engine pushes (the
/// engine treats 127.0.0.0/8 as an insecure registry, so plain HTTP is fine),
/// and, for a remote engine, on the engine host's address too, where this
/// process asks it. Removed, with its storage, when dropped.
pub struct Registry {
    /// Where the engine reaches it: `CI_REGISTRY` for a push.
    pub address: String,
    /// Where this process reaches it: the same registry.
    pub http_address: String,
    pub user: &'static str,
    pub password: &'static str,
    container: String,
}

pub fn needs_registry() -> bool {
    needs(
        "the registry server and htpasswd",
        on_path("docker-registry") && on_path("htpasswd"),
        "apt-get install docker-registry apache2-utils",
    )
}

impl Registry {
    pub fn start() -> Registry {
        let dir = TempDir::new("registry");
        let (user, password) = ("ci-user", "s3cret-Pa55-never-shown");
        let mut htpasswd = Command::new("htpasswd")
            .args(["-iBn", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("htpasswd");
        htpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let hashed = htpasswd.wait_with_output().unwrap();
        assert!(hashed.status.success());
        std::fs::write(dir.path.join("htpasswd"), hashed.stdout).unwrap();
        // `info` logs each request with its status, for the tests that read it.
        let config = "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                      rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\nauth:\n  \
                      htpasswd:\n    realm: test\n    path: /registry/htpasswd\n";
        std::fs::write(dir.path.join("config.yml"), config).unwrap();
        let binary = read(Command::new("sh").args(["-c", "command -v docker-registry"]));
        std::fs::copy(binary, dir.path.join("docker-registry")).unwrap();

        let name = format!("api-test-registry-{}", unique());
        let mut create = vec!["create".to_owned(), "--name".to_owned(), name.clone()];
        create.extend(labels());
        create.extend(["--publish".to_owned(), "127.0.0.1::5000".to_owned()]);
        if engine_host() != "127.0.0.1" {
            create.extend(["--publish".to_owned(), format!("{}::5000", engine_host())]);
        }
        create.extend(
            [
                base_image().as_str(),
                "/registry/docker-registry",
                "serve",
                "/registry/config.yml",
            ]
            .map(str::to_owned),
        );
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        read(&mut docker(&create));
        let mut registry = Registry {
            address: String::new(),
            http_address: String::new(),
            user,
            password,
            container: name,
        };
        let copy_from = format!("{}/.", dir.path.display());
        let copy_to = format!("{}:/registry", registry.container);
        read(&mut docker(&["cp", &copy_from, &copy_to]));
        read(&mut docker(&["start", &registry.container]));
        registry.address = published(&registry.container, "5000/tcp", "127.0.0.1");
        registry.http_address = published(&registry.container, "5000/tcp", engine_host());
        // Up when it answers /v2/ (401: it asks for the password).
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&registry.http_address, "/v2/", None).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start:\n{}",
                registry.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    pub fn credentials(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// The tags of a repository, as the registry lists them.
    pub fn tags(&self, repository: &str) -> String {
        let (status, body) = http_get(
            &self.http_address,
            &format!("/v2/{repository}/tags/list"),
            Some(&self.credentials()),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The registry's own answer for a tag's manifest: HEAD
    /// /v2/NAME/manifests/TAG with the manifest types docker pushes, and its
    /// Docker-Content-Digest header (distribution's registry/handlers/manifests.go).
    pub fn manifest_digest(&self, repository: &str, tag: &str) -> String {
        let accept = [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
        ]
        .join(", ");
        let response = http(
            "HEAD",
            &self.http_address,
            &format!("/v2/{repository}/manifests/{tag}"),
            Some(&self.credentials()),
            &[("Accept", &accept)],
        )
        .unwrap();
        assert_eq!(response.status, 200, "{:?}", response.headers);
        response
            .header("docker-content-digest")
            .unwrap_or_else(|| panic!("no Docker-Content-Digest in {:?}", response.headers))
            .to_owned()
    }

    pub fn logs(&self) -> String {
        run(&mut docker(&["logs", &self.container])).both()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", "--volumes", &self.container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The builder base image the Dockerfile names (`ARG RUST_IMAGE=`).
pub fn base_image() -> String {
    read(
        Command::new("sed")
            .args(["-n", "s/^ARG RUST_IMAGE=//p", "Dockerfile"])
            .current_dir(root()),
    )
}

/// A temporary folder under the test target dir, removed when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("package-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
fn the_engine_host_is_the_host_of_a_tcp_docker_host() {
    assert_eq!(engine_host_of("").unwrap(), "127.0.0.1");
    assert_eq!(
        engine_host_of("unix:///var/run/docker.sock").unwrap(),
        "127.0.0.1"
    );
    assert_eq!(
        engine_host_of("tcp://172.17.0.1:2375").unwrap(),
        "172.17.0.1"
    );
    assert_eq!(engine_host_of("tcp://localhost:2375").unwrap(), "127.0.0.1");
    let refused = engine_host_of("ssh://user@host").unwrap_err();
    assert!(refused.contains("tcp://HOST:PORT"), "{refused}");
}

#[test]
fn base64_encodes_as_rfc4648() {
    assert_eq!(crate::support::base64("user:pass"), "dXNlcjpwYXNz");
    assert_eq!(crate::support::base64("a"), "YQ==");
    assert_eq!(crate::support::base64("ab"), "YWI=");
}
