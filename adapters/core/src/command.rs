//! Chat commands (`/loop ...` or `!loop ...`), parsed before anything touches state.

use serde::{Deserialize, Serialize};

/// What a person can ask of loop itself, as opposed to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatCommand {
    /// Show the channel's session, work dir and running turn.
    Status,
    /// Point the channel at a work directory.
    Dir(String),
    /// Stop the running turn (kills its container).
    Stop,
    /// Forget the Claude session: the next turn starts fresh.
    New,
    /// List the channel's scheduled tasks.
    Tasks,
    /// Show one scheduled task of the channel.
    Task(String),
    /// Cancel one scheduled task of the channel.
    Cancel(String),
    /// `/loop allow_user|allow_role WHO [owner]`, `/loop deny_user|deny_role WHO`: an owner
    /// changes who may use loop in this channel (and its threads).
    Grant {
        subject: GrantSubject,
        level: GrantLevel,
    },
    /// Ask the agent: `!loop <prompt>` is an ordinary turn.
    Prompt(String),
    /// Explain the commands.
    Help,
}

/// Who a grant is about: a platform user or a platform role (Discord), by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrantSubject {
    User(String),
    Role(String),
}

impl GrantSubject {
    pub fn kind(&self) -> &'static str {
        match self {
            GrantSubject::User(_) => "user",
            GrantSubject::Role(_) => "role",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            GrantSubject::User(id) | GrantSubject::Role(id) => id,
        }
    }
}

/// What a grant gives (or takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrantLevel {
    /// Everything, including these commands.
    Owner,
    /// Talk to the agent, stop and reset the channel's session.
    Member,
    /// Nothing, whatever `permissions.members` says (owners stay owners).
    Denied,
}

impl GrantLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantLevel::Owner => "owner",
            GrantLevel::Member => "member",
            GrantLevel::Denied => "denied",
        }
    }

    pub fn parse(text: &str) -> Option<GrantLevel> {
        match text {
            "owner" => Some(GrantLevel::Owner),
            "member" => Some(GrantLevel::Member),
            "denied" => Some(GrantLevel::Denied),
            _ => None,
        }
    }
}

/// A user or role as typed in chat: a bare id, or a mention (`<@U123>`, `<@U123|ann>`,
/// `<@!123>`, `<@&456>` for a Discord role). Names (`@ann`) cannot be resolved to ids here.
fn grant_subject(word: &str, role: bool) -> Option<GrantSubject> {
    let inner = match word.strip_prefix('<').and_then(|w| w.strip_suffix('>')) {
        Some(mention) => {
            let mention = mention.split('|').next().unwrap_or_default();
            let id = mention.strip_prefix('@')?;
            let id = id
                .strip_prefix('&')
                .or_else(|| id.strip_prefix('!'))
                .unwrap_or(id);
            id.to_owned()
        }
        None => word.to_owned(),
    };
    let valid = !inner.is_empty()
        && inner.len() <= 64
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return None;
    }
    Some(if role {
        GrantSubject::Role(inner)
    } else {
        GrantSubject::User(inner)
    })
}

fn grant(word: &str, arg: &str) -> Option<ChatCommand> {
    let (allow, role) = match word {
        "allow_user" => (true, false),
        "allow_role" => (true, true),
        "deny_user" => (false, false),
        "deny_role" => (false, true),
        _ => return None,
    };
    let mut words = arg.split_whitespace();
    let subject = grant_subject(words.next()?, role)?;
    let level = match (allow, words.next()) {
        (false, None) => GrantLevel::Denied,
        (true, None) | (true, Some("member")) => GrantLevel::Member,
        (true, Some("owner")) => GrantLevel::Owner,
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(ChatCommand::Grant { subject, level })
}

/// Parses `/loop status`, `!loop dir ~/src/app`, ... Returns `None` for text that is not
/// addressed to loop. Unknown subcommands are `Help`, so a typo gets an explanation.
pub fn parse_command(text: &str) -> Option<ChatCommand> {
    let text = text.trim();
    let rest = text
        .strip_prefix("/loop")
        .or_else(|| text.strip_prefix("!loop"))?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let rest = rest.trim();
    let (word, arg) = match rest.split_once(char::is_whitespace) {
        Some((word, arg)) => (word, arg.trim()),
        None => (rest, ""),
    };
    Some(match word.to_ascii_lowercase().as_str() {
        "" | "help" => ChatCommand::Help,
        "status" => ChatCommand::Status,
        "stop" => ChatCommand::Stop,
        "new" | "reset" => ChatCommand::New,
        "tasks" => ChatCommand::Tasks,
        "task" if !arg.is_empty() => ChatCommand::Task(arg.to_owned()),
        "cancel" if !arg.is_empty() => ChatCommand::Cancel(arg.to_owned()),
        "task" | "cancel" => ChatCommand::Tasks,
        "dir" if !arg.is_empty() => ChatCommand::Dir(arg.to_owned()),
        "dir" => ChatCommand::Status,
        "allow_user" | "allow_role" | "deny_user" | "deny_role" => {
            grant(&word.to_ascii_lowercase(), arg).unwrap_or(ChatCommand::Help)
        }
        _ if text.starts_with("!loop") => ChatCommand::Prompt(rest.to_owned()),
        _ => ChatCommand::Help,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<ChatCommand>) {
        assert_eq!(parse_command(input), expected, "{input:?}");
    }

    #[test]
    fn parses_grants() {
        let user = |id: &str| GrantSubject::User(id.to_owned());
        let grant = |subject, level| Some(ChatCommand::Grant { subject, level });
        check(
            "/loop allow_user U123",
            grant(user("U123"), GrantLevel::Member),
        );
        check(
            "/loop allow_user <@U123|ann> owner",
            grant(user("U123"), GrantLevel::Owner),
        );
        check(
            "/loop deny_user <@!42>",
            grant(user("42"), GrantLevel::Denied),
        );
        check(
            "/loop allow_role <@&77> member",
            grant(GrantSubject::Role("77".into()), GrantLevel::Member),
        );
        check(
            "/loop deny_role 77",
            grant(GrantSubject::Role("77".into()), GrantLevel::Denied),
        );
        // Typos and junk get the help text, never a grant.
        for bad in [
            "/loop allow_user",
            "/loop allow_user @ann",
            "/loop allow_user U1 admin",
            "/loop deny_user U1 owner",
            "/loop allow_user U1 owner extra",
            "/loop allow_user <#C1>",
            "/loop allow_user a;b",
        ] {
            check(bad, Some(ChatCommand::Help));
        }
    }

    #[test]
    fn parses_commands() {
        check("/loop status", Some(ChatCommand::Status));
        check("  !loop STOP ", Some(ChatCommand::Stop));
        check("/loop new", Some(ChatCommand::New));
        check("/loop tasks", Some(ChatCommand::Tasks));
        check(
            "/loop task ab12cd34",
            Some(ChatCommand::Task("ab12cd34".into())),
        );
        check(
            "!loop cancel ab12cd34",
            Some(ChatCommand::Cancel("ab12cd34".into())),
        );
        check("/loop cancel", Some(ChatCommand::Tasks));
        check(
            "/loop dir ~/src/app",
            Some(ChatCommand::Dir("~/src/app".into())),
        );
        check("/loop dir", Some(ChatCommand::Status));
        check("/loop", Some(ChatCommand::Help));
        check("/loop frobnicate", Some(ChatCommand::Help));
        check(
            "!loop fix the tests please",
            Some(ChatCommand::Prompt("fix the tests please".into())),
        );
        check("/looping", None);
        check("hello /loop status", None);
        check("plain text", None);
    }
}
