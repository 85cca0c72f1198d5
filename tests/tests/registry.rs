//! The container registry and the created container's configuration, against real Docker.

use std::process::Command;
use std::time::Duration;

use loop_e2e::support::{TestRig, container_url};
use loop_runner::{ContainerKind, ContainerRegistry, ContainerStatus};

fn docker_exec(id: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("exec")
        .arg(id)
        .args(args)
        .output()
        .expect("docker exec runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn shells_are_singletons_and_match_the_container_rules() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-shell");
    let mut settings = rig.settings(&container_url(9), &project);
    let home = settings.agent.home.clone();
    std::fs::write(home.join(".claude.json"), "{\"copied\": true}").expect("claude.json");
    settings.mounts = vec![
        "loop-e2e-cache:~/.cache/e2e".into(),
        "~/.absent:~/.absent".into(),
    ];
    settings.envs.insert("NUMBER".into(), serde_json::json!(7));
    let target = rig.target("C-shell", &project);

    // Concurrent callers for one channel get one container.
    let (a, b, c) = tokio::join!(
        rig.runner.ensure_shell(&settings, &target),
        rig.runner.ensure_shell(&settings, &target),
        rig.runner.ensure_shell(&settings, &target),
    );
    let (a, b, c) = (a.expect("shell"), b.expect("shell"), c.expect("shell"));
    assert_eq!(a.id, b.id);
    assert_eq!(b.id, c.id);
    assert_eq!(a.kind, ContainerKind::Shell);

    let info = rig
        .docker
        .inspect_container(&a.id, None)
        .await
        .expect("inspect");
    let config = info.config.expect("config");
    let env = config.env.unwrap_or_default();
    let has = |kv: &str| env.iter().any(|e| e == kv);
    assert!(has("CHANNEL_ID=C-shell"), "{env:?}");
    assert!(has(&format!("HOME={}", home.display())));
    assert!(has("NUMBER=7"));
    assert!(has("ANTHROPIC_API_KEY=sk-test-not-a-real-key"));
    let labels = config.labels.unwrap_or_default();
    assert_eq!(labels["app"], "loop-agent");
    assert_eq!(labels["loop-type"], "shell");
    assert_eq!(labels["loop-channel"], "C-shell");
    let host = info.host_config.expect("host config");
    let binds = host.binds.unwrap_or_default();
    let p = project.display().to_string();
    assert!(binds.contains(&format!("{p}:{p}")), "{binds:?}");
    assert!(binds.contains(&format!("loop-e2e-cache:{}/.cache/e2e", home.display())));
    assert!(!binds.iter().any(|b| b.contains(".absent")));
    assert_eq!(
        host.extra_hosts.unwrap_or_default(),
        vec!["host.docker.internal:host-gateway".to_owned()]
    );
    // The copied file is the container's own copy, and the MCP config is visible at its path.
    let copied = docker_exec(
        &a.id,
        &["cat", &home.join(".claude.json").display().to_string()],
    );
    assert_eq!(copied, "{\"copied\": true}");
    let mcp = docker_exec(&a.id, &["cat", "/etc/loop/mcp.json"]);
    assert!(mcp.contains("\"loop\""), "{mcp}");
    assert!(
        !project.join(".loop").exists(),
        "loop writes none of its own files into the project"
    );
    // A shell (what `docker exec` gets too) starts in the project.
    assert_eq!(docker_exec(&a.id, &["pwd"]).trim(), p);
    // The container's main process runs as the unprivileged agent (docker exec would be root).
    let whoami = docker_exec(
        &a.id,
        &["sh", "-c", "awk '/^Uid/{print $2}' /proc/1/status"],
    );
    assert_eq!(whoami.trim(), "1000");

    // A restarted daemon finds its live containers.
    let restarted = ContainerRegistry::new(rig.docker.clone(), rig.daemon_id.clone());
    assert_eq!(restarted.restore().await.expect("restore"), 1);
    assert_eq!(restarted.list()[0].id, a.id);

    // A container removed behind loop's back is dropped by reconcile.
    let mut events = restarted.subscribe();
    Command::new("docker")
        .args(["rm", "-f", &a.id])
        .output()
        .expect("docker rm");
    restarted
        .reconcile_once(Duration::from_secs(1))
        .await
        .expect("reconcile");
    assert!(restarted.get(&a.id).is_none());
    let event = events.try_recv().expect("removal event");
    assert!(
        matches!(event, loop_runner::RegistryEvent::Removed { .. }),
        "{event:?}"
    );

    // Cleanup removes every container of this daemon.
    let again = rig
        .runner
        .ensure_shell(&settings, &rig.target("C-other", &project))
        .await
        .expect("shell");
    assert_eq!(again.status, ContainerStatus::Running);
    assert_eq!(rig.registry.cleanup().await.expect("cleanup"), 1);
    assert!(
        rig.registry
            .docker_containers()
            .await
            .expect("list")
            .is_empty()
    );
    rig.cleanup().await;
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", "loop-e2e-cache"])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_removal_fires_and_re_registering_cancels_it() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-delay");
    let settings = rig.settings(&container_url(9), &project);
    let kept = rig
        .runner
        .ensure_shell(&settings, &rig.target("C-keep", &project))
        .await
        .expect("shell");
    let gone = rig
        .runner
        .ensure_shell(&settings, &rig.target("C-gone", &project))
        .await
        .expect("shell");
    rig.registry
        .schedule_remove(&kept.id, Duration::from_millis(300));
    rig.registry
        .schedule_remove(&gone.id, Duration::from_millis(300));
    assert_eq!(
        rig.registry.get(&kept.id).expect("entry").status,
        ContainerStatus::PendingRemoval
    );
    // Re-registering (e.g. the container was restarted) cancels the pending removal.
    rig.registry.register(kept.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rig.registry.get(&gone.id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduled removal never fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = rig
        .registry
        .docker_containers()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        ids,
        vec![kept.id.clone()],
        "only the re-registered container is left"
    );
    rig.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_files_go_with_their_container_and_leftovers_are_swept() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-run-files");
    let settings = rig.settings(&container_url(9), &project);
    let shell = rig
        .runner
        .ensure_shell(&settings, &rig.target("C-run-files", &project))
        .await
        .expect("shell");
    let run_dir = rig.dir.path().join("run");
    let registry =
        ContainerRegistry::new(rig.docker.clone(), rig.daemon_id.clone()).with_run_dir(&run_dir);
    let files = |name: &str| {
        let dir = run_dir.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("gate-policy.json"), "{}").expect("file");
        dir
    };
    let live = files(&shell.name);
    let leftover = files("loop-killed-daemon-0a1b2c");
    let foreign = files("not-a-loop-container");
    // At start: the directory of a container that no longer exists goes; the rest stays.
    assert_eq!(registry.sweep_run_dir().await, 1);
    assert!(!leftover.exists());
    assert!(live.exists() && foreign.exists());
    // Removing a container removes its policy files.
    registry.remove_now(&shell.id).await.expect("remove");
    assert!(!live.exists(), "the policy files went with the container");
    assert!(foreign.exists(), "never anything that is not loop's");
    rig.cleanup().await;
}
