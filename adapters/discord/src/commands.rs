//! The `/loop` application command: `status`, `dir PATH`, `stop`, `new`, `tasks`, `task ID`,
//! `cancel ID`, `schedule`, `template NAME`, and the owners' `allow_user`, `deny_user`,
//! `allow_role`, `deny_role` (Discord's user and role pickers give ids). Its answer is posted by
//! the orchestrator in the channel; the interaction itself gets a short private
//! acknowledgement.

use loop_adapter::{
    AdapterError, Author, ChannelKey, ChatCommand, GrantLevel, GrantSubject, Inbound, PlatformKind,
};
use serenity::all::{
    ChannelType, CommandDataOptionValue, CommandInteraction, CommandOptionType, CreateCommand,
    CreateCommandOption,
};
use tokio::sync::mpsc;

use crate::DiscordAdapter;
use crate::inbound::{CHANNEL_REFUSAL, REFUSAL, allowed};

/// The command's definition, registered at READY.
pub fn definition() -> CreateCommand {
    let sub = |name: &str, description: &str| {
        CreateCommandOption::new(CommandOptionType::SubCommand, name, description)
    };
    let text = |name: &str, description: &str| {
        CreateCommandOption::new(CommandOptionType::String, name, description).required(true)
    };
    let level = || {
        CreateCommandOption::new(
            CommandOptionType::String,
            "level",
            "member (default) or owner",
        )
        .add_string_choice("member", "member")
        .add_string_choice("owner", "owner")
    };
    let user = || CreateCommandOption::new(CommandOptionType::User, "user", "Who").required(true);
    let role =
        || CreateCommandOption::new(CommandOptionType::Role, "role", "Which role").required(true);
    CreateCommand::new("loop")
        .description("Control loop in this channel")
        .add_option(sub(
            "status",
            "Show the session, work directory and running turn",
        ))
        .add_option(
            sub("dir", "Point this channel at a work directory")
                .add_sub_option(text("path", "The directory")),
        )
        .add_option(sub("stop", "Stop the running turn"))
        .add_option(sub("new", "Start a fresh Claude session"))
        .add_option(sub("tasks", "List this channel's scheduled tasks"))
        .add_option(sub("task", "Show a scheduled task").add_sub_option(text("id", "Task id")))
        .add_option(sub("cancel", "Cancel a scheduled task").add_sub_option(text("id", "Task id")))
        .add_option(
            sub("schedule", "Schedule a task in this channel")
                .add_sub_option(text(
                    "schedule",
                    "Cron (0 9 * * 1-5), every 2h, in 10m, or an RFC 3339 time",
                ))
                .add_sub_option(text("prompt", "What the agent does each time"))
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::String, "type", "Schedule type")
                        .add_string_choice("cron", "cron")
                        .add_string_choice("interval", "interval")
                        .add_string_choice("once", "once"),
                ),
        )
        .add_option(
            sub("template", "Schedule a task from task_templates")
                .add_sub_option(text("name", "Template name")),
        )
        .add_option(
            sub("allow_user", "Let a user use loop here (owners)")
                .add_sub_option(user())
                .add_sub_option(level()),
        )
        .add_option(sub("deny_user", "Stop a user using loop here (owners)").add_sub_option(user()))
        .add_option(
            sub("allow_role", "Let a role use loop here (owners)")
                .add_sub_option(role())
                .add_sub_option(level()),
        )
        .add_option(sub("deny_role", "Stop a role using loop here (owners)").add_sub_option(role()))
        .add_option(
            sub(
                "base",
                "Show or set the base branch of new threads (in a thread: its own)",
            )
            .add_sub_option(CreateCommandOption::new(
                CommandOptionType::String,
                "branch",
                "The base branch",
            )),
        )
        .add_option(sub("diff", "Show this thread's branch against its base"))
        .add_option(sub("push", "Push this thread's branch"))
        .add_option(
            sub("pr", "Push this thread's branch and open a pull request").add_sub_option(
                CreateCommandOption::new(CommandOptionType::String, "title", "The title"),
            ),
        )
        .add_option(
            sub(
                "fork",
                "Try a prompt N ways, each in its own thread and branch",
            )
            .add_sub_option(
                CreateCommandOption::new(CommandOptionType::Integer, "count", "How many")
                    .min_int_value(2)
                    .max_int_value(u64::from(loop_adapter::MAX_FORKS))
                    .required(true),
            )
            .add_sub_option(text("prompt", "What each variant is asked")),
        )
        .add_option(
            sub(
                "trust",
                "Show the project config's changes, or trust them (owners)",
            )
            .add_sub_option(CreateCommandOption::new(
                CommandOptionType::String,
                "hash",
                "The version to trust, as shown",
            )),
        )
}

