//! The cost of a loop turn against its floor, a raw `docker run --rm` of the same CLI turn.
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/loop-ci/target
//! cargo build --workspace --bins            # the `loop` binary the daemon fixture starts
//! cargo bench -p loop-e2e --bench turn
//! ```
//!
//! Everything is real except the model: the real dockerd, the agent image (`LOOP_TEST_IMAGE`,
//! default `loop-agent:latest`), the real Claude Code CLI inside it, and a real `loop serve`
//! process (`$LOOP_BIN`, else the workspace's debug build) started by the e2e `Daemon` fixture.
//! The model is `loop_fakes::model::FakeModel` answering every turn with one Bash tool call and
//! then a text answer, so each turn makes two model requests, as a short real turn would.
//!
//! What it prints, in one run:
//! 1. cold turns, interleaved: a raw `docker run --rm` of `claude --print` (through bollard, the
//!    way the docker CLI does it: create with AutoRemove, attach, wait for "removed", start) and
//!    a loop turn (POST `/api/local/messages` to a new channel, poll
//!    `GET /api/local/messages/{id}` every 10 ms until the run's answer is recorded); the rounds
//!    alternate which goes first so neither always runs on a warmer machine;
//! 2. new threads of a project used a moment ago, each on the spare agent loop keeps for the
//!    project, against a raw cold `docker run` in the same rounds;
//! 3. throughput with 20 channels: one message to each of 20 new channels at once (the daemon
//!    runs with `max_concurrent_runs: 20`, or `LOOP_BENCH_MAX_RUNS`; the default is 4) against
//!    20 raw turns in parallel;
//! 4. the daemon's RSS (`VmRSS` of the `loop serve` process) idle and, sampled every 100 ms,
//!    its peak under the 20-channel load.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it only prints how to run it.
//! Knobs: `LOOP_BENCH_ROUNDS` (cold rounds, default 7), `LOOP_BENCH_LOAD_ROUNDS` (20-channel
//! rounds per side, default 2), `LOOP_BENCH_CHANNELS` (channels at once, default 20),
//! `LOOP_BENCH_CONFIG` (more config fields for the daemon). If Docker or the image is missing it says why and exits
//! non-zero: a benchmark that skips silently measures nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use futures::future::join_all;
use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::measure::{median, ratio, secs};
use loop_e2e::support::test_image;
use loop_fakes::model::{FakeModel, Script};
use loop_store::{RunStatus, Store};
use loop_wire::api::{MessageAccepted, MessageState};
use tokio_util::sync::CancellationToken;

