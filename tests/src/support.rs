//! Fixtures: a Docker connection, the agent image, container settings pointed at a fake
//! model, and a guard that removes every container a test created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use loop_runner::spec::{AgentUser, Auth, ChannelTarget, ContainerSettings};
use loop_runner::{ContainerRegistry, DockerRunner};

/// Whether a developer asked to skip tests whose service is missing.
pub fn skip_unavailable() -> bool {
    std::env::var("LOOP_TEST_SKIP_UNAVAILABLE").is_ok_and(|v| v == "1")
}

/// The agent image the tests run (`LOOP_TEST_IMAGE`, default `loop-agent:latest`).
pub fn test_image() -> String {
    std::env::var("LOOP_TEST_IMAGE").unwrap_or_else(|_| "loop-agent:latest".to_owned())
}

/// Docker plus the agent image, or `None` when the developer opted out of tests that need them.
pub async fn docker() -> Option<Docker> {
    match loop_runner::docker::connect().await {
        Ok(docker) => {
            let image = test_image();
            match loop_runner::docker::image_exists(&docker, &image).await {
                Ok(true) => Some(docker),
                _ if skip_unavailable() => {
                    eprintln!("skipping: image {image} is not built");
                    None
                }
                other => panic!(
                    "agent image {image} is missing ({other:?}): run `loop image build` (CI's .ci/run does), or set LOOP_TEST_SKIP_UNAVAILABLE=1"
                ),
            }
        }
        Err(err) if skip_unavailable() => {
            eprintln!("skipping: {err}");
            None
        }
        Err(err) => panic!(
            "Docker is required for this test ({err}); .ci/run starts dockerd, or set LOOP_TEST_SKIP_UNAVAILABLE=1"
        ),
    }
}

/// A unique daemon id per test: the registry only sees that test's containers, and the guard
/// removes exactly them.
pub struct TestRig {
    pub docker: Docker,
    pub daemon_id: String,
    pub registry: ContainerRegistry,
    pub runner: DockerRunner,
    pub dir: tempfile::TempDir,
}

/// uid/gid the agent runs as in these tests: the owner of the project dir.
pub const AGENT_UID: u32 = 1000;

impl TestRig {
    pub async fn new() -> Option<TestRig> {
        let docker = docker().await?;
        let daemon_id = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let registry = ContainerRegistry::new(docker.clone(), daemon_id.clone());
        let runner = DockerRunner::new(registry.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        // The agent runs unprivileged: let it traverse to the project.
        make_traversable(dir.path());
        Some(TestRig {
            docker,
            daemon_id,
            registry,
            runner,
            dir,
        })
    }

    /// A project directory owned by the agent uid, as a real user's checkout would be.
    pub fn project(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("project dir");
        chown(&path, AGENT_UID, AGENT_UID);
        path
    }

    /// Settings pointing the CLI at `model_url` (reachable from containers).
    pub fn settings(&self, model_url: &str, work_dir: &Path) -> ContainerSettings {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut envs = BTreeMap::new();
        envs.insert(
            "ANTHROPIC_BASE_URL".to_owned(),
            serde_json::json!(model_url),
        );
        envs.insert(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            serde_json::json!("1"),
        );
        ContainerSettings {
            image: test_image(),
            memory_mb: 1024,
            cpus: 1.0,
            timeout: Duration::from_secs(120),
            runtime: None,
            mounts: Vec::new(),
            copy_files: vec!["~/.claude.json".to_owned()],
            envs,
            extra_dirs: Vec::new(),
            mcp_servers: BTreeMap::new(),
            keep_mcp_configs: false,
            memory_enabled: false,
            api_url: "http://host.docker.internal:1".to_owned(),
            auth: Auth::ApiKey("sk-test-not-a-real-key".to_owned()),
            claude_bin: "claude".to_owned(),
            model: None,
            agent: AgentUser::for_host("root", 0, 0, &home, work_dir),
            timezone: "UTC".to_owned(),
            host_proxy_env: BTreeMap::new(),
            git_excludes_file: None,
            network: None,
            daemon_id: self.daemon_id.clone(),
            sessions_dir: Some(self.dir.path().join("sessions")),
            gate: None,
            docker_proxy: None,
            protected_dirs: Vec::new(),
            run_dir: self.dir.path().join("run"),
            api_token: None,
            setup: Vec::new(),
            project_env: BTreeMap::new(),
        }
    }

    pub fn target(&self, channel: &str, work_dir: &Path) -> ChannelTarget {
        ChannelTarget {
            channel_id: channel.to_owned(),
            work_dir: work_dir.to_path_buf(),
            custom_dir: true,
            parent_dir: None,
            git_common_dir: None,
            author_id: Some("U-test".to_owned()),
        }
    }

    /// Removes every container this test created.
    pub async fn cleanup(&self) {
        let _ = self.registry.cleanup().await;
        self.registry.shutdown().await;
    }
}

impl Drop for TestRig {
    fn drop(&mut self) {
        // Best effort when a test panicked before `cleanup`: remove by label with the CLI,
        // which needs no runtime.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=loop-daemon={} | xargs -r docker rm -f >/dev/null 2>&1",
                self.daemon_id
            ))
            .status();
    }
}

/// The address containers use to reach a server bound on the host.
pub fn container_url(port: u16) -> String {
    format!("http://host.docker.internal:{port}")
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

fn make_traversable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut current = Some(path);
    while let Some(dir) = current {
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ =
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711));
            }
        }
        current = dir.parent();
    }
}

/// The scripted fake model, listening on every interface of this machine so containers reach
/// it through the Docker bridge (`container_url(model.port())`).
pub async fn start_model(script: loop_fakes::model::Script) -> loop_fakes::model::FakeModel {
    loop_fakes::model::FakeModel::start_on(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), script)
        .await
        .expect("fake model starts")
}

/// A temp dir the unprivileged agent can traverse, with a project owned by the agent uid.
pub fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).expect("project");
    chown(&project, AGENT_UID, AGENT_UID);
    (dir, project)
}

/// The default bridge's gateway (docker0): a host address that containers on the internal
/// network have no route to.
pub async fn bridge_ip(docker: &bollard::Docker) -> String {
    let network = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("inspect bridge");
    let config = network
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().next())
        .expect("bridge ipam");
    if let Some(gateway) = config.gateway {
        return gateway;
    }
    let subnet = config.subnet.expect("bridge subnet");
    let base: std::net::Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("subnet address");
    std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
}

/// A one-line HTTP server on `ip` that counts its connections: nobody may reach it.
pub async fn other_server(ip: &str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind other server");
    let port = listener.local_addr().expect("addr").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nother-secret")
                .await;
        }
    });
    (port, hits)
}

/// An HTTP server on `ip` answering every request with `200` and `body`; counts the requests.
/// It reads each request head before answering, so a client never sees its request reset.
pub async fn page_server(
    ip: &str,
    body: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|err| panic!("bind a page server on {ip}: {err}"));
    let port = listener.local_addr().expect("addr").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, hits)
}
