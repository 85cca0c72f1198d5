//! What a Slack message means for loop: pure decisions, tested without a network.
//!
//! A mention in a channel starts a thread session rooted at that message; replies in a thread
//! loop takes part in continue it (with or without a mention, as configured); a DM works like a
//! mention. Messages from bots (loop included) are ignored; people and channels outside the
//! allowlists are refused politely when they try to start something, and ignored otherwise.

use std::collections::{HashSet, VecDeque};

use loop_adapter::{
    Author, ChannelKey, ChatCommand, Inbound, Message, PlatformKind, parse_command,
};

/// A message event, reduced to what the decision needs (from `message` or `app_mention`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncomingMessage {
    pub channel: String,
    pub is_dm: bool,
    pub user: Option<String>,
    pub bot_id: Option<String>,
    /// Slack's `subtype`, when there is one (`bot_message`, `message_changed`, ...).
    pub subtype: Option<String>,
    pub text: String,
    pub ts: String,
    pub thread_ts: Option<String>,
}

/// The rules that do not change while the adapter runs.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub bot_user: String,
    pub require_mention_in_threads: bool,
    /// Empty: everyone.
    pub allowed_users: Vec<String>,
    /// Empty: every channel. DMs are governed by `allowed_users` only.
    pub allowed_channels: Vec<String>,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Ignore(&'static str),
    /// Hand this to the orchestrator.
    Forward(Inbound),
    /// Tell the person, privately, that they cannot start runs here.
    Refuse {
        channel: String,
        user: String,
        thread_ts: Option<String>,
        text: String,
    },
}

/// Subtypes that are still a person's message; every other subtype (edits, joins, topic
/// changes, deletions) is not something to answer.
const PERSON_SUBTYPES: &[&str] = &["file_share", "thread_broadcast", "me_message"];

pub const REFUSAL: &str = "Sorry, you are not on the list of people who can start loop runs here. Ask an admin to add you to `slack.allowed_users`.";
pub const CHANNEL_REFUSAL: &str =
    "Sorry, loop does not run in this channel. Ask an admin to add it to `slack.allowed_channels`.";

/// The idempotency key of a Slack message: its ts is unique within its channel only.
pub fn message_id(channel: &str, ts: &str) -> String {
    format!("{channel}:{ts}")
}

/// The ts part of a message id made by [`message_id`] (or the id itself).
pub fn ts_of(message_id: &str) -> &str {
    message_id.rsplit(':').next().unwrap_or(message_id)
}

/// Decides what a message means. `known_thread` says whether loop takes part in a thread.
pub fn decide(
    message: &IncomingMessage,
    rules: &Rules,
    known_thread: impl Fn(&str, &str) -> bool,
) -> Decision {
    if message.bot_id.is_some()
        || message.subtype.as_deref() == Some("bot_message")
        || message.user.as_deref() == Some(rules.bot_user.as_str())
    {
        return Decision::Ignore("a bot's message");
    }
    if let Some(subtype) = &message.subtype
        && !PERSON_SUBTYPES.contains(&subtype.as_str())
    {
        return Decision::Ignore("not a new message");
    }
    let Some(user) = message.user.clone() else {
        return Decision::Ignore("no author");
    };
    let mention = format!("<@{}>", rules.bot_user);
    let mentioned = !rules.bot_user.is_empty() && message.text.contains(&mention);
    let text = message.text.replace(&mention, " ").trim().to_owned();
    let reply_in = message
        .thread_ts
        .as_deref()
        .filter(|thread| *thread != message.ts);
    let root = reply_in.unwrap_or(&message.ts).to_owned();

    let triggers = if message.is_dm {
        true
    } else if let Some(thread) = reply_in {
        if known_thread(&message.channel, thread) {
            mentioned || !rules.require_mention_in_threads
        } else if mentioned {
            true
        } else {
            return Decision::Ignore("a thread loop is not part of");
        }
    } else if mentioned {
        true
    } else {
        return Decision::Ignore("a channel message without a mention");
    };

    let user_allowed = rules.allowed_users.is_empty() || rules.allowed_users.contains(&user);
    let channel_allowed = message.is_dm
        || rules.allowed_channels.is_empty()
        || rules.allowed_channels.contains(&message.channel);
    if !(user_allowed && channel_allowed) {
        if !triggers {
            return Decision::Ignore("an outsider's message");
        }
        return Decision::Refuse {
            channel: message.channel.clone(),
            user,
            thread_ts: Some(root),
            text: if channel_allowed {
                REFUSAL
            } else {
                CHANNEL_REFUSAL
            }
            .to_owned(),
        };
    }

    let channel = ChannelKey::thread(PlatformKind::Slack, &message.channel, root);
    let author = Author {
        id: user.clone(),
        name: user,
        is_bot: false,
        roles: Vec::new(),
    };
    match parse_command(&text) {
        Some(ChatCommand::Prompt(prompt)) => forward(message, channel, author, prompt, true),
        Some(command) if triggers => Decision::Forward(Inbound::Command {
            channel,
            author,
            command,
        }),
        _ => forward(message, channel, author, text, triggers),
    }
}

