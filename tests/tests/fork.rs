//! `/loop fork N PROMPT` end to end: a real `loop serve` on the fake Slack runs three variants
//! of one request in three Slack threads at once, each in its own worktree on its own branch
//! cut from the same commit, and posts one comparison in the channel once all three have
//! finished, even when the daemon is killed and restarted while one of them still runs.
//!
//! The fake model tells the variants apart the way a model would: by the line loop adds to
//! each variant's request ("(Variant 2 of 3: ...)"), so each makes a different edit.

use std::path::Path;
use std::time::Duration;

use loop_e2e::daemon::{Daemon, eventually};
use loop_e2e::project::{GitOwner, Project, branch_named_in, git_output};
use loop_e2e::slack::{connected, has_text, point_channel, slack_config, thread_until};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_fakes::slack::{FakeSlack, SlackMessage};

/// Three agents start at once on a loaded machine.
const TURN: Duration = Duration::from_secs(300);
const QUICK: Duration = Duration::from_secs(30);
const VARIANTS: u32 = 3;
/// The variant whose first attempt the model holds until the daemon has been restarted.
const HELD: u32 = 3;

/// What variant `i` writes in the README: the edit that differs per variant.
fn status_line(i: u32) -> String {
    format!("Status: reviewed (variant {i})")
}

/// A model session per variant, as a person's would go: look around, read the README, edit
/// it by relative path, run the project's tests, report. Variant `i` is recognised by the line
/// loop adds to its request. The three first requests meet at a barrier (the variants run at
/// once), and the held variant's first attempt waits there for two minutes.
fn variants_model() -> Script {
    let mut script = Script::new();
    for i in 1..=VARIANTS {
        let tag = format!("(Variant {i} of {VARIANTS}");
        let report = "Variant {i} marked the README reviewed in {{tool_result.0}}.\nTests: {{tool_result.4}}\nGit: {{tool_result.1}}"
            .replace("{i}", &i.to_string());
        let start = if i == HELD {
            // The first attempt: held; the attempt after the restart goes straight to work.
            script = script.rule(Rule::contains(&tag).times(1).then(Step::barrier(
                "start",
                VARIANTS,
                Step::delay(120_000, Step::text("too late")),
            )));
            Step::bash("pwd")
        } else {
            Step::barrier("start", VARIANTS, Step::bash("pwd"))
        };
        script = script.rule(
            Rule::contains(&tag)
                .then(start)
                .then(Step::bash("git status --short --branch"))
                .then(Step::read("README.md"))
                .then(Step::edit("README.md", "Status: draft", &status_line(i)))
                .then(Step::bash("sh test.sh"))
                .then(Step::text(&report)),
        );
    }
    script
}

/// Requests of the held variant's turns.
fn held_requests(model: &FakeModel) -> usize {
    let tag = format!("(Variant {HELD} of {VARIANTS}");
    model
        .requests()
        .iter()
        .filter(|r| {
            r.conversation
                .as_ref()
                .is_some_and(|c| c.prompt.contains(&tag))
        })
        .count()
}

/// The thread titles the fork posted in the channel, by variant.
async fn variant_titles(slack: &FakeSlack, daemon: &Daemon) -> Vec<SlackMessage> {
    let titles = slack
        .wait_for(QUICK, |s| {
            let titles: Vec<SlackMessage> = s
                .bot_messages_in("C1", None)
                .into_iter()
                .filter(|m| m.text.contains("🔀 Variant "))
                .collect();
            (titles.len() == VARIANTS as usize).then_some(titles)
        })
        .await
        .unwrap_or_else(|| panic!("no variant threads\n{}", daemon.log_text()));
    (1..=VARIANTS)
        .map(|i| {
            titles
                .iter()
                .find(|t| t.text.contains(&format!("🔀 Variant {i}/{VARIANTS}: ")))
                .cloned()
                .unwrap_or_else(|| panic!("no thread for variant {i}: {titles:#?}"))
        })
        .collect()
}

/// Waits for variant `i`'s report in its thread; returns its branch.
async fn variant_branch(
    slack: &FakeSlack,
    daemon: &Daemon,
    title: &SlackMessage,
    i: u32,
) -> String {
    let thread = thread_until(
        slack,
        daemon,
        "C1",
        &title.ts,
        &format!("variant {i}'s report"),
        TURN,
        |m| has_text(m, &format!("Variant {i} marked the README")),
    )
    .await;
    let report = thread
        .iter()
        .find(|m| m.text.contains("marked the README"))
        .expect("report");
    assert!(
        report.text.contains("Tests: tests pass"),
        "variant {i}'s tests did not pass in its worktree: {thread:#?}"
    );
    let branch = thread
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .unwrap_or_else(|| panic!("no branch named in variant {i}'s thread: {thread:#?}"));
    assert!(
        report.text.contains(&format!("Git: ## {branch}")),
        "variant {i}'s agent did not work on its branch {branch}: {thread:#?}"
    );
    branch
}

