//! Slack fixtures shared by the end-to-end tests: a daemon config serving the fake Slack of
//! `loop-fakes`, and waiting for the connection and for a thread's messages.

use std::time::Duration;

use loop_fakes::model::FakeModel;
use loop_fakes::slack::{APP_TOKEN, BOT_TOKEN, FakeSlack, SlackMessage};

use crate::daemon::{Daemon, test_config};

/// How long the daemon may take to connect to Socket Mode.
const CONNECT: Duration = Duration::from_secs(30);

/// A daemon config serving Slack through `slack`, plus `extra` top-level JSON fields.
pub fn slack_config(
    model: &FakeModel,
    slack: &FakeSlack,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    let extra = format!(
        r#""slack_bot_token": "{BOT_TOKEN}",
  "slack_app_token": "{APP_TOKEN}",
  "slack": {{"api_url": "{api}", "allowed_users": ["UALICE", "UBOSS"]}},
  "permissions": {{"approvers": {{"users": ["UBOSS"]}}}}{sep}{extra}"#,
        api = slack.api_url(),
        sep = if extra.is_empty() { "" } else { ",\n  " },
    );
    test_config(model.port(), dir, &extra).replace(
        r#""platforms": ["local"]"#,
        r#""platforms": ["local", "slack"]"#,
    )
}

/// Waits for the daemon to connect to the fake Slack's Socket Mode.
pub async fn connected(slack: &FakeSlack, daemon: &Daemon) {
    if slack
        .wait_for(CONNECT, |s| s.is_connected().then_some(()))
        .await
        .is_none()
    {
        panic!(
            "the daemon did not connect to Socket Mode\n--- daemon log ---\n{}",
            daemon.log_text()
        );
    }
}

/// Waits for the bot's messages in a thread to satisfy `check`.
pub async fn thread_until(
    slack: &FakeSlack,
    daemon: &Daemon,
    channel: &str,
    thread: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[SlackMessage]) -> bool,
) -> Vec<SlackMessage> {
    match slack
        .wait_for(timeout, |s| {
            let messages = s.bot_messages_in(channel, Some(thread));
            check(&messages).then_some(messages)
        })
        .await
    {
        Some(messages) => messages,
        None => panic!(
            "timed out waiting for {what}; thread: {:#?}\n--- daemon log ---\n{}",
            slack.bot_messages_in(channel, Some(thread)),
            daemon.log_text()
        ),
    }
}

/// Waits for the bot's first message in `channel` (outside threads: replies to slash commands
/// and notices) that contains `needle`.
pub async fn reply_in(
    slack: &FakeSlack,
    daemon: &Daemon,
    channel: &str,
    needle: &str,
    timeout: Duration,
) -> SlackMessage {
    slack
        .wait_for(timeout, |s| {
            s.bot_messages_in(channel, None)
                .into_iter()
                .find(|m| m.text.contains(needle))
        })
        .await
        .unwrap_or_else(|| panic!("no reply {needle:?}\n{}", daemon.log_text()))
}

/// `/loop dir DIR` in `channel` as `user` types it, once the answer says the channel now works
/// there.
pub async fn point_channel(
    slack: &FakeSlack,
    daemon: &Daemon,
    user: &str,
    channel: &str,
    dir: &std::path::Path,
) {
    slack.slash_command(user, channel, "/loop", &format!("dir {}", dir.display()));
    reply_in(
        slack,
        daemon,
        channel,
        "now works in",
        Duration::from_secs(60),
    )
    .await;
}

/// Whether one of `messages` contains `needle`.
pub fn has_text(messages: &[SlackMessage], needle: &str) -> bool {
    messages.iter().any(|m| m.text.contains(needle))
}
