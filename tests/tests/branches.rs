//! A thread's work becomes a branch a teammate can review, end to end: a real `loop serve`
//! with the fake Slack, real containers running the real Claude Code CLI against the scripted
//! fake model, real git on the host and in the image, a real remote served by
//! `git http-backend` behind Basic auth, and the fake GitHub REST API.

use std::process::Command;
use std::time::Duration;

use loop_e2e::daemon::Daemon;
use loop_e2e::gitremote::GitRemote;
use loop_e2e::project::{GitOwner, Project, branch_named_in, git_output};
use loop_e2e::slack::{connected, has_text, point_channel, slack_config, thread_until};
use loop_e2e::support::{AGENT_UID, docker, start_model, workspace};
use loop_fakes::github::{FakeGitHub, FakeRepo};
use loop_fakes::model::{Rule, Script, Step};
use loop_fakes::slack::FakeSlack;

const TURN: Duration = Duration::from_secs(180);
const QUICK: Duration = Duration::from_secs(60);
/// A token that must never leave the host: searched for in everything the agent could see.
const TOKEN: &str = "ghp_LoopTestToken0123456789abcdefXYZ";

/// What an agent does when asked to change the README's status line: looks around, edits
/// by relative path, reports where it worked.
fn edit_status(ask: &str, to: &str) -> Rule {
    Rule::contains(ask)
        // Long enough that two threads asked together run at the same time.
        .then(Step::delay(1500, Step::bash("pwd")))
        .then(Step::bash("git status --short --branch"))
        .then(Step::read("README.md"))
        .then(Step::edit("README.md", "Status: draft", to))
        .then(Step::text(
            "Worked in {{tool_result.0}}.\nGit: {{tool_result.1}}\nSet the status line.",
        ))
}

fn thread_branch(messages: &[loop_fakes::slack::SlackMessage]) -> String {
    messages
        .iter()
        .find_map(|m| branch_named_in(&m.text))
        .unwrap_or_else(|| panic!("no branch named in the thread: {messages:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_threads_at_once_work_on_two_branches_and_a_follow_up_adds_a_commit() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let main_head = git_output(&project.dir, &["rev-parse", "--short=7", "main"]);
    let script = Script::new()
        .rule(edit_status("make the status formal", "Status: formal"))
        .rule(edit_status("make the status casual", "Status: casual"))
        .rule(
            Rule::contains("add a changelog")
                .then(Step::bash("git log --oneline | head -3"))
                .then(Step::write("CHANGELOG.md", "- The status line changed.\n"))
                .then(Step::text("Added CHANGELOG.md.")),
        );
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), ""),
    )
    .await;
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;

    // Two people, two threads, one file, at the same time.
    let formal = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} make the status formal please", FakeSlack::mention()),
        None,
    );
    let casual = slack.post_as_user(
        "UBOSS",
        "C1",
        &format!("{} make the status casual please", FakeSlack::mention()),
        None,
    );
    let mut branches = Vec::new();
    for (asked, word) in [(&formal, "formal"), (&casual, "casual")] {
        let thread = thread_until(&slack, &daemon, "C1", &asked.ts, word, TURN, |m| {
            has_text(m, "Set the status line.")
        })
        .await;
        // The status message says where the thread works from, the answer what it changed.
        let status = &thread[0].text;
        assert!(
            status.contains(&format!("from `main` @ {main_head}"))
                && status.contains("working on `loop/"),
            "{status}"
        );
        let answer = thread
            .iter()
            .find(|m| m.text.contains("Set the status line."))
            .expect("answer");
        let branch = thread_branch(std::slice::from_ref(answer));
        assert!(
            answer.text.contains("1 file changed, +1 −1")
                && answer.text.contains("`README.md` +1 −1"),
            "{}",
            answer.text
        );
        assert!(
            answer.text.contains(&format!("Git: ## {branch}")),
            "{}",
            answer.text
        );
        // What a person checks: the commit on the branch, its message and authors.
        let readme = git_output(&project.dir, &["show", &format!("{branch}:README.md")]);
        assert!(readme.contains(&format!("Status: {word}")), "{readme}");
        assert_eq!(
            git_output(
                &project.dir,
                &["diff", "--name-only", &format!("main...{branch}")]
            ),
            "README.md"
        );
        let message = git_output(&project.dir, &["log", "-1", "--format=%an%n%B", &branch]);
        assert!(
            message.starts_with(&format!("loop\nmake the status {word} please")),
            "{message}"
        );
        let asker = if word == "formal" { "UALICE" } else { "UBOSS" };
        assert!(
            message.contains(&format!("Co-authored-by: {asker} <{asker}@slack.invalid>")),
            "{message}"
        );
        branches.push(branch);
    }
    assert_ne!(branches[0], branches[1]);
    // The person's checkout is as they left it.
    let readme = std::fs::read_to_string(project.dir.join("README.md")).expect("README");
    assert!(readme.contains("Status: draft"), "{readme}");
    assert_eq!(git_output(&project.dir, &["status", "--porcelain"]), "");
    assert_eq!(
        git_output(&project.dir, &["branch", "--show-current"]),
        "main"
    );
    // The two turns ran at the same time.
    let store = daemon.store().await;
    let run_of = |ts: &str| {
        let store = store.clone();
        let key = format!("slack:C1:{ts}");
        async move { store.channel_runs(&key).await.expect("runs").remove(0) }
    };
    let (one, two) = (run_of(&formal.ts).await, run_of(&casual.ts).await);
    assert!(
        one.created_at < two.finished_at.expect("finished")
            && two.created_at < one.finished_at.expect("finished"),
        "the threads ran one after the other: {one:?} {two:?}"
    );

    // A follow-up continues on the same branch, with a second commit.
    slack.post_as_user("UALICE", "C1", "now add a changelog", Some(&formal.ts));
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &formal.ts,
        "the follow-up",
        TURN,
        |m| has_text(m, "Added CHANGELOG.md."),
    )
    .await;
    let answer = thread
        .iter()
        .rev()
        .find(|m| m.text.contains("Added CHANGELOG.md."))
        .expect("answer");
    assert_eq!(thread_branch(std::slice::from_ref(answer)), branches[0]);
    assert_eq!(
        git_output(
            &project.dir,
            &["rev-list", "--count", &format!("main..{}", branches[0])]
        ),
        "2"
    );
    assert!(
        git_output(&project.dir, &["ls-tree", "--name-only", &branches[0]])
            .contains("CHANGELOG.md")
    );
    assert!(!project.dir.join("CHANGELOG.md").exists());
    model.shutdown().await;
}

