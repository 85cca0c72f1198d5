//! Warm threads: follow-ups in an active thread reuse the thread's container and `claude`
//! process; every failure of a warm agent falls back to a cold `--resume` without losing or
//! repeating a message. Real `loop serve`, real dockerd, real CLI, fake model.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::docker;
use loop_fakes::model::{FakeModel, Rule, Script, Session, Step};
use loop_store::{InboxStatus, RunRecord, RunStatus};

/// A CPU-bound job left running in the background after the command returns (bounded, in
/// case the container outlives the test).
const BURN: &str = "nohup timeout 60 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo burning";

/// Answers every prompt with "answer to: PROMPT", except a request to work on the notes (the
/// realistic session in a project), a question about them (read by relative path), a reminder
/// (a task scheduled through loop's MCP tools) and a `touch` the gate holds for a person.
async fn start_model() -> FakeModel {
    let script = Script::new()
        .rule(Rule::contains("add the notes").session(&Session::default()))
        .rule(
            Rule::contains("what do the notes say")
                .then(Step::bash("cat NOTES.md"))
                .then(Step::text("They say: {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("remind me")
                .then(Step::tool_use(
                    "mcp__loop__schedule_task",
                    serde_json::json!({"schedule": "0 9 1 1 *", "prompt": "the new year check", "name": "yearly"}),
                ))
                .then(Step::text("{{last_tool_result}}")),
        )
        .rule(
            Rule::contains("touch yes")
                .then(Step::bash("touch gate-approval-yes; echo \"yes_rc=$?\""))
                .then(Step::text("YES {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("burn some cpu")
                .then(Step::bash(BURN))
                .then(Step::text("left it {{last_tool_result}}")),
        )
        .rule(Rule::any().then(Step::text("answer to: {{prompt}}")));
    FakeModel::start_on(SocketAddr::from(([0, 0, 0, 0], 0)), script)
        .await
        .expect("fake model")
}

fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Posts a message to a local channel and waits for its run; returns the run.
async fn ask(daemon: &Daemon, channel: &str, text: &str) -> RunRecord {
    ask_in(daemon, channel, None, text).await
}

/// [`ask`], pointing the channel at `dir` first when given (as `loop run --dir` does).
async fn ask_in(daemon: &Daemon, channel: &str, dir: Option<&Path>, text: &str) -> RunRecord {
    let client = reqwest::Client::new();
    let mut body = serde_json::json!({"channel": channel, "text": text});
    if let Some(dir) = dir {
        body["dir"] = serde_json::json!(dir.display().to_string());
    }
    let response = client
        .post(daemon.url("/api/local/messages"))
        .bearer_auth(daemon.token())
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    let inbox_id = body["inbox_id"].as_i64().expect("stored");
    let store = daemon.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let message = store.inbox_message(inbox_id).await.expect("message");
        if message.status == InboxStatus::Done || message.status == InboxStatus::Failed {
            let run = store
                .run(message.run_id.as_deref().expect("run id"))
                .await
                .expect("run");
            assert_eq!(
                run.status,
                RunStatus::Succeeded,
                "{run:?}\n{}",
                daemon.log_text()
            );
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to {text:?}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running_containers(daemon_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=loop-daemon={daemon_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The records of the CLI's transcript of `session` (`{session}.jsonl`, one JSON object a
/// line), which the daemon keeps under `~/.loop/sessions` for `--resume`.
fn session_transcript(daemon: &Daemon, session: &str) -> Vec<serde_json::Value> {
    let name = format!("{session}.jsonl");
    let mut pending = vec![daemon.loop_dir.join("sessions")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n == name.as_str()) {
                let text = std::fs::read_to_string(&path).expect("transcript");
                return text
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect();
            }
        }
    }
    panic!("no transcript {name} under {}", daemon.loop_dir.display());
}

fn daemon_id(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.loop_dir.join("daemon-id"))
        .expect("daemon id")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_ups_reuse_one_container_and_one_session() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    let project = Project::create(&dir.path().join("project"), GitOwner::Agent);
    let runs = [
        ask_in(&daemon, "warm", Some(&project.dir), "please add the notes").await,
        ask(&daemon, "warm", "what do the notes say?").await,
        ask(&daemon, "warm", "third").await,
        ask(&daemon, "warm", "fourth").await,
    ];
    let worktree = project.check_thread(runs[0].answer.as_deref().unwrap_or_default(), &model);
    // The warm agent's follow-up runs in the thread's worktree too: the relative path finds
    // the notes.
    assert_eq!(
        runs[1].answer.as_deref().map(str::trim_end),
        Some(format!("They say: {}", Session::default().new_content.trim_end()).as_str())
    );
    for (run, word) in runs[2..].iter().zip(["third", "fourth"]) {
        assert_eq!(
            run.answer.as_deref(),
            Some(format!("answer to: {word}").as_str())
        );
    }
    let container = runs[0].container_id.clone();
    assert!(container.is_some());
    assert!(
        runs.iter().all(|r| r.container_id == container),
        "one container: {runs:?}"
    );
    let session = runs[0].claude_session_id.clone();
    assert!(
        runs.iter().all(|r| r.claude_session_id == session),
        "one session: {runs:?}"
    );
    // The CLI's own record of the session (kept on the host for `--resume`) says every
    // turn, the warm ones included, ran in the thread's worktree of the project.
    let transcript = session_transcript(&daemon, session.as_deref().expect("session id"));
    let cwds: Vec<&str> = transcript
        .iter()
        .filter_map(|record| record["cwd"].as_str())
        .collect();
    let recorded = |prompt: &str| {
        transcript
            .iter()
            .any(|record| record["type"] == "user" && record.to_string().contains(prompt))
    };
    assert!(
        recorded("what do the notes say") && recorded("fourth"),
        "the warm turns are in the transcript"
    );
    assert!(
        !cwds.is_empty() && cwds.iter().all(|cwd| Path::new(cwd) == worktree),
        "the session's working directories: {cwds:?}"
    );
    // The agent is still up, idle, and shown by the status endpoint.
    let status = daemon.status().await;
    let warm: Vec<&serde_json::Value> = status["warm"]
        .as_array()
        .expect("warm list")
        .iter()
        .filter(|agent| agent["spare"] != true)
        .collect();
    assert_eq!(warm.len(), 1, "{status}");
    assert_eq!(warm[0]["channel"], "local-warm");
    assert!(
        warm[0]["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{status}"
    );
    model.shutdown().await;
}

/// The CPU rate the overview's row for `what` (a warm agent's thread, a container's name)
/// shows, as a person reads it ("87 %"); `None` when the row or the rate is missing.
fn cpu_in_overview(html: &str, what: &str) -> Option<f64> {
    let row = html
        .split("<tr")
        .find(|row| row.contains(&format!(">{what}</")))?;
    let cell = row.split(r#"data-label="CPU""#).nth(1)?;
    let end = cell.find(" %")?;
    let start = cell[..end].rfind('>')? + 1;
    cell[start..end].parse().ok()
}

/// A warm agent whose turn left a CPU-bound job running shows about a core busy in
/// `loop status` and in the dashboard's overview (its warm-agent row and its container's row);
/// an idle warm agent shows next to nothing. Both show the CPU time used so far.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_overview_show_the_cpu_a_warm_agent_burns() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    ask(&daemon, "calm", "hello").await;
    let busy = ask(&daemon, "busy", "please burn some cpu").await;
    assert_eq!(busy.answer.as_deref(), Some("left it burning"));

    // `loop status` until the calm agent has settled (its CLI still writes the session for a
    // moment after the turn) while the busy one burns on.
    let percent = |agent: &serde_json::Value| agent["cpu_percent"].as_f64();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (burning, calm) = loop {
        let out = daemon.cli(&["status"]);
        assert!(out.status.success(), "{out:?}");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        let agent = |channel: &str| {
            status["warm"]
                .as_array()
                .and_then(|warm| warm.iter().find(|a| a["channel"] == channel))
                .cloned()
                .unwrap_or_else(|| panic!("no warm agent for {channel}: {status}"))
        };
        let (burning, calm) = (agent("local-busy"), agent("local-calm"));
        // The busy agent's container in the container list, with the same reading.
        let container = status["containers"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == burning["container"]))
            .cloned()
            .unwrap_or_else(|| panic!("the busy agent's container is not listed: {status}"));
        println!(
            "loop status: busy agent {:?} % of a core (its container {:?} %), calm agent {:?} %",
            percent(&burning),
            percent(&container),
            percent(&calm)
        );
        if percent(&burning).is_some_and(|p| p > 25.0)
            && percent(&container).is_some_and(|p| p > 25.0)
            && percent(&calm).is_some_and(|p| p < 5.0)
        {
            break (burning, calm);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the busy agent's rate should be well above zero, the calm one's near it: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for agent in [&burning, &calm] {
        assert!(
            agent["cpu_usec"].as_u64().is_some_and(|usec| usec > 0),
            "the CPU time so far: {agent}"
        );
    }

    // The overview as a person's browser gets it, with the same rates on its rows (asked
    // again if the calm agent stirred in between).
    let cookie = daemon.log_in().await;
    let container = burning["container"].as_str().expect("container name");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = reqwest::Client::new()
            .get(daemon.url("/ui/"))
            .header("cookie", format!("loop_ui={cookie}"))
            .send()
            .await
            .expect("the overview");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("the overview's HTML");
        let shown = [
            cpu_in_overview(&html, "local-busy"),
            cpu_in_overview(&html, container),
            cpu_in_overview(&html, "local-calm"),
        ];
        println!("overview: busy agent, its container, calm agent: {shown:?} % of a core");
        if shown[..2].iter().all(|p| p.is_some_and(|p| p > 25.0))
            && shown[2].is_some_and(|p| p < 5.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overview's rates: {shown:?}\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_agent_is_retired_and_the_next_message_is_answered_cold() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 2"),
    )
    .await;
    let first = ask(&daemon, "idle", "one").await;
    let id = daemon_id(&daemon);
    assert_eq!(running_containers(&id).len(), 1, "warm after the turn");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !running_containers(&id).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle agent was never retired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = ask(&daemon, "idle", "two").await;
    assert_eq!(second.answer.as_deref(), Some("answer to: two"));
    assert_ne!(
        second.container_id, first.container_id,
        "a new (cold) container"
    );
    assert_eq!(
        second.claude_session_id, first.claude_session_id,
        "the session resumed"
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_killed_between_turns_falls_back_to_cold_once() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    let first = ask(&daemon, "killed", "before").await;
    let container = first.container_id.clone().expect("container");
    Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    let second = ask(&daemon, "killed", "after").await;
    assert_eq!(second.answer.as_deref(), Some("answer to: after"));
    assert_ne!(second.container_id.as_deref(), Some(container.as_str()));
    assert_eq!(second.claude_session_id, first.claude_session_id);
    let store = daemon.store().await;
    let runs = store.channel_runs("local:killed").await.expect("runs");
    assert_eq!(runs.len(), 2, "answered once: {runs:?}");
    model.shutdown().await;
}

/// A warm agent whose container stops while idle (killed here; out of memory or an engine
/// restart alike) leaves `loop status` within seconds, and its container is removed, instead
/// of being listed as warm until its idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_agent_whose_container_dies_while_idle_leaves_the_status_and_its_container_goes() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    let first = ask(&daemon, "dies", "before").await;
    let container = first.container_id.clone().expect("container");
    let warm_channels = || async {
        daemon.status().await["warm"]
            .as_array()
            .expect("warm list")
            .iter()
            .filter_map(|agent| agent["channel"].as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    assert_eq!(warm_channels().await, ["local-dies"]);
    Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let gone = Command::new("docker")
            .args(["inspect", &container])
            .output()
            .is_ok_and(|out| !out.status.success());
        if warm_channels().await.is_empty() && gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead agent is still listed, or its container is left:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = ask(&daemon, "dies", "after").await;
    assert_eq!(second.answer.as_deref(), Some("answer to: after"));
    assert_eq!(second.claude_session_id, first.claude_session_id);
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_warm_slot_the_older_thread_is_evicted_and_both_keep_working() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(
            model.port(),
            dir.path(),
            "\"warm_idle_sec\": 600, \"max_warm_threads\": 1",
        ),
    )
    .await;
    let a1 = ask(&daemon, "thread-a", "a1").await;
    let b1 = ask(&daemon, "thread-b", "b1").await;
    let id = daemon_id(&daemon);
    let running = running_containers(&id);
    assert_eq!(running.len(), 1, "only one warm agent: {running:?}");
    assert_eq!(
        Some(running[0].clone()),
        b1.container_id,
        "the newer thread stays warm"
    );
    let a2 = ask(&daemon, "thread-a", "a2").await;
    assert_eq!(a2.answer.as_deref(), Some("answer to: a2"));
    assert_ne!(
        a2.container_id, a1.container_id,
        "thread a was evicted, so it ran cold"
    );
    assert_eq!(a2.claude_session_id, a1.claude_session_id);
    let b2 = ask(&daemon, "thread-b", "b2").await;
    assert_eq!(b2.answer.as_deref(), Some("answer to: b2"));
    assert_eq!(b2.claude_session_id, b1.claude_session_id);
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_9_with_warm_agents_no_orphan_remains_and_threads_answer() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let mut daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    let x1 = ask(&daemon, "crash-x", "x1").await;
    let y1 = ask(&daemon, "crash-y", "y1").await;
    let id = daemon_id(&daemon);
    assert_eq!(running_containers(&id).len(), 2);
    daemon.kill_9();
    daemon.restart().await;
    let left: Vec<String> = running_containers(&id)
        .into_iter()
        .filter(|c| Some(c) == x1.container_id.as_ref() || Some(c) == y1.container_id.as_ref())
        .collect();
    assert!(left.is_empty(), "orphans of the killed daemon: {left:?}");
    let x2 = ask(&daemon, "crash-x", "x2").await;
    let y2 = ask(&daemon, "crash-y", "y2").await;
    assert_eq!(x2.answer.as_deref(), Some("answer to: x2"));
    assert_eq!(y2.answer.as_deref(), Some("answer to: y2"));
    assert_eq!(x2.claude_session_id, x1.claude_session_id);
    assert_eq!(y2.claude_session_id, y1.claude_session_id);
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn under_gvisor_warm_follow_ups_work_and_the_gate_is_refused_clearly() {
    let Some(docker) = docker().await else {
        return;
    };
    let info = loop_runner::docker::engine_info(&docker)
        .await
        .expect("docker info");
    if !info.runtimes.iter().any(|r| r == "runsc") {
        eprintln!(
            "SKIPPED: the runsc runtime is not registered with dockerd ({:?})",
            info.runtimes
        );
        return;
    }
    let dir = home();
    let model = start_model().await;
    // The gate needs seccomp user notification, which gVisor lacks: a clear refusal.
    let gated = Daemon::start(
        &dir.path().join("gated"),
        &test_config(model.port(), dir.path(), "\"container_runtime\": \"runsc\""),
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(gated.url("/api/local/messages"))
        .bearer_auth(gated.token())
        .json(&serde_json::json!({"channel": "gvisor", "text": "hello"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let store = gated.store().await;
    loop_e2e::daemon::eventually(&gated, "the refusal", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            store
                .channel_runs("local:gvisor")
                .await
                .expect("runs")
                .first()
                .is_some_and(|r| r.error.as_deref() == Some("gate unsupported under gVisor"))
        }
    })
    .await;
    drop(gated);
    // Without the gate, gVisor runs the agent and keeps it warm between turns.
    let daemon = Daemon::start(
        &dir.path().join("plain"),
        &test_config(
            model.port(),
            dir.path(),
            "\"container_runtime\": \"runsc\", \"warm_idle_sec\": 600, \"gates\": {\"agentgate\": {\"enabled\": false}}",
        ),
    )
    .await;
    let first = ask(&daemon, "gvisor", "one").await;
    let second = ask(&daemon, "gvisor", "two").await;
    assert_eq!(second.answer.as_deref(), Some("answer to: two"));
    assert_eq!(
        first.container_id, second.container_id,
        "the follow-up reused the gVisor agent"
    );
    model.shutdown().await;
}

/// Waits for `loop status` to show a spare agent other than `except`; returns its container's
/// name and its work directory.
async fn wait_for_spare(daemon: &Daemon, except: Option<&str>) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = daemon.status().await;
        let spare = status["warm"].as_array().and_then(|warm| {
            warm.iter()
                .find(|a| a["spare"] == true && a["container"].as_str() != except)
                .cloned()
        });
        if let Some(spare) = spare {
            return (
                spare["container"].as_str().expect("name").to_owned(),
                spare["work_dir"].as_str().expect("work dir").to_owned(),
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no spare agent: {status}\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn container_name(id: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.Name}}", id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_thread_of_a_recent_project_starts_on_its_spare_agent() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let gates = serde_json::json!({"agentgate": {"command_rules": [{
        "commands": ["touch"],
        "args_patterns": ["gate-approval"],
        "decision": "approve",
        "message": "touching needs a person"
    }]}});
    let mut daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(
            model.port(),
            dir.path(),
            &format!("\"warm_idle_sec\": 600, \"gates\": {gates}"),
        ),
    )
    .await;
    let project = Project::create(&dir.path().join("project"), GitOwner::Agent);

    // A first thread works in the project; loop then starts a spare for the next one: its
    // own worktree of the project, its container up.
    let first = ask_in(&daemon, "first", Some(&project.dir), "please add the notes").await;
    project.check_thread(first.answer.as_deref().unwrap_or_default(), &model);
    let (spare, spare_dir) = wait_for_spare(&daemon, None).await;
    let listed = loop_e2e::project::git_output(&project.dir, &["worktree", "list"]);
    assert!(
        listed.contains(&spare_dir),
        "the spare works in a worktree of the project: {spare_dir}\n{listed}"
    );

    // A second thread: its first turn runs on the spare, in the spare's worktree, now on the
    // thread's own branch; the work is committed there.
    let second = ask_in(
        &daemon,
        "second",
        Some(&project.dir),
        "please add the notes too",
    )
    .await;
    let answer = second.answer.as_deref().unwrap_or_default();
    let worktree = project.check_thread(answer, &model);
    assert_eq!(
        container_name(second.container_id.as_deref().expect("container")),
        spare,
        "the new thread's first turn ran on the spare agent\n{}",
        daemon.log_text()
    );
    assert_eq!(worktree.display().to_string(), spare_dir);
    let branch = loop_e2e::project::git_output(&worktree, &["branch", "--show-current"]);
    assert!(
        branch.starts_with("loop/please-add-the-notes-too") && !branch.contains("spare"),
        "the spare's branch took the thread's name: {branch}"
    );

    // Its follow-up resumes the session the spare's CLI started, in the same container.
    let follow_up = ask(&daemon, "second", "what do the notes say?").await;
    assert_eq!(follow_up.container_id, second.container_id);
    assert_eq!(follow_up.claude_session_id, second.claude_session_id);
    assert!(
        follow_up
            .answer
            .as_deref()
            .is_some_and(|a| a.starts_with("They say:")),
        "{follow_up:?}"
    );

    // The agent's tools act for the thread that adopted it, on behalf of who asked.
    let reminded = ask(&daemon, "second", "remind me in January").await;
    assert!(
        reminded
            .answer
            .as_deref()
            .is_some_and(|a| a.contains("yearly")),
        "{reminded:?}"
    );
    let tasks = daemon.store().await.tasks(None).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "{tasks:?} {reminded:?}");
    assert_eq!(tasks[0].channel_key, "local:second");
    assert_eq!(tasks[0].created_by.as_deref(), Some("local"));

    // The container goes away; the thread's next turn starts cold and resumes the session
    // the spare's CLI kept, now in the thread's own session store.
    let removed = Command::new("docker")
        .args([
            "rm",
            "-f",
            second.container_id.as_deref().expect("container"),
        ])
        .status()
        .expect("docker rm");
    assert!(removed.success());
    let cold = ask(&daemon, "second", "what do the notes say?").await;
    assert_ne!(cold.container_id, second.container_id);
    assert_eq!(
        cold.claude_session_id,
        second.claude_session_id,
        "the cold turn resumed the session\n{}",
        daemon.log_text()
    );
    assert!(
        cold.answer
            .as_deref()
            .is_some_and(|a| a.starts_with("They say:")),
        "{cold:?}"
    );

    // Another spare replaced it, with a branch of its own; the adopted one's placeholder
    // branch is gone.
    let (next, _) = wait_for_spare(&daemon, Some(&spare)).await;
    assert_ne!(next, spare);
    let spare_branches =
        loop_e2e::project::git_output(&project.dir, &["branch", "--list", "loop/spare-*"]);
    assert_eq!(
        spare_branches.lines().count(),
        1,
        "{spare_branches}\n{}",
        loop_e2e::project::git_output(&project.dir, &["branch", "-a"])
    );

    // A third thread's first turn needs a person's approval: the prompt is the third
    // thread's, and once approved the command runs on the spare that thread adopted.
    let inbox = daemon.post_in("third", &project.dir, "touch yes").await;
    let approval = daemon.pending_approval("gate-approval-yes").await;
    assert_eq!(approval.channel_key, "local:third");
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        200
    );
    let answer = daemon.answer(inbox, Duration::from_secs(90)).await;
    assert!(answer.contains("yes_rc=0"), "{answer}");
    let store = daemon.store().await;
    let run_id = store
        .inbox_message(inbox)
        .await
        .expect("message")
        .run_id
        .expect("run");
    let third = store.run(&run_id).await.expect("run");
    assert_eq!(
        container_name(third.container_id.as_deref().expect("container")),
        next
    );
    wait_for_spare(&daemon, Some(&next)).await;

    // When the daemon stops, the unclaimed spare's worktree and branch go with it.
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    let spare_branches =
        loop_e2e::project::git_output(&project.dir, &["branch", "--list", "loop/spare-*"]);
    assert_eq!(spare_branches, "", "the spare's branch is left");
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_plain_directory_a_new_channel_takes_the_spare_and_follow_ups_leave_it() {
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    // A directory that is not a repository: the spare works in it directly.
    let project = dir.path().join("notes");
    std::fs::create_dir_all(&project).expect("project");
    std::fs::write(project.join("NOTES.md"), "shared notes\n").expect("notes");
    let a1 = ask_in(&daemon, "plain-a", Some(&project), "what do the notes say?").await;
    assert_eq!(a1.answer.as_deref(), Some("They say: shared notes"));
    let (spare, spare_dir) = wait_for_spare(&daemon, None).await;
    assert_eq!(spare_dir, project.display().to_string());

    // Channel a's follow-up is no new thread: the spare stays as it is.
    let a2 = ask(&daemon, "plain-a", "a2").await;
    assert_eq!(a2.claude_session_id, a1.claude_session_id);
    let (still, _) = wait_for_spare(&daemon, None).await;
    assert_eq!(still, spare, "a follow-up left the spare alone");

    // A new channel in the directory starts on it, in a session of its own.
    let b1 = ask_in(&daemon, "plain-b", Some(&project), "what do the notes say?").await;
    assert_eq!(b1.answer.as_deref(), Some("They say: shared notes"));
    assert_eq!(
        container_name(b1.container_id.as_deref().expect("container")),
        spare
    );
    assert_ne!(b1.claude_session_id, a1.claude_session_id);
    let b2 = ask(&daemon, "plain-b", "b2").await;
    assert_eq!(b2.claude_session_id, b1.claude_session_id);
    assert_eq!(b2.container_id, b1.container_id);
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spare_cut_before_the_base_moved_is_retired_and_the_new_thread_starts_from_the_new_head()
{
    if docker().await.is_none() {
        return;
    }
    let dir = home();
    let model = start_model().await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), "\"warm_idle_sec\": 600"),
    )
    .await;
    let project = Project::create(&dir.path().join("project"), GitOwner::Agent);
    ask_in(&daemon, "before", Some(&project.dir), "hello").await;
    let (stale, _) = wait_for_spare(&daemon, None).await;

    // Someone pushes to main after the spare was cut.
    std::fs::write(project.dir.join("NOTES.md"), "pushed after the spare\n").expect("notes");
    project.commit("notes from a person");

    // The new thread works on the new head, in a container of its own.
    let after = ask_in(
        &daemon,
        "after",
        Some(&project.dir),
        "what do the notes say?",
    )
    .await;
    assert_eq!(
        after.answer.as_deref(),
        Some("They say: pushed after the spare"),
        "{}",
        daemon.log_text()
    );
    assert_ne!(
        container_name(after.container_id.as_deref().expect("container")),
        stale
    );
    // The stale spare is gone, its worktree and branch with it; a fresh one takes its place.
    let (fresh, fresh_dir) = wait_for_spare(&daemon, Some(&stale)).await;
    assert_ne!(fresh, stale);
    let listed = loop_e2e::project::git_output(&project.dir, &["worktree", "list"]);
    assert_eq!(
        listed.lines().filter(|l| l.contains("spare")).count(),
        1,
        "{listed}"
    );
    assert!(listed.contains(&fresh_dir), "{listed}");
    model.shutdown().await;
}
