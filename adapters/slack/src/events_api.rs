//! The Events API over HTTP, for workspaces that cannot use Socket Mode. Slack signs every
//! request (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret); a request
//! with a bad signature, or a timestamp more than five minutes away (a replay), is refused
//! with 401 before its body is read as JSON.
//!
//! Routes: `POST /slack/events` (event callbacks and the `url_verification` handshake),
//! `POST /slack/interactions` (button clicks), `POST /slack/commands` (`/loop`). A 2xx is the
//! acknowledgement, so it is sent only after the orchestrator's channel took the item; a 5xx
//! makes Slack retry (with the same event id, which is deduplicated).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use loop_adapter::{AdapterError, Inbound};
use secrecy::ExposeSecret;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{EventsApiSettings, SlackAdapter, incoming_of_mention, incoming_of_message};

struct Served {
    adapter: SlackAdapter,
    verifier: SlackEventSignatureVerifier,
    inbound: mpsc::Sender<Inbound>,
}

/// Serves the Events API routes until `shutdown`.
pub(crate) async fn serve(
    adapter: SlackAdapter,
    settings: EventsApiSettings,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) -> Result<(), AdapterError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|err| {
            AdapterError::Unreachable(format!("cannot listen on {}: {err}", settings.listen))
        })?;
    tracing::info!(addr = %settings.listen, "slack: listening for the Events API");
    axum::serve(listener, router(adapter, &settings, inbound))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|err| AdapterError::Unreachable(format!("events API server: {err}")))
}

/// The Events API routes (exposed for tests).
pub fn router(
    adapter: SlackAdapter,
    settings: &EventsApiSettings,
    inbound: mpsc::Sender<Inbound>,
) -> Router {
    let secret = SlackSigningSecret::new(settings.signing_secret.expose_secret().to_owned());
    Router::new()
        .route("/slack/events", post(events))
        .route("/slack/interactions", post(interactions))
        .route("/slack/commands", post(commands))
        .with_state(Arc::new(Served {
            adapter,
            verifier: SlackEventSignatureVerifier::new(&secret),
            inbound,
        }))
}

/// Checks the signature and the five-minute window; the body as text when both hold.
fn verified<'b>(
    served: &Served,
    headers: &HeaderMap,
    body: &'b Bytes,
) -> Result<&'b str, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: &str| Box::new((StatusCode::UNAUTHORIZED, why.to_owned()).into_response());
    let (Some(signature), Some(timestamp)) = (
        header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER),
        header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP),
    ) else {
        return Err(refused("missing signature headers"));
    };
    let text = std::str::from_utf8(body).map_err(|_| refused("body is not UTF-8"))?;
    served
        .verifier
        .verify(signature, text, timestamp)
        .map_err(|err| {
            tracing::warn!(error = %err, "slack: refused an unsigned or replayed request");
            refused("bad signature or stale timestamp")
        })?;
    Ok(text)
}

fn retry_later(err: AdapterError) -> Response {
    tracing::warn!(error = %err, "slack: event not taken; Slack will retry");
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

async fn events(State(served): State<Arc<Served>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = match verified(&served, &headers, &body) {
        Ok(text) => text,
        Err(response) => return *response,
    };
    let Ok(event) = serde_json::from_str::<SlackPushEvent>(text) else {
        return (StatusCode::BAD_REQUEST, "not an Events API payload").into_response();
    };
    match event {
        SlackPushEvent::UrlVerification(challenge) => challenge.challenge.into_response(),
        SlackPushEvent::EventCallback(callback) => {
            let incoming = match &callback.event {
                SlackEventCallbackBody::Message(message) => incoming_of_message(message),
                SlackEventCallbackBody::AppMention(mention) => Some(incoming_of_mention(mention)),
                _ => None,
            };
            if let Some(incoming) = incoming
                && let Err(err) = served
                    .adapter
                    .on_message(callback.event_id.as_ref(), incoming, &served.inbound)
                    .await
            {
                return retry_later(err);
            }
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

fn form(text: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(text).unwrap_or_default()
}

async fn interactions(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = match verified(&served, &headers, &body) {
        Ok(text) => text,
        Err(response) => return *response,
    };
    let payload = form(text).remove("payload").unwrap_or_default();
    let Ok(event) = serde_json::from_str::<SlackInteractionEvent>(&payload) else {
        return (StatusCode::BAD_REQUEST, "not an interaction payload").into_response();
    };
    if let SlackInteractionEvent::BlockActions(actions) = &event
        && let Err(err) = served.adapter.on_action(actions, &served.inbound).await
    {
        return retry_later(err);
    }
    StatusCode::OK.into_response()
}

async fn commands(State(served): State<Arc<Served>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = match verified(&served, &headers, &body) {
        Ok(text) => text,
        Err(response) => return *response,
    };
    let fields = form(text);
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    match served
        .adapter
        .on_command(
            &field("channel_id"),
            &field("user_id"),
            &field("text"),
            &served.inbound,
        )
        .await
    {
        Ok(reply) => axum::Json(serde_json::json!({
            "response_type": "ephemeral",
            "text": reply,
        }))
        .into_response(),
        Err(err) => retry_later(err),
    }
}
