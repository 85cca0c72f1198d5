//! A project's own environment, end to end (issue #18): a real `loop serve` with the fake
//! Slack, real `docker build`s of the projects in `tests/fixtures/projects` through the real
//! dockerd, loop's layer on top, and the real Claude Code CLI running in the result against the
//! scripted fake model, which works like a model: `pwd`, reads CLAUDE.md, runs the project's
//! tests by their documented command.

use std::time::{Duration, Instant};

use loop_e2e::daemon::Daemon;
use loop_e2e::project::Project;
use loop_e2e::slack::{connected, has_text, point_channel, reply_in, slack_config, thread_until};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};
use loop_fakes::slack::{FakeSlack, SlackMessage};

/// A cold build of the Python image (apt installs pytest) plus a turn.
const BUILD_TURN: Duration = Duration::from_secs(600);
const TURN: Duration = Duration::from_secs(180);

/// What an agent does when asked to run a project's tests: where am I, what does the project
/// say, run them as it says, report.
fn run_the_tests(ask: &str) -> Rule {
    Rule::contains(ask)
        .then(Step::bash("pwd"))
        .then(Step::read("CLAUDE.md"))
        .then(Step::bash("python3 -m pytest -q 2>&1 | tail -1"))
        .then(Step::text(
            "Worked in {{tool_result.0}}. Tests: {{tool_result.2}}",
        ))
}

