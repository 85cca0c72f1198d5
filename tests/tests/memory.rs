//! Semantic memory end to end: the real `loop serve` with the real embedding model
//! (`LOOP_TEST_MODEL_DIR`, `ORT_DYLIB_PATH`; see `.ci/fetch-model.sh`), the real Claude Code CLI
//! in the real container, scripted by the fake model to call the built-in `loop` MCP server's
//! `memory_save` and `memory_search`. The agent gets the stored memory back; the finished turn
//! and the project's README are indexed too.

use std::time::Duration;

use loop_bot::api::wire::MemoryInfo;
use loop_bot::store::{MemoryScope, Store};
use loop_e2e::daemon::{Daemon, eventually, test_config};
use loop_e2e::support::{docker, skip_unavailable, start_model, workspace};
use loop_fakes::model::{Rule, Script, Step};
use serde_json::json;

const CHANNEL: &str = "mem";
const KEY: &str = "local:mem";

/// The model directory, or None when the developer opted out of tests that need it.
fn model_dir() -> Option<String> {
    match (
        std::env::var("LOOP_TEST_MODEL_DIR"),
        std::env::var("ORT_DYLIB_PATH"),
    ) {
        (Ok(dir), Ok(_)) => Some(dir),
        _ => {
            assert!(
                skip_unavailable(),
                "LOOP_TEST_MODEL_DIR and ORT_DYLIB_PATH must be set: run `eval \"$(bash .ci/fetch-model.sh)\"; export LOOP_TEST_MODEL_DIR ORT_DYLIB_PATH`, or set LOOP_TEST_SKIP_UNAVAILABLE=1 to skip"
            );
            eprintln!("skipping: LOOP_TEST_MODEL_DIR / ORT_DYLIB_PATH not set");
            None
        }
    }
}

fn run(daemon: &Daemon, project: &str, prompt: &str) -> String {
    let output = daemon.cli(&["run", "--channel", CHANNEL, "--dir", project, prompt]);
    assert!(
        output.status.success(),
        "loop run failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log_text()
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

async fn doc_count(store: &Store, project: &str) -> usize {
    store
        .memory_list(
            &[MemoryScope::Project(project.to_owned())],
            Some("doc"),
            1000,
        )
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_saves_and_finds_a_memory_through_mcp() {
    let Some(model_dir) = model_dir() else { return };
    if docker().await.is_none() {
        return;
    }
    let (dir, project) = workspace();
    std::fs::write(
        project.join("README.md"),
        "# Operations\n\nThe staging database listens on port 6543 and is reset every Monday.\n",
    )
    .expect("readme");

    let script = Script::new()
        .rule(
            Rule::contains("remember the release rule")
                .then(Step::tool_use(
                    "mcp__loop__memory_save",
                    json!({"content": "Releases ship every Thursday at 15:00 UTC through scripts/ship.sh."}),
                ))
                .then(Step::text("save said: {{last_tool_result}}")),
        )
        .rule(
            Rule::contains("what is our shipping day")
                .then(Step::tool_use(
                    "mcp__loop__memory_search",
                    json!({"query": "when do we deploy a new version?", "top_k": 3}),
                ))
                .then(Step::text("search said: {{last_tool_result}}")),
        )
        .rule(Rule::contains("say hi").then(Step::text("hi")));
    let model = start_model(script).await;
    let home = dir.path().join("home");
    let config = test_config(
        model.port(),
        dir.path(),
        &format!(r#""memory": {{"enabled": true, "model_dir": "{model_dir}"}}"#),
    );
    let daemon = Daemon::start(&home, &config).await;
    let store = daemon.store().await;
    let project_arg = project.display().to_string();

    let saved = run(&daemon, &project_arg, "please remember the release rule");
    assert!(
        saved.contains("Saved memory"),
        "{saved}\n{}",
        daemon.log_text()
    );

    // Unrelated memories, so that ranking has something to beat.
    for text in [
        "The office plants are watered by Alice.",
        "Our logo colour is teal.",
    ] {
        let saved: MemoryInfo = reqwest::Client::new()
            .post(daemon.url("/api/memory/save"))
            .bearer_auth(daemon.token())
            .json(&json!({"content": text, "channel": KEY}))
            .send()
            .await
            .expect("save")
            .json()
            .await
            .expect("saved memory");
        assert_eq!(saved.scope, "channel");
    }

    let found = run(&daemon, &project_arg, "what is our shipping day?");
    // One line per hit, `[score] id (scope, source): content`, then the same as JSON.
    let hit_lines: Vec<&str> = found
        .lines()
        .map(|l| l.trim_start_matches("search said: "))
        .filter(|l| l.len() > 2 && l.starts_with('[') && !l[1..].starts_with(' '))
        .collect();
    let rank = |needle: &str| hit_lines.iter().position(|l| l.contains(needle));
    let thursday = rank("Thursday").unwrap_or_else(|| {
        panic!(
            "the agent got the saved memory back: {found}\n{}",
            daemon.log_text()
        )
    });
    assert!(
        hit_lines[thursday].contains("agent"),
        "with its source: {found}"
    );
    for unrelated in ["plants", "teal"] {
        assert!(
            rank(unrelated).is_none_or(|r| r > thursday),
            "{unrelated} ranks below the related memory: {found}"
        );
    }

    // The finished turns are in the channel's memory, and the README was indexed after the
    // first turn.
    eventually(
        &daemon,
        "the turns indexed",
        Duration::from_secs(30),
        || async {
            store
                .memory_list(&[MemoryScope::Channel(KEY.to_owned())], Some("turn"), 10)
                .await
                .map(|m| m.len() >= 2)
                .unwrap_or(false)
        },
    )
    .await;
    eventually(
        &daemon,
        "the README indexed",
        Duration::from_secs(30),
        || async { doc_count(&store, &project_arg).await == 1 },
    )
    .await;
    let hits: Vec<MemoryInfo> = reqwest::Client::new()
        .post(daemon.url("/api/memory/search"))
        .bearer_auth(daemon.token())
        .json(
            &json!({"query": "which port does staging postgres use?", "top_k": 2, "channel": KEY}),
        )
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("hits");
    assert_eq!(hits[0].source, "doc", "{hits:#?}");
    assert!(hits[0].content.contains("6543"), "{hits:#?}");
    assert!(hits[0].score.is_some_and(|s| s > 0.3), "{hits:#?}");

    // The CLI sees the same memories.
    let listed = daemon.cli(&["memory", "list", "--channel", KEY]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("Thursday"), "{listed}");
}
