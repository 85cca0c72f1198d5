//! A project's `.loop/config.json` end to end: a real `loop serve`, the real `loop run` and
//! `loop config trust` CLIs, real containers running the real Claude Code CLI against the
//! scripted fake model. The agent can edit the file, so what it asks for that widens the
//! container applies only once an owner trusted that exact version.
//!
//! What the agent sees is checked through the model: the fake answers with
//! `{{last_tool_result}}`, i.e. exactly what `ls` printed inside the container. The mount asks
//! for a private directory of the host user's (`~/.loop` itself the runner never mounts).

use std::path::Path;
use std::process::{Command, Output};

use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::support::{AGENT_UID, chown, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `loop run --dir PROJECT PROMPT`, as a person would type it; returns (answer, what else the
/// channel said on stderr).
fn run(daemon: &Daemon, project: &Path, prompt: &str) -> (String, String) {
    let output = daemon.cli(&["run", "--dir", &project.display().to_string(), prompt]);
    assert!(
        output.status.success(),
        "loop run {prompt:?} failed: {}\n--- daemon log ---\n{}",
        text(&output.stderr),
        daemon.log_text()
    );
    (text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_file_widens_the_container_only_once_an_owner_trusts_that_version() {
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("private")).expect("mkdir");
    std::fs::write(home.join("private/secret.txt"), "the host user's").expect("write");
    let config_dir = project.join(".loop");
    let config_file = config_dir.join("config.json");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::write(&config_file, r#"{"mounts": ["~/private:/stolen"]}"#).expect("write");
    // The agent may edit its project's files, this one included.
    chown(&config_dir, AGENT_UID, AGENT_UID);
    chown(&config_file, AGENT_UID, AGENT_UID);

    let edit = format!(
        "echo '{{\"mounts\": [\"~/private:/stolen2\"]}}' > {}; echo rc=$?",
        config_file.display()
    );
    let script = Script::new()
        .rule(
            Rule::contains("look in stolen2")
                .then(Step::bash("ls /stolen2 2>&1"))
                .then(Step::text("STOLEN2 {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("look in stolen")
                .then(Step::bash("ls /stolen 2>&1"))
                .then(Step::text("STOLEN {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("edit the config")
                .then(Step::bash(&edit))
                .then(Step::text("EDITED {{last_tool_result}}")),
        );
    let model = start_model(script).await;
    let daemon = Daemon::start(&home, &test_config(model.port(), dir.path(), "")).await;

    // Never trusted: the turn runs without the mount, and the channel says why.
    let (answer, said) = run(&daemon, &project, "look in stolen");
    assert!(answer.contains("No such file or directory"), "{answer}");
    assert!(!answer.contains("secret.txt"), "{answer}");
    assert!(said.contains("is not trusted"), "{said}");
    assert!(said.contains("`mounts`"), "{said}");
    assert!(said.contains("/loop trust "), "{said}");
    assert!(
        said.contains(&format!("loop config trust {}", project.display())),
        "{said}"
    );
    assert!(
        said.contains("+{\"mounts\": [\"~/private:/stolen\"]}"),
        "{said}"
    );

    // An owner reviews the diff and trusts this version on the host.
    let trusted = daemon.cli(&["config", "trust", &project.display().to_string(), "--yes"]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    let review = text(&trusted.stdout);
    assert!(
        review.contains("+{\"mounts\": [\"~/private:/stolen\"]}"),
        "{review}"
    );
    assert!(
        review.contains("trusting it lets these apply: mounts"),
        "{review}"
    );
    assert!(review.contains("trusted "), "{review}");

    // The mount applies from the next turn, without another notice.
    let (answer, said) = run(&daemon, &project, "look in stolen");
    assert!(answer.contains("secret.txt"), "{answer}");
    assert!(!said.contains("not trusted"), "{said}");

    // The agent rewrites the file from inside its container (an approver lets the write
    // through the gate, as one might without reading it).
    let mut editing = Command::new(loop_binary());
    editing
        .args([
            "run",
            "--dir",
            &project.display().to_string(),
            "please edit the config",
        ])
        .env("LOOP_HOME", &daemon.loop_dir)
        .env("HOME", &daemon.home);
    let editing = tokio::task::spawn_blocking(move || editing.output());
    let approval = daemon.pending_approval("config.json").await;
    assert_eq!(
        daemon.decide(&approval.id, "allow_once").await.status(),
        200
    );
    let edited: Output = editing.await.expect("join").expect("loop run");
    assert!(
        text(&edited.stdout).contains("EDITED rc=0"),
        "{}{}",
        text(&edited.stdout),
        text(&edited.stderr)
    );
    assert!(
        std::fs::read_to_string(&config_file)
            .expect("read")
            .contains("stolen2")
    );

    // Held back again: the new mount does not apply, the channel is told once, and the last
    // trusted version's mount still does.
    let (answer, said) = run(&daemon, &project, "look in stolen2");
    assert!(answer.contains("No such file or directory"), "{answer}");
    assert!(said.contains("is not trusted"), "{said}");
    assert!(said.contains("`mounts`"), "{said}");
    assert!(
        said.contains("-{\"mounts\": [\"~/private:/stolen\"]}"),
        "{said}"
    );
    assert!(
        said.contains("+{\"mounts\": [\"~/private:/stolen2\"]}"),
        "{said}"
    );
    let (answer, said) = run(&daemon, &project, "look in stolen");
    assert!(answer.contains("secret.txt"), "{answer}");
    assert!(
        !said.contains("not trusted"),
        "one notice per version: {said}"
    );
    model.shutdown().await;
}
