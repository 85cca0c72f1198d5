//! The dashboard's routes in process: a real router on a real socket with an orchestrator
//! whose runner runs nothing (the browser tests in `tests/tests/dashboard.rs` run real turns).

use std::sync::Arc;

use loop_adapter_local::LocalAdapter;
use loop_runner::{AgentRunner, RunError, TurnOutcome, TurnRequest};
use loop_store::test_support::TestDb;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::config::{Config, ConfigSources};
use crate::orchestrator::{HostFacts, Orchestrator};

/// The reverse proxy's token in rigs with `dashboard_proxy_header`.
const PROXY_TOKEN: &str = "proxy-token-0123456789abcdef";

/// No turn runs in these tests.
struct NoRunner;

#[async_trait::async_trait]
impl AgentRunner for NoRunner {
    async fn run_turn(
        &self,
        _request: TurnRequest,
        _events: Option<loop_runner::agent::EventSender>,
        _cancel: CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        Err(RunError::Cancelled)
    }
}

/// A daemon's API and dashboard on a loopback port.
pub(super) struct Rig {
    pub url: String,
    pub admin: String,
    pub state: ApiState,
    pub http: reqwest::Client,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start() -> Rig {
        Rig::start_with(|_| {}).await
    }

    /// A rig whose config `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Rig {
        Rig::start_with_runner(Arc::new(NoRunner), adjust).await
    }

    /// A rig whose orchestrator runs `runner`.
    pub async fn start_with_runner(
        runner: Arc<dyn AgentRunner>,
        adjust: impl FnOnce(&mut Config),
    ) -> Rig {
        let db = TestDb::sqlite().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = ConfigSources {
            home: dir.path().to_path_buf(),
            loop_dir: dir.path().join(".loop"),
            env: Default::default(),
        };
        let mut config = Config::defaults(&sources);
        adjust(&mut config);
        let facts = HostFacts {
            timezone: "UTC".into(),
            proxy_env: Default::default(),
            git_excludes_file: None,
            daemon_id: "d-test".into(),
            api_url: "http://127.0.0.1:1".into(),
            network: None,
        };
        let local = LocalAdapter::new();
        let orchestrator = Orchestrator::new(
            db.store().clone(),
            config,
            facts,
            runner,
            vec![Arc::new(local.clone())],
            CancellationToken::new(),
        );
        let admin = crate::gate::tokens::random_token();
        let mut state = ApiState::new(orchestrator, local, None, admin.clone());
        if let Some(header) = &state.orchestrator.config().dashboard_proxy_header {
            let roles_header = state
                .orchestrator
                .config()
                .dashboard_proxy_roles_header
                .clone();
            state.dashboard = super::session::Sessions::with_proxy(super::session::ProxyLogin {
                user_header: header.parse().expect("header name"),
                roles_header: roles_header.map(|h| h.parse().expect("header name")),
                token: PROXY_TOKEN.to_owned(),
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = crate::api::router(state.clone()).merge(super::router(state.clone()));
        tokio::spawn(axum::serve(listener, router).into_future());
        Rig {
            url,
            admin,
            state,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            _db: db,
            _dir: dir,
        }
    }

    /// What `loop ui` does: the login path from the admin route.
    pub async fn login_path(&self) -> String {
        self.login_path_for(serde_json::json!({"user": "alice"}))
            .await
    }

    /// The login path for a `/api/ui/login-code` request body.
    pub async fn login_path_for(&self, request: serde_json::Value) -> String {
        let link: loop_wire::api::UiLoginLink = self
            .http
            .post(format!("{}/api/ui/login-code", self.url))
            .bearer_auth(&self.admin)
            .json(&request)
            .send()
            .await
            .expect("login code")
            .json()
            .await
            .expect("link");
        link.path
    }

    /// Logs in; returns the cookie header value and the page's CSRF token.
    pub async fn login(&self) -> (String, String) {
        self.login_with(serde_json::json!({"user": "alice"})).await
    }

    /// Logs in as `loop ui --user ID` does: with the rights of the chat user `id`.
    pub async fn login_as(&self, id: &str) -> (String, String) {
        self.login_with(serde_json::json!({"acts_as": id})).await
    }

    pub async fn login_with(&self, request: serde_json::Value) -> (String, String) {
        let response = self
            .http
            .get(format!(
                "{}{}",
                self.url,
                self.login_path_for(request).await
            ))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 303);
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a cookie")
            .to_owned();
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();
        let page = self.get("/ui/", Some(&cookie)).await;
        assert_eq!(page.status(), 200);
        let body = page.text().await.expect("page");
        let csrf = body
            .split(r#"name="csrf-token" content=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("csrf meta")
            .to_owned();
        (cookie, csrf)
    }

    /// A page's HTML for a logged-in session.
    pub async fn page(&self, path: &str, cookie: &str) -> String {
        self.get(path, Some(cookie))
            .await
            .text()
            .await
            .expect("page")
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("get")
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).form(form);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send().await.expect("post")
    }
}

#[tokio::test]
async fn a_login_link_works_once_and_sets_a_strict_cookie() {
    let rig = Rig::start().await;
    // Without the admin token there is no code.
    let refused = rig
        .http
        .post(format!("{}/api/ui/login-code", rig.url))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);

    let path = rig.login_path().await;
    assert!(path.starts_with("/ui/login?code="), "{path}");
    let response = rig.get(&path, None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers().get("location").expect("location"),
        "/ui/"
    );
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    // The same link again: refused, no cookie.
    let again = rig.get(&path, None).await;
    assert_eq!(again.status(), 401);
    assert!(again.headers().get("set-cookie").is_none());
    assert!(
        again.text().await.expect("text").contains("loop ui"),
        "the page says what to do"
    );
    // The cookie opens the overview, which names the user and carries security headers.
    let pair = cookie.split(';').next().expect("pair");
    let page = rig.get("/ui/", Some(pair)).await;
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.text().await.expect("text").contains("alice"));
}

