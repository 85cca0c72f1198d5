//! Scheduled tasks end to end: the real Claude Code CLI in the real container, scripted by the
//! fake model to call the built-in `loop` MCP server's tools; the real `loop serve` stores the
//! task, runs it when it comes due, posts its answer, cancels it, and keeps tasks across a
//! restart.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use loop_app::commands::client::Client;
use loop_e2e::daemon::{Daemon, eventually, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{docker, start_model};
use loop_fakes::model::{Matcher, Rule, Script, Session, Step};
use loop_store::{InboxStatus, Store};
use loop_wire::api::TaskInfo;
use serde_json::json;

const CHANNEL: &str = "sched";
const KEY: &str = "local:sched";

/// Whether every message of the channel has been handled (no turn waiting or running).
async fn channel_idle(store: &Store) -> bool {
    store
        .channel_messages(KEY)
        .await
        .expect("inbox")
        .iter()
        .all(|m| matches!(m.status, InboxStatus::Done | InboxStatus::Failed))
}

fn client(daemon: &Daemon) -> Client {
    let addr: SocketAddr = daemon
        .addr()
        .expect("address")
        .parse()
        .expect("socket address");
    Client::new(addr, daemon.token())
}

/// Waits for a message posted in the channel whose text contains `needle`.
async fn posted_containing(
    daemon: &Daemon,
    stream: &mut loop_app::commands::client::Stream,
    needle: &str,
    timeout: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            panic!(
                "no message containing {needle:?} was posted\n--- daemon log ---\n{}",
                daemon.log_text()
            );
        };
        let Some(Ok(message)) = next else {
            panic!("the event stream closed");
        };
        let Ok(text) = message.to_text() else {
            continue;
        };
        // `{"kind": "chat", "event": {"type": "posted", "text": ...}}`.
        let Ok(item) = serde_json::from_str::<serde_json::Value>(text) else {
            continue;
        };
        if item["kind"] == "chat" && item["event"]["type"] == "posted" {
            let body = item["event"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if body.contains(needle) {
                return body;
            }
        }
    }
}

