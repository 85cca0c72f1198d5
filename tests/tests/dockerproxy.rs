//! The docker proxy (`loop dockerproxy`) against the real Docker daemon.
//!
//! - In process: the proxy's server on a temp socket in front of the host's daemon, driven by
//!   bollard (a real Docker client: version negotiation, attach and exec upgrades, streamed
//!   logs) and a raw hyper connection (keep-alive, size limits).
//! - End to end: a real `loop serve`, a real agent container whose entrypoint starts the proxy,
//!   and the Claude CLI (driven by the scripted fake model) running a node client against
//!   `/var/run/docker.sock` inside the container; once with the proxy alone, once with the
//!   seccomp gate on as well, once with egress control on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, TagImageOptions, WaitContainerOptions,
};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::support::{bridge_ip, docker, other_server, start_model, test_image, workspace};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_gate::dockerproxy::server::{Proxy, bind, serve};
use loop_gate::dockerproxy::{OWNER_LABEL, ProxyPolicy, ProxyPolicyFile};
use loop_gate::wire::{ApprovalDecision, ApprovalRequest, AuditOutcome, AuditRecord, GateAction};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const NESTED_IMAGE: &str = "debian:bookworm-slim";
/// A label on containers the tests create themselves, so a failed test leaves nothing behind.
const TEST_LABEL: &str = "loop-e2e-dockerproxy";

/// Removes every container carrying `label` (best effort; also on panic).
struct LabelGuard(String);

impl Drop for LabelGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label={} | xargs -r docker rm -f >/dev/null 2>&1",
                self.0
            ))
            .status();
    }
}

/// A container on the real daemon, created without the proxy.
async fn foreign_container(docker: &Docker, tag: &str) -> String {
    let created = docker
        .create_container(
            None::<CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(NESTED_IMAGE.to_owned()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                labels: Some(HashMap::from([(TEST_LABEL.to_owned(), tag.to_owned())])),
                ..Default::default()
            },
        )
        .await
        .expect("create the foreign container");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start the foreign container");
    created.id
}

/// What the proxy asked and recorded.
#[derive(Default)]
struct Observed {
    approvals: Mutex<Vec<ApprovalRequest>>,
    audit: Mutex<Vec<AuditRecord>>,
}

fn status_of(err: &bollard::errors::Error) -> (u16, String) {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => (*status_code, message.clone()),
        other => (0, other.to_string()),
    }
}

async fn collect_output(
    mut stream: impl futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
) -> String {
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text
}

/// Removes volumes (best effort; also on panic).
struct VolumeGuard(Vec<String>);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        for volume in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", volume])
                .output();
        }
    }
}

/// Removes images (best effort; also on panic).
struct ImageGuard(Vec<String>);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .output();
        }
    }
}

/// Builds `dockerfile` (the whole context) as `tag` with the legacy builder.
async fn build(docker: &Docker, tag: &str, dockerfile: &str) -> Result<(), (u16, String)> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .expect("tar");
    let context = archive.into_inner().expect("tar");
    let options = bollard::query_parameters::BuildImageOptions {
        dockerfile: "Dockerfile".to_owned(),
        t: Some(tag.to_owned()),
        rm: true,
        version: bollard::query_parameters::BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    return Err((0, error));
                }
            }
            Err(err) => return Err(status_of(&err)),
        }
    }
    Ok(())
}

