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
        let db = TestDb::sqlite().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = ConfigSources {
            home: dir.path().to_path_buf(),
            loop_dir: dir.path().join(".loop"),
            env: Default::default(),
        };
        let config = Config::defaults(&sources);
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
            Arc::new(NoRunner),
            vec![Arc::new(local.clone())],
            CancellationToken::new(),
        );
        let admin = crate::gate::tokens::random_token();
        let state = ApiState::new(orchestrator, local, None, admin.clone());
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
        let link: loop_wire::api::UiLoginLink = self
            .http
            .post(format!("{}/api/ui/login-code", self.url))
            .bearer_auth(&self.admin)
            .json(&serde_json::json!({"user": "alice"}))
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
        let response = self
            .http
            .get(format!("{}{}", self.url, self.login_path().await))
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
