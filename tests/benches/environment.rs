//! What a project's own environment (#18) costs: a first turn that has to build the image,
//! turns on the cached image as ratios to the same turn on loop's default image, and the disk
//! the image cache holds after five changes of the project's Dockerfile.
//!
//! ```text
//! cargo build --workspace --bins                # the `loop` binary the daemon fixture starts
//! cargo bench -p loop-e2e --bench environment   # (`--profile dev` reuses the debug build)
//! ```
//!
//! Everything is real except the model: the real dockerd and `docker build` of the Python
//! fixture project (its Dockerfile installs pytest from Debian), loop's layer, the Claude Code
//! CLI, and two real `loop serve`s on the same project: one with `project_images: always` (the
//! project's image), one with `never` (loop's default image). Every turn is the same: the
//! scripted model runs one Bash command and answers.
//!
//! 1. cold: the project's images removed, one new thread (the build, then the turn);
//! 2. cached: round by round, a new thread on each side (a cold container each time, the order
//!    rotating): project image / default image; then follow-ups in one warm thread per side;
//! 3. disk: five changes of the Dockerfile, each built by a turn; then what the project's
//!    images hold (loop keeps the last two of each kind).
//!
//! Knob: `LOOP_BENCH_ROUNDS` (default 7).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::measure::{load_average, median, ratio, secs};
use loop_e2e::project::Project;
use loop_e2e::support::{docker, test_image};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_wire::api::{MessageAccepted, MessageState};

/// The same cheap work on both sides (importing pytest would cost the project side ~0.2 s
/// that the default image, which lacks it, never pays).
const COMMAND: &str = "if [ -d /usr/lib/python3/dist-packages/pytest ]; then echo pytest present; else echo pytest missing; fi";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "environment: a benchmark; run it with `cargo bench -p loop-e2e --bench environment`"
        );
        return Ok(());
    }
    let rounds = loop_e2e::measure::rounds(7).context("LOOP_BENCH_ROUNDS")?;
    let Some(engine) = docker().await else {
        bail!("Docker or the image {} is not available", test_image());
    };
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
    let project = Project::from_fixture("python-dockerfile", &dir.path().join("python"));
    let own = Daemon::start(
        &dir.path().join("home"),
        &test_config(model.port(), dir.path(), r#""project_images": "always""#),
    )
    .await;
    let default = Daemon::start(
        &dir.path().join("home-default"),
        &test_config(model.port(), dir.path(), r#""project_images": "never""#),
    )
    .await;
    let sides = [
        Side::new("project image", &own, &project.dir),
        Side::new("default image", &default, &project.dir),
    ];
    println!("project environment benchmark");
    println!(
        "  machine: {} cpus, load {}; agent image {}; daemon {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        test_image(),
        loop_binary().display()
    );

    // 1. A cold build: nothing of this project's in the image cache.
    remove_images_of(&project.dir);
    let (took, answer) = sides[0].turn("cold", "run it").await?;
    check_pytest(&answer, true)?;
    println!("  first turn with a cold build: {} ({answer})", secs(took));
    // Warm-up of the default side, not counted.
    let (_, answer) = sides[1].turn("cold", "run it").await?;
    check_pytest(&answer, false)?;

    // 2. New threads on the cached image against the default image, interleaved.
    let mut times: [Vec<Duration>; 2] = Default::default();
    println!();
    println!("a new thread's turn (cold container), {rounds} rounds");
    for round in 1..=rounds {
        let order = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        for side in order {
            let (took, answer) = sides[side].turn(&format!("new-{round}"), "run it").await?;
            check_pytest(&answer, side == 0)?;
            times[side].push(took);
        }
        println!(
            "  {round:>3}  project image {:>8}  default image {:>8}  ratio {:.2}×",
            secs(times[0][round - 1]),
            secs(times[1][round - 1]),
            ratio(times[0][round - 1], times[1][round - 1])
        );
    }
    let mut paired: Vec<f64> = (0..rounds)
        .map(|r| ratio(times[0][r], times[1][r]))
        .collect();
    paired.sort_by(f64::total_cmp);
    let (own_median, default_median) = (median(&times[0]), median(&times[1]));
    println!(
        "  medians: project image {}, default image {}; project / default = {:.2}× ({:+.0} ms; paired median {:.2}×, range {:.2}×–{:.2}×)",
        secs(own_median),
        secs(default_median),
        ratio(own_median, default_median),
        (own_median.as_secs_f64() - default_median.as_secs_f64()) * 1000.0,
        paired[paired.len() / 2],
        paired[0],
        paired[paired.len() - 1]
    );

    // 2b. Follow-ups in one warm thread per side: the fast path, where finding the project's
    // image (its description read, the files it copies hashed, the images inspected) is paid
    // on every turn.
    let mut follow: [Vec<Duration>; 2] = Default::default();
    println!();
    println!("follow-ups in a warm thread, {rounds} rounds");
    for round in 1..=rounds {
        let order = if round % 2 == 0 { [1, 0] } else { [0, 1] };
        for side in order {
            let (took, answer) = sides[side].turn("new-1", "run it again").await?;
            check_pytest(&answer, side == 0)?;
            follow[side].push(took);
        }
        println!(
            "  {round:>3}  project image {:>8}  default image {:>8}  ratio {:.2}×",
            secs(follow[0][round - 1]),
            secs(follow[1][round - 1]),
            ratio(follow[0][round - 1], follow[1][round - 1])
        );
    }
    let (own_follow, default_follow) = (median(&follow[0]), median(&follow[1]));
    println!(
        "  medians: project image {}, default image {}; project / default = {:.2}× ({:+.0} ms)",
        secs(own_follow),
        secs(default_follow),
        ratio(own_follow, default_follow),
        (own_follow.as_secs_f64() - default_follow.as_secs_f64()) * 1000.0,
    );

    // 3. Five changes of the Dockerfile, each built by the next thread.
    println!();
    println!("five changes of the Dockerfile");
    let dockerfile = project.dir.join(".loop/container/Dockerfile");
    let original = std::fs::read_to_string(&dockerfile)?;
    for change in 1..=5 {
        std::fs::write(
            &dockerfile,
            format!("{original}RUN echo 'change {change}' > /etc/project-change\n"),
        )?;
        project.commit(&format!("change {change}"));
        let (took, answer) = sides[0].turn(&format!("change-{change}"), "run it").await?;
        check_pytest(&answer, true)?;
        println!(
            "  change {change}: a turn with its rebuild took {}",
            secs(took)
        );
    }
    report_disk(
        &project.dir,
        "with the warm agents of older versions still running",
    )?;
    // The warm agents retire (their containers go), and the next prune deletes their images.
    let own_id = own.daemon_id().unwrap_or_default().to_owned();
    let containers = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=loop-daemon={own_id}"),
        ])
        .output()?;
    for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", id])
            .output();
    }
    loop_runner::project_image::prune(&engine, &project.dir, &[]).await?;
    report_disk(&project.dir, "once they retired and the next build pruned")?;
    println!();
    println!("load after: {}", load_average());
    remove_images_of(&project.dir);
    drop(own);
    drop(default);
    model.shutdown().await;
    Ok(())
}

