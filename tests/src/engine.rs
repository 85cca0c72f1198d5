//! A private Docker engine for tests that kill the engine: its own `dockerd` (which starts its
//! own containerd), data and exec roots, socket and bridge, so that killing it touches nobody
//! else's containers. The agent image is loaded into it from a `docker save` tarball cached in
//! `$LOOP_TEST_CACHE` (CI sets it to its cache directory) and keyed by the image id, so a
//! machine pays for the export once per image.
//!
//! Needs root, `dockerd` and `ip` (iproute2). The engine's containers reach the host at the
//! gateway of its own bridge (`host.docker.internal`), like on the default engine's `docker0`;
//! it touches no iptables rules.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::support::skip_unavailable;

/// How long a (re)started dockerd may take to answer: at start it stops the containers the
/// previous process left running, waiting up to 10 s for each to exit on SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// One private dockerd and everything it owns; dropping it kills and removes all of it.
pub struct PrivateEngine {
    /// Short, under `/tmp`: the sockets inside must fit a unix socket path.
    root: tempfile::TempDir,
    bridge: String,
    gateway: Ipv4Addr,
    dockerd: Option<Child>,
}

/// A process that belongs to a private engine (dockerd, containerd, a container's shim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineProcess {
    pub pid: u32,
    pub command: String,
}