/// Channels (and raw containers) in the throughput measurement, unless
/// `LOOP_BENCH_CHANNELS` says.
const DEFAULT_CHANNELS: usize = 20;
/// The Bash command the scripted model asks for; its output is the turn's answer.
const COMMAND: &str = "echo bench-ok";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run should not spend minutes measuring.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("turn: a benchmark; run it with `cargo bench -p loop-e2e --bench turn`");
        return Ok(());
    }
    let rounds = env_count("LOOP_BENCH_ROUNDS", 7)?;
    let load_rounds = env_count("LOOP_BENCH_LOAD_ROUNDS", 2)?;
    let channels = env_count("LOOP_BENCH_CHANNELS", DEFAULT_CHANNELS)?;
    // How many of them loop runs at once (`max_concurrent_runs`); the rest wait their turn.
    let max_runs = env_count("LOOP_BENCH_MAX_RUNS", channels)?;
    let image = test_image();
    let docker = preflight(&image).await?;
    let bench_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let _cleanup = RawCleanup(bench_id.clone());

    let model = FakeModel::start_on(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        Script::bash_then_report(COMMAND),
    )
    .await
    .context("starting the fake model")?;
    let raw = RawTurns {
        docker,
        image: image.clone(),
        model_port: model.port(),
        label: bench_id,
    };

    let dir = tempfile::tempdir().context("temp dir")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    // `LOOP_BENCH_CONFIG`: more top-level config fields, to measure what one setting costs
    // (e.g. `"gates": {"agentgate": {"enabled": false}}`).
    let extra = std::env::var("LOOP_BENCH_CONFIG").unwrap_or_default();
    let config = test_config(
        model.port(),
        dir.path(),
        &format!(
            "\"max_concurrent_runs\": {max_runs}{}{extra}",
            if extra.is_empty() { "" } else { ",\n  " }
        ),
    );
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    let api = Api {
        http: reqwest::Client::new(),
        token: daemon.token(),
        messages_url: daemon.url("/api/local/messages"),
    };
    let pid = daemon.pid().context("the daemon has no pid")?;
    let store = daemon.store().await;

    println!("loop turn benchmark");
    println!(
        "  machine: {} cpus; image {image}; daemon {} (pid {pid}); model: fake, 2 requests a turn (Bash, then text)",
        std::thread::available_parallelism().map_or(0, usize::from),
        loop_binary().display(),
    );
    println!(
        "  daemon config: max_concurrent_runs {max_runs} (default 4), container_keep_alive_sec 0"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_start = median_rss(pid).await?;

    // Warm-up: the first container after an image build or a quiet spell pays for a cold page
    // cache; neither side should be charged for it.
    let warm_raw = raw
        .turn("bench warm-up")
        .await
        .context("raw warm-up turn")?;
    let warm_loop = api
        .turn("warmup", "bench warm-up")
        .await
        .with_context(|| format!("loop warm-up turn\n{}", log_tail(&daemon)))?;
    println!(
        "  warm-up (not counted): raw {}, loop {}",
        secs(warm_raw.total),
        secs(warm_loop)
    );

    println!();
    println!("cold turns, interleaved ({rounds} rounds)");
    println!(
        "  {:>5}  {:<9}  {:>14}  {:>14}  {:>10}  {:>10}",
        "round", "order", "raw docker run", "(result line)", "loop turn", "loop / raw"
    );
    let mut raw_totals = Vec::new();
    let mut raw_results = Vec::new();
    let mut loop_totals = Vec::new();
    // Each round's loop/raw ratio: the pair ran back to back, so the machine's drift between
    // rounds cancels out of it.
    let mut paired = Vec::new();
    // Where each side's time goes: before the CLI's first model request (container, CLI
    // start, and for loop everything it does before), and after its last (the answer's way
    // back). The model's part in between is the same script on both sides.
    let mut raw_before = Vec::new();
    let mut raw_after = Vec::new();
    let mut loop_before = Vec::new();
    let mut loop_after = Vec::new();
    let around_model = |started: Instant, took: Duration| -> Option<(Duration, Duration)> {
        let ended = started + took;
        let times: Vec<Instant> = model
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/v1/messages") && r.at >= started && r.at <= ended)
            .map(|r| r.at)
            .collect();
        let (first, last) = (times.iter().min()?, times.iter().max()?);
        Some((first.duration_since(started), ended.duration_since(*last)))
    };
    for round in 1..=rounds {
        let prompt = format!("bench cold turn {round}");
        let raw_first = round % 2 == 1;
        let (raw_turn, raw_started, loop_turn, loop_started) = if raw_first {
            let raw_started = Instant::now();
            let r = raw.turn(&prompt).await?;
            let loop_started = Instant::now();
            let l = api.turn(&format!("cold-{round}"), &prompt).await;
            (r, raw_started, l, loop_started)
        } else {
            let loop_started = Instant::now();
            let l = api.turn(&format!("cold-{round}"), &prompt).await;
            let raw_started = Instant::now();
            let r = raw.turn(&prompt).await?;
            (r, raw_started, l, loop_started)
        };
        let loop_turn = loop_turn.with_context(|| log_tail(&daemon))?;
        if let (Some(raw_split), Some(loop_split)) = (
            around_model(raw_started, raw_turn.total),
            around_model(loop_started, loop_turn),
        ) {
            raw_before.push(raw_split.0);
            raw_after.push(raw_split.1);
            loop_before.push(loop_split.0);
            loop_after.push(loop_split.1);
        }
        println!(
            "  {round:>5}  {:<9}  {:>14}  {:>14}  {:>10}  {:>9.2}×",
            if raw_first {
                "raw→loop"
            } else {
                "loop→raw"
            },
            secs(raw_turn.total),
            secs(raw_turn.result),
            secs(loop_turn),
            ratio(loop_turn, raw_turn.total),
        );
        raw_totals.push(raw_turn.total);
        raw_results.push(raw_turn.result);
        loop_totals.push(loop_turn);
        paired.push(ratio(loop_turn, raw_turn.total));
    }
    let raw_median = median(&raw_totals);
    let raw_result_median = median(&raw_results);
    let loop_median = median(&loop_totals);
    if !loop_before.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "  medians before the first model request: raw {:.0} ms, loop {:.0} ms ({:+.0} ms); after the last: raw {:.0} ms, loop {:.0} ms ({:+.0} ms)",
            ms(median(&raw_before)),
            ms(median(&loop_before)),
            ms(median(&loop_before)) - ms(median(&raw_before)),
            ms(median(&raw_after)),
            ms(median(&loop_after)),
            ms(median(&loop_after)) - ms(median(&raw_after)),
        );
    }
    println!(
        "  {:>5}  {:<9}  {:>14}  {:>14}  {:>10}  {:>9.2}×",
        "med",
        "",
        secs(raw_median),
        secs(raw_result_median),
        secs(loop_median),
        ratio(loop_median, raw_median),
    );

    // Warm follow-ups: the thread of round 1 kept its container and `claude` process.
    println!();
    println!("warm follow-ups in one thread ({rounds} turns, same scripted turn)");
    println!("  {:>5}  {:>10}  {:>14}", "turn", "loop turn", "/ raw cold");
    let mut warm_totals = Vec::new();
    let mut warm_split = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let turn = api
            .turn("cold-1", &format!("bench follow-up {round}"))
            .await
            .with_context(|| log_tail(&daemon))?;
        warm_split.extend(around_model(started, turn));
        println!(
            "  {round:>5}  {:>10}  {:>13.2}×",
            secs(turn),
            ratio(turn, raw_median)
        );
        warm_totals.push(turn);
    }
    let warm_median = median(&warm_totals);
    let warm_memory = warm_agent_memory(&api, &daemon).await?;

    // New threads of a project used a moment ago: each takes the spare agent loop started
    // for the project after its last turn. Each round waits for the spare, and 3 s more for
    // its CLI to finish starting, before the loop turn; and the same for its replacement
    // before the raw one, so neither side shares the machine with a spare's start.
    println!();
    println!("new threads of a recently used project (spare agents; {rounds} rounds)");
    println!(
        "  {:>5}  {:>14}  {:>10}  {:>10}",
        "round", "raw docker run", "new thread", "/ raw"
    );
    let project = dir.path().join("spare-project");
    std::fs::create_dir_all(&project)?;
    api.turn_in("spare-0", "bench spare warm-up", Some(&project))
        .await
        .with_context(|| log_tail(&daemon))?;
    let mut spare_raw = Vec::new();
    let mut spare_totals = Vec::new();
    let mut spare_paired = Vec::new();
    let mut spare_split = Vec::new();
    for round in 1..=rounds {
        wait_for_spare(&api, &daemon, &project).await?;
        let started = Instant::now();
        let turn = api
            .turn_in(
                &format!("spare-{round}"),
                &format!("bench new thread {round}"),
                Some(&project),
            )
            .await
            .with_context(|| log_tail(&daemon))?;
        spare_split.extend(around_model(started, turn));
        wait_for_spare(&api, &daemon, &project).await?;
        let raw_turn = raw.turn(&format!("bench new thread {round}")).await?;
        println!(
            "  {round:>5}  {:>14}  {:>10}  {:>9.2}×",
            secs(raw_turn.total),
            secs(turn),
            ratio(turn, raw_turn.total)
        );
        spare_raw.push(raw_turn.total);
        spare_totals.push(turn);
        spare_paired.push(ratio(turn, raw_turn.total));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let split = |pairs: &[(Duration, Duration)]| {
        let before: Vec<Duration> = pairs.iter().map(|p| p.0).collect();
        let after: Vec<Duration> = pairs.iter().map(|p| p.1).collect();
        (ms(median(&before)), ms(median(&after)))
    };
    let (warm_before, warm_after) = split(&warm_split);
    let (spare_before, spare_after) = split(&spare_split);
    println!(
        "  medians before the first model request: new thread {spare_before:.0} ms, warm follow-up {warm_before:.0} ms; after the last: new thread {spare_after:.0} ms, warm follow-up {warm_after:.0} ms"
    );
    let spare_median = median(&spare_totals);
    let spare_raw_median = median(&spare_raw);
    spare_paired.sort_by(f64::total_cmp);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_before_load = median_rss(pid).await?;

    println!();
    println!(
        "throughput, {channels} channels at once ({load_rounds} rounds per side, interleaved)"
    );
    println!(
        "  {:>5}  {:<16}  {:>10}  {:>10}  {:>14}",
        "round", "side", "all done", "turns/s", "daemon peak RSS"
    );
    let mut raw_loads = Vec::new();
    let mut loop_loads = Vec::new();
    let mut rss_peak = 0;
    let mut load_failures = Vec::new();
    let mut raw_latencies = Vec::new();
    let mut loop_latencies = Vec::new();
    for round in 1..=load_rounds {
        let (raw_load, raw_answered) = raw.parallel(round, channels).await?;
        raw_latencies.extend(raw_answered);
        println!(
            "  {round:>5}  {:<16}  {:>10}  {:>10.2}  {:>14}",
            format!("raw ×{channels}"),
            secs(raw_load),
            per_second(channels, raw_load),
            "",
        );
        raw_loads.push(raw_load);

        let sampler = RssSampler::start(pid);
        let loop_load = api
            .parallel(&store, round, channels)
            .await
            .with_context(|| log_tail(&daemon));
        let peak = sampler.stop().await;
        let (loop_load, loop_answered, failed) = loop_load?;
        loop_latencies.extend(loop_answered);
        rss_peak = rss_peak.max(peak);
        println!(
            "  {round:>5}  {:<16}  {:>10}  {:>10.2}  {:>14}{}",
            format!("loop {channels} channels"),
            secs(loop_load),
            per_second(channels, loop_load),
            mib(peak),
            if failed.is_empty() {
                String::new()
            } else {
                format!("  ({} FAILED)", failed.len())
            },
        );
        load_failures.extend(failed);
        loop_loads.push(loop_load);
    }
    let raw_load_median = median(&raw_loads);
    let loop_load_median = median(&loop_loads);
    let rss_hwm = proc_status_kb(pid, "VmHWM:")?;
    let rss_after = median_rss(pid).await?;

    let raw_tps = per_second(channels, raw_load_median);
    let loop_tps = per_second(channels, loop_load_median);
    println!();
    println!("summary");
    println!(
        "  loop cold turn / raw docker run = {:.2}×  (loop median {}, raw median {}; {rounds} interleaved rounds)",
        ratio(loop_median, raw_median),
        secs(loop_median),
        secs(raw_median),
    );
    println!(
        "  loop warm follow-up / raw docker run = {:.2}×  (goal ≤ 0.20×; warm median {}, raw cold median {})",
        ratio(warm_median, raw_median),
        secs(warm_median),
        secs(raw_median),
    );
    println!(
        "  new thread of a recent project (spare agent) / raw docker run = {:.2}×  (goal ≤ 0.20×; median {}, raw median {} in the same rounds; paired {:.2}×–{:.2}×)",
        ratio(spare_median, spare_raw_median),
        secs(spare_median),
        secs(spare_raw_median),
        spare_paired[0],
        spare_paired[spare_paired.len() - 1],
    );
    println!(
        "  idle warm agent memory = {}  (median over the warm agents `loop status` reports)",
        warm_memory.map_or_else(|| "not reported".to_owned(), mib),
    );
    paired.sort_by(f64::total_cmp);
    println!(
        "  median of the paired per-round ratios = {:.2}×  (range {:.2}×–{:.2}×)",
        paired[paired.len() / 2],
        paired[0],
        paired[paired.len() - 1],
    );
    println!(
        "  loop overhead per cold turn     = {:+.0} ms  (raw median to its result line: {})",
        (loop_median.as_secs_f64() - raw_median.as_secs_f64()) * 1000.0,
        secs(raw_result_median),
    );
    println!(
        "  {channels} channels: loop {loop_tps:.2} turns/s (median {}), raw parallel docker run {raw_tps:.2} turns/s (median {})",
        secs(loop_load_median),
        secs(raw_load_median),
    );
    println!(
        "  loop throughput / raw throughput = {:.2}×  (max_concurrent_runs {max_runs})",
        loop_tps / raw_tps,
    );
    println!(
        "  time to answer under load (from the common start): loop p50 {} p95 {}, raw p50 {} p95 {}  (loop measured every 100 ms)",
        secs(percentile(&loop_latencies, 50)),
        secs(percentile(&loop_latencies, 95)),
        secs(percentile(&raw_latencies, 50)),
        secs(percentile(&raw_latencies, 95)),
    );
    println!(
        "  daemon RSS: idle {} at start, {} before the load, peak {} under {channels}-channel load (100 ms samples; VmHWM {}), {} after",
        mib(rss_idle_start),
        mib(rss_idle_before_load),
        mib(rss_peak),
        mib(rss_hwm),
        mib(rss_after),
    );

    if !load_failures.is_empty() {
        println!();
        println!(
            "  WARNING: {} loop turns under load failed (counted as done when they failed):",
            load_failures.len()
        );
        for failure in &load_failures {
            println!("    {failure}");
        }
        println!("--- daemon log (tail) ---\n{}", log_tail(&daemon));
    }
    drop(daemon);
    model.shutdown().await;
    if !load_failures.is_empty() {
        bail!("{} loop turns failed under load", load_failures.len());
    }
    Ok(())
}

