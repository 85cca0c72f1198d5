//! One story of store operations, run against SQLite and (when configured) PostgreSQL.

use loop_adapter::{Author, ChannelKey, Message, PlatformKind};

use super::test_support::TestDb;
use super::*;

fn message(channel: &ChannelKey, id: &str, text: &str, triggers: bool) -> Message {
    Message {
        message_id: id.to_owned(),
        channel: channel.clone(),
        author: Author {
            id: "U1".into(),
            name: "alice".into(),
            is_bot: false,
            roles: vec![],
        },
        text: text.to_owned(),
        triggers,
        work_dir: None,
    }
}

#[tokio::test]
async fn inbox_run_and_outbox_story() {
    for db in TestDb::all().await {
        let store = db.store();
        let backend = db.backend();
        let channel = ChannelKey::thread(PlatformKind::Slack, "C1", "1700.1");
        let key = channel.to_string();

        // Accepting is idempotent on the platform's message id.
        let first = store
            .accept_message(&message(&channel, "m1", "context only", false))
            .await
            .expect("accept");
        assert!(matches!(first, Accepted::New(_)), "{backend}");
        assert_eq!(
            store
                .accept_message(&message(&channel, "m1", "context only", false))
                .await
                .expect("again"),
            Accepted::Duplicate,
            "{backend}"
        );
        // Context alone does not start a turn.
        assert!(
            store
                .channels_with_pending()
                .await
                .expect("pending")
                .is_empty(),
            "{backend}"
        );
        assert!(
            store
                .claim_pending(&key, "r0")
                .await
                .expect("claim")
                .is_empty(),
            "{backend}"
        );

        store
            .accept_message(&message(&channel, "m2", "please do it", true))
            .await
            .expect("accept");
        store
            .accept_message(&message(&channel, "m3", "and this too", true))
            .await
            .expect("accept");
        assert_eq!(
            store.channels_with_pending().await.expect("pending"),
            vec![key.clone()]
        );

        // One claim takes everything waiting, in order; a second claim gets nothing.
        let session = store
            .active_session(&channel, "/work")
            .await
            .expect("session");
        store
            .start_run("r1", &key, &session.id, RunOrigin::Chat, "prompt")
            .await
            .expect("start");
        let claimed = store.claim_pending(&key, "r1").await.expect("claim");
        let texts: Vec<&str> = claimed.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            vec!["context only", "please do it", "and this too"],
            "{backend}"
        );
        assert!(
            store
                .claim_pending(&key, "r2")
                .await
                .expect("claim")
                .is_empty()
        );

        // A crash mid-run: the next start finds the run and its status message, then
        // recovery marks it interrupted and re-queues its messages.
        store
            .set_run_status_message("r1", "1700.2")
            .await
            .expect("status message");
        assert_eq!(
            store.unfinished_runs().await.expect("unfinished"),
            vec![UnfinishedRun {
                id: "r1".into(),
                channel_key: key.clone(),
                status_message_id: Some("1700.2".into()),
            }],
            "{backend}"
        );
        assert_eq!(
            store.recover_interrupted_runs().await.expect("recover"),
            vec!["r1".to_owned()]
        );
        assert_eq!(
            store.run("r1").await.expect("run").status,
            RunStatus::Interrupted
        );
        let again = store.claim_pending(&key, "r2").await.expect("claim");
        assert_eq!(again.len(), 3, "{backend}");
        assert!(again.iter().all(|m| m.attempts == 1), "{backend}");

        // Finishing is atomic: run recorded, messages done, answer queued.
        store
            .start_run("r2", &key, &session.id, RunOrigin::Chat, "prompt")
            .await
            .expect("start");
        store
            .finish_run(
                "r2",
                &key,
                RunStatus::Succeeded,
                RunFinish {
                    answer: Some("done".into()),
                    claude_session_id: Some("claude-1".into()),
                    input_tokens: 100,
                    output_tokens: 20,
                    cost_usd: 0.5,
                    ..Default::default()
                },
                Some((OutboxKind::Answer, "done".into())),
            )
            .await
            .expect("finish");
        let messages = store.channel_messages(&key).await.expect("messages");
        assert!(
            messages.iter().all(|m| m.status == InboxStatus::Done),
            "{backend}: {messages:?}"
        );
        let outbox = store.pending_outbox().await.expect("outbox");
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].body, "done");
        let claim = store
            .claim_outbox(outbox[0].id, now_ms(), 60_000)
            .await
            .expect("claim")
            .expect("claimed");
        assert!(
            store
                .record_parts_sent(&claim, 1, Some("ts-1"), now_ms(), 60_000)
                .await
                .expect("part")
        );
        assert!(store.mark_sent(&claim).await.expect("sent"));
        assert!(store.pending_outbox().await.expect("outbox").is_empty());

        // Usage per channel.
        let usage = store.usage().await.expect("usage");
        let row = usage
            .iter()
            .find(|u| u.channel_key == key)
            .expect("usage row");
        assert_eq!(
            (row.input_tokens, row.output_tokens),
            (100, 20),
            "{backend}"
        );
        assert!((store.channel_cost(&key).await.expect("cost") - 0.5).abs() < 1e-9);

        // Sessions: the Claude id sticks until the channel is reset or moved.
        store
            .set_claude_session(&session.id, "claude-1")
            .await
            .expect("set");
        let same = store
            .active_session(&channel, "/elsewhere")
            .await
            .expect("session");
        assert_eq!(same.claude_session_id.as_deref(), Some("claude-1"));
        store
            .set_channel_work_dir(&channel.parent(), "/projects/app")
            .await
            .expect("dir");
        assert_eq!(
            store
                .channel_work_dir(&channel)
                .await
                .expect("dir")
                .as_deref(),
            Some("/projects/app")
        );
        store.close_sessions(&channel).await.expect("close");
        let fresh = store
            .active_session(&channel, "/projects/app")
            .await
            .expect("session");
        assert_ne!(fresh.id, session.id);
        assert_eq!(fresh.claude_session_id, None);
    }
}

