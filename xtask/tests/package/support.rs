//! What the package tests share: running `cargo xtask`, the Docker engine
//! gate, the one image build they all use, containers and a real registry
//! that are always removed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The workspace root: the build context and the checkout the image is made from.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The built `cargo xtask`, with none of the variables that would change what
/// `package` resolves, so each test sets exactly what it means to.
pub fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for key in [
        "API_IMAGE",
        "API_IMAGE_TAG",
        "API_VERSION",
        "CI_REGISTRY_IMAGE",
        "CI_COMMIT_SHA",
        "CI_PROJECT_URL",
        "CI_REGISTRY",
        "CI_REGISTRY_USER",
        "CI_REGISTRY_PASSWORD",
        "SOURCE_DATE_EPOCH",
        "GIT_DIR",
        "GIT_WORK_TREE",
    ] {
        cmd.env_remove(key);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command said, as text.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut Command) -> Ran {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Ran {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a command that must succeed and returns its trimmed stdout.
pub fn read(cmd: &mut Command) -> String {
    let ran = run(cmd);
    assert!(ran.ok, "{cmd:?} failed:\n{}", ran.stderr);
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

/// Whether a test that needs `what` can run: yes when `present`; when not, a
/// failure under CI (CI must run every test) and a skip, saying why, elsewhere.
pub fn needs(what: &str, present: bool, how: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this test must run, but {what} is missing: {how}");
    }
    eprintln!("skipped: {what} is missing ({how}); in CI this is a failure");
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The docker CLI, for tests that stop before the engine is asked.
pub fn needs_docker_cli() -> bool {
    needs(
        "the docker CLI",
        on_path("docker"),
        "apt-get install docker.io",
    )
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
        if !version.ok {
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
    match made.ok {
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
        assert!(ran.ok, "cargo xtask package failed:\n{}", ran.stderr);
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
    /// loopback port.
    pub fn start(image: &str, extra: &[&str]) -> Container {
        let mut args = vec!["run", "--detach", "--publish", "127.0.0.1::8080"];
        args.extend(extra);
        args.push(image);
        Container {
            id: read(&mut docker(&args)),
        }
    }

    pub fn inspect(&self, format: &str) -> String {
        read(&mut docker(&["inspect", "--format", format, &self.id]))
    }

    /// The loopback address its port 8080 is published on.
    pub fn address(&self) -> String {
        let port = read(&mut docker(&["port", &self.id, "8080/tcp"]));
        // `127.0.0.1:49153`, possibly followed by an IPv6 line.
        port.lines().next().unwrap().to_owned()
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

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A minimal HTTP/1.1 GET over loopback: status and body.
pub fn http_get(
    address: &str,
    path: &str,
    basic_auth: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = basic_auth
        .map(|credentials| format!("Authorization: Basic {}\r\n", base64(credentials)))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no complete response: {raw:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A real registry (Debian's `docker-registry`, the CNCF distribution
/// registry) on a free loopback port, with one htpasswd user; stopped and
/// its storage removed when dropped. The engine treats 127.0.0.0/8 as an
/// insecure registry, so plain HTTP is fine here.
pub struct Registry {
    pub address: String,
    pub user: &'static str,
    pub password: &'static str,
    process: Child,
    /// Its storage, configuration and log, removed with it.
    _dir: TempDir,
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

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
             http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n",
            data = dir.path.join("data").display(),
            htpasswd = dir.path.join("htpasswd").display(),
        );
        std::fs::write(dir.path.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path.join("registry.log")).unwrap();
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            address,
            user,
            password,
            process,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(&registry.address, "/v2/", None).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The tags of a repository, as the registry lists them.
    pub fn tags(&self, repository: &str) -> String {
        let credentials = format!("{}:{}", self.user, self.password);
        let (status, body) = http_get(
            &self.address,
            &format!("/v2/{repository}/tags/list"),
            Some(&credentials),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
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
fn base64_encodes_as_rfc4648() {
    assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
    assert_eq!(base64("a"), "YQ==");
    assert_eq!(base64("ab"), "YWI=");
}