#[tokio::test]
async fn dashboard_routes_take_the_cookie_and_nothing_else() {
    let rig = Rig::start().await;
    let (cookie, csrf) = rig.login().await;

    // No cookie: 401, whatever bearer token comes along (the admin's, a container's).
    assert_eq!(rig.get("/ui/", None).await.status(), 401);
    let container = rig.state.gate.api_token("local:c1");
    for token in [rig.admin.as_str(), container.as_str()] {
        let response = rig
            .http
            .get(format!("{}/ui/", rig.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        assert_eq!(
            response.status(),
            401,
            "a bearer token opened the dashboard"
        );
        let response = rig
            .http
            .post(format!("{}/ui/logout", rig.url))
            .bearer_auth(token)
            .header("x-csrf-token", &csrf)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 401);
    }
    // A made-up cookie: 401.
    let forged = format!("loop_ui={}", "0".repeat(64));
    assert_eq!(rig.get("/ui/", Some(&forged)).await.status(), 401);

    // A POST with the cookie but without the CSRF token, or with another one: 403.
    assert_eq!(
        rig.post("/ui/logout", Some(&cookie), None, &[])
            .await
            .status(),
        403
    );
    let wrong = "f".repeat(64);
    assert_eq!(
        rig.post("/ui/logout", Some(&cookie), Some(&wrong), &[])
            .await
            .status(),
        403
    );
    // Another site's page, even with the browser's cookie: 403.
    let cross = rig
        .http
        .get(format!("{}/ui/", rig.url))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(cross.status(), 403);
    // The right token logs out; the cookie is dead afterwards.
    assert_eq!(
        rig.post("/ui/logout", Some(&cookie), Some(&csrf), &[])
            .await
            .status(),
        204
    );
    assert_eq!(rig.get("/ui/", Some(&cookie)).await.status(), 401);
}

/// Reads SSE events from a response until one contains `needle` (or the time is up).
async fn sse_until(response: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} on the stream; got:\n{seen}"))
            .expect("chunk")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test]