/// Every text the status message of `thread` showed, edits included. The status message is
/// the one loop edits (a notice may come before it).
fn status_history(slack: &FakeSlack, thread: &[SlackMessage]) -> Vec<String> {
    let updates = slack.calls_of("chat.update");
    let edited = |m: &&SlackMessage| {
        updates
            .iter()
            .any(|c| c.args["ts"].as_str() == Some(m.ts.as_str()))
    };
    let status = thread.iter().find(edited).unwrap_or(&thread[0]);
    let mut texts = vec![status.text.clone()];
    for call in &updates {
        if call.args["ts"].as_str() == Some(status.ts.as_str()) {
            texts.push(call.args["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    texts
}

/// Makes `project`'s Dockerfile its own: images are named by content, and another test (or an
/// earlier run) may have built the fixture's as it is.
fn make_own(project: &Project, dockerfile: &str) {
    let path = project.dir.join(dockerfile);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        format!("{text}# built for {}\n", project.dir.display()),
    )
    .expect("write");
    project.commit("this project's own build");
}

fn builds_in(daemon: &Daemon) -> usize {
    daemon
        .log_text()
        .matches("project environment built")
        .count()
}

fn answer_of<'a>(thread: &'a [SlackMessage], needle: &str) -> &'a str {
    &thread
        .iter()
        .find(|m| m.text.contains(needle))
        .expect("answer")
        .text
}

/// Removes the images built for `project` (they are labelled with it).
fn remove_images_of(project: &std::path::Path) {
    let out = std::process::Command::new("docker")
        .args([
            "images",
            "--filter",
            &format!("label=dev.loop.project={}", project.display()),
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .expect("docker images");
    for tag in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", tag])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_project_runs_its_tests_in_its_own_image_once_an_owner_trusts_it() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::from_fixture("python-dockerfile", &project_dir);
    make_own(&project, ".loop/container/Dockerfile");
    let model = start_model(Script::new().rule(run_the_tests("run the tests"))).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), ""),
    )
    .await;
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;
    let ask = |user: &str| {
        slack.post_as_user(
            user,
            "C1",
            &format!("{} run the tests please", FakeSlack::mention()),
            None,
        )
    };

    // Nobody trusted the project's Dockerfile: nothing is built, the thread says why and how,
    // and the agent runs in loop's default image, which has no Python.
    let first = ask("UALICE");
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &first.ts,
        "the untrusted turn",
        TURN,
        |m| has_text(m, "Tests:") && has_text(m, "is not trusted"),
    )
    .await;
    let notice = answer_of(&thread, "is not trusted");
    assert!(
        notice.contains("`.loop/container/Dockerfile`")
            && notice.contains("python3-pytest")
            && notice.contains("the agent runs in `loop-agent:latest`"),
        "{notice}"
    );
    let answer = answer_of(&thread, "Tests:");
    assert!(
        answer.contains("No module named pytest") || answer.contains("not found"),
        "{answer}"
    );
    assert_eq!(builds_in(&daemon), 0);
    let version = notice
        .split("/loop trust ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the version to trust")
        .to_owned();

    // An owner trusts exactly that version.
    slack.slash_command("UBOSS", "C1", "/loop", &format!("trust {version}"));
    reply_in(
        &slack,
        &daemon,
        "C1",
        "Trusted `.loop/container/Dockerfile`",
        TURN,
    )
    .await;

    // The next thread builds the image, showing the build in its status, and the tests run.
    let started = Instant::now();
    let second = ask("UALICE");
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &second.ts,
        "the first build",
        BUILD_TURN,
        |m| has_text(m, "Tests:"),
    )
    .await;
    let cold = started.elapsed();
    let answer = answer_of(&thread, "Tests:");
    assert!(answer.contains("1 passed"), "{answer}");
    // The agent worked in its thread's worktree, at the project's path on the host.
    let worktree = answer
        .split("Worked in ")
        .nth(1)
        .and_then(|rest| rest.split(". Tests:").next())
        .expect("pwd");
    assert!(
        std::path::Path::new(worktree).join("greeting.py").is_file(),
        "{answer}"
    );
    let shown = status_history(&slack, &thread);
    assert!(
        shown
            .iter()
            .any(|t| t
                .contains("🏗️ building the project environment from `.loop/container/Dockerfile`")),
        "{shown:#?}"
    );
    assert_eq!(builds_in(&daemon), 1);

    // Another thread: the image is current, nothing is built.
    let started = Instant::now();
    let third = ask("UBOSS");
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &third.ts,
        "the cached turn",
        TURN,
        |m| has_text(m, "Tests:"),
    )
    .await;
    let cached = started.elapsed();
    assert!(answer_of(&thread, "Tests:").contains("1 passed"));
    let shown = status_history(&slack, &thread);
    assert!(
        !shown
            .iter()
            .any(|t| t.contains("building the project environment")),
        "{shown:#?}"
    );
    assert_eq!(builds_in(&daemon), 1, "the second thread built nothing");
    eprintln!(
        "first turn with a cold build: {:.1} s; a turn on the cached image: {:.1} s",
        cold.as_secs_f64(),
        cached.as_secs_f64()
    );
    remove_images_of(&project.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_dockerfile_is_built_once_for_two_threads_asking_at_once() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::from_fixture("python-dockerfile", &project_dir);
    // A change no earlier build has seen: a new layer, really built.
    let dockerfile = project.dir.join(".loop/container/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).expect("read");
    std::fs::write(
        &dockerfile,
        format!(
            "{text}RUN echo 'built for {}' > /etc/build-note\n",
            project.dir.display()
        ),
    )
    .expect("write");
    project.commit("a new build step");
    let model = start_model(
        Script::new()
            .rule(run_the_tests("run the tests, first"))
            .rule(run_the_tests("run the tests, second")),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), r#""project_images": "always""#),
    )
    .await;
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;

    let asks = ["first", "second"].map(|which| {
        slack.post_as_user(
            "UALICE",
            "C1",
            &format!("{} run the tests, {which}", FakeSlack::mention()),
            None,
        )
    });
    let mut statuses = Vec::new();
    for asked in &asks {
        let thread = thread_until(
            &slack,
            &daemon,
            "C1",
            &asked.ts,
            "a thread's tests",
            BUILD_TURN,
            |m| has_text(m, "Tests:"),
        )
        .await;
        assert!(answer_of(&thread, "Tests:").contains("1 passed"));
        assert!(
            !has_text(&thread, "is not trusted"),
            "project_images: always"
        );
        statuses.push(status_history(&slack, &thread));
    }
    assert_eq!(builds_in(&daemon), 1, "two threads, one build");
    // One thread built, the other waited for that build and said so.
    assert!(
        statuses.iter().any(|s| s
            .iter()
            .any(|t| t.contains("waiting for the project environment"))),
        "{statuses:#?}"
    );
    remove_images_of(&project.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn devcontainer_projects_get_their_image_setup_and_variables_and_a_broken_one_is_named() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _) = workspace();
    let projects = [
        "devcontainer-image",
        "devcontainer-build",
        "devcontainer-invalid",
    ]
    .map(|name| Project::from_fixture(name, &dir.path().join(name)));
    let script = Script::new()
        .rule(
            Rule::contains("check the image project")
                .then(Step::bash("cat /tmp/devcontainer-ready; id -u"))
                .then(Step::text("Image project: {{tool_result.0}}")),
        )
        .rule(
            Rule::contains("check the built project")
                .then(Step::bash("cat /etc/greeting; echo kind=$PROJECT_KIND"))
                .then(Step::text("Built project: {{tool_result.0}}")),
        )
        .rule(Rule::contains("check the broken project").then(Step::text("It ran anyway.")));
    let model = start_model(script).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), r#""project_images": "always""#),
    )
    .await;
    connected(&slack, &daemon).await;
    let mut asked = Vec::new();
    for ((project, channel), what) in projects
        .iter()
        .zip(["C1", "C2", "C3"])
        .zip(["image", "built", "broken"])
    {
        point_channel(&slack, &daemon, "UALICE", channel, &project.dir).await;
        let posted = slack.post_as_user(
            "UALICE",
            channel,
            &format!("{} check the {what} project", FakeSlack::mention()),
            None,
        );
        asked.push((channel, posted.ts));
    }

    // `image` + `postCreateCommand`: the setup ran in the container before the agent, as the
    // agent (not root), and the status showed its output.
    let (channel, ts) = &asked[0];
    let thread = thread_until(
        &slack,
        &daemon,
        channel,
        ts,
        "the image project",
        BUILD_TURN,
        |m| has_text(m, "Image project:"),
    )
    .await;
    let answer = answer_of(&thread, "Image project:");
    assert!(answer.contains("ready\n1000"), "{answer}");
    let shown = status_history(&slack, &thread);
    assert!(
        shown
            .iter()
            .any(|t| t.contains("🛠️ postCreateCommand: ready")),
        "{shown:#?}"
    );
    let noted = answer_of(&thread, "loop does not use");
    assert!(
        noted.contains("`.devcontainer/devcontainer.json`") && noted.contains("forwardPorts"),
        "the ignored forwardPorts is noted: {noted}"
    );

    // `build` with `args`, and `containerEnv`.
    let (channel, ts) = &asked[1];
    let thread = thread_until(
        &slack,
        &daemon,
        channel,
        ts,
        "the built project",
        BUILD_TURN,
        |m| has_text(m, "Built project:"),
    )
    .await;
    let answer = answer_of(&thread, "Built project:");
    assert!(
        answer.contains("hello from args\nkind=devcontainer-build"),
        "{answer}"
    );

    // An invalid file: the thread names the file, the line and the field; nothing ran.
    let (channel, ts) = &asked[2];
    let thread = thread_until(
        &slack,
        &daemon,
        channel,
        ts,
        "the broken project",
        TURN,
        |m| has_text(m, "nothing ran"),
    )
    .await;
    let refusal = answer_of(&thread, "nothing ran");
    assert!(
        refusal.contains(".devcontainer.json:4: `containerEnv.DEBUG`"),
        "{refusal}"
    );
    assert!(!has_text(&thread, "It ran anyway."));
    assert!(
        !model
            .requests()
            .iter()
            .any(|r| format!("{r:?}").contains("check the broken project")),
        "the model never heard of the broken project's turn"
    );
    for project in &projects {
        remove_images_of(&project.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loop_image_build_dir_trusts_and_builds_ahead_so_a_thread_builds_nothing() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::from_fixture("devcontainer-build", &project_dir);
    make_own(&project, ".devcontainer/Dockerfile");
    let model = start_model(
        Script::new().rule(
            Rule::contains("check the built project")
                .then(Step::bash("cat /etc/greeting"))
                .then(Step::text("Built project: {{tool_result.0}}")),
        ),
    )
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &slack_config(&model, &slack, dir.path(), ""),
    )
    .await;
    let dir_arg = project.dir.display().to_string();
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // The owner, on the host: the description is shown, trusted and built.
    let built = daemon.cli(&["image", "build", "--dir", &dir_arg, "--yes"]);
    let out = text(&built);
    assert!(built.status.success(), "{out}");
    assert!(
        out.contains("is not trusted yet")
            && out.contains("GREETING")
            && out.contains("trusted .devcontainer/devcontainer.json version")
            && out.contains("built loop-project:"),
        "{out}"
    );
    let again = text(&daemon.cli(&["image", "build", "--dir", &dir_arg]));
    assert!(
        again.contains("is current") && again.contains("nothing to build"),
        "{again}"
    );
    let doctor = text(&daemon.cli(&["doctor", "--dir", &dir_arg]));
    assert!(
        doctor.contains("is trusted") && doctor.contains("is built and current"),
        "{doctor}"
    );

    // A thread then runs in it at once: no notice, no build.
    connected(&slack, &daemon).await;
    point_channel(&slack, &daemon, "UALICE", "C1", &project.dir).await;
    let asked = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} check the built project", FakeSlack::mention()),
        None,
    );
    let thread = thread_until(&slack, &daemon, "C1", &asked.ts, "the thread", TURN, |m| {
        has_text(m, "Built project:")
    })
    .await;
    assert!(answer_of(&thread, "Built project:").contains("hello from args"));
    assert!(!has_text(&thread, "is not trusted"));
    assert_eq!(builds_in(&daemon), 0, "built ahead, not in the thread");
    remove_images_of(&project.dir);
}

