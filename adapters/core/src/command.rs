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
    /// `/loop schedule SCHEDULE [cron|interval|once] PROMPT`: a scheduled task for this
    /// channel, as the agent's `schedule_task` would make it.
    Schedule {
        schedule: String,
        kind: Option<String>,
        prompt: String,
    },
    /// `/loop schedule template NAME`: a task from `task_templates`.
    ScheduleTemplate(String),
    /// `/loop trust`: show how the work directory's `.loop/config.json` differs from the
    /// version an owner trusted; `/loop trust HASH`: trust it, if it is still that version
    /// (the hash, or at least its first 8 hex digits, as shown).
    Trust(Option<String>),
    /// `/loop base`: show the base branch new threads (or, in a thread, this thread's
    /// pull request) start from; `/loop base BRANCH`: set it for the channel, or in a thread
    /// for that thread.
    Base(Option<String>),
    /// `/loop diff`: the thread's branch against its base.
    Diff,
    /// `/loop push`: push the thread's branch to the repository's remote.
    Push,
    /// `/loop pr [TITLE]`: push and open a pull (merge) request against the base.
    Pr(Option<String>),
    /// `/loop fork N PROMPT`: N threads try the same prompt on N branches from one base.
    Fork { count: u32, prompt: String },
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

/// `/loop trust [HASH]`: a hash is 8 to 64 hex digits.
fn trust(arg: &str) -> Option<ChatCommand> {
    let arg = arg.trim().trim_matches('`');
    if arg.is_empty() {
        return Some(ChatCommand::Trust(None));
    }
    let valid = (8..=64).contains(&arg.len()) && arg.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| ChatCommand::Trust(Some(arg.to_ascii_lowercase())))
}

/// A cron field as typed: digits, `*`, `/`, `,`, `-`.
fn cron_field(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '/' | ',' | '-'))
}

/// `/loop schedule ...`: the schedule is quoted (`"0 9 * * 1-5"`, `'every 2h'`), or
/// `every X` / `in X`, or 5 or 6 cron fields, or one word (`30m`, an RFC 3339 time); then an
/// optional type (`cron`, `interval`, `once`, as the Go Loop's `type`), then the prompt.
fn schedule(arg: &str) -> Option<ChatCommand> {
    let arg = arg.trim();
    if let Some(name) = arg.strip_prefix("template ") {
        let name = name.trim();
        return (!name.is_empty() && !name.contains(char::is_whitespace))
            .then(|| ChatCommand::ScheduleTemplate(name.to_owned()));
    }
    let (schedule, rest) = match arg.chars().next()? {
        quote @ ('"' | '\'' | '`' | '“') => {
            let close = if quote == '“' { '”' } else { quote };
            let inner = &arg[quote.len_utf8()..];
            let end = inner.find(close)?;
            (
                inner[..end].trim().to_owned(),
                &inner[end + close.len_utf8()..],
            )
        }
        _ => {
            let words: Vec<&str> = arg.split_whitespace().collect();
            let cron = words.iter().take(6).take_while(|w| cron_field(w)).count();
            let take = match words.first() {
                Some(&("every" | "in")) => 2,
                _ if cron >= 5 => cron,
                _ => 1,
            };
            if words.len() < take {
                return None;
            }
            let schedule = words[..take].join(" ");
            // The rest of the text after those words, spacing kept.
            let mut rest = arg;
            for word in &words[..take] {
                let at = rest.find(word)? + word.len();
                rest = &rest[at..];
            }
            (schedule, rest)
        }
    };
    let rest = rest.trim();
    let (kind, prompt) = match rest.split_once(char::is_whitespace) {
        Some((word, prompt)) if matches!(word, "cron" | "interval" | "once") => {
            (Some(word.to_owned()), prompt.trim())
        }
        _ => (None, rest),
    };
    if schedule.is_empty() || prompt.is_empty() {
        return None;
    }
    Some(ChatCommand::Schedule {
        schedule,
        kind,
        prompt: prompt.to_owned(),
    })
}

/// The most variants one `/loop fork` runs.
pub const MAX_FORKS: u32 = 5;

