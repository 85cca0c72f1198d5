//! Dashboard terminals: one shell per dashboard session and thread, kept across reconnects.
//!
//! A terminal's shell (see `loop_runner::shell`, and the orchestrator's `terminal.rs` for what
//! it runs with) outlives its WebSocket: when the last socket of a shell goes, the shell waits
//! `terminal_grace_sec` for the same session to come back to the same thread, which then
//! re-attaches to it and first gets its recent output again (a bounded scrollback). Past the
//! grace period, the shell is hung up; the channel's shell container goes with its last shell.
//!
//! Each shell has one task reading its tty (into the scrollback and a broadcast to its
//! sockets) and one writing what its sockets type; both are owned by the hub's tracker and end
//! with the shell. Opening and ending shells of one channel happen one at a time, so a shell
//! never starts in a shell container that the channel's last closing shell is removing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use loop_adapter::ChannelKey;
use loop_runner::{OpenShell, ShellHandle, ShellHost, ShellInput, ShellOutput, TerminalSize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::orchestrator::Orchestrator;
use crate::orchestrator::terminal::TerminalError;

/// Output kept for a re-attaching socket, per shell.
pub const SCROLLBACK_BYTES: usize = 256 * 1024;
/// Shells open at once over every session and thread.
pub const MAX_TERMINALS: usize = 32;
/// Keystroke chunks waiting for the tty.
const INPUT_BUFFER: usize = 64;
/// Output chunks a socket may fall behind by before it is closed (and re-attaches).
const OUTPUT_BUFFER: usize = 1024;
/// How long opening a shell may take before its page is told so. It takes about a second; an
/// engine that hangs must not leave the page at "connecting…".
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Who and where: a dashboard session's terminal in one thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TerminalKey {
    owner: String,
    channel: String,
}

/// The dashboard's terminals. Cheap to clone.
#[derive(Clone)]
pub struct TerminalHub {
    inner: Arc<Inner>,
}

struct Inner {
    orchestrator: Orchestrator,
    grace: Duration,
    open_timeout: Duration,
    shells: Mutex<HashMap<TerminalKey, Arc<Shell>>>,
    /// One opening or closing at a time per channel.
    channels: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// A live shell and the sockets attached to it.
pub struct Shell {
    key: TerminalKey,
    channel: ChannelKey,
    handle: ShellHandle,
    input: mpsc::Sender<Bytes>,
    shared: Mutex<Shared>,
    /// Cancelled when the shell ends (it exited, or was hung up).
    ended: CancellationToken,
}

struct Shared {
    scrollback: Scrollback,
    output: broadcast::Sender<Bytes>,
    attached: usize,
    /// Cancels the pending hang-up when a socket comes back.
    grace: Option<CancellationToken>,
}

/// A socket's view of its shell.
pub struct Attachment {
    pub shell: Arc<Shell>,
    /// The shell's recent output, for a socket that re-attached (empty for a new shell).
    pub replay: Vec<u8>,
    /// Everything the shell prints from now on.
    pub output: broadcast::Receiver<Bytes>,
    pub reattached: bool,
}

impl Shell {
    /// Types into the shell (waits while the tty is behind).
    pub async fn send_input(&self, bytes: Bytes) {
        if self.input.send(bytes).await.is_err() {
            tracing::debug!(channel = %self.channel, "input for a shell that ended");
        }
    }

    /// Resolves when the shell has ended.
    pub async fn ended(&self) {
        self.ended.cancelled().await;
    }

    pub fn has_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Ends the shell now, whoever else is attached (its user lost the right to it).
    pub fn end(&self) {
        tracing::info!(channel = %self.channel, "ending a terminal's shell: its user lost the channel");
        self.ended.cancel();
    }

    /// `warm_agent` or `shell_container`.
    pub fn host(&self) -> &'static str {
        match self.handle.host {
            ShellHost::WarmAgent => "warm_agent",
            ShellHost::ShellContainer => "shell_container",
        }
    }