async fn a_turns_tool_calls_stream_into_the_thread_page() {
    let rig = Rig::start().await;
    let (cookie, _) = rig.login().await;
    let key = "local:c1";
    // No cookie, no stream.
    assert_eq!(
        rig.get("/ui/events?view=thread&key=local:c1", None)
            .await
            .status(),
        401
    );
    let mut stream = rig
        .get("/ui/events?view=thread&key=local:c1", Some(&cookie))
        .await;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    // The snapshot comes first.
    sse_until(&mut stream, "event: thread-turn").await;

    let tap = rig.state.orchestrator.activity().begin(key, "run-1");
    tap.record(&loop_runner::AgentEvent::ToolUse {
        id: "t1".into(),
        name: "Bash".into(),
        input: serde_json::json!({"command": "sleep 3; echo <b>built</b>"}),
    });
    let seen = sse_until(&mut stream, "Bash: sleep 3").await;
    assert!(seen.contains("event: thread-activity"), "{seen}");
    assert!(
        seen.contains("echo &lt;b&gt;built&lt;/b&gt;"),
        "escaped: {seen}"
    );
    tap.record(&loop_runner::AgentEvent::ToolResult {
        tool_use_id: "t1".into(),
        is_error: false,
        content: "<script>alert(1)</script>built".into(),
    });
    let seen = sse_until(&mut stream, "built</pre>").await;
    assert!(seen.contains("&lt;script&gt;"), "{seen}");
    assert!(!seen.contains("<script>alert"), "{seen}");

    // The page itself shows what already happened.
    let page = rig.page("/ui/thread/local:c1", &cookie).await;
    assert!(page.contains("Bash: sleep 3"), "{page}");
    assert!(page.contains(r#"id="act-"#));
}

#[tokio::test]
async fn overview_of_200_threads_renders_quickly() {
    use loop_adapter::{Author, ChannelKey, Message, PlatformKind};
    let rig = Rig::start().await;
    let (cookie, _) = rig.login().await;
    let store = &rig.state.store;
    for i in 0..200 {
        let thread = ChannelKey::thread(PlatformKind::Slack, "C7", format!("17000.{i:04}"));
        store
            .accept_message(&Message {
                message_id: format!("m{i}"),
                channel: thread.clone(),
                author: Author {
                    id: "U1".into(),
                    name: "alice".into(),
                    is_bot: false,
                    roles: vec![],
                },
                text: format!("request {i}"),
                triggers: true,
                work_dir: None,
            })
            .await
            .expect("accept");
        let key = thread.to_string();
        let session = store.active_session(&thread, "/srv/p").await.expect("s");
        let run = format!("run-{i}");
        store.claim_pending(&key, &run).await.expect("claim");
        store
            .start_run(&run, &key, &session.id, loop_store::RunOrigin::Chat, "p")
            .await
            .expect("start");
        store
            .finish_run(
                &run,
                &key,
                loop_store::RunStatus::Succeeded,
                loop_store::RunFinish {
                    answer: Some(format!("answer {i}")),
                    cost_usd: 0.01,
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("finish");
    }
    // Server side: gathering and rendering, measured (printed, never asserted).
    let mut samples = Vec::new();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let mut operator = super::access::Access::acting_as(&rig.state, None);
        let data = super::overview::gather(&rig.state, &mut operator, &[])
            .await
            .expect("gather");
        let html = super::overview::body(&data).into_string();
        samples.push(started.elapsed());
        assert_eq!(data.rows.len(), 200);
        assert!(html.contains("C7 › 17000.0199"));
    }
    samples.sort();
    println!(
        "overview of 200 threads, server side (SQLite): median {:?}, max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    let page = rig.get("/ui/", Some(&cookie)).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    let (css, js) = super::assets::ASSETS.weight();
    println!(
        "overview page weight: HTML {} bytes, CSS {css} bytes, JS {js} bytes",
        html.len()
    );
}

#[tokio::test]
async fn an_approval_answered_in_the_page_wakes_the_agent_and_says_who() {
    use loop_adapter_local::LocalEvent;
    let rig = Rig::start().await;
    let (cookie, csrf) = rig.login().await;
    let gate = rig.state.gate.clone();
    let token = gate.begin_turn("local:c1", "run-1");
    let mut chat = rig.state.local.subscribe();
    let ask = rig
        .http
        .post(format!("{}/api/gate/container-approval", rig.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "channel_id": "local-c1",
            "action": {"kind": "exec", "program": "/usr/bin/touch", "argv": ["touch", "x"]},
            "summary": "exec /usr/bin/touch x",
            "session_key": "execve:/usr/bin/touch:x",
            "rule": "command_rules[0]",
            "pid": 42
        }))
        .send();
    let waiting = tokio::spawn(ask);
    let pending = loop {
        let pending = rig.state.store.pending_approvals().await.expect("pending");
        if let Some(first) = pending.into_iter().next() {
            break first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let page = rig.page("/ui/approvals", &cookie).await;
    assert!(page.contains("exec /usr/bin/touch x"), "{page}");
    assert!(page.contains("data-deadline="), "a countdown");
    let path = format!("/ui/approvals/{}", pending.id);
    // Without the CSRF token nothing is decided.
    assert_eq!(
        rig.post(&path, Some(&cookie), None, &[("decision", "allow_once")])
            .await
            .status(),
        403
    );
    let decided = rig
        .post(
            &path,
            Some(&cookie),
            Some(&csrf),
            &[("decision", "allow_once")],
        )
        .await;
    assert_eq!(decided.status(), 200);
    assert!(
        decided
            .text()
            .await
            .expect("card")
            .contains("allowed once by alice (dashboard)")
    );
    let answer: serde_json::Value = waiting
        .await
        .expect("join")
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["decision"], "allow_once");
    // The prompt in the channel says who decided, as after a button press.
    let edited = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), chat.recv())
            .await
            .expect("an edit")
            .expect("event")
        {
            LocalEvent::Edited { text, .. } => break text,
            _ => continue,
        }
    };
    assert!(edited.contains("alice (dashboard)"), "{edited}");
    let audit = rig.state.store.gate_audit(1).await.expect("audit");
    assert_eq!(audit[0].decided_by.as_deref(), Some("alice (dashboard)"));
}

#[tokio::test]
async fn a_message_from_the_page_goes_into_the_local_channel() {
    let rig = Rig::start().await;
    let (cookie, csrf) = rig.login().await;
    let sent = rig
        .post(
            "/ui/thread/local:notes/send",
            Some(&cookie),
            Some(&csrf),
            &[("text", "hello from the page")],
        )
        .await;
    assert_eq!(sent.status(), 200);
    assert!(sent.text().await.expect("form").contains("Sent."));
    let messages = rig
        .state
        .store
        .thread_messages("local:notes", 10)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].author_name.as_str(), messages[0].text.as_str()),
        ("alice", "hello from the page")
    );
    // Slack threads are answered in Slack.
    let refused = rig
        .post(
            "/ui/thread/slack:C1:1.0/send",
            Some(&cookie),
            Some(&csrf),
            &[("text", "hi")],
        )
        .await;
    assert_eq!(refused.status(), 400);
    // Nothing runs: Stop says so.
    assert_eq!(
        rig.post(
            "/ui/thread/local:notes/stop",
            Some(&cookie),
            Some(&csrf),
            &[]
        )
        .await
        .status(),
        409
    );
}

