//! `loop serve`: startup order, the root cancellation token, and shutdown order.
//!
//! Startup: database (migrations) → Docker and the container registry (orphans of a crashed
//! daemon removed) → host API on loopback and the Docker bridge → orchestrator (re-queues
//! interrupted turns) → platform adapters. Shutdown (SIGTERM or Ctrl-C): cancel the root token
//! so intake stops; running turns get `shutdown_grace_sec`, then are paused for the next
//! start; the API and the registry stop; the database closes last.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use loop_adapter::{Adapter, Inbound};
use loop_adapter_local::LocalAdapter;
use loop_runner::{AgentRunner, ContainerRegistry, DockerRunner, WarmConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::dashboard::session::{ProxyLogin, Sessions};
use crate::orchestrator::{HostFacts, Orchestrator};
use loop_store::{Store, StoreError};

/// File in the loop directory where the daemon writes the address it listens on.
pub const API_ADDR_FILE: &str = "api.addr";
/// File holding the daemon's stable instance id (labels its containers).
pub const DAEMON_ID_FILE: &str = "daemon-id";
/// Inbound items buffered between adapters and the orchestrator.
const INBOUND_BUFFER: usize = 1024;
/// Threads per platform remembered at start (the adapters keep at most 10 000 anyway).
const KNOWN_THREADS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid api_addr {addr:?}: {reason}")]
    ApiAddr { addr: String, reason: String },
    #[error("cannot bind the host API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} (loop needs Docker: `loop doctor` says what to fix)")]
    Docker(#[from] loop_runner::docker::DockerError),
    #[error("cannot write {path}: {source}")]
    StateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] api::TokenError),
    #[error("cannot set up Slack: {0}")]
    SlackSetup(String),
    #[error("cannot set up Discord: {0}")]
    DiscordSetup(String),
    #[error("cannot set up egress control (gates.egress): {0}")]
    Egress(#[from] crate::egress::EgressError),
    #[error("{0} {1:?} is not an HTTP header name")]
    ProxyHeader(&'static str, String),
}

/// The dashboard's sessions: with `dashboard_proxy_header`, also the users a reverse proxy
/// names (with the token of `dashboard-proxy.token`, created here on first use).
fn dashboard_sessions(config: &Config) -> Result<Sessions, DaemonError> {
    let Some(header) = &config.dashboard_proxy_header else {
        return Ok(Sessions::default());
    };
    let header_name = |key: &'static str, name: &str| {
        axum::http::HeaderName::try_from(name.trim())
            .map_err(|_| DaemonError::ProxyHeader(key, name.to_owned()))
    };
    let user_header = header_name("dashboard_proxy_header", header)?;
    let roles_header = config
        .dashboard_proxy_roles_header
        .as_deref()
        .map(|name| header_name("dashboard_proxy_roles_header", name))
        .transpose()?;
    let token = api::load_or_create_token(&config.loop_dir, api::DASHBOARD_PROXY_TOKEN_FILE)?;
    tracing::info!(header = %user_header, roles = ?roles_header, "the dashboard takes the users a reverse proxy names (with its token)");
    Ok(Sessions::with_proxy(ProxyLogin {
        user_header,
        roles_header,
        token,
    }))
}

/// Resolves `api_addr` (`:8222`, `127.0.0.1:8222`) to the loopback address loop binds.
/// A bare port binds loopback: the Go Loop's habit of listening on every interface is exactly
/// what loop must not repeat.
pub fn api_bind_addr(api_addr: &str) -> Result<SocketAddr, DaemonError> {
    let text = if let Some(port) = api_addr.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        api_addr.to_owned()
    };
    text.parse()
        .map_err(|err: std::net::AddrParseError| DaemonError::ApiAddr {
            addr: api_addr.to_owned(),
            reason: err.to_string(),
        })
}

/// The daemon's stable id, created on first start.
pub fn daemon_id(loop_dir: &Path) -> Result<String, DaemonError> {
    let path = loop_dir.join(DAEMON_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let id = format!("d{}", &crate::gate::tokens::random_token()[..12]);
    std::fs::create_dir_all(loop_dir)
        .and_then(|_| std::fs::write(&path, &id))
        .map_err(|source| DaemonError::StateFile {
            path: path.display().to_string(),
            source,
        })?;
    Ok(id)
}

/// The Docker bridge's gateway address: containers reach the host API there
/// (`host.docker.internal` resolves to it).
async fn bridge_gateway(docker: &bollard::Docker) -> Option<IpAddr> {
    let network = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    // Docker 20.10 often leaves the default bridge's gateway out of IPAM: then it is the
    // subnet's first address (what docker0 carries).
    network.ipam?.config?.into_iter().find_map(|c| {
        c.gateway.and_then(|g| g.parse().ok()).or_else(|| {
            let subnet = c.subnet?;
            let base: Ipv4Addr = subnet.split('/').next()?.parse().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(u32::from(base) + 1)))
        })
    })
}

