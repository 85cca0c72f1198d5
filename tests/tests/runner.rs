//! The runner against the real Docker engine, the real agent image and the real Claude Code
//! CLI, driven by the scripted fake model.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{AGENT_UID, TestRig, container_url, start_model};
use loop_fakes::model::{Rule, Script, Session, Step};
use loop_runner::agent::{AgentRunner, Recovery, RunError, TurnRequest};
use loop_runner::events::AgentEvent;
use loop_runner::spec::{ContainerSettings, GateSpec, SetupCommand, SetupStep};
use loop_runner::{DockerRunner, WarmConfig};
use tokio_util::sync::CancellationToken;

fn request(
    rig: &TestRig,
    settings: ContainerSettings,
    channel: &str,
    prompt: &str,
    session: Option<String>,
) -> TurnRequest {
    let work_dir = settings_work_dir(&settings, rig, channel);
    TurnRequest {
        run_id: format!("run-{channel}"),
        target: rig.target(channel, &work_dir),
        settings,
        prompt: prompt.to_owned(),
        latest_message: prompt.to_owned(),
        session_id: session,
        keep_alive: Duration::ZERO,
        warm: false,
    }
}

fn settings_work_dir(
    _settings: &ContainerSettings,
    rig: &TestRig,
    channel: &str,
) -> std::path::PathBuf {
    rig.dir.path().join(channel)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_writes_a_file_in_the_project_and_a_follow_up_resumes_the_session() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-write");
    let target_file = project.join("hello.txt");
    // Relative paths, as a model writes them: they land in the project only because the
    // agent starts there.
    let script = Script::new()
        .rule(
            Rule::contains("write the greeting")
                .then(Step::write("hello.txt", "hello from the agent\n"))
                .then(Step::bash("cat hello.txt"))
                .then(Step::text("wrote it: {{last_tool_result}}")),
        )
        .rule(Rule::contains("what did you write").then(Step::text("I wrote hello.txt")));
    let model = start_model(script).await;
    let settings = rig.settings(&container_url(model.port()), &project);

    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let outcome = rig
        .runner
        .run_turn(
            request(
                &rig,
                settings.clone(),
                "C-write",
                "please write the greeting",
                None,
            ),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .expect("the turn succeeds");
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }

    // The file exists on the host, at the same path, owned by the agent's uid.
    let text = std::fs::read_to_string(&target_file).expect("file written through the mount");
    assert_eq!(text, "hello from the agent\n");
    assert_eq!(
        std::fs::metadata(&target_file).expect("meta").uid(),
        AGENT_UID
    );

    // Result and session come back; the callbacks fired in order.
    assert!(
        outcome.result.text.contains("hello from the agent"),
        "{:?}",
        outcome.result
    );
    assert!(!outcome.result.session_id.is_empty());
    let kinds: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            AgentEvent::Init { .. } => "init",
            AgentEvent::ToolUse { name, .. } if name == "Write" => "write",
            AgentEvent::ToolUse { name, .. } if name == "Bash" => "bash",
            AgentEvent::ToolUse { .. } => "tool",
            AgentEvent::ToolResult { .. } => "result-of-tool",
            AgentEvent::Text(_) => "text",
            AgentEvent::Activity { .. } => "activity",
            AgentEvent::Setup { .. } => "setup",
            AgentEvent::SetupFailed { .. } => "setup-failed",
            AgentEvent::Preparing(_) => "preparing",
            AgentEvent::Result(_) => "result",
        })
        .filter(|k| *k != "activity")
        .collect();
    assert_eq!(
        kinds,
        vec![
            "init",
            "write",
            "result-of-tool",
            "bash",
            "result-of-tool",
            "text",
            "result"
        ],
        "{seen:#?}"
    );
    if let Some(AgentEvent::Init { mcp_servers, .. }) = seen.first() {
        assert!(
            mcp_servers.iter().any(|(name, _)| name == "loop"),
            "{mcp_servers:?}"
        );
    }
    assert!(
        !project.join(".loop").exists(),
        "loop writes none of its own files into the project"
    );

    // A follow-up resumes the same Claude session and the model sees the earlier turn.
    let first_session = outcome.result.session_id.clone();
    let follow = rig
        .runner
        .run_turn(
            request(
                &rig,
                settings,
                "C-write",
                "what did you write?",
                Some(first_session.clone()),
            ),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("the follow-up succeeds");
    assert_eq!(follow.result.text, "I wrote hello.txt");
    assert_eq!(follow.result.session_id, first_session);
    let last = model.requests().last().cloned().expect("requests recorded");
    assert!(
        last.body.to_string().contains("please write the greeting"),
        "the resumed conversation carries the first turn"
    );
    rig.cleanup().await;
    model.shutdown().await;
}

