//! What a dashboard session may see and do: the chat permissions model, applied to the
//! session's user.
//!
//! - The operator's own login (`loop ui`) holds the admin token's authority: an owner in every
//!   channel, and may answer every approval, like the local platform.
//! - Someone else's login (`loop ui --user ID`) has exactly the rights the chat user `ID` has
//!   ([`crate::permissions::role_of`]: `permissions.owners` / `members` and each channel's
//!   `/loop allow_user` grants), in every channel including local ones:
//!   - no role in a channel: the channel is not shown (its row, thread, changes, tasks,
//!     agents, approvals and audit entries) and its pages answer 404;
//!   - a member reads the thread, its changes and settings, talks in local channels, stops a
//!     turn and runs the `/loop` commands members may;
//!   - an owner also opens the terminal, starts local channels and runs owner-only commands.
//! - Answering approvals takes an approver: `permissions.approvers` (users or roles), else
//!   `permissions.owners`, the rule the Discord buttons follow (Slack's, without roles). With neither configured,
//!   only the operator may. An approver sees every waiting approval (that is the job) even in
//!   channels they have no role in, and may read (not act in) the thread, changes and settings
//!   of a channel whose approval waits or was decided in the last [`APPROVAL_CONTEXT_MS`], to
//!   judge it; others see the approvals of their channels, without buttons.
//!
//! Grants change in chat while pages are open: the orchestrator's `grants_changed` watch makes
//! the event streams re-render (or end) and a terminal close when its user lost the channel.

use std::collections::HashMap;

use loop_adapter::{Author, ChannelKey, ChatCommand};

use super::page::PageError;
use super::session::{ChatUser, DashboardSession};
use crate::api::ApiState;
use crate::permissions::{Role, may_approve, needs_owner, role_of};

/// What [`Access::keep`] asks of an item's channel.
#[derive(Clone, Copy)]
enum Seen {
    Channel,
    Approval,
}

/// How long after an approval was decided its approver may still read the thread it came from.
pub const APPROVAL_CONTEXT_MS: i64 = 30 * 60 * 1000;

/// One request's view of what its session may do. Role lookups are cached per channel (a
/// thread inherits its channel's grants), so a page of 200 threads reads each channel once.
pub struct Access {
    state: ApiState,
    /// None: the operator.
    acts_as: Option<Author>,
    roles: HashMap<String, Option<Role>>,
}

impl Access {
    pub fn of(state: &ApiState, session: &DashboardSession) -> Access {
        Access::acting_as(state, session.acts_as.as_ref())
    }

    /// The access of a login acting as the chat user `chat` (None: the operator).
    pub fn acting_as(state: &ApiState, chat: Option<&ChatUser>) -> Access {
        Access {
            state: state.clone(),
            acts_as: chat.map(|chat| Author {
                id: chat.id.clone(),
                name: chat.id.clone(),
                is_bot: false,
                roles: chat.roles.clone(),
            }),
            roles: HashMap::new(),
        }
    }

    /// Forgets the roles read so far (grants may have changed since): a long-lived event
    /// stream calls this before each render.
    pub fn refresh(&mut self) {
        self.roles.clear();
    }

    /// Whether this is the operator's own login (an owner everywhere).
    pub fn is_operator(&self) -> bool {
        self.acts_as.is_none()
    }

    /// The session's role in a channel or thread; `None`: it may not see it.
    pub async fn role_in(&mut self, key: &ChannelKey) -> Result<Option<Role>, PageError> {
        let Some(author) = &self.acts_as else {
            return Ok(Some(Role::Owner));
        };
        let parent = key.parent().to_string();
        if let Some(role) = self.roles.get(&parent) {
            return Ok(*role);
        }
        let grants = self.state.store.channel_grants(key).await?;
        let role = role_of(
            &self.state.orchestrator.config().permissions,
            &grants,
            author,
        );
        self.roles.insert(parent, role);
        Ok(role)
    }

    /// [`Access::role_in`] for a stored channel key; an unparsable one is not shown.
    pub async fn role_in_named(&mut self, key: &str) -> Result<Option<Role>, PageError> {
        match key.parse::<ChannelKey>() {
            Ok(key) => self.role_in(&key).await,
            Err(_) => Ok(if self.is_operator() {
                Some(Role::Owner)
            } else {
                None
            }),
        }
    }