#[tokio::test]
async fn a_run_the_engine_cut_short_is_requeued_with_its_messages() {
    for db in TestDb::all().await {
        let store = db.store();
        let backend = db.backend();
        let channel = ChannelKey::thread(PlatformKind::Slack, "C2", "1700.5");
        let key = channel.to_string();
        store
            .accept_message(&message(&channel, "c", "some chatter", false))
            .await
            .expect("accept");
        store
            .accept_message(&message(&channel, "t", "do the thing", true))
            .await
            .expect("accept");
        let session = store
            .active_session(&channel, "/work")
            .await
            .expect("session");
        store
            .start_run("lost", &key, &session.id, RunOrigin::Chat, "prompt")
            .await
            .expect("start");
        assert_eq!(
            store
                .claim_pending(&key, "lost")
                .await
                .expect("claim")
                .len(),
            2
        );

        store
            .requeue_run("lost", "the Docker engine stopped answering")
            .await
            .expect("requeue");
        let run = store.run("lost").await.expect("run");
        assert_eq!(run.status, RunStatus::Interrupted, "{backend}");
        assert_eq!(
            run.error.as_deref(),
            Some("the Docker engine stopped answering")
        );
        assert!(run.finished_at.is_some());
        assert!(
            store
                .unfinished_runs()
                .await
                .expect("unfinished")
                .is_empty(),
            "{backend}: nothing left running"
        );
        let messages = store.channel_messages(&key).await.expect("messages");
        let states: Vec<(InboxStatus, i32, Option<String>)> = messages
            .iter()
            .map(|m| (m.status, m.attempts, m.run_id.clone()))
            .collect();
        assert_eq!(
            states,
            vec![
                (InboxStatus::Context, 1, None),
                (InboxStatus::Pending, 1, None)
            ],
            "{backend}"
        );
        // The next run takes both again.
        assert_eq!(
            store
                .claim_pending(&key, "again")
                .await
                .expect("claim")
                .len(),
            2
        );
    }
}

#[tokio::test]
async fn huge_messages_are_truncated_not_refused() {
    let db = TestDb::sqlite().await;
    let channel = ChannelKey::channel(PlatformKind::Local, "big");
    let text = "x".repeat(MAX_MESSAGE_CHARS + 50);
    let Accepted::New(id) = db
        .store()
        .accept_message(&message(&channel, "big1", &text, true))
        .await
        .expect("accept")
    else {
        panic!("must be new");
    };
    let stored = db.store().inbox_message(id).await.expect("stored");
    assert!(stored.text.ends_with("[message truncated by loop]"));
    assert!(stored.text.chars().count() < MAX_MESSAGE_CHARS + 100);
}

