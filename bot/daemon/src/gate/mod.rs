//! The bot's side of the security gate (`loop-gate` holds the policy, the seccomp filter and
//! the supervisor):
//!
//! - [`approver`]: what runs inside the container: `loop syscallwrap` and the HTTP approver
//!   that asks the daemon; [`audit`] ships the supervisor's own decisions to the daemon.
//! - [`policy_json`]: the per-container policy file, built from `gates.agentgate` and checked
//!   with the gate's own loader before a container starts.
//! - [`dockerproxy`]: the docker proxy's policy file and `loop dockerproxy`.
//! - [`GateHub`]: the daemon's live gate state: container tokens, approvals waiting for a
//!   person, and "allow for session" answers.
//!
//! Container tokens are keyed by the **channel key**: the token is minted before the container
//! exists (its name is only known inside the runner), and a thread's warm agent keeps serving
//! later turns with the token it was started with. So a turn reuses the channel's live token
//! ([`GateHub::begin_turn`]); the token is revoked when a turn ends without leaving a warm
//! agent behind ([`GateHub::container_gone`]). A warm agent that retires while idle leaves its
//! token live until the channel's next turn, whose fresh container then inherits it: the
//! token only ever lets a container of that channel ask that channel's people. The channel key
//! is therefore the "container" of [`ContainerIdentity`] and of the
//! `approvals`/`gate_audit` rows (which also carry the run id).

pub mod answer;
pub mod approval;
pub mod dockerproxy;
pub mod tokens;

/// The Docker runtime name of gVisor, under which the gate cannot run (no seccomp user
/// notification there).
pub const GVISOR_RUNTIME: &str = "runsc";

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loop_gate::policy::{PolicyError, PolicyFile};
use loop_gate::wire::ApprovalDecision;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::config::{AgentGateConfig, RateLimits};
use tokens::{ContainerIdentity, ContainerTokens, tokens_match};

/// Where a policy error is reported as coming from.
const POLICY_ORIGIN: &str = "gates.agentgate";

/// Builds the per-container policy file from the (project-merged) gate config and validates
/// it exactly as the in-container loader will: a bad rule stops the turn on the host with a
/// message naming the field, instead of a container that refuses to start. `docker_proxy`
/// (never from a config file) says `loop dockerproxy` serves `/var/run/docker.sock` in that
/// container, which the baseline then lets the agent reach.
pub fn policy_json(gate: &AgentGateConfig, docker_proxy: bool) -> Result<String, PolicyError> {
    let value = json!({
        "default_decision": gate.default_decision,
        "path_rules": gate.path_rules,
        "command_rules": gate.command_rules,
        "file_rules": gate.file_rules,
        "connect_rules": gate.connect_rules,
        "docker_proxy": docker_proxy,
    });
    let file = PolicyFile::from_value(value, POLICY_ORIGIN)?;
    file.validate()?;
    // Written back from the parsed form: what the container reads is exactly what was checked.
    Ok(serde_json::to_string_pretty(&file).unwrap_or_else(|_| Value::Null.to_string()))
}

/// How a waiting approval ended, as told to the request that waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A person answered (`decided_by` names who).
    Decided {
        decision: ApprovalDecision,
        decided_by: String,
    },
    /// The turn ended: the container is going away, so the prompt is moot (deny).
    ContainerGone,
}

struct Waiter {
    container: String,
    tx: oneshot::Sender<Resolution>,
}

#[derive(Default)]
struct HubInner {
    tokens: ContainerTokens,
    waiters: Mutex<HashMap<String, Waiter>>,
    /// (container, session key) pairs a person allowed for the session.
    session_allows: Mutex<HashSet<(String, String)>>,
    /// The live token of each container.
    live: Mutex<HashMap<String, String>>,
    /// The live host-API token (MCP tools) of each container; the agent can read this one.
    live_api: Mutex<HashMap<String, String>>,
    /// The run each container is serving now, for the approval rows.
    runs: Mutex<HashMap<String, String>>,
    /// Approval prompts each container has asked for (`gates.rate_limits`).
    prompts: Mutex<HashMap<String, PromptCount>>,
    /// Bumped whenever a request starts or stops waiting for a person: the dashboard's
    /// approvals page re-reads the pending ones then.
    waiting_changed: tokio::sync::watch::Sender<u64>,
    /// The id a handed-over spare's container was started under, by the channel it serves
    /// now: the container still names itself so (`LOOP_CHANNEL_ID`).
    started_as: Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct PromptCount {
    total: u32,
    /// When the prompts of the last minute were asked.
    recent: VecDeque<Instant>,
    /// Whether the channel was told about the limit (once per limit and window).
    told_total: bool,
    told_minute: Option<Instant>,
}

/// Why a container may not ask a person now (`gates.rate_limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// What was exceeded, for the agent and the chat.
    pub reason: String,
    /// True the first time (per limit and minute): the channel should be told once.
    pub tell_channel: bool,
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What approvals and the audit log name a channel's terminal shell container.
pub fn terminal_container(channel_key: &str) -> String {
    format!("{channel_key}#terminal")
}

/// The daemon's live gate state. Cheap to clone. Everything here is in memory on purpose:
/// tokens and session answers die with the containers they belong to, and a daemon restart
/// ends every container.
#[derive(Clone, Default)]
pub struct GateHub {
    inner: Arc<HubInner>,
}

impl GateHub {
    /// The container tokens (shared with the API's authentication).
    pub fn tokens(&self) -> &ContainerTokens {
        &self.inner.tokens
    }