    /// Whether the session may see a channel.
    pub async fn sees(&mut self, key: &str) -> Result<bool, PageError> {
        Ok(self.role_in_named(key).await?.is_some())
    }

    /// Refuses unless the session has at least `needed` in the channel. A channel it may not
    /// see answers as if it did not exist.
    pub async fn require(&mut self, key: &ChannelKey, needed: Role) -> Result<Role, PageError> {
        match self.role_in(key).await? {
            None => Err(PageError::NotFound(format!("no channel {key}"))),
            Some(role) if role >= needed => Ok(role),
            Some(_) => Err(PageError::Forbidden(
                "Only this channel's owners can do that.".to_owned(),
            )),
        }
    }

    /// What the session may read of a thread: `Some(role)` for someone with a role in it,
    /// `None` for an approver reading the context of an approval asked there (read only);
    /// anyone else gets 404.
    pub async fn require_read(&mut self, key: &ChannelKey) -> Result<Option<Role>, PageError> {
        if let Some(role) = self.role_in(key).await? {
            return Ok(Some(role));
        }
        if self.may_approve() && self.approval_context(key).await? {
            return Ok(None);
        }
        Err(PageError::NotFound(format!("no channel {key}")))
    }

    /// Whether an approval waits in `key`, or was decided there lately.
    async fn approval_context(&self, key: &ChannelKey) -> Result<bool, PageError> {
        let name = key.to_string();
        let store = &self.state.store;
        if store
            .pending_approvals()
            .await?
            .iter()
            .any(|a| a.channel_key == name)
        {
            return Ok(true);
        }
        let since = chrono::Utc::now().timestamp_millis() - APPROVAL_CONTEXT_MS;
        Ok(store
            .recent_approvals(since, 500)
            .await?
            .iter()
            .any(|a| a.channel_key == name))
    }

    /// Refuses a `/loop` command the session's role does not allow (as chat would).
    pub async fn require_command(
        &mut self,
        key: &ChannelKey,
        command: &ChatCommand,
    ) -> Result<(), PageError> {
        let needed = if needs_owner(command) {
            Role::Owner
        } else {
            Role::Member
        };
        self.require(key, needed).await.map(|_| ())
    }

    /// Whether the session may start a local channel: an owner of a channel nobody has
    /// granted anything in yet.
    pub fn may_start_channels(&self) -> bool {
        let Some(author) = &self.acts_as else {
            return true;
        };
        role_of(&self.state.orchestrator.config().permissions, &[], author) == Some(Role::Owner)
    }

    /// Whether the session may answer gate approvals.
    pub fn may_approve(&self) -> bool {
        self.acts_as
            .as_ref()
            .is_none_or(|author| may_approve(&self.state.orchestrator.config().permissions, author))
    }

    /// Whether the session sees an approval asked in `key`: approvers see all of them.
    pub async fn sees_approval(&mut self, key: &str) -> Result<bool, PageError> {
        Ok(self.may_approve() || self.sees(key).await?)
    }

    /// The items whose channel (`key`) the session may see; all of them for the operator.
    pub async fn keep_seen<T>(
        &mut self,
        items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, PageError> {
        self.keep(items, key, Seen::Channel).await
    }

    /// The approvals (or audit entries) asked in a channel (`key`) the session may see them
    /// for ([`Access::sees_approval`]).
    pub async fn keep_approvals<T>(
        &mut self,
        items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, PageError> {
        self.keep(items, key, Seen::Approval).await
    }

    async fn keep<T>(
        &mut self,
        items: Vec<T>,
        key: impl Fn(&T) -> &str,
        seen: Seen,
    ) -> Result<Vec<T>, PageError> {
        if self.is_operator() {
            return Ok(items);
        }
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            let shown = match seen {
                Seen::Channel => self.sees(key(&item)).await?,
                Seen::Approval => self.sees_approval(key(&item)).await?,
            };
            if shown {
                kept.push(item);
            }
        }
        Ok(kept)
    }
}
