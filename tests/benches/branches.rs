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
//! Three sides, interleaved round by round, the order rotating:
//! - `plain`: the project as a plain directory (no `.git`): the turn edits it in place;
//! - `in place`: the same files as a repository, with `git.worktrees: false` (a second daemon):
//!   the turn edits the checkout, as before #17; what git costs the Claude CLI itself (it reads
//!   the repository's status when it starts) is in here too;
//! - `git`: the repository with a worktree and branch per thread, loop's default.
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
use loop_e2e::measure::{load_average, median, ratio, secs};
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
    let rounds = loop_e2e::measure::rounds(7).context("LOOP_BENCH_ROUNDS")?;
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
    let in_place = Project::create(&dir.path().join("in-place"), GitOwner::Agent).dir;
    let plain = plain_copy(&repo, &dir.path().join("plain"))?;
    let daemon = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), ""),
    )
    .await;
    let legacy = Daemon::start(
        &dir.path().join("home-in-place"),
        &test_config(model.port(), dir.path(), r#""git": {"worktrees": false}"#),
    )
    .await;
    let api = Api {
        http: reqwest::Client::new(),
        token: daemon.token(),
        url: daemon.url("/api/local/messages"),
    };
    let legacy_api = Api {
        http: reqwest::Client::new(),
        token: legacy.token(),
        url: legacy.url("/api/local/messages"),
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
    let sides = [
        Side {
            name: "plain",
            api: &api,
            dir: &plain,
        },
        Side {
            name: "in place",
            api: &legacy_api,
            dir: &in_place,
        },
        Side {
            name: "git",
            api: &api,
            dir: &repo,
        },
    ];
    for side in &sides {
        side.turn("warmup", "warm-up")
            .await
            .with_context(|| log_tail(&daemon))?;
    }

    let mut first = Timings::default();
    let mut follow = Timings::default();
    println!();
    println!("first turns of new threads (cold container; git: + worktree), {rounds} rounds");
    for round in 1..=rounds {
        for side in rotated(&sides, round) {
            let took = side
                .turn(&format!("new-{round}"), "change the notes")
                .await
                .with_context(|| log_tail(&daemon))?;
            first.push(side.name, took);
        }
        first.print_round(round);
    }
    println!();
    println!("follow-ups in one warm thread per side (git: + commit and diff), {rounds} rounds");
    for round in 1..=rounds {
        for side in rotated(&sides, round) {
            let took = side
                .turn("new-1", "change the notes again")
                .await
                .with_context(|| log_tail(&daemon))?;
            follow.push(side.name, took);
        }
        follow.print_round(round);
    }
    println!();
    println!("summary (load {})", load_average());
    first.print_summary("a new thread's first turn");
    follow.print_summary("a follow-up turn");
    drop(legacy);
    drop(daemon);
    model.shutdown().await;
    Ok(())
}

/// One way of running the same turn: a daemon and a project directory.
struct Side<'a> {
    name: &'static str,
    api: &'a Api,
    dir: &'a Path,
}

impl Side<'_> {
    async fn turn(&self, channel: &str, text: &str) -> Result<Duration> {
        let channel = format!("{channel}-{}", self.name.replace(' ', "-"));
        self.api.turn(&channel, self.dir, text).await
    }
}

/// The sides in the order of `round`: each goes first in turn.
fn rotated<'s, 'a>(sides: &'s [Side<'a>; 3], round: usize) -> Vec<&'s Side<'a>> {
    (0..sides.len())
        .map(|i| &sides[(i + round) % sides.len()])
        .collect()
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

/// Each side's times, in round order.
#[derive(Default)]
struct Timings {
    by_side: std::collections::BTreeMap<&'static str, Vec<Duration>>,
}

impl Timings {
    fn push(&mut self, side: &'static str, took: Duration) {
        self.by_side.entry(side).or_default().push(took);
    }

    fn round(&self, side: &str, round: usize) -> Duration {
        self.by_side[side][round - 1]
    }

    fn print_round(&self, round: usize) {
        let (plain, in_place, git) = (
            self.round("plain", round),
            self.round("in place", round),
            self.round("git", round),
        );
        println!(
            "  {round:>3}  plain {:>8}  in place {:>8}  git {:>8}  git/plain {:.2}×  git/in place {:.2}× ({:+.0} ms)",
            secs(plain),
            secs(in_place),
            secs(git),
            ratio(git, plain),
            ratio(git, in_place),
            (git.as_secs_f64() - in_place.as_secs_f64()) * 1000.0
        );
    }

    fn print_summary(&self, what: &str) {
        let median_of = |side: &str| median(&self.by_side[side]);
        let (plain, in_place, git) = (median_of("plain"), median_of("in place"), median_of("git"));
        let rounds = self.by_side["git"].len();
        let mut paired: Vec<f64> = (1..=rounds)
            .map(|r| ratio(self.round("git", r), self.round("in place", r)))
            .collect();
        paired.sort_by(f64::total_cmp);
        println!(
            "  {what}: medians plain {}, in place {}, git {}; git / in place = {:.2}× ({:+.0} ms; paired median {:.2}×, range {:.2}×–{:.2}×); in place / plain = {:.2}×; git / plain = {:.2}×",
            secs(plain),
            secs(in_place),
            secs(git),
            ratio(git, in_place),
            (git.as_secs_f64() - in_place.as_secs_f64()) * 1000.0,
            paired[paired.len() / 2],
            paired[0],
            paired[paired.len() - 1],
            ratio(in_place, plain),
            ratio(git, plain),
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