/// The Discord adapter from the config. Approvers are `permissions.approvers` (users and
/// roles), else the owners; with neither, nobody may decide from Discord.
fn discord_adapter(config: &Config) -> Result<loop_adapter_discord::DiscordAdapter, DaemonError> {
    let id = |field: &str, value: &str| -> Result<Option<u64>, DaemonError> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|id| *id != 0)
            .map(Some)
            .ok_or_else(|| DaemonError::DiscordSetup(format!("{field} is not a Discord id")))
    };
    let mut settings = loop_adapter_discord::DiscordSettings::new(secrecy::SecretString::from(
        config.discord_token.expose().unwrap_or_default().to_owned(),
    ));
    settings.application_id = id("discord_app_id", &config.discord_app_id)?;
    settings.command_guild = id("discord_guild_id", &config.discord_guild_id)?;
    settings.api_url = config.discord.api_url.clone();
    settings.require_mention_in_threads = config.discord.require_mention_in_threads;
    settings.allowed_guilds = config.discord.allowed_guilds.clone();
    settings.allowed_channels = config.discord.allowed_channels.clone();
    settings.allowed_users = config.discord.allowed_users.clone();
    let approvers = crate::permissions::approvers(&config.permissions);
    settings.approver_users = approvers.users.clone();
    settings.approver_roles = approvers.roles.clone();
    if settings.approver_users.is_empty() && settings.approver_roles.is_empty() {
        tracing::warn!(
            "discord: no approvers configured (permissions.approvers.users/roles); approval buttons will refuse everyone"
        );
    }
    Ok(loop_adapter_discord::DiscordAdapter::new(settings))
}

/// The Slack adapter from the config. Approvers are `permissions.approvers.users`, else the
/// owners; with neither, nobody may decide from Slack (the admin API still can).
fn slack_adapter(config: &Config) -> Result<loop_adapter_slack::SlackAdapter, DaemonError> {
    let secret = |s: &crate::config::Secret| {
        secrecy::SecretString::from(s.expose().unwrap_or_default().to_owned())
    };
    let mut settings = loop_adapter_slack::SlackSettings::new(
        secret(&config.slack_bot_token),
        secret(&config.slack_app_token),
    );
    settings.api_url = config.slack.api_url.clone();
    settings.require_mention_in_threads = config.slack.require_mention_in_threads;
    settings.allowed_users = config.slack.allowed_users.clone();
    settings.allowed_channels = config.slack.allowed_channels.clone();
    settings.approvers = if config.permissions.approvers.users.is_empty() {
        config.permissions.owners.users.clone()
    } else {
        config.permissions.approvers.users.clone()
    };
    if settings.approvers.is_empty() {
        tracing::warn!(
            "slack: no approvers configured (permissions.approvers.users); approval buttons will refuse everyone"
        );
    }
    if let Some(events) = &config.slack.events_api {
        settings.events_api = Some(loop_adapter_slack::EventsApiSettings {
            listen: events
                .listen
                .parse()
                .map_err(|err: std::net::AddrParseError| {
                    DaemonError::SlackSetup(format!("slack.events_api.listen: {err}"))
                })?,
            signing_secret: secret(&events.signing_secret),
        });
    }
    loop_adapter_slack::SlackAdapter::new(settings)
        .map_err(|err| DaemonError::SlackSetup(err.to_string()))
}

