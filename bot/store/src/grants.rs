//! Per-channel grants (`/loop allow_user|allow_role|deny_user|deny_role`).

use loop_adapter::{ChannelKey, GrantLevel, GrantSubject};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use super::connection::{Store, StoreError};
use super::entity::channel_grants;
use super::records::now_ms;

/// One grant of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGrant {
    pub subject: GrantSubject,
    pub level: GrantLevel,
    pub granted_by: String,
}

impl Store {
    /// The grants of `channel`'s parent channel (a grant covers the channel and its threads).
    pub async fn channel_grants(
        &self,
        channel: &ChannelKey,
    ) -> Result<Vec<ChannelGrant>, StoreError> {
        let rows = channel_grants::Entity::find()
            .filter(channel_grants::Column::ChannelKey.eq(channel.parent().to_string()))
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let subject = match row.subject_kind.as_str() {
                    "user" => GrantSubject::User(row.subject_id),
                    "role" => GrantSubject::Role(row.subject_id),
                    _ => return None,
                };
                Some(ChannelGrant {
                    subject,
                    level: GrantLevel::parse(&row.level)?,
                    granted_by: row.granted_by,
                })
            })
            .collect())
    }

    /// Sets (or replaces) the grant of `subject` in `channel`'s parent channel.
    pub async fn set_channel_grant(
        &self,
        channel: &ChannelKey,
        subject: &GrantSubject,
        level: GrantLevel,
        granted_by: &str,
    ) -> Result<(), StoreError> {
        let row = channel_grants::ActiveModel {
            channel_key: Set(channel.parent().to_string()),
            subject_kind: Set(subject.kind().to_owned()),
            subject_id: Set(subject.id().to_owned()),
            level: Set(level.as_str().to_owned()),
            granted_by: Set(granted_by.to_owned()),
            created_at: Set(now_ms()),
        };
        channel_grants::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    channel_grants::Column::ChannelKey,
                    channel_grants::Column::SubjectKind,
                    channel_grants::Column::SubjectId,
                ])
                .update_columns([
                    channel_grants::Column::Level,
                    channel_grants::Column::GrantedBy,
                    channel_grants::Column::CreatedAt,
                ])
                .to_owned(),
            )
            .exec(self.db())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestDb;
    use loop_adapter::PlatformKind;

    #[tokio::test]
    async fn grants_cover_the_channel_and_its_threads_and_are_replaced() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let channel = ChannelKey::channel(PlatformKind::Slack, "C1");
            let thread = ChannelKey::thread(PlatformKind::Slack, "C1", "1.2");
            let ann = GrantSubject::User("UANN".into());
            store
                .set_channel_grant(&thread, &ann, GrantLevel::Member, "UBOSS")
                .await
                .expect("grant");
            store
                .set_channel_grant(
                    &channel,
                    &GrantSubject::Role("R1".into()),
                    GrantLevel::Owner,
                    "UBOSS",
                )
                .await
                .expect("grant");
            assert_eq!(
                store.channel_grants(&channel).await.expect("grants").len(),
                2,
                "{backend}"
            );
            store
                .set_channel_grant(&channel, &ann, GrantLevel::Denied, "UBOSS")
                .await
                .expect("replace");
            let grants = store.channel_grants(&thread).await.expect("grants");
            assert_eq!(grants.len(), 2, "{backend}");
            assert!(grants.contains(&ChannelGrant {
                subject: ann.clone(),
                level: GrantLevel::Denied,
                granted_by: "UBOSS".into()
            }));
            let other = ChannelKey::channel(PlatformKind::Slack, "C2");
            assert!(
                store
                    .channel_grants(&other)
                    .await
                    .expect("grants")
                    .is_empty()
            );
        }
    }
}