/// `fork N PROMPT` with 2 ≤ N ≤ [`MAX_FORKS`].
fn fork(arg: &str) -> Option<ChatCommand> {
    let (count, prompt) = arg.split_once(char::is_whitespace)?;
    let count: u32 = count.parse().ok()?;
    let prompt = prompt.trim();
    ((2..=MAX_FORKS).contains(&count) && !prompt.is_empty()).then(|| ChatCommand::Fork {
        count,
        prompt: prompt.to_owned(),
    })
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
        "schedule" => schedule(arg).unwrap_or(ChatCommand::Help),
        "base" => ChatCommand::Base((!arg.is_empty()).then(|| arg.to_owned())),
        "diff" => ChatCommand::Diff,
        "push" => ChatCommand::Push,
        "pr" | "mr" => ChatCommand::Pr((!arg.is_empty()).then(|| arg.to_owned())),
        "fork" => fork(arg).unwrap_or(ChatCommand::Help),
        "trust" => trust(arg).unwrap_or(ChatCommand::Help),
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
    fn parses_git_commands() {
        check("/loop base", Some(ChatCommand::Base(None)));
        check(
            "/loop base develop",
            Some(ChatCommand::Base(Some("develop".into()))),
        );
        check("/loop diff", Some(ChatCommand::Diff));
        check("/loop push", Some(ChatCommand::Push));
        check("/loop pr", Some(ChatCommand::Pr(None)));
        check(
            "/loop pr Fix the login page",
            Some(ChatCommand::Pr(Some("Fix the login page".into()))),
        );
        check(
            "/loop fork 3 make the title friendlier",
            Some(ChatCommand::Fork {
                count: 3,
                prompt: "make the title friendlier".into(),
            }),
        );
        check("/loop fork 1 x", Some(ChatCommand::Help));
        check("/loop fork 9 x", Some(ChatCommand::Help));
        check("/loop fork three x", Some(ChatCommand::Help));
        check("/loop fork 3", Some(ChatCommand::Help));
    }

    #[test]
    fn parses_schedules() {
        let task = |schedule: &str, kind: Option<&str>, prompt: &str| {
            Some(ChatCommand::Schedule {
                schedule: schedule.into(),
                kind: kind.map(str::to_owned),
                prompt: prompt.into(),
            })
        };
        check(
            "/loop schedule \"0 9 * * 1-5\" check the build",
            task("0 9 * * 1-5", None, "check the build"),
        );
        check(
            "/loop schedule 0 9 * * 1-5 cron check the build",
            task("0 9 * * 1-5", Some("cron"), "check the build"),
        );
        check(
            "/loop schedule */5 * * * * * tick",
            task("*/5 * * * * *", None, "tick"),
        );
        check(
            "/loop schedule every 2h  summarise   the channel",
            task("every 2h", None, "summarise   the channel"),
        );
        check(
            "/loop schedule in 10m remind me",
            task("in 10m", None, "remind me"),
        );
        check(
            "/loop schedule 30m interval ping",
            task("30m", Some("interval"), "ping"),
        );
        check(
            "/loop schedule 2026-12-01T09:00:00Z once ship it",
            task("2026-12-01T09:00:00Z", Some("once"), "ship it"),
        );
        check(
            "/loop schedule template nightly",
            Some(ChatCommand::ScheduleTemplate("nightly".into())),
        );
        for bad in [
            "/loop schedule",
            "/loop schedule every",
            "/loop schedule \"0 9 * * *\"",
            "/loop schedule \"0 9 * * * unclosed prompt",
            "/loop schedule template",
        ] {
            check(bad, Some(ChatCommand::Help));
        }
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
        check("/loop trust", Some(ChatCommand::Trust(None)));
        check(
            "/loop trust 1A2B3C4D5E6F",
            Some(ChatCommand::Trust(Some("1a2b3c4d5e6f".into()))),
        );
        check(
            "!loop trust `1a2b3c4d`",
            Some(ChatCommand::Trust(Some("1a2b3c4d".into()))),
        );
        // A hash too short to name one version, or not a hash: help, never a trust.
        check("/loop trust 1a2b", Some(ChatCommand::Help));
        check("/loop trust everything", Some(ChatCommand::Help));
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
