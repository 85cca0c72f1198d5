//! The security gate end to end: a real `loop serve`, real containers whose entrypoint runs
//! `loop syscallwrap` as root, the real Claude Code CLI driven by the scripted fake model, and
//! the agent's Bash commands held by the seccomp supervisor.
//!
//! What the agent sees is checked through the model: the fake answers with
//! `{{last_tool_result}}`, i.e. exactly the tool result the CLI sent back to the model.

use std::time::Duration;

use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{AGENT_UID, TestRig, container_url, docker, start_model, workspace};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_runner::agent::{AgentRunner, TurnRequest};
use loop_runner::spec::GateSpec;
use loop_store::{ApprovalRecord, ApprovalStatus};
use tokio_util::sync::CancellationToken;

/// A daemon config with `gates.agentgate` set to `agentgate` (JSON).
fn gate_config(model: &FakeModel, dir: &std::path::Path, agentgate: serde_json::Value) -> String {
    test_config(
        model.port(),
        dir,
        &format!("\"gates\": {{\"agentgate\": {agentgate}}}"),
    )
}

/// A scripted model that, for a prompt containing `trigger`, runs `command` with the Bash tool
/// and answers `{tag} ` followed by exactly the tool result the CLI sent back.
async fn bash_model(trigger: &str, command: &str, tag: &str) -> FakeModel {
    start_model(
        Script::new().rule(
            Rule::contains(trigger)
                .then(Step::bash(command))
                .then(Step::text(&format!("{tag} {{{{last_tool_result}}}}"))),
        ),
    )
    .await
}

