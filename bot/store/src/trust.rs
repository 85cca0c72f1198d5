//! Trusted versions of project config files (`loop config trust`, `/loop trust`), one per
//! work directory, and the notices channels got about untrusted versions.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};

use super::connection::{Store, StoreError};
use super::entity::{project_trust, project_trust_notices};
use super::outbox::new_row;
use super::records::{OutboxKind, now_ms};

/// The version of a work directory's `.loop/config.json` an owner trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectTrust {
    pub work_dir: String,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub file_hash: String,
    /// The file's text as it was trusted.
    pub content: String,
    /// Who trusted it: `slack:U123`, `cli:alice`, ...
    pub trusted_by: String,
    pub trusted_at: i64,
}

impl From<project_trust::Model> for ProjectTrust {
    fn from(row: project_trust::Model) -> Self {
        ProjectTrust {
            work_dir: row.work_dir,
            file_hash: row.file_hash,
            content: row.content,
            trusted_by: row.trusted_by,
            trusted_at: row.trusted_at,
        }
    }
}

impl Store {
    /// The trusted version of `work_dir`'s project file, if an owner ever trusted one.
    pub async fn project_trust(&self, work_dir: &str) -> Result<Option<ProjectTrust>, StoreError> {
        Ok(project_trust::Entity::find_by_id(work_dir.to_owned())
            .one(self.db())
            .await?
            .map(ProjectTrust::from))
    }

    /// Records `content` (with its hash) as the trusted version of `work_dir`'s project file,
    /// replacing the one trusted before.
    pub async fn trust_project_file(
        &self,
        work_dir: &str,
        file_hash: &str,
        content: &str,
        trusted_by: &str,
    ) -> Result<(), StoreError> {
        let row = project_trust::ActiveModel {
            work_dir: Set(work_dir.to_owned()),
            file_hash: Set(file_hash.to_owned()),
            content: Set(content.to_owned()),
            trusted_by: Set(trusted_by.to_owned()),
            trusted_at: Set(now_ms()),
        };
        project_trust::Entity::insert(row)
            .on_conflict(
                OnConflict::column(project_trust::Column::WorkDir)
                    .update_columns([
                        project_trust::Column::FileHash,
                        project_trust::Column::Content,
                        project_trust::Column::TrustedBy,
                        project_trust::Column::TrustedAt,
                    ])
                    .to_owned(),
            )
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Queues `body` for `channel_key` unless that channel was already told about this
    /// untrusted version of `work_dir`'s file; true when queued. One transaction, so a crash
    /// cannot record the notice as sent without queueing it.
    pub async fn enqueue_untrusted_notice(
        &self,
        channel_key: &str,
        work_dir: &str,
        file_hash: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let txn = self.db().begin().await?;
        let told = project_trust_notices::Entity::find_by_id((
            channel_key.to_owned(),
            work_dir.to_owned(),
        ))
        .one(&txn)
        .await?;
        if told.is_some_and(|row| row.file_hash == file_hash) {
            return Ok(false);
        }
        let now = now_ms();
        project_trust_notices::Entity::insert(project_trust_notices::ActiveModel {
            channel_key: Set(channel_key.to_owned()),
            work_dir: Set(work_dir.to_owned()),
            file_hash: Set(file_hash.to_owned()),
            notified_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                project_trust_notices::Column::ChannelKey,
                project_trust_notices::Column::WorkDir,
            ])
            .update_columns([
                project_trust_notices::Column::FileHash,
                project_trust_notices::Column::NotifiedAt,
            ])
            .to_owned(),
        )
        .exec(&txn)
        .await?;
        new_row(channel_key, None, OutboxKind::Notice, body.to_owned())
            .insert(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::TestDb;

    #[tokio::test]
    async fn trust_is_per_directory_replaced_and_each_version_is_announced_once_per_channel() {
        for db in TestDb::all().await {
            let store = db.store();
            let backend = db.backend();
            let (app, other) = ("/home/ann/app", "/home/ann/other");
            assert_eq!(store.project_trust(app).await.expect("read"), None);

            store
                .trust_project_file(app, "h1", "{\"mounts\": []}", "cli:ann")
                .await
                .expect("trust");
            let trusted = store.project_trust(app).await.expect("read").expect("row");
            assert_eq!(
                (trusted.file_hash.as_str(), trusted.content.as_str()),
                ("h1", "{\"mounts\": []}"),
                "{backend}"
            );
            assert_eq!(trusted.trusted_by, "cli:ann", "{backend}");
            assert_eq!(store.project_trust(other).await.expect("read"), None);
            store
                .trust_project_file(app, "h2", "{}", "slack:U1")
                .await
                .expect("trust again");
            let trusted = store.project_trust(app).await.expect("read").expect("row");
            assert_eq!(
                (trusted.file_hash.as_str(), trusted.trusted_by.as_str()),
                ("h2", "slack:U1"),
                "{backend}: the newer trust replaces the older"
            );

            // One notice per untrusted version and channel.
            let notice = |channel: &'static str, hash: &'static str| {
                let store = store.clone();
                async move {
                    store
                        .enqueue_untrusted_notice(
                            channel,
                            app,
                            hash,
                            &format!("{hash} in {channel}"),
                        )
                        .await
                        .expect("notice")
                }
            };
            assert!(notice("slack:C1", "h3").await, "{backend}");
            assert!(!notice("slack:C1", "h3").await, "{backend}: told already");
            assert!(notice("slack:C2", "h3").await, "{backend}: another channel");
            assert!(notice("slack:C1", "h4").await, "{backend}: a newer version");
            let bodies: Vec<String> = store
                .pending_outbox()
                .await
                .expect("outbox")
                .into_iter()
                .map(|m| m.body)
                .collect();
            assert_eq!(
                bodies,
                ["h3 in slack:C1", "h3 in slack:C2", "h4 in slack:C1"],
                "{backend}"
            );
        }
    }
}