fn comparisons(slack: &FakeSlack) -> Vec<SlackMessage> {
    slack
        .bot_messages_in("C1", None)
        .into_iter()
        .filter(|m| m.text.contains("variants") && m.text.contains("all finished"))
        .collect()
}

fn file_on(repo: &Path, branch: &str, file: &str) -> String {
    git_output(repo, &["show", &format!("{branch}:{file}")])
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_three_runs_three_branches_from_one_commit_and_posts_one_comparison_across_a_restart()
{
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let base = git_output(&project.dir, &["rev-parse", "main"]);
    let model = start_model(variants_model()).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &slack_config(&model, &slack, dir.path(), "")).await;
    connected(&slack, &daemon).await;

    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;

    slack.slash_command(
        "UALICE",
        "C1",
        "/loop",
        "fork 3 mark the README as reviewed",
    );
    let titles = variant_titles(&slack, &daemon).await;
    slack
        .wait_for(QUICK, |s| {
            s.bot_messages_in("C1", None)
                .into_iter()
                .find(|m| m.text.contains("Trying this 3 ways"))
        })
        .await
        .unwrap_or_else(|| panic!("no fork reply\n{}", daemon.log_text()));

    // Two variants finish; the third is still at the model when loop is killed.
    let mut branches = Vec::new();
    for i in 1..HELD {
        branches.push(variant_branch(&slack, &daemon, &titles[i as usize - 1], i).await);
    }
    eventually(&daemon, "the held variant at the model", TURN, || {
        let held = held_requests(&model) >= 1;
        async move { held }
    })
    .await;
    assert!(
        comparisons(&slack).is_empty(),
        "no comparison before every variant finished: {:#?}",
        comparisons(&slack)
    );
    daemon.restart().await;
    connected(&slack, &daemon).await;

    // After the restart the held variant runs again and finishes; then the comparison.
    branches.push(variant_branch(&slack, &daemon, &titles[HELD as usize - 1], HELD).await);
    let held_thread = slack.bot_messages_in("C1", Some(&titles[HELD as usize - 1].ts));
    assert!(
        has_text(&held_thread, "Interrupted: loop restarted during this turn"),
        "the held variant was cut by the restart: {held_thread:#?}"
    );
    let comparison = slack
        .wait_for(TURN, |s| {
            s.bot_messages_in("C1", None)
                .into_iter()
                .find(|m| m.text.contains("all finished"))
        })
        .await
        .unwrap_or_else(|| panic!("no comparison\n{}", daemon.log_text()));

    // Three branches, each with its own commit on the one base, each with its own edit.
    for (index, branch) in branches.iter().enumerate() {
        let i = index as u32 + 1;
        assert!(
            branch.starts_with("loop/mark-the-readme-as-reviewed-v"),
            "{branch}"
        );
        assert_eq!(
            git_output(&project.dir, &["rev-parse", &format!("{branch}~1")]),
            base,
            "{branch} is one commit on the fork's base"
        );
        let readme = file_on(&project.dir, branch, "README.md");
        assert!(readme.contains(&status_line(i)), "{branch}: {readme}");
        for other in (1..=VARIANTS).filter(|o| *o != i) {
            assert!(!readme.contains(&status_line(other)), "{branch}: {readme}");
        }
        assert!(
            comparison.text.contains(&format!("`{branch}`")),
            "the comparison names {branch}: {}",
            comparison.text
        );
    }
    let mut distinct = branches.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{branches:?}");

    // The person's checkout is as it was.
    assert_eq!(git_output(&project.dir, &["rev-parse", "main"]), base);
    assert_eq!(git_output(&project.dir, &["status", "--porcelain"]), "");
    let readme = std::fs::read_to_string(project.dir.join("README.md")).expect("README");
    assert!(readme.contains("Status: draft"), "{readme}");

    // One message compares them: each succeeded with one file changed, quotes its answer
    // and its tests, and says how to keep one.
    let text = &comparison.text;
    assert_eq!(text.matches("✅").count(), 3, "{text}");
    assert_eq!(text.matches("1 file changed, +1 −1").count(), 3, "{text}");
    assert_eq!(text.matches("Tests: tests pass").count(), 3, "{text}");
    for i in 1..=VARIANTS {
        assert!(
            text.contains(&format!("Variant {i} marked the README reviewed")),
            "{text}"
        );
    }
    assert!(text.contains("/loop pr"), "{text}");
    assert!(text.contains(&base[..7]), "the base commit: {text}");
    assert_eq!(comparisons(&slack).len(), 1, "{:#?}", comparisons(&slack));
    let store = daemon.store().await;
    let queued = store
        .pending_outbox()
        .await
        .expect("outbox")
        .into_iter()
        .filter(|m| m.body.contains("all finished"))
        .count();
    assert_eq!(queued, 0, "the comparison was posted, and only once");
}