fn denied(text: &str) -> bool {
    text.contains("Operation not permitted") || text.contains("Permission denied")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_command_fails_for_the_agent_others_run_and_the_supervisor_is_out_of_reach() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    // `curl` is not in the agent image; rules match the program's name, so a copy of `echo`
    // named curl stands in for it (and proves the name, not the content, is what counts).
    let command = "cp /bin/echo /tmp/curl; /tmp/curl fetched-something; echo \"curl_rc=$?\"; \
                   echo allowed-ran; echo \"pid1=$(ps -o user= -p 1)\"; \
                   kill -9 1; echo \"kill_rc=$?\"";
    let model = bash_model("check the gate", command, "RESULT").await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({
                "command_rules": [{"commands": ["curl"], "decision": "deny", "message": "no curl here"}]
            }),
        ),
    )
    .await;

    let inbox = daemon
        .post_in("gate-deny", &project, "please check the gate")
        .await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("RESULT "), "{text}\n{}", daemon.log_text());
    assert!(
        !text.contains("fetched-something"),
        "the denied program must not run: {text}"
    );
    assert!(text.contains("curl_rc=126"), "{text}");
    assert!(denied(&text), "the agent sees a permission error: {text}");
    assert!(text.contains("allowed-ran"), "{text}");
    // The container's pid 1 is the gate's root parent; the agent (uid 1000) cannot signal it.
    assert!(text.contains("pid1=root"), "{text}");
    assert!(text.contains("kill_rc=1"), "{text}");
    // And the model really got that tool result.
    let last = model.requests().last().cloned().expect("requests");
    assert!(last.body_contains("curl_rc=126"));
    // The container's supervisor reported the deny to the daemon's audit log.
    let store = daemon.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let audit = store.gate_audit(50).await.expect("audit");
        if let Some(entry) = audit.iter().find(|e| e.detail.contains("/tmp/curl")) {
            assert_eq!(
                (entry.verdict.as_str(), entry.source.as_str()),
                ("deny", "policy")
            );
            assert_eq!(entry.rule.as_deref(), Some("command_rules[0]"));
            assert_eq!(entry.channel_key, "local:gate-deny");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deny never reached the audit log: {audit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A project whose gate rule is malformed: the turn stops before any container, and says
    // which field is wrong.
    let bad_project = dir.path().join("bad-project");
    std::fs::create_dir_all(bad_project.join(".loop")).expect("bad project");
    std::fs::write(
        bad_project.join(".loop/config.json"),
        r#"{"gates": {"agentgate": {"command_rules": [{"commands": ["rm"], "decison": "deny"}]}}}"#,
    )
    .expect("project config");
    let requests_before = model.requests().len();
    let inbox = daemon
        .post_in("gate-bad", &bad_project, "please check the gate")
        .await;
    let text = daemon.answer(inbox, Duration::from_secs(60)).await;
    assert!(
        text.contains("invalid gate policy") && text.contains("command_rules[0]"),
        "{text}"
    );
    assert_eq!(model.requests().len(), requests_before, "no agent ran");

    // The approval endpoint wants a live container token, before it looks at the body.
    let client = reqwest::Client::new();
    let url = daemon.url("/api/gate/container-approval");
    let body = serde_json::json!({
        "channel_id": "local-gate-deny",
        "action": {"kind": "exec", "program": "/usr/bin/git", "argv": ["git", "push"]},
        "summary": "exec /usr/bin/git push",
        "session_key": "execve:/usr/bin/git:push",
        "rule": "command_rules[0]",
        "pid": 1
    });
    let missing = client.post(&url).json(&body).send().await.expect("post");
    assert_eq!(missing.status(), 401);
    for token in ["0".repeat(64), daemon.token()] {
        let wrong = client
            .post(&url)
            .bearer_auth(&token)
            .body("{not json")
            .send()
            .await
            .expect("post");
        assert_eq!(
            wrong.status(),
            401,
            "a wrong token is refused before parsing"
        );
    }
    // The admin routes want the admin token.
    let anonymous = client
        .get(daemon.url("/api/approvals"))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(daemon.decide("nope", "deny").await.status(), 404);
    model.shutdown().await;
}

/// The gate's workspace is the project, given explicitly: a relative rule (`secrets/**`)
/// guards the project's own secrets, and the baseline's "`rm -r` outside the workspace" guard
/// holds for a relative `../` that leaves it. The agent uses relative paths from its cwd, as a
/// model does.
#[tokio::test(flavor = "multi_thread")]
async fn relative_rules_and_the_rm_guard_are_anchored_at_the_project() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    std::fs::create_dir_all(project.join("secrets")).expect("secrets");
    std::fs::write(project.join("secrets/key.txt"), "TOP-SECRET").expect("key");
    std::fs::write(project.join("notes.txt"), "plain notes").expect("notes");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("keep")).expect("outside");
    for path in [
        &project,
        &project.join("secrets"),
        &outside,
        &outside.join("keep"),
    ] {
        loop_e2e::support::chown(path, AGENT_UID, AGENT_UID);
    }
    for file in ["secrets/key.txt", "notes.txt"] {
        loop_e2e::support::chown(&project.join(file), AGENT_UID, AGENT_UID);
    }
    let command = "pwd; cat notes.txt; cat secrets/key.txt; echo \"cat_rc=$?\"; \
                   rm -r ../outside; echo \"rm_rc=$?\"";
    let model = bash_model("check the workspace", command, "RESULT").await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({
                "file_rules": [{"paths": ["secrets/**"], "operations": ["read", "write"], "decision": "deny"}]
            }),
        ),
    )
    .await;
    let inbox = daemon
        .post_in("gate-workspace", &project, "please check the workspace")
        .await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("RESULT "), "{text}\n{}", daemon.log_text());
    assert!(
        text.contains(&format!("RESULT {}", project.display())),
        "the agent starts in the project: {text}"
    );
    assert!(text.contains("plain notes"), "{text}");
    assert!(
        !text.contains("TOP-SECRET") && text.contains("cat_rc=1"),
        "a relative rule guards the project's secrets: {text}"
    );
    assert!(
        outside.join("keep").is_dir() && !text.contains("rm_rc=0"),
        "rm -r of ../outside must be refused: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_are_asked_in_the_channel_and_answered_by_a_person() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let yes = project.join("gate-approval-yes");
    let no = project.join("gate-approval-no");
    let again = project.join("gate-approval-again");
    let script = Script::new()
        .rule(
            Rule::contains("touch yes")
                .then(Step::bash(
                    "touch gate-approval-yes; echo \"first_rc=$?\"; \
                     touch gate-approval-yes; echo \"second_rc=$?\"",
                ))
                .then(Step::text("YES {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("touch again")
                .then(Step::bash(
                    "touch gate-approval-again; echo \"again_rc=$?\"",
                ))
                .then(Step::text("AGAIN {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("touch no")
                .then(Step::bash("touch gate-approval-no; echo \"touch_rc=$?\""))
                .then(Step::text("NO {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({
                "approval_timeout_sec": 120,
                "command_rules": [{
                    "commands": ["touch"],
                    "args_patterns": ["gate-approval"],
                    "decision": "approve",
                    "message": "touching needs a person"
                }]
            }),
        ),
    )
    .await;

    // Allowed for the session through the admin API: the second identical touch is not
    // asked again.
    let inbox = daemon.post_in("gate-yes", &project, "touch yes").await;
    let approval = daemon.pending_approval("gate-approval-yes").await;
    assert_eq!(approval.channel_key, "local:gate-yes");
    assert_eq!(approval.status, ApprovalStatus::Pending);
    assert!(
        approval.platform_message_id.is_some(),
        "the prompt was posted in the channel"
    );
    let listed = daemon.cli(&["approvals"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&approval.id),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let response = daemon.decide(&approval.id, "allow_session").await;
    assert_eq!(response.status(), 200);
    let decided: ApprovalRecord = response.json().await.expect("record");
    assert_eq!(decided.status, ApprovalStatus::Allowed);
    assert_eq!(decided.decided_by.as_deref(), Some("e2e"));
    assert_eq!(
        daemon.decide(&approval.id, "deny").await.status(),
        409,
        "an answered approval cannot be answered again"
    );
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.contains("first_rc=0"), "{text}");
    assert!(text.contains("second_rc=0"), "{text}");
    assert!(yes.exists(), "the approved command ran");

    // The thread's next turn (on its warm agent, when loop keeps one) can still ask; allowed
    // once with the CLI.
    let inbox = daemon.post_in("gate-yes", &project, "touch again").await;
    let approval = daemon.pending_approval("gate-approval-again").await;
    let approved = daemon.cli(&["approve", &approval.id]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.contains("again_rc=0"), "{text}");
    assert!(again.exists());

    // Denied with the CLI: the command fails with a permission error the agent sees.
    let inbox = daemon.post_in("gate-no", &project, "touch no").await;
    let approval = daemon.pending_approval("gate-approval-no").await;
    let denied_out = daemon.cli(&["deny", &approval.id]);
    assert!(
        denied_out.status.success(),
        "{}",
        String::from_utf8_lossy(&denied_out.stderr)
    );
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("NO "), "{text}");
    assert!(text.contains("touch_rc=1"), "{text}");
    assert!(denied(&text), "{text}");
    assert!(!no.exists(), "the denied command did not run");

    // Every person's decision is in the audit log, newest first, with who decided; the
    // repeated touch the session answer covered was shipped by the container's supervisor.
    let store = daemon.store().await;
    let audit = store.gate_audit(20).await.expect("audit");
    let rows: Vec<(&str, &str, &str)> = audit
        .iter()
        .filter(|e| e.source == "person")
        .map(|e| {
            (
                e.verdict.as_str(),
                e.detail.as_str(),
                e.decided_by.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "{audit:?}");
    assert_eq!(rows[0].0, "deny");
    assert!(rows[0].1.contains("gate-approval-no"));
    assert_eq!(rows[1].0, "allow");
    assert!(rows[1].1.contains("gate-approval-again"));
    assert_eq!(rows[2].0, "allow");
    assert_eq!(rows[2].2, "e2e");
    assert!(audit.iter().all(|e| e.syscall == "execve"), "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|e| e.source == "session" && e.detail.contains("gate-approval-yes")),
        "{audit:?}"
    );
    let printed = daemon.cli(&["audit", "--limit", "5"]);
    assert!(
        String::from_utf8_lossy(&printed.stdout).contains("gate-approval-no"),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    model.shutdown().await;
}

/// The git guard: the agent (relative paths, as a model works) planting a pre-commit hook in
/// its project is held for a person. Denied, the hook never reaches the host and the agent's
/// own `git commit` and `git checkout -b` in the same repository go through without a
/// prompt; approved (the write, then the `chmod +x`), the hook is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_git_hook_waits_for_a_person_and_everyday_git_does_not() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _) = workspace();
    let denied_repo = Project::create(&dir.path().join("hook-denied"), GitOwner::Agent).dir;
    let approved_repo = Project::create(&dir.path().join("hook-approved"), GitOwner::Agent).dir;
    // The thread works in a worktree of the project: its hooks are the repository's, where
    // `git rev-parse --git-path hooks` says (the main checkout's `.git/hooks`).
    let command = "hooks=$(git rev-parse --git-path hooks) \
                   && printf '#!/bin/sh\\necho pwned\\n' > \"$hooks/pre-commit\" \
                   && chmod +x \"$hooks/pre-commit\"; echo \"hook_rc=$?\"; \
                   echo 'agent line' >> README.md && git add README.md \
                   && git -c user.name=Agent -c user.email=agent@example.com commit -qm 'agent commit' \
                   && git checkout -qb agent-branch; echo \"commit_rc=$?\"";
    let model = bash_model("plant a hook", command, "HOOK").await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            // Short enough that a held commit would fail the test, not hang it.
            serde_json::json!({"approval_timeout_sec": 90}),
        ),
    )
    .await;
    let store = daemon.store().await;

    // Denied.
    let hook = denied_repo.join(".git/hooks/pre-commit");
    let inbox = daemon
        .post_in("gate-git-deny", &denied_repo, "please plant a hook")
        .await;
    let approval = daemon.pending_approval(&hook.display().to_string()).await;
    assert!(
        approval.summary.starts_with("write ") || approval.summary.starts_with("create "),
        "{approval:?}"
    );
    assert!(
        approval
            .detail
            .contains("a git hook runs on the host when someone runs git there")
            && approval.detail.contains("\"rule\":\"baseline.file_rules["),
        "the baseline's git guard asked: {}",
        approval.detail
    );
    assert_eq!(daemon.decide(&approval.id, "deny").await.status(), 200);
    let text = daemon.answer(inbox, Duration::from_secs(240)).await;
    assert!(text.starts_with("HOOK "), "{text}\n{}", daemon.log_text());
    assert!(
        denied(&text) && !text.contains("hook_rc=0"),
        "the agent sees the write refused: {text}"
    );
    assert!(!hook.exists(), "a denied hook is not on the host");
    assert!(
        text.contains("commit_rc=0"),
        "everyday git went through: {text}"
    );
    let host_git = |repo: &std::path::Path, args: &[&str]| {
        // The repository is the agent's uid's; this process is root.
        let out = std::process::Command::new("git")
            .args(["-c", "safe.directory=*", "-C"])
            .arg(repo)
            .args(args)
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The agent's commit and branch are in the repository (made in the thread's worktree).
    assert_eq!(
        host_git(&denied_repo, &["log", "-1", "--format=%s", "agent-branch"]),
        "agent commit"
    );
    // The hook was the only thing anyone was asked about.
    let asked: Vec<_> = store
        .gate_audit(200)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.channel_key == "local:gate-git-deny" && e.approval_id.is_some())
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(
        (asked[0].verdict.as_str(), asked[0].source.as_str()),
        ("deny", "person")
    );

    // Approved: the write, then the chmod, each asked.
    let hook = approved_repo.join(".git/hooks/pre-commit");
    let inbox = daemon
        .post_in("gate-git-approve", &approved_repo, "please plant a hook")
        .await;
    let write = daemon.pending_approval(&hook.display().to_string()).await;
    assert_eq!(daemon.decide(&write.id, "allow_once").await.status(), 200);
    let chmod = daemon
        .pending_approval(&format!("chmod {}", hook.display()))
        .await;
    assert_ne!(chmod.id, write.id);
    assert_eq!(daemon.decide(&chmod.id, "allow_once").await.status(), 200);
    let text = daemon.answer(inbox, Duration::from_secs(240)).await;
    assert!(text.contains("hook_rc=0"), "{text}\n{}", daemon.log_text());
    assert_eq!(
        std::fs::read_to_string(&hook).expect("the approved hook is on the host"),
        "#!/bin/sh\necho pwned\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&hook).expect("hook").permissions().mode();
    assert_ne!(mode & 0o111, 0, "approved chmod +x: {mode:o}");
    // The agent's commit ran the approved hook, in the container.
    assert!(
        text.contains("pwned") && text.contains("commit_rc=0"),
        "{text}"
    );
    model.shutdown().await;
}

/// Builds `tests/fixtures/{name}.c` (static, so it runs in the agent image) into `dir`.
fn build_fixture(name: &str, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let source = format!("{}/fixtures/{name}.c", env!("CARGO_MANIFEST_DIR"));
    let out = dir.join(name);
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .status();
    match built {
        Ok(status) if status.success() => Some(out),
        _ if loop_e2e::support::skip_unavailable() => {
            eprintln!("skipping: cannot build {source} with gcc -static");
            None
        }
        other => panic!("gcc -static must build {source}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_cannot_ptrace_signal_read_or_unset_its_way_past_the_supervisor() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    if build_fixture("escape", &project).is_none() {
        return;
    }
    let command = "./escape; echo \"token=[$LOOP_GATE_TOKEN]\"; cp /bin/echo /tmp/curl; \
         env -u LOOP_GATE_ENABLED -u LOOP_GATE_POLICY_FILE -u LOOP_CHANNEL_ID /tmp/curl leaked; \
         echo \"unset_rc=$?\"; LOOP_GATE_ENABLED=0 bash -c '/tmp/curl leaked; echo \"zero_rc=$?\"'";
    let model = bash_model("try to escape", command, "ESCAPE").await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({"command_rules": [{"commands": ["curl"], "decision": "deny"}]}),
        ),
    )
    .await;
    let inbox = daemon
        .post_in("gate-escape", &project, "try to escape")
        .await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("ESCAPE "), "{text}\n{}", daemon.log_text());
    for (attempt, refused) in [
        ("ptrace_attach", "EPERM"),
        ("ptrace_seize", "EPERM"),
        ("vm_readv", "EPERM"),
        ("proc_mem", "EACCES"),
        ("proc_environ", "EACCES"),
        ("kill", "EPERM"),
        ("seccomp_off", "EINVAL"),
        ("no_new_privs_off", "EINVAL"),
    ] {
        assert!(
            text.contains(&format!("{attempt}={refused}")),
            "{attempt} must fail with {refused}: {text}"
        );
    }
    assert!(!text.contains("=ok"), "{text}");
    assert!(
        text.contains("token=[]"),
        "the agent never sees the gate token: {text}"
    );
    // The filter is in the kernel, inherited by every child: the environment does not matter.
    assert!(!text.contains("leaked"), "{text}");
    assert!(text.contains("unset_rc=126"), "{text}");
    assert!(text.contains("zero_rc=126"), "{text}");
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_swapped_while_a_person_approves_is_not_what_gets_opened() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    if build_fixture("racer", &project).is_none() {
        return;
    }
    let asked = project.join("race-asked.txt");
    let secret = project.join("race-secret.txt");
    // Relative paths: the supervisor resolves them against the agent's cwd (the project).
    let model = bash_model(
        "race the gate",
        "./racer race-asked.txt race-secret.txt; echo \"race_rc=$?\"",
        "RACE",
    )
    .await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({
                "approval_timeout_sec": 120,
                "file_rules": [
                    {"paths": ["**/race-asked*"], "operations": ["write"], "decision": "approve"},
                    {"paths": ["**/race-secret*"], "operations": ["write", "create"], "decision": "deny"}
                ]
            }),
        ),
    )
    .await;
    let inbox = daemon.post_in("gate-race", &project, "race the gate").await;
    let approval = daemon.pending_approval("race-asked").await;
    // The racer rewrites its buffer 300 ms into the wait; the person answers after that.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        200
    );
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.contains("race_rc=0"), "{text}\n{}", daemon.log_text());
    assert!(
        text.contains(&format!(
            "opened={} buffer=race-secret.txt",
            asked.display()
        )),
        "the approved path is what was opened, though the buffer names another: {text}"
    );
    assert_eq!(std::fs::read_to_string(&asked).expect("asked"), "raced\n");
    assert!(!secret.exists(), "the swapped-in path was never opened");
    // Opened as the agent, not as the root supervisor.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&asked).expect("stat").uid(), AGENT_UID);
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_over_its_approval_rate_limit_is_denied_without_asking() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let first = project.join("gate-limit-1");
    let second = project.join("gate-limit-2");
    let model = bash_model(
        "touch twice",
        "touch gate-limit-1; echo \"rc1=$?\"; touch gate-limit-2; echo \"rc2=$?\"",
        "LIMIT",
    )
    .await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &test_config(
            model.port(),
            dir.path(),
            r#""gates": {"agentgate": {"approval_timeout_sec": 120,
                "command_rules": [{"commands": ["touch"], "args_patterns": ["gate-limit"], "decision": "approve"}]},
                "rate_limits": {"pending": 30, "per_minute": 1, "total": 10}}"#,
        ),
    )
    .await;
    let inbox = daemon.post_in("gate-limit", &project, "touch twice").await;
    let approval = daemon.pending_approval("gate-limit-1").await;
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        200
    );
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.contains("rc1=0"), "{text}");
    assert!(text.contains("rc2=1") && denied(&text), "{text}");
    assert!(first.exists() && !second.exists());
    let store = daemon.store().await;
    let audit = store.gate_audit(10).await.expect("audit");
    let limited = audit
        .iter()
        .find(|e| e.detail.contains("gate-limit-2"))
        .unwrap_or_else(|| panic!("no audit entry: {audit:?}"));
    assert_eq!(
        (limited.verdict.as_str(), limited.source.as_str()),
        ("deny", "over_limit")
    );
    assert!(
        store.pending_approvals().await.expect("pending").is_empty(),
        "the second was never asked"
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unanswered_approval_expires_as_a_deny() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let file = project.join("gate-approval-late");
    let model = bash_model(
        "touch late",
        "touch gate-approval-late; echo \"touch_rc=$?\"",
        "LATE",
    )
    .await;
    let home = dir.path().join("home");
    let daemon = Daemon::start(
        &home,
        &gate_config(
            &model,
            dir.path(),
            serde_json::json!({
                "approval_timeout_sec": 3,
                "command_rules": [{"commands": ["touch"], "decision": "approve"}]
            }),
        ),
    )
    .await;
    let inbox = daemon.post_in("gate-late", &project, "touch late").await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("LATE "), "{text}");
    assert!(text.contains("touch_rc=1"), "{text}");
    assert!(denied(&text), "{text}");
    assert!(!file.exists());

    let store = daemon.store().await;
    let audit = store.gate_audit(10).await.expect("audit");
    let timeout = audit
        .iter()
        .find(|e| e.detail.contains("gate-approval-late"))
        .unwrap_or_else(|| panic!("no audit entry: {audit:?}"));
    assert_eq!(
        (timeout.verdict.as_str(), timeout.source.as_str()),
        ("deny", "timeout")
    );
    let approval = store
        .approval(timeout.approval_id.as_deref().expect("approval id"))
        .await
        .expect("approval");
    assert_eq!(approval.status, ApprovalStatus::Expired);
    // What was asked is the project's command: the gate saw the agent's cwd.
    let asked: serde_json::Value = serde_json::from_str(&approval.detail).expect("detail");
    assert_eq!(
        asked["action"]["cwd"].as_str().map(std::path::Path::new),
        Some(project.as_path()),
        "{asked}"
    );
    // Too late to answer now.
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        409
    );
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_gates_the_agent_and_fails_closed_without_a_daemon() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-gated");
    let file = project.join("needs-approval");
    let command = "echo \"uid=$(id -u)\"; echo \"pid1=$(ps -o user= -p 1)\"; \
         echo tampered > /etc/loop/gate-policy.json; echo \"policy_write_rc=$?\"; \
         echo plain > notes.txt; touch needs-approval; echo \"touch_rc=$?\"";
    let model = start_model(
        Script::new().rule(
            Rule::any()
                .then(Step::bash(command))
                .then(Step::text("{{last_tool_result}}")),
        ),
    )
    .await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    // `api_url` points at a closed port: nobody can be asked, so `approve` must deny.
    settings.gate = Some(GateSpec {
        policy_json: serde_json::json!({
            "command_rules": [{"commands": ["touch"], "decision": "approve"}]
        })
        .to_string(),
        token: "0".repeat(64),
        policy_dir: rig.dir.path().join("run"),
    });
    let request = TurnRequest {
        run_id: "run-gated".to_owned(),
        target: rig.target("C-gated", &project),
        settings,
        prompt: "go".to_owned(),
        latest_message: "go".to_owned(),
        session_id: None,
        keep_alive: Duration::ZERO,
        warm: false,
    };
    let outcome = rig
        .runner
        .run_turn(request, None, CancellationToken::new())
        .await
        .expect("the gated turn runs");
    let text = outcome.result.text;
    assert!(text.contains(&format!("uid={AGENT_UID}")), "{text}");
    assert!(text.contains("pid1=root"), "{text}");
    assert!(
        !text.contains("policy_write_rc=0"),
        "the agent cannot rewrite its policy: {text}"
    );
    assert!(text.contains("touch_rc=1") && denied(&text), "{text}");
    assert!(!file.exists());
    // An ordinary write in the project goes through.
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt"))
            .ok()
            .as_deref(),
        Some("plain\n"),
        "{text}"
    );
    rig.cleanup().await;
    model.shutdown().await;
}