/// Stores one message in `key` so the channel shows in the overview.
async fn seed_channel(rig: &Rig, key: &loop_adapter::ChannelKey, text: &str) {
    rig.state
        .store
        .accept_message(&loop_adapter::Message {
            message_id: format!("m-{key}"),
            channel: key.clone(),
            author: loop_adapter::Author {
                id: "UBOSS".into(),
                name: "boss".into(),
                is_bot: false,
                roles: vec![],
            },
            text: text.into(),
            triggers: true,
            work_dir: None,
        })
        .await
        .expect("accept");
}

/// A pending gate approval asked in `key`.
async fn seed_approval(rig: &Rig, id: &str, key: &str, summary: &str) {
    rig.state
        .store
        .create_approval(loop_store::NewApproval {
            id: id.into(),
            container_id: "c1".into(),
            channel_key: key.into(),
            run_id: None,
            syscall: "execve".into(),
            summary: summary.into(),
            detail: summary.into(),
            cache_key: summary.into(),
            expires_at: chrono::Utc::now().timestamp_millis() + 600_000,
        })
        .await
        .expect("approval");
}

#[tokio::test]
async fn each_login_sees_and_does_what_its_chat_user_may() {
    use loop_adapter::{ChannelKey, GrantLevel, GrantSubject, PlatformKind};
    let rig = Rig::start_with(|config| {
        config.permissions.owners.users = vec!["UBOSS".into()];
        config.permissions.approvers.users = vec!["UCAROL".into()];
    })
    .await;
    let ours = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
    let theirs = ChannelKey::thread(PlatformKind::Slack, "C2", "2.0");
    let notes = ChannelKey::channel(PlatformKind::Local, "notes");
    seed_channel(&rig, &ours, "our thread").await;
    seed_channel(&rig, &theirs, "their thread").await;
    for channel in [&ours, &notes] {
        rig.state
            .store
            .set_channel_grant(
                channel,
                &GrantSubject::User("UANN".into()),
                GrantLevel::Member,
                "UBOSS",
            )
            .await
            .expect("grant");
    }
    seed_approval(
        &rig,
        "ap-ours",
        &ours.to_string(),
        "exec /usr/bin/touch ours",
    )
    .await;
    seed_approval(
        &rig,
        "ap-theirs",
        &theirs.to_string(),
        "exec /usr/bin/touch theirs",
    )
    .await;
    let url = |what: &str, key: &ChannelKey| format!("/ui/thread/{}{what}", key);
    let status = |response: reqwest::Response| response.status().as_u16();

    // Ann, a member of C1 only.
    let (ann, ann_csrf) = rig.login_as("UANN").await;
    let overview = rig.page("/ui/", &ann).await;
    assert!(overview.contains("C1 › 1.0"), "her channel is listed");
    assert!(
        !overview.contains("C2"),
        "another channel is not: {overview}"
    );
    assert!(
        !overview.contains("Start a local channel"),
        "members start none"
    );
    assert_eq!(status(rig.get(&url("", &ours), Some(&ann)).await), 200);
    let thread = rig.page(&url("", &ours), &ann).await;
    assert!(
        !thread.contains(">Terminal<"),
        "no terminal link for a member"
    );
    for what in ["", "/diff", "/settings"] {
        assert_eq!(
            status(rig.get(&url(what, &theirs), Some(&ann)).await),
            404,
            "{what}"
        );
    }
    let events = format!("/ui/events?view=thread&key={theirs}");
    assert_eq!(status(rig.get(&events, Some(&ann)).await), 404);
    assert_eq!(
        status(rig.get(&url("/terminal", &ours), Some(&ann)).await),
        403
    );
    let socket = rig
        .http
        .get(format!("{}{}", rig.url, url("/terminal/socket", &ours)))
        .header("cookie", &ann)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("socket");
    assert_eq!(socket.status(), 403, "no shell for a member");
    let stop = |key: &ChannelKey| url("/stop", key);
    assert_eq!(
        status(
            rig.post(&stop(&ours), Some(&ann), Some(&ann_csrf), &[])
                .await
        ),
        409
    );
    assert_eq!(
        status(
            rig.post(&stop(&theirs), Some(&ann), Some(&ann_csrf), &[])
                .await
        ),
        404
    );
    let start = [("name", "mine"), ("text", "hi")];
    assert_eq!(
        status(
            rig.post("/ui/channels", Some(&ann), Some(&ann_csrf), &start)
                .await
        ),
        403
    );
    // She talks in the local channel she is a member of, but owners' commands are refused.
    let send = url("/send", &notes);
    let said = rig
        .post(&send, Some(&ann), Some(&ann_csrf), &[("text", "hello")])
        .await;
    assert!(said.text().await.expect("form").contains("Sent."));
    let dir = rig
        .post(
            &send,
            Some(&ann),
            Some(&ann_csrf),
            &[("text", "/loop dir /etc")],
        )
        .await
        .text()
        .await
        .expect("form");
    assert!(
        dir.contains("Only this channel&#39;s owners") || dir.contains("owners"),
        "{dir}"
    );
    assert_eq!(
        rig.state.store.channel_work_dir(&notes).await.expect("dir"),
        None
    );
    let messages = rig
        .state
        .store
        .thread_messages("local:notes", 10)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].author_name, "UANN");
    // Approvals: hers only, and no buttons; an answer is refused and changes nothing.
    let approvals = rig.page("/ui/approvals", &ann).await;
    assert!(approvals.contains("touch ours") && !approvals.contains("touch theirs"));
    assert!(!approvals.contains("Allow once"), "no buttons for a member");
    let decide = rig
        .post(
            "/ui/approvals/ap-ours",
            Some(&ann),
            Some(&ann_csrf),
            &[("decision", "allow_once")],
        )
        .await;
    assert_eq!(decide.status(), 403);
    let record = rig.state.store.approval("ap-ours").await.expect("approval");
    assert_eq!(record.status, loop_store::ApprovalStatus::Pending);

    // Carol, an approver: every waiting approval, with buttons, and her answer counts.
    let (carol, carol_csrf) = rig.login_as("UCAROL").await;
    let approvals = rig.page("/ui/approvals", &carol).await;
    assert!(approvals.contains("touch ours") && approvals.contains("touch theirs"));
    assert!(approvals.contains("Allow once"));
    // To judge, she reads the thread an approval came from (not another), and acts in none.
    let quiet = ChannelKey::thread(PlatformKind::Slack, "C3", "3.0");
    seed_channel(&rig, &quiet, "a quiet thread").await;
    let context = rig.page(&url("", &theirs), &carol).await;
    assert!(context.contains("their thread"), "{context}");
    assert!(!context.contains(">Terminal<"));
    for what in ["/diff", "/settings"] {
        assert_eq!(
            status(rig.get(&url(what, &theirs), Some(&carol)).await),
            200,
            "{what}"
        );
    }
    assert_eq!(status(rig.get(&url("", &quiet), Some(&carol)).await), 404);
    assert_eq!(
        status(
            rig.post(&stop(&theirs), Some(&carol), Some(&carol_csrf), &[])
                .await
        ),
        404,
        "reading is not acting"
    );
    let decided = rig
        .post(
            "/ui/approvals/ap-theirs",
            Some(&carol),
            Some(&carol_csrf),
            &[("decision", "deny")],
        )
        .await;
    assert_eq!(decided.status(), 200);
    let record = rig
        .state
        .store
        .approval("ap-theirs")
        .await
        .expect("approval");
    assert_eq!(record.status, loop_store::ApprovalStatus::Denied);
    assert_eq!(record.decided_by.as_deref(), Some("UCAROL (dashboard)"));
    // Decided lately: the context stays readable a while.
    assert_eq!(status(rig.get(&url("", &theirs), Some(&carol)).await), 200);

    // The owner: everything, the terminal and new channels included.
    let (boss, _) = rig.login_as("UBOSS").await;
    let overview = rig.page("/ui/", &boss).await;
    assert!(overview.contains("C1 › 1.0") && overview.contains("C2 › 2.0"));
    assert!(overview.contains("Start a local channel"));
    assert_eq!(
        status(rig.get(&url("/terminal", &theirs), Some(&boss)).await),
        200
    );

    // Someone the config does not know: nothing at all.
    let (stranger, _) = rig.login_as("UEVE").await;
    let overview = rig.page("/ui/", &stranger).await;
    assert!(!overview.contains("C1") && !overview.contains("C2"));
    assert_eq!(status(rig.get(&url("", &ours), Some(&stranger)).await), 404);

    // A login for an id no permission could match is refused, not widened.
    let refused = rig
        .http
        .post(format!("{}/api/ui/login-code", rig.url))
        .bearer_auth(&rig.admin)
        .json(&serde_json::json!({"acts_as": "<script>"}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn pages_and_assets_are_compressed_and_event_streams_are_not() {
    let rig = Rig::start().await;
    let (cookie, _) = rig.login().await;
    let gzip = |path: String| {
        rig.http
            .get(format!("{}{path}", rig.url))
            .header("cookie", &cookie)
            .header("accept-encoding", "gzip")
            .send()
    };
    let mut total = (0, 0);
    let page = gzip("/ui/".to_owned()).await.expect("page");
    let encoding = |r: &reqwest::Response| {
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        encoding(&page).as_deref(),
        Some("gzip"),
        "{:?}",
        page.headers()
    );
    let html = page.bytes().await.expect("body");
    let plain = rig
        .get("/ui/", Some(&cookie))
        .await
        .bytes()
        .await
        .expect("body");
    total.0 += html.len();
    total.1 += plain.len();
    let text = String::from_utf8_lossy(&plain).into_owned();
    let assets: Vec<String> = text
        .split("\"/ui/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/ui/assets/{name}"))
        .collect();
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in &assets {
        let zipped = gzip(asset.clone()).await.expect("asset");
        assert_eq!(encoding(&zipped).as_deref(), Some("gzip"), "{asset}");
        total.0 += zipped.bytes().await.expect("body").len();
        total.1 += rig
            .get(asset, Some(&cookie))
            .await
            .bytes()
            .await
            .expect("body")
            .len();
    }
    println!(
        "overview with its assets: {} bytes, gzipped {} bytes",
        total.1, total.0
    );
    assert!(total.0 * 2 < total.1, "{total:?}");
    // The event stream is not held back by a compressor.
    let stream = gzip("/ui/events?view=overview".to_owned())
        .await
        .expect("stream");
    assert_eq!(encoding(&stream), None);
}

#[tokio::test]
async fn behind_a_proxy_each_user_it_names_has_their_chat_rights_and_nobody_else_gets_in() {
    use loop_adapter::{ChannelKey, GrantLevel, GrantSubject, PlatformKind};
    let rig = Rig::start_with(|config| {
        config.permissions.owners.users = vec!["boss@corp.example".into()];
        config.dashboard_proxy_header = Some("X-Forwarded-User".into());
    })
    .await;
    let ours = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
    let theirs = ChannelKey::thread(PlatformKind::Slack, "C2", "2.0");
    seed_channel(&rig, &ours, "our thread").await;
    seed_channel(&rig, &theirs, "their thread").await;
    rig.state
        .store
        .set_channel_grant(
            &ours,
            &GrantSubject::User("ann@corp.example".into()),
            GrantLevel::Member,
            "boss@corp.example",
        )
        .await
        .expect("grant");
    let through_proxy = |path: &str, user: Option<&str>, token: Option<&str>| {
        let mut request = rig.http.get(format!("{}{path}", rig.url));
        if let Some(user) = user {
            request = request.header("x-forwarded-user", user);
        }
        if let Some(token) = token {
            request = request.header("x-loop-proxy-token", token);
        }
        request.send()
    };
    // The proxy names Ann: no link, no cookie, her channels only.
    let page = through_proxy("/ui/", Some("ann@corp.example"), Some(PROXY_TOKEN))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("set-cookie").is_none());
    let html = page.text().await.expect("html");
    assert!(html.contains("C1 › 1.0") && !html.contains("C2"), "{html}");
    assert!(html.contains("ann@corp.example"), "named in the header");
    // Her CSRF token is her session's: it works for her and only with the proxy's word.
    let csrf = html
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf")
        .to_owned();
    let stop = |user: &str, token: &str, csrf: &str| {
        rig.http
            .post(format!("{}/ui/thread/{ours}/stop", rig.url))
            .header("x-forwarded-user", user)
            .header("x-loop-proxy-token", token)
            .header("x-csrf-token", csrf)
            .send()
    };
    assert_eq!(
        stop("ann@corp.example", PROXY_TOKEN, &csrf)
            .await
            .expect("stop")
            .status(),
        409
    );
    assert_eq!(
        stop("ann@corp.example", PROXY_TOKEN, "forged")
            .await
            .expect("stop")
            .status(),
        403
    );
    // The boss, named by the proxy, sees everything.
    let boss = through_proxy("/ui/", Some("boss@corp.example"), Some(PROXY_TOKEN))
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(boss.contains("C1 › 1.0") && boss.contains("C2 › 2.0"));
    // A name without the proxy's token (a container on the bridge, anyone on the host), a
    // wrong token, or the token without a usable name: nobody.
    for (user, token) in [
        (Some("boss@corp.example"), None),
        (Some("boss@corp.example"), Some("not-the-token")),
        (None, Some(PROXY_TOKEN)),
        (Some("boss <script>"), Some(PROXY_TOKEN)),
    ] {
        let refused = through_proxy("/ui/", user, token).await.expect("get");
        assert_eq!(refused.status(), 401, "{user:?} {token:?}");
    }
    // `loop ui` links still work next to the proxy.
    let (cookie, _) = rig.login().await;
    assert_eq!(rig.get("/ui/", Some(&cookie)).await.status(), 200);
}

