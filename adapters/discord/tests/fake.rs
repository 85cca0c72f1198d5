//! The Discord adapter with the real serenity client against the fake Discord of
//! `loop-fakes`: threads, dedupe, bots, allowlists, 429s, a gateway drop, slash commands and
//! approval buttons. The orchestrator is played by the test.

use std::time::Duration;

use loop_adapter::{
    Adapter, ApprovalChoice, ApprovalPrompt, ChannelKey, ChatCommand, Inbound, PlatformKind,
};
use loop_adapter_discord::{DiscordAdapter, DiscordSettings};
use loop_fakes::discord::{BOT_USER, CHANNEL, FakeDiscord, GUILD_ID, OTHER_CHANNEL, TOKEN};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const QUICK: Duration = Duration::from_secs(20);

struct Rig {
    fake: FakeDiscord,
    adapter: DiscordAdapter,
    items: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

async fn rig(configure: impl FnOnce(&mut DiscordSettings)) -> Rig {
    let fake = FakeDiscord::start().await.expect("fake discord");
    let mut settings = DiscordSettings::new(SecretString::from(TOKEN.to_owned()));
    settings.api_url = Some(fake.api_url());
    settings.command_guild = Some(GUILD_ID.parse().expect("guild id"));
    settings.allowed_users = vec!["1".into(), "2".into()];
    settings.approver_users = vec!["2".into()];
    settings.approver_roles = vec!["77".into()];
    configure(&mut settings);
    let adapter = DiscordAdapter::new(settings);
    let (tx, rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let run = {
        let (adapter, shutdown) = (adapter.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(err) = adapter.run(tx, shutdown).await {
                panic!("adapter run failed: {err}");
            }
        })
    };
    fake.wait_for(QUICK, |f| f.is_connected().then_some(()))
        .await
        .expect("the adapter connects to the gateway");
    Rig {
        fake,
        adapter,
        items: rx,
        shutdown,
        run,
    }
}

impl Rig {
    /// The next item, receipted as taken.
    async fn next(&mut self) -> Inbound {
        let item = tokio::time::timeout(QUICK, self.items.recv())
            .await
            .expect("an inbound item in time")
            .expect("the adapter is running");
        match item {
            Inbound::Receipted { item, receipt } => {
                receipt.done(true);
                *item
            }
            other => other,
        }
    }

