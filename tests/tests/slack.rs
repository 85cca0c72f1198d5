//! Slack end to end: a real `loop serve` with `platforms: ["local", "slack"]` whose real
//! slack-morphism client talks to the fake Slack of `loop-fakes` (Web API over HTTP, Socket
//! Mode over a WebSocket), real containers running the real Claude Code CLI against the
//! scripted fake model.

use std::time::Duration;

use loop_e2e::daemon::Daemon;
use loop_e2e::project::{GitOwner, Project, branch_named_in};
use loop_e2e::slack::{connected, has_text, point_channel, reply_in, slack_config, thread_until};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Session, Step};
use loop_fakes::slack::FakeSlack;

/// A turn in a fresh container takes a few seconds; the first one may pull nothing but still
/// start node.
const TURN: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_mention_is_answered_once_in_its_thread_despite_429s_and_reconnects() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let script = Script::new()
        .rule(Rule::contains("what is six times seven").then(Step::text("It is **42**.")))
        .rule(Rule::contains("and plus one").then(Step::text("Then it is `43`.")))
        .rule(Rule::contains("and times two").then(Step::text("Then it is `86`.")));
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &slack_config(&model, &slack, dir.path(), "")).await;
    connected(&slack, &daemon).await;

    // Someone outside the allowlist is refused politely, in private, and nothing runs.
    slack.post_as_user(
        "UMALLORY",
        "C1",
        &format!("{} run this", FakeSlack::mention()),
        None,
    );
    let refusal = slack
        .wait_for(QUICK, |s| s.ephemerals().into_iter().next())
        .await
        .unwrap_or_else(|| panic!("no refusal\n{}", daemon.log_text()));
    assert_eq!(refusal.user, "UMALLORY");
    assert!(refusal.text.contains("Sorry"), "{}", refusal.text);

    // The first answer has to get through two 429s.
    slack.rate_limit("chat.postMessage", 2, 1);
    let question = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} what is six times seven?", FakeSlack::mention()),
        None,
    );
    // Slack delivers the same events again (its retry after a missed ack): answered once.
    for id in &question.event_ids {
        assert!(slack.redeliver(id));
    }
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the answer",
        TURN,
        |m| has_text(m, "It is *42*."),
    )
    .await;
    assert!(
        slack
            .calls_of("chat.postMessage")
            .iter()
            .filter(|c| c.status == 429)
            .count()
            >= 2,
        "the fake refused twice"
    );
    // One status message, edited as the turn went on, and one answer.
    assert_eq!(thread.len(), 2, "{thread:#?}");
    assert!(
        thread[0].edits >= 1,
        "the status message was edited: {thread:#?}"
    );
    assert!(thread[0].text.contains("Done"), "{thread:#?}");
    // The channel's directory is not a repository: the thread is told once that it works
    // without a branch.
    assert!(
        thread[0].text.contains("is not a git repository"),
        "{thread:#?}"
    );
    slack
        .wait_for(QUICK, |s| {
            (s.reactions_on("C1", &question.ts) == ["white_check_mark"]).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("reactions: {:?}", slack.reactions_on("C1", &question.ts)));
    let store = daemon.store().await;
    let runs = store
        .channel_runs(&format!("slack:C1:{}", question.ts))
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1, "answered once");

    // A dropped connection and a `disconnect` envelope: the daemon reconnects and a reply in
    // the thread (no mention needed) continues the session.
    let before = slack.connections();
    slack.drop_connection();
    slack
        .wait_for(QUICK, |s| {
            (s.connections() > before && s.is_connected()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no reconnect\n{}", daemon.log_text()));
    slack.send_disconnect("refresh_requested");
    slack
        .wait_for(QUICK, |s| {
            (s.connections() > before + 1 && s.is_connected()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no reconnect after disconnect\n{}", daemon.log_text()));
    slack.post_as_user("UALICE", "C1", "and plus one?", Some(&question.ts));
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the follow-up",
        TURN,
        |m| has_text(m, "Then it is `43`."),
    )
    .await;
    assert_eq!(
        thread
            .iter()
            .filter(|m| m.text.contains("is not a git repository"))
            .count(),
        1,
        "said once: {thread:#?}"
    );
    let runs = store
        .channel_runs(&format!("slack:C1:{}", question.ts))
        .await
        .expect("runs");
    assert_eq!(runs.len(), 2);
    // Nothing the fake sent is left unacknowledged.
    slack
        .wait_for(QUICK, |s| (s.unacknowledged() == 0).then_some(()))
        .await
        .unwrap_or_else(|| panic!("{} envelopes not acknowledged", slack.unacknowledged()));

    // After a kill -9 and a restart, a reply in the thread still needs no mention: the
    // threads loop takes part in are in the database, not only in the adapter's memory.
    let before = slack.connections();
    daemon.kill_9();
    daemon.restart().await;
    slack
        .wait_for(QUICK, |s| {
            (s.connections() > before && s.is_connected()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no connection after the restart\n{}", daemon.log_text()));
    slack.post_as_user("UALICE", "C1", "and times two?", Some(&question.ts));
    thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the follow-up after a restart",
        TURN,
        |m| has_text(m, "Then it is `86`."),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_buttons_allow_and_deny_and_the_slash_command_points_the_channel() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    // loop (root) cloned the repository for the channel: its `.git` is root's.
    let project = Project::create(&project_dir, GitOwner::Root);
    let script = Script::new()
        .rule(Rule::contains("add the notes").session(&Session::default()))
        .rule(
            Rule::contains("touch yes")
                .then(Step::bash("touch gate-approval-yes; echo \"yes_rc=$?\""))
                .then(Step::text("YES {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("touch no")
                .then(Step::bash("touch gate-approval-no; echo \"no_rc=$?\""))
                .then(Step::text("NO {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let gates = serde_json::json!({
        "agentgate": {
            "approval_timeout_sec": 120,
            "command_rules": [{
                "commands": ["touch"],
                "args_patterns": ["gate-approval"],
                "decision": "approve",
                "message": "touching needs a person"
            }]
        }
    });
    let daemon = Daemon::start(
        &home,
        &slack_config(&model, &slack, dir.path(), &format!("\"gates\": {gates}")),
    )
    .await;
    connected(&slack, &daemon).await;

    // `/loop dir` points the channel (and so its threads) at the project.
    point_channel(&slack, &daemon, "UALICE", "C7", &project.dir).await;

    // A person's first request there: the agent works in the project as in their own session,
    // and its report is what the thread shows.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} please add the notes", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the session's report",
        TURN,
        |m| has_text(m, "Tests: "),
    )
    .await;
    let report = thread
        .iter()
        .find(|m| m.text.contains("Tests: "))
        .expect("report");
    project.check_thread(&report.text, &model);

    // Approve.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} touch yes", FakeSlack::mention()),
        None,
    );
    let prompt = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the approval prompt",
        TURN,
        |m| m.iter().any(|m| m.blocks.is_some()),
    )
    .await
    .into_iter()
    .find(|m| m.blocks.is_some())
    .expect("prompt");
    // Not an approver: refused in private, the prompt stays.
    assert!(slack.click("UALICE", "C7", &prompt.ts, "loop_approve_once"));
    slack
        .wait_for(QUICK, |s| {
            s.ephemerals().into_iter().find(|e| e.user == "UALICE")
        })
        .await
        .unwrap_or_else(|| panic!("no refusal\n{}", daemon.log_text()));
    assert!(slack.click("UBOSS", "C7", &prompt.ts, "loop_approve_once"));
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the approved answer",
        TURN,
        |m| has_text(m, "YES"),
    )
    .await;
    assert!(has_text(&thread, "yes_rc=0"), "{thread:#?}");
    // The approved command ran in the thread's worktree, and its file is committed on the
    // thread's branch, which the status message and the answer name.
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .unwrap_or_else(|| panic!("no branch named: {thread:#?}"));
    assert_eq!(
        project.made_on_branch(&branch, "gate-approval-yes"),
        (true, true),
        "the approved command ran, and its file is committed"
    );
    let decided = thread.iter().find(|m| m.ts == prompt.ts).expect("prompt");
    assert!(
        decided.text.contains("<@UBOSS>"),
        "who decided: {decided:#?}"
    );
    let blocks = decided
        .blocks
        .as_ref()
        .map(|b| b.to_string())
        .unwrap_or_default();
    assert!(blocks.contains("Decided <!date^"), "when: {blocks}");
    assert!(
        !slack.click("UBOSS", "C7", &prompt.ts, "loop_deny"),
        "no buttons left"
    );

    // Deny.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} touch no", FakeSlack::mention()),
        None,
    );
    let prompt = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the second prompt",
        TURN,
        |m| m.iter().any(|m| m.blocks.is_some()),
    )
    .await
    .into_iter()
    .find(|m| m.blocks.is_some())
    .expect("prompt");
    assert!(slack.click("UBOSS", "C7", &prompt.ts, "loop_deny"));
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the denied answer",
        TURN,
        |m| has_text(m, "NO"),
    )
    .await;
    assert!(!has_text(&thread, "no_rc=0"), "{thread:#?}");
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .unwrap_or_else(|| panic!("no branch named: {thread:#?}"));
    assert_eq!(
        project.made_on_branch(&branch, "gate-approval-no"),
        (false, false),
        "the denied command did not run"
    );
    let store = daemon.store().await;
    let approval = store.pending_approvals().await.expect("approvals");
    assert!(approval.is_empty(), "nothing left pending: {approval:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_scheduled_run_answers_in_a_thread_titled_with_its_task() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(
        Script::new().rule(Rule::contains("report the weather").then(Step::text("Sunny, 21°C."))),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &slack_config(
            &model,
            &slack,
            dir.path(),
            r#""scheduler": {"min_interval_sec": 1}"#,
        ),
    )
    .await;
    connected(&slack, &daemon).await;
    let http = reqwest::Client::new();
    let task: loop_wire::api::TaskInfo = http
        .post(daemon.url("/api/tasks"))
        .bearer_auth(daemon.token())
        .json(&serde_json::json!({
            "channel": "slack:C1",
            "schedule": "every 3s",
            "prompt": "report the weather",
            "name": "weather"
        }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("task");
    // The run's title goes to the channel, its answer into the title's thread.
    let title = slack
        .wait_for(TURN, |s| {
            s.bot_messages_in("C1", None)
                .into_iter()
                .find(|m| m.text.contains(&format!("Task {}", task.id)))
        })
        .await
        .unwrap_or_else(|| panic!("no task thread\n{}", daemon.log_text()));
    assert!(
        title.text.contains("\"weather\"") && title.text.contains("every 3s"),
        "{}",
        title.text
    );
    thread_until(
        &slack,
        &daemon,
        "C1",
        &title.ts,
        "the task's answer",
        TURN,
        |m| has_text(m, "Sunny, 21°C."),
    )
    .await;
    let cancelled = http
        .delete(daemon.url(&format!("/api/tasks/{}", task.id)))
        .bearer_auth(daemon.token())
        .send()
        .await
        .expect("cancel");
    assert!(cancelled.status().is_success());
    // The run is recorded as the task's.
    let store = daemon.store().await;
    let runs = store
        .channel_runs(&format!("slack:C1:{}", title.ts))
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].task_id.as_deref(), Some(task.id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_decide_who_may_use_loop_in_a_channel() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(
        Script::new().rule(Rule::contains("say hello").then(Step::text("Hello from loop."))),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    // The Go Loop's permissions: UBOSS owns loop; nobody else is a member yet.
    let config = slack_config(&model, &slack, dir.path(), "").replace(
        r#""permissions": {"approvers": {"users": ["UBOSS"]}}"#,
        r#""permissions": {"owners": {"users": ["UBOSS"]}, "approvers": {"users": ["UBOSS"]}}"#,
    );
    assert!(config.contains("owners"), "{config}");
    let daemon = Daemon::start(&home, &config).await;
    connected(&slack, &daemon).await;
    let refusals = |s: &FakeSlack, needle: &str| {
        s.ephemerals()
            .into_iter()
            .filter(|e| e.user == "UALICE" && e.text.contains(needle))
            .count()
    };
    let reply = |needle: &'static str| {
        let (slack, daemon) = (&slack, &daemon);
        async move { reply_in(slack, daemon, "C9", needle, QUICK).await }
    };

    // Not a member: refused in private, nothing runs, and she cannot let herself in.
    slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} say hello", FakeSlack::mention()),
        None,
    );
    slack
        .wait_for(QUICK, |s| (refusals(s, "not allowed") == 1).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no refusal: {:?}", slack.ephemerals()));
    slack.slash_command("UALICE", "C9", "/loop", "allow_user UALICE owner");
    slack
        .wait_for(QUICK, |s| (refusals(s, "not allowed") == 2).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no refusal: {:?}", slack.ephemerals()));
    assert!(model.requests().is_empty(), "no turn ran");

    // The owner lets her in (a mention, as Slack escapes it); now she is answered.
    slack.slash_command("UBOSS", "C9", "/loop", "allow_user <@UALICE|alice>");
    reply("may now use loop here").await;
    let question = slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} say hello", FakeSlack::mention()),
        None,
    );
    thread_until(
        &slack,
        &daemon,
        "C9",
        &question.ts,
        "the answer",
        TURN,
        |m| has_text(m, "Hello from loop."),
    )
    .await;
    // A member may not change the channel's directory or who may use it.
    slack.slash_command("UALICE", "C9", "/loop", "dir /tmp");
    slack
        .wait_for(QUICK, |s| {
            (refusals(s, "Only this channel's owners") == 1).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no owner-only refusal: {:?}", slack.ephemerals()));

    // Denied again: refused; the grant is stored in the database with who gave it.
    slack.slash_command("UBOSS", "C9", "/loop", "deny_user UALICE");
    reply("may no longer use loop here").await;
    let store = daemon.store().await;
    let grants = store
        .channel_grants(&"slack:C9".parse().expect("key"))
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].granted_by, "UBOSS");
    slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} say hello", FakeSlack::mention()),
        None,
    );
    slack
        .wait_for(QUICK, |s| (refusals(s, "not allowed") == 3).then_some(()))
        .await
        .unwrap_or_else(|| panic!("no refusal after the deny: {:?}", slack.ephemerals()));
    assert_eq!(model.requests().len(), 1, "only the allowed question ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_schedule_command_creates_tasks_directly_and_from_templates() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(Script::new()).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let prompts = dir.path().join("prompts");
    std::fs::create_dir_all(&prompts).expect("prompts");
    std::fs::write(
        prompts.join("nightly.md"),
        "Run the nightly checks and report.",
    )
    .expect("prompt");
    let templates = format!(
        r#""task_templates": [
    {{"name": "weekly", "description": "weekly digest", "schedule": "0 9 * * 1", "type": "cron", "prompt": "Write the weekly digest."}},
    {{"name": "nightly", "schedule": "0 2 * * *", "type": "cron", "prompt_path": "{}"}}
  ]"#,
        prompts.join("nightly.md").display()
    );
    let daemon = Daemon::start(&home, &slack_config(&model, &slack, dir.path(), &templates)).await;
    connected(&slack, &daemon).await;
    let reply = |needle: String| {
        let (slack, daemon) = (&slack, &daemon);
        async move { reply_in(slack, daemon, "C5", &needle, QUICK).await }
    };
    slack.slash_command(
        "UALICE",
        "C5",
        "/loop",
        "schedule \"0 9 * * 1-5\" check the build",
    );
    reply("0 9 * * 1-5".to_owned()).await;
    slack.slash_command("UALICE", "C5", "/loop", "schedule template weekly");
    reply("\"weekly\"".to_owned()).await;
    slack.slash_command("UALICE", "C5", "/loop", "schedule template nightly");
    reply("\"nightly\"".to_owned()).await;
    // Bad input is explained and stores nothing.
    slack.slash_command("UALICE", "C5", "/loop", "schedule 61 * * * * never");
    reply("⚠️".to_owned()).await;
    slack.slash_command("UALICE", "C5", "/loop", "schedule template nope");
    reply("no task template `nope`".to_owned()).await;

    let store = daemon.store().await;
    let mut tasks = store.tasks(Some("slack:C5")).await.expect("tasks");
    tasks.sort_by(|a, b| a.schedule.cmp(&b.schedule));
    let summary: Vec<(&str, &str, Option<&str>)> = tasks
        .iter()
        .map(|t| (t.schedule.as_str(), t.prompt.as_str(), t.name.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "0 2 * * *",
                "Run the nightly checks and report.",
                Some("nightly")
            ),
            ("0 9 * * 1", "Write the weekly digest.", Some("weekly")),
            ("0 9 * * 1-5", "check the build", None),
        ],
        "{tasks:#?}"
    );
    assert!(
        tasks
            .iter()
            .all(|t| t.created_by.as_deref() == Some("UALICE"))
    );
}

