//! The web dashboard in a real browser: headless Chromium (WebDriver) against a real
//! `loop serve` whose Slack is the fake Slack, with real containers running the real Claude
//! Code CLI against the scripted fake model. What is checked is what a person sees: the text
//! in the page, the message in the Slack thread.

use std::time::Duration;

use fantoccini::Locator;
use loop_e2e::browser::Browser;
use loop_e2e::daemon::Daemon;
use loop_e2e::slack::{connected, has_text, point_channel, slack_config, thread_until};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};
use loop_fakes::slack::FakeSlack;

const TURN: Duration = Duration::from_secs(180);
const SEEN: Duration = Duration::from_secs(60);

/// The agent asks the dashboard for its overview with the token it holds (the MCP server's,
/// `LOOP_API_TOKEN`), as a prompt-injected agent would.
const TRY_THE_DASHBOARD: &str = r#"python3 - <<'PY'
import os, urllib.request as u, urllib.error as e
r = u.Request(os.environ["API_URL"] + "/ui/", headers={"Authorization": "Bearer " + os.environ["LOOP_API_TOKEN"]})
try:
    print("ui_status=%d" % u.urlopen(r).status)
except e.HTTPError as x:
    print("ui_status=%d" % x.code)
PY"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_slack_thread_live_and_answers_its_approval() {
    if docker().await.is_none() {
        return;
    }
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (dir, project) = workspace();
    let script = Script::new()
        .rule(
            Rule::contains("run the slow build")
                .then(Step::bash("sleep 8; echo build-finished"))
                .then(Step::text("Build done: {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("touch dash")
                .then(Step::bash("touch gate-approval-dash; echo \"dash_rc=$?\""))
                .then(Step::text("DASH {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("try the dashboard")
                .then(Step::bash(TRY_THE_DASHBOARD))
                .then(Step::text("TRIED {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let gates = serde_json::json!({
        "agentgate": {
            "approval_timeout_sec": 120,
            "command_rules": [{
                "commands": ["touch"],
                "args_patterns": ["gate-approval"],
                "decision": "approve",
                "message": "touching needs a person"
            }]
        }
    });
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), &format!("\"gates\": {gates}")),
    )
    .await;
    browser.show_log_on_failure(daemon.log_path());
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C7", &project).await;

    // Log in with the link `loop ui` prints: the code leaves the address bar.
    let out = daemon.cli(&["ui", "--no-open"]);
    assert!(out.status.success(), "{out:?}");
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(link.contains("/ui/login?code="), "{link}");
    browser.client.goto(&link).await.expect("open the link");
    let landed = browser.client.current_url().await.expect("url");
    assert_eq!(landed.path(), "/ui/");
    assert!(landed.query().is_none(), "the code left the address bar");
    browser
        .wait_for_text("main", "Channels and threads", SEEN)
        .await;
    let cookie = browser.cookie("loop_ui").await.expect("the session cookie");

    // A Slack thread appears in the open overview by itself (no reload) while it runs.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} please run the slow build", FakeSlack::mention()),
        None,
    );
    let row = format!("C7 › {}", asked.ts);
    browser.wait_for_text("#overview-body", &row, TURN).await;
    browser
        .wait_for_text("#overview-body", "running for", TURN)
        .await;
    browser.screenshot("dashboard-overview").await;

    // Its page shows the tool call while it runs, then its output streams in.
    let link = browser
        .client
        .find(Locator::LinkText(&row))
        .await
        .expect("the thread's link");
    link.click().await.expect("open the thread");
    browser
        .wait_for_text(
            "#thread-activity",
            "Bash: sleep 8; echo build-finished",
            TURN,
        )
        .await;
    let status = browser
        .wait_for_text("#thread-status", "running for", SEEN)
        .await;
    assert!(status.contains("Stop"), "{status}");
    browser.screenshot("dashboard-thread-live").await;
    let activity = browser
        .wait_for_text("#thread-activity", "output (1 line)", TURN)
        .await;
    assert!(
        activity.ends_with("build-finished"),
        "the output under its call: {activity}"
    );
    browser
        .wait_for_text("#thread-chat", "Build done: build-finished", TURN)
        .await;
    browser.wait_for_text("#thread-status", "idle", TURN).await;

    // An approval answered in the page: the agent's call goes on, and the Slack prompt says
    // who decided.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} touch dash", FakeSlack::mention()),
        None,
    );
    browser
        .client
        .goto(&daemon.url("/ui/approvals"))
        .await
        .expect("approvals");
    let card = browser
        .wait_for_text("#approvals-live", "touch gate-approval-dash", TURN)
        .await;
    assert!(card.contains("left"), "a countdown: {card}");
    browser.screenshot("dashboard-approval").await;
    browser
        .client
        .find(Locator::XPath("//button[normalize-space()='Allow once']"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    browser
        .wait_for_text("#approvals-live", "allowed once by", SEEN)
        .await;
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the approved answer",
        TURN,
        |m| has_text(m, "DASH"),
    )
    .await;
    assert!(has_text(&thread, "dash_rc=0"), "{thread:#?}");
    let prompt = thread
        .iter()
        .find(|m| m.blocks.is_some())
        .expect("the prompt");
    assert!(
        prompt.text.contains("allowed once by") && prompt.text.contains("dashboard"),
        "the Slack prompt says who decided: {prompt:#?}"
    );
    let store = daemon.store().await;
    let audit = store.gate_audit(5).await.expect("audit");
    assert!(
        audit.iter().any(|e| e
            .decided_by
            .as_deref()
            .is_some_and(|b| b.contains("dashboard"))),
        "{audit:#?}"
    );

    // Refused: no cookie, the admin's bearer token, a wrong CSRF token, a container's token.
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(http.get(daemon.url("/ui/")).send().await.expect("get")),
        401
    );
    assert_eq!(
        status(
            http.get(daemon.url("/ui/"))
                .bearer_auth(daemon.token())
                .send()
                .await
                .expect("get")
        ),
        401,
        "the admin token opened the dashboard"
    );
    let session = format!("loop_ui={cookie}");
    assert_eq!(
        status(
            http.get(daemon.url("/ui/"))
                .header("cookie", &session)
                .send()
                .await
                .expect("get")
        ),
        200
    );
    for csrf in [None, Some("0".repeat(64))] {
        let mut request = http
            .post(daemon.url("/ui/thread/slack:C7/stop"))
            .header("cookie", &session);
        if let Some(csrf) = &csrf {
            request = request.header("x-csrf-token", csrf);
        }
        assert_eq!(
            status(request.send().await.expect("post")),
            403,
            "csrf {csrf:?}"
        );
    }
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} try the dashboard", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the agent's try",
        TURN,
        |m| has_text(m, "TRIED"),
    )
    .await;
    assert!(
        has_text(&thread, "ui_status=401"),
        "a container token opened the dashboard: {thread:#?}"
    );
    browser.close().await;
}