impl PrivateEngine {
    /// Starts a private engine, or `None` when it cannot run here and the developer opted out
    /// of unavailable services (`LOOP_TEST_SKIP_UNAVAILABLE=1`).
    pub async fn start() -> Option<PrivateEngine> {
        let missing = if !nix::unistd::Uid::effective().is_root() {
            Some("root")
        } else if !on_path("dockerd") {
            Some("dockerd")
        } else if !on_path("ip") {
            Some("ip (iproute2)")
        } else {
            None
        };
        if let Some(missing) = missing {
            assert!(
                skip_unavailable(),
                "a private Docker engine needs {missing} (.ci/run runs as root with docker.io and iproute2); set LOOP_TEST_SKIP_UNAVAILABLE=1 to skip"
            );
            eprintln!("skipping: a private Docker engine needs {missing}");
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("lpe")
            .tempdir_in("/tmp")
            .expect("engine root");
        std::fs::write(root.path().join("daemon.json"), "{}").expect("engine config");
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let bridge = format!("lpe{suffix}");
        let gateway = free_subnet_gateway();
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        let mut engine = PrivateEngine {
            root,
            bridge,
            gateway,
            dockerd: None,
        };
        ip(&[
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &engine.bridge,
        ]);
        ip(&["link", "set", &engine.bridge, "up"]);
        engine.start_dockerd().await;
        Some(engine)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `DOCKER_HOST` for clients of this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// The host address the engine's containers reach the host at.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The dockerd log (both of its lives).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
    }

    /// A client of this engine, with the API version negotiated.
    pub async fn client(&self) -> Docker {
        let socket = self.path("docker.sock");
        let docker = Docker::connect_with_unix(
            &socket.display().to_string(),
            30,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("private engine client");
        docker.negotiate_version().await.expect("negotiate version")
    }

    /// Starts dockerd on the engine's roots (again, after [`PrivateEngine::kill_9`]) and waits
    /// until it answers.
    pub async fn start_dockerd(&mut self) {
        assert!(self.dockerd.is_none(), "dockerd is already running");
        self.remove_stale_pidfiles();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .expect("dockerd log");
        let root = self.root.path();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("--host")
            .arg(self.docker_host())
            .arg("--bridge")
            .arg(&self.bridge)
            .args(["--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn dockerd");
        self.dockerd = Some(child);
        let socket = self.path("docker.sock").display().to_string();
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            // The socket of a killed dockerd stays behind: only an answer counts.
            if let Ok(docker) = Docker::connect_with_unix(&socket, 5, bollard::API_DEFAULT_VERSION)
                && docker.ping().await.is_ok()
            {
                return;
            }
            if let Some(child) = self.dockerd.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("dockerd exited with {status}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the private dockerd did not answer:\n{}", self.log_text());
    }

    /// Deletes the pid files of a killed dockerd and its containerd whose pid now belongs to
    /// another process. dockerd 20.10 trusts a pid file whose pid is alive: after a pid
    /// wrap-around (32768 pids go fast on a busy machine) it waits for a "still running"
    /// containerd that is some other program, times out and exits.
    fn remove_stale_pidfiles(&self) {
        let root = self.root.path().display().to_string();
        for file in ["docker.pid", "exec/containerd/containerd.pid"] {
            let path = self.path(file);
            let Ok(pid) = std::fs::read_to_string(&path) else {
                continue;
            };
            let command = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
                .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                .unwrap_or_default();
            if !command.contains(&root) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// SIGKILL to dockerd: no cleanup, exactly a crash of the engine.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Loads `image` from the shared engine (through the cached tarball).
    pub fn load_image(&self, image: &str) {
        let tarball = cached_image_tarball(image);
        let output = Command::new("docker")
            .args(["--host", &self.docker_host(), "load", "--input"])
            .arg(&tarball)
            .output()
            .expect("docker load");
        assert!(
            output.status.success(),
            "cannot load {}: {}",
            tarball.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The processes that belong to this engine: dockerd, its containerd, container shims
    /// (each names the engine's roots on its command line). Zombies show no command line and
    /// are not counted: their parent's reaping is not the engine's business.
    pub fn processes(&self) -> Vec<EngineProcess> {
        let root = self.root.path().display().to_string();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let command = String::from_utf8_lossy(&raw).replace('\0', " ");
            if command.contains(&root) {
                found.push(EngineProcess {
                    pid,
                    command: command.trim().to_owned(),
                });
            }
        }
        found.sort_by_key(|p| p.pid);
        found
    }

    /// Mount points under the engine's roots (overlay layers, network namespaces, the data
    /// root itself), deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let root = self.root.path();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = text
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|point| PathBuf::from(point.replace("\\040", " ")))
            .filter(|point| point.starts_with(root))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        mounts.dedup();
        mounts
    }

    /// Stops the engine the way an operator would (containers removed, then SIGTERM to
    /// dockerd) and returns the processes still alive afterwards; [`Drop`] kills those.
    pub async fn stop(&mut self) -> Vec<EngineProcess> {
        if self.dockerd.is_some() {
            let docker = self.client().await;
            let all = docker
                .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                    all: true,
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            for id in all.into_iter().filter_map(|c| c.id) {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
        }
        if let Some(mut child) = self.dockerd.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        // containerd exits after dockerd; give it a moment to do so on its own.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.processes().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.processes()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.kill_9();
        for process in self.processes() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(process.pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        for mount in self.mounts() {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&mount)
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // The TempDir removes the roots.
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A /24 in 10.213.0.0/16 that no interface of this machine uses yet; returns its first
/// address (the bridge's, the containers' gateway).
fn free_subnet_gateway() -> Ipv4Addr {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip addr");
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    // Start somewhere random so that two test processes rarely race for the same subnet.
    let start = uuid::Uuid::new_v4().as_bytes()[0];
    (0..=u8::MAX)
        .map(|i| start.wrapping_add(i))
        .filter(|n| *n != 0 && *n != 255)
        .find(|n| !used.contains(&format!("10.213.{n}.")))
        .map(|n| Ipv4Addr::new(10, 213, n, 1))
        .expect("a free subnet in 10.213.0.0/16")
}

/// Where test fixtures keep what is worth keeping between runs.
fn cache_dir() -> PathBuf {
    std::env::var_os("LOOP_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("loop-test-cache"))
}

/// `docker save` of `image` from the shared engine, cached by image id; older exports of the
/// agent image are deleted when a new one is written.
fn cached_image_tarball(image: &str) -> PathBuf {
    let inspect = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("docker image inspect");
    assert!(
        inspect.status.success(),
        "image {image} is missing from the shared engine: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let id = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    let short: String = id.trim_start_matches("sha256:").chars().take(16).collect();
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("test cache dir");
    let tarball = dir.join(format!("agent-image-{short}.tar"));
    if tarball.exists() {
        return tarball;
    }
    let partial = dir.join(format!("agent-image-{short}.tar.{}", std::process::id()));
    let saved = Command::new("docker")
        .args(["save", "--output"])
        .arg(&partial)
        .arg(image)
        .output()
        .expect("docker save");
    assert!(
        saved.status.success(),
        "docker save {image}: {}",
        String::from_utf8_lossy(&saved.stderr)
    );
    std::fs::rename(&partial, &tarball).expect("publish the image tarball");
    remove_other_exports(&dir, &tarball);
    tarball
}

fn remove_other_exports(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path != keep && name.starts_with("agent-image-") && name.ends_with(".tar") {
            let _ = std::fs::remove_file(path);
        }
    }
}
