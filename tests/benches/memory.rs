//! Semantic memory: embedding throughput and top-10 search latency over 100k stored chunks.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/loop-ci/target
//! eval "$(bash .ci/fetch-model.sh)"; export LOOP_TEST_MODEL_DIR ORT_DYLIB_PATH
//! cargo bench -p loop-e2e --bench memory
//! ```
//!
//! The model is the real all-MiniLM-L6-v2 (int8 ONNX) from `LOOP_TEST_MODEL_DIR`. What it prints:
//! 1. embedding throughput in chunks/s, for ~600-character Markdown-like chunks in batches of
//!    32, with ONNX Runtime on one thread and on every core;
//! 2. top-10 search latency over `LOOP_BENCH_CHUNKS` (default 100,000) stored 384-dimension
//!    vectors: the brute-force scan loop uses (`VectorSet::top_k`) against a baseline in the
//!    same process (a plain iterator dot product and a full sort), and the whole
//!    `Memory::search` path (query embedding + cache check + scan) with the rows in SQLite.
//!    The stored vectors are real embeddings of 1,000 generated chunks, each copied with small
//!    noise (renormalised) up to the count: embedding 100k chunks would take minutes and the
//!    scan's cost does not depend on what the vectors say.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it only prints how to run it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use loop_daemon::config::MemoryConfig;
use loop_daemon::memory::search::{VectorSet, normalize};
use loop_daemon::memory::{Embedder, FastEmbedder, Memory};
use loop_store::{MemoryScope, NewMemory, Store};

const WORDS: &[&str] = &[
    "deploy",
    "database",
    "migration",
    "token",
    "container",
    "channel",
    "session",
    "budget",
    "schedule",
    "review",
    "release",
    "config",
    "docker",
    "image",
    "proxy",
    "gate",
    "approval",
    "memory",
    "search",
    "index",
    "thread",
    "slack",
    "prompt",
    "answer",
    "turn",
    "runner",
    "error",
    "retry",
    "timeout",
    "backup",
    "restore",
    "metrics",
    "latency",
    "throughput",
    "cache",
    "queue",
    "worker",
    "cluster",
    "network",
    "certificate",
    "secret",
    "rotate",
    "audit",
    "policy",
    "user",
    "team",
    "project",
    "readme",
    "install",
    "upgrade",
    "rollback",
    "feature",
    "flag",
    "test",
];

/// A deterministic pseudo-random Markdown-ish chunk of about `chars` characters.
fn chunk_text(seed: u64, chars: usize) -> String {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = format!("## Section {seed}\n\n");
    while text.len() < chars {
        let n = WORDS.len() as u64;
        for _ in 0..(6 + next() % 8) {
            text.push_str(WORDS[(next() % n) as usize]);
            text.push(' ');
        }
        text.push_str(". ");
    }
    text
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted latencies → (min, median, p95).
fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    (at(0.0), at(0.5), at(0.95))
}