/// How long a spare's CLI is given to start once its container is up (the daemon does not
/// see the CLI become ready).
const SPARE_SETTLE: Duration = Duration::from_secs(3);

/// Waits until `loop status` shows a spare agent for `project`, then [`SPARE_SETTLE`].
async fn wait_for_spare(api: &Api, daemon: &Daemon, project: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let project = project.display().to_string();
    loop {
        let status: serde_json::Value = api
            .http
            .get(daemon.url("/api/status"))
            .bearer_auth(&api.token)
            .send()
            .await?
            .json()
            .await?;
        let ready = status["warm"].as_array().is_some_and(|warm| {
            warm.iter()
                .any(|a| a["spare"] == true && a["work_dir"].as_str() == Some(project.as_str()))
        });
        if ready {
            tokio::time::sleep(SPARE_SETTLE).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "no spare agent for {project}: {status}\n{}",
                log_tail(daemon)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines of the daemon's log, for errors.
/// Median memory (KiB) of the idle warm agents the daemon reports.
async fn warm_agent_memory(api: &Api, daemon: &Daemon) -> Result<Option<u64>> {
    let status: serde_json::Value = api
        .http
        .get(daemon.url("/api/status"))
        .bearer_auth(&api.token)
        .send()
        .await
        .context("GET /api/status")?
        .json()
        .await
        .context("status JSON")?;
    let mut kib: Vec<u64> = status["warm"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a["memory_bytes"].as_u64())
                .map(|b| b / 1024)
                .collect()
        })
        .unwrap_or_default();
    kib.sort_unstable();
    Ok(kib.get(kib.len() / 2).copied())
}

fn log_tail(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Docker reachable and the image present, or an error saying which is missing.
async fn preflight(image: &str) -> Result<Docker> {
    let docker = loop_runner::docker::connect()
        .await
        .context("Docker is required for this benchmark (start dockerd; .ci/run does)")?;
    let exists = loop_runner::docker::image_exists(&docker, image)
        .await
        .with_context(|| format!("cannot inspect image {image}"))?;
    if !exists {
        bail!(
            "agent image {image} is missing: run `loop image build`, or set LOOP_TEST_IMAGE to a built image"
        );
    }
    Ok(docker)
}

/// Raw turns: the image run the way `docker run --rm` runs it, with nothing of loop around it.
struct RawTurns {
    docker: Docker,
    image: String,
    model_port: u16,
    /// A `loop-bench` label value, so leftovers of a failed run can be removed.
    label: String,
}

/// One raw turn's times.
struct RawTiming {
    /// Until `docker run --rm` would return: the container exited and was removed.
    total: Duration,
    /// Until the CLI printed its `result` line.
    result: Duration,
}

impl RawTurns {
    /// One `docker run --rm IMAGE claude --print ... PROMPT`, timed from create to removed.
    async fn turn(&self, prompt: &str) -> Result<RawTiming> {
        let started = Instant::now();
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(
                [
                    "claude",
                    "--print",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--dangerously-skip-permissions",
                    prompt,
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            env: Some(vec![
                "HOST_USER=bench".to_owned(),
                "HOST_UID=1000".to_owned(),
                "HOST_GID=1000".to_owned(),
                "HOME=/home/bench".to_owned(),
                format!(
                    "ANTHROPIC_BASE_URL=http://host.docker.internal:{}",
                    self.model_port
                ),
                "ANTHROPIC_API_KEY=sk-test-not-a-real-key".to_owned(),
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1".to_owned(),
            ]),
            labels: Some(HashMap::from([(
                "loop-bench".to_owned(),
                self.label.clone(),
            )])),
            tty: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                auto_remove: Some(true),
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .context("create_container")?
            .id;
        let attached = self
            .docker
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stream: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            )
            .await
            .context("attach_container")?;
        // Like the docker CLI: ask to be told when the container is removed before starting it.
        let waiter = {
            let docker = self.docker.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut wait = docker.wait_container(
                    &id,
                    Some(WaitContainerOptions {
                        condition: "removed".to_owned(),
                    }),
                );
                match wait.next().await {
                    Some(Ok(response)) => Ok(response.status_code),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => Ok(code),
                    // Gone before the wait request arrived: removed, which is what we wait for.
                    Some(Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }))
                    | None => Ok(0),
                    Some(Err(err)) => Err(err),
                }
            })
        };
        self.docker
            .start_container(&id, None)
            .await
            .context("start_container")?;

        let mut output = attached.output;
        let mut pending = Vec::new();
        let mut stderr = Vec::new();
        let mut result: Option<(Duration, serde_json::Value)> = None;
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    pending.extend_from_slice(&message);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&line)
                            && value["type"] == "result"
                        {
                            result = Some((started.elapsed(), value));
                        }
                    }
                }
                Ok(LogOutput::StdErr { message }) => stderr.extend_from_slice(&message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let code = waiter
            .await
            .context("wait task")?
            .context("wait_container")?;
        let total = started.elapsed();
        let Some((result_at, value)) = result else {
            bail!(
                "raw turn printed no result line (exit {code}): {}",
                String::from_utf8_lossy(&stderr)
            );
        };
        if value["is_error"] != false || value["result"] != "bench-ok" {
            bail!("raw turn failed (exit {code}): {value}");
        }
        Ok(RawTiming {
            total,
            result: result_at,
        })
    }

    /// `count` raw turns at once; the time until the last one is removed.
    /// `count` raw turns at once: the time until all ended, and each one's time to its
    /// answer (its result line) from the common start.
    async fn parallel(&self, round: usize, count: usize) -> Result<(Duration, Vec<Duration>)> {
        let started = Instant::now();
        let turns = (0..count).map(|c| {
            let prompt = format!("bench load {round} raw {c}");
            async move {
                let turn = self.turn(&prompt).await?;
                anyhow::Ok(started.elapsed() - turn.total + turn.result)
            }
        });
        let mut answered = Vec::new();
        for turn in join_all(turns).await {
            answered.push(turn?);
        }
        Ok((started.elapsed(), answered))
    }
}

