//! Who may use loop in a channel: the Go Loop's `permissions.owners` and `permissions.members`
//! from the config, plus the grants owners give in a channel with `/loop allow_user`,
//! `allow_role`, `deny_user`, `deny_role` (stored per parent channel; threads inherit).
//!
//! - An owner (config, or an `owner` grant for the user or one of their roles) may do
//!   everything, including the owner-only commands ([`needs_owner`]).
//! - A `denied` grant shuts a user or role out, whatever `permissions.members` says.
//! - With neither `owners` nor `members` configured, everyone else is an owner too (the Go
//!   Loop's "empty = everyone is owner"), so a deny is the only restriction such a channel has.
//! - Otherwise members (config or a `member` grant) may talk to the agent, stop a turn and
//!   start a fresh session; anyone else is refused in private.
//!
//! The local platform (`loop run`, `loop chat`) authenticates with the admin token and is
//! always an owner; scheduled runs speak for the task's creator, who was allowed to create it.

use loop_adapter::{Author, ChatCommand, GrantLevel, GrantSubject};

use crate::config::{PermissionSet, Permissions};
use loop_store::ChannelGrant;

/// What someone may do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Owner,
}

fn in_set(set: &PermissionSet, author: &Author) -> bool {
    set.users.contains(&author.id) || set.roles.iter().any(|r| author.roles.contains(r))
}

fn grant_matches(grant: &ChannelGrant, author: &Author) -> bool {
    match &grant.subject {
        GrantSubject::User(id) => *id == author.id,
        GrantSubject::Role(id) => author.roles.contains(id),
    }
}

/// The role of `author` in a channel with `grants`; `None`: not allowed at all.
pub fn role_of(config: &Permissions, grants: &[ChannelGrant], author: &Author) -> Option<Role> {
    let granted = |level: GrantLevel| {
        grants
            .iter()
            .any(|g| g.level == level && grant_matches(g, author))
    };
    if in_set(&config.owners, author) || granted(GrantLevel::Owner) {
        return Some(Role::Owner);
    }
    if granted(GrantLevel::Denied) {
        return None;
    }
    let open = config.owners.users.is_empty()
        && config.owners.roles.is_empty()
        && config.members.users.is_empty()
        && config.members.roles.is_empty();
    if open {
        return Some(Role::Owner);
    }
    (in_set(&config.members, author) || granted(GrantLevel::Member)).then_some(Role::Member)
}

/// Who may answer gate approvals: `permissions.approvers` (users or roles), else the owners.
/// Discord's buttons and the dashboard follow it; Slack, which has no roles, only its users.
pub fn approvers(config: &Permissions) -> &PermissionSet {
    let approvers = &config.approvers;
    if approvers.users.is_empty() && approvers.roles.is_empty() {
        &config.owners
    } else {
        approvers
    }
}

/// Whether `author` may answer gate approvals ([`approvers`]).
pub fn may_approve(config: &Permissions, author: &Author) -> bool {
    in_set(approvers(config), author)
}

/// Whether a command is for owners only: those that change what the channel works on, remove
/// its tasks, change who may use it, or trust a project's config (which may widen what the
/// agent's container sees). Scheduling is open to members, who can ask the agent to schedule
/// through its MCP tools anyway.
pub fn needs_owner(command: &ChatCommand) -> bool {
    matches!(
        command,
        ChatCommand::Dir(_)
            | ChatCommand::Base(Some(_))
            | ChatCommand::Cancel(_)
            | ChatCommand::Grant { .. }
            | ChatCommand::Trust(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(id: &str, roles: &[&str]) -> Author {
        Author {
            id: id.into(),
            name: id.into(),
            is_bot: false,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn grant(subject: GrantSubject, level: GrantLevel) -> ChannelGrant {
        ChannelGrant {
            subject,
            level,
            granted_by: "UBOSS".into(),
        }
    }

    fn set(users: &[&str], roles: &[&str]) -> PermissionSet {
        PermissionSet {
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn with_nothing_configured_everyone_is_an_owner_but_a_deny_holds() {
        let open = Permissions::default();
        assert_eq!(role_of(&open, &[], &author("U1", &[])), Some(Role::Owner));
        let denied = [grant(GrantSubject::User("U1".into()), GrantLevel::Denied)];
        assert_eq!(role_of(&open, &denied, &author("U1", &[])), None);
        assert_eq!(
            role_of(&open, &denied, &author("U2", &[])),
            Some(Role::Owner)
        );
    }

    #[test]
    fn owners_members_and_grants() {
        let config = Permissions {
            owners: set(&["UBOSS"], &["R-ADMIN"]),
            members: set(&["UANN"], &["R-DEV"]),
            approvers: PermissionSet::default(),
        };
        let table = [
            (author("UBOSS", &[]), &[][..], Some(Role::Owner)),
            (author("UX", &["R-ADMIN"]), &[], Some(Role::Owner)),
            (author("UANN", &[]), &[], Some(Role::Member)),
            (author("UX", &["R-DEV"]), &[], Some(Role::Member)),
            (author("UX", &[]), &[], None),
        ];
        for (who, grants, expected) in table {
            assert_eq!(role_of(&config, grants, &who), expected, "{who:?}");
        }
        let grants = [
            grant(GrantSubject::User("UNEW".into()), GrantLevel::Member),
            grant(GrantSubject::Role("R-LEADS".into()), GrantLevel::Owner),
            grant(GrantSubject::User("UANN".into()), GrantLevel::Denied),
            grant(GrantSubject::User("UBOSS".into()), GrantLevel::Denied),
        ];
        assert_eq!(
            role_of(&config, &grants, &author("UNEW", &[])),
            Some(Role::Member)
        );
        assert_eq!(
            role_of(&config, &grants, &author("UY", &["R-LEADS"])),
            Some(Role::Owner)
        );
        assert_eq!(
            role_of(&config, &grants, &author("UANN", &[])),
            None,
            "a deny beats membership"
        );
        assert_eq!(
            role_of(&config, &grants, &author("UBOSS", &[])),
            Some(Role::Owner),
            "owners from the config cannot be locked out from chat"
        );
    }

    #[test]
    fn owner_only_commands() {
        assert!(needs_owner(&ChatCommand::Dir("/x".into())));
        assert!(needs_owner(&ChatCommand::Cancel("t1".into())));
        assert!(needs_owner(&ChatCommand::Grant {
            subject: GrantSubject::User("U".into()),
            level: GrantLevel::Member
        }));
        assert!(needs_owner(&ChatCommand::Trust(None)));
        assert!(needs_owner(&ChatCommand::Trust(Some("1a2b3c4d".into()))));
        for free in [
            ChatCommand::Status,
            ChatCommand::Stop,
            ChatCommand::New,
            ChatCommand::Tasks,
            ChatCommand::Help,
        ] {
            assert!(!needs_owner(&free), "{free:?}");
        }
    }
}
