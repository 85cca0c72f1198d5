//! Memory stories with the real embedding model (`LOOP_TEST_MODEL_DIR`, `ORT_DYLIB_PATH`: see
//! `.ci/fetch-model.sh`) on SQLite and PostgreSQL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::*;
use loop_store::test_support::{TestDb, skip_unavailable};

/// The real model, loaded once per test binary; None when the developer opted out.
fn real_model() -> Option<Arc<FastEmbedder>> {
    static MODEL: OnceLock<Option<Arc<FastEmbedder>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let (Ok(dir), Ok(_)) = (
                std::env::var("LOOP_TEST_MODEL_DIR"),
                std::env::var("ORT_DYLIB_PATH"),
            ) else {
                assert!(
                    skip_unavailable(),
                    "LOOP_TEST_MODEL_DIR and ORT_DYLIB_PATH must be set for the memory tests: run `eval \"$(bash .ci/fetch-model.sh)\"; export LOOP_TEST_MODEL_DIR ORT_DYLIB_PATH`, or set LOOP_TEST_SKIP_UNAVAILABLE=1 to skip them"
                );
                eprintln!("skipping: LOOP_TEST_MODEL_DIR / ORT_DYLIB_PATH not set");
                return None;
            };
            let model = FastEmbedder::load(std::path::Path::new(&dir), Some(1))
                .expect("load the test embedding model");
            Some(Arc::new(model))
        })
        .clone()
}

/// Counts the texts it embeds, to prove a re-index skips unchanged chunks.
struct Counting {
    inner: Arc<FastEmbedder>,
    texts: AtomicUsize,
}

impl Embedder for Counting {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts)
    }

    fn model_id(&self) -> String {
        self.inner.model_id()
    }
}

fn config(max_chunk_chars: usize) -> MemoryConfig {
    MemoryConfig {
        enabled: true,
        paths: vec![],
        max_chunk_chars,
        ..MemoryConfig::default()
    }
}

#[tokio::test]
async fn related_memory_ranks_above_unrelated_ones() {
    let Some(model) = real_model() else { return };
    for db in TestDb::all().await {
        let memory = Memory::new(db.store().clone(), model.clone(), &config(2000));
        let channel = MemoryScope::Channel("local:general".to_owned());
        for text in [
            "My favourite pizza topping is mushroom with extra cheese.",
            "To deploy the service to production, run scripts/deploy.sh with the AWS credentials.",
            "The cat sleeps on the sofa all afternoon.",
            "Quarterly revenue grew eight percent compared with last year.",
        ] {
            memory
                .save(channel.clone(), SOURCE_AGENT, None, text)
                .await
                .expect("save");
        }
        let hits = memory
            .search(
                std::slice::from_ref(&channel),
                "how do I ship a release to prod?",
                3,
            )
            .await
            .expect("search");
        assert_eq!(hits.len(), 3, "{}", db.backend());
        assert!(
            hits[0].memory.content.contains("deploy.sh"),
            "{}: {hits:#?}",
            db.backend()
        );
        assert!(hits[0].score > hits[1].score + 0.1, "{hits:#?}");
        assert!(hits[0].score <= 1.0001 && hits[0].score > 0.2, "{hits:#?}");

        let pets = memory
            .search(
                std::slice::from_ref(&channel),
                "where does my kitten nap?",
                1,
            )
            .await
            .expect("search");
        assert!(pets[0].memory.content.contains("cat"), "{pets:#?}");

        // Scopes: another channel sees none of it; forgetting removes it.
        let other = MemoryScope::Channel("local:other".to_owned());
        assert!(
            memory
                .search(std::slice::from_ref(&other), "deploy", 5)
                .await
                .expect("search")
                .is_empty()
        );
        let id = hits[0].memory.id.clone();
        assert!(
            !memory
                .forget(&id, &[other])
                .await
                .expect("forget elsewhere")
        );
        assert!(
            memory
                .forget(&id, std::slice::from_ref(&channel))
                .await
                .expect("forget")
        );
        let after = memory
            .search(&[channel], "how do I ship a release to prod?", 3)
            .await
            .expect("search");
        assert!(after.iter().all(|h| h.memory.id != id));
    }
}

#[tokio::test]
async fn turns_are_indexed_with_prompt_and_answer() {
    let Some(model) = real_model() else { return };
    let db = TestDb::sqlite().await;
    let memory = Memory::new(db.store().clone(), model, &config(2000));
    memory
        .index_turn(
            "local:dev",
            "run-1",
            "which port does the staging database listen on?",
            "Staging Postgres listens on port 6543.",
        )
        .await
        .expect("index turn");
    memory
        .index_turn(
            "local:dev",
            "run-2",
            "write a haiku about autumn",
            "Leaves fall…",
        )
        .await
        .expect("index turn");
    let hits = memory
        .search(
            &[MemoryScope::Channel("local:dev".to_owned())],
            "staging db port",
            2,
        )
        .await
        .expect("search");
    assert_eq!(hits[0].memory.source, SOURCE_TURN);
    assert_eq!(hits[0].memory.source_ref.as_deref(), Some("run-1"));
    assert!(hits[0].memory.content.contains("6543"));
}