fn forward(
    message: &IncomingMessage,
    channel: ChannelKey,
    author: Author,
    text: String,
    triggers: bool,
) -> Decision {
    Decision::Forward(Inbound::Message(Message {
        message_id: message_id(&message.channel, &message.ts),
        channel,
        author,
        text,
        triggers,
        work_dir: None,
    }))
}

/// A bounded set of recently seen keys (event ids, message ids): Slack redelivers an event it
/// thinks was not acknowledged, and a mention arrives as both `message` and `app_mention`.
#[derive(Debug, Default)]
pub struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

/// Keys remembered; far more than Slack redelivers (it retries within minutes).
const RECENT_CAPACITY: usize = 20_000;

impl Recent {
    pub fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    pub fn insert(&mut self, key: &str) {
        if self.set.insert(key.to_owned()) {
            self.order.push_back(key.to_owned());
            if self.order.len() > RECENT_CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            bot_user: "UBOT".into(),
            require_mention_in_threads: false,
            allowed_users: vec![],
            allowed_channels: vec![],
        }
    }

    fn msg(
        channel: &str,
        user: &str,
        text: &str,
        ts: &str,
        thread: Option<&str>,
    ) -> IncomingMessage {
        IncomingMessage {
            channel: channel.into(),
            is_dm: channel.starts_with('D'),
            user: Some(user.into()),
            text: text.into(),
            ts: ts.into(),
            thread_ts: thread.map(Into::into),
            ..Default::default()
        }
    }

    /// (channel key, text, triggers) of a forwarded message.
    fn forwarded(decision: &Decision) -> Option<(String, String, bool)> {
        match decision {
            Decision::Forward(Inbound::Message(m)) => {
                Some((m.channel.to_string(), m.text.clone(), m.triggers))
            }
            _ => None,
        }
    }