/// One daemon and the project it works in.
struct Side<'a> {
    name: &'static str,
    daemon: &'a Daemon,
    dir: &'a Path,
    http: reqwest::Client,
}

impl<'a> Side<'a> {
    fn new(name: &'static str, daemon: &'a Daemon, dir: &'a Path) -> Side<'a> {
        Side {
            name,
            daemon,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Posts `text` to a new local channel and waits for the answer: (time, answer).
    async fn turn(&self, channel: &str, text: &str) -> Result<(Duration, String)> {
        let channel = format!("{channel}-{}", self.name.replace(' ', "-"));
        let url = self.daemon.url("/api/local/messages");
        let started = Instant::now();
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.daemon.token())
            .json(&serde_json::json!({"channel": channel, "text": text, "dir": self.dir}))
            .send()
            .await
            .context("POST /api/local/messages")?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            bail!("POST: {} {}", response.status(), response.text().await?);
        }
        let accepted: MessageAccepted = response.json().await?;
        let id = accepted.inbox_id.context("not stored")?;
        loop {
            let state: MessageState = self
                .http
                .get(format!("{url}/{id}"))
                .bearer_auth(self.daemon.token())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            match state.run_status.as_deref() {
                Some("succeeded") if state.answer.is_some() => {
                    return Ok((started.elapsed(), state.answer.unwrap_or_default()));
                }
                Some("running") | None if state.status != "failed" => {}
                _ => bail!(
                    "the turn on {channel} failed: {state:?}\n{}",
                    self.daemon.log_text()
                ),
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!("no answer in {channel}\n{}", self.daemon.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The project image has pytest; loop's default image has not.
fn check_pytest(answer: &str, expected: bool) -> Result<()> {
    if answer.contains("pytest present") != expected {
        bail!("unexpected answer (pytest expected: {expected}): {answer}");
    }
    Ok(())
}

/// What the project's images hold on disk: `docker system df -v` counts each image's own
/// bytes (UNIQUE SIZE), shared ones (with other images) apart.
fn report_disk(project: &Path, when: &str) -> Result<()> {
    let df = std::process::Command::new("docker")
        .args(["system", "df", "-v"])
        .output()
        .context("docker system df -v")?;
    let ids = image_ids(project);
    let (mut unique, mut total, mut count) = (0.0, 0.0, 0);
    for line in String::from_utf8_lossy(&df.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !ids.iter().any(|id| id.starts_with(fields[2])) {
            continue;
        }
        let n = fields.len();
        unique += bytes(fields[n - 2]);
        total += bytes(fields[n - 4]);
        count += 1;
    }
    println!(
        "  {when}: {count} images ({}); bytes only they hold: {:.0} MB; their total size: {:.0} MB",
        project_images(project).join(", "),
        unique / 1e6,
        total / 1e6
    );
    Ok(())
}

/// The ids of the images loop built for `project`, named or not.
fn image_ids(project: &Path) -> Vec<String> {
    std::process::Command::new("docker")
        .args([
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=dev.loop.project={}", project.display()),
        ])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|id| id.trim_start_matches("sha256:").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The tags of the images loop built for `project` (labelled with it).
fn project_images(project: &Path) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "images",
            "--filter",
            &format!("label=dev.loop.project={}", project.display()),
            "--filter",
            "dangling=false",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output();
    let mut tags: Vec<String> = out
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

fn remove_images_of(project: &Path) {
    for id in image_ids(project) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &id])
            .output();
    }
}

/// Docker's human sizes (`257.3MB`, `0B`, `1.02GB`, `512kB`) in bytes.
fn bytes(size: &str) -> f64 {
    let split = size
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let scale = match unit {
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => 1.0,
    };
    number.parse::<f64>().unwrap_or(0.0) * scale
}
