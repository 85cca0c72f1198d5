//! Turns cut short by the infrastructure, not the agent: the Docker engine killed under a
//! turn (a private dockerd, so nobody else's containers die), and the daemon killed mid-turn.
//! Nothing accepted is lost, and the thread says what happened.

use std::time::{Duration, Instant};

use loop_e2e::daemon::{Daemon, eventually};
use loop_e2e::engine::PrivateEngine;
use loop_e2e::slack::{connected, has_text, slack_config, thread_until};
use loop_e2e::support::{docker, start_model, test_image, workspace};
use loop_fakes::model::{FakeModel, Rule, Script, Step};
use loop_fakes::slack::{FakeSlack, SlackMessage};
use loop_store::{InboxStatus, RunStatus};

/// A turn in a fresh container (a loaded machine makes this slow).
const TURN: Duration = Duration::from_secs(180);
/// Something loop does at once (noticing, editing a message).
const QUICK: Duration = Duration::from_secs(30);

/// The line the status message of a turn that lost the engine is edited to.
const ENGINE_LOST_LINE: &str = "The Docker engine stopped during this turn";
/// The line the status message of a turn the daemon died in is edited to at the next start.
const INTERRUPTED_LINE: &str = "Interrupted: loop restarted during this turn";

/// A first question, then a slow job whose first attempt the model holds for two minutes (long
/// enough to kill something under it) and whose second attempt it answers at once.
fn slow_job_model() -> Script {
    Script::new()
        .rule(Rule::contains("what is six times seven").then(Step::text("It is 42.")))
        .rule(
            Rule::contains("the slow job")
                .times(1)
                .then(Step::delay(120_000, Step::text("too late"))),
        )
        .rule(Rule::contains("the slow job").then(Step::text("slow job done")))
}

/// Requests of the model's turns about the slow job.
fn slow_job_requests(model: &FakeModel) -> Vec<loop_fakes::model::RecordedRequest> {
    model
        .requests()
        .into_iter()
        .filter(|r| {
            r.conversation
                .as_ref()
                .is_some_and(|c| c.prompt.contains("the slow job"))
        })
        .collect()
}

async fn model_until(
    model: &FakeModel,
    daemon: &Daemon,
    what: &str,
    check: impl Fn(&FakeModel) -> bool,
) {
    eventually(daemon, what, TURN, || {
        let done = check(model);
        async move { done }
    })
    .await;
}

