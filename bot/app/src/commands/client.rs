//! `loop run` and `loop chat`: local clients of the running daemon's host API, with a live
//! progress spinner fed by the channel's event stream.

use loop_wire::routes;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use loop_adapter_local::LocalEvent;
use loop_wire::api::{
    ErrorBody, MessageAccepted, MessageState, PostCommand, PostMessage, StreamItem,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the loop daemon at {addr}: {reason} (is `loop serve` running?)")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the daemon refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the event stream closed before the answer arrived")]
    StreamClosed,
    #[error("the run failed: {0}")]
    RunFailed(String),
}

/// A client of one daemon.
pub struct Client {
    addr: SocketAddr,
    token: String,
    http: reqwest::Client,
}

/// A channel's event stream (`GET /api/local/stream`).
pub type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Client {
    pub fn new(addr: SocketAddr, token: String) -> Client {
        Client {
            addr,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn unreachable(&self, err: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            addr: self.addr,
            reason: err.to_string(),
        }
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let message = response
            .json::<ErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or_else(|_| "no reason given".to_owned());
        Err(ClientError::Refused { status, message })
    }

    /// Opens the channel's event stream (before posting, so nothing is missed).
    pub async fn stream(&self, channel: &str) -> Result<Stream, ClientError> {
        let mut request = format!("ws://{}/api/local/stream?channel={channel}", self.addr)
            .into_client_request()
            .map_err(|e| self.unreachable(e))?;
        let value = format!("Bearer {}", self.token)
            .parse()
            .map_err(|e| self.unreachable(e))?;
        request.headers_mut().insert("Authorization", value);
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => ClientError::Refused {
                    status: response.status().as_u16(),
                    message: "the event stream was refused".to_owned(),
                },
                other => self.unreachable(other),
            })?;
        Ok(stream)
    }

    /// Sends an authenticated request and decodes the JSON answer (errors carry the reason the
    /// daemon gave).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let response = Client::check(response).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        // Some routes answer 202 with no body; decode that as JSON null.
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| self.unreachable(e))
    }

    pub async fn post_message(&self, body: &PostMessage) -> Result<MessageAccepted, ClientError> {
        self.call(self.http.post(self.url(routes::LOCAL_MESSAGES)).json(body))
            .await
    }

    pub async fn post_command(&self, channel: &str, command: &str) -> Result<(), ClientError> {
        let body = PostCommand {
            channel: channel.to_owned(),
            command: command.to_owned(),
        };
        self.call::<serde_json::Value>(self.http.post(self.url(routes::LOCAL_COMMANDS)).json(&body))
            .await
            .map(|_| ())
    }

    pub async fn message_state(&self, inbox_id: i64) -> Result<MessageState, ClientError> {
        self.call(self.http.get(self.url(&routes::local_message(inbox_id))))
            .await
    }

    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call(self.http.get(self.url(path))).await
    }

    /// POSTs a JSON body to an admin route and returns the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(self.http.post(self.url(path)).json(body)).await
    }

    /// Sends one message and waits for its answer, showing progress on stderr.
    pub async fn ask(
        &self,
        stream: &mut Stream,
        channel: &str,
        text: &str,
        dir: Option<String>,
    ) -> Result<String, ClientError> {
        let accepted = self
            .post_message(&PostMessage {
                channel: channel.to_owned(),
                text: text.to_owned(),
                dir,
                message_id: None,
                author: std::env::var("USER").ok(),
            })
            .await?;
        let Some(inbox_id) = accepted.inbox_id else {
            // Refused (e.g. a directory outside allowed_dirs): the reason comes as a notice.
            let notice = next_posted(stream).await?;
            return Err(ClientError::RunFailed(notice));
        };
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner.set_message("queued");
        let mut log = ChannelLog::default();
        let result = loop {
            // The state is the truth; events only say when to look again.
            let state = self.message_state(inbox_id).await?;
            match (state.status.as_str(), state.run_status.as_deref()) {
                ("done", _) => break Ok(state.answer.unwrap_or_default()),
                ("failed", _) => {
                    break Err(ClientError::RunFailed(
                        state.error.unwrap_or_else(|| "unknown error".to_owned()),
                    ));
                }
                _ => {}
            }
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    if let Ok(item) = serde_json::from_str::<StreamItem>(&text) {
                        match item {
                            StreamItem::Run(run) => {
                                if let Some(status) = run.status {
                                    spinner.set_message(status);
                                }
                            }
                            StreamItem::Chat(event) => {
                                if let LocalEvent::Edited { text, .. } = &event {
                                    spinner.set_message(text.clone());
                                }
                                log.record(event);
                            }
                        }
                    }
                }
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(Some(Err(_))) | Ok(None) => break Err(ClientError::StreamClosed),
            }
        };
        spinner.finish_and_clear();
        // What loop said in the channel besides the answer (e.g. that the project's config is
        // not trusted) goes to stderr. The answer is posted last, so once it is on the stream,
        // everything before it is too.
        if let Ok(answer) = &result
            && !answer.trim().is_empty()
        {
            let deadline = tokio::time::Instant::now() + ANSWER_ECHO_WAIT;
            while !log.has_posted(answer) {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(WsMessage::Text(text)))) => {
                        if let Ok(StreamItem::Chat(event)) = serde_json::from_str(&text) {
                            log.record(event);
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            for notice in log.notices(answer) {
                eprintln!("{notice}\n");
            }
        }
        result
    }
}

