//! Approval prompts: a message with Approve / Always allow in this session / Deny buttons,
//! and what a click on one means. The click is acknowledged at once (Discord wants an answer
//! within three seconds); the orchestrator then records the first decision and edits the
//! prompt to say who decided, which also removes the buttons.

use loop_adapter::{
    AdapterError, ApprovalChoice, ApprovalPrompt, Author, ChannelKey, Inbound, PlatformKind,
};
use serenity::all::{
    ButtonStyle, ChannelType, ComponentInteraction, CreateActionRow, CreateButton,
    CreateInteractionResponse, CreateMessage,
};
use tokio::sync::mpsc;

use crate::DiscordAdapter;

/// Custom ids are `loop:{choice}:{approval id}`.
const PREFIX: &str = "loop:";

pub const NOT_APPROVER: &str = "Sorry, only approvers can decide this request.";
pub const NO_APPROVERS: &str = "Sorry, nobody may decide approvals from Discord yet: an admin has to list approvers in `permissions.approvers.users` or `permissions.approvers.roles`.";

fn custom_id(choice: ApprovalChoice, approval_id: &str) -> String {
    let word = match choice {
        ApprovalChoice::AllowOnce => "approve",
        ApprovalChoice::AllowSession => "session",
        ApprovalChoice::Deny => "deny",
    };
    format!("{PREFIX}{word}:{approval_id}")
}

/// The choice and approval id a button's custom id names.
pub fn parse_custom_id(id: &str) -> Option<(ApprovalChoice, String)> {
    let rest = id.strip_prefix(PREFIX)?;
    let (word, approval) = rest.split_once(':')?;
    let choice = match word {
        "approve" => ApprovalChoice::AllowOnce,
        "session" => ApprovalChoice::AllowSession,
        "deny" => ApprovalChoice::Deny,
        _ => return None,
    };
    (!approval.is_empty()).then(|| (choice, approval.to_owned()))
}

/// The prompt message: its text (split to Discord's limit) and three buttons.
pub fn prompt_message(prompt: &ApprovalPrompt) -> CreateMessage {
    let text = loop_adapter::split_message(&prompt.text, crate::DISCORD_CHUNK)
        .into_iter()
        .next()
        .unwrap_or_default();
    let buttons = vec![
        CreateButton::new(custom_id(ApprovalChoice::AllowOnce, &prompt.approval_id))
            .label("Approve")
            .style(ButtonStyle::Success),
        CreateButton::new(custom_id(ApprovalChoice::AllowSession, &prompt.approval_id))
            .label("Always allow in this session")
            .style(ButtonStyle::Primary),
        CreateButton::new(custom_id(ApprovalChoice::Deny, &prompt.approval_id))
            .label("Deny")
            .style(ButtonStyle::Danger),
    ];
    CreateMessage::new()
        .content(text)
        .components(vec![CreateActionRow::Buttons(buttons)])
}

/// A button click: acknowledged first, then checked and handed on.
pub(crate) async fn on_click(
    adapter: &DiscordAdapter,
    click: ComponentInteraction,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<(), AdapterError> {
    let Some((choice, approval_id)) = parse_custom_id(&click.data.custom_id) else {
        return Ok(());
    };
    let user = click.user.id.to_string();
    let roles: Vec<String> = click
        .member
        .as_ref()
        .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default();
    if !adapter.is_approver(&user, &roles) {
        tracing::info!(user = %user, approval = %approval_id, "discord: approval click from a non-approver refused");
        let settings = &adapter.inner.settings;
        let text = if settings.approver_users.is_empty() && settings.approver_roles.is_empty() {
            NO_APPROVERS
        } else {
            NOT_APPROVER
        };
        return adapter
            .respond(click.id, &click.token, DiscordAdapter::private_reply(text))
            .await;
    }
    // DEFERRED_UPDATE_MESSAGE: the click is answered; the prompt is edited once decided.
    adapter
        .respond(
            click.id,
            &click.token,
            CreateInteractionResponse::Acknowledge,
        )
        .await?;
    let channel = match click.channel.as_ref() {
        Some(channel)
            if matches!(
                channel.kind,
                ChannelType::PublicThread | ChannelType::PrivateThread
            ) && channel.parent_id.is_some() =>
        {
            ChannelKey::thread(
                PlatformKind::Discord,
                channel.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                click.channel_id.to_string(),
            )
        }
        _ => match adapter.thread_parent(click.channel_id).await? {
            Some(parent) => {
                ChannelKey::thread(PlatformKind::Discord, parent, click.channel_id.to_string())
            }
            None => ChannelKey::channel(PlatformKind::Discord, click.channel_id.to_string()),
        },
    };
    crate::hand_over(
        inbound,
        Inbound::Approval {
            channel,
            approval_id,
            choice,
            decided_by: Author {
                id: user.clone(),
                name: format!("<@{user}>"),
                is_bot: false,
                roles,
            },
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_round_trip() {
        for choice in [
            ApprovalChoice::AllowOnce,
            ApprovalChoice::AllowSession,
            ApprovalChoice::Deny,
        ] {
            assert_eq!(
                parse_custom_id(&custom_id(choice, "ap-1:x")),
                Some((choice, "ap-1:x".to_owned()))
            );
        }
        assert_eq!(parse_custom_id("other:approve:1"), None);
        assert_eq!(parse_custom_id("loop:maybe:1"), None);
        assert_eq!(parse_custom_id("loop:deny:"), None);
    }
}
