//! The container registry: the one in-memory source of truth about loop's containers
//! (agent, shell, chrome), rebuilt from Docker labels at start and kept honest by a
//! reconcile loop.
//!
//! State lives behind a `std::sync::Mutex`: every critical section is a map lookup or insert
//! with no `.await` inside. Delayed removals are tasks owned by the registry's tracker and
//! cancelled by its token, so nothing outlives [`ContainerRegistry::shutdown`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::docker::DockerError;
use crate::naming::{
    APP_AGENT, LABEL_APP, LABEL_CHANNEL, LABEL_DAEMON, LABEL_PROXY_DAEMON, LABEL_PROXY_OWNER,
    LABEL_TYPE,
};
use crate::spec::ContainerKind;

/// How often [`ContainerRegistry::run_reconcile_loop`] compares the registry with Docker.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// Lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    Running,
    Stopped,
    PendingRemoval,
}

/// One tracked container.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ContainerEntry {
    pub id: String,
    pub name: String,
    pub channel_id: String,
    #[serde(serialize_with = "ser_kind")]
    pub kind: ContainerKind,
    pub status: ContainerStatus,
    /// Unix ms when a pending removal fires.
    pub remove_at_ms: Option<i64>,
}

fn ser_kind<S: serde::Serializer>(kind: &ContainerKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.label())
}

/// What subscribers (the WebSocket event stream) hear.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type")]
pub enum RegistryEvent {
    #[serde(rename = "container.registered")]
    Registered { container: ContainerEntry },
    #[serde(rename = "container.status_changed")]
    StatusChanged {
        id: String,
        from: ContainerStatus,
        to: ContainerStatus,
    },
    #[serde(rename = "container.removed")]
    Removed { id: String },
}

