//! Discord end to end: a real `loop serve` with `platforms: ["local", "discord"]` whose real
//! serenity client talks to the fake Discord of `loop-fakes` (REST over HTTP, the Gateway over
//! a WebSocket), real containers running the real Claude Code CLI against the scripted fake
//! model.

use std::time::Duration;

use loop_e2e::daemon::{Daemon, eventually, test_config};
use loop_e2e::project::{GitOwner, Project, branch_named_in};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::discord::{CHANNEL, DiscordMessage, FakeDiscord, GUILD_ID, TOKEN};
use loop_fakes::model::{FakeModel, Rule, Script, Session, Step};
use loop_store::RunStatus;

const TURN: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(30);

/// Alice may start runs; the boss approves by user id, the "ops" role by role id.
const ALICE: &str = "910000000000000001";
const BOSS: &str = "910000000000000002";
const OPS_ROLE: &str = "920000000000000001";

/// A daemon config serving Discord through `discord`, plus `extra` top-level JSON fields.
fn discord_config(
    model: &FakeModel,
    discord: &FakeDiscord,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    let extra = format!(
        r#""discord_token": "{TOKEN}",
  "discord_guild_id": "{GUILD_ID}",
  "discord": {{"api_url": "{api}", "allowed_users": ["{ALICE}", "{BOSS}"]}},
  "permissions": {{"approvers": {{"users": ["{BOSS}"], "roles": ["{OPS_ROLE}"]}}}}{sep}{extra}"#,
        api = discord.api_url(),
        sep = if extra.is_empty() { "" } else { ",\n  " },
    );
    test_config(model.port(), dir, &extra).replace(
        r#""platforms": ["local"]"#,
        r#""platforms": ["local", "discord"]"#,
    )
}

async fn connected(discord: &FakeDiscord, daemon: &Daemon) {
    if discord
        .wait_for(QUICK, |d| d.is_connected().then_some(()))
        .await
        .is_none()
    {
        panic!(
            "the daemon did not connect to the gateway\n--- daemon log ---\n{}",
            daemon.log_text()
        );
    }
}

/// Waits for the thread started from `message` and the bot's messages in it to satisfy
/// `check`; returns the thread id and the messages.
async fn thread_until(
    discord: &FakeDiscord,
    daemon: &Daemon,
    message: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[DiscordMessage]) -> bool,
) -> (String, Vec<DiscordMessage>) {
    match discord
        .wait_for(timeout, |d| {
            let thread = d.thread_of(message)?;
            let messages = d.bot_messages_in(&thread.id);
            check(&messages).then_some((thread.id, messages))
        })
        .await
    {
        Some(found) => found,
        None => panic!(
            "timed out waiting for {what}; thread: {:#?}\n--- daemon log ---\n{}",
            discord
                .thread_of(message)
                .map(|t| discord.bot_messages_in(&t.id)),
            daemon.log_text()
        ),
    }
}