/// The daemon's host API, as `loop run` uses it.
struct Api {
    http: reqwest::Client,
    token: String,
    messages_url: String,
}

impl Api {
    /// Posts `text` to local channel `channel`; returns the inbox id.
    async fn post(&self, channel: &str, text: &str) -> Result<i64> {
        self.post_in(channel, text, None).await
    }

    /// [`Api::post`], pointing the channel at `dir` first when given (`loop run --dir`).
    async fn post_in(&self, channel: &str, text: &str, dir: Option<&Path>) -> Result<i64> {
        let mut body = serde_json::json!({"channel": channel, "text": text});
        if let Some(dir) = dir {
            body["dir"] = serde_json::json!(dir.display().to_string());
        }
        let response = self
            .http
            .post(&self.messages_url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .context("POST /api/local/messages")?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!(
                "POST /api/local/messages: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let accepted: MessageAccepted = response.json().await?;
        accepted
            .inbox_id
            .with_context(|| format!("message to {channel} was not stored"))
    }

    /// One cold turn: a message to a new channel, timed from the POST until the run's answer
    /// is recorded.
    async fn turn(&self, channel: &str, text: &str) -> Result<Duration> {
        self.turn_in(channel, text, None).await
    }

    /// [`Api::turn`] in a channel pointed at `dir`.
    async fn turn_in(&self, channel: &str, text: &str, dir: Option<&Path>) -> Result<Duration> {
        let started = Instant::now();
        let inbox_id = self.post_in(channel, text, dir).await?;
        let url = format!("{}/{inbox_id}", self.messages_url);
        let deadline = started + Duration::from_secs(180);
        loop {
            let state: MessageState = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .context("GET /api/local/messages/{id}")?
                .error_for_status()?
                .json()
                .await?;
            match state.run_status.as_deref() {
                Some("succeeded") if state.answer.is_some() => {
                    let elapsed = started.elapsed();
                    if state.answer.as_deref() != Some("bench-ok") {
                        bail!("unexpected answer on {channel}: {:?}", state.answer);
                    }
                    return Ok(elapsed);
                }
                Some("running") | None if state.status != "failed" => {}
                _ => bail!("the turn on {channel} failed: {state:?}"),
            }
            if Instant::now() > deadline {
                bail!("the turn on {channel} took over 180 s: {state:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One message to each of `count` new channels at once; the time until every run ended,
    /// and the runs that failed. Completion is read from the store every 100 ms (not through
    /// the API) so the polling does not take the daemon's CPU while it is being measured.
    async fn parallel(
        &self,
        store: &Store,
        round: usize,
        count: usize,
    ) -> Result<(Duration, Vec<Duration>, Vec<String>)> {
        let started = Instant::now();
        let mut answered = Vec::new();
        let channels: Vec<String> = (0..count).map(|c| format!("load-{round}-{c}")).collect();
        let posts = channels
            .iter()
            .map(|channel| self.post(channel, "bench load turn"));
        for posted in join_all(posts).await {
            posted?;
        }
        let mut outstanding: Vec<String> = channels.iter().map(|c| format!("local:{c}")).collect();
        let deadline = started + Duration::from_secs(600);
        let mut failed = Vec::new();
        while !outstanding.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut still = Vec::new();
            for key in outstanding {
                let runs = store.channel_runs(&key).await?;
                match runs.first() {
                    Some(run) if run.status == RunStatus::Succeeded && run.answer.is_some() => {
                        answered.push(started.elapsed());
                    }
                    Some(run) if run.status.is_terminal() => failed.push(format!(
                        "{key}: {} {}",
                        run.status.as_str(),
                        run.error.as_deref().unwrap_or("")
                    )),
                    _ => still.push(key),
                }
            }
            outstanding = still;
            if Instant::now() > deadline {
                bail!("{} channels unanswered after 600 s", outstanding.len());
            }
        }
        Ok((started.elapsed(), answered, failed))
    }
}

/// Samples the daemon's `VmRSS` every 100 ms in the background and keeps the largest.
struct RssSampler {
    stop: CancellationToken,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = CancellationToken::new();
        let peak = Arc::new(AtomicU64::new(0));
        let task = {
            let stop = stop.clone();
            let peak = Arc::clone(&peak);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Ok(kb) = proc_status_kb(pid, "VmRSS:") {
                                peak.fetch_max(kb, Ordering::Relaxed);
                            }
                        }
                        () = stop.cancelled() => break,
                    }
                }
            })
        };
        RssSampler { stop, peak, task }
    }

    /// Stops sampling; the peak in KiB.
    async fn stop(self) -> u64 {
        self.stop.cancel();
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// A `kB` line of `/proc/PID/status`, e.g. `VmRSS:`.
fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .with_context(|| format!("reading /proc/{pid}/status (did the daemon exit?)"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The idle RSS: the median of ten samples 100 ms apart, in KiB.
async fn median_rss(pid: u32) -> Result<u64> {
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(proc_status_kb(pid, "VmRSS:")?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.sort_unstable();
    Ok(samples[samples.len() / 2])
}

fn env_count(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) => {
            let n: usize = text
                .parse()
                .with_context(|| format!("{name}={text} is not a count"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        }
        Err(_) => Ok(default),
    }
}

/// The `p`th percentile (nearest rank); zero for none.
fn percentile(values: &[Duration], p: usize) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Removes any raw container this run left (a failed turn, an interrupted run) by its label.
struct RawCleanup(String);

impl Drop for RawCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=loop-bench={} | xargs -r docker rm -f >/dev/null 2>&1",
                self.0
            ))
            .status();
    }
}
