//! What git per thread costs a turn: a thread's worktree on its first turn, and the commit and
//! diff at the end of each turn, as ratios to the same turn in a directory that is not a
//! repository.
//!
//! ```text
//! cargo build --workspace --bins            # the `loop` binary the daemon fixture starts
//! cargo bench -p loop-e2e --bench branches  # (`--profile dev` reuses the debug build)
//! ```
//!
//! Everything is real except the model: the real dockerd, the agent image, the Claude Code CLI
//! in it, real git, and a real `loop serve`. Every turn makes the same change (the scripted
//! model appends a line to a file with one Bash call, then answers), so the git side pays for
//! what a real turn that edits makes it pay: on a new thread, `git worktree add` of the project;
//! on every turn, `git add -A`, a commit, and the numstat of the turn.
//!
//! Two sides, interleaved round by round and alternating which goes first:
//! - `plain`: the project as a plain directory (no `.git`): the turn edits it in place;
//! - `git`: the same files as a repository: the turn runs in the thread's worktree.
//!
//! 1. first turns: each round posts to a new channel of each side (a cold container, and on
//!    the git side a new worktree and branch);
//! 2. follow-ups: each round posts again to one thread per side, whose agent is warm, so the
//!    turn is short and git's part of it stands out.
//!
//! Knob: `LOOP_BENCH_ROUNDS` (default 7).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::project::{GitOwner, Project};
use loop_e2e::support::{AGENT_UID, chown, docker, test_image};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_wire::api::{MessageAccepted, MessageState};

/// What the scripted model runs: one change to the project, then the answer.
const COMMAND: &str = "date +%s%N >> bench-notes.txt && echo bench-ok";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("branches: a benchmark; run it with `cargo bench -p loop-e2e --bench branches`");
        return Ok(());
    }
    let rounds: usize = std::env::var("LOOP_BENCH_ROUNDS")
        .ok()
        .map(|v| v.parse().context("LOOP_BENCH_ROUNDS"))
        .transpose()?
        .unwrap_or(7);
    if docker().await.is_none() {
        bail!("Docker or the image {} is not available", test_image());
    }
    let model = FakeModel::start_on(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        Script::new().rule(
            Rule::any()
                .then(Step::bash(COMMAND))
                .then(Step::text("{{last_tool_result}}")),
        ),
    )
    .await
    .context("starting the fake model")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let repo = Project::create(&dir.path().join("repo"), GitOwner::Agent).dir;
    let plain = plain_copy(&repo, &dir.path().join("plain"))?;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), ""),
    )
    .await;
    let api = Api {
        http: reqwest::Client::new(),
        token: daemon.token(),
        url: daemon.url("/api/local/messages"),
    };
    println!("git per thread benchmark");
    println!(
        "  machine: {} cpus, load {}; image {}; daemon {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        test_image(),
        loop_binary().display()
    );
    // Warm-up, not counted: the first container pays for a cold page cache.
    for (side, dir) in [("plain", &plain), ("git", &repo)] {
        api.turn(&format!("warmup-{side}"), dir, "warm-up")
            .await
            .with_context(|| log_tail(&daemon))?;
    }

    let mut first = Sides::default();
    let mut follow = Sides::default();
    println!();
    println!("first turns of new threads (cold container; git: + worktree), {rounds} rounds");
    for round in 1..=rounds {
        let order = sides(round, &plain, &repo);
        for (side, dir) in &order {
            let took = api
                .turn(&format!("new-{side}-{round}"), dir, "change the notes")
                .await
                .with_context(|| log_tail(&daemon))?;
            first.push(side, took);
        }
        first.print_round(round);
    }
    println!();
    println!("follow-ups in one warm thread per side (git: + commit and diff), {rounds} rounds");
    for round in 1..=rounds {
        for (side, dir) in &sides(round, &plain, &repo) {
            let took = api
                .turn(&format!("new-{side}-1"), dir, "change the notes again")
                .await
                .with_context(|| log_tail(&daemon))?;
            follow.push(side, took);
        }
        follow.print_round(round);
    }
    println!();
    println!("summary (load {})", load_average());
    first.print_summary("a new thread's first turn", "git / plain");
    follow.print_summary("a follow-up turn", "git / plain");
    drop(daemon);
    model.shutdown().await;
    Ok(())
}