#[tokio::test]
async fn reindex_embeds_only_changed_chunks() {
    let Some(model) = real_model() else { return };
    for db in TestDb::all().await {
        let project = tempfile::tempdir().expect("temp project");
        let root = project.path();
        std::fs::create_dir_all(root.join("docs/deep")).expect("docs dir");
        std::fs::write(
            root.join("README.md"),
            "# Overview\n\nA chat bot that runs agents.\n\n# Install\n\nRun cargo install.\n",
        )
        .expect("readme");
        std::fs::write(
            root.join("CLAUDE.md"),
            "Always run the tests before committing.\n",
        )
        .expect("claude");
        std::fs::write(
            root.join("docs/deep/ops.md"),
            "# Backups\n\nBackups run nightly at 02:00 to the S3 bucket.\n",
        )
        .expect("ops");
        std::fs::write(root.join("notes.txt"), "not markdown").expect("txt");

        let counting = Arc::new(Counting {
            inner: model.clone(),
            texts: AtomicUsize::new(0),
        });
        let memory = Memory::new(db.store().clone(), counting.clone(), &config(500));
        let first = memory.reindex_docs(root).await.expect("first index");
        assert_eq!(first.files, 3, "{first:?}");
        assert_eq!(first.chunks, 4, "{first:?}");
        assert_eq!(first.embedded, 4);
        assert_eq!(counting.texts.load(Ordering::SeqCst), 4);

        let again = memory.reindex_docs(root).await.expect("second index");
        assert_eq!((again.embedded, again.unchanged, again.removed), (0, 4, 0));
        assert_eq!(
            counting.texts.load(Ordering::SeqCst),
            4,
            "nothing re-embedded"
        );

        std::fs::write(
            root.join("README.md"),
            "# Overview\n\nA chat bot that runs agents.\n\n# Install\n\nUse the Debian package.\n",
        )
        .expect("readme changed");
        std::fs::remove_file(root.join("CLAUDE.md")).expect("remove claude");
        let changed = memory.reindex_docs(root).await.expect("third index");
        assert_eq!(
            (changed.embedded, changed.unchanged, changed.removed),
            (1, 2, 2),
            "{changed:?}"
        );
        assert_eq!(counting.texts.load(Ordering::SeqCst), 5);

        let scope = MemoryScope::Project(root.display().to_string());
        let hits = memory
            .search(std::slice::from_ref(&scope), "when are backups taken?", 1)
            .await
            .expect("search docs");
        assert_eq!(hits[0].memory.source, SOURCE_DOC);
        assert_eq!(
            hits[0].memory.source_ref.as_deref(),
            Some("docs/deep/ops.md#0")
        );
        // Counting: the search query itself.
        assert_eq!(counting.texts.load(Ordering::SeqCst), 6);

        // A hostile project links its docs to a file of loop's: the link is skipped, never
        // followed, so the secret never reaches the memory the agent can search.
        let secret = project
            .path()
            .parent()
            .expect("tmp")
            .join(format!("loop-secret-{}.json", std::process::id()));
        std::fs::write(
            &secret,
            "# Tokens\n\nSLACK_BOT_TOKEN=xoxb-hostile-test-token\n",
        )
        .expect("secret");
        std::os::unix::fs::symlink(&secret, root.join("README-tokens.md")).expect("symlink");
        std::os::unix::fs::symlink(&secret, root.join("docs/tokens.md")).expect("symlink");
        std::os::unix::fs::symlink(secret.parent().expect("tmp"), root.join("docs/up"))
            .expect("dir symlink");
        let hostile = memory.reindex_docs(root).await.expect("hostile index");
        let _ = std::fs::remove_file(&secret);
        assert_eq!(hostile.skipped, 1, "{hostile:?}");
        let all = db
            .store()
            .memory_list(std::slice::from_ref(&scope), None, 1000)
            .await
            .expect("list");
        assert!(
            !all.iter()
                .any(|m| m.content.contains("xoxb-hostile-test-token")),
            "a symlinked doc was indexed"
        );
    }
}

#[tokio::test]
async fn vectors_of_another_model_are_never_compared_and_are_embedded_again() {
    let Some(model) = real_model() else { return };
    for db in TestDb::all().await {
        let store = db.store().clone();
        let channel = MemoryScope::Channel("local:models".to_owned());
        // Stored by another model (its vector is garbage for this one).
        store
            .memory_insert(loop_store::NewMemory {
                scope: channel.clone(),
                source: SOURCE_AGENT.to_owned(),
                source_ref: None,
                content: "The staging database password rotates every Monday.".to_owned(),
                content_hash: "h".to_owned(),
                embedding: vec![1.0; 768],
                embedding_model: "ollama:nomic-embed-text".to_owned(),
            })
            .await
            .expect("insert");
        let memory = Memory::new(store, model.clone(), &config(2000));
        let search = || {
            memory.search(
                std::slice::from_ref(&channel),
                "when does the db password change?",
                3,
            )
        };
        assert!(
            search().await.expect("search").is_empty(),
            "{}",
            db.backend()
        );
        assert_eq!(memory.reembed_stale().await.expect("reembed"), 1);
        assert_eq!(
            memory.reembed_stale().await.expect("again"),
            0,
            "nothing left"
        );
        let hits = search().await.expect("search");
        assert_eq!(hits.len(), 1, "{}", db.backend());
        assert!(hits[0].score > 0.3, "{hits:#?}");
    }
}
