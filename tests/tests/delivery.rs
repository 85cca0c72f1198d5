//! Every answer is delivered exactly once, also when many turns end at the same moment: a real
//! `loop serve` serving the fake Slack and the fake Discord at once, real containers running
//! the real Claude Code CLI, and a fake model that holds every turn of a round until all of
//! them have started, so they all end within the same second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use loop_e2e::daemon::{Daemon, eventually, test_config};
use loop_e2e::support::{docker, start_model, workspace};
use loop_fakes::discord::{self, FakeDiscord};
use loop_fakes::model::{FakeModel, Matcher, Rule, Script, Step};
use loop_fakes::slack::{self, FakeSlack};

/// Threads per platform.
const THREADS: usize = 20;
/// Rounds: each asks every thread one question and waits for all answers.
const ROUNDS: usize = 10;
/// Forty cold containers start on a small machine in the first round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);
const QUICK: Duration = Duration::from_secs(30);

const SLACK_CHANNEL: &str = "C1";
const SLACK_USER: &str = "UALICE";
const DISCORD_USER: &str = "910000000000000001";

/// Both platforms, every thread's turn at once, and the threads' agents kept warm between
/// rounds (so rounds after the first cost a model request, not a container start).
fn config(
    model: &FakeModel,
    slack: &FakeSlack,
    discord: &FakeDiscord,
    dir: &std::path::Path,
) -> String {
    let parallel = 2 * THREADS;
    let extra = format!(
        r#""slack_bot_token": "{slack_bot}",
  "slack_app_token": "{slack_app}",
  "slack": {{"api_url": "{slack_api}", "allowed_users": ["{SLACK_USER}"]}},
  "discord_token": "{discord_token}",
  "discord_guild_id": "{guild}",
  "discord": {{"api_url": "{discord_api}", "allowed_users": ["{DISCORD_USER}"]}},
  "max_concurrent_runs": {parallel},
  "warm_idle_sec": 900,
  "max_warm_threads": {parallel}"#,
        slack_bot = slack::BOT_TOKEN,
        slack_app = slack::APP_TOKEN,
        slack_api = slack.api_url(),
        discord_token = discord::TOKEN,
        guild = discord::GUILD_ID,
        discord_api = discord.api_url(),
    );
    test_config(model.port(), dir, &extra).replace(
        r#""platforms": ["local"]"#,
        r#""platforms": ["local", "slack", "discord"]"#,
    )
}

/// The question of one thread in one round, and the answer the model gives to it.
fn question(round: usize, thread: &str) -> String {
    format!("round {round} question for {thread}")
}

fn answer(round: usize, thread: &str) -> String {
    format!("answer to {}", question(round, thread))
}

/// The answers (not the status lines) the bot posted, by thread.
struct Posted {
    slack: HashMap<String, Vec<String>>,
    discord: HashMap<String, Vec<String>>,
}

fn posted(
    slack: &FakeSlack,
    discord: &FakeDiscord,
    slack_threads: &[String],
    discord_threads: &[String],
) -> Posted {
    let answers = |texts: Vec<String>| -> Vec<String> {
        texts
            .into_iter()
            .filter(|t| t.contains("answer to round"))
            .collect()
    };
    Posted {
        slack: slack_threads
            .iter()
            .map(|ts| {
                let texts = slack
                    .bot_messages_in(SLACK_CHANNEL, Some(ts))
                    .into_iter()
                    .map(|m| m.text)
                    .collect();
                (ts.clone(), answers(texts))
            })
            .collect(),
        discord: discord_threads
            .iter()
            .map(|id| {
                let texts = discord
                    .bot_messages_in(id)
                    .into_iter()
                    .map(|m| m.content)
                    .collect();
                (id.clone(), answers(texts))
            })
            .collect(),
    }
}