/// How long `ask` waits for the answer to show on the stream before it prints the notices.
const ANSWER_ECHO_WAIT: Duration = Duration::from_secs(3);

/// The messages of a channel during one `ask`: the status message is posted and then edited,
/// the answer is posted last, and the rest are notices.
#[derive(Debug, Default)]
struct ChannelLog {
    posted: Vec<(String, String)>,
    edited: std::collections::HashSet<String>,
}

impl ChannelLog {
    fn record(&mut self, event: LocalEvent) {
        match event {
            LocalEvent::Posted {
                message_id, text, ..
            } => self.posted.push((message_id, text)),
            LocalEvent::Edited { message_id, .. } => {
                self.edited.insert(message_id);
            }
        }
    }

    /// Whether (the first part of) `answer` was posted.
    fn has_posted(&self, answer: &str) -> bool {
        self.posted
            .iter()
            .any(|(_, text)| !text.trim().is_empty() && answer.contains(text.trim()))
    }

    /// Posted messages that are neither a status message nor part of `answer`.
    fn notices(&self, answer: &str) -> Vec<&str> {
        self.posted
            .iter()
            .filter(|(id, text)| !self.edited.contains(id) && !answer.contains(text.trim()))
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

async fn next_posted(stream: &mut Stream) -> Result<String, ClientError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| ClientError::StreamClosed)?;
        match next {
            Some(Ok(WsMessage::Text(text))) => {
                if let Ok(StreamItem::Chat(LocalEvent::Posted { text, .. })) =
                    serde_json::from_str::<StreamItem>(&text)
                {
                    return Ok(text);
                }
            }
            Some(Ok(_)) => {}
            _ => return Err(ClientError::StreamClosed),
        }
    }
}

/// The default channel of `loop run` for a directory: stable, so runs in one directory resume
/// one session.
pub fn channel_for_dir(dir: Option<&std::path::Path>) -> String {
    use sha2::{Digest, Sha256};
    match dir {
        None => "run".to_owned(),
        Some(dir) => {
            let base: String = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .take(40)
                .collect();
            let hash = hex::encode(&Sha256::digest(dir.display().to_string().as_bytes())[..4]);
            format!("run-{base}-{hash}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_wire::api::valid_channel_name;

    #[test]
    fn notices_are_what_was_posted_besides_the_status_and_the_answer() {
        let posted = |id: &str, text: &str| LocalEvent::Posted {
            channel: "c".into(),
            message_id: id.into(),
            text: text.into(),
        };
        let mut log = ChannelLog::default();
        log.record(posted("1", "⏳ working"));
        log.record(posted("2", "🔒 not trusted"));
        log.record(LocalEvent::Edited {
            channel: "c".into(),
            message_id: "1".into(),
            text: "✅ done".into(),
        });
        assert!(!log.has_posted("the answer, in two parts"));
        log.record(posted("3", "the answer,"));
        log.record(posted("4", "in two parts"));
        assert!(log.has_posted("the answer, in two parts"));
        assert_eq!(log.notices("the answer, in two parts"), ["🔒 not trusted"]);
    }

    #[test]
    fn run_channels_are_stable_per_directory_and_valid() {
        let a = channel_for_dir(Some(std::path::Path::new("/home/u/My Project")));
        assert_eq!(
            a,
            channel_for_dir(Some(std::path::Path::new("/home/u/My Project")))
        );
        assert_ne!(
            a,
            channel_for_dir(Some(std::path::Path::new("/other/My Project")))
        );
        assert!(a.starts_with("run-my-project-"), "{a}");
        assert!(valid_channel_name(&a));
        assert!(valid_channel_name(&channel_for_dir(None)));
    }
}