/// The hash a `/loop trust` reply asks to be typed back (`/loop trust 1a2b3c4d5e6f`).
fn hash_to_type(text: &str) -> String {
    let at = text
        .rfind("/loop trust ")
        .unwrap_or_else(|| panic!("no hash to type in {text:?}"));
    text[at + "/loop trust ".len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_owner_trusts_a_project_config_and_only_the_version_shown() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let config_file = project.join(".loop/config.json");
    std::fs::create_dir_all(project.join(".loop")).expect("mkdir");
    std::fs::write(&config_file, r#"{"mounts": ["~/private:/stolen"]}"#).expect("write");
    let model = start_model(
        Script::new().rule(
            Rule::contains("look in stolen")
                .then(Step::bash("ls /stolen 2>&1"))
                .then(Step::text("STOLEN {{last_tool_result}}")),
        ),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("private")).expect("mkdir");
    std::fs::write(home.join("private/secret.txt"), "the host user's").expect("write");
    let config = slack_config(&model, &slack, dir.path(), "").replace(
        r#""permissions": {"approvers": {"users": ["UBOSS"]}}"#,
        r#""permissions": {"owners": {"users": ["UBOSS"]}, "members": {"users": ["UALICE"]}, "approvers": {"users": ["UBOSS"]}}"#,
    );
    let daemon = Daemon::start(&home, &config).await;
    connected(&slack, &daemon).await;
    let reply = |needle: String| {
        let (slack, daemon) = (&slack, &daemon);
        async move { reply_in(slack, daemon, "C9", &needle, QUICK).await.text }
    };
    slack.slash_command(
        "UBOSS",
        "C9",
        "/loop",
        &format!("dir {}", project.display()),
    );
    reply("now works in".to_owned()).await;

    // Untrusted: the turn runs without the mount and the thread says why.
    let asked = slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} look in stolen", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(&slack, &daemon, "C9", &asked.ts, "the answer", TURN, |m| {
        has_text(m, "STOLEN")
    })
    .await;
    assert!(has_text(&thread, "is not trusted"), "{thread:#?}");
    assert!(has_text(&thread, "`mounts`"), "{thread:#?}");
    assert!(
        has_text(&thread, "No such file or directory"),
        "{thread:#?}"
    );

    // A member may not trust it.
    slack.slash_command("UALICE", "C9", "/loop", "trust");
    slack
        .wait_for(QUICK, |s| {
            s.ephemerals()
                .into_iter()
                .find(|e| e.user == "UALICE" && e.text.contains("Only this channel's owners"))
        })
        .await
        .unwrap_or_else(|| panic!("no owner-only refusal: {:?}", slack.ephemerals()));

    // The owner is shown the diff and the hash to type.
    slack.slash_command("UBOSS", "C9", "/loop", "trust");
    let review = reply("was never trusted".to_owned()).await;
    assert!(review.contains("~/private:/stolen"), "{review}");
    let shown = hash_to_type(&review);
    assert_eq!(shown.len(), 12, "{review}");

    // The file changes before the owner answers: that hash trusts nothing.
    std::fs::write(
        &config_file,
        r#"{"mounts": ["~/private:/stolen", "/etc:/hostetc:ro"]}"#,
    )
    .expect("rewrite");
    slack.slash_command("UBOSS", "C9", "/loop", &format!("trust {shown}"));
    let refused = reply(format!("not `{shown}`")).await;
    assert!(refused.contains("nothing was trusted"), "{refused}");
    assert!(
        refused.contains("/etc:/hostetc:ro"),
        "the new diff: {refused}"
    );
    let store = daemon.store().await;
    let key = project
        .canonicalize()
        .expect("canonical")
        .display()
        .to_string();
    assert_eq!(store.project_trust(&key).await.expect("read"), None);

    // The version shown now is trusted by its hash, and applies on the next turn.
    let current = hash_to_type(&refused);
    slack.slash_command("UBOSS", "C9", "/loop", &format!("trust {current}"));
    reply(format!("Trusted `{}`", config_file.display())).await;
    let trust = store
        .project_trust(&key)
        .await
        .expect("read")
        .expect("trusted");
    assert!(trust.file_hash.starts_with(&current));
    assert_eq!(trust.trusted_by, "slack:UBOSS");
    let asked = slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} look in stolen", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(&slack, &daemon, "C9", &asked.ts, "the answer", TURN, |m| {
        has_text(m, "STOLEN")
    })
    .await;
    assert!(has_text(&thread, "secret.txt"), "{thread:#?}");
    assert!(!has_text(&thread, "not trusted"), "{thread:#?}");
    model.shutdown().await;
}
