//! The dashboard terminal's WebSocket (`/ui/thread/{channel}/terminal/socket`): binary frames
//! carry the tty's bytes both ways; text frames carry JSON, [`TerminalControl`] from the page
//! and [`TerminalEvent`] from the daemon. The page's script speaks the same shapes.

use serde::{Deserialize, Serialize};

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

impl TerminalSize {
    /// What a terminal is before its page says otherwise.
    pub const DEFAULT: TerminalSize = TerminalSize { cols: 80, rows: 24 };

    /// Within what a tty takes: at least one cell, at most 1000 a side.
    pub fn clamped(self) -> TerminalSize {
        TerminalSize {
            cols: self.cols.clamp(1, 1000),
            rows: self.rows.clamp(1, 1000),
        }
    }
}

/// A text frame from the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalControl {
    /// The terminal's window changed size.
    Resize { cols: u16, rows: u16 },
    /// Keystrokes as text, for clients that send no binary frames.
    Input { data: String },
}

/// A text frame from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalEvent {
    /// The socket is attached to a shell: a new one, or (`reattached`) the one this session
    /// left, whose recent output (`replayed` bytes) follows before anything new.
    Attached {
        reattached: bool,
        replayed: usize,
        /// `warm_agent` (the thread's agent container) or `shell_container`.
        host: String,
        container: String,
    },
    /// The shell ended (it exited, or nobody came back for it); the socket closes.
    Exited,
    /// No shell could be opened, or the socket fell behind; the socket closes.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let resize: TerminalControl =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).expect("resize");
        assert_eq!(
            resize,
            TerminalControl::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(
            serde_json::to_string(&TerminalEvent::Exited).expect("json"),
            r#"{"type":"exited"}"#
        );
        assert_eq!(
            TerminalSize {
                cols: 0,
                rows: 5000
            }
            .clamped(),
            TerminalSize {
                cols: 1,
                rows: 1000
            }
        );
    }
}
