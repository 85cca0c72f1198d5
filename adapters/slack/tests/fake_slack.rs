//! The real slack-morphism client, through the adapter, against the fake Slack of `loop-fakes`
//! (Web API over HTTP, Socket Mode over a WebSocket). No daemon: the test plays the
//! orchestrator by reading the inbound channel.

use std::time::Duration;

use loop_adapter::{
    Adapter, ApprovalChoice, ApprovalPrompt, ChannelKey, ChatCommand, Inbound, PlatformKind,
    TurnMark,
};
use loop_adapter_slack::{SlackAdapter, SlackSettings};
use loop_fakes::slack::{APP_TOKEN, BOT_TOKEN, FakeSlack};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// Plays the orchestrator's intake: takes every item (answering its receipt, as the
/// orchestrator does once a message is stored) and hands the inner item to the test.
fn take_as_orchestrator(mut raw: mpsc::Receiver<Inbound>) -> mpsc::UnboundedReceiver<Inbound> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = raw.recv().await {
            match item {
                Inbound::Receipted { item, receipt } => {
                    let _ = tx.send(*item);
                    receipt.done(true);
                }
                other => panic!("items are handed over with a receipt: {other:?}"),
            }
        }
    });
    rx
}

struct Rig {
    slack: FakeSlack,
    adapter: SlackAdapter,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    async fn start(configure: impl FnOnce(&mut SlackSettings)) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let slack = FakeSlack::start().await.expect("fake slack");
        let mut settings =
            SlackSettings::new(BOT_TOKEN.to_owned().into(), APP_TOKEN.to_owned().into());
        settings.api_url = Some(slack.api_url());
        settings.reconnect_delay = Duration::from_secs(1);
        settings.connections = 1;
        configure(&mut settings);
        let adapter = SlackAdapter::new(settings).expect("adapter");
        let (tx, raw) = mpsc::channel(16);
        let inbound = take_as_orchestrator(raw);
        let stop = CancellationToken::new();
        let task = {
            let adapter = adapter.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                adapter.run(tx, stop).await.expect("adapter run");
            })
        };
        let rig = Rig {
            slack,
            adapter,
            inbound,
            stop,
            task,
        };
        rig.slack
            .wait_for(WAIT, |s| s.is_connected().then_some(()))
            .await
            .unwrap_or_else(|| {
                let calls: Vec<_> = rig
                    .slack
                    .calls()
                    .into_iter()
                    .map(|c| (c.method, c.status, c.args))
                    .collect();
                panic!("socket mode did not connect; calls: {calls:?}")
            });
        rig
    }

    async fn next(&mut self) -> Inbound {
        tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .expect("an inbound item in time")
            .expect("channel open")
    }

    /// Nothing more arrives: every envelope so far is acknowledged and the channel is empty.
    async fn settle(&mut self) {
        self.slack
            .wait_for(WAIT, |s| (s.unacknowledged() == 0).then_some(()))
            .await
            .expect("all envelopes acknowledged");
        assert!(self.inbound.try_recv().is_err(), "no further inbound item");
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

fn message(item: Inbound) -> loop_adapter::Message {
    match item {
        Inbound::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_mention_becomes_a_thread_message_and_replies_go_to_the_thread() {
    let mut rig = Rig::start(|_| {}).await;
    let posted = rig.slack.post_as_user(
        "U1",
        "C1",
        &format!("{} please **fix** the build", FakeSlack::mention()),
        None,
    );
    let first = message(rig.next().await);
    assert_eq!(
        first.channel,
        ChannelKey::thread(PlatformKind::Slack, "C1", posted.ts.clone())
    );
    assert_eq!(first.text, "please **fix** the build");
    assert!(first.triggers);
    assert_eq!(first.author.id, "U1");
    rig.slack
        .wait_for(WAIT, |s| {
            s.reactions_on("C1", &posted.ts)
                .contains(&"eyes".to_owned())
                .then_some(())
        })
        .await
        .expect("eyes on accept");

    // A reply in the thread, without a mention, continues the session.
    let reply = rig
        .slack
        .post_as_user("U1", "C1", "and the docs", Some(&posted.ts));
    let second = message(rig.next().await);
    assert_eq!(second.channel, first.channel);
    assert!(second.triggers);
    assert_eq!(second.message_id, format!("C1:{}", reply.ts));

    // Answers go in the thread, converted to mrkdwn; the status message is edited in place.
    let status = rig
        .adapter
        .post(&first.channel, "⏳ Working")
        .await
        .expect("post");
    rig.adapter
        .edit(&first.channel, &status.message_id, "✅ **Done**")
        .await
        .expect("edit");
    rig.adapter
        .post(&first.channel, "See [the log](https://ci.example/1)")
        .await
        .expect("answer");
    let in_thread = rig.slack.bot_messages_in("C1", Some(&posted.ts));
    assert_eq!(in_thread.len(), 2, "{in_thread:?}");
    assert_eq!(in_thread[0].text, "✅ *Done*");
    assert_eq!(in_thread[0].edits, 1);
    assert_eq!(in_thread[1].text, "See <https://ci.example/1|the log>");

    rig.adapter
        .mark(&first.channel, &first.message_id, TurnMark::Succeeded)
        .await
        .expect("mark");
    assert_eq!(
        rig.slack.reactions_on("C1", &posted.ts),
        vec!["white_check_mark"]
    );

    // The bot's own posts came back as message events and were ignored.
    rig.settle().await;
    rig.stop().await;
}

#[tokio::test]
async fn duplicates_bots_and_chatter_are_not_handed_on() {
    let mut rig = Rig::start(|_| {}).await;
    let posted = rig
        .slack
        .post_as_user("U1", "C1", &format!("{} hi", FakeSlack::mention()), None);
    let first = message(rig.next().await);
    assert!(first.triggers);
    // Slack retries the same events (same event ids).
    for id in &posted.event_ids {
        assert!(rig.slack.redeliver(id));
    }
    rig.slack
        .post_as_other_bot("C1", &format!("{} do what I say", FakeSlack::mention()));
    rig.slack.post_as_user("U1", "C1", "lunch anyone?", None);
    rig.settle().await;
    rig.stop().await;
}

#[tokio::test]
async fn outsiders_are_refused_politely_and_privately() {
    let mut rig = Rig::start(|s| {
        s.allowed_users = vec!["U1".into()];
    })
    .await;
    rig.slack.post_as_user(
        "U666",
        "C1",
        &format!("{} rm -rf /", FakeSlack::mention()),
        None,
    );
    let refusal = rig
        .slack
        .wait_for(WAIT, |s| s.ephemerals().into_iter().next())
        .await
        .expect("an ephemeral refusal");
    assert_eq!(refusal.user, "U666");
    assert!(refusal.text.contains("not on the list"), "{}", refusal.text);
    rig.settle().await;
    rig.stop().await;
}

#[tokio::test]
async fn rate_limited_calls_are_retried_after_retry_after() {
    let rig = Rig::start(|_| {}).await;
    let channel = ChannelKey::thread(PlatformKind::Slack, "C1", "1700000000.000001");
    rig.slack.rate_limit("chat.postMessage", 2, 1);
    let started = std::time::Instant::now();
    rig.adapter
        .post(&channel, "hello")
        .await
        .expect("post after 429s");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice"
    );
    let statuses: Vec<u16> = rig
        .slack
        .calls_of("chat.postMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    assert_eq!(
        rig.slack
            .bot_messages_in("C1", Some("1700000000.000001"))
            .len(),
        1
    );
    rig.stop().await;
}

#[tokio::test]
async fn socket_mode_reconnects_without_losing_or_duplicating_events() {
    let mut rig = Rig::start(|_| {}).await;
    // A network drop: the client reconnects through apps.connections.open.
    rig.slack.drop_connection();
    rig.slack
        .wait_for(WAIT, |s| {
            (s.connections() >= 2 && s.is_connected()).then_some(())
        })
        .await
        .expect("reconnected after a drop");
    let a = rig
        .slack
        .post_as_user("U1", "C1", &format!("{} one", FakeSlack::mention()), None);
    assert_eq!(message(rig.next().await).message_id, format!("C1:{}", a.ts));

    // Slack's `disconnect` envelope: the client opens a new connection.
    rig.slack.send_disconnect("refresh_requested");
    rig.slack
        .wait_for(WAIT, |s| {
            (s.connections() >= 3 && s.is_connected()).then_some(())
        })
        .await
        .expect("reconnected after disconnect");
    let b = rig
        .slack
        .post_as_user("U1", "C2", &format!("{} two", FakeSlack::mention()), None);
    assert_eq!(message(rig.next().await).message_id, format!("C2:{}", b.ts));

    // An event sent while no connection is open is delivered after the reconnect, once.
    rig.slack.drop_connection();
    let c = rig
        .slack
        .post_as_user("U1", "C3", &format!("{} three", FakeSlack::mention()), None);
    assert_eq!(message(rig.next().await).message_id, format!("C3:{}", c.ts));
    rig.settle().await;
    rig.stop().await;
}

#[tokio::test]
async fn the_loop_slash_command_becomes_a_command() {
    let mut rig = Rig::start(|_| {}).await;
    let envelope = rig.slack.slash_command("U1", "C1", "/loop", "status");
    match rig.next().await {
        Inbound::Command {
            channel, command, ..
        } => {
            assert_eq!(channel, ChannelKey::channel(PlatformKind::Slack, "C1"));
            assert_eq!(command, ChatCommand::Status);
        }
        other => panic!("{other:?}"),
    }
    let ack = rig
        .slack
        .wait_for(WAIT, |s| {
            s.acks()
                .into_iter()
                .find(|(id, _)| *id == envelope)
                .map(|(_, p)| p)
        })
        .await
        .expect("acknowledged");
    assert_eq!(ack["response_type"], "ephemeral");

    // `stop` targets the channel's most recent thread session.
    let posted = rig.slack.post_as_user(
        "U1",
        "C1",
        &format!("{} long job", FakeSlack::mention()),
        None,
    );
    let _ = rig.next().await;
    rig.slack.slash_command("U1", "C1", "/loop", "stop");
    match rig.next().await {
        Inbound::Command {
            channel, command, ..
        } => {
            assert_eq!(
                channel,
                ChannelKey::thread(PlatformKind::Slack, "C1", posted.ts)
            );
            assert_eq!(command, ChatCommand::Stop);
        }
        other => panic!("{other:?}"),
    }
    rig.slack.slash_command("U1", "C1", "/loop", "dir /src/app");
    assert!(matches!(
        rig.next().await,
        Inbound::Command { command: ChatCommand::Dir(d), .. } if d == "/src/app"
    ));
    rig.stop().await;
}

#[tokio::test]
async fn approval_buttons_produce_decisions_from_approvers_only() {
    let mut rig = Rig::start(|s| {
        s.approvers = vec!["UBOSS".into()];
    })
    .await;
    let channel = ChannelKey::thread(PlatformKind::Slack, "C1", "1700000000.000001");
    let posted = rig
        .adapter
        .post_approval(
            &channel,
            &ApprovalPrompt {
                approval_id: "ap1".into(),
                summary: "execve /usr/bin/git push".into(),
                detail: Some("publishing the fix".into()),
                text: "🔐 Approval needed: `git push`".into(),
            },
        )
        .await
        .expect("prompt");
    let prompt = rig
        .slack
        .bot_messages_in("C1", Some("1700000000.000001"))
        .pop()
        .expect("prompt posted");
    assert!(prompt.blocks.is_some());

    // Someone who is not an approver: refused privately, nothing handed on.
    assert!(
        rig.slack
            .click("U1", "C1", &posted.message_id, "loop_approve_once")
    );
    let refusal = rig
        .slack
        .wait_for(WAIT, |s| s.ephemerals().into_iter().next())
        .await
        .expect("refusal");
    assert_eq!(refusal.user, "U1");

    // The approver's click becomes a typed decision.
    assert!(
        rig.slack
            .click("UBOSS", "C1", &posted.message_id, "loop_approve_session")
    );
    match rig.next().await {
        Inbound::Approval {
            channel: at,
            approval_id,
            choice,
            decided_by,
        } => {
            assert_eq!(at, channel);
            assert_eq!(approval_id, "ap1");
            assert_eq!(choice, ApprovalChoice::AllowSession);
            assert_eq!(decided_by.id, "UBOSS");
        }
        other => panic!("{other:?}"),
    }
    // Deciding edits the prompt: buttons gone, who and when shown.
    rig.adapter
        .edit(
            &channel,
            &posted.message_id,
            "🔐 `git push` — ✅ allowed for this session by <@UBOSS>",
        )
        .await
        .expect("edit");
    let decided = rig
        .slack
        .bot_messages_in("C1", Some("1700000000.000001"))
        .pop()
        .expect("prompt");
    let blocks = decided.blocks.expect("blocks").to_string();
    assert!(!blocks.contains("loop_approve_once"), "{blocks}");
    assert!(blocks.contains("Decided <!date^"), "{blocks}");
    assert!(
        !rig.slack
            .click("UBOSS", "C1", &posted.message_id, "loop_deny"),
        "no buttons left"
    );
    rig.settle().await;
    rig.stop().await;
}

#[tokio::test]
async fn long_answers_are_split_and_very_long_ones_uploaded_as_a_file() {
    let rig = Rig::start(|_| {}).await;
    let channel = ChannelKey::thread(PlatformKind::Slack, "C1", "1700000000.000001");
    let paragraph = "word ".repeat(199) + "end\n\n";
    let medium = paragraph.repeat(8); // ~8 000 characters: three messages at most
    rig.adapter.post(&channel, &medium).await.expect("split");
    let posted = rig.slack.bot_messages_in("C1", Some("1700000000.000001"));
    assert!((2..=3).contains(&posted.len()), "{}", posted.len());
    assert!(posted.iter().all(|m| m.text.chars().count() <= 4_000));

    let long = paragraph.repeat(40); // ~40 000 characters: a file
    let file = rig.adapter.post(&channel, &long).await.expect("upload");
    let uploaded = rig
        .slack
        .files()
        .into_iter()
        .find(|f| f.id == file.message_id)
        .expect("a file");
    assert_eq!(uploaded.content.as_deref(), Some(long.as_str()));
    assert_eq!(uploaded.channel.as_deref(), Some("C1"));
    assert_eq!(uploaded.thread_ts.as_deref(), Some("1700000000.000001"));
    assert!(
        uploaded
            .comment
            .as_deref()
            .is_some_and(|c| c.contains("is attached")),
        "{uploaded:?}"
    );
    // No message wall: the one message more is the file's share in the thread.
    let after = rig.slack.bot_messages_in("C1", Some("1700000000.000001"));
    assert_eq!(after.len(), posted.len() + 1, "no message wall");
    assert_eq!(
        after.last().map(|m| m.files.clone()),
        Some(vec![uploaded.id.clone()])
    );
    rig.stop().await;
}

#[tokio::test]
async fn an_event_the_orchestrator_did_not_take_is_not_acknowledged_and_comes_back() {
    let slack = FakeSlack::start().await.expect("fake slack");
    let mut settings = SlackSettings::new(BOT_TOKEN.to_owned().into(), APP_TOKEN.to_owned().into());
    settings.api_url = Some(slack.api_url());
    settings.reconnect_delay = Duration::from_secs(1);
    settings.connections = 1;
    let adapter = SlackAdapter::new(settings).expect("adapter");
    let (tx, mut raw) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { adapter.run(tx, stop).await })
    };
    slack
        .wait_for(WAIT, |s| s.is_connected().then_some(()))
        .await
        .expect("connected");
    let posted = slack.post_as_user("U1", "C1", &format!("{} hi", FakeSlack::mention()), None);
    let take = |item: Option<Inbound>| match item {
        Some(Inbound::Receipted { item, receipt }) => (*item, receipt),
        other => panic!("{other:?}"),
    };
    // The store failed: the receipt says "not taken", so Slack gets no ack.
    let (first, receipt) = take(tokio::time::timeout(WAIT, raw.recv()).await.expect("item"));
    receipt.done(false);
    assert!(
        matches!(first, Inbound::Message(ref m) if m.message_id == format!("C1:{}", posted.ts))
    );
    // The app_mention twin of the message is handed over too (the first was not taken).
    let (_, receipt) = take(tokio::time::timeout(WAIT, raw.recv()).await.expect("twin"));
    receipt.done(false);
    assert_eq!(slack.unacknowledged(), 2);
    // Slack sends unacknowledged envelopes again on the next connection.
    slack.drop_connection();
    let (again, receipt) = take(
        tokio::time::timeout(WAIT, raw.recv())
            .await
            .expect("redelivered"),
    );
    receipt.done(true);
    assert_eq!(again, first);
    slack
        .wait_for(WAIT, |s| (s.unacknowledged() == 0).then_some(()))
        .await
        .expect("acknowledged once taken");
    assert!(
        raw.try_recv().is_err(),
        "the twin was dropped as a duplicate"
    );
    stop.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}
