//! The local platform: `loop chat` and `loop run` talk to the daemon over its host API; this
//! adapter is the daemon-side end. Messages arrive through the API; replies are broadcast as
//! [`LocalEvent`]s that the API streams to the clients watching a channel.

use async_trait::async_trait;
use loop_adapter::{
    Adapter, AdapterError, ChannelKey, Inbound, OutgoingPart, PlatformKind, PostedMessage,
};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Local terminals have no message size limit worth the name; keep chunks readable.
pub const LOCAL_MESSAGE_LIMIT: usize = 64 * 1024;

/// What a local client sees (a host-API body, defined with the others).
pub use loop_wire::api::LocalEvent;

/// The daemon side of the local platform. Cheap to clone.
#[derive(Clone)]
pub struct LocalAdapter {
    events: broadcast::Sender<LocalEvent>,
}

impl Default for LocalAdapter {
    fn default() -> Self {
        LocalAdapter::new()
    }
}

impl LocalAdapter {
    pub fn new() -> LocalAdapter {
        let (events, _) = broadcast::channel(1024);
        LocalAdapter { events }
    }

    /// Every event on every local channel; clients filter by channel.
    pub fn subscribe(&self) -> broadcast::Receiver<LocalEvent> {
        self.events.subscribe()
    }

    fn check(channel: &ChannelKey) -> Result<(), AdapterError> {
        if channel.platform == PlatformKind::Local {
            Ok(())
        } else {
            Err(AdapterError::UnknownChannel(channel.to_string()))
        }
    }
}

#[async_trait]
impl Adapter for LocalAdapter {
    fn platform(&self) -> PlatformKind {
        PlatformKind::Local
    }

    fn parts(&self, text: &str) -> Vec<OutgoingPart> {
        loop_adapter::split_message(text, LOCAL_MESSAGE_LIMIT)
            .into_iter()
            .map(OutgoingPart::Text)
            .collect()
    }

    /// Local messages arrive through the host API, not through this loop.
    async fn run(
        &self,
        _inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<(), AdapterError> {
        shutdown.cancelled().await;
        Ok(())
    }

    async fn post_part(
        &self,
        channel: &ChannelKey,
        part: &OutgoingPart,
        _key: Option<&str>,
    ) -> Result<PostedMessage, AdapterError> {
        LocalAdapter::check(channel)?;
        let (OutgoingPart::Text(text) | OutgoingPart::Attachment(text)) = part;
        let message_id = uuid::Uuid::new_v4().to_string();
        // No subscriber is fine: the answer is in the database and `loop run` reads it there.
        let _ = self.events.send(LocalEvent::Posted {
            channel: channel.to_string(),
            message_id: message_id.clone(),
            text: text.to_owned(),
        });
        Ok(PostedMessage { message_id })
    }

    async fn edit(
        &self,
        channel: &ChannelKey,
        message_id: &str,
        text: &str,
    ) -> Result<(), AdapterError> {
        LocalAdapter::check(channel)?;
        let _ = self.events.send(LocalEvent::Edited {
            channel: channel.to_string(),
            message_id: message_id.to_owned(),
            text: text.to_owned(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn posts_and_edits_reach_subscribers() {
        let adapter = LocalAdapter::new();
        let mut rx = adapter.subscribe();
        let channel = ChannelKey::channel(PlatformKind::Local, "c");
        let posted = adapter.post(&channel, "hi").await.expect("post");
        adapter
            .edit(&channel, &posted.message_id, "hi!")
            .await
            .expect("edit");
        assert!(matches!(rx.recv().await, Ok(LocalEvent::Posted { text, .. }) if text == "hi"));
        assert!(matches!(rx.recv().await, Ok(LocalEvent::Edited { text, .. }) if text == "hi!"));
        let slack = ChannelKey::channel(PlatformKind::Slack, "c");
        assert!(adapter.post(&slack, "x").await.is_err());
    }

    /// A terminal has no uploads: a file is its comment and its text in a code block.
    #[tokio::test]
    async fn a_file_is_posted_as_text() {
        let adapter = LocalAdapter::new();
        let mut rx = adapter.subscribe();
        let channel = ChannelKey::channel(PlatformKind::Local, "c");
        adapter
            .post_file(
                &channel,
                "loop-x.diff",
                b"+added\n-removed",
                "1 file changed",
            )
            .await
            .expect("post");
        let Ok(LocalEvent::Posted { text, .. }) = rx.recv().await else {
            panic!("nothing posted");
        };
        assert_eq!(
            text,
            "1 file changed\n\n`loop-x.diff`:\n```\n+added\n-removed\n```"
        );
    }
}
