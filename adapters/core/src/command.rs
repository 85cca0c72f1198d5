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
    /// Ask the agent: `!loop <prompt>` is an ordinary turn.
    Prompt(String),
    /// Explain the commands.
    Help,
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