/// The two sides in the order of `round`: odd rounds plain first, even rounds git first.
fn sides<'a>(round: usize, plain: &'a Path, repo: &'a Path) -> [(&'static str, &'a Path); 2] {
    if round % 2 == 1 {
        [("plain", plain), ("git", repo)]
    } else {
        [("git", repo), ("plain", plain)]
    }
}

/// The project's files without `.git`, owned like the repository.
fn plain_copy(repo: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(repo)? {
        let entry = entry?;
        if entry.file_name() != ".git" && entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    chown(to, AGENT_UID, AGENT_UID);
    for entry in std::fs::read_dir(to)? {
        chown(&entry?.path(), AGENT_UID, AGENT_UID);
    }
    Ok(to.to_path_buf())
}

#[derive(Default)]
struct Sides {
    plain: Vec<Duration>,
    git: Vec<Duration>,
    paired: Vec<f64>,
}

impl Sides {
    fn push(&mut self, side: &str, took: Duration) {
        if side == "git" {
            self.git.push(took);
        } else {
            self.plain.push(took);
        }
    }

    fn print_round(&mut self, round: usize) {
        let (plain, git) = (self.plain[round - 1], self.git[round - 1]);
        let ratio = git.as_secs_f64() / plain.as_secs_f64();
        self.paired.push(ratio);
        println!(
            "  {round:>3}  plain {:>8}  git {:>8}  git/plain {ratio:.2}×  ({:+.0} ms)",
            secs(plain),
            secs(git),
            (git.as_secs_f64() - plain.as_secs_f64()) * 1000.0
        );
    }

    fn print_summary(&self, what: &str, label: &str) {
        let (plain, git) = (median(&self.plain), median(&self.git));
        let mut paired = self.paired.clone();
        paired.sort_by(f64::total_cmp);
        println!(
            "  {what}: {label} = {:.2}× of medians (plain {}, git {}, {:+.0} ms); paired ratios median {:.2}×, range {:.2}×–{:.2}×",
            git.as_secs_f64() / plain.as_secs_f64(),
            secs(plain),
            secs(git),
            (git.as_secs_f64() - plain.as_secs_f64()) * 1000.0,
            paired[paired.len() / 2],
            paired[0],
            paired[paired.len() - 1],
        );
    }
}

/// The daemon's host API, as `loop run --dir` uses it.
struct Api {
    http: reqwest::Client,
    token: String,
    url: String,
}

impl Api {
    /// Posts `text` to local channel `channel` working in `dir`, and waits until its answer
    /// is recorded.
    async fn turn(&self, channel: &str, dir: &Path, text: &str) -> Result<Duration> {
        let started = Instant::now();
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"channel": channel, "text": text, "dir": dir}))
            .send()
            .await
            .context("POST /api/local/messages")?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!("POST: {} {}", response.status(), response.text().await?);
        }
        let accepted: MessageAccepted = response.json().await?;
        let id = accepted.inbox_id.context("not stored")?;
        let url = format!("{}/{id}", self.url);
        loop {
            let state: MessageState = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            match state.run_status.as_deref() {
                Some("succeeded") if state.answer.is_some() => {
                    let took = started.elapsed();
                    if !state
                        .answer
                        .as_deref()
                        .is_some_and(|a| a.starts_with("bench-ok"))
                    {
                        bail!("unexpected answer on {channel}: {:?}", state.answer);
                    }
                    return Ok(took);
                }
                Some("running") | None if state.status != "failed" => {}
                _ => bail!("the turn on {channel} failed: {state:?}"),
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("the turn on {channel} took over 180 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn log_tail(daemon: &Daemon) -> String {
    let log = daemon.log_text();
    let start = log.len().saturating_sub(4000);
    log[log.floor_char_boundary(start)..].to_owned()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}
