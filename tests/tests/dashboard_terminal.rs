//! The dashboard's diff and terminal pages in a real browser: headless Chromium (WebDriver)
//! against a real `loop serve` whose Slack is the fake Slack, the real agent image and CLI,
//! and the scripted fake model. A person opens a finished Slack thread's changes (the agent
//! edited README.md with its Edit tool) and sees the changed line side by side, then opens
//! the thread's terminal, types `pwd` and `id`, and sees the thread's worktree and the agent's
//! uid. On the way, the thread's settings show its config with the API key redacted. Then a
//! member of the channel, logged in with `loop ui --user`, reads the thread and its changes but
//! gets no terminal, and someone with no role there does not see the thread at all.

use std::time::Duration;

use fantoccini::Locator;
use fantoccini::key::Key;
use loop_e2e::browser::Browser;
use loop_e2e::daemon::Daemon;
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::slack::{connected, has_text, point_channel, slack_config, thread_until};
use loop_e2e::support::{AGENT_UID, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Session};
use loop_fakes::slack::FakeSlack;

const TURN: Duration = Duration::from_secs(180);
const SEEN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_threads_changes_and_its_terminal_in_the_browser() {
    if docker().await.is_none() {
        return;
    }
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (dir, _) = workspace();
    let project = Project::create(&dir.path().join("app"), GitOwner::Agent);
    let session = Session::default();
    let model =
        start_model(Script::new().rule(Rule::contains("add the notes").session(&session))).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    // Alice owns the channel, Bob is a member; nobody else may use it.
    let config = slack_config(&model, &slack, dir.path(), "").replace(
        r#""permissions": {"approvers": {"users": ["UBOSS"]}}"#,
        r#""permissions": {"owners": {"users": ["UALICE"]}, "members": {"users": ["UBOB"]}, "approvers": {"users": ["UBOSS"]}}"#,
    );
    assert!(config.contains("UBOB"), "the permissions are in the config");
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    browser.show_log_on_failure(daemon.log_path());
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C9", &project.dir).await;

    // A Slack thread whose agent edits README.md with its Edit tool, and finishes.
    let asked = slack.post_as_user(
        "UALICE",
        "C9",
        &format!("{} please add the notes", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(&slack, &daemon, "C9", &asked.ts, "the report", TURN, |m| {
        has_text(m, "Worked in")
    })
    .await;
    let report = thread
        .iter()
        .find(|m| m.text.contains("Worked in"))
        .expect("the report");
    let worktree = project.check_thread(&report.text, &model);
    let key = format!("slack:C9:{}", asked.ts);

    // Log in with the link `loop ui` prints, and open the thread.
    let out = daemon.cli(&["ui", "--no-open"]);
    assert!(out.status.success(), "{out:?}");
    let link = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    browser.client.goto(&link).await.expect("open the link");
    let thread_page = daemon.url(&format!(
        "/ui/thread/{}",
        loop_wire::routes::path_segment(&key)
    ));
    browser.client.goto(&thread_page).await.expect("the thread");

    // Its changes: the file list, and README.md side by side, the old line left, the new one
    // right.
    browser
        .client
        .find(Locator::LinkText("Changes"))
        .await
        .expect("the Changes link")
        .click()
        .await
        .expect("open the changes");
    let list = browser
        .wait_for_text(".diff-files", &session.edit_file, SEEN)
        .await;
    assert!(list.contains(&session.new_file), "{list}");
    let file = browser
        .client
        .find(Locator::LinkText(&session.edit_file))
        .await
        .expect("README.md in the list")
        .attr("href")
        .await
        .expect("href")
        .expect("the file's anchor");
    let removed = browser
        .wait_for_text(
            &format!("{file} td.removed[data-side=old]"),
            &session.old,
            SEEN,
        )
        .await;
    let added = browser
        .wait_for_text(
            &format!("{file} td.added[data-side=new]"),
            &session.new,
            SEEN,
        )
        .await;
    assert_eq!(
        (removed.trim(), added.trim()),
        (session.old.as_str(), session.new.as_str())
    );
    browser.screenshot("dashboard-diff").await;

    // Its settings: the config its turns run under, without the secrets in it.
    browser.client.goto(&thread_page).await.expect("the thread");
    browser
        .client
        .find(Locator::LinkText("Settings"))
        .await
        .expect("the Settings link")
        .click()
        .await
        .expect("open the settings");
    let config = browser
        .wait_for_text("pre.config", "\"anthropic_api_key\": \"[REDACTED]\"", SEEN)
        .await;
    assert!(
        config.contains(&format!(
            "\"container_image\": \"{}\"",
            loop_e2e::support::test_image()
        )),
        "{config}"
    );
    let html = browser.client.source().await.expect("the page's source");
    assert!(
        !html.contains("sk-test-not-a-real-key"),
        "the API key is on the page"
    );
    browser
        .wait_for_text("table.checks", "credentials", SEEN)
        .await;

    // Its terminal: a shell in the thread's agent container, in its worktree, as its uid.
    browser.client.goto(&thread_page).await.expect("the thread");
    browser
        .client
        .find(Locator::LinkText("Terminal"))
        .await
        .expect("the Terminal link")
        .click()
        .await
        .expect("open the terminal");
    browser
        .wait_for_text("#terminal-status", "connected to", TURN)
        .await;
    let keys = browser
        .client
        .find(Locator::Css(".xterm-helper-textarea"))
        .await
        .expect("xterm's input");
    let enter = char::from(Key::Enter);
    keys.send_keys(&format!("pwd{enter}id{enter}"))
        .await
        .expect("type");
    let screen = browser
        .wait_for_text(".xterm-rows", &format!("uid={AGENT_UID}("), SEEN)
        .await;
    let lines: Vec<String> = screen
        .lines()
        .map(|l| l.replace('\u{a0}', " ").trim_end().to_owned())
        .collect();
    let worktree = worktree.display().to_string();
    assert!(
        lines.contains(&worktree),
        "pwd shows the thread's worktree {worktree}: {lines:#?}"
    );
    browser.screenshot("dashboard-terminal").await;

    // Bob, a member, with the link `loop ui --user` makes for him: the thread and its changes,
    // no terminal.
    let login_as = |id: &str| {
        let out = daemon.cli(&["ui", "--user", id, "--no-open"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    browser
        .client
        .goto(&login_as("UBOB"))
        .await
        .expect("Bob's link");
    browser.wait_for_text("#overview-body", "C9 ›", SEEN).await;
    browser.client.goto(&thread_page).await.expect("the thread");
    browser
        .wait_for_text("#thread-chat", "please add the notes", SEEN)
        .await;
    assert!(
        browser
            .client
            .find(Locator::LinkText("Terminal"))
            .await
            .is_err(),
        "no terminal link for a member"
    );
    browser
        .client
        .find(Locator::LinkText("Changes"))
        .await
        .expect("the Changes link")
        .click()
        .await
        .expect("open the changes");
    browser
        .wait_for_text(".diff-files", &session.edit_file, SEEN)
        .await;
    let terminal_page = daemon.url(&loop_wire::routes::ui_terminal(&key));
    browser
        .client
        .goto(&terminal_page)
        .await
        .expect("the terminal");
    browser
        .wait_for_text("body", "Only this channel's owners", SEEN)
        .await;

    // Eve, whom the config does not know: the thread is not there for her.
    browser
        .client
        .goto(&login_as("UEVE"))
        .await
        .expect("Eve's link");
    let overview = browser
        .wait_for_text("#overview-body", "Channels and threads", SEEN)
        .await;
    assert!(!overview.contains("C9"), "{overview}");
    browser.client.goto(&thread_page).await.expect("the thread");
    browser.wait_for_text("body", "no channel", SEEN).await;
    browser.close().await;
}
