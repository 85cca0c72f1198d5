//! The orchestrator: the one owner of "what runs where". It takes [`Inbound`] items from every
//! adapter, persists them, maps each channel or thread to a session and a work directory, runs
//! one turn at a time per channel (channels in parallel, up to `max_concurrent_runs`), and
//! delivers answers through the channel's adapter.
//!
//! Durability: a message is in the inbox before `accept` returns (the adapter acknowledges
//! the platform only then); a turn's end, its messages' state and its answer are written in one
//! transaction; answers go out from the outbox, through one deliverer (`delivery`). On start,
//! runs the previous daemon left running are marked interrupted and their messages re-queued,
//! so each is answered once.

pub mod activity;
mod approvals;
mod branch_turn;
mod commands;
mod delivery;
mod environment;
mod forge_commands;
mod fork;
mod gate_setup;
mod git_commands;
mod intake;
mod progress;
pub mod settings;
mod spares;
pub mod terminal;
mod trust;
mod turn;
pub mod workspace;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loop_adapter::{Adapter, Author, ChannelKey, Inbound, Message, PlatformKind};
use loop_runner::AgentRunner;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::gate::GateHub;
use crate::permissions::{self, Role, needs_owner};
use loop_store::{Accepted, Store, StoreError};
pub use progress::ProgressState;
pub use workspace::HostFacts;

/// How often the dispatcher looks for work even without a wake-up (budget).
const DISPATCH_TICK: Duration = Duration::from_secs(2);
/// How often a lost Docker engine is asked whether it is back: from the first delay, doubling
/// up to the last, for as long as it takes. A restarted dockerd needs seconds (it stops the
/// containers it finds first), so the cap bounds how long the re-run waits after that.
const ENGINE_RETRY_FIRST: Duration = Duration::from_millis(500);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(10);

/// The run id as shown in a channel: its first block.
fn short_run_id(run_id: &str) -> &str {
    run_id.split('-').next().unwrap_or(run_id)
}