    pub fn container(&self) -> &str {
        &self.handle.container_name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TerminalHub {
    /// Terminals whose shells wait `grace` for their session to come back.
    pub fn new(orchestrator: Orchestrator, grace: Duration) -> TerminalHub {
        TerminalHub {
            inner: Arc::new(Inner {
                orchestrator,
                grace,
                open_timeout: OPEN_TIMEOUT,
                shells: Mutex::new(HashMap::new()),
                channels: tokio::sync::Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// The same hub, giving shells `timeout` to open instead of [`OPEN_TIMEOUT`].
    #[cfg(test)]
    pub fn with_open_timeout(self, timeout: Duration) -> TerminalHub {
        let mut inner = Arc::into_inner(self.inner).expect("a hub not shared yet");
        inner.open_timeout = timeout;
        TerminalHub {
            inner: Arc::new(inner),
        }
    }

    fn shells(&self) -> std::sync::MutexGuard<'_, HashMap<TerminalKey, Arc<Shell>>> {
        self.inner.shells.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn channel_lock(&self, channel: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .channels
            .lock()
            .await
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }

    /// Attaches a socket of `owner` (a dashboard session) to its shell in `channel`: the one
    /// it left there, or a new one.
    pub async fn attach(
        &self,
        owner: &str,
        channel: &ChannelKey,
        size: TerminalSize,
    ) -> Result<Attachment, TerminalError> {
        let key = TerminalKey {
            owner: owner.to_owned(),
            channel: channel.to_string(),
        };
        let lock = self.channel_lock(&key.channel).await;
        let _guard = lock.lock().await;
        let existing = self.shells().get(&key).cloned();
        if let Some(shell) = existing.filter(|s| !s.has_ended()) {
            let attachment = {
                let mut shared = shell.lock();
                shared.attached += 1;
                if let Some(grace) = shared.grace.take() {
                    grace.cancel();
                }
                Attachment {
                    replay: shared.scrollback.snapshot(),
                    output: shared.output.subscribe(),
                    shell: shell.clone(),
                    reattached: true,
                }
            };
            if let Err(err) = self
                .inner
                .orchestrator
                .resize_terminal(&shell.handle, size)
                .await
            {
                tracing::debug!(channel = %channel, error = %err, "cannot resize a re-attached terminal");
            }
            tracing::info!(channel = %channel, container = %shell.handle.container_name, "terminal re-attached");
            return Ok(attachment);
        }
        if self.shells().len() >= MAX_TERMINALS {
            return Err(TerminalError::Refused(format!(
                "{MAX_TERMINALS} terminals are open already; close one first"
            )));
        }
        tracing::info!(channel = %channel, "opening a terminal");
        let opened = self.open(channel, size).await?;
        Ok(self.start(key, channel.clone(), opened))
    }

    /// Opens a new shell, waiting at most [`OPEN_TIMEOUT`]. A shell that opens later is
    /// closed at once: its page was already told.
    async fn open(
        &self,
        channel: &ChannelKey,
        size: TerminalSize,
    ) -> Result<OpenShell, TerminalError> {
        let orchestrator = self.inner.orchestrator.clone();
        let target = channel.clone();
        let mut opening =
            tokio::spawn(async move { orchestrator.open_terminal(&target, size).await });
        let waited = self.inner.open_timeout;
        match tokio::time::timeout(waited, &mut opening).await {
            Ok(Ok(opened)) => return opened,
            Ok(Err(join)) => {
                return Err(TerminalError::Refused(format!(
                    "opening the shell failed: {join}"
                )));
            }
            Err(_) => {}
        }
        tracing::warn!(channel = %channel, waited_s = waited.as_secs(), "a terminal's shell did not open in time");
        let hub = self.clone();
        let channel = channel.clone();
        self.inner.tracker.spawn(async move {
            let late = tokio::select! {
                joined = &mut opening => joined,
                () = hub.inner.stop.cancelled() => {
                    opening.abort();
                    return;
                }
            };
            if let Ok(Ok(late)) = late {
                tracing::info!(channel = %channel, container = %late.handle.container_name, "a terminal's shell opened after its page gave up: closing it");
                hub.close(&channel, &late.handle, None).await;
            }
        });
        Err(TerminalError::Refused(format!(
            "the shell did not open within {} s: is the Docker engine answering? (`loop doctor`)",
            waited.as_secs()
        )))
    }

    /// Takes a new shell in: its reader and writer tasks, and the first socket.
    fn start(&self, key: TerminalKey, channel: ChannelKey, opened: OpenShell) -> Attachment {
        let OpenShell {
            handle,
            output,
            input,
        } = opened;
        let (input_tx, input_rx) = mpsc::channel(INPUT_BUFFER);
        let (output_tx, output_rx) = broadcast::channel(OUTPUT_BUFFER);
        let shell = Arc::new(Shell {
            key: key.clone(),
            channel,
            handle,
            input: input_tx,
            shared: Mutex::new(Shared {
                scrollback: Scrollback::new(SCROLLBACK_BYTES),
                output: output_tx,
                attached: 1,
                grace: None,
            }),
            ended: self.inner.stop.child_token(),
        });
        self.shells().insert(key, shell.clone());
        let hub = self.clone();
        let reading = shell.clone();
        self.inner
            .tracker
            .spawn(async move { hub.read_output(reading, output).await });
        let writing = shell.clone();
        self.inner
            .tracker
            .spawn(async move { write_input(writing, input_rx, input).await });
        Attachment {
            shell,
            replay: Vec::new(),
            output: output_rx,
            reattached: false,
        }
    }

    /// A socket left. The shell's last one starts its grace period.
    pub fn detach(&self, shell: &Arc<Shell>) {
        let grace = {
            let mut shared = shell.lock();
            shared.attached = shared.attached.saturating_sub(1);
            if shared.attached > 0 || shell.has_ended() {
                return;
            }
            let grace = shell.ended.child_token();
            if let Some(old) = shared.grace.replace(grace.clone()) {
                old.cancel();
            }
            grace
        };
        let period = self.inner.grace;
        let shell = shell.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                () = grace.cancelled() => {}
                () = tokio::time::sleep(period) => {
                    tracing::info!(channel = %shell.channel, "nobody came back to the terminal: ending its shell");
                    shell.ended.cancel();
                }
            }
        });
    }

    /// Tells the shell's tty its new size.
    pub async fn resize(&self, shell: &Shell, size: TerminalSize) {
        if let Err(err) = self
            .inner
            .orchestrator
            .resize_terminal(&shell.handle, size)
            .await
        {
            tracing::debug!(channel = %shell.channel, error = %err, "cannot resize a terminal");
        }
    }

    /// Copies the tty's output into the scrollback and to the sockets until the shell ends
    /// or is ended; then ends it.
    async fn read_output(&self, shell: Arc<Shell>, mut output: ShellOutput) {
        loop {
            let chunk = tokio::select! {
                () = shell.ended.cancelled() => break,
                chunk = output.next() => chunk,
            };
            match chunk {
                Some(Ok(bytes)) => {
                    let shared = &mut *shell.lock();
                    shared.scrollback.push(&bytes);
                    // Nobody attached is fine: the scrollback keeps it.
                    let _ = shared.output.send(bytes);
                }
                Some(Err(err)) => {
                    tracing::debug!(channel = %shell.channel, error = %err, "a terminal's output failed");
                    break;
                }
                None => break,
            }
        }
        drop(output);
        self.finish(&shell).await;
    }

    /// Ends a shell once: out of the table, hung up (see [`TerminalHub::close`]).
    async fn finish(&self, shell: &Arc<Shell>) {
        shell.ended.cancel();
        self.close(&shell.channel, &shell.handle, Some(shell)).await;
    }

    /// Hangs up a shell under its channel's lock: out of the table when `listed` is the shell
    /// there, its shell container removed when it was the last, and the channel's terminal
    /// token revoked when no shell of it is left. A shell that opened too late was never
    /// listed.
    async fn close(&self, channel: &ChannelKey, handle: &ShellHandle, listed: Option<&Arc<Shell>>) {
        let key = channel.to_string();
        let lock = self.channel_lock(&key).await;
        let _guard = lock.lock().await;
        let others = {
            let mut shells = self.shells();
            if let Some(shell) = listed
                && shells
                    .get(&shell.key)
                    .is_some_and(|live| Arc::ptr_eq(live, shell))
            {
                shells.remove(&shell.key);
            }
            shells.keys().any(|k| k.channel == key)
        };
        self.inner.orchestrator.close_terminal(handle).await;
        if !others {
            self.inner.orchestrator.terminals_closed(channel);
        }
    }

    /// Ends every shell (the daemon stops) and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// Writes what the sockets type into the tty until the shell ends.
async fn write_input(shell: Arc<Shell>, mut input: mpsc::Receiver<Bytes>, mut tty: ShellInput) {
    loop {
        let bytes = tokio::select! {
            () = shell.ended.cancelled() => break,
            bytes = input.recv() => match bytes {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let written = async {
            tty.write_all(&bytes).await?;
            tty.flush().await
        };
        if let Err(err) = written.await {
            tracing::debug!(channel = %shell.channel, error = %err, "cannot write to a terminal");
            break;
        }
    }
}

/// The last `cap` bytes of a shell's output, cut at a line start so a replay does not begin
/// inside an escape sequence or a character.
struct Scrollback {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl Scrollback {
    fn new(cap: usize) -> Scrollback {
        Scrollback {
            bytes: VecDeque::new(),
            cap,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        if self.bytes.len() <= self.cap {
            return;
        }
        let excess = self.bytes.len() - self.cap;
        let at_line_start = self.bytes.get(excess - 1) == Some(&b'\n');
        self.bytes.drain(..excess);
        if !at_line_start && let Some(newline) = self.bytes.iter().position(|b| *b == b'\n') {
            self.bytes.drain(..=newline);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrollback_keeps_the_last_whole_lines() {
        let mut scrollback = Scrollback::new(10);
        scrollback.push(b"one\n");
        scrollback.push(b"two\n");
        assert_eq!(scrollback.snapshot(), b"one\ntwo\n");
        scrollback.push(b"three\n");
        // 14 bytes: the first line goes whole.
        assert_eq!(scrollback.snapshot(), b"two\nthree\n");
        scrollback.push(b"\x1b[");
        // A cut inside a line takes the rest of that line with it.
        assert_eq!(scrollback.snapshot(), b"three\n\x1b[");
        let mut long = Scrollback::new(4);
        long.push(b"abcdefgh");
        assert_eq!(
            long.snapshot(),
            b"efgh",
            "a line longer than the buffer is cut"
        );
    }
}
