//! The Events API option: signed HTTP requests in Slack's documented shapes (url_verification,
//! event_callback, block_actions as a `payload` form field, slash commands as a form), with
//! bad signatures and replays refused.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use loop_adapter::{ApprovalChoice, ChatCommand, Inbound};
use loop_adapter_slack::{EventsApiSettings, SlackAdapter, SlackSettings, events_api};
use loop_fakes::slack::{APP_TOKEN, BOT_TOKEN, BOT_USER};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn sign(timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

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
    url: String,
    http: reqwest::Client,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    _slack: loop_fakes::slack::FakeSlack,
}

impl Rig {
    async fn start() -> Rig {
        let slack = loop_fakes::slack::FakeSlack::start().await.expect("fake");
        let mut settings =
            SlackSettings::new(BOT_TOKEN.to_owned().into(), APP_TOKEN.to_owned().into());
        settings.api_url = Some(slack.api_url());
        settings.approvers = vec!["UBOSS".into()];
        let events = EventsApiSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            signing_secret: SECRET.to_owned().into(),
        };
        settings.events_api = Some(events.clone());
        let adapter = SlackAdapter::new(settings).expect("adapter");
        let (tx, raw) = mpsc::channel(8);
        let inbound = take_as_orchestrator(raw);
        let listener = tokio::net::TcpListener::bind(events.listen)
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        // Without `run`, the bot's own id is unknown: mentions are matched by an empty id, so
        // the test uses a DM (which needs no mention) for the message case.
        tokio::spawn(axum::serve(listener, events_api::router(adapter, &events, tx)).into_future());
        Rig {
            url,
            http: reqwest::Client::new(),
            inbound,
            _slack: slack,
        }
    }

    async fn send(
        &self,
        path: &str,
        body: &str,
        content_type: &str,
        timestamp: i64,
        signature: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    async fn signed(&self, path: &str, body: &str, content_type: &str) -> reqwest::Response {
        let ts = now();
        self.send(path, body, content_type, ts, &sign(ts, body))
            .await
    }

    async fn next(&mut self) -> Inbound {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.recv())
            .await
            .expect("an inbound item in time")
            .expect("channel open")
    }
}

#[tokio::test]
async fn signed_requests_are_accepted_and_forgeries_and_replays_refused() {
    let mut rig = Rig::start().await;
    let json_type = "application/json";

    let challenge = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let response = rig.signed("/slack/events", &challenge, json_type).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.expect("body"),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let event = json!({
        "token": "t", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": "Ev0001", "event_time": 1_700_000_000,
        "event": {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1",
                  "text": "hello from a DM", "ts": "1700000000.000100", "event_ts": "1700000000.000100"}
    })
    .to_string();
    // A forged signature, and a correct signature on a five-minutes-old request: refused.
    let ts = now();
    assert_eq!(
        rig.send("/slack/events", &event, json_type, ts, "v0=deadbeef")
            .await
            .status(),
        401
    );
    let old = now() - 6 * 60;
    assert_eq!(
        rig.send("/slack/events", &event, json_type, old, &sign(old, &event))
            .await
            .status(),
        401
    );
    assert!(rig.inbound.try_recv().is_err(), "nothing was handed on");

    assert_eq!(
        rig.signed("/slack/events", &event, json_type)
            .await
            .status(),
        200
    );
    match rig.next().await {
        Inbound::Message(message) => {
            assert_eq!(message.channel.to_string(), "slack:D1:1700000000.000100");
            assert_eq!(message.text, "hello from a DM");
            assert!(message.triggers);
        }
        other => panic!("{other:?}"),
    }
    // Slack's retry of the same event id is acknowledged and dropped.
    assert_eq!(
        rig.signed("/slack/events", &event, json_type)
            .await
            .status(),
        200
    );
    assert!(rig.inbound.try_recv().is_err());

    let form_type = "application/x-www-form-urlencoded";
    let click = json!({
        "type": "block_actions",
        "user": {"id": "UBOSS", "username": "boss", "name": "boss", "team_id": "T0001"},
        "api_app_id": "A0001", "token": "t",
        "container": {"type": "message", "message_ts": "1700000000.000200", "channel_id": "C1", "is_ephemeral": false},
        "trigger_id": "1.2.3", "team": {"id": "T0001", "domain": "fake"},
        "channel": {"id": "C1", "name": "general"},
        "message": {"type": "message", "user": BOT_USER, "ts": "1700000000.000200", "thread_ts": "1700000000.000100", "text": "prompt"},
        "response_url": "https://hooks.invalid/x",
        "actions": [{"action_id": "loop_deny", "block_id": "loop_approval", "value": "ap9",
                     "type": "button", "action_ts": "1700000001.0",
                     "text": {"type": "plain_text", "text": "Deny"}}]
    })
    .to_string();
    let body = serde_urlencoded::to_string([("payload", click.as_str())]).expect("form");
    assert_eq!(
        rig.signed("/slack/interactions", &body, form_type)
            .await
            .status(),
        200
    );
    match rig.next().await {
        Inbound::Approval {
            channel,
            approval_id,
            choice,
            decided_by,
        } => {
            assert_eq!(channel.to_string(), "slack:C1:1700000000.000100");
            assert_eq!(approval_id, "ap9");
            assert_eq!(choice, ApprovalChoice::Deny);
            assert_eq!(decided_by.id, "UBOSS");
        }
        other => panic!("{other:?}"),
    }

    let command = serde_urlencoded::to_string([
        ("token", "t"),
        ("team_id", "T0001"),
        ("channel_id", "C1"),
        ("user_id", "U1"),
        ("command", "/loop"),
        ("text", "status"),
        ("response_url", "https://hooks.invalid/y"),
        ("trigger_id", "1.2.4"),
    ])
    .expect("form");
    let response = rig.signed("/slack/commands", &command, form_type).await;
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value = response.json().await.expect("json");
    assert_eq!(reply["response_type"], "ephemeral");
    assert!(matches!(
        rig.next().await,
        Inbound::Command {
            command: ChatCommand::Status,
            ..
        }
    ));
}