fn has_text(messages: &[DiscordMessage], needle: &str) -> bool {
    messages.iter().any(|m| m.content.contains(needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mention_is_answered_once_in_its_thread_despite_429s_duplicates_and_a_gateway_drop() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let script = Script::new()
        // The first turn takes a while, so the gateway drop below lands in the middle of it.
        .rule(
            Rule::contains("what is six times seven")
                .then(Step::bash("sleep 3; echo slept"))
                .then(Step::text("It is **42**.")),
        )
        .rule(Rule::contains("and plus one").then(Step::text("Then it is `43`.")))
        .rule(Rule::contains("and times two").then(Step::text("Then it is `86`.")));
    let model = start_model(script).await;
    let discord = FakeDiscord::start().await.expect("fake discord");
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &discord_config(&model, &discord, dir.path(), "")).await;
    connected(&discord, &daemon).await;

    // Someone outside the allowlist is refused and nothing runs; other bots are ignored.
    let outsider = discord.post_as_user(
        "910000000000000009",
        CHANNEL,
        &format!("{} run this", FakeDiscord::mention()),
    );
    discord.post_as_other_bot(CHANNEL, &format!("{} run this", FakeDiscord::mention()));
    discord
        .wait_for(QUICK, |d| {
            d.bot_messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.content.contains("Sorry"))
        })
        .await
        .unwrap_or_else(|| panic!("no refusal\n{}", daemon.log_text()));
    assert!(discord.thread_of(&outsider).is_none());

    // The first answer has to get through two 429s; the mention is dispatched twice.
    discord.rate_limit("POST /channels", 2, 1.0);
    let question = discord.post_as_user(
        ALICE,
        CHANNEL,
        &format!("{} what is six times seven?", FakeDiscord::mention()),
    );
    assert!(discord.redispatch_message(&question));
    // The gateway drops mid-turn (as soon as the status message is up): the session resumes.
    let (thread, _) = thread_until(
        &discord,
        &daemon,
        &question,
        "the status message",
        TURN,
        |m| !m.is_empty(),
    )
    .await;
    let store = daemon.store().await;
    let key = format!("discord:{CHANNEL}:{thread}");
    eventually(&daemon, "the turn is running", QUICK, || async {
        store
            .channel_runs(&key)
            .await
            .is_ok_and(|runs| runs.iter().any(|r| r.status == RunStatus::Running))
    })
    .await;
    discord.drop_connection();
    let (_, messages) = thread_until(&discord, &daemon, &question, "the answer", TURN, |m| {
        has_text(m, "It is **42**.")
    })
    .await;
    assert!(
        discord.calls().iter().filter(|c| c.status == 429).count() >= 2,
        "the fake refused twice"
    );
    // One status message, edited as the turn went on, and one answer.
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].edits >= 1,
        "the status was edited: {messages:#?}"
    );
    assert!(messages[0].content.contains("Done"), "{messages:#?}");
    assert_eq!(discord.threads().len(), 1, "one thread");
    discord
        .wait_for(QUICK, |d| {
            (d.reactions_on(&question) == ["✅"]).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("reactions: {:?}", discord.reactions_on(&question)));
    connected(&discord, &daemon).await;
    assert_eq!(discord.identifies(), 1, "resumed, not re-identified");
    assert_eq!(
        store.channel_runs(&key).await.expect("runs").len(),
        1,
        "answered once"
    );

    // A reply in the thread (no mention needed) continues the session.
    discord.post_as_user(ALICE, &thread, "and plus one?");
    thread_until(&discord, &daemon, &question, "the follow-up", TURN, |m| {
        has_text(m, "Then it is `43`.")
    })
    .await;
    assert_eq!(store.channel_runs(&key).await.expect("runs").len(), 2);
    assert!(
        !daemon.log_text().contains(TOKEN),
        "the token is never logged"
    );

    // After a kill -9 and a restart, a reply in the thread still needs no mention: the
    // threads loop takes part in are in the database, not only in the adapter's memory.
    let before = discord.connections();
    daemon.kill_9();
    daemon.restart().await;
    discord
        .wait_for(QUICK, |d| {
            (d.connections() > before && d.is_connected()).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("no connection after the restart\n{}", daemon.log_text()));
    discord.post_as_user(ALICE, &thread, "and times two?");
    thread_until(
        &discord,
        &daemon,
        &question,
        "the follow-up after a restart",
        TURN,
        |m| has_text(m, "Then it is `86`."),
    )
    .await;
    assert_eq!(store.channel_runs(&key).await.expect("runs").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_buttons_obey_approvers_and_the_slash_command_points_the_channel() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
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
    let discord = FakeDiscord::start().await.expect("fake discord");
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
        &discord_config(&model, &discord, dir.path(), &format!("\"gates\": {gates}")),
    )
    .await;
    connected(&discord, &daemon).await;
    discord
        .wait_for(QUICK, |d| d.commands().get(GUILD_ID).cloned())
        .await
        .unwrap_or_else(|| panic!("/loop not registered\n{}", daemon.log_text()));

    // `/loop dir` points the channel (and so its threads) at the project.
    let slash = discord.slash(
        ALICE,
        CHANNEL,
        "dir",
        Some(&project.dir.display().to_string()),
    );
    discord
        .wait_for(QUICK, |d| {
            d.bot_messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.content.contains("now works in"))
        })
        .await
        .unwrap_or_else(|| panic!("no dir reply\n{}", daemon.log_text()));
    discord
        .wait_for(QUICK, |d| {
            d.interaction(&slash).filter(|i| i.responses.len() == 1)
        })
        .await
        .unwrap_or_else(|| panic!("the interaction was not answered\n{}", daemon.log_text()));

    // A person's first request there: the agent works in the project as in their own session,
    // and its report is what the thread shows.
    let asked = discord.post_as_user(
        ALICE,
        CHANNEL,
        &format!("{} please add the notes", FakeDiscord::mention()),
    );
    let (_, thread) = thread_until(
        &discord,
        &daemon,
        &asked,
        "the session's report",
        TURN,
        |m| has_text(m, "Tests: "),
    )
    .await;
    let report = thread
        .iter()
        .find(|m| m.content.contains("Tests: "))
        .expect("report");
    project.check_thread(&report.content, &model);

    // `/loop schedule` with Discord's options, and an owner's grant through the user picker.
    discord.slash_with(
        ALICE,
        CHANNEL,
        "schedule",
        serde_json::json!([
            {"name": "schedule", "type": 3, "value": "every 2h"},
            {"name": "prompt", "type": 3, "value": "summarise the channel"},
            {"name": "type", "type": 3, "value": "interval"}
        ]),
    );
    let scheduled = discord
        .wait_for(QUICK, |d| {
            d.bot_messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.content.contains("Scheduled"))
        })
        .await
        .unwrap_or_else(|| panic!("no schedule reply\n{}", daemon.log_text()));
    assert!(
        scheduled.content.contains("every 2h"),
        "{}",
        scheduled.content
    );
    let store = daemon.store().await;
    let tasks = store
        .tasks(Some(&format!("discord:{CHANNEL}")))
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].prompt, "summarise the channel");
    assert_eq!(tasks[0].created_by.as_deref(), Some(ALICE));
    discord.slash_with(
        BOSS,
        CHANNEL,
        "allow_user",
        serde_json::json!([
            {"name": "user", "type": 6, "value": ALICE},
            {"name": "level", "type": 3, "value": "owner"}
        ]),
    );
    discord
        .wait_for(QUICK, |d| {
            d.bot_messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.content.contains("is now an owner here"))
        })
        .await
        .unwrap_or_else(|| panic!("no grant reply\n{}", daemon.log_text()));
    let grants = store
        .channel_grants(&format!("discord:{CHANNEL}").parse().expect("key"))
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].subject,
        loop_adapter::GrantSubject::User(ALICE.to_owned())
    );

    // Approve, by role.
    let asked = discord.post_as_user(
        ALICE,
        CHANNEL,
        &format!("{} touch yes", FakeDiscord::mention()),
    );
    let (_, messages) = thread_until(
        &discord,
        &daemon,
        &asked,
        "the approval prompt",
        TURN,
        |m| m.iter().any(|m| m.components != serde_json::json!([])),
    )
    .await;
    let prompt = messages
        .into_iter()
        .find(|m| m.components != serde_json::json!([]))
        .expect("prompt");
    let custom_id = |word: &str| {
        prompt.components[0]["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["custom_id"].as_str())
            .find(|id| id.contains(word))
            .map(str::to_owned)
            .expect("a button")
    };
    // Not an approver: refused in private, the prompt stays.
    let refused = discord
        .click(ALICE, &[], &prompt.id, &custom_id("approve"))
        .expect("clickable");
    let answer = discord
        .wait_for(QUICK, |d| {
            d.interaction(&refused).filter(|i| !i.responses.is_empty())
        })
        .await
        .unwrap_or_else(|| panic!("no refusal\n{}", daemon.log_text()));
    assert_eq!(answer.responses[0]["data"]["flags"], 64, "ephemeral");
    let approved = discord
        .click(
            "910000000000000005",
            &[OPS_ROLE],
            &prompt.id,
            &custom_id("approve"),
        )
        .expect("clickable");
    let (_, thread) = thread_until(
        &discord,
        &daemon,
        &asked,
        "the approved answer",
        TURN,
        |m| has_text(m, "YES"),
    )
    .await;
    assert!(has_text(&thread, "yes_rc=0"), "{thread:#?}");
    // The approved command ran in the thread's worktree; its file is committed on the branch
    // the thread names.
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.content))
        .unwrap_or_else(|| panic!("no branch named: {thread:#?}"));
    assert_eq!(
        project.made_on_branch(&branch, "gate-approval-yes"),
        (true, true),
        "the approved command ran, and its file is committed"
    );
    assert_eq!(
        discord
            .interaction(&approved)
            .map(|i| i.responses[0]["type"].clone()),
        Some(serde_json::json!(6)),
        "acknowledged as a deferred update"
    );
    let decided = thread.iter().find(|m| m.id == prompt.id).expect("prompt");
    assert!(
        decided.content.contains("910000000000000005"),
        "who decided: {decided:#?}"
    );
    assert!(
        discord
            .click(BOSS, &[], &prompt.id, &custom_id("deny"))
            .is_none(),
        "no buttons left"
    );

    // Deny, by user id.
    let asked = discord.post_as_user(
        ALICE,
        CHANNEL,
        &format!("{} touch no", FakeDiscord::mention()),
    );
    let (_, messages) = thread_until(&discord, &daemon, &asked, "the second prompt", TURN, |m| {
        m.iter().any(|m| m.components != serde_json::json!([]))
    })
    .await;
    let prompt = messages
        .into_iter()
        .find(|m| m.components != serde_json::json!([]))
        .expect("prompt");
    let deny = prompt.components[0]["components"][2]["custom_id"]
        .as_str()
        .expect("deny button")
        .to_owned();
    discord
        .click(BOSS, &[], &prompt.id, &deny)
        .expect("clickable");
    let (_, thread) = thread_until(&discord, &daemon, &asked, "the denied answer", TURN, |m| {
        has_text(m, "NO")
    })
    .await;
    assert!(!has_text(&thread, "no_rc=0"), "{thread:#?}");
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.content))
        .unwrap_or_else(|| panic!("no branch named: {thread:#?}"));
    assert_eq!(
        project.made_on_branch(&branch, "gate-approval-no"),
        (false, false),
        "the denied command did not run"
    );
    let store = daemon.store().await;
    let pending = store.pending_approvals().await.expect("approvals");
    assert!(pending.is_empty(), "nothing left pending: {pending:?}");
}