/// One HTTP/1.1 request on an open connection; returns status and body.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<hyper::body::Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    sender.ready().await.expect("connection ready");
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker")
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_client_gets_what_the_policy_allows_and_nothing_else() {
    let Some(host) = docker().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let owner = format!("e2e-proxy-{}", &run[..12]);
    let _guard_owned = LabelGuard(format!("{OWNER_LABEL}={owner}"));
    let _guard_test = LabelGuard(format!("{TEST_LABEL}={run}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let work = work.canonicalize().expect("canonical");

    let policy: ProxyPolicyFile = serde_json::from_value(serde_json::json!({
        "http_rules": [
            {"methods": ["POST"], "paths": ["/containers/*/pause"], "decision": "approve", "message": "pausing needs a person"},
            {"methods": ["POST"], "paths": ["/containers/*/unpause"], "decision": "deny", "message": "no unpausing here"}
        ],
        "context": {
            "owner": owner,
            "channel": "e2e-proxy",
            "daemon": format!("e2e-proxy-d-{run}"),
            "allowed_paths": [work.display().to_string()],
            "protected_images": [test_image()]
        }
    }))
    .expect("policy");
    let policy = ProxyPolicy::compile(&policy).expect("compiles");
    let observed = Arc::new(Observed::default());
    let approver = {
        let observed = observed.clone();
        move |request: &ApprovalRequest| {
            observed
                .approvals
                .lock()
                .expect("lock")
                .push(request.clone());
            ApprovalDecision::AllowSession
        }
    };
    let sink = {
        let observed = observed.clone();
        move |record: AuditRecord| observed.audit.lock().expect("lock").push(record)
    };
    struct Sink<F>(F);
    impl<F: Fn(AuditRecord) + Send + Sync + 'static> loop_gate::notify::AuditSink for Sink<F> {
        fn record(&self, record: AuditRecord) {
            (self.0)(record);
        }
    }
    let proxy = Arc::new(Proxy::new(
        policy,
        "/var/run/docker.sock".into(),
        "e2e-proxy".into(),
        Arc::new(approver),
        Some(Arc::new(Sink(sink))),
        4,
    ));
    let socket = dir.path().join("proxy.sock");
    let listener = bind(&socket).expect("bind");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(proxy, vec![listener], shutdown.clone()));

    let client = Docker::connect_with_unix(
        &socket.display().to_string(),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("client")
    .negotiate_version()
    .await
    .expect("version negotiation through the proxy");
    let version = client.version().await.expect("version");
    assert!(version.api_version.is_some());
    client.ping().await.expect("ping");

    // Baseline denies come back as the daemon's errors, with the reason.
    let create = |host_config: HostConfig, cmd: Vec<&str>| ContainerCreateBody {
        image: Some(NESTED_IMAGE.to_owned()),
        cmd: Some(cmd.into_iter().map(str::to_owned).collect()),
        host_config: Some(host_config),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let privileged = client
        .create_container(
            None::<CreateContainerOptions>,
            create(
                HostConfig {
                    privileged: Some(true),
                    ..Default::default()
                },
                vec!["true"],
            ),
        )
        .await
        .expect_err("privileged is denied");
    let (status, message) = status_of(&privileged);
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("loop docker proxy: privileged containers are not allowed"),
        "{message}"
    );
    let etc = client
        .create_container(
            None::<CreateContainerOptions>,
            create(
                HostConfig {
                    binds: Some(vec!["/etc:/host-etc".into()]),
                    ..Default::default()
                },
                vec!["true"],
            ),
        )
        .await
        .expect_err("a bind of /etc is denied");
    assert_eq!(status_of(&etc).0, 403);
    assert!(status_of(&etc).1.contains("/etc"), "{etc}");

    // An owned container with the work dir bound: attach (an upgraded connection, stdin
    // half-closed), start, wait; it writes a file the host sees.
    let bind = format!("{0}:{0}", work.display());
    let script = format!(
        "cat; echo from-nested > {}/nested.txt; echo written",
        work.display()
    );
    let owned = client
        .create_container(
            None::<CreateContainerOptions>,
            create(
                HostConfig {
                    binds: Some(vec![bind.clone()]),
                    ..Default::default()
                },
                vec!["sh", "-c", &script],
            ),
        )
        .await
        .expect("an owned container")
        .id;
    let mut attached = client
        .attach_container(
            &owned,
            Some(AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .await
        .expect("attach through the proxy");
    client.start_container(&owned, None).await.expect("start");
    attached
        .input
        .write_all(b"through-the-upgrade\n")
        .await
        .expect("stdin");
    attached.input.shutdown().await.expect("close stdin");
    let output = tokio::time::timeout(Duration::from_secs(60), collect_output(attached.output))
        .await
        .expect("the attach stream ends");
    assert!(output.contains("through-the-upgrade"), "{output}");
    assert!(output.contains("written"), "{output}");
    let waited = client
        .wait_container(&owned, None::<WaitContainerOptions>)
        .next()
        .await
        .expect("a wait result")
        .expect("exit 0");
    assert_eq!(waited.status_code, 0);
    assert_eq!(
        std::fs::read_to_string(work.join("nested.txt")).expect("the host sees the file"),
        "from-nested\n"
    );
    let info = host
        .inspect_container(&owned, None)
        .await
        .expect("inspect on the host");
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get(OWNER_LABEL), Some(&owner), "the proxy labels it");
    let host_config = info.host_config.expect("host config");
    assert!(
        host_config
            .cap_drop
            .unwrap_or_default()
            .contains(&"MKNOD".to_owned())
    );

    // A long-running owned container: logs stream while it runs; exec works (another upgrade).
    let streaming = client
        .create_container(
            None::<CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(NESTED_IMAGE.to_owned()),
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    "echo first-line; sleep 300".into(),
                ]),
                ..Default::default()
            },
        )
        .await
        .expect("create")
        .id;
    client
        .start_container(&streaming, None)
        .await
        .expect("start");
    let mut logs = client.logs(
        &streaming,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            ..Default::default()
        }),
    );
    let first = tokio::time::timeout(Duration::from_secs(30), logs.next())
        .await
        .expect("a log line arrives while the container still runs")
        .expect("a chunk")
        .expect("ok");
    assert!(
        String::from_utf8_lossy(&first.into_bytes()).contains("first-line"),
        "streamed logs"
    );
    drop(logs);
    let exec = client
        .create_exec(
            &streaming,
            ExecConfig {
                cmd: Some(vec!["echo".into(), "exec-ran".into()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("exec create on an owned container");
    match client.start_exec(&exec.id, None).await.expect("exec start") {
        bollard::exec::StartExecResults::Attached { output, .. } => {
            let text = collect_output(output).await;
            assert!(text.contains("exec-ran"), "{text}");
        }
        bollard::exec::StartExecResults::Detached => panic!("attached exec expected"),
    }
    let privileged_exec = client
        .create_exec(
            &streaming,
            ExecConfig {
                cmd: Some(vec!["true".into()]),
                privileged: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect_err("privileged exec");
    assert_eq!(status_of(&privileged_exec).0, 403);

    // Approvals: asked once, then covered for the session; a deny rule answers 403.
    client
        .pause_container(&streaming)
        .await
        .expect("pause, approved");
    let unpause = client
        .unpause_container(&streaming)
        .await
        .expect_err("unpause is denied by a rule");
    assert!(
        status_of(&unpause).1.contains("no unpausing here"),
        "{unpause}"
    );
    client
        .pause_container(&owned)
        .await
        .expect_err("a stopped container cannot be paused: but nobody is asked again");
    {
        let approvals = observed.approvals.lock().expect("lock");
        assert_eq!(approvals.len(), 1, "asked once for the session");
        assert_eq!(approvals[0].session_key, "docker:POST:/containers/*/pause");
        assert_eq!(
            approvals[0].message.as_deref(),
            Some("pausing needs a person")
        );
        assert!(
            matches!(&approvals[0].action, GateAction::Docker { method, path } if method == "POST" && path.ends_with("/pause")),
            "{:?}",
            approvals[0].action
        );
        assert!(approvals[0].summary.starts_with("docker POST /containers/"));
    }

    // Containers the proxy did not create are out of reach, and not listed.
    let foreign = foreign_container(&host, &run).await;
    for result in [
        client.inspect_container(&foreign, None).await.map(|_| ()),
        client.start_container(&foreign, None).await,
        client
            .create_exec(
                &foreign,
                ExecConfig {
                    cmd: Some(vec!["true".into()]),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        client
            .remove_container(
                &foreign,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await,
    ] {
        let err = result.expect_err("a foreign container is refused");
        assert_eq!(status_of(&err).0, 403, "{err}");
    }
    let listed = client
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .expect("list");
    let mut listed: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    listed.sort();
    let mut mine = vec![owned.clone(), streaming.clone()];
    mine.sort();
    assert_eq!(listed, mine, "only the agent's own containers are listed");

    // Named volumes: an unknown name is created for the channel; another's is refused.
    let mine = format!("e2e-proxy-vol-{}", &run[..12]);
    let theirs = format!("e2e-proxy-foreign-vol-{}", &run[..12]);
    let _volumes = VolumeGuard(vec![mine.clone(), theirs.clone()]);
    client
        .create_container(
            None::<CreateContainerOptions>,
            create(
                HostConfig {
                    binds: Some(vec![format!("{mine}:/v")]),
                    ..Default::default()
                },
                vec!["true"],
            ),
        )
        .await
        .expect("a container with a new named volume");
    let volume = host.inspect_volume(&mine).await.expect("the volume exists");
    assert_eq!(
        volume
            .labels
            .get("loop.dockerproxy.channel")
            .map(String::as_str),
        Some("e2e-proxy")
    );
    host.create_volume(bollard::models::VolumeCreateRequest {
        name: Some(theirs.clone()),
        ..Default::default()
    })
    .await
    .expect("a volume of someone else");
    let foreign_volume = client
        .create_container(
            None::<CreateContainerOptions>,
            create(
                HostConfig {
                    binds: Some(vec![format!("{theirs}:/v")]),
                    ..Default::default()
                },
                vec!["true"],
            ),
        )
        .await
        .expect_err("another's volume");
    assert_eq!(status_of(&foreign_volume).0, 403, "{foreign_volume}");

    // The agent image cannot be tagged over.
    let (repo, tag) = test_image()
        .split_once(':')
        .map(|(r, t)| (r.to_owned(), t.to_owned()))
        .unwrap_or((test_image(), "latest".to_owned()));
    let tagged = client
        .tag_image(
            NESTED_IMAGE,
            Some(TagImageOptions {
                repo: Some(repo),
                tag: Some(tag),
            }),
        )
        .await
        .expect_err("tagging over the agent image");
    assert_eq!(status_of(&tagged).0, 403);

    // Builds: a plain one works; a Dockerfile that would make the daemon fetch a URL from
    // the host's network, directly or through a base image's ONBUILD trigger, does not.
    let built = format!("e2e-proxy-built:{}", &run[..12]);
    let onbuild = format!("e2e-proxy-onbuild:{}", &run[..12]);
    let _images = ImageGuard(vec![built.clone(), onbuild.clone()]);
    let ok = build(
        &client,
        &built,
        "FROM debian:bookworm-slim\nRUN echo built-through-the-proxy\n",
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert!(host.inspect_image(&built).await.is_ok());
    let fetch = build(
        &client,
        &format!("{built}-bad"),
        "FROM debian:bookworm-slim\nADD http://169.254.169.254/latest/meta-data/ /m\n",
    )
    .await
    .expect_err("ADD <url>");
    assert_eq!(fetch.0, 403, "{}", fetch.1);
    assert!(
        fetch.1.contains("ADD `http://169.254.169.254"),
        "{}",
        fetch.1
    );
    // The ONBUILD base is built directly on the host (the proxy refuses ONBUILD).
    build(
        &host,
        &onbuild,
        "FROM debian:bookworm-slim\nONBUILD RUN true\n",
    )
    .await
    .expect("an ONBUILD base, built on the host");
    let triggered = build(
        &client,
        &format!("{built}-onbuild"),
        &format!("FROM {onbuild}\n"),
    )
    .await
    .expect_err("a base with triggers");
    assert_eq!(triggered.0, 403, "{}", triggered.1);
    assert!(triggered.1.contains("ONBUILD"), "{}", triggered.1);

    // One keep-alive connection: each request is checked on its own.
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(connection);
    assert_eq!(send(&mut sender, "GET", "/_ping", Vec::new()).await.0, 200);
    let denied = send(
        &mut sender,
        "POST",
        "/v1.41/containers/create",
        br#"{"Image": "debian:bookworm-slim", "HostConfig": {"pidmode": "host"}}"#.to_vec(),
    )
    .await;
    assert_eq!(denied.0, 403, "{}", denied.1);
    assert!(denied.1.contains("loop docker proxy"), "{}", denied.1);
    assert_eq!(
        send(&mut sender, "GET", "/v1.41/version", Vec::new())
            .await
            .0,
        200
    );
    assert_eq!(
        send(&mut sender, "GET", "/system/df", Vec::new()).await.0,
        403
    );
    // Old APIs read a HostConfig from the start body; no start body passes.
    let start_body = send(
        &mut sender,
        "POST",
        &format!("/containers/{owned}/start"),
        br#"{"HostConfig": {"Privileged": true}}"#.to_vec(),
    )
    .await;
    assert_eq!(start_body.0, 403, "{}", start_body.1);
    assert_eq!(
        send(
            &mut sender,
            "GET",
            "/containers/no-such-container-here/json",
            Vec::new()
        )
        .await
        .0,
        404
    );
    // Last on the connection: the proxy stops reading an oversized body and answers.
    let huge = format!(
        r#"{{"Image": "x", "Env": ["{}"]}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    assert_eq!(
        send(&mut sender, "POST", "/containers/create", huge.into_bytes())
            .await
            .0,
        413
    );
    drop(sender);
    let _ = driver.await;

    // The decisions reached the audit sink.
    {
        let audit = observed.audit.lock().expect("lock");
        let outcome = |rule: &str| {
            audit
                .iter()
                .filter(|r| r.rule.as_deref() == Some(rule))
                .map(|r| r.outcome)
                .collect::<Vec<_>>()
        };
        assert!(outcome("baseline.privileged").contains(&AuditOutcome::Denied));
        assert!(outcome("baseline.ownership").contains(&AuditOutcome::Denied));
        assert!(outcome("http_rules[0]").contains(&AuditOutcome::ApprovedForSession));
        assert!(outcome("http_rules[0]").contains(&AuditOutcome::AllowedBySession));
        assert!(outcome("http_rules[1]").contains(&AuditOutcome::Denied));
        assert!(
            audit
                .iter()
                .all(|r| r.syscall == "docker" && r.channel_id == "e2e-proxy")
        );
    }

    // The runner's removal of an agent takes what it created through the proxy.
    let registry = loop_runner::ContainerRegistry::new(host.clone(), format!("e2e-proxy-{run}"));
    registry.remove_proxy_owned(&owner).await;
    let left = host
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{OWNER_LABEL}={owner}")],
            )])),
            ..Default::default()
        }))
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    assert!(
        host.inspect_container(&foreign, None).await.is_ok(),
        "someone else's container stays"
    );

    shutdown.cancel();
    server
        .await
        .expect("server task")
        .expect("server stopped cleanly");
}

/// Writes the node client into the project, where the agent runs it by its relative path,
/// `node dockerproxy-client.js`.
fn install_client(project: &Path) {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/dockerproxy-client.js"
    );
    std::fs::copy(source, project.join("dockerproxy-client.js")).expect("copy the client");
}

/// A model that runs `command` when asked to "use docker" and answers `DOCKER <its output>`.
async fn docker_model(command: &str) -> FakeModel {
    start_model(
        Script::new().rule(
            Rule::contains("use docker")
                .then(Step::bash(command))
                .then(Step::text("DOCKER {{last_tool_result}}")),
        ),
    )
    .await
}

/// `name=value` lines of the client's output.
fn steps(text: &str) -> HashMap<String, String> {
    let text = text.strip_prefix("DOCKER ").unwrap_or(text);
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, value) = line.split_once('=')?;
            (!name.contains(' ')).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Asserts the client's steps that do not depend on the gate.
fn check_common_steps(text: &str, steps: &HashMap<String, String>) {
    let step = |name: &str| steps.get(name).map(String::as_str).unwrap_or_default();
    assert!(step("version").starts_with("200 "), "{text}");
    assert!(
        step("privileged").starts_with("403 loop docker proxy: privileged"),
        "{text}"
    );
    assert!(
        step("bind_etc").starts_with("403 loop docker proxy:"),
        "{text}"
    );
    assert!(step("create").starts_with("201"), "{text}");
    assert!(
        step("wait").starts_with("200") && step("wait").contains("\"StatusCode\":0"),
        "{text}"
    );
    assert_eq!(step("logs"), "200 has-output", "{text}");
    assert!(
        step("foreign_exec").starts_with("403 loop docker proxy: container"),
        "{text}"
    );
    assert_eq!(step("list"), "200 count=1 foreign=false", "{text}");
    assert!(
        step("tag_protected").starts_with("403 loop docker proxy:"),
        "{text}"
    );
    assert!(
        step("host_socket").starts_with("error EACCES"),
        "the host's socket is out of the agent's reach: {text}"
    );
    assert_eq!(
        step("token"),
        "absent",
        "the agent never sees the approval token: {text}"
    );
    assert_eq!(
        step("docker_host"),
        "unix:///run/loop/docker.sock",
        "{text}"
    );
}

/// Containers the proxy created for this daemon, running or not.
async fn owned_by_daemon(host: &Docker, daemon: &Daemon) -> Vec<String> {
    let id = daemon.daemon_id().expect("daemon id").to_owned();
    host.list_containers(Some(ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("loop.dockerproxy.daemon={id}")],
        )])),
        ..Default::default()
    }))
    .await
    .expect("list")
    .into_iter()
    .filter_map(|c| c.id)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_uses_docker_through_its_proxy_and_a_person_approves_a_start() {
    let Some(host) = docker().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let _guard = LabelGuard(format!("{TEST_LABEL}={run}"));
    let foreign = foreign_container(&host, &run).await;
    let (dir, project) = workspace();
    install_client(&project);
    // The bind mount needs the project's absolute path: the model takes it from the working
    // directory the CLI's system prompt names.
    let command = format!(
        "WORK={{{{cwd}}}} FOREIGN={foreign} PROTECTED={} node dockerproxy-client.js 2>&1",
        test_image(),
    );
    let model = docker_model(&command).await;
    let home = dir.path().join("home");
    let config = test_config(
        model.port(),
        dir.path(),
        r#""warm_idle_sec": 0,
  "gates": {
    "agentgate": {"enabled": false, "approval_timeout_sec": 120},
    "docker_proxy": {"enabled": true, "http_rules": [
      {"methods": ["POST"], "paths": ["/containers/*/start"], "decision": "approve", "message": "starting needs a person"}
    ]}
  }"#,
    );
    let daemon = Daemon::start(&home, &config).await;
    let _daemon_guard = LabelGuard(format!(
        "loop.dockerproxy.daemon={}",
        daemon.daemon_id().expect("daemon id")
    ));

    let inbox = daemon.post_in("proxy-only", &project, "use docker").await;
    // The start waits for a person: the prompt names the docker call.
    let approval = daemon.pending_approval("docker POST /containers/").await;
    assert!(approval.summary.contains("/start"), "{}", approval.summary);
    assert_eq!(approval.channel_key, "local:proxy-only");
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        200
    );
    let text = daemon.answer(inbox, Duration::from_secs(240)).await;
    assert!(text.starts_with("DOCKER "), "{text}\n{}", daemon.log_text());
    let steps = steps(&text);
    check_common_steps(&text, &steps);
    assert_eq!(steps.get("start").map(|s| s.trim()), Some("204"), "{text}");
    assert_eq!(
        std::fs::read_to_string(project.join("nested.txt")).expect("the nested container wrote"),
        "from-nested\n"
    );

    // The turn's container is gone, and so is what it created; the foreign one stays.
    assert!(
        owned_by_daemon(&host, &daemon).await.is_empty(),
        "owned containers are removed with the agent"
    );
    assert!(host.inspect_container(&foreign, None).await.is_ok());

    // The proxy's denies and the person's answer are in the host's audit log.
    let store = daemon.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let audit = store.gate_audit(100).await.expect("audit");
        let docker: Vec<_> = audit.iter().filter(|e| e.syscall == "docker").collect();
        let has = |rule: &str, verdict: &str, source: &str| {
            docker.iter().any(|e| {
                e.rule.as_deref() == Some(rule) && e.verdict == verdict && e.source == source
            })
        };
        if has("baseline.privileged", "deny", "policy")
            && has("baseline.ownership", "deny", "policy")
            && has("http_rules[0]", "allow", "person")
        {
            assert!(
                docker
                    .iter()
                    .any(|e| e.detail.starts_with("docker POST /containers/create")),
                "{docker:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy's decisions never reached the audit log: {docker:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let printed = daemon.cli(&["audit", "--limit", "50"]);
    assert!(
        String::from_utf8_lossy(&printed.stdout).contains("docker POST"),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_gate_on_the_agent_reaches_the_proxy_but_never_the_host_socket() {
    let Some(host) = docker().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let _guard = LabelGuard(format!("{TEST_LABEL}={run}"));
    let foreign = foreign_container(&host, &run).await;
    let (dir, project) = workspace();
    install_client(&project);
    // Through DOCKER_HOST's socket this time, plus a few raw probes of the sockets.
    let command = format!(
        "WORK={{{{cwd}}}} FOREIGN={foreign} PROTECTED={image} SOCK=/run/loop/docker.sock node dockerproxy-client.js 2>&1; \
         node -e \"require('http').get({{socketPath: '/var/run/docker.sock', path: '/_ping'}}, r => console.log('conventional=' + r.statusCode)).on('error', e => console.log('conventional=' + e.code))\"; \
         echo \"proxy_environ=$(cat /proc/$(pgrep -f 'loop dockerproxy' | head -n1)/environ >/dev/null 2>&1 && echo readable || echo unreadable)\"",
        image = test_image(),
    );
    let model = docker_model(&command).await;
    let home = dir.path().join("home");
    let config = test_config(
        model.port(),
        dir.path(),
        r#""gates": {"docker_proxy": {"enabled": true}}"#,
    );
    let mut daemon = Daemon::start(&home, &config).await;
    let _daemon_guard = LabelGuard(format!(
        "loop.dockerproxy.daemon={}",
        daemon.daemon_id().expect("daemon id")
    ));
    let inbox = daemon.post_in("proxy-gate", &project, "use docker").await;
    let text = daemon.answer(inbox, Duration::from_secs(240)).await;
    assert!(text.starts_with("DOCKER "), "{text}\n{}", daemon.log_text());
    let steps = steps(&text);
    check_common_steps(&text, &steps);
    assert_eq!(steps.get("start").map(|s| s.trim()), Some("204"), "{text}");
    assert_eq!(
        steps.get("conventional").map(String::as_str),
        Some("200"),
        "{text}"
    );
    assert_eq!(
        steps.get("proxy_environ").map(String::as_str),
        Some("unreadable"),
        "{text}"
    );
    assert!(project.join("nested.txt").exists());

    // The agent stays warm (with what it created) until the daemon stops; then both go.
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        owned_by_daemon(&host, &daemon).await.is_empty(),
        "a stopping daemon removes the agents and what they created"
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_egress_control_nested_containers_stay_on_the_internal_network() {
    let Some(host) = docker().await else {
        return;
    };
    let bridge = bridge_ip(&host).await;
    let (port, hits) = other_server(&bridge).await;
    let (dir, project) = workspace();
    install_client(&project);
    let command = format!("PROBE={bridge}:{port} node dockerproxy-client.js 2>&1");
    let model = docker_model(&command).await;
    // The model is addressed by the bridge IP, reached through the egress proxy (egress.rs).
    let config = test_config(
        model.port(),
        dir.path(),
        r#""gates": {
    "egress": {"enabled": true, "allowed_hosts": ["api.anthropic.com"]},
    "docker_proxy": {"enabled": true}
  }"#,
    )
    .replace(
        &format!("http://host.docker.internal:{}", model.port()),
        &format!("http://{bridge}:{}", model.port()),
    );
    let mut daemon = Daemon::start(&dir.path().join("home"), &config).await;
    let _daemon_guard = LabelGuard(format!(
        "loop.dockerproxy.daemon={}",
        daemon.daemon_id().expect("daemon id")
    ));
    let inbox = daemon.post_in("proxy-egress", &project, "use docker").await;
    let text = daemon.answer(inbox, Duration::from_secs(240)).await;
    assert!(text.starts_with("DOCKER "), "{text}\n{}", daemon.log_text());
    let steps = steps(&text);
    let step = |name: &str| steps.get(name).map(String::as_str).unwrap_or_default();

    // No network, `bridge`, `default`: all land on the internal network (the agent stays warm,
    // so they still exist), and none reaches the host's server.
    let network = loop_daemon::egress::NETWORK;
    for name in ["net_unset", "net_bridge", "net_default"] {
        let (id, probe) = step(name)
            .strip_prefix("201 ")
            .and_then(|s| s.split_once(' '))
            .unwrap_or_else(|| panic!("{name} was created: {text}"));
        assert_eq!(probe, "probe-closed", "{name}: {text}");
        let info = host.inspect_container(id, None).await.expect("inspect");
        let mode = info.host_config.and_then(|h| h.network_mode);
        assert_eq!(mode.as_deref(), Some(network), "{name}");
        let networks = info.network_settings.and_then(|n| n.networks);
        let joined: Vec<String> = networks.unwrap_or_default().into_keys().collect();
        assert_eq!(joined, [network], "{name}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "{text}");
    // The host network, another network, creating and connecting networks: refused.
    for name in ["net_host", "net_other", "network_create", "network_connect"] {
        assert!(
            step(name).starts_with("403 loop docker proxy:") && step(name).contains("egress"),
            "{name}: {text}"
        );
    }
    assert!(daemon.terminate().success());
    model.shutdown().await;
}
