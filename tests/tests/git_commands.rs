//! `/loop diff` and `/loop base` end to end: a real `loop serve` with the fake Slack, real
//! containers running the real Claude Code CLI against the scripted fake model, and a real
//! repository. A thread's work is reviewed from chat (short diffs in the message, long ones as
//! a file uploaded the way Slack's docs describe) and a channel's base decides where its next
//! thread starts.

use std::path::Path;
use std::time::Duration;

use loop_e2e::daemon::Daemon;
use loop_e2e::project::{GitOwner, Project, branch_named_in, git_output};
use loop_e2e::slack::{connected, has_text, point_channel, reply_in, slack_config, thread_until};
use loop_e2e::support::{AGENT_UID, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Session, Step};
use loop_fakes::slack::{FakeSlack, SlackMessage};

const TURN: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(30);

/// Lines of the changelog the second turn writes: a diff far over what a message shows.
const CHANGELOG_LINES: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn a_threads_diff_is_shown_in_chat_and_the_channels_base_starts_the_next_thread() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let develop_marker = add_develop_branch(&project.dir);
    let changelog: String = (1..=CHANGELOG_LINES)
        .map(|i| format!("- change number {i}\n"))
        .collect();
    let script = Script::new()
        .rule(Rule::contains("add the notes").session(&Session::default()))
        .rule(
            Rule::contains("write the changelog")
                .then(Step::write("CHANGELOG.md", &changelog))
                .then(Step::text("Wrote CHANGELOG.md.")),
        )
        .rule(
            Rule::contains("which commit")
                .then(Step::bash("git log --format=%s -1"))
                .then(Step::text("Last commit: {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let daemon = Daemon::start(&home, &slack_config(&model, &slack, dir.path(), "")).await;
    connected(&slack, &daemon).await;

    point_channel(&slack, &daemon, "UALICE", "C7", &project.dir).await;

    // Before any thread: a channel's `/loop diff` and `/loop base` say what they can.
    slack.slash_command("UALICE", "C7", "/loop", "diff");
    reply_in(&slack, &daemon, "C7", "works in a thread", QUICK).await;
    slack.slash_command("UALICE", "C7", "/loop", "base");
    reply_in(
        &slack,
        &daemon,
        "C7",
        "the repository's current branch, `main` now",
        QUICK,
    )
    .await;

    // A thread's turn edits README.md and writes NOTES.md; its diff comes as a message.
    let asked = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} please add the notes", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the session's report",
        TURN,
        |m| has_text(m, "Tests: ") && has_text(m, "🌿 `loop/"),
    )
    .await;
    let report = thread
        .iter()
        .find(|m| m.text.contains("Tests: "))
        .expect("report");
    project.check_thread(&report.text, &model);
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .expect("the thread names its branch");

    let diff = ask_diff(&slack, &daemon, &asked.ts, |m| m.text.contains("```")).await;
    let session = Session::default();
    for line in [
        format!("🌿 `{branch}` against `main`"),
        "2 files changed, +2 −1 in 1 commit".to_owned(),
        "• `NOTES.md` +1 −0".to_owned(),
        "• `README.md` +1 −1".to_owned(),
        format!("-{}", session.old),
        format!("+{}", session.new),
        format!("+{}", session.new_content.trim_end()),
    ] {
        assert!(diff.text.contains(&line), "{line:?} not in {}", diff.text);
    }
    assert!(
        slack.files().is_empty(),
        "a short diff is no file: {:?}",
        slack.files()
    );

    // Uncommitted work in the worktree is part of the diff (a person editing there).
    let worktree = project.worktree_of(&branch);
    let scratch = worktree.join("SCRATCH.md");
    std::fs::write(&scratch, "half done\n").expect("scratch");
    std::os::unix::fs::chown(&scratch, Some(AGENT_UID), Some(AGENT_UID)).expect("chown");
    let diff = ask_diff(&slack, &daemon, &asked.ts, |m| {
        m.text.contains("+half done")
    })
    .await;
    assert!(
        diff.text
            .contains("3 files changed, +3 −1 in 1 commit and uncommitted changes"),
        "{}",
        diff.text
    );
    std::fs::remove_file(&scratch).expect("rm scratch");

    // A follow-up writes a long file: the diff comes as a file, its summary as the comment.
    slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} now write the changelog", FakeSlack::mention()),
        Some(&asked.ts),
    );
    thread_until(
        &slack,
        &daemon,
        "C7",
        &asked.ts,
        "the changelog answer",
        TURN,
        |m| has_text(m, "Wrote CHANGELOG.md.") && has_text(m, "`CHANGELOG.md` +200 −0"),
    )
    .await;
    let shared = ask_diff(&slack, &daemon, &asked.ts, |m| !m.files.is_empty()).await;
    let files = slack.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let name = format!("{}.diff", branch.replace('/', "-"));
    assert_eq!(file.filename, name);
    assert_eq!(file.channel.as_deref(), Some("C7"));
    assert_eq!(file.thread_ts.as_deref(), Some(asked.ts.as_str()));
    assert_eq!(shared.files, vec![file.id.clone()]);
    let content = file.content.as_deref().unwrap_or_default();
    assert_eq!(file.length, content.len(), "the announced length");
    let expected_diff = git_output(
        &project.dir,
        &["diff", "--no-color", "--no-ext-diff", "main", &branch, "--"],
    );
    assert_eq!(
        content.trim_end(),
        expected_diff.trim_end(),
        "the file is the branch's diff against its base"
    );
    assert!(
        content.contains(&format!("+- change number {CHANGELOG_LINES}")),
        "{content}"
    );
    for line in [
        format!("🌿 `{branch}` against `main`"),
        format!("3 files changed, +{} −1 in 2 commits", CHANGELOG_LINES + 2),
        format!("• `CHANGELOG.md` +{CHANGELOG_LINES} −0"),
        format!("attached as `{name}`"),
    ] {
        assert!(
            shared.text.contains(&line),
            "{line:?} not in {}",
            shared.text
        );
    }
    assert!(!shared.text.contains("change number"), "{}", shared.text);

    // `/loop base`: a branch the repository does not have is refused; `develop` is taken,
    // and the channel's next thread starts from it.
    slack.slash_command("UALICE", "C7", "/loop", "base no-such-branch");
    reply_in(
        &slack,
        &daemon,
        "C7",
        "`no-such-branch` is not a branch, tag or commit",
        QUICK,
    )
    .await;
    slack.slash_command("UALICE", "C7", "/loop", "base develop");
    reply_in(
        &slack,
        &daemon,
        "C7",
        "New threads in this channel start from `develop`",
        QUICK,
    )
    .await;
    let next = slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} which commit are you on?", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C7",
        &next.ts,
        "the answer from develop",
        TURN,
        |m| has_text(m, "Last commit: "),
    )
    .await;
    assert!(
        has_text(&thread, "from `develop`"),
        "the status message names the base: {thread:#?}"
    );
    assert!(
        has_text(&thread, &format!("Last commit: {develop_marker}")),
        "the agent's checkout is develop's: {thread:#?}"
    );
    let next_branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .expect("the new thread names its branch");
    assert_ne!(next_branch, branch);
    assert!(
        project
            .worktree_of(&next_branch)
            .join("DEVELOP.md")
            .exists()
    );
}

