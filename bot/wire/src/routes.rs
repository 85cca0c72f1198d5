//! The host API's paths. The daemon's router, the `loop` CLI and the in-container clients
//! name these constants; paths with an id are built by the functions below.

/// Liveness, no token.
pub const HEALTH: &str = "/api/health";

/// Admin: a message into a local channel (`loop run`, `loop chat`).
pub const LOCAL_MESSAGES: &str = "/api/local/messages";
/// Admin: where a local message is (`{inbox_id}`).
pub const LOCAL_MESSAGE: &str = "/api/local/messages/{inbox_id}";
/// Admin: a `/loop` command in a local channel.
pub const LOCAL_COMMANDS: &str = "/api/local/commands";
/// Admin: the WebSocket of a local channel's chat and run events.
pub const LOCAL_STREAM: &str = "/api/local/stream";
/// Admin: turns running, warm agents, containers.
pub const STATUS: &str = "/api/status";
/// Admin: token usage and cost.
pub const USAGE: &str = "/api/usage";
/// Admin: approvals waiting for a person.
pub const APPROVALS: &str = "/api/approvals";
/// Admin: answer one approval (`{id}`).
pub const APPROVAL: &str = "/api/approvals/{id}";

/// Admin: a one-time login code for the dashboard (`loop ui`).
pub const UI_LOGIN_CODE: &str = "/api/ui/login-code";
/// The dashboard (session cookie only; see `loop-daemon`'s `dashboard::session`).
pub const UI: &str = "/ui/";
/// The dashboard's login: trades `?code=` for a session cookie.
pub const UI_LOGIN: &str = "/ui/login";
/// Dashboard (session cookie): a thread's terminal page (`{key}`: the thread's channel key).
pub const UI_TERMINAL: &str = "/ui/thread/{key}/terminal";
/// Dashboard: the terminal's WebSocket (frames: `crate::terminal`).
pub const UI_TERMINAL_SOCKET: &str = "/ui/thread/{key}/terminal/socket";
/// Dashboard: a thread's changes, side by side.
pub const UI_DIFF: &str = "/ui/thread/{key}/diff";
/// Dashboard: a channel's effective config (secrets redacted) and `loop doctor`'s checks.
pub const UI_SETTINGS: &str = "/ui/thread/{key}/settings";

/// Gate token: a syscall waits for a person (`loop_gate::wire::ApprovalRequest`).
pub const GATE_APPROVAL: &str = "/api/gate/container-approval";
/// Gate token: decisions the container's supervisor made alone.
pub const GATE_AUDIT: &str = "/api/gate/container-audit";

/// Admin or container token: scheduled tasks.
pub const TASKS: &str = "/api/tasks";
/// One task (`{id}`).
pub const TASK: &str = "/api/tasks/{id}";
/// Container token: a message into the container's channel.
pub const MESSAGES: &str = "/api/messages";
/// Semantic memory.
pub const MEMORY_SAVE: &str = "/api/memory/save";
pub const MEMORY_SEARCH: &str = "/api/memory/search";
pub const MEMORY_FORGET: &str = "/api/memory/forget";
pub const MEMORY_INDEX: &str = "/api/memory/index";
/// Container token: the agent asks to push its thread's branch (a person approves).
pub const GIT_PUSH: &str = "/api/git/push";
/// Container token: the agent asks to push and open a pull request (a person approves).
pub const GIT_PULL_REQUEST: &str = "/api/git/pull-request";

/// [`LOCAL_MESSAGE`] for one message.
pub fn local_message(inbox_id: i64) -> String {
    LOCAL_MESSAGE.replace("{inbox_id}", &inbox_id.to_string())
}

/// [`APPROVAL`] for one approval id (ids are `[0-9a-f]`; anything else is percent-encoded).
pub fn approval(id: &str) -> String {
    APPROVAL.replace("{id}", &path_segment(id))
}

/// [`TASK`] for one task id.
pub fn task(id: &str) -> String {
    TASK.replace("{id}", &path_segment(id))
}

/// [`UI_TERMINAL`] of a channel key.
pub fn ui_terminal(key: &str) -> String {
    UI_TERMINAL.replace("{key}", &path_segment(key))
}

/// [`UI_TERMINAL_SOCKET`] of a channel key.
pub fn ui_terminal_socket(key: &str) -> String {
    UI_TERMINAL_SOCKET.replace("{key}", &path_segment(key))
}

/// [`UI_SETTINGS`] of a channel key.
pub fn ui_settings(key: &str) -> String {
    UI_SETTINGS.replace("{key}", &path_segment(key))
}

/// [`UI_DIFF`] of a channel key.
pub fn ui_diff(key: &str) -> String {
    UI_DIFF.replace("{key}", &path_segment(key))
}

/// One path segment: RFC 3986's unreserved characters and `:` `@` as they are, every other
/// byte percent-encoded, so an id can never add a segment or a query. The docker proxy encodes
/// the names it looks up (and query values) with it too.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_their_segment() {
        assert_eq!(task("t-1"), "/api/tasks/t-1");
        assert_eq!(task("../x?y"), "/api/tasks/..%2Fx%3Fy");
        assert_eq!(approval("ab12"), "/api/approvals/ab12");
        assert_eq!(local_message(42), "/api/local/messages/42");
        assert_eq!(
            ui_terminal_socket("slack:C1:1700000000.000100"),
            "/ui/thread/slack:C1:1700000000.000100/terminal/socket"
        );
        assert_eq!(ui_diff("local:a/b"), "/ui/thread/local:a%2Fb/diff");
    }
}
