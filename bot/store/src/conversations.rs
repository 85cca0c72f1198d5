//! Channels, threads and their sessions.

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use loop_adapter::ChannelKey;

use super::connection::{Store, StoreError};
use super::entity::{channels, sessions};
use super::records::{SessionRecord, now_ms};

const ACTIVE: &str = "active";
const CLOSED: &str = "closed";

impl Store {
    /// Creates the channel row if it does not exist.
    pub async fn ensure_channel(&self, key: &ChannelKey) -> Result<(), StoreError> {
        let now = now_ms();
        let row = channels::ActiveModel {
            key: Set(key.to_string()),
            platform: Set(key.platform.as_str().to_owned()),
            channel_id: Set(key.channel_id.clone()),
            thread_id: Set(key.thread_id.clone()),
            parent_key: Set(key.thread_id.as_ref().map(|_| key.parent().to_string())),
            work_dir: Set(None),
            budget_usd: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        channels::Entity::insert(row)
            .on_conflict_do_nothing_on([channels::Column::Key])
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// The most recent `limit` threads of `platform` loop took part in, newest first.
    pub async fn known_threads(
        &self,
        platform: loop_adapter::PlatformKind,
        limit: u64,
    ) -> Result<Vec<ChannelKey>, StoreError> {
        use sea_orm::QuerySelect;
        let rows = channels::Entity::find()
            .filter(channels::Column::Platform.eq(platform.as_str()))
            .filter(channels::Column::ThreadId.is_not_null())
            .order_by_desc(channels::Column::CreatedAt)
            .limit(limit)
            .all(self.db())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| Some(ChannelKey::thread(platform, row.channel_id, row.thread_id?)))
            .collect())
    }

    /// The channel's own work directory, or its parent channel's for a thread.
    pub async fn channel_work_dir(&self, key: &ChannelKey) -> Result<Option<String>, StoreError> {
        for candidate in [key.to_string(), key.parent().to_string()] {
            if let Some(row) = channels::Entity::find_by_id(candidate)
                .one(self.db())
                .await?
                && row.work_dir.is_some()
            {
                return Ok(row.work_dir);
            }
        }
        Ok(None)
    }

    /// Points a channel at a work directory; its session starts fresh there.
    pub async fn set_channel_work_dir(
        &self,
        key: &ChannelKey,
        dir: &str,
    ) -> Result<(), StoreError> {
        self.ensure_channel(key).await?;
        channels::Entity::update_many()
            .col_expr(channels::Column::WorkDir, dir.into())
            .col_expr(channels::Column::UpdatedAt, now_ms().into())
            .filter(channels::Column::Key.eq(key.to_string()))
            .exec(self.db())
            .await?;
        self.close_sessions(key).await
    }

    /// The active session of a channel, created with `work_dir` when there is none.
    pub async fn active_session(
        &self,
        key: &ChannelKey,
        work_dir: &str,
    ) -> Result<SessionRecord, StoreError> {
        if let Some(row) = sessions::Entity::find()
            .filter(sessions::Column::ChannelKey.eq(key.to_string()))
            .filter(sessions::Column::State.eq(ACTIVE))
            .order_by_desc(sessions::Column::CreatedAt)
            .one(self.db())
            .await?
        {
            return Ok(session_record(row));
        }
        let now = now_ms();
        let row = sessions::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            channel_key: Set(key.to_string()),
            claude_session_id: Set(None),
            work_dir: Set(work_dir.to_owned()),
            state: Set(ACTIVE.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.db())
        .await?;
        Ok(session_record(row))
    }

    /// Whether the channel's active session has a Claude session (a turn ran in it).
    pub async fn has_claude_session(&self, key: &ChannelKey) -> Result<bool, StoreError> {
        Ok(sessions::Entity::find()
            .filter(sessions::Column::ChannelKey.eq(key.to_string()))
            .filter(sessions::Column::State.eq(ACTIVE))
            .filter(sessions::Column::ClaudeSessionId.is_not_null())
            .one(self.db())
            .await?
            .is_some())
    }

    /// Records the Claude session id a turn reported.
    pub async fn set_claude_session(
        &self,
        session_id: &str,
        claude_session_id: &str,
    ) -> Result<(), StoreError> {
        sessions::Entity::update_many()
            .col_expr(sessions::Column::ClaudeSessionId, claude_session_id.into())
            .col_expr(sessions::Column::UpdatedAt, now_ms().into())
            .filter(sessions::Column::Id.eq(session_id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Closes the channel's sessions: the next turn starts a new Claude session.
    pub async fn close_sessions(&self, key: &ChannelKey) -> Result<(), StoreError> {
        sessions::Entity::update_many()
            .col_expr(sessions::Column::State, CLOSED.into())
            .col_expr(sessions::Column::UpdatedAt, now_ms().into())
            .filter(sessions::Column::ChannelKey.eq(key.to_string()))
            .filter(sessions::Column::State.eq(ACTIVE))
            .exec(self.db())
            .await?;
        Ok(())
    }
}

fn session_record(row: sessions::Model) -> SessionRecord {
    SessionRecord {
        id: row.id,
        channel_key: row.channel_key,
        claude_session_id: row.claude_session_id,
        work_dir: row.work_dir,
    }
}