async fn api_tasks(daemon: &Daemon, http: &reqwest::Client) -> Vec<TaskInfo> {
    http.get(daemon.url(&format!("/api/tasks?channel={KEY}")))
        .bearer_auth(daemon.token())
        .send()
        .await
        .expect("list tasks")
        .json()
        .await
        .expect("tasks")
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_schedule_tasks_that_run_post_their_answer_and_survive_a_restart() {
    if docker().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    // The channel's project, as loop (root) would have cloned it: `.git` is root's.
    let project = Project::create(&dir.path().join("project"), GitOwner::Root);

    let script = Script::new()
        .rule(
            Rule::contains("please schedule the jobs")
                .then(Step::tool_use(
                    "mcp__loop__schedule_task",
                    json!({"schedule": "every 4s", "prompt": "TICK: add the notes", "name": "ticker"}),
                ))
                .then(Step::tool_use(
                    "mcp__loop__schedule_task",
                    json!({"schedule": "0 9 1 1 *", "prompt": "the new year check", "name": "yearly"}),
                ))
                .then(Step::tool_use(
                    "mcp__loop__schedule_task",
                    json!({"schedule": "61 * * * *", "prompt": "never stored"}),
                ))
                .then(Step::text("scheduled; the last one said: {{last_tool_result}}")),
        )
        // A scheduled run is a work session in the channel's project.
        .rule(Rule::contains("TICK: add the notes").session(&Session::default()))
        .rule(
            // Any other prompt is a task id the agent tries to cancel.
            Rule::when(Matcher::Any)
                .then(Step::tool_use(
                    "mcp__loop__cancel_task",
                    json!({"id": "{{prompt}}"}),
                ))
                .then(Step::text("cancel said: {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let home = dir.path().join("home");
    let config = test_config(
        model.port(),
        dir.path(),
        r#""scheduler": {"min_interval_sec": 1}"#,
    );
    let mut daemon = Daemon::start(&home, &config).await;
    let store = daemon.store().await;
    let http = reqwest::Client::new();
    let mut stream = client(&daemon).stream(CHANNEL).await.expect("stream");

    // The agent schedules two tasks through the MCP server; the invalid third is refused
    // with a reason the agent sees, and nothing is stored for it.
    let project_arg = project.dir.display().to_string();
    let first = daemon.cli(&[
        "run",
        "--channel",
        CHANNEL,
        "--dir",
        &project_arg,
        "please schedule the jobs",
    ]);
    let answer = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "loop run failed: {}\n{}",
        String::from_utf8_lossy(&first.stderr),
        daemon.log_text()
    );
    assert!(
        answer.contains("invalid cron expression"),
        "the agent saw why the bad schedule was refused: {answer}\n{}",
        daemon.log_text()
    );
    let tasks = store.tasks(Some(KEY)).await.expect("tasks");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let ticker = tasks
        .iter()
        .find(|t| t.name.as_deref() == Some("ticker"))
        .expect("ticker stored")
        .clone();
    let yearly = tasks
        .iter()
        .find(|t| t.name.as_deref() == Some("yearly"))
        .expect("yearly stored")
        .clone();
    assert_eq!(
        (ticker.kind.as_str(), ticker.schedule.as_str()),
        ("interval", "every 4s")
    );
    assert_eq!(
        (yearly.kind.as_str(), yearly.schedule.as_str()),
        ("cron", "0 9 1 1 *")
    );
    assert!(yearly.next_run_at.is_some());

    // The ticker comes due, runs as a turn of its channel, in the channel's project, and its
    // report is posted.
    let report = posted_containing(&daemon, &mut stream, "Tests: ", Duration::from_secs(90)).await;
    project.check_thread(&report, &model);
    let runs = store.channel_runs(KEY).await.expect("runs");
    assert!(
        runs.iter()
            .any(|r| r.task_id.as_deref() == Some(ticker.id.as_str())
                && r.answer
                    .as_deref()
                    .is_some_and(|a| a.contains("Tests: tests pass"))),
        "{runs:?}"
    );

    // Cancelled through the API: gone, and it runs no more once the channel settles.
    let cancelled = http
        .delete(daemon.url(&format!("/api/tasks/{}", ticker.id)))
        .bearer_auth(daemon.token())
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 200);
    let listed = api_tasks(&daemon, &http).await;
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [yearly.id.as_str()]
    );
    eventually(
        &daemon,
        "the channel to settle",
        Duration::from_secs(60),
        || channel_idle(&store),
    )
    .await;
    let runs_after_cancel = store.channel_runs(KEY).await.expect("runs").len();

    // A container token may not touch another channel's task.
    let other: TaskInfo = http
        .post(daemon.url("/api/tasks"))
        .bearer_auth(daemon.token())
        .json(&json!({"channel": "local:other", "schedule": "every 1h", "prompt": "not yours"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("task");
    let attempt = daemon.cli(&["run", "--channel", CHANNEL, &other.id]);
    let attempt = String::from_utf8_lossy(&attempt.stdout).to_string();
    assert!(
        attempt.contains("not allowed") && attempt.contains("its own channel"),
        "{attempt}\n{}",
        daemon.log_text()
    );
    assert!(store.task(&other.id).await.is_ok(), "still there");
    assert_eq!(
        store.channel_runs(KEY).await.expect("runs").len(),
        runs_after_cancel + 1,
        "the cancelled ticker did not run again"
    );

    // `/loop tasks` in chat lists the channel's tasks.
    client(&daemon)
        .post_command(CHANNEL, "/loop tasks")
        .await
        .expect("command");
    let listing = posted_containing(
        &daemon,
        &mut stream,
        "Scheduled tasks",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        listing.contains(&yearly.id) && !listing.contains(&ticker.id),
        "{listing}"
    );

    // A restart keeps the tasks and their next run times.
    daemon.restart().await;
    let after = api_tasks(&daemon, &http).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, yearly.id);
    assert_eq!(after[0].next_run_at, yearly.next_run_at);
    assert!(after[0].enabled);

    // `loop tasks` on the command line lists and cancels.
    let listed = daemon.cli(&["tasks"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains(&yearly.id) && listed.contains(&other.id),
        "{listed}"
    );
    let cancel = daemon.cli(&["tasks", "cancel", &other.id]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    assert!(store.task(&other.id).await.is_err());

    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_api_refuses_bad_tokens_and_bad_input_and_stores_nothing() {
    if docker().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = start_model(Script::echo()).await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(&home, &test_config(model.port(), dir.path(), "")).await;
    let store = daemon.store().await;
    let http = reqwest::Client::new();
    let url = daemon.url("/api/tasks");
    let good = json!({"channel": KEY, "schedule": "every 2h", "prompt": "check the build"});

    // No token, a wrong token: 401 before the body is looked at.
    let status = http
        .post(&url)
        .json(&good)
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, 401);
    let status = http
        .post(&url)
        .bearer_auth("0".repeat(64))
        .json(&good)
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, 401);
    let status = http.get(&url).send().await.expect("get").status();
    assert_eq!(status, 401);

    // Invalid input: 400 with a reason, nothing stored.
    for (body, reason) in [
        (
            json!({"channel": KEY, "schedule": "61 * * * *", "prompt": "x"}),
            "invalid cron expression",
        ),
        (
            json!({"channel": KEY, "schedule": "2020-01-01T00:00:00Z", "prompt": "x"}),
            "in the past",
        ),
        (
            json!({"channel": KEY, "schedule": "every 2h", "prompt": "  "}),
            "prompt is empty",
        ),
        (
            json!({"channel": KEY, "schedule": "every 5s", "prompt": "x"}),
            "shortest allowed is 60s",
        ),
        (
            json!({"schedule": "every 2h", "prompt": "x"}),
            "channel is required",
        ),
        (
            json!({"channel": "nonsense", "schedule": "every 2h", "prompt": "x"}),
            "invalid channel key",
        ),
        (
            json!({"channel": KEY, "schedule": "every 2h", "prompt": "x", "colour": "red"}),
            "unknown field",
        ),
    ] {
        let response = http
            .post(&url)
            .bearer_auth(daemon.token())
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.expect("error body");
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{body}: {text}");
    }
    assert!(store.tasks(None).await.expect("tasks").is_empty());

    // A good request is stored; changes are checked the same way; unknown ids are 404.
    let created = http
        .post(&url)
        .bearer_auth(daemon.token())
        .json(&good)
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 201);
    let task: TaskInfo = created.json().await.expect("task");
    let patch = |body: serde_json::Value, id: &str| {
        http.patch(daemon.url(&format!("/api/tasks/{id}")))
            .bearer_auth(daemon.token())
            .json(&body)
            .send()
    };
    let refused = patch(json!({"schedule": "banana"}), &task.id)
        .await
        .expect("patch");
    assert_eq!(refused.status(), 400);
    let paused: TaskInfo = patch(json!({"enabled": false}), &task.id)
        .await
        .expect("patch")
        .json()
        .await
        .expect("task");
    assert!(!paused.enabled);
    assert_eq!(
        paused.schedule, "every 2h",
        "a refused change changed nothing"
    );
    let missing = patch(json!({"enabled": true}), "ffffffff")
        .await
        .expect("patch");
    assert_eq!(missing.status(), 404);
    model.shutdown().await;
}