#[tokio::test]
async fn a_thread_stream_ends_when_an_owner_shuts_its_viewer_out_in_chat() {
    use loop_adapter::{
        Author, ChannelKey, ChatCommand, GrantLevel, GrantSubject, Inbound, PlatformKind,
    };
    let rig = Rig::start_with(|config| {
        config.permissions.owners.users = vec!["UBOSS".into()];
    })
    .await;
    let notes = ChannelKey::channel(PlatformKind::Local, "notes");
    seed_channel(&rig, &notes, "our notes").await;
    // What an owner types in the channel: `/loop allow_user UANN`, later `/loop deny_user UANN`.
    let grant = |level| {
        let orchestrator = rig.state.orchestrator.clone();
        let notes = notes.clone();
        async move {
            orchestrator
                .accept(Inbound::Command {
                    channel: notes,
                    author: Author {
                        id: "UBOSS".into(),
                        name: "boss".into(),
                        is_bot: false,
                        roles: vec![],
                    },
                    command: ChatCommand::Grant {
                        subject: GrantSubject::User("UANN".into()),
                        level,
                    },
                })
                .await
                .expect("the command")
        }
    };
    grant(GrantLevel::Member).await;
    let (ann, _) = rig.login_as("UANN").await;
    let mut stream = rig
        .get(&format!("/ui/events?view=thread&key={notes}"), Some(&ann))
        .await;
    assert_eq!(stream.status(), 200);
    sse_until(&mut stream, "event: thread-turn").await;
    // Her turn starts: still hers, the stream goes on.
    rig.state
        .orchestrator
        .announce(loop_wire::api::RunEvent::Started {
            run_id: "run-1".into(),
            channel: notes.to_string(),
        });
    sse_until(&mut stream, "event: thread-status").await;
    // The owner shuts her out: the stream ends at once, nothing else happening.
    grant(GrantLevel::Denied).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream went on after the deny");
    assert_eq!(
        rig.get(&format!("/ui/thread/{notes}"), Some(&ann))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn a_login_with_roles_has_the_rights_the_config_gives_those_roles() {
    use loop_adapter::{ChannelKey, PlatformKind};
    let rig = Rig::start_with(|config| {
        config.permissions.owners.users = vec!["UBOSS".into()];
        config.permissions.members.roles = vec!["R-DEV".into()];
        config.permissions.approvers.roles = vec!["R-OPS".into()];
    })
    .await;
    let thread = ChannelKey::thread(PlatformKind::Discord, "G1", "T1");
    seed_channel(&rig, &thread, "a discord thread").await;
    seed_approval(&rig, "ap-1", &thread.to_string(), "exec /usr/bin/touch x").await;
    let login = |id: &str, roles: &[&str]| {
        rig.login_with(serde_json::json!({"acts_as": id, "roles": roles}))
    };
    // `loop ui --user UDAN --role R-DEV`: a member by role.
    let (dev, _) = login("UDAN", &["R-DEV"]).await;
    let overview = rig.page("/ui/", &dev).await;
    assert!(overview.contains("G1 › T1"), "{overview}");
    let terminal = format!("/ui/thread/{thread}/terminal");
    assert_eq!(rig.get(&terminal, Some(&dev)).await.status(), 403);
    assert!(!rig.page("/ui/approvals", &dev).await.contains("Allow once"));
    // The same id without the role: nothing.
    let (plain, _) = login("UDAN", &[]).await;
    assert!(!rig.page("/ui/", &plain).await.contains("G1"));
    // An approver by role answers.
    let (ops, ops_csrf) = login("UOPS", &["R-OPS"]).await;
    assert!(rig.page("/ui/approvals", &ops).await.contains("Allow once"));
    let decided = rig
        .post(
            "/ui/approvals/ap-1",
            Some(&ops),
            Some(&ops_csrf),
            &[("decision", "allow_once")],
        )
        .await;
    assert_eq!(decided.status(), 200);
}

#[tokio::test]
async fn behind_a_proxy_the_groups_it_names_are_the_users_roles_on_each_request() {
    use loop_adapter::{ChannelKey, PlatformKind};
    let rig = Rig::start_with(|config| {
        config.permissions.owners.roles = vec!["loop-owners".into()];
        config.permissions.approvers.roles = vec!["loop-approvers".into()];
        config.dashboard_proxy_header = Some("X-Forwarded-User".into());
        config.dashboard_proxy_roles_header = Some("X-Forwarded-Groups".into());
    })
    .await;
    let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.0");
    seed_channel(&rig, &thread, "a thread").await;
    let overview = |groups: Option<&'static str>| {
        let mut request = rig
            .http
            .get(format!("{}/ui/", rig.url))
            .header("x-forwarded-user", "carol@corp.example")
            .header("x-loop-proxy-token", PROXY_TOKEN);
        if let Some(groups) = groups {
            request = request.header("x-forwarded-groups", groups);
        }
        async move {
            let page = request.send().await.expect("page");
            assert_eq!(page.status(), 200);
            page.text().await.expect("html")
        }
    };
    // Carol is in no permission by name: her groups decide, as the proxy lists them.
    assert!(!overview(None).await.contains("C1 › 1.0"));
    assert!(
        !overview(Some("staff, engineering"))
            .await
            .contains("C1 › 1.0")
    );
    let owner = overview(Some("staff, loop-owners")).await;
    assert!(owner.contains("C1 › 1.0"), "{owner}");
    let thread_page = format!("/ui/thread/{thread}/terminal");
    let terminal = |groups: &'static str| {
        rig.http
            .get(format!("{}{thread_page}", rig.url))
            .header("x-forwarded-user", "carol@corp.example")
            .header("x-loop-proxy-token", PROXY_TOKEN)
            .header("x-forwarded-groups", groups)
            .send()
    };
    assert_eq!(
        terminal("loop-owners").await.expect("terminal").status(),
        200
    );
    // Removed from the group at the identity provider: the next request has no owner left.
    assert_eq!(terminal("staff").await.expect("terminal").status(), 404);
    assert!(!overview(Some("staff")).await.contains("C1 › 1.0"));
    // A group no permission could name is left out; the others still count.
    assert!(!overview(Some("<script>")).await.contains("C1 › 1.0"));
    assert!(
        overview(Some("<script>, loop-owners"))
            .await
            .contains("C1 › 1.0")
    );
}

