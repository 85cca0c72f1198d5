//! A project or a home directory cannot reach loop's own secrets: a real `loop serve`, real
//! containers, the real CLI driven by the fake model, and projects that try.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use loop_e2e::daemon::{Daemon, test_config};
use loop_e2e::support::{AGENT_UID, chown, docker, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};

/// `loop run --dir ~` (a home holding `~/.loop`) is refused with a clear error, and nothing
/// runs; a project that plants a symlink where the Go Loop wrote its MCP config cannot make loop
/// overwrite the admin token; the agent finds none of loop's files from its home.
#[tokio::test(flavor = "multi_thread")]
async fn a_home_or_a_hostile_project_cannot_reach_loops_own_files() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _) = workspace();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let script = Script::new().rule(
        Rule::contains("look around")
            .then(Step::bash(
                "pwd; cat ~/.loop/admin.token; cat ~/.loop/config.json; ls -a ~/.loop; \
                 cat .loop/mcp-local-evil.json; echo probe-done",
            ))
            .then(Step::text("PROBE {{last_tool_result}}")),
    );
    let model = start_model(script).await;
    // Every directory under the home is allowed, as with an empty `allowed_dirs`.
    let daemon = Daemon::start(
        &home,
        &test_config(model.port(), &home, "\"container_timeout_sec\": 120"),
    )
    .await;
    let token_file = daemon.loop_dir.join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("admin token");
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;

    // The home itself: refused before anything is stored or run.
    let out = daemon.cli(&[
        "run",
        "--channel",
        "home",
        "--dir",
        &home.display().to_string(),
        "please look around",
    ]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("holds loop's own directory"),
        "loop run --dir ~ must say why it is refused: {said}"
    );
    assert!(
        model.requests().is_empty(),
        "nothing may run for a refused directory"
    );

    // A hostile project: where the Go Loop (and loop until now) wrote the per-run MCP config,
    // a symlink to loop's admin token.
    let project = home.join("src/evil");
    std::fs::create_dir_all(project.join(".loop")).expect("project");
    std::os::unix::fs::symlink(&token_file, project.join(".loop/mcp-local-evil.json"))
        .expect("symlink");
    for path in [home.join("src"), project.clone(), project.join(".loop")] {
        chown(&path, AGENT_UID, AGENT_UID);
    }
    let inbox = daemon.post_in("evil", &project, "please look around").await;
    let text = daemon.answer(inbox, Duration::from_secs(180)).await;
    assert!(text.starts_with("PROBE "), "{text}\n{}", daemon.log_text());
    assert!(text.contains("probe-done"), "{text}");
    assert!(
        text.contains(&project.display().to_string()),
        "the agent runs in the project: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).expect("token after"),
        token,
        "the admin token was overwritten through a project symlink"
    );
    assert_eq!(
        std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        mode,
        "the admin token's mode changed"
    );
    assert!(
        !text.contains(token.trim()),
        "the agent read the admin token: {text}"
    );
    assert!(
        !text.contains("anthropic_api_key") && !text.contains("sk-test-not-a-real-key"),
        "the agent read loop's config: {text}"
    );
}