/// Errors a caller of the orchestrator can act on.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no adapter for platform {0}")]
    NoAdapter(&'static str),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// What the event stream carries about runs (a wire shape: `loop chat` and dashboards read it).
pub use loop_wire::api::RunEvent;

/// A turn in flight.
#[derive(Debug, Clone, Serialize)]
pub struct RunningTurn {
    pub run_id: String,
    #[serde(skip)]
    channel: ChannelKey,
    #[serde(skip)]
    cancel: CancellationToken,
    #[serde(skip)]
    started: Instant,
    pub elapsed_sec: u64,
    /// Hosts the egress proxy refused during this turn, each told to the channel once.
    #[serde(skip)]
    egress_refused: HashSet<String>,
    /// Who asked for this turn (its newest message's author), once its messages are claimed.
    #[serde(skip)]
    author: Option<String>,
}

struct Inner {
    store: Store,
    config: Config,
    facts: HostFacts,
    runner: Arc<dyn AgentRunner>,
    adapters: HashMap<PlatformKind, Arc<dyn Adapter>>,
    /// Visible bound on parallel turns: `max_concurrent_runs`.
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, RunningTurn>>,
    /// Wakes the dispatcher.
    wake: Notify,
    /// Wakes the deliverer: the outbox has something new.
    deliver: Notify,
    /// Counts messages leaving the outbox, for those who wait for one.
    delivered: watch::Sender<u64>,
    /// Bumped when a channel's grants change (`/loop allow_user` ...): open dashboards
    /// re-check what their sessions may see.
    grants_changed: watch::Sender<u64>,
    events: broadcast::Sender<RunEvent>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Turns cancelled by a shutdown (rather than `/loop stop`) are left for the next start.
    draining: CancellationToken,
    /// Container tokens, waiting approvals and session answers of the security gate.
    gate: GateHub,
    /// Semantic memory, when `memory.enabled` and its model loaded (set once at start).
    memory: std::sync::OnceLock<crate::memory::Memory>,
    /// Set while the Docker engine is lost: no turn starts (messages wait in the inbox) until
    /// the one watcher that `engine_lost` started sees it answer again.
    engine_down: AtomicBool,
    /// One build of a project's environment at a time.
    builds: crate::environment::BuildFlights,
    /// What the channels' latest turns did, step by step (the dashboard's live thread).
    activity: activity::ActivityLog,
    /// Agents started ahead for the next new thread of a project.
    spares: crate::spares::Spares,
}

/// The orchestrator handle. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl Orchestrator {
    pub fn new(
        store: Store,
        config: Config,
        facts: HostFacts,
        runner: Arc<dyn AgentRunner>,
        adapters: Vec<Arc<dyn Adapter>>,
        shutdown: CancellationToken,
    ) -> Orchestrator {
        let (events, _) = broadcast::channel(1024);
        let slots = Arc::new(Semaphore::new(config.max_concurrent_runs));
        Orchestrator {
            inner: Arc::new(Inner {
                store,
                facts,
                runner,
                adapters: adapters.into_iter().map(|a| (a.platform(), a)).collect(),
                slots,
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                deliver: Notify::new(),
                delivered: watch::Sender::new(0),
                grants_changed: watch::Sender::new(0),
                events,
                tracker: TaskTracker::new(),
                draining: CancellationToken::new(),
                shutdown,
                config,
                gate: GateHub::default(),
                memory: std::sync::OnceLock::new(),
                engine_down: AtomicBool::new(false),
                builds: crate::environment::BuildFlights::default(),
                activity: activity::ActivityLog::default(),
                spares: crate::spares::Spares::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Semantic memory, if the daemon runs with it.
    pub fn memory(&self) -> Option<&crate::memory::Memory> {
        self.inner.memory.get()
    }

    /// Attaches semantic memory (once; a second call is ignored).
    pub fn set_memory(&self, memory: crate::memory::Memory) {
        let _ = self.inner.memory.set(memory);
    }

    /// The security gate's live state (the API authenticates container tokens with it).
    pub fn gate(&self) -> &GateHub {
        &self.inner.gate
    }

    /// The adapter of a platform, if it is running (approval prompts are posted through it).
    pub fn adapter_for(&self, platform: PlatformKind) -> Option<Arc<dyn Adapter>> {
        self.inner.adapters.get(&platform).cloned()
    }

    /// Run progress events.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.inner.events.subscribe()
    }

    /// Changes whenever a channel's grants change.
    pub fn grants_changed(&self) -> watch::Receiver<u64> {
        self.inner.grants_changed.subscribe()
    }

    /// Announces a run event as a turn would (tests of what listens to them).
    #[cfg(test)]
    pub(crate) fn announce(&self, event: RunEvent) {
        let _ = self.inner.events.send(event);
    }

    /// The tool calls, text and output of the channels' latest turns, as they happen.
    pub fn activity(&self) -> &activity::ActivityLog {
        &self.inner.activity
    }

    /// Stops the running turn of `channel` as `/loop stop` does, telling the channel who
    /// stopped it; returns the run id, or `None` when nothing runs there.
    pub async fn stop_turn(&self, channel: &ChannelKey, by: &str) -> Option<String> {
        let run_id = {
            let running = self.lock_running();
            let turn = running.get(&channel.to_string())?;
            turn.cancel.cancel();
            turn.run_id.clone()
        };
        tracing::info!(channel = %channel, run_id = %run_id, by, "turn stopped");
        let text = format!("🛑 Stopping run `{}` ({by}).", short_run_id(&run_id));
        if let Err(err) = self.notify(channel, &text).await {
            tracing::warn!(channel = %channel, error = %err, "cannot tell the channel a turn was stopped");
        }
        Some(run_id)
    }

    /// Idle warm agents (thread, container, age, idle time, memory, CPU).
    pub async fn warm_agents(&self) -> Vec<loop_runner::WarmInfo> {
        self.inner.runner.warm_agents().await
    }

    /// What the running ones of `containers` use (memory, CPU time and rate), by id. Ask it
    /// before [`Orchestrator::warm_agents`]: a warm agent is one of them, so its reading right
    /// after is the same (a first look waits once, not twice).
    pub async fn running_container_usage(
        &self,
        containers: &[loop_runner::ContainerEntry],
    ) -> HashMap<String, loop_runner::ContainerUsage> {
        let live: Vec<String> = containers
            .iter()
            .filter(|c| c.status == loop_runner::ContainerStatus::Running)
            .map(|c| c.id.clone())
            .collect();
        self.inner.runner.container_usage(&live).await
    }

    /// Turns in flight, by channel.
    pub fn running(&self) -> HashMap<String, RunningTurn> {
        let mut running = self.lock_running().clone();
        for turn in running.values_mut() {
            turn.elapsed_sec = turn.started.elapsed().as_secs();
        }
        running
    }

    /// Who asked for the turn running in `channel_key` (the creator of the tasks its agent
    /// schedules), told by the daemon rather than by the container.
    pub fn running_author(&self, channel_key: &str) -> Option<String> {
        self.lock_running()
            .get(channel_key)
            .and_then(|turn| turn.author.clone())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningTurn>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn adapter(&self, platform: PlatformKind) -> Result<Arc<dyn Adapter>, OrchestratorError> {
        self.inner
            .adapters
            .get(&platform)
            .cloned()
            .ok_or(OrchestratorError::NoAdapter(platform.as_str()))
    }

    /// Accepts one inbound item. For a message this returns once it is stored: the caller may
    /// acknowledge it to the platform.
    pub async fn accept(&self, inbound: Inbound) -> Result<Option<Accepted>, OrchestratorError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(OrchestratorError::ShuttingDown);
        }
        match inbound {
            Inbound::Message(message) => {
                if !message.author.is_bot
                    && self
                        .role_of(&message.channel, &message.author)
                        .await?
                        .is_none()
                {
                    tracing::info!(channel = %message.channel, user = %message.author.id, "message from someone not allowed in this channel");
                    if message.triggers {
                        self.refuse_privately(&message.channel, &message.author, NOT_ALLOWED)
                            .await;
                    }
                    return Ok(Some(Accepted::Duplicate));
                }
                self.accept_message(message).await.map(Some)
            }
            Inbound::Command {
                channel,
                author,
                command,
            } => {
                let role = self.role_of(&channel, &author).await?;
                let refusal = match role {
                    None => Some(NOT_ALLOWED),
                    Some(Role::Member) if needs_owner(&command) => Some(OWNERS_ONLY),
                    _ => None,
                };
                if let Some(refusal) = refusal {
                    tracing::info!(channel = %channel, user = %author.id, ?command, "command refused");
                    self.refuse_privately(&channel, &author, refusal).await;
                    return Ok(None);
                }
                self.handle_command(channel, author, command).await?;
                Ok(None)
            }
            // The adapter acknowledges its platform when told the item was taken.
            Inbound::Receipted { item, receipt } => {
                let taken = Box::pin(self.accept(*item)).await;
                receipt.done(taken.is_ok());
                taken
            }
            // A button on a gate approval prompt (see `approvals`).
            Inbound::Approval {
                channel,
                approval_id,
                choice,
                decided_by,
            } => {
                self.answer_approval_in_chat(channel, &approval_id, choice, &decided_by)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Stores a scheduled run's message. Its author is the task, which someone allowed in the
    /// channel created: no permission check.
    pub(crate) async fn accept_scheduled(
        &self,
        message: Message,
    ) -> Result<Accepted, OrchestratorError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(OrchestratorError::ShuttingDown);
        }
        self.accept_message(message).await
    }

    /// What `author` may do in `channel` (see [`crate::permissions`]). The local platform is
    /// authenticated by the admin token: always an owner.
    async fn role_of(
        &self,
        channel: &ChannelKey,
        author: &Author,
    ) -> Result<Option<Role>, OrchestratorError> {
        if channel.platform == PlatformKind::Local {
            return Ok(Some(Role::Owner));
        }
        let grants = self.inner.store.channel_grants(channel).await?;
        Ok(permissions::role_of(
            &self.inner.config.permissions,
            &grants,
            author,
        ))
    }

    /// Tells one person, privately where the platform can, why loop will not do what they asked.
    async fn refuse_privately(&self, channel: &ChannelKey, author: &Author, text: &str) {
        let Ok(adapter) = self.adapter(channel.platform) else {
            return;
        };
        if let Err(err) = adapter.post_private(channel, &author.id, text).await {
            tracing::warn!(channel = %channel, error = %err, "cannot tell someone they are not allowed");
        }
    }

    async fn accept_message(&self, message: Message) -> Result<Accepted, OrchestratorError> {
        if message.author.is_bot {
            return Ok(Accepted::Duplicate);
        }
        if let Some(dir) = &message.work_dir
            && self
                .inner
                .store
                .channel_work_dir(&message.channel)
                .await?
                .as_deref()
                != Some(dir.as_str())
        {
            match workspace::validate_work_dir(&self.inner.config, dir) {
                Ok(dir) => {
                    self.inner
                        .store
                        .set_channel_work_dir(&message.channel, &dir.display().to_string())
                        .await?
                }
                Err(err) => {
                    self.notify(&message.channel, &format!("⚠️ {err}")).await?;
                    return Ok(Accepted::Duplicate);
                }
            }
        }
        let accepted = self.inner.store.accept_message(&message).await?;
        if let Accepted::New(id) = accepted {
            tracing::info!(channel = %message.channel, inbox_id = id, triggers = message.triggers, "message accepted");
            self.inner.wake.notify_one();
        }
        Ok(accepted)
    }

    /// Tells the running turn of the channel whose containers are labelled `slug` that the
    /// egress proxy refused `host` (`text` says why), once per host and turn, so an agent's
    /// retries do not flood the thread. Returns whether a line was posted; without a running
    /// turn there is nobody waiting in the channel, and the daemon log has the refusal.
    pub async fn tell_egress_refusal(&self, slug: &str, host: &str, text: &str) -> bool {
        let channel = {
            let mut running = self.lock_running();
            let Some(turn) = running.values_mut().find(|t| t.channel.slug() == slug) else {
                return false;
            };
            if !turn.egress_refused.insert(host.to_owned()) {
                return false;
            }
            turn.channel.clone()
        };
        if let Err(err) = self.notify(&channel, text).await {
            tracing::warn!(channel = %channel, error = %err, "cannot post an egress refusal");
        }
        true
    }

    /// Queues a notice for a channel; the deliverer posts it.
    async fn notify(&self, channel: &ChannelKey, text: &str) -> Result<(), OrchestratorError> {
        self.inner
            .store
            .enqueue_notice(&channel.to_string(), text)
            .await?;
        self.deliver_soon();
        Ok(())
    }

    /// Recovers from a crash, starts the deliverer, then dispatches turns until shutdown; then
    /// waits for running turns (which were cancelled and will be re-run on the next start) and
    /// lets the deliverer drain the outbox.
    pub async fn run(&self) -> Result<(), OrchestratorError> {
        self.edit_interrupted_status_messages().await?;
        let interrupted = self.inner.store.recover_interrupted_runs().await?;
        if !interrupted.is_empty() {
            tracing::info!(runs = ?interrupted, "re-queued messages of runs interrupted by the last stop");
        }
        // The deliverer that held these claims died with the last daemon.
        let released = self.inner.store.release_outbox_claims().await?;
        if released > 0 {
            tracing::info!(
                released,
                "outbox messages the last daemon was posting will be posted again"
            );
        }
        if let Err(err) = self.resume_forks().await {
            tracing::error!(error = %err, "cannot resume the forks the last daemon left");
        }
        let stop_delivery = CancellationToken::new();
        let deliverer = {
            let this = self.clone();
            let stop = stop_delivery.clone();
            tokio::spawn(async move { this.run_deliverer(stop).await })
        };
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(DISPATCH_TICK) => {}
            }
            if let Err(err) = self.dispatch().await {
                tracing::error!(error = %err, "dispatch failed");
            }
        }
        self.inner.tracker.close();
        let grace = Duration::from_secs(self.inner.config.shutdown_grace_sec);
        tracing::info!(
            grace_sec = grace.as_secs(),
            "orchestrator: intake stopped; letting running turns finish"
        );
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::info!("grace period over: pausing the remaining turns until the next start");
            self.inner.draining.cancel();
            self.inner.tracker.wait().await;
        }
        stop_delivery.cancel();
        if let Err(err) = deliverer.await {
            tracing::error!(error = %err, "the deliverer failed");
        }
        Ok(())
    }

    /// The status messages of the turns the last daemon died in still say "Working": say that
    /// they were interrupted and run again. Done before the runs are re-queued, so a crash in
    /// between only means editing them again on the next start.
    async fn edit_interrupted_status_messages(&self) -> Result<(), OrchestratorError> {
        for run in self.inner.store.unfinished_runs().await? {
            let Some(status_id) = &run.status_message_id else {
                continue;
            };
            let Ok(channel) = run.channel_key.parse::<ChannelKey>() else {
                continue;
            };
            // A platform that is no longer configured cannot be told.
            let Ok(adapter) = self.adapter(channel.platform) else {
                continue;
            };
            let line = format!(
                "⚠️ Interrupted: loop restarted during this turn (run `{}`); it is being run again.",
                short_run_id(&run.id)
            );
            if let Err(err) = adapter.edit(&channel, status_id, &line).await {
                tracing::warn!(channel = %channel, run_id = %run.id, error = %err, "cannot edit the status message of an interrupted run");
            }
        }
        Ok(())
    }

    /// A turn lost the Docker engine: pause dispatching, and (once) start watching for the
    /// engine to come back.
    fn engine_lost(&self) {
        if self.inner.engine_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        self.inner
            .tracker
            .spawn(async move { this.wait_for_engine().await });
    }

    /// Asks the runner whether the engine is back, with exponential backoff, until it is (or
    /// the daemon stops); then dispatching resumes and the re-queued messages run.
    async fn wait_for_engine(&self) {
        use backon::{ExponentialBuilder, Retryable};
        let lost_at = Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(ENGINE_RETRY_FIRST)
            .with_max_delay(ENGINE_RETRY_MAX)
            // No jitter: one watcher per daemon asks its local engine; nothing to spread out.
            .without_max_times();
        let runner = self.inner.runner.clone();
        let back = (|| {
            let runner = runner.clone();
            async move { runner.engine_ready().await }
        })
        .retry(backoff)
        .notify(|err, retry_in| {
            tracing::debug!(error = %err, ?retry_in, "the Docker engine is still unreachable");
        });
        tokio::select! {
            _ = self.inner.shutdown.cancelled() => return,
            ready = back => {
                if let Err(err) = ready {
                    // Unreachable with no retry limit; keep dispatching paused is worse.
                    tracing::warn!(error = %err, "gave up waiting for the Docker engine");
                }
            }
        }
        tracing::info!(
            down_ms = u64::try_from(lost_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            "the Docker engine is back: running the turns it lost"
        );
        self.inner.engine_down.store(false, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Starts a turn for every channel with waiting messages and a free slot.
    async fn dispatch(&self) -> Result<(), OrchestratorError> {
        if self.inner.engine_down.load(Ordering::SeqCst) {
            // A turn started now would only lose the engine again; messages wait queued.
            return Ok(());
        }
        for key in self.inner.store.channels_with_pending().await? {
            if self.lock_running().contains_key(&key) {
                continue;
            }
            let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                // Every slot is busy: the next finished turn wakes the dispatcher.
                break;
            };
            let Ok(channel) = key.parse::<ChannelKey>() else {
                tracing::warn!(channel = %key, "skipping a malformed channel key");
                continue;
            };
            let run_id = uuid::Uuid::new_v4().to_string();
            let cancel = self.inner.draining.child_token();
            self.lock_running().insert(
                key.clone(),
                RunningTurn {
                    run_id: run_id.clone(),
                    channel: channel.clone(),
                    cancel: cancel.clone(),
                    started: Instant::now(),
                    elapsed_sec: 0,
                    egress_refused: HashSet::new(),
                    author: None,
                },
            );
            let this = self.clone();
            self.inner.tracker.spawn(async move {
                if let Err(err) = this.run_turn(&channel, &run_id, cancel).await {
                    tracing::error!(channel = %channel, run_id = %run_id, error = %err, "turn failed");
                }
                this.lock_running().remove(&channel.to_string());
                drop(permit);
                this.inner.wake.notify_one();
                this.after_variant_turn(&channel).await;
            });
        }
        Ok(())
    }
}

const NOT_ALLOWED: &str = "🔒 You are not allowed to use loop in this channel. An owner can let you in with `/loop allow_user <your user id>`.";
const OWNERS_ONLY: &str = "🔒 Only this channel's owners can do that.";