#[tokio::test]
async fn outbox_claims_story() {
    for db in TestDb::all().await {
        let store = db.store();
        let backend = db.backend();
        let first = store
            .enqueue_notice("slack:C1", "one")
            .await
            .expect("queue");
        let second = store
            .enqueue_notice("slack:C1", "two")
            .await
            .expect("queue");
        let queued = store.deliverable_outbox(1_000).await.expect("outbox");
        assert_eq!(
            queued.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![first, second],
            "{backend}"
        );
        assert!(queued.iter().all(|m| m.parts_sent == 0), "{backend}");
        assert!(
            queued[0].delivery_key.len() == 16 && queued[0].delivery_key != queued[1].delivery_key,
            "{backend}: {queued:?}"
        );

        // A claim holds its message until the lease runs out.
        let held = store
            .claim_outbox(first, 1_000, 100)
            .await
            .expect("claim")
            .expect("the first claim wins");
        assert_eq!(
            store.claim_outbox(first, 1_050, 100).await.expect("claim"),
            None,
            "{backend}"
        );
        let free: Vec<i64> = store
            .deliverable_outbox(1_050)
            .await
            .expect("outbox")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(free, vec![second], "{backend}");

        // Of many claimers racing for one message, exactly one wins.
        let racers = (0..20).map(|_| store.claim_outbox(second, 1_000, 100));
        let won = futures::future::join_all(racers)
            .await
            .into_iter()
            .map(|claim| claim.expect("claim"))
            .filter(Option::is_some)
            .count();
        assert_eq!(won, 1, "{backend}");

        // Each posted part is recorded and renews the lease.
        assert!(
            store
                .record_parts_sent(&held, 1, Some("ts-1"), 1_060, 100)
                .await
                .expect("part"),
            "{backend}"
        );
        assert_eq!(
            store.claim_outbox(first, 1_150, 100).await.expect("claim"),
            None,
            "{backend}: the lease was renewed"
        );
        // The holder stalls past its lease: someone else takes the message over, and resumes
        // after the part already posted; the old holder can record nothing any more.
        let taken = store
            .claim_outbox(first, 1_161, 100)
            .await
            .expect("claim")
            .expect("an expired claim can be taken");
        assert!(
            !store
                .record_parts_sent(&held, 2, None, 1_170, 100)
                .await
                .expect("part"),
            "{backend}"
        );
        assert!(!store.mark_sent(&held).await.expect("sent"), "{backend}");
        let message = store.outbox_message(first).await.expect("message");
        assert_eq!(
            (message.parts_sent, message.platform_message_id.as_deref()),
            (1, Some("ts-1")),
            "{backend}"
        );

        // A failed post releases the claim and counts; the last allowed failure gives up.
        store.mark_send_failed(&taken, 2).await.expect("failed");
        let message = store.outbox_message(first).await.expect("message");
        assert_eq!(
            (message.status, message.attempts),
            (OutboxStatus::Pending, 1),
            "{backend}"
        );
        let again = store
            .claim_outbox(first, 1_171, 100)
            .await
            .expect("claim")
            .expect("released at once");
        store.mark_send_failed(&again, 2).await.expect("failed");
        assert_eq!(
            store.outbox_message(first).await.expect("message").status,
            OutboxStatus::Failed,
            "{backend}"
        );
        assert_eq!(
            store.claim_outbox(first, 5_000, 100).await.expect("claim"),
            None,
            "{backend}: a failed message is not claimed again"
        );

        // At start-up no deliverer is alive: every claim is dropped, however fresh.
        assert_eq!(
            store.release_outbox_claims().await.expect("release"),
            1,
            "{backend}"
        );
        let claim = store
            .claim_outbox(second, 1_001, 100)
            .await
            .expect("claim")
            .expect("released");
        assert!(store.mark_sent(&claim).await.expect("sent"), "{backend}");
        assert_eq!(
            store.outbox_message(second).await.expect("message").status,
            OutboxStatus::Sent,
            "{backend}"
        );
        assert!(
            store.pending_outbox().await.expect("outbox").is_empty(),
            "{backend}"
        );
    }
}