    /// The identity behind a **gate** token. The token map also holds tokens the agent itself
    /// can read (the MCP server's API token); only the gate's, which `syscallwrap` keeps away
    /// from the agent, may ask for approvals or write the audit log.
    pub fn identify_gate(&self, token: &str) -> Option<ContainerIdentity> {
        let identity = self.inner.tokens.identify(token)?;
        let is_gate = lock(&self.inner.live)
            .get(&identity.container)
            .is_some_and(|live| tokens_match(token, live));
        is_gate.then_some(identity)
    }

    /// Mints an approval token for a container serving `channel_key`.
    pub fn issue(&self, container: &str, channel_key: &str) -> String {
        let token = self.inner.tokens.issue(ContainerIdentity {
            container: container.to_owned(),
            channel_key: channel_key.to_owned(),
        });
        lock(&self.inner.live).insert(container.to_owned(), token.clone());
        token
    }

    /// The token for a turn of `channel_key`'s container: the live one when the channel's warm
    /// agent may serve the turn, else a fresh one. Server-side "allow for session" answers are
    /// dropped either way: the turn may get a fresh container, and a warm agent's supervisor
    /// remembers its own session answers.
    pub fn begin_turn(&self, channel_key: &str, run_id: &str) -> String {
        lock(&self.inner.session_allows).retain(|(c, _)| c != channel_key);
        lock(&self.inner.runs).insert(channel_key.to_owned(), run_id.to_owned());
        let live = lock(&self.inner.live).get(channel_key).cloned();
        match live {
            Some(token) if self.inner.tokens.identify(&token).is_some() => token,
            _ => self.issue(channel_key, channel_key),
        }
    }

    /// The gate token of `channel_key`'s terminal shell container (see `crate::terminal`):
    /// the live one while it lives, else a fresh one. Its container name in approvals and the
    /// audit log is [`terminal_container`]; [`GateHub::container_gone`] of that revokes it.
    pub fn terminal_token(&self, channel_key: &str) -> String {
        let container = terminal_container(channel_key);
        let live = lock(&self.inner.live).get(&container).cloned();
        match live {
            Some(token) if self.inner.tokens.identify(&token).is_some() => token,
            _ => self.issue(&container, channel_key),
        }
    }

    /// The host-API token for a turn of `channel_key` (the built-in MCP server's tools): the
    /// live one, so a warm agent's configuration stays the same from turn to turn, else a
    /// fresh one. Revoked with the container in [`GateHub::container_gone`].
    pub fn api_token(&self, channel_key: &str) -> String {
        let live = lock(&self.inner.live_api).get(channel_key).cloned();
        match live {
            Some(token) if self.inner.tokens.identify(&token).is_some() => token,
            _ => {
                let token = self.inner.tokens.issue(ContainerIdentity {
                    container: channel_key.to_owned(),
                    channel_key: channel_key.to_owned(),
                });
                lock(&self.inner.live_api).insert(channel_key.to_owned(), token.clone());
                token
            }
        }
    }

    /// The turn ended and its container stays up as a warm agent: prompts still waiting
    /// resolve as deny (their turn is over), the token stays for the agent's next turn.
    pub fn turn_ended_warm(&self, container: &str) {
        lock(&self.inner.runs).remove(container);
        self.resolve_waiters_gone(container);
    }