struct Inner {
    entries: HashMap<String, ContainerEntry>,
    removal_timers: HashMap<String, CancellationToken>,
    /// Containers whose removal failed because the engine did not answer: removed again when
    /// it does ([`ContainerRegistry::retry_failed_removals`]).
    unremoved: HashSet<String>,
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct ContainerRegistry {
    docker: Docker,
    /// Only containers labelled with this daemon id are restored, reconciled and cleaned up,
    /// so two daemons (or parallel tests) on one engine never touch each other's containers.
    daemon_id: String,
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<RegistryEvent>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    shell_locks: Arc<tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// `~/.loop/run`: each container's policy files live in `{run_dir}/{name}/` and go with it.
    run_dir: Option<std::path::PathBuf>,
}

impl ContainerRegistry {
    /// A registry for the daemon instance `daemon_id` (stable across restarts of one daemon).
    pub fn new(docker: Docker, daemon_id: impl Into<String>) -> ContainerRegistry {
        let (events, _) = broadcast::channel(256);
        ContainerRegistry {
            docker,
            daemon_id: daemon_id.into(),
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                removal_timers: HashMap::new(),
                unremoved: HashSet::new(),
            })),
            events,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            shell_locks: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
            run_dir: None,
        }
    }

    /// Removes `{run_dir}/{name}/` (the gate and proxy policy files) with each container.
    pub fn with_run_dir(mut self, run_dir: impl Into<std::path::PathBuf>) -> ContainerRegistry {
        self.run_dir = Some(run_dir.into());
        self
    }

    /// Deletes the policy directory of container `name`, if there is one.
    fn remove_run_files(&self, name: &str) {
        let Some(run_dir) = &self.run_dir else {
            return;
        };
        // Only loop's own names: never a path that leaves the run directory.
        let ours = name.starts_with("loop-")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.contains("..");
        if !ours {
            return;
        }
        match std::fs::remove_dir_all(run_dir.join(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(container = %name, error = %err, "cannot remove the container's policy files")
            }
        }
    }

    /// Deletes the policy directories whose container no longer exists (left by a daemon that
    /// was killed, or containers removed behind loop's back). Returns how many went.
    pub async fn sweep_run_dir(&self) -> usize {
        let Some(run_dir) = &self.run_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(run_dir) else {
            return 0;
        };
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || !name.starts_with("loop-") {
                continue;
            }
            let gone = matches!(
                self.docker.inspect_container(&name, None).await,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                })
            );
            if gone {
                self.remove_run_files(&name);
                swept += 1;
            }
        }
        swept
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// Subscribes to registry events.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic mid-insert; the maps are still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a container. For singleton kinds (shell, chrome) an existing running entry of
    /// the same channel is returned instead. Re-registering cancels a pending removal.
    pub fn register(&self, entry: ContainerEntry) -> ContainerEntry {
        let mut inner = self.lock();
        if matches!(entry.kind, ContainerKind::Shell | ContainerKind::Chrome)
            && let Some(existing) = inner.entries.values().find(|e| {
                e.kind == entry.kind
                    && e.channel_id == entry.channel_id
                    && e.status == ContainerStatus::Running
                    && e.id != entry.id
            })
        {
            return existing.clone();
        }
        if let Some(timer) = inner.removal_timers.remove(&entry.id) {
            timer.cancel();
        }
        inner.entries.insert(entry.id.clone(), entry.clone());
        drop(inner);
        let _ = self.events.send(RegistryEvent::Registered {
            container: entry.clone(),
        });
        entry
    }

    /// Changes a container's status and tells subscribers.
    pub fn set_status(&self, id: &str, status: ContainerStatus) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(id) else {
            return;
        };
        let from = entry.status;
        if from == status {
            return;
        }
        entry.status = status;
        drop(inner);
        let _ = self.events.send(RegistryEvent::StatusChanged {
            id: id.to_owned(),
            from,
            to: status,
        });
    }

    /// Forgets a container (without touching Docker).
    pub fn unregister(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(timer) = inner.removal_timers.remove(id) {
            timer.cancel();
        }
        let removed = inner.entries.remove(id).is_some();
        drop(inner);
        if removed {
            let _ = self
                .events
                .send(RegistryEvent::Removed { id: id.to_owned() });
        }
    }

    pub fn get(&self, id: &str) -> Option<ContainerEntry> {
        self.lock().entries.get(id).cloned()
    }

    /// Every entry, sorted by name.
    pub fn list(&self) -> Vec<ContainerEntry> {
        let mut entries: Vec<_> = self.lock().entries.values().cloned().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// Marks a container pending-removal and removes it from Docker after `delay` (the
    /// `container_keep_alive_sec`, so its logs stay readable for a while).
    pub fn schedule_remove(&self, id: &str, delay: Duration) {
        let token = self.shutdown.child_token();
        {
            let mut inner = self.lock();
            let Some(entry) = inner.entries.get_mut(id) else {
                return;
            };
            entry.remove_at_ms = Some(
                chrono::Utc::now().timestamp_millis()
                    + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            );
            if let Some(old) = inner.removal_timers.insert(id.to_owned(), token.clone()) {
                old.cancel();
            }
        }
        self.set_status(id, ContainerStatus::PendingRemoval);
        let registry = self.clone();
        let id = id.to_owned();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Err(err) = registry.remove_now(&id).await {
                        tracing::warn!(container = %id, error = %err, "scheduled removal failed");
                    }
                }
            }
        });
    }

    /// Force-removes a container from Docker and the registry, and (best effort) what its
    /// agent created through the docker proxy.
    pub async fn remove_now(&self, id: &str) -> Result<(), DockerError> {
        let name = match self.get(id) {
            Some(entry) => Some(entry.name),
            None => self
                .docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|info| info.name)
                .map(|n| n.trim_start_matches('/').to_owned()),
        };
        let result = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
        self.unregister(id);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            self.remove_proxy_owned(&name).await;
            self.remove_run_files(&name);
        }
        match result {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(source) => {
                if crate::docker::engine_unreachable(&source) {
                    self.lock().unremoved.insert(id.to_owned());
                }
                Err(DockerError::Api {
                    call: "remove_container",
                    source,
                })
            }
        }
    }

    /// Removes the containers a dead engine could not remove (a turn's container, a retired
    /// warm agent), once it answers again. Returns how many went.
    pub async fn retry_failed_removals(&self) -> usize {
        let ids: Vec<String> = self.lock().unremoved.drain().collect();
        let mut removed = 0;
        for id in ids {
            match self.remove_now(&id).await {
                Ok(()) => removed += 1,
                // Still unreachable (kept for the next try), or refused: the reconcile loop's
                // own failure says more.
                Err(err) => {
                    tracing::debug!(container = %id, error = %err, "cannot remove a container left by a lost engine yet")
                }
            }
        }
        removed
    }

    /// Removes, best effort, the containers and networks labelled
    /// `loop.dockerproxy.owner=<agent>`: what that agent created through its docker proxy.
    pub async fn remove_proxy_owned(&self, agent: &str) {
        self.remove_labelled(&format!("{LABEL_PROXY_OWNER}={agent}"))
            .await;
    }

    async fn remove_labelled(&self, label: &str) {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await;
        match containers {
            Ok(list) => {
                for id in list.into_iter().filter_map(|c| c.id) {
                    let removed = self
                        .docker
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: true,
                                v: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                    match removed {
                        Ok(()) => {
                            tracing::debug!(container = %id, label, "removed a container the agent created")
                        }
                        Err(err) => {
                            tracing::warn!(container = %id, error = %err, "cannot remove a container the agent created")
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, label, "cannot list the containers the agent created")
            }
        }
        let networks = self
            .docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(filters),
            }))
            .await;
        match networks {
            Ok(list) => {
                for id in list.into_iter().filter_map(|n| n.id) {
                    if let Err(err) = self.docker.remove_network(&id).await {
                        tracing::warn!(network = %id, error = %err, "cannot remove a network the agent created");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, label, "cannot list the networks the agent created")
            }
        }
    }

    /// Loop's containers as Docker sees them (running or not).
    pub async fn docker_containers(&self) -> Result<Vec<ContainerEntry>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_APP}={APP_AGENT}"),
                format!("{LABEL_DAEMON}={}", self.daemon_id),
            ],
        )]);
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|source| DockerError::Api {
                call: "list_containers",
                source,
            })?;
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                let labels = summary.labels.unwrap_or_default();
                // Created by an agent through its docker proxy (which always sets the owner
                // label), whatever other labels its image gave it: never one of loop's own.
                if labels.contains_key(LABEL_PROXY_OWNER) {
                    return None;
                }
                let id = summary.id?;
                let name = summary
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned();
                // A container that is created but not started yet (a turn in its first
                // moments) is not stopped: treating it so would remove it under the turn.
                let running = summary.state.map(|s| s.to_string()).is_none_or(|state| {
                    matches!(
                        state.as_str(),
                        "running" | "created" | "restarting" | "paused"
                    )
                });
                Some(ContainerEntry {
                    id,
                    name,
                    channel_id: labels.get(LABEL_CHANNEL).cloned().unwrap_or_default(),
                    kind: labels
                        .get(LABEL_TYPE)
                        .and_then(|l| ContainerKind::from_label(l))
                        .unwrap_or(ContainerKind::Agent),
                    status: if running {
                        ContainerStatus::Running
                    } else {
                        ContainerStatus::Stopped
                    },
                    remove_at_ms: None,
                })
            })
            .collect())
    }

    /// Fills the registry from labelled containers that survived a daemon restart, without
    /// broadcasting events. Returns how many were found.
    pub async fn restore(&self) -> Result<usize, DockerError> {
        let live = self.docker_containers().await?;
        let count = live.len();
        let mut inner = self.lock();
        for entry in live {
            inner.entries.insert(entry.id.clone(), entry);
        }
        Ok(count)
    }

    /// One reconcile pass: drop entries Docker no longer has, sync statuses, and schedule
    /// removal for containers that just stopped.
    pub async fn reconcile_once(&self, keep_alive: Duration) -> Result<(), DockerError> {
        self.retry_failed_removals().await;
        let live: HashMap<String, ContainerEntry> = self
            .docker_containers()
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let known: Vec<ContainerEntry> = self.lock().entries.values().cloned().collect();
        for entry in known {
            match live.get(&entry.id) {
                None => self.unregister(&entry.id),
                Some(docker) => {
                    if entry.status == ContainerStatus::Running
                        && docker.status == ContainerStatus::Stopped
                    {
                        self.set_status(&entry.id, ContainerStatus::Stopped);
                        if entry.kind == ContainerKind::Agent {
                            self.schedule_remove(&entry.id, keep_alive);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reconciles every [`RECONCILE_INTERVAL`] until `token` is cancelled.
    pub async fn run_reconcile_loop(&self, keep_alive: Duration, token: CancellationToken) {
        let mut interval = tokio::time::interval(RECONCILE_INTERVAL);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = interval.tick() => {
                    if let Err(err) = self.reconcile_once(keep_alive).await {
                        tracing::warn!(error = %err, "reconcile failed");
                    }
                }
            }
        }
    }

    /// Force-removes every container of this daemon (graceful shutdown, or orphans after a
    /// crash).
    pub async fn cleanup(&self) -> Result<usize, DockerError> {
        let all = self.docker_containers().await?;
        let count = all.len();
        for entry in all {
            self.remove_now(&entry.id).await?;
        }
        // What agents of this daemon created through their docker proxies, whichever agent
        // (a crash leaves them behind their agents).
        self.remove_labelled(&format!("{LABEL_PROXY_DAEMON}={}", self.daemon_id))
            .await;
        Ok(count)
    }

    /// Per-channel lock for find-or-create of singleton containers: concurrent callers for one
    /// channel get one container.
    pub async fn channel_lock(&self, channel_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.shell_locks.lock().await;
        locks
            .entry(channel_id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// A running container of `kind` for the channel, if the registry knows one.
    pub fn find_running(&self, channel_id: &str, kind: ContainerKind) -> Option<ContainerEntry> {
        self.lock()
            .entries
            .values()
            .find(|e| {
                e.channel_id == channel_id && e.kind == kind && e.status == ContainerStatus::Running
            })
            .cloned()
    }

    /// Cancels pending timers and waits for their tasks.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