/// The gate and warm agents on a project's image as on loop's: the gate's supervisor (loop's
/// binary, on the project's libc) holds the agent to its rules, and a warm agent keeps its
/// container (what the first turn left in `/tmp` is there for the second), and the project's
/// setup ran once for both.
#[tokio::test(flavor = "multi_thread")]
async fn the_gate_and_warm_agents_work_the_same_in_a_project_image() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project_dir) = workspace();
    let project = Project::from_fixture("devcontainer-image", &project_dir);
    // `curl` is not in the image: a copy of `echo` named curl stands in for it.
    let model = start_model(
        Script::new()
            .rule(
                Rule::contains("first look")
                    .then(Step::bash(
                        "cp /bin/echo /tmp/curl; /tmp/curl fetched-something; echo curl_rc=$?; \
                         echo agent >> /tmp/devcontainer-ready; wc -l < /tmp/devcontainer-ready",
                    ))
                    .then(Step::text("FIRST {{last_tool_result}}")),
            )
            .rule(
                Rule::contains("second look")
                    .then(Step::bash(
                        "echo setup_runs=$(wc -l < /tmp/devcontainer-ready)",
                    ))
                    .then(Step::text("SECOND {{last_tool_result}}")),
            ),
    )
    .await;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &loop_e2e::daemon::test_config(
            model.port(),
            dir.path(),
            r#""project_images": "always",
  "warm_idle_sec": 600,
  "gates": {"agentgate": {"command_rules": [{"commands": ["curl"], "decision": "deny"}]}}"#,
        ),
    )
    .await;
    let first = daemon
        .post_in("gated", &project.dir, "take a first look")
        .await;
    let text = daemon.answer(first, BUILD_TURN).await;
    assert!(text.starts_with("FIRST "), "{text}\n{}", daemon.log_text());
    assert!(
        text.contains("curl_rc=126") && !text.contains("fetched-something"),
        "the gate denied the program: {text}"
    );
    let second = daemon.post_in("gated", &project.dir, "a second look").await;
    let text = daemon.answer(second, TURN).await;
    // The setup's line and the first turn's: the same container, the setup not run again.
    // (Whether this test built the image depends on the others: an `image` base's project
    // image is named by that image, the same in every project using it.)
    assert!(text.contains("SECOND setup_runs=2"), "{text}");
    remove_images_of(&project.dir);
}