/// One subcommand as received: its name and its arguments (users and roles as ids).
pub type Invocation = (String, Vec<(String, String)>);

/// The chat command an interaction's subcommand names.
pub fn command_of(invocation: Option<&Invocation>) -> ChatCommand {
    let Some((name, args)) = invocation else {
        return ChatCommand::Help;
    };
    let arg = |key: &str| {
        args.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let grant = |subject: Option<GrantSubject>, allow: bool| {
        let level = match (allow, arg("level").as_deref()) {
            (false, _) => GrantLevel::Denied,
            (true, Some("owner")) => GrantLevel::Owner,
            (true, _) => GrantLevel::Member,
        };
        subject.map_or(ChatCommand::Help, |subject| ChatCommand::Grant {
            subject,
            level,
        })
    };
    match name.as_str() {
        "status" => ChatCommand::Status,
        "dir" => arg("path").map_or(ChatCommand::Status, ChatCommand::Dir),
        "stop" => ChatCommand::Stop,
        "new" => ChatCommand::New,
        "tasks" => ChatCommand::Tasks,
        "task" => arg("id").map_or(ChatCommand::Tasks, ChatCommand::Task),
        "cancel" => arg("id").map_or(ChatCommand::Tasks, ChatCommand::Cancel),
        "schedule" => match (arg("schedule"), arg("prompt")) {
            (Some(schedule), Some(prompt)) => ChatCommand::Schedule {
                schedule,
                kind: arg("type"),
                prompt,
            },
            _ => ChatCommand::Help,
        },
        "template" => arg("name").map_or(ChatCommand::Help, ChatCommand::ScheduleTemplate),
        "allow_user" => grant(arg("user").map(GrantSubject::User), true),
        "deny_user" => grant(arg("user").map(GrantSubject::User), false),
        "allow_role" => grant(arg("role").map(GrantSubject::Role), true),
        "deny_role" => grant(arg("role").map(GrantSubject::Role), false),
        "base" => ChatCommand::Base(arg("branch")),
        "diff" => ChatCommand::Diff,
        "push" => ChatCommand::Push,
        "pr" => ChatCommand::Pr(arg("title")),
        "fork" => loop_adapter::parse_command(&format!(
            "/loop fork {} {}",
            arg("count").unwrap_or_default(),
            arg("prompt").unwrap_or_default()
        ))
        .unwrap_or(ChatCommand::Help),
        // The same checks as the typed command: a hash, or nothing.
        "trust" => {
            loop_adapter::parse_command(&format!("/loop trust {}", arg("hash").unwrap_or_default()))
                .unwrap_or(ChatCommand::Help)
        }
        _ => ChatCommand::Help,
    }
}

pub(crate) async fn on_command(
    adapter: &DiscordAdapter,
    interaction: CommandInteraction,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<(), AdapterError> {
    if interaction.data.name != "loop" {
        return Ok(());
    }
    let invocation: Option<Invocation> = interaction.data.options.first().map(|option| {
        let args = match &option.value {
            CommandDataOptionValue::SubCommand(args) => args
                .iter()
                .filter_map(|a| {
                    let value = match &a.value {
                        CommandDataOptionValue::String(s) => s.clone(),
                        CommandDataOptionValue::User(id) => id.to_string(),
                        CommandDataOptionValue::Role(id) => id.to_string(),
                        CommandDataOptionValue::Integer(n) => n.to_string(),
                        _ => return None,
                    };
                    Some((a.name.clone(), value))
                })
                .collect(),
            _ => Vec::new(),
        };
        (option.name.clone(), args)
    });
    let command = command_of(invocation.as_ref());
    let user = interaction.user.id.to_string();
    let settings = &adapter.inner.settings;
    let channel_id = interaction.channel_id.to_string();
    let parent = match interaction.channel.as_ref() {
        Some(c)
            if matches!(
                c.kind,
                ChannelType::PublicThread | ChannelType::PrivateThread
            ) =>
        {
            c.parent_id.map(|p| p.to_string())
        }
        Some(_) => None,
        None if interaction.guild_id.is_some() => {
            adapter.thread_parent(interaction.channel_id).await?
        }
        None => None,
    };
    let place = parent.clone().unwrap_or_else(|| channel_id.clone());
    let refusal = if !allowed(&settings.allowed_users, &user) {
        Some(REFUSAL)
    } else if interaction.guild_id.is_some()
        && !(allowed(&settings.allowed_channels, &place)
            && interaction
                .guild_id
                .is_none_or(|g| allowed(&settings.allowed_guilds, &g.to_string())))
    {
        Some(CHANNEL_REFUSAL)
    } else {
        None
    };
    if let Some(text) = refusal {
        return adapter
            .respond(
                interaction.id,
                &interaction.token,
                DiscordAdapter::private_reply(text),
            )
            .await;
    }
    let key = match parent {
        Some(parent) => ChannelKey::thread(PlatformKind::Discord, parent, channel_id.clone()),
        None => match (&command, adapter.memory().latest_thread.get(&channel_id)) {
            // Turns run per thread: `/loop stop` in a channel stops its latest thread.
            (ChatCommand::Stop, Some(thread)) => {
                ChannelKey::thread(PlatformKind::Discord, &channel_id, thread.clone())
            }
            _ => ChannelKey::channel(PlatformKind::Discord, &channel_id),
        },
    };
    let echo = match &invocation {
        Some((name, args)) => {
            let mut text = format!("`/loop {name}");
            for (_, value) in args {
                text.push(' ');
                text.push_str(value);
            }
            text.push('`');
            text
        }
        None => "`/loop`".to_owned(),
    };
    crate::hand_over(
        inbound,
        Inbound::Command {
            channel: key,
            author: Author {
                id: user.clone(),
                name: interaction
                    .user
                    .global_name
                    .clone()
                    .unwrap_or_else(|| interaction.user.name.clone()),
                is_bot: false,
                roles: interaction
                    .member
                    .as_ref()
                    .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
                    .unwrap_or_default(),
            },
            command,
        },
    )
    .await?;
    adapter
        .respond(
            interaction.id,
            &interaction.token,
            DiscordAdapter::private_reply(&echo),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_commands() {
        let call = |name: &str, args: &[(&str, &str)]| {
            command_of(Some(&(
                name.to_owned(),
                args.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )))
        };
        assert_eq!(call("status", &[]), ChatCommand::Status);
        assert_eq!(
            call("dir", &[("path", " ~/src ")]),
            ChatCommand::Dir("~/src".into())
        );
        assert_eq!(call("stop", &[]), ChatCommand::Stop);
        assert_eq!(call("new", &[]), ChatCommand::New);
        assert_eq!(call("tasks", &[]), ChatCommand::Tasks);
        assert_eq!(
            call("cancel", &[("id", "t1")]),
            ChatCommand::Cancel("t1".into())
        );
        assert_eq!(
            call(
                "schedule",
                &[
                    ("schedule", "every 2h"),
                    ("prompt", "ping"),
                    ("type", "interval")
                ]
            ),
            ChatCommand::Schedule {
                schedule: "every 2h".into(),
                kind: Some("interval".into()),
                prompt: "ping".into()
            }
        );
        assert_eq!(
            call("schedule", &[("schedule", "every 2h")]),
            ChatCommand::Help
        );
        assert_eq!(
            call("allow_user", &[("user", "42"), ("level", "owner")]),
            ChatCommand::Grant {
                subject: GrantSubject::User("42".into()),
                level: GrantLevel::Owner
            }
        );
        assert_eq!(
            call("deny_role", &[("role", "7")]),
            ChatCommand::Grant {
                subject: GrantSubject::Role("7".into()),
                level: GrantLevel::Denied
            }
        );
        assert_eq!(call("allow_role", &[]), ChatCommand::Help);
        assert_eq!(call("trust", &[]), ChatCommand::Trust(None));
        assert_eq!(
            call("trust", &[("hash", "1A2B3C4D5E6F")]),
            ChatCommand::Trust(Some("1a2b3c4d5e6f".into()))
        );
        assert_eq!(call("trust", &[("hash", "all")]), ChatCommand::Help);
        assert_eq!(command_of(None), ChatCommand::Help);
    }
}