    #[test]
    fn mentions_start_threads_and_replies_continue_them() {
        let known = |_: &str, thread: &str| thread == "1.0";
        type Case = (
            IncomingMessage,
            Rules,
            Option<(&'static str, &'static str, bool)>,
        );
        let cases: Vec<Case> = vec![
            // A mention at the top level starts a thread session rooted at it.
            (
                msg("C1", "U1", "<@UBOT> fix it", "2.0", None),
                rules(),
                Some(("slack:C1:2.0", "fix it", true)),
            ),
            // A reply in a known thread continues it, mention or not.
            (
                msg("C1", "U1", "and the docs", "3.0", Some("1.0")),
                rules(),
                Some(("slack:C1:1.0", "and the docs", true)),
            ),
            // ...unless mentions are required there: then it is context.
            (
                msg("C1", "U1", "and the docs", "3.0", Some("1.0")),
                Rules {
                    require_mention_in_threads: true,
                    ..rules()
                },
                Some(("slack:C1:1.0", "and the docs", false)),
            ),
            // A mention in an unknown thread joins that thread.
            (
                msg("C1", "U1", "<@UBOT> look", "4.0", Some("9.0")),
                rules(),
                Some(("slack:C1:9.0", "look", true)),
            ),
            // A DM works like a mention.
            (
                msg("D1", "U1", "hello", "5.0", None),
                rules(),
                Some(("slack:D1:5.0", "hello", true)),
            ),
            // Plain chatter is not loop's business.
            (msg("C1", "U1", "lunch?", "6.0", None), rules(), None),
            (msg("C1", "U1", "lunch?", "6.0", Some("9.0")), rules(), None),
        ];
        for (message, rules, expected) in cases {
            let decision = decide(&message, &rules, known);
            let got = forwarded(&decision);
            let expected = expected.map(|(k, t, tr)| (k.to_owned(), t.to_owned(), tr));
            assert_eq!(got, expected, "{message:?} -> {decision:?}");
        }
    }

    #[test]
    fn bots_and_non_messages_are_ignored() {
        let never = |_: &str, _: &str| false;
        let mut own = msg("C1", "UBOT", "<@UBOT> echo", "1.0", None);
        assert!(matches!(decide(&own, &rules(), never), Decision::Ignore(_)));
        own.user = Some("U9".into());
        own.bot_id = Some("B9".into());
        assert!(matches!(decide(&own, &rules(), never), Decision::Ignore(_)));
        let mut edit = msg("C1", "U1", "<@UBOT> hi", "1.0", None);
        edit.subtype = Some("message_changed".into());
        assert!(matches!(
            decide(&edit, &rules(), never),
            Decision::Ignore(_)
        ));
        edit.subtype = Some("file_share".into());
        assert!(forwarded(&decide(&edit, &rules(), never)).is_some());
    }

    #[test]
    fn outsiders_are_refused_politely() {
        let never = |_: &str, _: &str| false;
        let strict = Rules {
            allowed_users: vec!["U1".into()],
            allowed_channels: vec!["C1".into()],
            ..rules()
        };
        assert!(
            forwarded(&decide(
                &msg("C1", "U1", "<@UBOT> go", "1.0", None),
                &strict,
                never
            ))
            .is_some()
        );
        match decide(&msg("C1", "U2", "<@UBOT> go", "1.0", None), &strict, never) {
            Decision::Refuse {
                user,
                thread_ts,
                text,
                ..
            } => {
                assert_eq!(user, "U2");
                assert_eq!(thread_ts.as_deref(), Some("1.0"));
                assert_eq!(text, REFUSAL);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&msg("C2", "U1", "<@UBOT> go", "1.0", None), &strict, never),
            Decision::Refuse { text, .. } if text == CHANNEL_REFUSAL
        ));
        // DMs are not channel-restricted.
        assert!(forwarded(&decide(&msg("D1", "U1", "go", "1.0", None), &strict, never)).is_some());
    }

    #[test]
    fn commands_in_threads_are_commands() {
        let known = |_: &str, _: &str| true;
        match decide(
            &msg("C1", "U1", "!loop stop", "2.0", Some("1.0")),
            &rules(),
            known,
        ) {
            Decision::Forward(Inbound::Command {
                channel, command, ..
            }) => {
                assert_eq!(channel.to_string(), "slack:C1:1.0");
                assert_eq!(command, ChatCommand::Stop);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            forwarded(&decide(
                &msg("C1", "U1", "<@UBOT> !loop write a test", "2.0", None),
                &rules(),
                known
            )),
            Some(("slack:C1:2.0".into(), "write a test".into(), true))
        );
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(ts_of(&message_id("C1", "1700.0001")), "1700.0001");
        assert_eq!(ts_of("1700.0001"), "1700.0001");
        let mut recent = Recent::default();
        recent.insert("Ev1");
        assert!(recent.contains("Ev1") && !recent.contains("Ev2"));
    }
}