    /// A spare agent's container, started under `spare`, now serves `channel_key`: its tokens
    /// act for that channel from now on, and the channel's turns find them as its live ones.
    pub fn hand_over(&self, spare: &str, channel_key: &str) {
        self.inner.tokens.hand_over(spare, channel_key);
        for map in [&self.inner.live, &self.inner.live_api] {
            let mut map = lock(map);
            if let Some(token) = map.remove(spare) {
                map.insert(channel_key.to_owned(), token);
            }
        }
        lock(&self.inner.runs).remove(spare);
        lock(&self.inner.prompts).remove(spare);
        lock(&self.inner.started_as).insert(channel_key.to_owned(), spare.to_owned());
    }

    /// Whether `name` is how the container serving `container` names its channel: that
    /// channel's slug, or the id a spare adopted by it was started under.
    pub fn names_itself(&self, container: &str, slug: &str, name: &str) -> bool {
        name == slug
            || lock(&self.inner.started_as)
                .get(container)
                .map(String::as_str)
                == Some(name)
    }

    /// The run a container is serving now, if a turn is running.
    pub fn current_run(&self, container: &str) -> Option<String> {
        lock(&self.inner.runs).get(container).cloned()
    }

    /// The container is gone: its token stops working, its session answers are forgotten and
    /// its waiting prompts resolve as deny.
    pub fn container_gone(&self, container: &str) {
        self.inner.tokens.revoke_container(container);
        lock(&self.inner.live).remove(container);
        lock(&self.inner.live_api).remove(container);
        lock(&self.inner.runs).remove(container);
        lock(&self.inner.session_allows).retain(|(c, _)| c != container);
        lock(&self.inner.prompts).remove(container);
        lock(&self.inner.started_as).remove(container);
        self.resolve_waiters_gone(container);
    }

    fn resolve_waiters_gone(&self, container: &str) {
        let gone: Vec<Waiter> = {
            let mut waiters = lock(&self.inner.waiters);
            let ids: Vec<String> = waiters
                .iter()
                .filter(|(_, w)| w.container == container)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| waiters.remove(id)).collect()
        };
        if !gone.is_empty() {
            self.bump_waiting();
        }
        for waiter in gone {
            let _ = waiter.tx.send(Resolution::ContainerGone);
        }
    }

    /// Registers a request waiting for approval `id`.
    pub fn wait_for(&self, id: &str, container: &str) -> oneshot::Receiver<Resolution> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiters).insert(
            id.to_owned(),
            Waiter {
                container: container.to_owned(),
                tx,
            },
        );
        self.bump_waiting();
        rx
    }

    /// Stops waiting for `id` (the request ended on its own: timeout, disconnect).
    pub fn forget(&self, id: &str) {
        if lock(&self.inner.waiters).remove(id).is_some() {
            self.bump_waiting();
        }
    }

    /// Changes whenever an approval starts or stops waiting for a person.
    pub fn waiting_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.waiting_changed.subscribe()
    }

    fn bump_waiting(&self) {
        self.inner
            .waiting_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Hands a person's decision to the request waiting for it. False when none waits (the
    /// daemon restarted, or the request already gave up).
    pub fn resolve(&self, id: &str, decision: ApprovalDecision, decided_by: &str) -> bool {
        let waiter = lock(&self.inner.waiters).remove(id);
        self.bump_waiting();
        match waiter {
            Some(waiter) => waiter
                .tx
                .send(Resolution::Decided {
                    decision,
                    decided_by: decided_by.to_owned(),
                })
                .is_ok(),
            None => false,
        }
    }

    /// Counts one approval prompt of `container` against `limits.per_minute` and
    /// `limits.total` (0 = no limit); over either, the prompt is not asked and the call is
    /// denied. `limits.pending` is enforced in the container's supervisor. A runaway agent
    /// therefore cannot flood the channel with prompts.
    pub fn admit_prompt(&self, container: &str, limits: &RateLimits) -> Result<(), OverLimit> {
        self.admit_prompt_at(container, limits, Instant::now())
    }

    fn admit_prompt_at(
        &self,
        container: &str,
        limits: &RateLimits,
        now: Instant,
    ) -> Result<(), OverLimit> {
        const MINUTE: Duration = Duration::from_secs(60);
        let mut prompts = lock(&self.inner.prompts);
        let count = prompts.entry(container.to_owned()).or_default();
        while count
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            count.recent.pop_front();
        }
        if limits.total > 0 && count.total >= limits.total {
            let tell_channel = !std::mem::replace(&mut count.told_total, true);
            return Err(OverLimit {
                reason: format!(
                    "this container asked for {} approvals, the most gates.rate_limits.total allows; further requests are denied until its next container",
                    count.total
                ),
                tell_channel,
            });
        }
        if limits.per_minute > 0 && count.recent.len() >= limits.per_minute as usize {
            let tell_channel = count
                .told_minute
                .is_none_or(|t| now.duration_since(t) >= MINUTE);
            if tell_channel {
                count.told_minute = Some(now);
            }
            return Err(OverLimit {
                reason: format!(
                    "more than {} approvals asked within a minute (gates.rate_limits.per_minute); denied without asking",
                    limits.per_minute
                ),
                tell_channel,
            });
        }
        count.total += 1;
        count.recent.push_back(now);
        Ok(())
    }

    /// Whether a person already allowed `session_key` for this container's session.
    pub fn session_allowed(&self, container: &str, session_key: &str) -> bool {
        lock(&self.inner.session_allows).contains(&(container.to_owned(), session_key.to_owned()))
    }

    /// Remembers an "allow for session" answer.
    pub fn allow_for_session(&self, container: &str, session_key: &str) {
        lock(&self.inner.session_allows).insert((container.to_owned(), session_key.to_owned()));
    }
}

