//! The `/loop` application command: `status`, `dir PATH`, `stop`, `new`, `tasks`. Its answer
//! is posted by the orchestrator in the channel; the interaction itself gets a short private
//! acknowledgement.

use loop_adapter::{AdapterError, Author, ChannelKey, ChatCommand, Inbound, PlatformKind};
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
    CreateCommand::new("loop")
        .description("Control loop in this channel")
        .add_option(sub(
            "status",
            "Show the session, work directory and running turn",
        ))
        .add_option(
            sub("dir", "Point this channel at a work directory").add_sub_option(
                CreateCommandOption::new(CommandOptionType::String, "path", "The directory")
                    .required(true),
            ),
        )
        .add_option(sub("stop", "Stop the running turn"))
        .add_option(sub("new", "Start a fresh Claude session"))
        .add_option(sub("tasks", "List this channel's scheduled tasks"))
}

/// The chat command an interaction's options name.
pub fn command_of(options: &[(String, Option<String>)]) -> ChatCommand {
    match options.first() {
        Some((name, arg)) => match (name.as_str(), arg) {
            ("status", _) => ChatCommand::Status,
            ("dir", Some(path)) if !path.trim().is_empty() => {
                ChatCommand::Dir(path.trim().to_owned())
            }
            ("dir", _) => ChatCommand::Status,
            ("stop", _) => ChatCommand::Stop,
            ("new", _) => ChatCommand::New,
            ("tasks", _) => ChatCommand::Tasks,
            _ => ChatCommand::Help,
        },
        None => ChatCommand::Help,
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
    let options: Vec<(String, Option<String>)> = interaction
        .data
        .options
        .iter()
        .map(|option| {
            let arg = match &option.value {
                CommandDataOptionValue::SubCommand(args) => {
                    args.iter().find_map(|a| match &a.value {
                        CommandDataOptionValue::String(s) => Some(s.clone()),
                        _ => None,
                    })
                }
                _ => None,
            };
            (option.name.clone(), arg)
        })
        .collect();
    let command = command_of(&options);
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
    let echo = match &options.first() {
        Some((name, Some(arg))) => format!("`/loop {name} {arg}`"),
        Some((name, None)) => format!("`/loop {name}`"),
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
        let opt = |n: &str, a: Option<&str>| vec![(n.to_owned(), a.map(str::to_owned))];
        assert_eq!(command_of(&opt("status", None)), ChatCommand::Status);
        assert_eq!(
            command_of(&opt("dir", Some(" ~/src "))),
            ChatCommand::Dir("~/src".into())
        );
        assert_eq!(command_of(&opt("stop", None)), ChatCommand::Stop);
        assert_eq!(command_of(&opt("new", None)), ChatCommand::New);
        assert_eq!(command_of(&opt("tasks", None)), ChatCommand::Tasks);
        assert_eq!(command_of(&[]), ChatCommand::Help);
    }
}
