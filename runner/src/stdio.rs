//! The attached stdio of a running agent: stream-json turns in, [`AgentEvent`]s out, and the
//! tail of its stderr for error messages. Shared by one-turn containers and warm agents.

use std::pin::Pin;

use bollard::container::LogOutput;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::events::{AgentEvent, Line, LineSplitter, TurnResult, decode_line, user_turn_line};

/// How much of the container's stderr is kept for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// Where progress events go. A full channel drops progress, never the result.
pub type EventSender = mpsc::Sender<AgentEvent>;

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The attached stdio of a running agent: stream-json turns in, events out.
pub(crate) struct AgentIo {
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: OutputStream,
    splitter: LineSplitter,
    stderr: Vec<u8>,
}

/// What reading one turn produced.
pub(crate) struct TurnRead {
    pub result: Option<TurnResult>,
    /// Whether the process said anything at all this turn.
    pub saw_events: bool,
}

impl AgentIo {
    pub(crate) fn new(input: Pin<Box<dyn AsyncWrite + Send>>, output: OutputStream) -> AgentIo {
        AgentIo {
            input,
            output,
            splitter: LineSplitter::default(),
            stderr: Vec::new(),
        }
    }

    /// Writes one user turn; `close` ends stdin afterwards (cold, one-turn containers).
    pub(crate) async fn send(&mut self, prompt: &str, close: bool) -> std::io::Result<()> {
        self.input
            .write_all(user_turn_line(prompt).as_bytes())
            .await?;
        self.input.flush().await?;
        if close {
            self.input.shutdown().await?;
        }
        Ok(())
    }

    /// Reads events until this turn's `result` (or the end of the stream), forwarding each.
    pub(crate) async fn read_turn(&mut self, name: &str, events: Option<&EventSender>) -> TurnRead {
        let mut read = TurnRead {
            result: None,
            saw_events: false,
        };
        while let Some(chunk) = self.output.next().await {
            match chunk {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    for line in self.splitter.push(&message) {
                        if handle_line(line, name, events, &mut read).await {
                            return read;
                        }
                    }
                }
                Ok(LogOutput::StdErr { message }) => self.push_stderr(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(err) => {
                    tracing::debug!(container = %name, error = %err, "output stream ended");
                    break;
                }
            }
        }
        if let Some(line) = self.splitter.finish() {
            handle_line(line, name, events, &mut read).await;
        }
        read
    }

    /// Reads to the end of the stream (after the result of a one-turn container).
    pub(crate) async fn drain(&mut self, name: &str) {
        while let Some(chunk) = self.output.next().await {
            match chunk {
                Ok(LogOutput::StdErr { message }) => self.push_stderr(&message),
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(container = %name, error = %err, "output stream ended");
                    break;
                }
            }
        }
    }

    fn push_stderr(&mut self, bytes: &[u8]) {
        self.stderr.extend_from_slice(bytes);
        if self.stderr.len() > STDERR_TAIL_BYTES {
            let cut = self.stderr.len() - STDERR_TAIL_BYTES;
            self.stderr.drain(..cut);
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Decodes one line; returns true when it carried the turn's `result`. A failed setup step
/// waits for room in the channel: the thread must hear of it, however many setup lines filled
/// the channel before it.
async fn handle_line(
    line: Line,
    name: &str,
    events: Option<&EventSender>,
    read: &mut TurnRead,
) -> bool {
    match line {
        Line::Oversized => {
            tracing::warn!(container = %name, "skipping an event line over the size limit");
            false
        }
        Line::Complete(text) => match decode_line(&text) {
            Ok(decoded) => {
                let mut done = false;
                for event in decoded {
                    read.saw_events = true;
                    if let AgentEvent::Result(result) = &event {
                        read.result = Some(result.clone());
                        done = true;
                    }
                    match events {
                        Some(events) if matches!(event, AgentEvent::SetupFailed { .. }) => {
                            let _ = events.send(event).await;
                        }
                        Some(events) => {
                            let _ = events.try_send(event);
                        }
                        None => {}
                    }
                }
                done
            }
            Err(err) => {
                tracing::warn!(container = %name, error = %err, "skipping a malformed event line");
                false
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_setup_failure_is_never_dropped_for_a_full_channel() {
        let mut text = String::new();
        for n in 0..20 {
            text.push_str(&format!(
                "{{\"type\":\"system\",\"subtype\":\"loop_setup\",\"name\":\"s\",\"line\":\"{n}\"}}\n"
            ));
        }
        text.push_str(
            "{\"type\":\"system\",\"subtype\":\"loop_setup_failed\",\"name\":\"s\",\"exit_code\":1,\"tail\":\"t\"}\n",
        );
        text.push_str("{\"type\":\"result\",\"subtype\":\"success\",\"result\":\"ok\"}\n");
        let output = futures::stream::iter(vec![Ok(LogOutput::StdOut {
            message: bytes::Bytes::from(text),
        })]);
        let mut io = AgentIo::new(Box::pin(tokio::io::sink()), Box::pin(output));
        let (tx, mut rx) = mpsc::channel(2);
        let read = async move {
            let read = io.read_turn("c", Some(&tx)).await;
            drop(tx);
            read
        };
        let received = async {
            let mut seen = Vec::new();
            while let Some(event) = rx.recv().await {
                seen.push(event);
            }
            seen
        };
        let (read, seen) = tokio::join!(read, received);
        assert_eq!(read.result.map(|r| r.text).as_deref(), Some("ok"));
        assert!(
            seen.iter()
                .any(|e| matches!(e, AgentEvent::SetupFailed { .. })),
            "{seen:?}"
        );
    }
}