/// Opens each shell only after `delay` (an engine that hangs, then answers), and counts the
/// shells it is asked to close.
struct SlowShells {
    delay: std::time::Duration,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl AgentRunner for SlowShells {
    async fn run_turn(
        &self,
        _request: TurnRequest,
        _events: Option<loop_runner::agent::EventSender>,
        _cancel: CancellationToken,
    ) -> Result<TurnOutcome, RunError> {
        Err(RunError::Cancelled)
    }

    async fn open_shell(
        &self,
        request: loop_runner::ShellRequest,
    ) -> Result<loop_runner::OpenShell, loop_runner::ShellError> {
        use futures::StreamExt;
        tokio::time::sleep(self.delay).await;
        Ok(loop_runner::OpenShell {
            handle: loop_runner::ShellHandle::new(
                "exec-late",
                "shell-late",
                request.target.channel_id,
                loop_runner::ShellHost::ShellContainer,
            ),
            output: futures::stream::pending().boxed(),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn close_shell(&self, _shell: &loop_runner::ShellHandle) {
        self.closed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_shell_that_does_not_open_in_time_is_refused_with_the_reason_and_closed_once_it_opens() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runner = SlowShells {
        delay: Duration::from_millis(800),
        closed: closed.clone(),
    };
    let rig = Rig::start_with_runner(Arc::new(runner), |_| {}).await;
    let hub = crate::terminal::TerminalHub::new(rig.state.orchestrator.clone(), Duration::ZERO)
        .with_open_timeout(Duration::from_millis(100));
    let channel = loop_adapter::ChannelKey::channel(loop_adapter::PlatformKind::Local, "notes");
    let refused = hub
        .attach("session-1", &channel, loop_runner::TerminalSize::DEFAULT)
        .await
        .err()
        .expect("the page is told instead of waiting for the shell");
    assert!(
        refused.to_string().contains("did not open within"),
        "{refused}"
    );
    assert_eq!(closed.load(Ordering::SeqCst), 0);
    // The shell opens after all: nobody is there for it, so it is closed, not kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late shell was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.shutdown().await;
    assert_eq!(closed.load(Ordering::SeqCst), 1);
}
