//! The dashboard terminal's backend, end to end: a WebSocket client against a real
//! `loop serve`, real dockerd, the real agent image. What a person types and sees: `pwd` prints
//! the project (or the thread's worktree), `id` the agent's uid, a program the gate denies the
//! agent is denied here too, a reconnect finds the same shell with its recent output, and the
//! shell container is gone once nobody came back to it.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use loop_e2e::daemon::{Daemon, eventually, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{AGENT_UID, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};
use loop_wire::terminal::{TerminalControl, TerminalEvent};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a shell may take to print what was typed (a container may be starting).
const SCREEN_WAIT: Duration = Duration::from_secs(90);

/// A terminal as the page holds it: the socket, and everything the shell printed.
struct Terminal {
    socket: Socket,
    screen: String,
    attached: TerminalEvent,
}

impl Terminal {
    /// Opens `channel`'s terminal as the dashboard session `cookie` and waits for the daemon
    /// to say what it attached to.
    async fn open(daemon: &Daemon, cookie: &str, channel: &str) -> Terminal {
        let request = socket_request(daemon, channel, &[("cookie", &format!("loop_ui={cookie}"))]);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the terminal's socket opens");
        let mut terminal = Terminal {
            socket,
            screen: String::new(),
            attached: TerminalEvent::Exited,
        };
        let attached = tokio::time::timeout(SCREEN_WAIT, terminal.next_event())
            .await
            .unwrap_or_else(|_| panic!("no shell attached\n{}", daemon.log_text()));
        assert!(
            matches!(attached, Some(TerminalEvent::Attached { .. })),
            "{attached:?}\n{}",
            daemon.log_text()
        );
        terminal.attached = attached.expect("attached");
        terminal
    }

    /// Reads frames (output into the screen) until a text frame; `None` when the socket ends.
    async fn next_event(&mut self) -> Option<TerminalEvent> {
        loop {
            if let Some(event) = self.next_frame().await? {
                return Some(event);
            }
        }
    }

