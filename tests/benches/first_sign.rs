//! How long a person waits, after mentioning loop, for the first sign that it heard them: the
//! 👀 reaction or the status message, whichever reaches the platform first (#19, goal 5: at
//! most 300 ms at the 95th percentile).
//!
//! ```text
//! cargo build --workspace --bins                # the `loop` binary the daemon fixture starts
//! cargo bench -p loop-e2e --bench first_sign    # (`--profile dev` reuses the debug build)
//! ```
//!
//! A real `loop serve` with the fake Slack (Socket Mode) and the fake Discord (gateway), the
//! real database, and turns that really run (the agent image, the Claude Code CLI, a scripted
//! model that answers at once). The clock starts when the fake platform sends the event and
//! stops when the first Web API / REST call about that message arrives at it; both are read in
//! this process.
//!
//! Two patterns per platform: mentions one at a time (each while the previous turn may still
//! run), and a burst of mentions at once. Knob: `LOOP_BENCH_ROUNDS` (default 20).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use loop_e2e::daemon::{Daemon, loop_binary, test_config};
use loop_e2e::measure::load_average;
use loop_e2e::support::{docker, start_model, test_image};
use loop_fakes::discord::{CHANNEL, FakeDiscord, GUILD_ID, TOKEN};
use loop_fakes::model::{Script, Step};
use loop_fakes::slack::{APP_TOKEN, BOT_TOKEN, FakeSlack};

const SLACK_USER: &str = "UALICE";
const DISCORD_USER: &str = "910000000000000001";
/// Mentions sent at once in the burst.
const BURST: usize = 10;
/// How long a sign may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "first_sign: a benchmark; run it with `cargo bench -p loop-e2e --bench first_sign`"
        );
        return Ok(());
    }
    let rounds = loop_e2e::measure::rounds(20).context("LOOP_BENCH_ROUNDS")?;
    if docker().await.is_none() {
        bail!("Docker or the image {} is not available", test_image());
    }
    let model = start_model(Script::always(Step::text("ok"))).await;
    let slack = FakeSlack::start().await.context("fake slack")?;
    let discord = FakeDiscord::start().await.context("fake discord")?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let extra = format!(
        r#""slack_bot_token": "{BOT_TOKEN}",
  "slack_app_token": "{APP_TOKEN}",
  "slack": {{"api_url": "{slack_api}", "allowed_users": ["{SLACK_USER}"]}},
  "discord_token": "{TOKEN}",
  "discord_guild_id": "{GUILD_ID}",
  "discord": {{"api_url": "{discord_api}", "allowed_users": ["{DISCORD_USER}"]}},
  "max_concurrent_runs": 4"#,
        slack_api = slack.api_url(),
        discord_api = discord.api_url(),
    );
    let config = test_config(model.port(), dir.path(), &extra).replace(
        r#""platforms": ["local"]"#,
        r#""platforms": ["local", "slack", "discord"]"#,
    );
    let daemon = Daemon::start(&dir.path().join("home"), &config).await;
    if slack
        .wait_for(GIVE_UP, |s| s.is_connected().then_some(()))
        .await
        .is_none()
        || discord
            .wait_for(GIVE_UP, |d| d.is_connected().then_some(()))
            .await
            .is_none()
    {
        bail!("the daemon did not connect\n{}", daemon.log_text());
    }
    println!("time to the first sign after a mention");
    println!(
        "  machine: {} cpus, load {}; image {}; daemon {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
        test_image(),
        loop_binary().display()
    );

    let platforms = [
        ("slack", Platform::Slack(&slack)),
        ("discord", Platform::Discord(&discord)),
    ];
    // Warm-up, not counted: the first turn's container pays for a cold page cache.
    for (_, platform) in &platforms {
        let posted = platform.mention("warm up, say ok");
        platform.first_sign(&posted, Instant::now()).await?;
    }
    for (name, platform) in &platforms {
        let mut spaced = Vec::new();
        for round in 0..rounds {
            let started = Instant::now();
            let posted = platform.mention(&format!("one at a time {round}, say ok"));
            spaced.push(platform.first_sign(&posted, started).await?);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        report(&format!("{name}, one at a time"), &spaced);
        // Let the turns end before the burst.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut posted = Vec::new();
        for i in 0..BURST {
            let started = Instant::now();
            posted.push((platform.mention(&format!("burst {i}, say ok")), started));
        }
        let mut burst = Vec::new();
        for (message, started) in &posted {
            burst.push(platform.first_sign(message, *started).await?);
        }
        report(&format!("{name}, {BURST} at once"), &burst);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("  load after: {}", load_average());
    drop(daemon);
    model.shutdown().await;
    Ok(())
}

/// A chat platform seen from the person's side.
#[derive(Clone, Copy)]
enum Platform<'a> {
    Slack(&'a FakeSlack),
    Discord(&'a FakeDiscord),
}

impl Platform<'_> {
    /// Mentions loop in a new message; returns the message's id.
    fn mention(&self, text: &str) -> String {
        match self {
            Platform::Slack(slack) => {
                slack
                    .post_as_user(
                        SLACK_USER,
                        "C1",
                        &format!("{} {text}", FakeSlack::mention()),
                        None,
                    )
                    .ts
            }
            Platform::Discord(discord) => discord.post_as_user(
                DISCORD_USER,
                CHANNEL,
                &format!("{} {text}", FakeDiscord::mention()),
            ),
        }
    }

    /// The time from `started` to the first call about `message` that reached the platform:
    /// on Slack a reaction on it or a message in its thread, on Discord any REST call on it (a
    /// reaction, the thread started from it).
    async fn first_sign(&self, message: &str, started: Instant) -> Result<Duration> {
        let found = match self {
            Platform::Slack(slack) => {
                slack
                    .wait_for(GIVE_UP, |s| {
                        s.calls()
                            .into_iter()
                            .find(|call| {
                                call.status == 200
                                    && matches!(
                                        call.method.as_str(),
                                        "reactions.add" | "chat.postMessage"
                                    )
                                    && (call.args["timestamp"].as_str() == Some(message)
                                        || call.args["thread_ts"].as_str() == Some(message))
                            })
                            .map(|call| call.at)
                    })
                    .await
            }
            Platform::Discord(discord) => {
                discord
                    .wait_for(GIVE_UP, |d| {
                        d.calls()
                            .into_iter()
                            .find(|call| call.status < 300 && call.path.contains(message))
                            .map(|call| call.at)
                    })
                    .await
            }
        };
        let found = found.with_context(|| format!("no sign for message {message}"))?;
        Ok(found.saturating_duration_since(started))
    }
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "  {what}: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms ({} mentions)",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.95).as_secs_f64() * 1000.0,
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0,
        sorted.len()
    );
}