/// The first real use: "work on this project". The model knows only what the CLI tells it,
/// uses relative paths, reads CLAUDE.md, runs git and the project's tests. The repository's
/// `.git` is root's (loop, as root, made it), so git must not refuse it as "dubious".
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_works_in_its_project_as_in_a_persons_session() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = Project::create(&rig.project("C-real"), GitOwner::Root);
    // A team's shared instructions one level up, which a person's CLI reads too.
    let parent_rule = format!("Team rule {}: answer in English.", rig.daemon_id);
    std::fs::write(rig.dir.path().join("CLAUDE.md"), &parent_rule).expect("parent CLAUDE.md");
    let script = Script::new()
        .rule(Rule::contains("add the notes").session(&Session::default()))
        .rule(
            Rule::contains("what do the notes say")
                .then(Step::bash("cat NOTES.md"))
                .then(Step::text("They say: {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let settings = rig.settings(&container_url(model.port()), &project.dir);
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let outcome = rig
        .runner
        .run_turn(
            request(
                &rig,
                settings.clone(),
                "C-real",
                "please add the notes",
                None,
            ),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .expect("the turn succeeds");
    project.check(&outcome.result.text, &model);
    assert!(
        model
            .requests()
            .iter()
            .any(|r| r.body_contains(&parent_rule)),
        "the parent directory's CLAUDE.md never reached the model"
    );
    // The CLI's own session record says where it started.
    let mut init_cwd = None;
    while let Ok(event) = rx.try_recv() {
        if let AgentEvent::Init { cwd, .. } = event {
            init_cwd = cwd;
        }
    }
    assert_eq!(
        init_cwd.as_deref(),
        Some(project.dir.to_str().expect("utf-8"))
    );

    // A follow-up (a new container resuming the session) starts in the project too.
    let follow = rig
        .runner
        .run_turn(
            request(
                &rig,
                settings,
                "C-real",
                "what do the notes say?",
                Some(outcome.result.session_id.clone()),
            ),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("the follow-up succeeds");
    assert_eq!(
        follow.result.text.trim_end(),
        format!("They say: {}", Session::default().new_content.trim_end())
    );
    rig.cleanup().await;
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_too_long_compacts_then_retries() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-long");
    let script = Script::new()
        .rule(Rule::contains("seed the session").then(Step::text("seeded")))
        // Claude Code 2.x compacts by itself once on "prompt is too long" and retries; the
        // second error makes it give up with "Prompt is too long", which is loop's cue to run
        // `/compact` on the session and try again (that third request succeeds).
        .rule(
            Rule::contains("a very long question")
                .times(2)
                .then(Step::prompt_too_long()),
        )
        .rule(Rule::any().then(Step::text("answer after compaction")));
    let model = start_model(script).await;
    let settings = rig.settings(&container_url(model.port()), &project);
    let seeded = rig
        .runner
        .run_turn(
            request(&rig, settings.clone(), "C-long", "seed the session", None),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("seed turn");
    let outcome = rig
        .runner
        .run_turn(
            request(
                &rig,
                settings,
                "C-long",
                "a very long question",
                Some(seeded.result.session_id.clone()),
            ),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("compaction then retry succeeds");
    assert_eq!(outcome.recovery, Recovery::Compacted);
    assert_eq!(outcome.result.text, "answer after compaction");
    rig.cleanup().await;
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_failure_retries_once_with_the_latest_message() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-retry");
    let script = Script::new()
        .rule(Rule::contains("seed").then(Step::text("seeded")))
        .rule(Rule::contains("earlier context").then(Step::error(
            400,
            "invalid_request_error",
            "something broke",
        )))
        .rule(Rule::contains("latest only").then(Step::text("answered the latest")));
    let model = start_model(script).await;
    let settings = rig.settings(&container_url(model.port()), &project);
    let seeded = rig
        .runner
        .run_turn(
            request(&rig, settings.clone(), "C-retry", "seed", None),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("seed");
    let mut req = request(
        &rig,
        settings,
        "C-retry",
        "earlier context\nlatest only",
        Some(seeded.result.session_id),
    );
    req.latest_message = "latest only".to_owned();
    let outcome = rig
        .runner
        .run_turn(req, None, CancellationToken::new())
        .await
        .expect("retry with the latest message succeeds");
    assert_eq!(outcome.recovery, Recovery::RetriedLatest);
    assert_eq!(outcome.result.text, "answered the latest");
    rig.cleanup().await;
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_turn_is_killed_at_the_timeout() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-hang");
    let model = start_model(Script::always(Step::Hang)).await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.timeout = Duration::from_secs(8);
    let mut req = request(&rig, settings, "C-hang", "hang please", None);
    req.keep_alive = Duration::from_secs(600);
    let err = rig
        .runner
        .run_turn(req, None, CancellationToken::new())
        .await
        .expect_err("the turn must time out");
    assert!(matches!(err, RunError::TimedOut(_)), "{err:?}");
    // The container was killed, not left running.
    let entries = rig.registry.docker_containers().await.expect("list");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, loop_runner::ContainerStatus::Stopped);
    rig.cleanup().await;
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_limit_is_applied_and_an_oom_is_reported() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-oom");
    // A shell variable of 600 MB: far past the 256 MB cap.
    let model = start_model(Script::always(Step::bash(
        "a=$(head -c 600000000 /dev/zero | tr '\\0' x); echo ${#a}",
    )))
    .await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.memory_mb = 256;
    let mut req = request(&rig, settings, "C-oom", "use memory", None);
    req.keep_alive = Duration::from_secs(600);
    let err = rig
        .runner
        .run_turn(req, None, CancellationToken::new())
        .await
        .expect_err("the turn must report the OOM");
    assert!(
        matches!(err, RunError::OutOfMemory { limit_mb: 256 }),
        "{err:?}"
    );
    let entries = rig.registry.docker_containers().await.expect("list");
    let info = rig
        .docker
        .inspect_container(&entries[0].id, None)
        .await
        .expect("inspect");
    let host = info.host_config.expect("host config");
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.cpu_quota, Some(100_000));
    rig.cleanup().await;
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_runs_under_gvisor_when_runsc_is_registered() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let info = loop_runner::docker::engine_info(&rig.docker)
        .await
        .expect("docker info");
    if !info.runtimes.iter().any(|r| r == "runsc") {
        // .ci/run registers runsc when Debian ships it; say so loudly when it could not.
        eprintln!(
            "SKIPPED: the runsc runtime is not registered with dockerd ({:?})",
            info.runtimes
        );
        return;
    }
    let project = rig.project("C-gvisor");
    let model = start_model(Script::always(Step::bash("uname -r; echo in-sandbox"))).await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.runtime = Some("runsc".to_owned());
    let outcome = rig
        .runner
        .run_turn(
            request(&rig, settings, "C-gvisor", "where am I", None),
            None,
            CancellationToken::new(),
        )
        .await
        .expect("a turn under gVisor");
    let last = model.requests().last().cloned().expect("requests");
    assert!(
        last.body_contains("in-sandbox"),
        "the Bash tool ran inside the sandbox"
    );
    assert!(!outcome.result.session_id.is_empty());
    rig.cleanup().await;
    model.shutdown().await;
}

/// Host git for the test's own setup and checks, as a person would run it in the repository.
fn host_git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// A thread's agent works in a linked worktree of the project: it sees its branch, edits by
/// relative path and commits, and the commit is on that branch in the host's repository, while
/// the main checkout stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_in_a_linked_worktree_commits_on_its_branch() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let repo = rig.project("C-wt");
    let project = Project::create(&repo, GitOwner::Agent);
    let worktree = rig.dir.path().join("worktrees/C-wt/loop-review-a1b2");
    host_git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "loop/review-a1b2",
            &worktree.display().to_string(),
            "main",
        ],
    );
    for dir in [&repo.join(".git"), &worktree] {
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{AGENT_UID}:{AGENT_UID}")])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success());
    }
    let session = Session::default();
    let script = Script::new().rule(
        Rule::contains("review the readme")
            .then(Step::bash("pwd"))
            .then(Step::bash("git status --short --branch"))
            .then(Step::read(&session.edit_file))
            .then(Step::edit(&session.edit_file, &session.old, &session.new))
            .then(Step::bash(
                "git add -A && git -c user.name=Agent -c user.email=agent@example.com \
                 commit -q -m 'Review the README' && git log --format=%s -1",
            ))
            .then(Step::text(
                "Worked in {{tool_result.0}} on {{tool_result.1}}; committed: {{tool_result.4}}",
            )),
    );
    let model = start_model(script).await;
    let settings = rig.settings(&container_url(model.port()), &worktree);
    let mut target = rig.target("C-wt", &worktree);
    target.git_common_dir = Some(repo.join(".git"));
    let outcome = rig
        .runner
        .run_turn(
            TurnRequest {
                run_id: "run-C-wt".into(),
                target,
                settings,
                prompt: "please review the readme".into(),
                latest_message: "please review the readme".into(),
                session_id: None,
                keep_alive: Duration::ZERO,
                warm: false,
            },
            None,
            CancellationToken::new(),
        )
        .await
        .expect("the turn succeeds");
    let answer = outcome.result.text;
    assert!(
        answer.contains(&format!("Worked in {}", worktree.display())),
        "{answer}"
    );
    assert!(answer.contains("## loop/review-a1b2"), "{answer}");
    assert!(answer.ends_with("committed: Review the README"), "{answer}");
    // What a person checks on the host: the commit on the branch, the main checkout untouched.
    assert_eq!(
        host_git(&repo, &["log", "--format=%s", "-1", "loop/review-a1b2"]),
        "Review the README"
    );
    assert!(
        host_git(&repo, &["show", "loop/review-a1b2:README.md"]).contains(&session.new),
        "the edit is not in the branch's commit"
    );
    let main_readme = std::fs::read_to_string(project.dir.join("README.md")).expect("README");
    assert!(
        main_readme.contains(&session.old) && !main_readme.contains(&session.new),
        "the main checkout changed: {main_readme}"
    );
    assert_eq!(host_git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(
        host_git(&repo, &["log", "--format=%s", "-1", "main"]),
        "initial"
    );
    rig.cleanup().await;
    model.shutdown().await;
}

/// A project's own Dockerfile (the `devcontainer-build` fixture: `ARG GREETING`, written into
/// the image) is built once per content: the argument reaches the build, the same project is
/// not built again, a changed Dockerfile is; a symlink in the context is sent as a link, so a
/// host file never enters the image.
#[tokio::test]
async fn a_projects_dockerfile_is_built_once_per_content() {
    use loop_runner::project_image::{
        BaseBuild, BaseSource, BuildError, KEEP_PER_PROJECT, ProjectImageSpec, ensure,
    };
    let Some(docker) = loop_e2e::support::docker().await else {
        return;
    };
    let agent_image = loop_e2e::support::test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("built");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/projects/devcontainer-build");
    std::fs::create_dir_all(project.join(".devcontainer")).expect("mkdir");
    for file in [
        ".devcontainer/devcontainer.json",
        ".devcontainer/Dockerfile",
    ] {
        std::fs::copy(fixture.join(file), project.join(file)).expect("copy");
    }
    std::os::unix::fs::symlink("/etc/shadow", project.join("shadow")).expect("link");
    let dockerfile = project.join(".devcontainer/Dockerfile");
    // Image names come from content: a comment unique to this run keeps its images its own.
    let nonce = format!("# test run {}\n", std::process::id());
    let write = |text: &str| std::fs::write(&dockerfile, format!("{nonce}{text}")).expect("write");
    let original = std::fs::read_to_string(&dockerfile).expect("read");
    write(&format!("{original}COPY shadow /copied\n"));
    let args = [("GREETING".to_owned(), "hello from args".to_owned())].into();
    let spec = ProjectImageSpec {
        project: &project,
        base: BaseSource::Build(BaseBuild {
            context: &project,
            dockerfile: &dockerfile,
            args: &args,
            target: None,
        }),
        agent_image: &agent_image,
    };
    // The context's symlink to a host file is sent as a link: the builder cannot copy the
    // host's file through it.
    let refused = ensure(&docker, &spec, |_| {}).await;
    assert!(
        matches!(&refused, Err(BuildError::Failed { message, .. }) if message.contains("shadow")),
        "{refused:?}"
    );
    write(&original);
    let mut lines = Vec::new();
    let first = ensure(&docker, &spec, |line| lines.push(line.to_owned()))
        .await
        .expect("build");
    assert!(
        first.built && first.tag.starts_with("loop-project:"),
        "{first:?}"
    );
    assert!(!lines.is_empty(), "the build's output was shown");
    let run = |tag: &str, script: &str| {
        let out = std::process::Command::new("docker")
            .args(["run", "--rm", "--entrypoint", "sh", tag, "-c", script])
            .output()
            .expect("docker run");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The project's base, with loop's layer on top: the CLI's native build, no Node needed.
    assert_eq!(
        run(
            &first.tag,
            "cat /etc/greeting; claude --version; for c in loop entrypoint.sh gosu; do command -v $c; done; command -v node || echo no node"
        ),
        "hello from args\n2.1.332 (Claude Code)\n/usr/local/bin/loop\n/usr/local/bin/entrypoint.sh\n/usr/local/bin/gosu\nno node"
            .replace("2.1.332", &claude_version(&agent_image))
    );

    let again = ensure(&docker, &spec, |_| {}).await.expect("again");
    assert_eq!(
        again,
        loop_runner::project_image::ProjectImage {
            tag: first.tag.clone(),
            built: false
        }
    );
    // A file no instruction copies is not part of the image: editing it rebuilds nothing.
    std::fs::write(project.join("notes.md"), "the agent's edit\n").expect("write");
    let unrelated = ensure(&docker, &spec, |_| {}).await.expect("unrelated");
    assert!(!unrelated.built, "{unrelated:?}");

    // Five changes of the Dockerfile: each builds once, and the project keeps its last two.
    let mut tags = vec![first.tag.clone()];
    for round in 1..=5 {
        write(&format!(
            "FROM debian:bookworm-slim\nRUN echo changed {round} > /etc/greeting\n"
        ));
        let changed = ensure(&docker, &spec, |_| {}).await.expect("changed");
        assert!(changed.built && !tags.contains(&changed.tag), "{changed:?}");
        tags.push(changed.tag);
    }
    assert_eq!(
        run(tags.last().expect("last"), "cat /etc/greeting"),
        "changed 5"
    );
    let label = format!("label=dev.loop.project={}", project.display());
    let project_images = || {
        let out = std::process::Command::new("docker")
            .args([
                "images",
                "--filter",
                &label,
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ])
            .output()
            .expect("docker images");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listed = project_images();
    let count = |repo: &str| listed.lines().filter(|l| l.starts_with(repo)).count();
    assert_eq!(count("loop-project:"), KEEP_PER_PROJECT, "{listed}");
    assert_eq!(count("loop-base:"), KEEP_PER_PROJECT, "{listed}");

    // A base loop's agent cannot run on is refused with what it lacks.
    write("FROM debian:bookworm-slim\nRUN rm /usr/bin/getent\n");
    let lacking = ensure(&docker, &spec, |_| {}).await;
    assert!(
        matches!(&lacking, Err(BuildError::Layer { tail, .. }) if tail.contains("lacks: getent")),
        "{lacking:?}"
    );
    for tag in listed.lines() {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", tag])
            .output();
    }
    let _ = std::process::Command::new("docker")
        .args([
            "image",
            "prune",
            "-f",
            "--filter",
            &format!("label=dev.loop.project={}", project.display()),
        ])
        .output();
}

/// The Claude CLI's version in `image`.
fn claude_version(image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "claude", image, "--version"])
        .output()
        .expect("docker run");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn shell_step(name: &str, line: &str) -> SetupStep {
    SetupStep {
        name: name.to_owned(),
        command: SetupCommand::Shell(line.to_owned()),
    }
}

/// The events a turn sent, once it is over.
fn drain(rx: &mut tokio::sync::mpsc::Receiver<AgentEvent>) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    seen
}

/// The setup lines among `events`, as `name: line`.
fn setup_lines(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Setup { name, line } => Some(format!("{name}: {line}")),
            _ => None,
        })
        .collect()
}

/// A project's setup runs in the container before the agent, as the agent, in the project,
/// with no stdin (a step reading it would take the prompt): its lines arrive as events, the
/// first failing step is reported with its tail and the steps after it are skipped, and the
/// agent still runs and answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_projects_setup_runs_before_the_agent_and_a_failure_does_not_stop_it() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-setup");
    let model = start_model(
        Script::new().rule(
            Rule::any()
                .then(Step::bash("cat setup-made.txt"))
                .then(Step::text("agent saw: {{last_tool_result}}")),
        ),
    )
    .await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.setup = vec![
        shell_step(
            "onCreateCommand",
            "cat >/dev/null; echo \"made by uid $(id -u) in $(pwd)\" > setup-made.txt; \
             echo first line; echo second line >&2",
        ),
        shell_step(
            "postCreateCommand",
            "echo installing; echo 'npm ERR! missing script: setup' >&2; exit 3",
        ),
        shell_step("postStartCommand", "touch never-ran"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let outcome = rig
        .runner
        .run_turn(
            request(&rig, settings, "C-setup", "go", None),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .expect("the agent runs after a failed setup");
    let seen = drain(&mut rx);

    assert_eq!(
        setup_lines(&seen),
        [
            "onCreateCommand: first line",
            "onCreateCommand: second line",
            "postCreateCommand: installing",
            "postCreateCommand: npm ERR! missing script: setup",
        ],
        "{seen:#?}"
    );
    let failed: Vec<&AgentEvent> = seen
        .iter()
        .filter(|e| matches!(e, AgentEvent::SetupFailed { .. }))
        .collect();
    assert_eq!(
        failed,
        [&AgentEvent::SetupFailed {
            name: "postCreateCommand".into(),
            exit_code: 3,
            tail: "installing\nnpm ERR! missing script: setup".into(),
        }],
        "{seen:#?}"
    );
    let init = seen
        .iter()
        .position(|e| matches!(e, AgentEvent::Init { .. }))
        .expect("the CLI started");
    let last_setup = seen
        .iter()
        .rposition(|e| matches!(e, AgentEvent::Setup { .. } | AgentEvent::SetupFailed { .. }))
        .expect("setup events");
    assert!(last_setup < init, "setup runs before the agent: {seen:#?}");

    let made = project.join("setup-made.txt");
    let text = std::fs::read_to_string(&made).expect("the setup wrote into the project");
    assert_eq!(
        text.trim(),
        format!("made by uid {AGENT_UID} in {}", project.display())
    );
    assert_eq!(std::fs::metadata(&made).expect("meta").uid(), AGENT_UID);
    assert!(
        !project.join("never-ran").exists(),
        "the steps after a failure are skipped"
    );
    assert_eq!(
        outcome.result.text.trim(),
        format!(
            "agent saw: made by uid {AGENT_UID} in {}",
            project.display()
        )
    );
    rig.cleanup().await;
    model.shutdown().await;
}

/// Under the gate, setup runs inside `loop syscallwrap` as the agent (never root), and the
/// gate's policy holds for it as for the agent.
#[tokio::test(flavor = "multi_thread")]
async fn setup_runs_as_the_agent_under_the_gate() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let project = rig.project("C-setup-gated");
    let model = start_model(Script::new().rule(Rule::any().then(Step::text("answered")))).await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.gate = Some(GateSpec {
        policy_json: serde_json::json!({
            "command_rules": [{"commands": ["touch"], "decision": "deny"}]
        })
        .to_string(),
        token: "0".repeat(64),
        policy_dir: rig.dir.path().join("run"),
    });
    settings.setup = vec![shell_step(
        "postCreateCommand",
        "echo \"uid=$(id -u)\"; touch gated-file 2>/dev/null; echo \"touch_rc=$?\"",
    )];
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let outcome = rig
        .runner
        .run_turn(
            request(&rig, settings, "C-setup-gated", "go", None),
            Some(tx),
            CancellationToken::new(),
        )
        .await
        .expect("the gated turn runs");
    let seen = drain(&mut rx);
    let lines = setup_lines(&seen);
    assert_eq!(
        lines,
        [
            format!("postCreateCommand: uid={AGENT_UID}"),
            // Denied: the shell cannot execute it.
            "postCreateCommand: touch_rc=126".to_owned(),
        ],
        "{seen:#?}"
    );
    assert!(
        !project.join("gated-file").exists(),
        "the gate's policy applies to setup"
    );
    assert_eq!(outcome.result.text, "answered");
    rig.cleanup().await;
    model.shutdown().await;
}

/// A warm agent keeps its container, and with it the setup's result: two turns, one setup.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_agent_runs_setup_once_for_its_turns() {
    let Some(rig) = TestRig::new().await else {
        return;
    };
    let runner = DockerRunner::with_warm(
        rig.registry.clone(),
        WarmConfig {
            idle: Duration::from_secs(300),
            max_agents: 2,
        },
    );
    let project = rig.project("C-setup-warm");
    let model =
        start_model(Script::new().rule(Rule::any().then(Step::text("answer to: {{prompt}}"))))
            .await;
    let mut settings = rig.settings(&container_url(model.port()), &project);
    settings.setup = vec![shell_step(
        "postCreateCommand",
        "echo ran >> setup-runs.txt; echo setup ran",
    )];
    let mut session = None;
    let mut containers = Vec::new();
    let mut setups = Vec::new();
    for prompt in ["first", "second"] {
        let mut turn = request(
            &rig,
            settings.clone(),
            "C-setup-warm",
            prompt,
            session.clone(),
        );
        turn.warm = true;
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let outcome = runner
            .run_turn(turn, Some(tx), CancellationToken::new())
            .await
            .expect("the turn succeeds");
        assert_eq!(outcome.result.text, format!("answer to: {prompt}"));
        assert!(outcome.warm, "{outcome:?}");
        session = Some(outcome.result.session_id.clone());
        containers.push(outcome.container_id.clone());
        setups.push(setup_lines(&drain(&mut rx)));
    }
    assert_eq!(
        containers[0], containers[1],
        "the second turn is the warm agent's"
    );
    assert_eq!(
        setups,
        [vec!["postCreateCommand: setup ran".to_owned()], Vec::new()]
    );
    assert_eq!(
        std::fs::read_to_string(project.join("setup-runs.txt")).expect("runs"),
        "ran\n"
    );
    rig.cleanup().await;
    model.shutdown().await;
}