    /// Reads one frame: output goes to the screen (`Some(None)`), an event is returned;
    /// `None` when the socket ends.
    async fn next_frame(&mut self) -> Option<Option<TerminalEvent>> {
        loop {
            match self.socket.next().await?.ok()? {
                Message::Binary(bytes) => {
                    self.screen.push_str(&String::from_utf8_lossy(&bytes));
                    return Some(None);
                }
                Message::Text(text) => {
                    let event = serde_json::from_str(text.as_str()).expect("a terminal event");
                    return Some(Some(event));
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    async fn type_line(&mut self, line: &str) {
        self.socket
            .send(Message::Binary(format!("{line}\r").into_bytes().into()))
            .await
            .expect("send keystrokes");
    }

    /// Waits until the screen shows what `seen` looks for.
    async fn wait_for(&mut self, daemon: &Daemon, what: &str, seen: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + SCREEN_WAIT;
        while !seen(&self.screen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next_frame()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!(
                    "the terminal never showed {what}; screen:\n{}\n--- daemon log ---\n{}",
                    lines(&self.screen).join("\n"),
                    daemon.log_text()
                ),
            }
        }
    }

    async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The WebSocket handshake for `channel`'s terminal, with `headers`.
fn socket_request(
    daemon: &Daemon,
    channel: &str,
    headers: &[(&'static str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!(
        "ws://{}{}?cols=120&rows=40",
        daemon.addr().expect("address"),
        loop_wire::routes::ui_terminal_socket(channel)
    );
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header"));
    }
    request
}

/// The status a refused handshake got.
async fn refused(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> u16 {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the terminal's socket opened"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
    }
}

/// The screen's lines as a person reads them: a carriage return goes back to the line's
/// start (what follows overwrites it), and the shell's control sequences (bracketed paste,
/// colours, titles) show nothing.
fn lines(screen: &str) -> Vec<String> {
    strip_controls(screen)
        .split('\n')
        .map(|line| {
            let mut shown: Vec<char> = Vec::new();
            for part in line.split('\r') {
                for (column, c) in part.chars().enumerate() {
                    match shown.get_mut(column) {
                        Some(cell) => *cell = c,
                        None => shown.push(c),
                    }
                }
            }
            shown.into_iter().collect()
        })
        .collect()
}

/// Drops CSI (`ESC [ ... final`) and OSC (`ESC ] ... BEL`) sequences.
fn strip_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in chars.by_ref() {
                    if c == '\u{7}' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether a line of the screen is exactly `text` (the command's output, not its echo or the
/// prompt, which carry more).
fn has_line(screen: &str, text: &str) -> bool {
    lines(screen).iter().any(|l| l == text)
}

fn attached_host(event: &TerminalEvent) -> (&str, &str, bool, usize) {
    match event {
        TerminalEvent::Attached {
            host,
            container,
            reattached,
            replayed,
        } => (host, container, *reattached, *replayed),
        other => panic!("not attached: {other:?}"),
    }
}

/// The daemon's containers of one kind (`loop-type`), by name.
async fn containers(daemon: &Daemon, kind: &str) -> Vec<String> {
    let docker = docker().await.expect("docker");
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("loop-daemon={}", daemon.daemon_id().expect("daemon id")),
            format!("loop-type={kind}"),
        ],
    )]);
    docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.names?.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect()
}

/// The container of a thread's warm agent, from `GET /api/status` (spares are not threads').
async fn warm_agent(daemon: &Daemon, channel: &str) -> Option<String> {
    daemon.status().await["warm"]
        .as_array()?
        .iter()
        .find(|w| w["channel"] == channel)
        .and_then(|w| w["container"].as_str())
        .map(str::to_owned)
}

async fn command(daemon: &Daemon, channel: &str, text: &str) {
    let response = reqwest::Client::new()
        .post(daemon.url("/api/local/commands"))
        .bearer_auth(daemon.token())
        .json(&serde_json::json!({"channel": channel, "command": text}))
        .send()
        .await
        .expect("command");
    assert_eq!(response.status(), 202);
}

/// A channel without a warm agent gets a shell container of its own: the agent's image, uid,
/// work directory and gate. The shell outlives a dropped socket for the grace period (the
/// same shell, its output replayed), and its container goes when nobody came back.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_is_the_agents_shell_under_its_gate_and_survives_a_reconnect() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let model = start_model(Script::new()).await;
    let config = test_config(
        model.port(),
        dir.path(),
        r#""warm_idle_sec": 0, "terminal_grace_sec": 3,
  "gates": {"agentgate": {"command_rules": [{"commands": ["curl"], "decision": "deny", "message": "no curl here"}]}}"#,
    );
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    command(&daemon, "term", &format!("/loop dir {}", project.display())).await;

    // Only a dashboard session opens a terminal: not the admin token, not another site.
    let admin = format!("Bearer {}", daemon.token());
    let no_session = socket_request(&daemon, "local:term", &[("authorization", &admin)]);
    assert_eq!(refused(no_session).await, 401);
    let cookie = daemon.log_in().await;
    let session = format!("loop_ui={cookie}");
    let elsewhere = socket_request(
        &daemon,
        "local:term",
        &[("cookie", &session), ("origin", "http://evil.example")],
    );
    assert_eq!(refused(elsewhere).await, 403);
    assert!(containers(&daemon, "shell").await.is_empty());

    let mut terminal = Terminal::open(&daemon, &cookie, "local:term").await;
    let (host, container, reattached, _) = attached_host(&terminal.attached);
    assert_eq!((host, reattached), ("shell_container", false));
    let container = container.to_owned();
    assert_eq!(
        containers(&daemon, "shell").await,
        std::slice::from_ref(&container)
    );

    terminal.type_line("pwd").await;
    terminal.type_line("id").await;
    let project_path = project.display().to_string();
    let uid = format!("uid={AGENT_UID}(");
    terminal
        .wait_for(&daemon, "the project path and the agent's uid", |screen| {
            has_line(screen, &project_path) && screen.contains(&uid)
        })
        .await;
    assert!(!terminal.screen.contains("uid=0("), "{}", terminal.screen);

    // The gate's rule for the agent holds in the terminal: `curl` (a copy of echo under that
    // name, as the gate's own test does) does not run.
    terminal
        .type_line("cp /bin/echo /tmp/curl; /tmp/curl fetched-something; echo \"curl_rc=$?\"")
        .await;
    terminal
        .wait_for(&daemon, "curl's exit status", |screen| {
            lines(screen).iter().any(|l| l.starts_with("curl_rc="))
        })
        .await;
    assert!(
        has_line(&terminal.screen, "curl_rc=126"),
        "{}",
        lines(&terminal.screen).join("\n")
    );
    assert!(
        !has_line(&terminal.screen, "fetched-something"),
        "{}",
        lines(&terminal.screen).join("\n")
    );
    assert!(
        terminal.screen.contains("Operation not permitted")
            || terminal.screen.contains("Permission denied"),
        "{}",
        lines(&terminal.screen).join("\n")
    );

    // The shell has the agent's environment: no gate token (the gate keeps it from the agent),
    // and nothing of loop's admin token.
    terminal
        .type_line(&format!(
            "echo \"leaks=$(env | grep -c -e LOOP_GATE_TOKEN= -e {})\"",
            daemon.token()
        ))
        .await;
    terminal
        .wait_for(&daemon, "the environment's check", |screen| {
            lines(screen).iter().any(|l| l.starts_with("leaks="))
        })
        .await;
    assert!(
        has_line(&terminal.screen, "leaks=0"),
        "{}",
        lines(&terminal.screen).join("\n")
    );

    // The page resizes the tty.
    terminal
        .socket
        .send(Message::Text(
            serde_json::to_string(&TerminalControl::Resize { cols: 91, rows: 17 })
                .expect("json")
                .into(),
        ))
        .await
        .expect("resize");
    terminal
        .type_line("export LOOP_TERM_MARK=kept-$((6 * 7)); stty size")
        .await;
    terminal
        .wait_for(&daemon, "the new size", |screen| has_line(screen, "17 91"))
        .await;
    terminal.close().await;

    // Back within the grace period: the same shell, its recent output first.
    let mut again = Terminal::open(&daemon, &cookie, "local:term").await;
    let (host, same, reattached, replayed) = attached_host(&again.attached);
    assert_eq!(
        (host, same, reattached),
        ("shell_container", container.as_str(), true)
    );
    assert!(replayed > 0);
    again
        .wait_for(&daemon, "the replayed output", |screen| {
            has_line(screen, &project_path) && has_line(screen, "curl_rc=126")
        })
        .await;
    again.type_line("echo \"mark=$LOOP_TERM_MARK\"").await;
    again
        .wait_for(&daemon, "the variable set before the reconnect", |screen| {
            has_line(screen, "mark=kept-42")
        })
        .await;
    // Another dashboard session gets a shell of its own, not this one's.
    let other = daemon.log_in().await;
    let theirs = Terminal::open(&daemon, &other, "local:term").await;
    let (_, _, reattached, replayed) = attached_host(&theirs.attached);
    assert_eq!((reattached, replayed), (false, 0));
    theirs.close().await;
    again.close().await;

    // Nobody comes back: the shell ends and its container goes.
    eventually(
        &daemon,
        "the shell container's removal",
        Duration::from_secs(60),
        || async { containers(&daemon, "shell").await.is_empty() },
    )
    .await;

    // A new terminal gets a new shell.
    let mut fresh = Terminal::open(&daemon, &cookie, "local:term").await;
    let (_, _, reattached, _) = attached_host(&fresh.attached);
    assert!(!reattached);
    fresh.type_line("echo \"mark=[$LOOP_TERM_MARK]\"").await;
    fresh
        .wait_for(&daemon, "a shell without the old variable", |screen| {
            has_line(screen, "mark=[]")
        })
        .await;
    fresh.close().await;
}

/// A thread whose agent is warm: its terminal is a shell in that agent's container, in the
/// thread's worktree, as the agent's uid; ending it leaves the agent running.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_threads_terminal_opens_in_its_agents_container() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _) = workspace();
    let project = Project::create(&dir.path().join("app"), GitOwner::Agent);
    let model = start_model(Script::new().rule(Rule::any().then(Step::text("done")))).await;
    let config = test_config(model.port(), dir.path(), r#""terminal_grace_sec": 2"#);
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    let inbox = daemon.post_in("warm-term", &project.dir, "hello").await;
    let answer = daemon.answer(inbox, Duration::from_secs(120)).await;
    assert!(answer.contains("done"), "{answer}");
    let store = daemon.store().await;
    let channel: loop_adapter::ChannelKey = "local:warm-term".parse().expect("key");
    let worktree = store
        .thread_branch(&channel)
        .await
        .expect("read")
        .expect("the thread's branch")
        .worktree;
    let agent = warm_agent(&daemon, "local-warm-term")
        .await
        .expect("the thread's warm agent");

    let cookie = daemon.log_in().await;
    let mut terminal = Terminal::open(&daemon, &cookie, "local:warm-term").await;
    let (host, container, _, _) = attached_host(&terminal.attached);
    assert_eq!((host, container), ("warm_agent", agent.as_str()));
    terminal
        .type_line("pwd; id -u; echo \"shell-pid=$$\"")
        .await;
    terminal
        .wait_for(&daemon, "the worktree and the agent's uid", |screen| {
            has_line(screen, &worktree)
                && has_line(screen, &AGENT_UID.to_string())
                && lines(screen).iter().any(|l| l.starts_with("shell-pid="))
        })
        .await;
    let pid = lines(&terminal.screen)
        .iter()
        .find_map(|l| l.strip_prefix("shell-pid=").map(str::to_owned))
        .expect("the shell's pid");
    assert!(containers(&daemon, "shell").await.is_empty());
    terminal.close().await;

    // After the grace period the terminal's shell is hung up; the agent stays warm.
    let shell_alive = || {
        std::process::Command::new("docker")
            .args(["exec", &agent, "test", "-d", &format!("/proc/{pid}")])
            .status()
            .expect("docker exec")
            .success()
    };
    assert!(shell_alive(), "the shell lives on while nobody is attached");
    eventually(
        &daemon,
        "the terminal's shell to end",
        Duration::from_secs(60),
        || async { !shell_alive() },
    )
    .await;
    assert_eq!(
        warm_agent(&daemon, "local-warm-term").await.as_ref(),
        Some(&agent)
    );
    let inbox = daemon.post_in("warm-term", &project.dir, "again").await;
    assert!(
        daemon
            .answer(inbox, Duration::from_secs(120))
            .await
            .contains("done")
    );
}

#[test]
fn screens_read_as_a_person_reads_them() {
    let screen = "pwd\r\n\u{1b}[?2004hagent@x:/p$ pwd\r\n\u{1b}[?2004l\r/tmp/p\r\n";
    assert!(has_line(screen, "/tmp/p"), "{:?}", lines(screen));
}

/// Someone an owner made an owner in chat opens the channel's terminal; when the owner takes
/// that back, the terminal says why and closes, its shell ends without waiting for a
/// reconnect, and opening it again is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_closes_when_its_user_is_no_longer_an_owner() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let model = start_model(Script::new()).await;
    let config = test_config(
        model.port(),
        dir.path(),
        r#""warm_idle_sec": 0, "terminal_grace_sec": 120,
  "permissions": {"owners": {"users": ["UBOSS"]}}"#,
    );
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    command(&daemon, "ops", &format!("/loop dir {}", project.display())).await;
    command(&daemon, "ops", "/loop allow_user UANN owner").await;
    let cookie = daemon.log_in_as("UANN").await;
    let mut terminal = Terminal::open(&daemon, &cookie, "local:ops").await;
    terminal.type_line("echo still-here").await;
    terminal
        .wait_for(&daemon, "the echo", |screen| has_line(screen, "still-here"))
        .await;
    assert_eq!(containers(&daemon, "shell").await.len(), 1);

    command(&daemon, "ops", "/loop deny_user UANN").await;
    let said = tokio::time::timeout(SCREEN_WAIT, terminal.next_event())
        .await
        .unwrap_or_else(|_| panic!("the terminal stayed open\n{}", daemon.log_text()));
    assert!(
        matches!(&said, Some(TerminalEvent::Error { message }) if message.contains("no longer an owner")),
        "{said:?}"
    );
    assert!(
        tokio::time::timeout(SCREEN_WAIT, terminal.next_event())
            .await
            .expect("the socket closes")
            .is_none(),
        "the socket closes"
    );
    // Well inside the 120 s a reconnect would have had.
    eventually(
        &daemon,
        "the shell container's removal",
        Duration::from_secs(60),
        || async { containers(&daemon, "shell").await.is_empty() },
    )
    .await;
    let again = socket_request(
        &daemon,
        "local:ops",
        &[("cookie", &format!("loop_ui={cookie}"))],
    );
    assert_eq!(refused(again).await, 404);
    model.shutdown().await;
}