/// What a person reads in the thread: each bot message once, and nothing still "working".
fn assert_one_notice_and_one_answer(thread: &[SlackMessage], notice: &str) {
    let count = |needle: &str| thread.iter().filter(|m| m.text.contains(needle)).count();
    assert_eq!(count(notice), 1, "one line says what happened: {thread:#?}");
    assert_eq!(count("slow job done"), 1, "one real answer: {thread:#?}");
    assert_eq!(count("too late"), 0, "{thread:#?}");
    assert_eq!(count("❌"), 0, "nothing failed: {thread:#?}");
    assert_eq!(
        count("⏳"),
        0,
        "no status message says Working: {thread:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_whose_docker_engine_is_killed_runs_again_once_the_engine_is_back() {
    if docker().await.is_none() {
        return;
    }
    let Some(mut engine) = PrivateEngine::start().await else {
        return;
    };
    let loading = Instant::now();
    engine.load_image(&test_image());
    eprintln!(
        "agent image loaded into the private engine in {:?}",
        loading.elapsed()
    );
    let (dir, _project) = workspace();
    let model = start_model(slow_job_model()).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let docker_host = engine.docker_host();
    let daemon = Daemon::start_with_env(
        &home,
        &slack_config(&model, &slack, dir.path(), ""),
        &[("DOCKER_HOST", docker_host.as_str())],
    )
    .await;
    connected(&slack, &daemon).await;

    // A first turn gives the thread its session.
    let question = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} what is six times seven?", FakeSlack::mention()),
        None,
    );
    thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the first answer",
        TURN,
        |m| has_text(m, "It is 42."),
    )
    .await;

    // The follow-up reaches the model, which holds it; then the engine dies under it.
    slack.post_as_user("UALICE", "C1", "now run the slow job", Some(&question.ts));
    model_until(&model, &daemon, "the slow job to reach the model", |m| {
        !slow_job_requests(m).is_empty()
    })
    .await;
    let private = engine.client().await;
    let lost_containers: Vec<String> = private
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .expect("containers of the private engine")
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    assert_eq!(lost_containers.len(), 1, "the thread's agent is running");
    let killed = Instant::now();
    engine.kill_9();
    let after_kill = engine.processes();

    // loop notices, says so in the thread, and waits for the engine (asking it with backoff).
    thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the engine-lost line",
        QUICK,
        |m| has_text(m, ENGINE_LOST_LINE),
    )
    .await;
    let noticed = killed.elapsed();
    eventually(&daemon, "loop to ask the dead engine twice", QUICK, || {
        let asked = daemon
            .log_text()
            .matches("the Docker engine is still unreachable")
            .count();
        async move { asked >= 2 }
    })
    .await;
    let restarting = killed.elapsed();
    engine.start_dockerd().await;
    let back = killed.elapsed();

    model_until(&model, &daemon, "the slow job to run again", |m| {
        slow_job_requests(m).len() >= 2
    })
    .await;
    let retried = killed.elapsed();
    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the answer",
        TURN,
        |m| {
            has_text(m, "slow job done")
                && m.iter().filter(|m| m.text.contains("Done")).count() == 2
        },
    )
    .await;
    let answered = killed.elapsed();
    eprintln!(
        "timeline from the kill -9 of dockerd: loop told the thread after {noticed:?}; dockerd \
         restarted at {restarting:?} and answered at {back:?}; the retry reached the model at \
         {retried:?}; the answer was in the thread at {answered:?}"
    );

    // In the thread: the first turn (status, answer), then the lost turn's status message
    // turned into one line, the re-run's status, and exactly one answer.
    assert_one_notice_and_one_answer(&thread, ENGINE_LOST_LINE);
    assert_eq!(thread.len(), 5, "{thread:#?}");
    assert!(thread[2].text.contains(ENGINE_LOST_LINE), "{thread:#?}");
    // The re-run resumed the thread's session: the model saw the first question again.
    let retry = slow_job_requests(&model).pop().expect("the retry");
    assert!(
        retry.body_contains("what is six times seven"),
        "the retry resumed the session"
    );
    // The store agrees: the lost run is interrupted (not failed) and every message is done.
    let store = daemon.store().await;
    let key = format!("slack:C1:{}", question.ts);
    let statuses: Vec<RunStatus> = store
        .channel_runs(&key)
        .await
        .expect("runs")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        vec![
            RunStatus::Succeeded,
            RunStatus::Interrupted,
            RunStatus::Succeeded
        ]
    );
    let messages = store.channel_messages(&key).await.expect("messages");
    assert!(
        messages.iter().all(|m| m.status == InboxStatus::Done),
        "{messages:?}"
    );
    // The log says what failed, at warn level.
    let log = daemon.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("the Docker engine was lost during the turn"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("the Docker engine stopped answering"),
        "{warning}"
    );
    eprintln!("the daemon's warning: {warning}");

    // What the dead engine left: the killed dockerd's containerd went with it (dockerd starts
    // it with a parent-death signal), the agent's shim outlived both until the restarted
    // engine stopped the agent; loop then removed the lost container.
    eprintln!("processes of the engine right after the kill -9: {after_kill:#?}");
    assert!(
        after_kill.iter().all(|p| !p.command.starts_with("dockerd")),
        "{after_kill:#?}"
    );
    eventually(&daemon, "the lost container to be removed", QUICK, || {
        let private = private.clone();
        let lost = lost_containers.clone();
        async move {
            let all = private
                .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                    all: true,
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            all.iter()
                .all(|c| c.id.as_ref().is_none_or(|id| !lost.contains(id)))
        }
    })
    .await;
    let running = engine.processes();
    for lost in &lost_containers {
        assert!(
            running.iter().all(|p| !p.command.contains(lost.as_str())),
            "the lost container's shim is gone: {running:#?}"
        );
    }
    drop(daemon);
    let left = engine.stop().await;
    assert!(
        left.is_empty(),
        "a stopped engine leaves no process: {left:#?}"
    );
    eprintln!("mounts left by the stopped engine: {:?}", engine.mounts());
    model.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_9_of_the_daemon_its_status_message_says_the_turn_runs_again() {
    if docker().await.is_none() {
        return;
    }
    let (dir, _project) = workspace();
    let model = start_model(slow_job_model()).await;
    let slack = FakeSlack::start().await.expect("fake slack");
    let home = dir.path().join("home");
    let mut daemon = Daemon::start(&home, &slack_config(&model, &slack, dir.path(), "")).await;
    connected(&slack, &daemon).await;

    let question = slack.post_as_user(
        "UALICE",
        "C1",
        &format!("{} please run the slow job", FakeSlack::mention()),
        None,
    );
    thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the status message",
        QUICK,
        |m| has_text(m, "Working"),
    )
    .await;
    model_until(&model, &daemon, "the slow job to reach the model", |m| {
        !slow_job_requests(m).is_empty()
    })
    .await;
    daemon.kill_9();
    daemon.restart().await;

    let thread = thread_until(
        &slack,
        &daemon,
        "C1",
        &question.ts,
        "the answer",
        TURN,
        |m| has_text(m, "slow job done") && has_text(m, "Done"),
    )
    .await;
    // The killed run's status message, the re-run's, and one answer.
    assert_one_notice_and_one_answer(&thread, INTERRUPTED_LINE);
    assert_eq!(thread.len(), 3, "{thread:#?}");
    assert!(thread[0].text.contains(INTERRUPTED_LINE), "{thread:#?}");
    let store = daemon.store().await;
    let statuses: Vec<RunStatus> = store
        .channel_runs(&format!("slack:C1:{}", question.ts))
        .await
        .expect("runs")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![RunStatus::Interrupted, RunStatus::Succeeded]);
    model.shutdown().await;
}