/// Runs until `shutdown` is cancelled.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&config.database_url()).await?;
    tracing::info!(backend = store.backend_name(), "database ready");
    // Approval prompts of the previous daemon wait for nobody now: their containers are gone.
    let expired = store.expire_pending_approvals().await?;
    if expired > 0 {
        tracing::info!(
            expired,
            "expired approval prompts left by the previous daemon"
        );
    }

    let docker = loop_runner::docker::connect().await?;
    let daemon_id = daemon_id(&config.loop_dir)?;
    let registry = ContainerRegistry::new(docker.clone(), daemon_id.clone())
        .with_run_dir(config.loop_dir.join("run"));
    let restored = registry.restore().await?;
    if restored > 0 {
        // No turn survives a daemon restart: its messages are re-queued and re-run, so the
        // old containers are orphans.
        let removed = registry.cleanup().await?;
        tracing::info!(removed, "removed containers left by the previous daemon");
    }
    let swept = registry.sweep_run_dir().await;
    if swept > 0 {
        tracing::info!(swept, "removed policy files of containers that are gone");
    }

    // Host API: loopback, plus the Docker bridge so containers can call back.
    let loopback = api_bind_addr(&config.api_addr)?;
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: loopback,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: loopback,
        source,
    })?;
    let mut listeners = vec![listener];
    if loopback.ip().is_loopback()
        && let Some(gateway) = bridge_gateway(&docker).await
    {
        let addr = SocketAddr::new(gateway, local_addr.port());
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listeners.push(listener),
            Err(err) => {
                tracing::warn!(%addr, error = %err, "cannot bind the Docker bridge; containers cannot reach the API")
            }
        }
    }
    let addr_file = config.loop_dir.join(API_ADDR_FILE);
    std::fs::write(&addr_file, local_addr.to_string()).map_err(|source| {
        DaemonError::StateFile {
            path: addr_file.display().to_string(),
            source,
        }
    })?;

    let mut facts = HostFacts::detect(&config, daemon_id.clone(), local_addr.port());
    // Egress control: agents on an internal network reach only its gateway, where the API
    // listens too and the allowlisting proxy is their way out.
    let egress = if config.gates.egress.enabled {
        let base_url = config
            .envs
            .get("ANTHROPIC_BASE_URL")
            .and_then(|v| v.as_str());
        // The proxy runs on the host, where `host.docker.internal` (a model gateway's usual
        // name in `ANTHROPIC_BASE_URL`) does not resolve: it leads where Docker's
        // `host-gateway` does for containers without egress control.
        let allow = crate::egress::allowlist(&config.gates.egress.allowed_hosts, base_url)
            .with_host_gateway(bridge_gateway(&docker).await);
        let setup = crate::egress::EgressSetup::start(&docker, allow).await?;
        let addr = SocketAddr::new(IpAddr::V4(setup.gateway), local_addr.port());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        listeners.push(listener);
        setup.apply(&mut facts, local_addr.port())?;
        let firewall = setup.firewall(local_addr.port(), &daemon_id)?;
        tracing::info!(network = crate::egress::NETWORK, proxy = ?setup.proxy.local_addr().ok(), allowed = ?setup.allow.describe(), "egress control on");
        Some((setup, firewall))
    } else {
        None
    };
    let local = LocalAdapter::new();
    let mut adapters: Vec<Arc<dyn Adapter>> = vec![Arc::new(local.clone())];
    if config.platforms.contains(&crate::config::Platform::Slack) {
        adapters.push(Arc::new(slack_adapter(&config)?));
    }
    if config.platforms.contains(&crate::config::Platform::Discord) {
        adapters.push(Arc::new(discord_adapter(&config)?));
    }
    let warm = WarmConfig {
        idle: std::time::Duration::from_secs(config.warm_idle_sec),
        max_agents: config
            .max_warm_threads
            .unwrap_or_else(WarmConfig::default_max_agents),
    };
    let docker_runner = Arc::new(DockerRunner::with_warm(registry.clone(), warm));
    let runner: Arc<dyn AgentRunner> = docker_runner.clone();
    let orchestrator = Orchestrator::new(
        store.clone(),
        config.clone(),
        facts,
        runner,
        adapters.clone(),
        shutdown.clone(),
    );
    let tracker = TaskTracker::new();
    if crate::memory::downloads_model(&config) {
        // A download (first start, or a hub that hangs: its client has no timeouts) must not
        // keep the daemon from answering; memory comes on when the model is there.
        let (orchestrator, config, store) = (orchestrator.clone(), config.clone(), store.clone());
        let stop = shutdown.child_token();
        tracker.spawn(async move {
            if let Some(memory) = attach_memory(&orchestrator, &config, &store).await {
                reembed_stale(memory, stop).await;
            }
        });
    } else if let Some(memory) = attach_memory(&orchestrator, &config, &store).await {
        // A local model (or Ollama) is ready in well under a second: turns find memory on from
        // the start; only re-embedding after a model change goes on in the background.
        tracker.spawn(reembed_stale(memory, shutdown.child_token()));
    }
    let mut api_state = ApiState::new(
        orchestrator.clone(),
        local,
        Some(registry.clone()),
        api::load_or_create_admin_token(&config.loop_dir)?,
    );
    api_state.dashboard = dashboard_sessions(&config)?;
    let terminals = api_state.terminals.clone();
    // The dashboard (`/ui/`) shares the listener and the state; its routes take a browser
    // session cookie only.
    let router = api::router(api_state.clone()).merge(crate::dashboard::router(api_state));
    // The API outlives intake: clients can still read answers while turns drain.
    let api_stop = CancellationToken::new();
    if let Some((egress, firewall)) = egress {
        let (refusals, refused) = tokio::sync::mpsc::channel(crate::egress::REFUSAL_BUFFER);
        tracker.spawn(crate::egress::serve(
            egress.proxy,
            egress.allow,
            firewall,
            refusals,
            api_stop.clone(),
        ));
        tracker.spawn(crate::egress::notice::tell_channels(
            refused,
            docker.clone(),
            daemon_id.clone(),
            orchestrator.clone(),
            api_stop.clone(),
        ));
    }
    for listener in listeners {
        let router = router.clone();
        let stop = api_stop.clone();
        let addr = listener.local_addr().ok();
        tracing::info!(?addr, "host API listening");
        tracker.spawn(async move {
            if let Err(err) = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %err, "host API stopped");
            }
        });
    }

    // Warm agents are retired when idle, and all of them when the daemon stops.
    let reaper_stop = CancellationToken::new();
    let reaper = {
        let runner = docker_runner.clone();
        let token = reaper_stop.clone();
        tokio::spawn(async move { runner.run_warm_reaper(token).await })
    };
    let keep_alive = std::time::Duration::from_secs(config.container_keep_alive_sec);
    {
        let registry = registry.clone();
        let token = shutdown.child_token();
        tracker.spawn(async move { registry.run_reconcile_loop(keep_alive, token).await });
    }

    if config.gates.audit.retention_days > 0 {
        let store = store.clone();
        let retention = u64::from(config.gates.audit.retention_days);
        let token = shutdown.child_token();
        tracker.spawn(async move { purge_audit_loop(store, retention, token).await });
    }

    if config.git.worktrees && config.git.remove_idle_days > 0 {
        let orchestrator = orchestrator.clone();
        let days = config.git.remove_idle_days;
        let token = shutdown.child_token();
        tracker.spawn(async move { remove_idle_worktrees_loop(orchestrator, days, token).await });
    }

    // Threads loop took part in before this start: replies there still need no mention.
    for adapter in &adapters {
        match store.known_threads(adapter.platform(), KNOWN_THREADS).await {
            Ok(threads) if !threads.is_empty() => {
                tracing::debug!(
                    platform = adapter.platform().as_str(),
                    threads = threads.len(),
                    "threads remembered"
                );
                adapter.remember_threads(&threads);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the threads loop takes part in"),
        }
    }

    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(INBOUND_BUFFER);
    for adapter in adapters {
        let tx = inbound_tx.clone();
        let token = shutdown.child_token();
        tracker.spawn(async move {
            if let Err(err) = adapter.run(tx, token).await {
                tracing::error!(platform = adapter.platform().as_str(), error = %err, "adapter stopped");
            }
        });
    }
    drop(inbound_tx);
    {
        let orchestrator = orchestrator.clone();
        let token = shutdown.child_token();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    item = inbound_rx.recv() => match item {
                        Some(item) => {
                            if let Err(err) = orchestrator.accept(item).await {
                                tracing::error!(error = %err, "cannot accept an inbound item");
                            }
                        }
                        None => break,
                    },
                }
            }
        });
    }

    // The scheduler turns due tasks into inbox messages; it stops with intake.
    {
        let settings = crate::scheduler::SchedulerSettings::from_config(
            &config,
            &loop_runner::spec::detect_timezone(std::env::var("TZ").ok().as_deref()),
        );
        let scheduler = crate::scheduler::Scheduler::new(
            store.clone(),
            Arc::new(orchestrator.clone()),
            Arc::new(crate::scheduler::SystemClock),
            settings,
        );
        let token = shutdown.child_token();
        tracker.spawn(async move { scheduler.run(token).await });
    }

    tracing::info!("loop is running");
    if let Err(err) = orchestrator.run().await {
        tracing::error!(error = %err, "orchestrator stopped");
    }
    api_stop.cancel();
    // Terminals' shells end before the containers they run in go.
    terminals.shutdown().await;
    orchestrator.discard_spares().await;
    reaper_stop.cancel();
    if let Err(err) = reaper.await {
        tracing::warn!(error = %err, "warm agent reaper failed");
    }
    tracker.close();
    tracker.wait().await;
    registry.shutdown().await;
    match registry.cleanup().await {
        Ok(removed) => tracing::info!(removed, "containers cleaned up"),
        Err(err) => tracing::warn!(error = %err, "container cleanup failed"),
    }
    let _ = std::fs::remove_file(&addr_file);
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// The address local clients should call: what the running daemon wrote, else the config.
pub fn client_api_addr(config: &Config) -> Result<SocketAddr, DaemonError> {
    if let Ok(text) = std::fs::read_to_string(config.loop_dir.join(API_ADDR_FILE))
        && let Ok(addr) = text.trim().parse::<SocketAddr>()
    {
        return Ok(addr);
    }
    let addr = api_bind_addr(&config.api_addr)?;
    Ok(if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    })
}