    /// Asserts nothing arrives for a moment.
    async fn nothing(&mut self) {
        if let Ok(Some(item)) =
            tokio::time::timeout(Duration::from_millis(700), self.items.recv()).await
        {
            panic!("unexpected item {item:?}");
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(QUICK, self.run)
            .await
            .expect("the adapter stops")
            .expect("the adapter task");
    }
}

fn message(item: Inbound) -> loop_adapter::Message {
    match item {
        Inbound::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mention_becomes_a_thread_session_answered_there() {
    let mut rig = rig(|_| {}).await;
    // Other bots and chatter without a mention are ignored.
    rig.fake
        .post_as_other_bot(CHANNEL, &format!("{} hi", FakeDiscord::mention()));
    rig.fake.post_as_user("1", CHANNEL, "just talking");
    rig.nothing().await;

    let asked = rig.fake.post_as_user(
        "1",
        CHANNEL,
        &format!("{} what is six times seven?", FakeDiscord::mention()),
    );
    let first = message(rig.next().await);
    let thread = rig
        .fake
        .thread_of(&asked)
        .expect("a thread from the message");
    assert_eq!(first.message_id, asked);
    assert_eq!(
        first.channel,
        ChannelKey::thread(PlatformKind::Discord, CHANNEL, thread.id.clone())
    );
    assert_eq!(first.text, "what is six times seven?");
    assert!(first.triggers);
    assert_eq!(thread.name, "what is six times seven?");

    // A duplicated dispatch of the same message is handed on once.
    assert!(rig.fake.redispatch_message(&asked));
    rig.nothing().await;
    assert_eq!(rig.fake.threads().len(), 1);

    // Status message, edited, then a long answer split at 2000 characters.
    let status = rig
        .adapter
        .post(&first.channel, "Working…")
        .await
        .expect("status posted");
    rig.fake.rate_limit("PATCH /channels", 2, 0.2);
    rig.adapter
        .edit(&first.channel, &status.message_id, "Done.")
        .await
        .expect("edited through two 429s");
    let limited = rig.fake.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(limited, 2);
    let answer = format!("```\n{}\n```", "x".repeat(3000));
    rig.adapter
        .post(&first.channel, &answer)
        .await
        .expect("answer posted");
    let in_thread = rig.fake.bot_messages_in(&thread.id);
    assert_eq!(in_thread[0].content, "Done.");
    assert_eq!(in_thread[0].edits, 1);
    assert!(in_thread.len() >= 3, "{in_thread:#?}");
    for part in &in_thread[1..] {
        assert!(part.content.chars().count() <= 2000);
        assert_eq!(
            part.content.matches("```").count() % 2,
            0,
            "{}",
            part.content
        );
    }
    // A very long answer is attached as a file.
    rig.adapter
        .post(&first.channel, &"y".repeat(20_000))
        .await
        .expect("long answer posted");
    let attached = rig.fake.bot_messages_in(&thread.id);
    let file = attached.last().expect("a message with a file");
    assert_eq!(file.files.len(), 1);
    assert_eq!(file.files[0].0, "answer.md");
    assert_eq!(file.files[0].1.len(), 20_000);
    // A diff as a file: attached under its name, the summary as the message.
    rig.adapter
        .post_file(
            &first.channel,
            "loop-fix-a1b2.diff",
            b"--- a/x\n+++ b/x\n+new\n",
            "🌿 `loop/fix-a1b2` against `main`: 1 file changed, +1 −0",
        )
        .await
        .expect("file posted");
    let shared = rig.fake.bot_messages_in(&thread.id);
    let diff = shared.last().expect("the diff's message");
    assert_eq!(
        diff.content,
        "🌿 `loop/fix-a1b2` against `main`: 1 file changed, +1 −0"
    );
    assert_eq!(
        diff.files,
        [(
            "loop-fix-a1b2.diff".to_owned(),
            "--- a/x\n+++ b/x\n+new\n".to_owned()
        )]
    );

    // Eyes on receipt; a check mark once the turn is marked done (the thread's first message
    // lives in the parent channel).
    rig.fake
        .wait_for(QUICK, |f| (f.reactions_on(&asked) == ["👀"]).then_some(()))
        .await
        .expect("eyes");
    rig.adapter
        .mark(&first.channel, &asked, loop_adapter::TurnMark::Succeeded)
        .await
        .expect("marked");
    assert_eq!(rig.fake.reactions_on(&asked), ["✅"]);

    // A reply in the thread continues the session without a mention.
    let reply = rig.fake.post_as_user("1", &thread.id, "and plus one?");
    let second = message(rig.next().await);
    assert_eq!(second.message_id, reply);
    assert_eq!(second.channel, first.channel);
    assert!(second.triggers);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlists_refuse_and_dms_are_sessions() {
    let mut rig = rig(|s| s.allowed_channels = vec![CHANNEL.into()]).await;
    let outsider = rig
        .fake
        .post_as_user("3", CHANNEL, &format!("{} run", FakeDiscord::mention()));
    rig.nothing().await;
    let refused = rig
        .fake
        .wait_for(QUICK, |f| {
            f.bot_messages_in(CHANNEL)
                .into_iter()
                .find(|m| m.content.contains("Sorry"))
        })
        .await
        .expect("a refusal");
    assert!(refused.content.contains("allowed_users"));
    assert!(rig.fake.thread_of(&outsider).is_none());
    rig.fake.post_as_user(
        "1",
        OTHER_CHANNEL,
        &format!("{} run", FakeDiscord::mention()),
    );
    rig.nothing().await;

    let dm = rig.fake.post_dm("1", "800", "hello in private");
    let item = message(rig.next().await);
    assert_eq!(item.message_id, dm);
    assert_eq!(
        item.channel,
        ChannelKey::channel(PlatformKind::Discord, "800")
    );
    assert!(item.triggers);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_during_a_gateway_drop_arrive_once_after_resume() {
    let mut rig = rig(|_| {}).await;
    let before = rig
        .fake
        .post_as_user("1", CHANNEL, &format!("{} one", FakeDiscord::mention()));
    assert_eq!(message(rig.next().await).message_id, before);
    rig.fake.drop_connection();
    // Sent while the bot is away: replayed on resume.
    let during = rig.fake.post_dm("1", "801", "two");
    rig.fake
        .wait_for(Duration::from_secs(60), |f| f.is_connected().then_some(()))
        .await
        .expect("the adapter reconnects");
    assert_eq!(message(rig.next().await).message_id, during);
    rig.nothing().await;
    assert_eq!(
        rig.fake.identifies(),
        1,
        "the session was resumed, not replaced"
    );
    assert!(rig.fake.resumes() >= 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slash_commands_are_registered_and_answered() {
    let mut rig = rig(|_| {}).await;
    let commands = rig
        .fake
        .wait_for(QUICK, |f| f.commands().get(GUILD_ID).cloned())
        .await
        .expect("commands registered in the guild");
    let names: Vec<&str> = commands[0]["options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "status",
            "dir",
            "stop",
            "new",
            "tasks",
            "task",
            "cancel",
            "schedule",
            "template",
            "allow_user",
            "deny_user",
            "allow_role",
            "deny_role",
            "base",
            "diff",
            "push",
            "pr",
            "fork",
            "trust"
        ]
    );
    // Users and roles come from Discord's pickers (option types 6 and 8): ids, not names.
    let option_type = |sub: &str, option: &str| {
        commands[0]["options"]
            .as_array()
            .and_then(|subs| subs.iter().find(|s| s["name"] == sub))
            .and_then(|s| s["options"].as_array())
            .and_then(|options| options.iter().find(|o| o["name"] == option))
            .map(|o| o["type"].clone())
    };
    assert_eq!(option_type("allow_user", "user"), Some(6.into()));
    assert_eq!(option_type("deny_role", "role"), Some(8.into()));

    let id = rig.fake.slash_with(
        "1",
        CHANNEL,
        "allow_role",
        serde_json::json!([{"name": "role", "type": 8, "value": "77"}]),
    );
    match rig.next().await {
        Inbound::Command { command, .. } => assert_eq!(
            command,
            ChatCommand::Grant {
                subject: loop_adapter::GrantSubject::Role("77".into()),
                level: loop_adapter::GrantLevel::Member
            }
        ),
        other => panic!("expected a command, got {other:?}"),
    }
    rig.fake
        .wait_for(QUICK, |f| {
            f.interaction(&id).filter(|i| !i.responses.is_empty())
        })
        .await
        .expect("the interaction is answered");

    let id = rig.fake.slash("1", CHANNEL, "dir", Some("~/src/app"));
    match rig.next().await {
        Inbound::Command {
            channel, command, ..
        } => {
            assert_eq!(channel, ChannelKey::channel(PlatformKind::Discord, CHANNEL));
            assert_eq!(command, ChatCommand::Dir("~/src/app".into()));
        }
        other => panic!("expected a command, got {other:?}"),
    }
    let answered = rig
        .fake
        .wait_for(QUICK, |f| {
            f.interaction(&id).filter(|i| !i.responses.is_empty())
        })
        .await
        .expect("the interaction is answered");
    assert_eq!(answered.responses[0]["type"], 4);
    assert_eq!(answered.responses[0]["data"]["flags"], 64);

    let refused = rig.fake.slash("3", CHANNEL, "status", None);
    rig.nothing().await;
    let answered = rig
        .fake
        .wait_for(QUICK, |f| {
            f.interaction(&refused).filter(|i| !i.responses.is_empty())
        })
        .await
        .expect("the outsider is answered");
    assert!(
        answered.responses[0]["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("Sorry")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_buttons_obey_approvers() {
    let mut rig = rig(|_| {}).await;
    let asked = rig
        .fake
        .post_as_user("1", CHANNEL, &format!("{} push it", FakeDiscord::mention()));
    let channel = message(rig.next().await).channel;
    let thread = rig.fake.thread_of(&asked).expect("thread");
    let prompt = ApprovalPrompt {
        approval_id: "ap-1".into(),
        summary: "execve /usr/bin/git push".into(),
        detail: None,
        text: "The agent wants to run `git push`.".into(),
    };
    let posted = rig
        .adapter
        .post_approval(&channel, &prompt)
        .await
        .expect("prompt posted");
    let shown = rig.fake.bot_messages_in(&thread.id);
    let buttons = &shown.last().expect("prompt").components[0]["components"];
    let labels: Vec<&str> = buttons
        .as_array()
        .expect("buttons")
        .iter()
        .filter_map(|b| b["label"].as_str())
        .collect();
    assert_eq!(labels, ["Approve", "Always allow in this session", "Deny"]);

    // A non-approver is told so, privately; nothing is decided.
    let click = rig
        .fake
        .click("1", &[], &posted.message_id, "loop:approve:ap-1")
        .expect("click");
    rig.nothing().await;
    let answer = rig
        .fake
        .wait_for(QUICK, |f| {
            f.interaction(&click).filter(|i| !i.responses.is_empty())
        })
        .await
        .expect("answered");
    assert_eq!(answer.responses[0]["type"], 4);
    assert_eq!(answer.responses[0]["data"]["flags"], 64);

    // An approver by role decides; the click is acknowledged as a deferred update.
    let click = rig
        .fake
        .click("5", &["77"], &posted.message_id, "loop:session:ap-1")
        .expect("click");
    match rig.next().await {
        Inbound::Approval {
            channel: at,
            approval_id,
            choice,
            decided_by,
        } => {
            assert_eq!(at, channel);
            assert_eq!(approval_id, "ap-1");
            assert_eq!(choice, ApprovalChoice::AllowSession);
            assert_eq!(decided_by.id, "5");
        }
        other => panic!("expected an approval, got {other:?}"),
    }
    let answer = rig.fake.interaction(&click).expect("interaction");
    assert_eq!(answer.responses[0]["type"], 6);
    // The orchestrator's edit says who decided and removes the buttons.
    rig.adapter
        .edit(
            &channel,
            &posted.message_id,
            "Allowed for this session by <@5>.",
        )
        .await
        .expect("edited");
    let decided = rig
        .fake
        .messages()
        .into_iter()
        .find(|m| m.id == posted.message_id)
        .expect("prompt");
    assert!(decided.content.contains("<@5>"));
    assert_eq!(decided.components, serde_json::json!([]));
    assert_ne!(decided.author_id, "");
    assert_eq!(decided.author_id, BOT_USER);
    rig.stop().await;
}