/// The baseline: scalar dot products over row vectors and a full sort.
fn naive_top_k(rows: &[Vec<f32>], query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.iter().zip(query).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("memory: a benchmark; run it with `cargo bench -p loop-e2e --bench memory`");
        return Ok(());
    }
    let Ok(model_dir) = std::env::var("LOOP_TEST_MODEL_DIR") else {
        bail!(
            "LOOP_TEST_MODEL_DIR is not set: run `eval \"$(bash .ci/fetch-model.sh)\"; export LOOP_TEST_MODEL_DIR ORT_DYLIB_PATH` first"
        );
    };
    let stored = env_count("LOOP_BENCH_CHUNKS", 100_000)?;
    let queries = env_count("LOOP_BENCH_QUERIES", 200)?;
    let dir = std::path::Path::new(&model_dir);

    // 1. Embedding throughput.
    let texts: Vec<String> = (0..256).map(|i| chunk_text(i, 600)).collect();
    for (label, threads) in [("1 thread", Some(1)), ("all cores", None)] {
        let model = FastEmbedder::load(dir, threads).context("loading the model")?;
        model.embed(&texts[..32])?; // warm-up
        let started = Instant::now();
        let vectors = model.embed(&texts)?;
        let took = started.elapsed();
        println!(
            "embedding ({label}): {} chunks of ~600 chars in {:.2} s = {:.1} chunks/s (dim {})",
            vectors.len(),
            took.as_secs_f64(),
            vectors.len() as f64 / took.as_secs_f64(),
            vectors[0].len()
        );
    }

    // 2. Search latency.
    let model: Arc<FastEmbedder> = Arc::new(FastEmbedder::load(dir, None)?);
    let base_texts: Vec<String> = (0..1000).map(|i| chunk_text(10_000 + i, 400)).collect();
    let base = model.embed(&base_texts)?;
    let dim = base[0].len();
    let mut noise_state = 0x9e3779b97f4a7c15u64;
    let mut noise = move || {
        noise_state ^= noise_state << 13;
        noise_state ^= noise_state >> 7;
        noise_state ^= noise_state << 17;
        ((noise_state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
    };
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(stored);
    for i in 0..stored {
        let mut v: Vec<f32> = base[i % base.len()].iter().map(|x| x + noise()).collect();
        normalize(&mut v);
        rows.push(v);
    }
    let mut set = VectorSet::with_capacity(dim, stored);
    for row in &rows {
        set.push(row);
    }
    let query_texts: Vec<String> = (0..queries)
        .map(|i| {
            format!(
                "how do I {} the {}?",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7 + 3) % WORDS.len()]
            )
        })
        .collect();
    let query_vectors = model.embed(&query_texts)?;

    let mut scan = Vec::new();
    let mut naive = Vec::new();
    for (round, q) in query_vectors.iter().enumerate() {
        // Alternate which runs first so neither always gets the warmer cache.
        let run_scan = |scan: &mut Vec<Duration>| {
            let t = Instant::now();
            let best = set.top_k(q, 10);
            scan.push(t.elapsed());
            best
        };
        let run_naive = |naive: &mut Vec<Duration>| {
            let t = Instant::now();
            let best = naive_top_k(&rows, q, 10);
            naive.push(t.elapsed());
            best
        };
        let (a, b) = if round % 2 == 0 {
            let a = run_scan(&mut scan);
            (a, run_naive(&mut naive))
        } else {
            let b = run_naive(&mut naive);
            (run_scan(&mut scan), b)
        };
        if a.first().map(|s| s.index) != b.first().map(|s| s.0) {
            bail!("the scan and the baseline disagree on the best row");
        }
    }
    let (smin, smed, sp95) = summary(scan);
    let (nmin, nmed, np95) = summary(naive);
    println!(
        "top-10 scan over {stored} x {dim}: min {smin:.2} ms, median {smed:.2} ms, p95 {sp95:.2} ms; baseline (iterator dot + full sort): median {nmed:.2} ms (min {nmin:.2}, p95 {np95:.2}); ratio {:.2}x",
        nmed / smed
    );

    // The whole path: rows in SQLite, `Memory::search` (embed the query, check the scope's
    // fingerprint, scan the cached vectors).
    let tmp = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("bench.db").display()
    );
    let store = Store::open(&url).await?;
    let scope = MemoryScope::Project("/bench".to_owned());
    let started = Instant::now();
    for (i, row) in rows.iter().enumerate() {
        store
            .memory_insert(NewMemory {
                scope: scope.clone(),
                source: "doc".to_owned(),
                source_ref: Some(format!("bench.md#{i}")),
                content: base_texts[i % base_texts.len()].clone(),
                content_hash: format!("{i:064x}"),
                embedding: row.clone(),
                embedding_model: model.model_id(),
            })
            .await?;
    }
    println!(
        "stored {stored} rows in SQLite in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let memory = Memory::new(store, model, &MemoryConfig::default());
    let started = Instant::now();
    memory
        .search(std::slice::from_ref(&scope), &query_texts[0], 10)
        .await?;
    println!(
        "first search (loads {stored} vectors from SQLite into the cache): {:.0} ms",
        ms(started.elapsed())
    );
    let mut full = Vec::new();
    for q in query_texts.iter().take(50) {
        let t = Instant::now();
        let hits = memory.search(std::slice::from_ref(&scope), q, 10).await?;
        full.push(t.elapsed());
        if hits.len() != 10 {
            bail!("expected 10 hits, got {}", hits.len());
        }
    }
    let mut embed_only = Vec::new();
    for q in query_texts.iter().take(50) {
        let t = Instant::now();
        memory.embed(vec![q.clone()]).await?;
        embed_only.push(t.elapsed());
    }
    let (_, emed, _) = summary(embed_only);
    println!("query embedding alone: median {emed:.2} ms");
    let (fmin, fmed, fp95) = summary(full);
    println!(
        "Memory::search top-10, cache warm (query embedding + scan; the scope's fingerprint is re-read every 5 s): min {fmin:.2} ms, median {fmed:.2} ms, p95 {fp95:.2} ms"
    );
    Ok(())
}