/// Drops gate audit entries and answered approvals older than `gates.audit.retention_days`,
/// at start and then hourly.
async fn purge_audit_loop(store: Store, retention_days: u64, stop: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    let keep_ms = i64::try_from(retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    loop {
        let cutoff = loop_store::now_ms().saturating_sub(keep_ms);
        match store.purge_gate_audit(cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, retention_days, "old gate audit entries removed"),
            Err(err) => tracing::warn!(error = %err, "cannot purge the gate audit log"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Removes the worktrees of threads not worked in for `git.remove_idle_days` whose work is on
/// a remote or in their base (see [`crate::branches::idle`]), at start and then hourly. A
/// thread with a running turn is left alone.
async fn remove_idle_worktrees_loop(
    orchestrator: Orchestrator,
    days: u64,
    stop: CancellationToken,
) {
    use crate::branches::idle::{IdleOutcome, idle_cutoff, remove_idle_worktrees};
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    loop {
        if let Some(cutoff) = idle_cutoff(loop_store::now_ms(), days) {
            let is_busy = |thread: &loop_adapter::ChannelKey| {
                orchestrator.running().contains_key(&thread.to_string())
            };
            match remove_idle_worktrees(orchestrator.store(), cutoff, is_busy).await {
                Ok(outcomes) => {
                    for (record, outcome) in outcomes {
                        let (channel, branch) = (&record.channel_key, &record.branch);
                        match outcome {
                            Ok(IdleOutcome::Removed) => {
                                tracing::info!(channel = %channel, %branch, worktree = %record.worktree, idle_days = days, "idle worktree removed; its branch stays")
                            }
                            Ok(kept) => {
                                tracing::debug!(channel = %channel, %branch, ?kept, "idle worktree kept")
                            }
                            Err(err) => {
                                tracing::warn!(channel = %channel, %branch, error = %err, "cannot check an idle worktree")
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot read idle worktrees"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Loads the embedding model and attaches semantic memory when `memory.enabled`. A model that
/// cannot be loaded is logged and memory stays off: the daemon runs without it.
async fn attach_memory(
    orchestrator: &Orchestrator,
    config: &Config,
    store: &Store,
) -> Option<crate::memory::Memory> {
    if !config.memory.enabled {
        return None;
    }
    let source = crate::memory::describe_model_source(config);
    if crate::memory::downloads_model(config) {
        // The first start downloads the model (about 90 MB); memory is off until then.
        tracing::info!(%source, "loading the embedding model in the background (downloaded on first use)");
    }
    let loading = config.clone();
    match tokio::task::spawn_blocking(move || crate::memory::load_embedder(&loading, false)).await {
        Ok(Ok(embedder)) => {
            let memory = crate::memory::Memory::new(store.clone(), embedder, &config.memory);
            orchestrator.set_memory(memory.clone());
            tracing::info!(%source, "semantic memory on");
            Some(memory)
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "semantic memory is off: cannot load the embedding model");
            None
        }
        Err(err) => {
            tracing::error!(error = %err, "semantic memory is off: model loading panicked");
            None
        }
    }
}

/// Embeds again the memories another model embedded (search skips them until then); stops
/// with the daemon.
async fn reembed_stale(memory: crate::memory::Memory, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        done = memory.reembed_stale() => match done {
            Ok(0) => {}
            Ok(n) => tracing::info!(memories = n, "embedded again with the current model"),
            Err(err) => tracing::warn!(error = %err, "cannot embed old memories again"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_loopback() {
        assert_eq!(
            api_bind_addr(":8222").expect("ok").to_string(),
            "127.0.0.1:8222"
        );
        assert_eq!(
            api_bind_addr("0.0.0.0:9000").expect("ok").to_string(),
            "0.0.0.0:9000"
        );
        assert!(api_bind_addr("nonsense").is_err());
    }

    #[test]
    fn the_daemon_id_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = daemon_id(dir.path()).expect("id");
        assert_eq!(daemon_id(dir.path()).expect("id"), first);
    }
}
