//! The daemon end to end: a real `loop serve` process, the real CLI clients, real containers
//! running the real Claude Code CLI against the scripted fake model.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use loop_e2e::daemon::{Daemon, eventually, loop_binary, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{AGENT_UID, chown, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Session, Step};
use loop_store::{InboxStatus, RunStatus, Store};

/// `loop run --dir` in a person's checkout: the agent works there as in their own session
/// (relative paths, CLAUDE.md, git, the project's tests), and a follow-up resumes it.
#[tokio::test(flavor = "multi_thread")]
async fn loop_run_and_chat_edit_files_and_follow_ups_resume() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let chat_project = dir.path().join("chat-project");
    std::fs::create_dir_all(&chat_project).expect("chat project");
    chown(&chat_project, AGENT_UID, AGENT_UID);
    let script = Script::new()
        .rule(Rule::contains("add the notes").session(&Session::default()))
        .rule(
            Rule::contains("what did you create")
                .then(Step::bash("cat NOTES.md"))
                .then(Step::text("I created NOTES.md: {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("chat: touch")
                .then(Step::bash("touch from-chat"))
                .then(Step::text("touched it")),
        );
    let model = start_model(script).await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(&home, &test_config(model.port(), dir.path(), "")).await;
    let project_arg = project.dir.display().to_string();

    let first = daemon.cli(&["run", "--dir", &project_arg, "please add the notes"]);
    assert!(
        first.status.success(),
        "loop run failed: {}\n{}",
        String::from_utf8_lossy(&first.stderr),
        daemon.log_text()
    );
    project.check_thread(&String::from_utf8_lossy(&first.stdout), &model);

    let second = daemon.cli(&["run", "--dir", &project_arg, "what did you create?"]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        format!(
            "I created NOTES.md: {}",
            Session::default().new_content.trim_end()
        )
    );
    let last = model.requests().last().cloned().expect("requests");
    assert!(
        last.body_contains("please add the notes"),
        "the follow-up resumed the session"
    );

    // `loop chat` over stdin.
    let mut chat = Command::new(loop_binary())
        .args([
            "chat",
            "--channel",
            "chat-test",
            "--dir",
            &chat_project.display().to_string(),
        ])
        .env("LOOP_HOME", &daemon.loop_dir)
        .env("HOME", &daemon.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loop chat");
    chat.stdin
        .take()
        .expect("stdin")
        .write_all(b"chat: touch the file\n")
        .expect("write");
    let output = chat.wait_with_output().expect("chat output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("touched it"));
    assert!(chat_project.join("from-chat").exists());

    // A refused directory is explained and nothing runs.
    let refused = daemon.cli(&["run", "--dir", "/", "anything"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("outside the directories"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_messages_to_five_channels_are_each_answered_once_in_order() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(Script::always(Step::delay(
        400,
        Step::text("answer to: {{prompt}}"),
    )))
    .await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &test_config(model.port(), dir.path(), "\"max_concurrent_runs\": 5"),
    )
    .await;
    let client = reqwest::Client::new();
    let token = daemon.token();

    let mut senders = Vec::new();
    for c in 0..5 {
        let client = client.clone();
        let token = token.clone();
        let url = daemon.url("/api/local/messages");
        senders.push(tokio::spawn(async move {
            for m in 0..4 {
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"channel": format!("load-{c}"), "text": format!("ch{c}-msg{m}")}))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status(), 202);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    let store = daemon.store().await;
    let keys: Vec<String> = (0..5).map(|c| format!("local:load-{c}")).collect();
    eventually(
        &daemon,
        "all 20 messages answered",
        Duration::from_secs(240),
        || {
            let store = store.clone();
            let keys = keys.clone();
            async move {
                let mut done = 0;
                for key in &keys {
                    done += store
                        .channel_messages(key)
                        .await
                        .expect("messages")
                        .iter()
                        .filter(|m| m.status == InboxStatus::Done)
                        .count();
                }
                done == 20
            }
        },
    )
    .await;

    let mut spans: Vec<(String, i64, i64)> = Vec::new();
    for key in &keys {
        let messages = store.channel_messages(key).await.expect("messages");
        assert_eq!(messages.len(), 4, "{key}: none lost, none duplicated");
        let runs = store.channel_runs(key).await.expect("runs");
        assert!(
            runs.iter().all(|r| r.status == RunStatus::Succeeded),
            "{key}: {runs:?}"
        );
        // Messages are answered in order: each message's run is no earlier than the previous one's.
        let order: HashMap<&str, usize> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        let positions: Vec<usize> = messages
            .iter()
            .map(|m| order[m.run_id.as_deref().expect("claimed by a run")])
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] <= w[1]),
            "{key}: out of order {positions:?}"
        );
        // Every run's answer names its messages in order.
        for run in &runs {
            let answer = run.answer.clone().unwrap_or_default();
            let mine: Vec<&str> = messages
                .iter()
                .filter(|m| m.run_id.as_deref() == Some(run.id.as_str()))
                .map(|m| m.text.as_str())
                .collect();
            let mut at = 0;
            for text in mine {
                let found = answer[at..].find(text).unwrap_or_else(|| {
                    panic!("{key}: {text} missing or out of order in {answer:?}")
                });
                at += found + text.len();
            }
            spans.push((
                key.clone(),
                run.created_at,
                run.finished_at.expect("finished"),
            ));
        }
    }
    // Channels ran in parallel: some runs of different channels overlapped in time.
    let overlapped = spans
        .iter()
        .any(|a| spans.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(
        overlapped,
        "no two channels ran at the same time: {spans:?}"
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_mid_turn_is_answered_exactly_once_after_restart() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(
        Script::new()
            // The first attempt is slow enough to be killed mid-turn; the retry answers at once.
            .rule(
                Rule::contains("the slow job")
                    .times(1)
                    .then(Step::delay(60_000, Step::text("too late"))),
            )
            .rule(Rule::contains("the slow job").then(Step::text("slow job done"))),
    )
    .await;
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &test_config(model.port(), dir.path(), "")).await;
    let client = reqwest::Client::new();
    let response = client
        .post(daemon.url("/api/local/messages"))
        .bearer_auth(daemon.token())
        .json(&serde_json::json!({"channel": "crash", "text": "run the slow job", "message_id": "crash-1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let store = daemon.store().await;
    eventually(
        &daemon,
        "the turn to reach the model",
        Duration::from_secs(60),
        || {
            let model_requests = model.requests().len();
            async move { model_requests >= 1 }
        },
    )
    .await;
    let id = std::fs::read_to_string(daemon.loop_dir.join("daemon-id")).expect("daemon id");
    let containers_of = |id: &str| -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=loop-daemon={}", id.trim()),
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let before_crash = containers_of(&id);
    assert_eq!(before_crash.len(), 1, "the turn's container is running");
    daemon.kill_9();
    daemon.restart().await;

    eventually(
        &daemon,
        "the message to be answered after the restart",
        Duration::from_secs(120),
        || {
            let store = store.clone();
            async move {
                store
                    .channel_messages("local:crash")
                    .await
                    .expect("messages")
                    .iter()
                    .all(|m| m.status == InboxStatus::Done)
            }
        },
    )
    .await;
    let runs = store.channel_runs("local:crash").await.expect("runs");
    let statuses: Vec<RunStatus> = runs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![RunStatus::Interrupted, RunStatus::Succeeded]);
    assert_eq!(runs[1].answer.as_deref(), Some("slow job done"));
    assert_answers_sent(&store, "local:crash", 1).await;
    // Re-sending the same platform message id changes nothing.
    let again = client
        .post(daemon.url("/api/local/messages"))
        .bearer_auth(daemon.token())
        .json(&serde_json::json!({"channel": "crash", "text": "run the slow job", "message_id": "crash-1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(again.status(), 202);
    let body: serde_json::Value = again.json().await.expect("json");
    assert!(
        body["inbox_id"].is_null(),
        "a duplicate is not stored again: {body}"
    );
    // The interrupted turn's container is gone; an agent kept warm after the restart is the
    // new daemon's own.
    let after = containers_of(&id);
    assert!(
        before_crash.iter().all(|c| !after.contains(c)),
        "orphans of the killed daemon: {before_crash:?} still in {after:?}"
    );
    model.shutdown().await;
}

async fn assert_answers_sent(store: &Store, key: &str, expected: usize) {
    let runs = store.channel_runs(key).await.expect("runs");
    let answered = runs.iter().filter(|r| r.answer.is_some()).count();
    assert_eq!(answered, expected, "{runs:?}");
    assert!(
        store.pending_outbox().await.expect("outbox").is_empty(),
        "every answer was delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_api_refuses_bad_tokens_and_bad_input_and_changes_nothing() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(Script::echo()).await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(&home, &test_config(model.port(), dir.path(), "")).await;
    let client = reqwest::Client::new();
    let url = daemon.url("/api/local/messages");
    let good = serde_json::json!({"channel": "api", "text": "hello"});

    let no_token = client.post(&url).json(&good).send().await.expect("post");
    assert_eq!(no_token.status(), 401);
    let wrong = client
        .post(&url)
        .bearer_auth("0".repeat(64))
        .json(&good)
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 401);
    let status = client
        .get(daemon.url("/api/status"))
        .send()
        .await
        .expect("get");
    assert_eq!(status.status(), 401);

    let token = daemon.token();
    let send_raw = |body: Vec<u8>| {
        client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, reason) in [
        (b"{not json".to_vec(), "invalid JSON"),
        (
            br#"{"channel": "api", "text": "x", "surprise": 1}"#.to_vec(),
            "unknown field",
        ),
        (
            br#"{"channel": "../etc", "text": "x"}"#.to_vec(),
            "channel must be",
        ),
        (
            br#"{"channel": "api", "text": "   "}"#.to_vec(),
            "text is empty",
        ),
        (br#"{"channel": "api"}"#.to_vec(), "missing field"),
    ] {
        let response = send_raw(body).await.expect("post");
        assert_eq!(response.status(), 400, "{reason}");
        let text = response.text().await.expect("body");
        assert!(text.contains(reason), "{reason}: {text}");
    }
    let huge = format!(
        r#"{{"channel": "api", "text": "{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let response = send_raw(huge.into_bytes()).await.expect("post");
    assert_eq!(response.status(), 413);

    let store = daemon.store().await;
    assert!(
        store
            .channel_messages("local:api")
            .await
            .expect("messages")
            .is_empty(),
        "nothing was stored"
    );
    // And a good request still works.
    let ok = client
        .post(&url)
        .bearer_auth(&token)
        .json(&good)
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 202);
    model.shutdown().await;
}

async fn post(daemon: &Daemon, channel: &str, text: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(daemon.url("/api/local/messages"))
        .bearer_auth(daemon.token())
        .json(&serde_json::json!({"channel": channel, "text": text}))
        .send()
        .await
        .expect("post")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_turn_finish_and_pauses_one_past_the_grace_period() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(
        Script::new()
            .rule(
                Rule::contains("short job").then(Step::delay(2_000, Step::text("short job done"))),
            )
            .rule(
                Rule::contains("long job")
                    .times(1)
                    .then(Step::delay(60_000, Step::text("too late"))),
            )
            .rule(Rule::contains("long job").then(Step::text("long job done"))),
    )
    .await;
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(
        &home,
        &test_config(model.port(), dir.path(), "\"shutdown_grace_sec\": 10"),
    )
    .await;
    let store = daemon.store().await;

    // Within the grace period: the turn finishes and its answer is recorded before exit.
    assert_eq!(post(&daemon, "drain", "the short job").await.status(), 202);
    eventually(
        &daemon,
        "the short turn to start",
        Duration::from_secs(60),
        || {
            let n = model.requests().len();
            async move { n >= 1 }
        },
    )
    .await;
    let status = daemon.terminate();
    assert!(
        status.success(),
        "a clean exit after draining: {status:?}\n{}",
        daemon.log_text()
    );
    let runs = store.channel_runs("local:drain").await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].answer.as_deref(), Some("short job done"));

    // Past the grace period: the turn is paused, its message stays queued, and the next start
    // answers it.
    std::fs::write(
        daemon.loop_dir.join("config.json"),
        test_config(model.port(), dir.path(), "\"shutdown_grace_sec\": 1"),
    )
    .expect("config");
    daemon.restart().await;
    assert_eq!(post(&daemon, "pause", "the long job").await.status(), 202);
    eventually(
        &daemon,
        "the long turn to start",
        Duration::from_secs(60),
        || {
            let n = model
                .requests()
                .iter()
                .filter(|r| r.body_contains("the long job"))
                .count();
            async move { n >= 1 }
        },
    )
    .await;
    let started = std::time::Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the grace period bounds the shutdown"
    );
    let messages = store
        .channel_messages("local:pause")
        .await
        .expect("messages");
    assert_eq!(
        messages[0].status,
        InboxStatus::Pending,
        "left queued for the next start"
    );
    daemon.restart().await;
    eventually(
        &daemon,
        "the paused message to be answered",
        Duration::from_secs(90),
        || {
            let store = store.clone();
            async move {
                store
                    .channel_messages("local:pause")
                    .await
                    .expect("messages")[0]
                    .status
                    == InboxStatus::Done
            }
        },
    )
    .await;
    let runs = store.channel_runs("local:pause").await.expect("runs");
    assert_eq!(
        runs.last().and_then(|r| r.answer.as_deref()),
        Some("long job done")
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_over_its_budget_gets_no_new_turns() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(Script::always(Step::text("spent some"))).await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &test_config(model.port(), dir.path(), "\"channel_budget_usd\": 0.00001"),
    )
    .await;
    let store = daemon.store().await;
    assert_eq!(post(&daemon, "budget", "first").await.status(), 202);
    eventually(&daemon, "the first turn", Duration::from_secs(60), || {
        let store = store.clone();
        async move {
            store
                .channel_runs("local:budget")
                .await
                .expect("runs")
                .len()
                == 1
                && store.channel_messages("local:budget").await.expect("m")[0].status
                    == InboxStatus::Done
        }
    })
    .await;
    assert!(
        store.channel_cost("local:budget").await.expect("cost") > 0.00001,
        "the fake model's usage has a cost"
    );
    let requests_before = model.requests().len();
    assert_eq!(post(&daemon, "budget", "second").await.status(), 202);
    eventually(
        &daemon,
        "the second message to be refused",
        Duration::from_secs(60),
        || {
            let store = store.clone();
            async move {
                store
                    .channel_messages("local:budget")
                    .await
                    .expect("m")
                    .iter()
                    .all(|m| m.status != InboxStatus::Pending && m.status != InboxStatus::Claimed)
            }
        },
    )
    .await;
    let runs = store.channel_runs("local:budget").await.expect("runs");
    assert_eq!(runs[1].status, RunStatus::Failed);
    assert_eq!(runs[1].error.as_deref(), Some("budget exhausted"));
    assert_eq!(
        model.requests().len(),
        requests_before,
        "no container talked to the model"
    );
    model.shutdown().await;
}