/// The remote the project's `origin` points at, and the fake GitHub that knows its branches.
struct Forge {
    remote: GitRemote,
    github: FakeGitHub,
}

impl Forge {
    async fn start(project: &Project, token: &str, name: &str) -> Forge {
        let remote = GitRemote::start_named(token, &format!("acme/{name}.git")).expect("remote");
        remote.seed_from(&project.dir).expect("seed");
        git_output(&project.dir, &["remote", "add", "origin", &remote.url()]);
        // git (root, here) rewrote `.git/config`: it stays the person's.
        Command::new("chown")
            .arg("-R")
            .arg(format!("{AGENT_UID}:{AGENT_UID}"))
            .arg(project.dir.join(".git"))
            .status()
            .expect("chown");
        let github = FakeGitHub::start(
            token,
            vec![FakeRepo::new("acme", name).branches_from(remote.branch_source())],
        )
        .await
        .expect("fake github");
        Forge { remote, github }
    }

    /// The `git.remotes` entry for this remote with `token`.
    fn entry(&self, token: &str) -> serde_json::Value {
        let url = self.remote.url();
        let prefix = &url[..url.find("/acme/").expect("path") + 1];
        serde_json::json!({
            "url_prefix": prefix,
            "token": token,
            "forge": "github",
            "api_url": self.github.api_url(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_request_from_a_thread_with_a_token_the_agent_never_sees() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let forge = Forge::start(&project, TOKEN, "app").await;
    // A second project whose remote wants another token than the one configured for it.
    let locked = Project::create(&dir.path().join("locked"), GitOwner::Agent);
    let locked_forge = Forge::start(&locked, "the-right-token", "locked").await;

    // Everything the agent could read or be told, searched for the token from inside. The
    // pattern is written with an escape so that the scan's own command line (in `ps`, in the
    // session transcript) does not match it.
    let scan = "printf 'ghp\\137LoopTestToken' > /tmp/pattern; \
                (env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ps -eo args) \
                | grep -c -f /tmp/pattern; \
                grep -rIl -f /tmp/pattern --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr \
                --exclude-dir=lib --exclude-dir=dev / 2>/dev/null | grep -vc '^/tmp/pattern$'";
    let script = Script::new()
        .rule(edit_status("make the status formal", "Status: formal"))
        .rule(edit_status("lock the status", "Status: locked"))
        .rule(
            Rule::contains("look for secrets")
                .then(Step::bash(scan))
                .then(Step::text("Scan: {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let remotes = serde_json::json!([forge.entry(TOKEN), locked_forge.entry("a-wrong-token")]);
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(
            &model,
            &slack,
            dir.path(),
            &format!("\"git\": {{\"remotes\": {remotes}, \"push_after_turn\": true}}"),
        ),
    )
    .await;
    connected(&slack, &daemon).await;
    for (channel, project) in [("C1", &project), ("C2", &locked)] {
        point_channel(&slack, &daemon, "UALICE", channel, &project.dir).await;
    }

    let asked = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} make the status formal", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the answer", TURN, |m| {
        has_text(m, "Set the status line.")
    })
    .await;
    let branch = thread_branch(&thread);
    let head = git_output(&project.dir, &["rev-parse", &branch]);
    // `git.push_after_turn`: the turn's commit is on the remote, as git itself sees it there,
    // and the answer says so.
    let pushed_line = format!("⬆️ Pushed `{branch}` @ `{}`", &head[..7]);
    assert!(has_text(&thread, &pushed_line), "{thread:#?}");
    assert_eq!(
        forge.remote.rev_parse(&branch).as_deref(),
        Some(head.as_str())
    );
    assert!(
        forge
            .remote
            .requests()
            .iter()
            .any(|r| r.path.ends_with("git-receive-pack") && r.authorized),
        "the push authenticated"
    );

    // `/loop push` in the thread: pushed again, nothing new to send.
    slack.post_as_user("UALICE", "C1", "!loop push", Some(&asked.ts));
    let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the push", QUICK, |m| {
        m.iter().filter(|m| m.text.contains("Pushed `")).count() >= 2
            || has_text(m, "Nothing was pushed")
    })
    .await;
    assert!(!has_text(&thread, "Nothing was pushed"), "{thread:#?}");
    assert_eq!(
        forge.remote.rev_parse(&branch).as_deref(),
        Some(head.as_str())
    );

    // `/loop pr`: a well-formed pull request, its link in the thread.
    slack.post_as_user("UALICE", "C1", "!loop pr", Some(&asked.ts));
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &asked.ts,
        "the pull request",
        QUICK,
        |m| has_text(m, "Pull request #") || has_text(m, "No pull request"),
    )
    .await;
    let pulls = forge.github.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    let pull = &pulls[0];
    assert_eq!(
        (pull.head.as_str(), pull.base.as_str()),
        (branch.as_str(), "main")
    );
    assert_eq!(pull.head_sha, head);
    assert_eq!(pull.title, "make the status formal");
    assert!(
        pull.body
            .as_deref()
            .unwrap_or_default()
            .contains("- make the status formal")
    );
    assert!(has_text(&thread, &pull.html_url), "{thread:#?}");
    // Asked again: the same request, not a second one.
    slack.post_as_user("UALICE", "C1", "!loop pr", Some(&asked.ts));
    thread_until(
        &slack,
        &daemon,
        "C1",
        &asked.ts,
        "the second pr",
        QUICK,
        |m| has_text(m, "was open already"),
    )
    .await;
    assert_eq!(forge.github.pulls().len(), 1);

    // A wrong token: a clear error in the thread, nothing on the remote, no pull request.
    let locked_ask = slack.post_as_user(
        "UALICE",
        "C2",
        &format!("{} lock the status", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(
        &slack,
        &daemon,
        "C2",
        &locked_ask.ts,
        "the answer",
        TURN,
        |m| has_text(m, "Set the status line."),
    )
    .await;
    let locked_branch = thread_branch(&thread);
    assert!(has_text(&thread, "⚠️ Not pushed:"), "{thread:#?}");
    slack.post_as_user("UALICE", "C2", "!loop pr", Some(&locked_ask.ts));
    let thread = thread_until(
        &slack,
        &daemon,
        "C2",
        &locked_ask.ts,
        "the refusal",
        QUICK,
        |m| has_text(m, "No pull request") || has_text(m, "Pull request #"),
    )
    .await;
    let refusal = thread
        .iter()
        .find(|m| m.text.contains("No pull request"))
        .unwrap_or_else(|| panic!("{thread:#?}"));
    assert!(
        refusal.text.contains("could not be pushed"),
        "{}",
        refusal.text
    );
    assert!(
        refusal.text.contains("Authentication failed") || refusal.text.contains("401"),
        "{}",
        refusal.text
    );
    assert_eq!(locked_forge.remote.rev_parse(&locked_branch), None);
    assert!(locked_forge.github.pulls().is_empty());

    // Nothing the agent can read, run or be told holds the token.
    slack.post_as_user("UALICE", "C1", "now look for secrets", Some(&asked.ts));
    let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the scan", TURN, |m| {
        has_text(m, "Scan: ")
    })
    .await;
    assert!(has_text(&thread, "Scan: 0\n0"), "{thread:#?}");
    let store = daemon.store().await;
    let runs = store
        .channel_runs(&format!("slack:C1:{}", asked.ts))
        .await
        .expect("runs");
    let container = runs
        .iter()
        .rev()
        .find_map(|r| r.container_id.clone())
        .expect("a container");
    let inspect = Command::new("docker")
        .args(["inspect", &container])
        .output()
        .expect("docker");
    let inspected = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success() && !inspected.contains("ghp_"),
        "docker inspect shows the token"
    );
    let environ = Command::new("docker")
        .args([
            "exec",
            "--user",
            "0",
            &container,
            "sh",
            "-c",
            "cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep -c ghp_LoopTestToken",
        ])
        .output()
        .expect("docker exec");
    assert_eq!(
        String::from_utf8_lossy(&environ.stdout).trim(),
        "0",
        "a process in the container has the token"
    );
    for request in model.requests() {
        assert!(
            !request.body_contains("ghp_"),
            "the model was sent the token"
        );
    }
    for dir in [
        &project.dir,
        &locked.dir,
        &daemon.home.join(".loop-worktrees"),
    ] {
        let found = Command::new("grep")
            .args(["-rIl", "ghp_"])
            .arg(dir)
            .output()
            .expect("grep");
        assert!(
            found.stdout.is_empty(),
            "the token is in {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
    assert!(
        !daemon.log_text().contains(TOKEN),
        "the daemon logged the token"
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_git_runs_nothing_a_hostile_repository_asks_for() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    // Markers only host-side processes could write: the directory is in no container.
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).expect("markers");
    std::fs::set_permissions(
        &markers,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let marker = |name: &str| format!("#!/bin/sh\ntouch {}/{name}\ncat\n", markers.display());
    let hooks = project.dir.join(".git/hooks");
    for hook in [
        "pre-commit",
        "post-commit",
        "post-checkout",
        "reference-transaction",
        "pre-push",
        "commit-msg",
    ] {
        std::fs::write(hooks.join(hook), marker(hook)).expect("hook");
    }
    let tools = project.dir.join(".git/tools");
    std::fs::create_dir_all(&tools).expect("tools");
    for tool in ["fsmonitor", "clean", "smudge", "textconv"] {
        std::fs::write(tools.join(tool), marker(tool)).expect("tool");
    }
    Command::new("chmod")
        .arg("-R")
        .arg("+x")
        .arg(&hooks)
        .arg(&tools)
        .status()
        .expect("chmod");
    let tool = |name: &str| tools.join(name).display().to_string();
    for (key, value) in [
        ("core.fsmonitor", tool("fsmonitor")),
        ("filter.evil.clean", tool("clean")),
        ("filter.evil.smudge", tool("smudge")),
        ("filter.evil.required", "true".to_owned()),
        ("diff.evil.textconv", tool("textconv")),
    ] {
        git_output(&project.dir, &["config", key, &value]);
    }
    std::fs::write(
        project.dir.join(".git/info/attributes"),
        "* filter=evil diff=evil\n",
    )
    .expect("attributes");
    Command::new("chown")
        .arg("-R")
        .arg("1000:1000")
        .arg(&project.dir)
        .status()
        .expect("chown");

    let script = Script::new().rule(edit_status("make the status formal", "Status: formal"));
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), ""),
    )
    .await;
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;
    let asked = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} make the status formal", FakeSlack::mention()),
        None,
    );
    // loop created the worktree (a checkout), committed the turn and measured its diff: all
    // git operations a hook, the fsmonitor or a filter would run in.
    let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the answer", TURN, |m| {
        has_text(m, "Set the status line.")
    })
    .await;
    let ran: Vec<String> = std::fs::read_dir(&markers)
        .expect("markers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        ran.is_empty(),
        "host-side git ran the repository's programs: {ran:?}"
    );
    let branch = thread_branch(&thread);
    assert!(has_text(&thread, "commit `"), "{thread:#?}");
    let readme = git_output(&project.dir, &["show", &format!("{branch}:README.md")]);
    assert!(readme.contains("Status: formal"), "{readme}");
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_asks_to_open_a_pull_request_and_a_person_decides() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::create(&project_dir, GitOwner::Agent);
    let forge = Forge::start(&project, TOKEN, "app").await;
    // What a model does when told to ship: edit, commit, then ask loop to open the request.
    let ship = |ask: &str, to: &str| {
        Rule::contains(ask)
            .then(Step::read("README.md"))
            .then(Step::edit("README.md", "Status: draft", to))
            .then(Step::bash(
                "git add -A && git -c user.name=Agent -c user.email=agent@example.com \
                 commit -qm 'Set the status' && git log --oneline -1",
            ))
            .then(Step::tool_use(
                "mcp__loop__open_pull_request",
                serde_json::json!({"title": "Set the status"}),
            ))
            .then(Step::text("Agent: {{last_tool_result}}"))
    };
    let script = Script::new()
        .rule(ship("ship it formal", "Status: formal"))
        .rule(ship("ship it casual", "Status: casual"));
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let remotes = serde_json::json!([forge.entry(TOKEN)]);
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(
            &model,
            &slack,
            dir.path(),
            &format!("\"git\": {{\"remotes\": {remotes}}}"),
        ),
    )
    .await;
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;

    for (ask, approve) in [("ship it formal", true), ("ship it casual", false)] {
        let asked = slack.post_as_user(
            "UALICE",
            "C1",
            &format!("{} {ask}", FakeSlack::mention()),
            None,
        );
        let prompt = thread_until(&slack, &daemon, "C1", &asked.ts, "the prompt", TURN, |m| {
            m.iter().any(|m| m.blocks.is_some())
        })
        .await
        .into_iter()
        .find(|m| m.blocks.is_some())
        .expect("prompt");
        assert!(
            prompt
                .text
                .contains("and open a pull request against `main`"),
            "{}",
            prompt.text
        );
        // Held until a person decides: nothing has left the host.
        let branch = branch_named_in(&prompt.text).expect("the prompt names the branch");
        assert_eq!(forge.remote.rev_parse(&branch), None);
        let button = if approve {
            "loop_approve_once"
        } else {
            "loop_deny"
        };
        assert!(slack.click("UBOSS", "C1", &prompt.ts, button));
        let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the answer", TURN, |m| {
            has_text(m, "Agent: ")
        })
        .await;
        let answer = thread
            .iter()
            .find(|m| m.text.contains("Agent: "))
            .expect("answer");
        if approve {
            let pulls = forge.github.pulls();
            assert_eq!(pulls.len(), 1, "{pulls:#?}");
            assert_eq!(pulls[0].title, "Set the status");
            assert_eq!(pulls[0].head, branch);
            assert!(answer.text.contains(&pulls[0].html_url), "{}", answer.text);
            assert_eq!(
                forge.remote.rev_parse(&branch),
                Some(git_output(&project.dir, &["rev-parse", &branch]))
            );
        } else {
            assert!(answer.text.contains("denied"), "{}", answer.text);
            assert_eq!(forge.remote.rev_parse(&branch), None);
            assert_eq!(forge.github.pulls().len(), 1, "no second pull request");
        }
    }
    model.shutdown().await;
}
