//! Semantic memory end to end: the real `loop serve` with the real embedding model
//! (`LOOP_TEST_MODEL_DIR`, `ORT_DYLIB_PATH`; see `.ci/fetch-model.sh`), the real Claude Code CLI
//! in the real container, scripted by the fake model to call the built-in `loop` MCP server's
//! `memory_save` and `memory_search`. The agent gets the stored memory back; the finished turn
//! and the project's README are indexed too. Without `memory.model_dir`, `loop memory`
//! downloads the model from a fake Hugging Face hub once, then works offline from its cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use loop_e2e::daemon::{Daemon, eventually, loop_binary, test_config};
use loop_e2e::support::{docker, skip_unavailable, start_model, workspace};
use loop_fakes::hfhub::{FakeHub, HubRepo};
use loop_fakes::model::{Rule, Script, Step};
use loop_store::{MemoryScope, Store};
use loop_wire::api::MemoryInfo;
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

// --- The model through fastembed's download ------------------------------------------------
//
// With `memory.model_dir` unset, loop loads the model through fastembed's hub download. These
// tests point `HF_ENDPOINT` at a fake hub (`loop_fakes::hfhub`) serving the files of
// `LOOP_TEST_MODEL_DIR`, and run the real `loop memory` CLI: no Docker needed.

/// The hub repository fastembed downloads all-MiniLM-L6-v2 from (its model list names it).
const HUB_REPO: &str = "Qdrant/all-MiniLM-L6-v2-onnx";
/// The files fastembed fetches from it.
const HUB_FILES: [&str; 5] = [
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

/// The model repository as the hub would serve it, from the files in `model_dir`; `skip`
/// leaves one out.
fn hub_repo(model_dir: &str, skip: Option<&str>) -> HubRepo {
    let dir = Path::new(model_dir);
    HUB_FILES
        .iter()
        .filter(|f| Some(**f) != skip)
        .fold(HubRepo::new(HUB_REPO), |repo, file| {
            repo.file_from(file, dir, file).expect("read a model file")
        })
}

/// A loop home whose config turns memory on (`extra` goes into the memory section), and a
/// project with three docs on unrelated subjects.
fn memory_home(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    write_memory_config(&home, extra);
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("docs")).expect("project");
    std::fs::write(
        project.join("README.md"),
        "# Releases\n\nReleases ship every Thursday at 15:00 UTC through scripts/ship.sh.\n",
    )
    .expect("readme");
    std::fs::write(
        project.join("docs/plants.md"),
        "# Plants\n\nThe office plants are watered by Alice on Mondays.\n",
    )
    .expect("plants");
    std::fs::write(
        project.join("docs/brand.md"),
        "# Brand\n\nOur logo colour is teal and the font is Inter.\n",
    )
    .expect("brand");
    (dir, home, project)
}