/// How many times `text` was posted in each thread: (threads with it at least once, extra
/// copies over all threads).
fn copies<'a>(
    threads: impl Iterator<Item = (&'a String, &'a Vec<String>)>,
    text_of: impl Fn(&str) -> String,
) -> (usize, usize) {
    let (mut answered, mut extra) = (0, 0);
    for (thread, texts) in threads {
        let wanted = text_of(thread);
        let n = texts.iter().filter(|t| **t == wanted).count();
        answered += usize::from(n > 0);
        extra += n.saturating_sub(1);
    }
    (answered, extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_threads_ending_together_are_each_answered_once_ten_rounds_in_a_row() {
    if docker().await.is_none() {
        return;
    }
    let started = Instant::now();
    let (dir, _project) = workspace();
    // Every turn waits at the barrier until all 40 have reached the model, then all answer.
    let model = start_model(Script::new().rule(
        Rule::when(Matcher::contains("question for")).then(Step::barrier(
            "round",
            u32::try_from(2 * THREADS).expect("small"),
            Step::text("answer to {{prompt}}"),
        )),
    ))
    .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let discord = FakeDiscord::start().await.expect("fake discord");
    let home = dir.path().join("home");
    let daemon = Daemon::start(&home, &config(&model, &slack, &discord, dir.path())).await;
    for (what, connected) in [
        (
            "Slack Socket Mode",
            slack
                .wait_for(QUICK, |s| s.is_connected().then_some(()))
                .await,
        ),
        (
            "the Discord gateway",
            discord
                .wait_for(QUICK, |d| d.is_connected().then_some(()))
                .await,
        ),
    ] {
        assert!(
            connected.is_some(),
            "the daemon did not connect to {what}\n{}",
            daemon.log_text()
        );
    }

    let mut slack_threads: Vec<String> = Vec::new();
    let mut discord_threads: Vec<String> = Vec::new();
    let mut duplicates_per_round = Vec::new();
    for round in 1..=ROUNDS {
        let round_started = Instant::now();
        if round == 1 {
            // A mention opens a thread on each platform.
            for i in 0..THREADS {
                let name = format!("s{i}");
                let text = format!("{} {}", FakeSlack::mention(), question(round, &name));
                slack_threads.push(
                    slack
                        .post_as_user(SLACK_USER, SLACK_CHANNEL, &text, None)
                        .ts,
                );
            }
            let mut mentions = Vec::new();
            for i in 0..THREADS {
                let name = format!("d{i}");
                let text = format!("{} {}", FakeDiscord::mention(), question(round, &name));
                mentions.push(discord.post_as_user(DISCORD_USER, discord::CHANNEL, &text));
            }
            for mention in &mentions {
                let thread = discord
                    .wait_for(ROUND_TIMEOUT, |d| d.thread_of(mention))
                    .await
                    .unwrap_or_else(|| panic!("no thread for {mention}\n{}", daemon.log_text()));
                discord_threads.push(thread.id);
            }
        } else {
            // A reply in a thread loop takes part in needs no mention.
            for (i, ts) in slack_threads.iter().enumerate() {
                slack.post_as_user(
                    SLACK_USER,
                    SLACK_CHANNEL,
                    &question(round, &format!("s{i}")),
                    Some(ts),
                );
            }
            for (i, id) in discord_threads.iter().enumerate() {
                discord.post_as_user(DISCORD_USER, id, &question(round, &format!("d{i}")));
            }
        }
        // Thread names in the questions are s0.., d0..; map each thread to its name.
        let slack_name: HashMap<String, String> = slack_threads
            .iter()
            .enumerate()
            .map(|(i, ts)| (ts.clone(), format!("s{i}")))
            .collect();
        let discord_name: HashMap<String, String> = discord_threads
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), format!("d{i}")))
            .collect();
        let all_answered = |p: &Posted| {
            let (slack_answered, _) = copies(p.slack.iter(), |ts| answer(round, &slack_name[ts]));
            let (discord_answered, _) =
                copies(p.discord.iter(), |id| answer(round, &discord_name[id]));
            slack_answered == THREADS && discord_answered == THREADS
        };
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while !all_answered(&posted(&slack, &discord, &slack_threads, &discord_threads)) {
            if Instant::now() > deadline {
                let questions = model
                    .requests()
                    .iter()
                    .filter(|r| r.body_contains(&format!("round {round} question")))
                    .count();
                panic!(
                    "round {round}: not every thread was answered in {ROUND_TIMEOUT:?}; the model saw {questions} requests of this round\n--- daemon log ---\n{}",
                    daemon.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Every answer has left the outbox before duplicates are counted: a second copy
        // could only come from a deliverer still holding a message.
        let store = daemon.store().await;
        eventually(&daemon, "an empty outbox", QUICK, || {
            let store = store.clone();
            async move { store.pending_outbox().await.expect("outbox").is_empty() }
        })
        .await;
        let p = posted(&slack, &discord, &slack_threads, &discord_threads);
        let (_, slack_extra) = copies(p.slack.iter(), |ts| answer(round, &slack_name[ts]));
        let (_, discord_extra) = copies(p.discord.iter(), |id| answer(round, &discord_name[id]));
        // How close together the turns ended: the spread of this round's finish times.
        let keys = slack_threads
            .iter()
            .map(|ts| format!("slack:{SLACK_CHANNEL}:{ts}"))
            .chain(
                discord_threads
                    .iter()
                    .map(|id| format!("discord:{}:{id}", discord::CHANNEL)),
            );
        let mut finished = Vec::new();
        for key in keys {
            let runs = store.channel_runs(&key).await.expect("runs");
            finished.extend(runs.get(round - 1).and_then(|run| run.finished_at));
        }
        let spread_ms = finished.iter().max().unwrap_or(&0) - finished.iter().min().unwrap_or(&0);
        eprintln!(
            "round {round}: {} threads answered in {:.1}s, turns ended within {spread_ms} ms; extra copies: slack {slack_extra}, discord {discord_extra}",
            2 * THREADS,
            round_started.elapsed().as_secs_f64()
        );
        duplicates_per_round.push((slack_extra, discord_extra));
    }

    // What a person sees at the end: each thread holds exactly one answer per round, in order.
    let p = posted(&slack, &discord, &slack_threads, &discord_threads);
    for (i, ts) in slack_threads.iter().enumerate() {
        let expected: Vec<String> = (1..=ROUNDS).map(|r| answer(r, &format!("s{i}"))).collect();
        assert_eq!(
            p.slack[ts], expected,
            "slack thread {ts}; duplicates per round: {duplicates_per_round:?}"
        );
    }
    for (i, id) in discord_threads.iter().enumerate() {
        let expected: Vec<String> = (1..=ROUNDS).map(|r| answer(r, &format!("d{i}"))).collect();
        assert_eq!(
            p.discord[id], expected,
            "discord thread {id}; duplicates per round: {duplicates_per_round:?}"
        );
    }
    // Every Discord answer carried a nonce with enforce_nonce (a retry would show up once).
    let posts: Vec<_> = discord
        .calls()
        .into_iter()
        .filter(|c| {
            c.method == "POST"
                && c.body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains("answer to round"))
        })
        .collect();
    assert!(
        posts
            .iter()
            .all(|c| c.body["nonce"].is_string() && c.body["enforce_nonce"] == true),
        "{:?}",
        posts.first().map(|c| &c.body)
    );
    eprintln!(
        "{ROUNDS} rounds of {} threads in {:.0}s",
        2 * THREADS,
        started.elapsed().as_secs_f64()
    );
    model.shutdown().await;
}

/// The window between posting an answer and recording it: the daemon dies after Discord
/// created the message but before its response arrived. The restarted daemon posts the part
/// again with the same nonce, and Discord returns the message it already has: the thread shows
/// the answer once, and the outbox is done with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_posted_just_before_a_kill_9_is_shown_once_after_the_restart() {
    if docker().await.is_none() {
        return;
    }
    const ANSWER: &str = "The answer that must arrive exactly once.";
    let (dir, _project) = workspace();
    let model =
        start_model(Script::new().rule(Rule::contains("crash question").then(Step::text(ANSWER))))
            .await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let discord = FakeDiscord::start().await.expect("fake discord");
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &config(&model, &slack, &discord, dir.path())).await;
    discord
        .wait_for(QUICK, |d| d.is_connected().then_some(()))
        .await
        .unwrap_or_else(|| panic!("no gateway connection\n{}", daemon.log_text()));

    discord.lose_response(ANSWER);
    let mention = discord.post_as_user(
        DISCORD_USER,
        discord::CHANNEL,
        &format!("{} crash question", FakeDiscord::mention()),
    );
    let thread = discord
        .wait_for(ROUND_TIMEOUT, |d| {
            let thread = d.thread_of(&mention)?;
            d.calls().iter().any(|c| c.held).then_some(thread)
        })
        .await
        .unwrap_or_else(|| panic!("the answer was never posted\n{}", daemon.log_text()));
    let answers = |d: &FakeDiscord| {
        d.bot_messages_in(&thread.id)
            .into_iter()
            .filter(|m| m.content.contains(ANSWER))
            .count()
    };
    assert_eq!(answers(&discord), 1, "Discord created the answer");

    // Killed while waiting for Discord's response: the part is out but not recorded.
    daemon.restart().await;
    let store = daemon.store().await;
    eventually(&daemon, "the outbox to be delivered", ROUND_TIMEOUT, || {
        let store = store.clone();
        async move { store.pending_outbox().await.expect("outbox").is_empty() }
    })
    .await;
    let posts: Vec<_> = discord
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.body["content"].as_str() == Some(ANSWER))
        .collect();
    assert_eq!(posts.len(), 2, "posted again after the restart: {posts:?}");
    assert_eq!(
        posts[0].body["nonce"], posts[1].body["nonce"],
        "with the same nonce"
    );
    assert_eq!(
        answers(&discord),
        1,
        "shown once: {:#?}",
        discord.bot_messages_in(&thread.id)
    );
    model.shutdown().await;
}
