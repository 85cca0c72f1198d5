//! What a Discord message means for loop: pure decisions, tested without a network.
//!
//! A mention in a guild channel starts a thread session on that message; messages in a thread
//! loop takes part in continue it (with or without a mention, as configured); a DM channel is
//! one session, every message in it a trigger. Bots (loop included) and webhooks are ignored;
//! people, guilds and channels outside the allowlists are refused when they try to start
//! something, and ignored otherwise.

use std::collections::{HashSet, VecDeque};

/// A `MESSAGE_CREATE`, reduced to what the decision needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IncomingMessage {
    pub message_id: String,
    /// The channel the message is in (a thread's own id for a message in a thread).
    pub channel_id: String,
    /// `None` in a DM.
    pub guild_id: Option<String>,
    /// The parent channel when `channel_id` is a thread.
    pub thread_parent: Option<String>,
    pub author_id: String,
    pub author_bot: bool,
    /// Webhook and system messages are not a person's.
    pub webhook_or_system: bool,
    pub text: String,
    /// Whether the bot is among the message's user mentions.
    pub mentions_bot: bool,
}

/// The rules that do not change while the adapter runs.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub bot_user: String,
    pub require_mention_in_threads: bool,
    /// Empty: every guild the bot is in.
    pub allowed_guilds: Vec<String>,
    /// Empty: every channel. Threads are governed by their parent.
    pub allowed_channels: Vec<String>,
    /// Empty: everyone.
    pub allowed_users: Vec<String>,
}

/// Where a forwarded message's session lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A mention in a channel: create a thread from the message and run there.
    NewThread { channel: String },
    /// A message in a thread: `parent:thread`.
    Thread { parent: String, thread: String },
    /// A DM channel.
    Direct { channel: String },
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Ignore(&'static str),
    /// Hand the message (with its mention removed) to the orchestrator.
    Forward {
        route: Route,
        text: String,
        triggers: bool,
    },
    /// Tell the person that they cannot start runs here.
    Refuse(&'static str),
}

pub const REFUSAL: &str = "Sorry, you are not on the list of people who can start loop runs here. Ask an admin to add you to `discord.allowed_users`.";
pub const CHANNEL_REFUSAL: &str = "Sorry, loop does not run in this channel. Ask an admin to add it to `discord.allowed_channels` (or the server to `discord.allowed_guilds`).";

/// Decides what a message means. `known_thread` says whether loop takes part in a thread.
pub fn decide(
    message: &IncomingMessage,
    rules: &Rules,
    known_thread: impl Fn(&str) -> bool,
) -> Decision {
    if message.author_bot || message.author_id == rules.bot_user {
        return Decision::Ignore("a bot's message");
    }
    if message.webhook_or_system {
        return Decision::Ignore("not a person's message");
    }
    let mention = format!("<@{}>", rules.bot_user);
    let nick_mention = format!("<@!{}>", rules.bot_user);
    let mentioned = !rules.bot_user.is_empty()
        && (message.mentions_bot
            || message.text.contains(&mention)
            || message.text.contains(&nick_mention));
    let text = message
        .text
        .replace(&nick_mention, " ")
        .replace(&mention, " ")
        .trim()
        .to_owned();
    let is_dm = message.guild_id.is_none();

    let (route, triggers) = if is_dm {
        (
            Route::Direct {
                channel: message.channel_id.clone(),
            },
            true,
        )
    } else if let Some(parent) = &message.thread_parent {
        let route = Route::Thread {
            parent: parent.clone(),
            thread: message.channel_id.clone(),
        };
        if known_thread(&message.channel_id) {
            (route, mentioned || !rules.require_mention_in_threads)
        } else if mentioned {
            (route, true)
        } else {
            return Decision::Ignore("a thread loop is not part of");
        }
    } else if mentioned {
        (
            Route::NewThread {
                channel: message.channel_id.clone(),
            },
            true,
        )
    } else {
        return Decision::Ignore("a channel message without a mention");
    };

    let user_allowed = allowed(&rules.allowed_users, &message.author_id);
    let guild_allowed = message
        .guild_id
        .as_ref()
        .is_none_or(|g| allowed(&rules.allowed_guilds, g));
    let place = message
        .thread_parent
        .as_ref()
        .unwrap_or(&message.channel_id);
    let channel_allowed = is_dm || allowed(&rules.allowed_channels, place);
    if !(user_allowed && guild_allowed && channel_allowed) {
        if !triggers {
            return Decision::Ignore("an outsider's message");
        }
        return Decision::Refuse(if user_allowed {
            CHANNEL_REFUSAL
        } else {
            REFUSAL
        });
    }
    Decision::Forward {
        route,
        text,
        triggers,
    }
}

/// Whether `id` passes an allowlist (empty: everyone).
pub fn allowed(list: &[String], id: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == id)
}

