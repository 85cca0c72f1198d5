//! sea-orm entities, one module per table of `loop-migrations`. Only the store uses them.
//! Times are Unix milliseconds (see the migrations crate).

pub mod channels {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "channels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub platform: String,
        pub channel_id: String,
        pub thread_id: Option<String>,
        pub parent_key: Option<String>,
        pub work_dir: Option<String>,
        pub budget_usd: Option<f64>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sessions {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub channel_key: String,
        pub claude_session_id: Option<String>,
        pub work_dir: String,
        pub state: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod inbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub platform: String,
        pub platform_message_id: String,
        pub channel_key: String,
        pub author_id: String,
        pub author_name: String,
        pub text: String,
        pub triggers: bool,
        pub status: String,
        pub run_id: Option<String>,
        pub attempts: i32,
        pub received_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod runs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub channel_key: String,
        pub session_id: String,
        pub status: String,
        pub origin: String,
        pub task_id: Option<String>,
        pub container_id: Option<String>,
        pub prompt: String,
        pub answer: Option<String>,
        pub error: Option<String>,
        pub claude_session_id: Option<String>,
        pub input_tokens: i64,
        pub output_tokens: i64,
        pub cache_read_tokens: i64,
        pub cache_creation_tokens: i64,
        pub cost_usd: f64,
        pub num_turns: i32,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        /// The platform id of the run's status message, once posted.
        pub status_message_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub channel_key: String,
        pub run_id: Option<String>,
        pub kind: String,
        pub body: String,
        pub status: String,
        pub platform_message_id: Option<String>,
        pub attempts: i32,
        pub created_at: i64,
        pub sent_at: Option<i64>,
        pub parts_sent: i32,
        pub claim_token: Option<String>,
        pub claimed_until: Option<i64>,
        pub delivery_key: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod approvals {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "approvals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub container_id: String,
        pub channel_key: String,
        pub run_id: Option<String>,
        pub syscall: String,
        pub summary: String,
        pub detail: String,
        pub cache_key: String,
        pub status: String,
        pub scope: Option<String>,
        pub decided_by: Option<String>,
        pub decided_at: Option<i64>,
        pub expires_at: i64,
        pub platform_message_id: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod gate_audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "gate_audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub container_id: String,
        pub channel_key: String,
        pub syscall: String,
        pub detail: String,
        pub verdict: String,
        pub source: String,
        pub rule: Option<String>,
        pub decided_by: Option<String>,
        pub approval_id: Option<String>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod scheduled_tasks {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scheduled_tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub channel_key: String,
        pub name: Option<String>,
        pub kind: String,
        pub schedule: String,
        pub prompt: String,
        pub timezone: String,
        pub enabled: bool,
        pub next_run_at: Option<i64>,
        pub last_run_at: Option<i64>,
        pub last_run_id: Option<String>,
        pub running_run_id: Option<String>,
        pub auto_delete_sec: Option<i64>,
        pub created_by: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod memories {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "memories")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub scope: String,
        pub scope_key: String,
        pub source: String,
        pub source_ref: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub content: String,
        pub content_hash: String,
        pub embedding: Option<Vec<u8>>,
        /// The model that made `embedding` (the daemon's `Embedder::model_id`).
        pub embedding_model: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod channel_grants {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "channel_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_key: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject_id: String,
        pub level: String,
        pub granted_by: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod project_trust {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "project_trust")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub work_dir: String,
        pub file_hash: String,
        #[sea_orm(column_type = "Text")]
        pub content: String,
        pub trusted_by: String,
        pub trusted_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod project_trust_notices {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "project_trust_notices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_key: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub work_dir: String,
        pub file_hash: String,
        pub notified_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod thread_branches {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "thread_branches")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_key: String,
        pub repo_root: String,
        pub worktree: String,
        pub branch: String,
        pub base_ref: String,
        pub base_commit: String,
        pub state: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub pushed_commit: Option<String>,
        pub pull_request_url: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod git_bases {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "git_bases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel_key: String,
        pub base_ref: String,
        pub set_by: String,
        pub set_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod forks {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "forks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub channel_key: String,
        #[sea_orm(column_type = "Text")]
        pub prompt: String,
        pub count: i32,
        pub requested_by: String,
        pub requested_by_name: String,
        pub repo_root: String,
        pub base_ref: String,
        pub base_commit: String,
        pub state: String,
        pub created_at: i64,
        pub reported_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod fork_variants {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "fork_variants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub fork_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub variant: i32,
        pub thread_key: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
