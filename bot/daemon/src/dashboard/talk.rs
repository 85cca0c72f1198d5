//! Talking to the agent from the dashboard: a message (or a `/loop` command) into a local
//! channel, a new local channel, and stopping any channel's running turn. Everything goes
//! through `Orchestrator::accept` / `stop_turn`, the paths the chat platforms use; the author
//! is the session's user.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use loop_adapter::{Author, ChannelKey, Inbound, Message, PlatformKind, parse_command};
use maud::{Markup, html};
use serde::Deserialize;

use super::access::Access;
use super::page::{self, PageError, parse_key, thread_url};
use super::session::{DashboardCsrf, DashboardSession};
use crate::api::ApiState;
use crate::permissions::Role;

/// The form under a local channel's conversation.
pub fn message_form(key: &ChannelKey) -> Markup {
    message_form_with(key, None)
}

fn message_form_with(key: &ChannelKey, flash: Option<&str>) -> Markup {
    let url = format!("{}/send", thread_url(&key.to_string()));
    html! {
        form.panel.talk hx-post=(url) hx-target="this" hx-swap="outerHTML" {
            @if let Some(flash) = flash { p.flash { (flash) } }
            label for="talk-text" { "Message (or a " code { "/loop" } " command)" }
            textarea id="talk-text" name="text" required placeholder="Ask the agent…" {}
            p { button.primary type="submit" { "Send" } }
        }
    }
}

/// The overview's "new local channel" form.
pub fn new_channel_form() -> Markup {
    new_channel_form_with(None)
}

fn new_channel_form_with(flash: Option<&str>) -> Markup {
    html! {
        section.panel id="new-channel" {
            h2 { "Start a local channel" }
            form hx-post="/ui/channels" hx-target="#new-channel" hx-swap="outerHTML" {
                @if let Some(flash) = flash { p.flash { (flash) } }
                div.row {
                    label { "Channel name" input name="name" required pattern="[A-Za-z0-9._-]{1,64}" placeholder="my-project"; }
                    label { "Work directory (optional)" input name="dir" placeholder="/home/me/project"; }
                }
                label for="new-text" { "First message" }
                textarea id="new-text" name="text" required {}
                p { button.primary type="submit" { "Start" } }
            }
        }
    }
}

/// The author of what a session sends: the chat user it acts as, else the operator's name.
fn author(session: &DashboardSession) -> Author {
    Author {
        id: session
            .acts_as
            .as_ref()
            .map_or_else(|| session.user.clone(), |chat| chat.id.clone()),
        name: session.user.clone(),
        is_bot: false,
        roles: session
            .acts_as
            .as_ref()
            .map(|chat| chat.roles.clone())
            .unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub struct SendForm {
    text: String,
}

/// Hands a message or `/loop` command for a local channel to the orchestrator; the text for
/// the person when it cannot.
async fn hand_over(
    state: &ApiState,
    session: &DashboardSession,
    channel: ChannelKey,
    text: &str,
    dir: Option<String>,
) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("The message is empty.".to_owned());
    }
    let mut access = Access::of(state, session);
    let refused = |err: PageError| match err {
        PageError::Forbidden(why) => why,
        _ => "You may not talk in this channel.".to_owned(),
    };
    let inbound = if text.starts_with("/loop") {
        let command = parse_command(text).ok_or("Not a /loop command (try /loop help).")?;
        access
            .require_command(&channel, &command)
            .await
            .map_err(refused)?;
        Inbound::Command {
            channel,
            author: author(session),
            command,
        }
    } else {
        // Pointing a channel at a directory is an owner's decision, as `/loop dir` is.
        let needed = if dir.is_some() {
            Role::Owner
        } else {
            Role::Member
        };
        access.require(&channel, needed).await.map_err(refused)?;
        Inbound::Message(Message {
            message_id: uuid::Uuid::new_v4().to_string(),
            channel,
            author: author(session),
            text: text.to_owned(),
            triggers: true,
            work_dir: dir,
        })
    };
    state.orchestrator.accept(inbound).await.map_err(|err| {
        tracing::warn!(error = %err, "the dashboard could not hand over a message");
        "loop could not take the message (see the daemon log).".to_owned()
    })?;
    Ok(())
}

/// `POST /ui/thread/{key}/send`: local channels only (other platforms are answered where
/// people talk).
pub async fn send(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    DashboardCsrf(session): DashboardCsrf,
    Form(form): Form<SendForm>,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    Access::of(&state, &session)
        .require(&key, Role::Member)
        .await?;
    if key.platform != PlatformKind::Local {
        return Err(PageError::BadRequest(
            "Only local channels take messages from the dashboard.".to_owned(),
        ));
    }
    let flash = match hand_over(&state, &session, key.clone(), &form.text, None).await {
        Ok(()) => "Sent.".to_owned(),
        Err(why) => why,
    };
    Ok(page::fragment(message_form_with(&key, Some(&flash))))
}

#[derive(Deserialize)]
pub struct NewChannelForm {
    name: String,
    #[serde(default)]
    dir: String,
    text: String,
}

/// `POST /ui/channels`: a new local channel with its first message; the browser goes to it.
pub async fn new_channel(
    State(state): State<ApiState>,
    DashboardCsrf(session): DashboardCsrf,
    Form(form): Form<NewChannelForm>,
) -> Result<Response, PageError> {
    if !Access::of(&state, &session).may_start_channels() {
        return Err(PageError::Forbidden(
            "Only owners can start channels.".to_owned(),
        ));
    }
    let name = form.name.trim();
    if !loop_wire::api::valid_channel_name(name) {
        return Ok(page::fragment(new_channel_form_with(Some(
            "A channel name is 1-64 letters, digits, '.', '_' or '-'.",
        ))));
    }
    let key = ChannelKey::channel(PlatformKind::Local, name);
    let dir = Some(form.dir.trim().to_owned()).filter(|d| !d.is_empty());
    if let Err(why) = hand_over(&state, &session, key.clone(), &form.text, dir).await {
        return Ok(page::fragment(new_channel_form_with(Some(&why))));
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            HeaderName::from_static("hx-redirect"),
            thread_url(&key.to_string()),
        )],
    )
        .into_response())
}

/// `POST /ui/thread/{key}/stop`: stops the running turn, as `/loop stop` would.
pub async fn stop(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    DashboardCsrf(session): DashboardCsrf,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    Access::of(&state, &session)
        .require(&key, Role::Member)
        .await?;
    match state
        .orchestrator
        .stop_turn(&key, &session.decided_by())
        .await
    {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Ok((StatusCode::CONFLICT, "Nothing is running here.").into_response()),
    }
}