fn write_memory_config(home: &Path, extra: &str) {
    std::fs::create_dir_all(home.join(".loop")).expect("loop home");
    std::fs::write(
        home.join(".loop/config.json"),
        format!(r#"{{"memory": {{"enabled": true{extra}}}}}"#),
    )
    .expect("config");
}

/// Runs the real `loop` CLI in `home` with `HF_ENDPOINT` set, and nothing else of the
/// environment that could reroute or authenticate the download.
fn loop_cli(home: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut command = Command::new(loop_binary());
    command
        .args(args)
        .env("HOME", home)
        .env("LOOP_HOME", home.join(".loop"))
        .env("HF_ENDPOINT", endpoint);
    for var in [
        "HF_HOME",
        "HF_TOKEN",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run loop")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// `loop memory search` for a deploy question: the release doc must come first.
fn assert_release_doc_ranks_first(home: &Path, endpoint: &str, project: &Path) {
    let output = loop_cli(
        home,
        endpoint,
        &[
            "memory",
            "search",
            "when do we deploy a new version?",
            "-k",
            "3",
            "--project",
            &project.display().to_string(),
        ],
    );
    let found = stdout(&output);
    assert!(
        output.status.success(),
        "search failed: {}{found}",
        stderr(&output)
    );
    let at = |needle: &str| {
        found
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} is among the hits: {found}"))
    };
    assert!(at("Thursday") < at("plants"), "{found}");
    assert!(at("Thursday") < at("teal"), "{found}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_model_dir_the_model_is_downloaded_once_then_loads_offline() {
    let Some(model_dir) = model_dir() else { return };
    let hub = FakeHub::start(vec![hub_repo(&model_dir, None)])
        .await
        .expect("start the fake hub");
    let endpoint = hub.endpoint();
    let (_dir, home, project) = memory_home("");
    let project_arg = project.display().to_string();

    let indexed = loop_cli(&home, &endpoint, &["memory", "reindex", &project_arg]);
    assert!(
        indexed.status.success(),
        "reindex with the download failed: {}{}\nhub saw: {:#?}",
        stderr(&indexed),
        stdout(&indexed),
        hub.requests()
    );
    assert!(
        stdout(&indexed).contains("3 files, 3 chunks: 3 embedded"),
        "{}",
        stdout(&indexed)
    );
    assert!(
        stderr(&indexed).contains(&format!(
            "Downloading the embedding model {HUB_REPO} from {endpoint}"
        )),
        "the CLI says what it downloads: {}",
        stderr(&indexed)
    );

    // Every file came from the hub's resolve URL; the ONNX file (LFS) through the storage
    // redirect, in ranges.
    let requests = hub.requests();
    for file in HUB_FILES {
        let path = format!("/{HUB_REPO}/resolve/main/{file}");
        assert!(
            requests.iter().any(|r| r.path == path && r.status < 400),
            "{path} fetched: {requests:#?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/lfs/") && r.status == 206),
        "the ONNX file came from storage: {requests:#?}"
    );
    // Into loop's cache, in the hub cache layout.
    let cached = home
        .join(".loop/models")
        .join(format!("models--{}", HUB_REPO.replace('/', "--")));
    let commit = std::fs::read_to_string(cached.join("refs/main")).expect("refs/main");
    assert_eq!(commit.trim(), hub_repo(&model_dir, None).commit());
    for file in HUB_FILES {
        let got = std::fs::read(cached.join("snapshots").join(commit.trim()).join(file))
            .unwrap_or_else(|err| panic!("{file} cached: {err}"));
        let want = std::fs::read(Path::new(&model_dir).join(file)).expect("model file");
        assert!(got == want, "{file} cached intact");
    }

    assert_release_doc_ranks_first(&home, &endpoint, &project);

    // Offline: the hub is gone, the cache is enough.
    let seen = hub.requests().len();
    hub.stop().await;
    assert_release_doc_ranks_first(&home, &endpoint, &project);
    let again = loop_cli(&home, &endpoint, &["memory", "reindex", &project_arg]);
    assert!(
        again.status.success() && stdout(&again).contains("0 embedded, 3 unchanged"),
        "offline reindex: {}{}",
        stderr(&again),
        stdout(&again)
    );
    assert!(
        !stderr(&again).contains("Downloading"),
        "nothing to download: {}",
        stderr(&again)
    );
    assert!(seen > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hub_is_a_clear_error_and_changes_nothing() {
    let Some(model_dir) = model_dir() else { return };
    // Memories indexed with the local model first, so that there is something to keep.
    let (_dir, home, project) = memory_home(&format!(r#", "model_dir": "{model_dir}""#));
    let project_arg = project.display().to_string();
    let indexed = loop_cli(
        &home,
        "http://127.0.0.1:9",
        &["memory", "reindex", &project_arg],
    );
    assert!(
        indexed.status.success() && stdout(&indexed).contains("3 embedded"),
        "reindex with model_dir: {}{}",
        stderr(&indexed),
        stdout(&indexed)
    );
    let list = |endpoint: &str| stdout(&loop_cli(&home, endpoint, &["memory", "list"]));
    let before = list("http://127.0.0.1:9");
    assert!(before.contains("Thursday"), "{before}");

    // Now without model_dir, and a change that a reindex would embed.
    write_memory_config(&home, "");
    std::fs::write(
        project.join("README.md"),
        "# Releases\n\nReleases ship every Friday now.\n",
    )
    .expect("readme");
    let cache = home.join(".loop/models");

    // A hub whose repository lacks the ONNX file (404 EntryNotFound), one that fails every
    // request (500), and no hub at all (connection refused).
    let missing = FakeHub::start(vec![hub_repo(&model_dir, Some("model.onnx"))])
        .await
        .expect("start the fake hub");
    let broken = FakeHub::start(vec![hub_repo(&model_dir, None)])
        .await
        .expect("start the fake hub");
    broken.fail_with(Some(500));
    // A bound port nobody listens on: connections are refused, and no other test can take it.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind");
    let closed_endpoint = format!("http://{}", closed.local_addr().expect("address"));

    for (endpoint, why) in [
        (missing.endpoint(), "404"),
        (broken.endpoint(), "500"),
        (closed_endpoint, "refused"),
    ] {
        let failed = loop_cli(&home, &endpoint, &["memory", "reindex", &project_arg]);
        let error = stderr(&failed);
        assert!(!failed.status.success(), "{why}: {}", stdout(&failed));
        for needle in [
            format!("cannot download the embedding model {HUB_REPO} from {endpoint}"),
            "model.onnx".to_owned(),
            why.to_owned(),
            "set memory.model_dir".to_owned(),
        ] {
            assert!(error.contains(&needle), "{why}: `{needle}` in: {error}");
        }
        assert_eq!(list(&endpoint), before, "{why}: the memories are unchanged");
        let snapshots = cache
            .join(format!("models--{}", HUB_REPO.replace('/', "--")))
            .join("snapshots");
        assert!(!snapshots.exists(), "{why}: nothing was cached");
    }
    assert!(
        missing
            .requests()
            .iter()
            .any(|r| r.status == 404 && r.path.ends_with("/model.onnx")),
        "{:#?}",
        missing.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_go_loop_ollama_provider_embeds_through_an_ollama_server() {
    let Some(model_dir) = model_dir() else { return };
    // A faithful Ollama whose vectors come from the real model: rankings mean something.
    let model = std::sync::Arc::new(
        loop_daemon::memory::embed::FastEmbedder::load(Path::new(&model_dir), Some(1))
            .expect("load the model"),
    );
    let embed: loop_fakes::ollama::EmbedFn = std::sync::Arc::new(move |texts: &[String]| {
        use loop_daemon::memory::embed::Embedder;
        model.embed(texts).expect("embed")
    });
    let ollama = loop_fakes::ollama::FakeOllama::start("nomic-embed-text", embed)
        .await
        .expect("fake ollama");
    let settings = |model: &str| {
        format!(
            r#", "embeddings": {{"provider": "ollama", "ollama_url": "{}", "model": "{model}"}}"#,
            ollama.url()
        )
    };
    let (_dir, home, project) = memory_home(&settings("nomic-embed-text"));
    // No hub is involved: an unreachable HF_ENDPOINT proves nothing is downloaded.
    let no_hub = "http://127.0.0.1:9";
    let indexed = loop_cli(
        &home,
        no_hub,
        &["memory", "reindex", &project.display().to_string()],
    );
    assert!(
        indexed.status.success() && stdout(&indexed).contains("3 embedded"),
        "{}{}",
        stderr(&indexed),
        stdout(&indexed)
    );
    assert!(
        !stderr(&indexed).contains("Downloading"),
        "{}",
        stderr(&indexed)
    );
    assert_release_doc_ranks_first(&home, no_hub, &project);
    assert!(
        ollama
            .requests()
            .iter()
            .all(|(model, _)| model == "nomic-embed-text"),
        "{:?}",
        ollama.requests()
    );
    // A model the server does not have: Ollama's own reason, and nothing changes.
    write_memory_config(&home, &settings("llama-embed-missing"));
    let before = stdout(&loop_cli(&home, no_hub, &["memory", "list"]));
    let search = loop_cli(&home, no_hub, &["memory", "search", "deploy"]);
    assert!(!search.status.success());
    assert!(
        stderr(&search).contains("not found, try pulling it first")
            && stderr(&search).contains("llama-embed-missing"),
        "{}",
        stderr(&search)
    );
    assert_eq!(
        stdout(&loop_cli(&home, no_hub, &["memory", "list"])),
        before
    );
    ollama.stop();
}