/// `docker stop` of a gated agent: the engine sends SIGTERM to the container's pid 1, the
/// gate's root supervisor, which must pass it on to the agent (another uid) so the agent can
/// clean up and the container stops at once instead of being killed at the stop timeout.
/// The agent stands in for the CLI (the runner's `claude_bin`): it cleans up on SIGTERM and
/// leaves a background job running, as a tool's process would be, which must not hold the
/// container up.
#[tokio::test(flavor = "multi_thread")]
async fn docker_stop_reaches_a_gated_agent_which_cleans_up_and_the_container_stops_at_once() {
    use std::os::unix::fs::PermissionsExt;
    /// `docker stop -t 30`: long enough that a stop ended by the timeout's SIGKILL cannot be
    /// mistaken for one the agent ended itself.
    const STOP_TIMEOUT: Duration = Duration::from_secs(30);
    /// The exit code the agent's SIGTERM trap leaves with (128 + SIGTERM, as a shell reports a
    /// process SIGTERM ended); the timeout's SIGKILL would give 137.
    const CLEANED_UP_EXIT: i64 = 143;

    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-stopped");
    let ready = project.join("agent-ready");
    let cleaned_up = project.join("agent-cleaned-up");
    let agent = project.join("fake-agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n\
             trap 'echo \"cleaned up as $(id -u)\" > {cleaned}; exit {CLEANED_UP_EXIT}' TERM\n\
             sleep 600 &\n\
             echo ready > {ready}\n\
             wait\n",
            cleaned = cleaned_up.display(),
            ready = ready.display(),
        ),
    )
    .expect("agent script");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    loop_e2e::support::chown(&agent, AGENT_UID, AGENT_UID);

    let mut settings = rig.settings(&container_url(1), &project);
    settings.claude_bin = agent.display().to_string();
    settings.gate = Some(GateSpec {
        policy_json: "{}".to_owned(),
        token: "0".repeat(64),
        policy_dir: rig.dir.path().join("run"),
    });
    let request = TurnRequest {
        run_id: "run-stopped".to_owned(),
        target: rig.target("C-stopped", &project),
        settings,
        prompt: "go".to_owned(),
        latest_message: "go".to_owned(),
        session_id: None,
        // The stopped container lingers, as loop keeps one for its logs: the engine's record
        // of how it ended is still there to read after the turn.
        keep_alive: Duration::from_secs(600),
        warm: false,
    };
    let runner = rig.runner.clone();
    let turn = tokio::spawn(async move {
        runner
            .run_turn(request, None, CancellationToken::new())
            .await
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        assert!(
            tokio::time::Instant::now() < deadline && !turn.is_finished(),
            "the gated agent never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("loop-daemon={}", rig.daemon_id)],
    )]);
    let containers = rig
        .docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let [container] = containers.as_slice() else {
        panic!("one agent container: {containers:?}");
    };
    let id = container.id.clone().expect("container id");

    let stopping = std::time::Instant::now();
    rig.docker
        .stop_container(
            &id,
            Some(bollard::query_parameters::StopContainerOptions {
                t: Some(i32::try_from(STOP_TIMEOUT.as_secs()).expect("seconds")),
                signal: None,
            }),
        )
        .await
        .expect("docker stop");
    let stopped_after = stopping.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(60), turn)
        .await
        .expect("the turn ends with its container");

    let state = rig
        .docker
        .inspect_container(&id, None)
        .await
        .expect("inspect the stopped container")
        .state
        .expect("state");
    assert_eq!(
        state.exit_code,
        Some(CLEANED_UP_EXIT),
        "the agent's SIGTERM trap ended the container, not the stop timeout's SIGKILL \
         (stopped after {stopped_after:?}): {state:?}"
    );
    assert!(
        stopped_after < STOP_TIMEOUT,
        "docker stop returned before its timeout: {stopped_after:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&cleaned_up)
            .ok()
            .as_deref()
            .map(str::trim),
        Some(format!("cleaned up as {AGENT_UID}").as_str()),
        "the agent cleaned up in the project, as itself"
    );
    rig.cleanup().await;
}