/// A bounded set: the oldest entries are forgotten first.
#[derive(Debug, Default)]
pub struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    const CAPACITY: usize = 10_000;

    pub fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    /// Inserts `key`; `false` when it was already there.
    pub fn insert(&mut self, key: &str) -> bool {
        if !self.set.insert(key.to_owned()) {
            return false;
        }
        self.order.push_back(key.to_owned());
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub fn remove(&mut self, key: &str) {
        if self.set.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            bot_user: "100".into(),
            ..Rules::default()
        }
    }

    fn msg(text: &str) -> IncomingMessage {
        IncomingMessage {
            message_id: "1".into(),
            channel_id: "10".into(),
            guild_id: Some("5".into()),
            author_id: "7".into(),
            text: text.into(),
            ..IncomingMessage::default()
        }
    }

    #[test]
    fn decisions() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        // A mention in a channel makes a thread; the mention is removed.
        assert_eq!(
            decide(&msg("<@100> hi"), &rules(), none),
            Decision::Forward {
                route: Route::NewThread {
                    channel: "10".into()
                },
                text: "hi".into(),
                triggers: true
            }
        );
        assert!(matches!(
            decide(&msg("hi"), &rules(), none),
            Decision::Ignore(_)
        ));
        // Bots, loop itself and webhooks are ignored.
        let mut bot = msg("<@100> hi");
        bot.author_bot = true;
        assert!(matches!(decide(&bot, &rules(), none), Decision::Ignore(_)));
        let mut own = msg("<@100> hi");
        own.author_id = "100".into();
        assert!(matches!(decide(&own, &rules(), none), Decision::Ignore(_)));
        // In a known thread, a reply triggers unless a mention is required.
        let mut reply = msg("more");
        reply.thread_parent = Some("10".into());
        reply.channel_id = "11".into();
        assert!(matches!(
            decide(&reply, &rules(), all),
            Decision::Forward {
                triggers: true,
                route: Route::Thread { .. },
                ..
            }
        ));
        let strict = Rules {
            require_mention_in_threads: true,
            ..rules()
        };
        assert!(matches!(
            decide(&reply, &strict, all),
            Decision::Forward {
                triggers: false,
                ..
            }
        ));
        assert!(matches!(
            decide(&reply, &rules(), none),
            Decision::Ignore(_)
        ));
        // A DM is a session of its own.
        let mut dm = msg("hello");
        dm.guild_id = None;
        assert!(matches!(
            decide(&dm, &rules(), none),
            Decision::Forward {
                route: Route::Direct { .. },
                triggers: true,
                ..
            }
        ));
        // Allowlists refuse a trigger and ignore chatter.
        let closed = Rules {
            allowed_users: vec!["8".into()],
            ..rules()
        };
        assert_eq!(
            decide(&msg("<@!100> hi"), &closed, none),
            Decision::Refuse(REFUSAL)
        );
        let other_guild = Rules {
            allowed_guilds: vec!["6".into()],
            ..rules()
        };
        assert_eq!(
            decide(&msg("<@100> hi"), &other_guild, none),
            Decision::Refuse(CHANNEL_REFUSAL)
        );
        let channels = Rules {
            allowed_channels: vec!["10".into()],
            ..rules()
        };
        assert!(matches!(
            decide(&reply, &channels, all),
            Decision::Forward { .. }
        ));
    }

    #[test]
    fn recent_forgets_nothing_it_was_not_asked_to() {
        let mut recent = Recent::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        recent.remove("a");
        assert!(!recent.contains("a"));
    }
}