/// Sends `!loop diff` in the thread `thread_ts` and waits for the bot's first new message
/// there that `check` accepts.
async fn ask_diff(
    slack: &FakeSlack,
    daemon: &Daemon,
    thread_ts: &str,
    check: impl Fn(&SlackMessage) -> bool,
) -> SlackMessage {
    let before = slack.bot_messages_in("C7", Some(thread_ts)).len();
    slack.post_as_user(
        "UALICE",
        "C7",
        &format!("{} !loop diff", FakeSlack::mention()),
        Some(thread_ts),
    );
    let messages = thread_until(slack, daemon, "C7", thread_ts, "the diff", QUICK, |m| {
        m.iter().skip(before).any(&check)
    })
    .await;
    messages
        .into_iter()
        .skip(before)
        .find(|m| check(m))
        .expect("found above")
}

/// A `develop` branch one commit ahead of `main` (DEVELOP.md), made the way a person would,
/// then handed to the agent's uid like the rest of the checkout. Returns the commit's subject.
fn add_develop_branch(repo: &Path) -> String {
    let subject = "Start the develop line".to_owned();
    git_output(repo, &["checkout", "-q", "-b", "develop"]);
    std::fs::write(repo.join("DEVELOP.md"), "develop only\n").expect("write");
    git_output(repo, &["add", "DEVELOP.md"]);
    git_output(
        repo,
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "-m",
            &subject,
        ],
    );
    git_output(repo, &["checkout", "-q", "main"]);
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{AGENT_UID}:{AGENT_UID}")])
        .arg(repo)
        .status()
        .expect("chown");
    assert!(status.success());
    subject
}