/// The maps hold no invariant a panic could break halfway, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GateDecision;

    #[test]
    fn the_policy_comes_from_the_config_and_is_validated() {
        let mut gate = AgentGateConfig {
            default_decision: GateDecision::Approve,
            ..Default::default()
        };
        gate.command_rules = vec![json!({"commands": ["curl"], "decision": "deny"})];
        gate.connect_rules =
            vec![json!({"hosts": ["10.0.0.0/8"], "ports": [22], "decision": "deny"})];
        let text = policy_json(&gate, false).expect("valid");
        let parsed = PolicyFile::from_json(&text, "test").expect("round trip");
        assert!(!parsed.docker_proxy);
        let with_proxy = policy_json(&gate, true).expect("valid");
        assert!(
            PolicyFile::from_json(&with_proxy, "test")
                .expect("round trip")
                .docker_proxy
        );
        assert_eq!(parsed.command_rules.len(), 1);
        assert_eq!(parsed.connect_rules.len(), 1);
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("json")["default_decision"],
            "approve"
        );

        gate.file_rules =
            vec![json!({"paths": ["**/.env"], "operatons": ["read"], "decision": "deny"})];
        let err = policy_json(&gate, false)
            .expect_err("a typo must not pass")
            .to_string();
        assert!(
            err.contains("gates.agentgate") && err.contains("file_rules[0]"),
            "{err}"
        );

        gate.file_rules = vec![];
        gate.command_rules =
            vec![json!({"commands": ["git"], "args_patterns": ["(unclosed"], "decision": "deny"})];
        let err = policy_json(&gate, false)
            .expect_err("bad regex")
            .to_string();
        assert!(err.contains("command_rules[0].args_patterns[0]"), "{err}");
    }

    #[tokio::test]
    async fn waiting_prompts_resolve_by_decision_or_when_the_container_goes() {
        let hub = GateHub::default();
        let token = hub.issue("run-1", "local:c");
        assert_eq!(
            hub.tokens().identify(&token).map(|i| i.channel_key),
            Some("local:c".to_owned())
        );

        let rx = hub.wait_for("a1", "run-1");
        assert!(hub.resolve("a1", ApprovalDecision::AllowOnce, "alice"));
        assert_eq!(
            rx.await.expect("resolved"),
            Resolution::Decided {
                decision: ApprovalDecision::AllowOnce,
                decided_by: "alice".into()
            }
        );
        assert!(
            !hub.resolve("a1", ApprovalDecision::Deny, "bob"),
            "only once"
        );

        hub.allow_for_session("run-1", "execve:/usr/bin/git:push");
        assert!(hub.session_allowed("run-1", "execve:/usr/bin/git:push"));
        assert!(!hub.session_allowed("run-2", "execve:/usr/bin/git:push"));

        let rx = hub.wait_for("a2", "run-1");
        let other = hub.wait_for("a3", "run-2");
        hub.container_gone("run-1");
        assert_eq!(rx.await.expect("resolved"), Resolution::ContainerGone);
        assert!(hub.tokens().identify(&token).is_none());
        assert!(!hub.session_allowed("run-1", "execve:/usr/bin/git:push"));
        assert!(hub.resolve("a3", ApprovalDecision::Deny, "bob"));
        assert!(other.await.is_ok());
    }

    #[test]
    fn prompts_are_limited_per_minute_and_in_total() {
        let hub = GateHub::default();
        let limits = RateLimits {
            pending: 30,
            per_minute: 3,
            total: 5,
        };
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                hub.admit_prompt_at("c", &limits, t0 + Duration::from_secs(i)),
                Ok(())
            );
        }
        let over = hub
            .admit_prompt_at("c", &limits, t0 + Duration::from_secs(10))
            .expect_err("fourth in a minute");
        assert!(
            over.tell_channel && over.reason.contains("per_minute"),
            "{over}"
        );
        let again = hub
            .admit_prompt_at("c", &limits, t0 + Duration::from_secs(20))
            .expect_err("still over");
        assert!(!again.tell_channel, "the channel is told once per minute");
        assert_eq!(
            hub.admit_prompt_at("other", &limits, t0),
            Ok(()),
            "per container"
        );
        // A minute after the first ones, two more fit; then the total is reached.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(hub.admit_prompt_at("c", &limits, later), Ok(()));
        assert_eq!(hub.admit_prompt_at("c", &limits, later), Ok(()));
        let over = hub
            .admit_prompt_at("c", &limits, later + Duration::from_secs(120))
            .expect_err("total");
        assert!(over.tell_channel && over.reason.contains("total"), "{over}");
        // A new container starts from zero; 0 means no limit.
        hub.container_gone("c");
        assert_eq!(hub.admit_prompt_at("c", &limits, later), Ok(()));
        let unlimited = RateLimits {
            pending: 30,
            per_minute: 0,
            total: 0,
        };
        for _ in 0..100 {
            assert_eq!(hub.admit_prompt_at("u", &unlimited, t0), Ok(()));
        }
    }

    #[test]
    fn a_warm_agent_keeps_its_token_across_turns() {
        let hub = GateHub::default();
        let first = hub.begin_turn("local:c", "r1");
        assert_eq!(hub.current_run("local:c").as_deref(), Some("r1"));
        hub.allow_for_session("local:c", "k");
        hub.turn_ended_warm("local:c");
        assert_eq!(hub.current_run("local:c"), None);
        // The warm agent still holds `first`: the next turn uses it too.
        let second = hub.begin_turn("local:c", "r2");
        assert_eq!(second, first);
        assert!(
            !hub.session_allowed("local:c", "k"),
            "session answers do not carry over"
        );
        hub.container_gone("local:c");
        assert!(hub.tokens().identify(&first).is_none());
        let other = hub.tokens().issue(ContainerIdentity {
            container: "local:c".into(),
            channel_key: "local:c".into(),
        });
        let third = hub.begin_turn("local:c", "r3");
        assert!(hub.identify_gate(&third).is_some());
        assert!(
            hub.identify_gate(&other).is_none(),
            "a non-gate token of the same container is not a gate token"
        );
        assert_ne!(third, first, "a fresh container gets a fresh token");
        assert_eq!(
            hub.tokens().identify(&third).map(|i| i.container),
            Some("local:c".to_owned())
        );
    }

    #[test]
    fn a_spare_handed_over_acts_for_its_thread_with_the_tokens_it_started_with() {
        let hub = GateHub::default();
        let gate = hub.begin_turn("spare-1", "spare-1-start");
        let api = hub.api_token("spare-1");
        hub.turn_ended_warm("spare-1");
        hub.hand_over("spare-1", "slack:C1:T1");
        let thread = ContainerIdentity {
            container: "slack:C1:T1".into(),
            channel_key: "slack:C1:T1".into(),
        };
        assert_eq!(hub.identify_gate(&gate), Some(thread.clone()));
        assert_eq!(hub.tokens().identify(&api), Some(thread));
        // The thread's turn finds them as its live tokens: its container is the spare's.
        assert_eq!(hub.begin_turn("slack:C1:T1", "r1"), gate);
        assert_eq!(hub.api_token("slack:C1:T1"), api);
        // Its container still names itself by the spare's id, and may.
        assert!(hub.names_itself("slack:C1:T1", "slack-C1-T1", "spare-1"));
        assert!(hub.names_itself("slack:C1:T1", "slack-C1-T1", "slack-C1-T1"));
        assert!(!hub.names_itself("slack:C1:T1", "slack-C1-T1", "spare-2"));
        assert_ne!(
            hub.begin_turn("spare-1", "r2"),
            gate,
            "the spare's id holds nothing any more"
        );
        hub.container_gone("slack:C1:T1");
        assert!(hub.tokens().identify(&gate).is_none());
        assert!(hub.tokens().identify(&api).is_none());
        assert!(!hub.names_itself("slack:C1:T1", "slack-C1-T1", "spare-1"));
    }
}
