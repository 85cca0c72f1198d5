//! Semantic memory rows: text, where it came from (`turn`, `agent`, `doc`), the scope it belongs to
//! (global, one project directory, or one channel) and its embedding as little-endian f32s.
//! Ranking happens in `crate::memory`; the store only keeps and hands out rows.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};
use serde::Serialize;

use super::connection::{Store, StoreError};
use super::entity::memories;
use super::records::now_ms;

/// Where a memory is visible: everywhere, in one project (its directory), or in one channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "scope", content = "key", rename_all = "snake_case")]
pub enum MemoryScope {
    Global,
    Project(String),
    Channel(String),
}

impl MemoryScope {
    /// The `scope` column.
    pub fn kind(&self) -> &'static str {
        match self {
            MemoryScope::Global => "global",
            MemoryScope::Project(_) => "project",
            MemoryScope::Channel(_) => "channel",
        }
    }

    /// The `scope_key` column ("" for global).
    pub fn key(&self) -> &str {
        match self {
            MemoryScope::Global => "",
            MemoryScope::Project(key) | MemoryScope::Channel(key) => key,
        }
    }

    /// Rebuilds a scope from its two columns.
    pub fn from_parts(kind: &str, key: &str) -> Option<MemoryScope> {
        match kind {
            "global" => Some(MemoryScope::Global),
            "project" => Some(MemoryScope::Project(key.to_owned())),
            "channel" => Some(MemoryScope::Channel(key.to_owned())),
            _ => None,
        }
    }
}

impl std::fmt::Display for MemoryScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryScope::Global => f.write_str("global"),
            other => write!(f, "{}:{}", other.kind(), other.key()),
        }
    }
}

/// A memory to store; its embedding is already computed.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub scope: MemoryScope,
    /// `turn`, `agent` or `doc`.
    pub source: String,
    /// Run id, file path and chunk, or who saved it.
    pub source_ref: Option<String>,
    pub content: String,
    pub content_hash: String,
    pub embedding: Vec<f32>,
    /// The model that made `embedding`.
    pub embedding_model: String,
}

/// A stored memory without its vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryRecord {
    pub id: String,
    pub scope: MemoryScope,
    pub source: String,
    pub source_ref: Option<String>,
    pub content: String,
    pub content_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored memory with its vector, for ranking.
#[derive(Debug, Clone)]
pub struct StoredVector {
    pub record: MemoryRecord,
    pub embedding: Vec<f32>,
}

/// f32s as little-endian bytes (the `embedding` column's format).
pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`encode_vector`]; trailing bytes that are not a whole f32 are ignored.
pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn record(model: memories::Model) -> (MemoryRecord, Option<Vec<u8>>) {
    let scope =
        MemoryScope::from_parts(&model.scope, &model.scope_key).unwrap_or(MemoryScope::Global);
    (
        MemoryRecord {
            id: model.id,
            scope,
            source: model.source,
            source_ref: model.source_ref,
            content: model.content,
            content_hash: model.content_hash,
            created_at: model.created_at,
            updated_at: model.updated_at,
        },
        model.embedding,
    )
}

fn scopes_condition(scopes: &[MemoryScope]) -> Condition {
    scopes.iter().fold(Condition::any(), |any, scope| {
        any.add(
            Condition::all()
                .add(memories::Column::Scope.eq(scope.kind()))
                .add(memories::Column::ScopeKey.eq(scope.key())),
        )
    })
}

impl Store {
    /// Stores a memory and returns it.
    pub async fn memory_insert(&self, new: NewMemory) -> Result<MemoryRecord, StoreError> {
        let now = now_ms();
        let model = memories::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            scope: Set(new.scope.kind().to_owned()),
            scope_key: Set(new.scope.key().to_owned()),
            source: Set(new.source),
            source_ref: Set(new.source_ref),
            content: Set(new.content),
            content_hash: Set(new.content_hash),
            embedding: Set(Some(encode_vector(&new.embedding))),
            embedding_model: Set(Some(new.embedding_model)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.db())
        .await?;
        Ok(record(model).0)
    }

    /// Memories of the given scopes (all scopes when empty), newest first, optionally of one
    /// source, at most `limit`.
    pub async fn memory_list(
        &self,
        scopes: &[MemoryScope],
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<MemoryRecord>, StoreError> {
        let mut query = memories::Entity::find();
        if !scopes.is_empty() {
            query = query.filter(scopes_condition(scopes));
        }
        if let Some(source) = source {
            query = query.filter(memories::Column::Source.eq(source));
        }
        let rows = query
            .order_by_desc(memories::Column::CreatedAt)
            .order_by_asc(memories::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(|m| record(m).0).collect())
    }

    /// Every memory of the given scopes with a vector of `model` (rows without one, or with
    /// another model's, are skipped: their vectors cannot be compared).
    pub async fn memory_vectors(
        &self,
        scopes: &[MemoryScope],
        source: Option<&str>,
        model: &str,
    ) -> Result<Vec<StoredVector>, StoreError> {
        let mut query = memories::Entity::find()
            .filter(scopes_condition(scopes))
            .filter(memories::Column::EmbeddingModel.eq(model));
        if let Some(source) = source {
            query = query.filter(memories::Column::Source.eq(source));
        }
        let rows = query.all(self.db()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|m| {
                let (record, bytes) = record(m);
                bytes.map(|b| StoredVector {
                    record,
                    embedding: decode_vector(&b),
                })
            })
            .collect())
    }

    /// Row count and latest change of the given scopes: a cached copy of their vectors is
    /// current while this is unchanged.
    pub async fn memory_fingerprint(
        &self,
        scopes: &[MemoryScope],
    ) -> Result<(i64, Option<i64>), StoreError> {
        let row = memories::Entity::find()
            .filter(scopes_condition(scopes))
            .select_only()
            .column_as(memories::Column::Id.count(), "n")
            .column_as(memories::Column::UpdatedAt.max(), "m")
            .into_tuple::<(i64, Option<i64>)>()
            .one(self.db())
            .await?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Up to `limit` memories whose vector is not `model`'s (another model's, or from before
    /// models were recorded): their id and text, to embed again.
    pub async fn memory_stale(
        &self,
        model: &str,
        limit: u64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = memories::Entity::find()
            .filter(
                Condition::any()
                    .add(memories::Column::EmbeddingModel.is_null())
                    .add(memories::Column::EmbeddingModel.ne(model)),
            )
            .select_only()
            .column(memories::Column::Id)
            .column(memories::Column::Content)
            .order_by_asc(memories::Column::Id)
            .limit(limit)
            .into_tuple::<(String, String)>()
            .all(self.db())
            .await?;
        Ok(rows)
    }

    /// Replaces a memory's vector with one of `model`.
    pub async fn memory_set_embedding(
        &self,
        id: &str,
        embedding: &[f32],
        model: &str,
    ) -> Result<(), StoreError> {
        memories::Entity::update_many()
            .col_expr(
                memories::Column::Embedding,
                sea_orm::sea_query::Expr::value(encode_vector(embedding)),
            )
            .col_expr(
                memories::Column::EmbeddingModel,
                sea_orm::sea_query::Expr::value(model),
            )
            .col_expr(
                memories::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(memories::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Every scope that holds at least one memory.
    pub async fn memory_scopes(&self) -> Result<Vec<MemoryScope>, StoreError> {
        let rows = memories::Entity::find()
            .select_only()
            .column(memories::Column::Scope)
            .column(memories::Column::ScopeKey)
            .distinct()
            .into_tuple::<(String, String)>()
            .all(self.db())
            .await?;
        let mut scopes: Vec<MemoryScope> = rows
            .iter()
            .filter_map(|(kind, key)| MemoryScope::from_parts(kind, key))
            .collect();
        scopes.sort();
        Ok(scopes)
    }

    /// Deletes one memory; `false` when there was none with that id (in the given scopes, when
    /// any are given).
    pub async fn memory_delete(
        &self,
        id: &str,
        scopes: &[MemoryScope],
    ) -> Result<bool, StoreError> {
        let mut query = memories::Entity::delete_many().filter(memories::Column::Id.eq(id));
        if !scopes.is_empty() {
            query = query.filter(scopes_condition(scopes));
        }
        Ok(query.exec(self.db()).await?.rows_affected > 0)
    }

    /// Points a memory at a new source reference (a doc chunk that moved within its file).
    pub async fn memory_set_source_ref(
        &self,
        id: &str,
        source_ref: &str,
    ) -> Result<(), StoreError> {
        memories::Entity::update_many()
            .col_expr(
                memories::Column::SourceRef,
                sea_orm::sea_query::Expr::value(source_ref.to_owned()),
            )
            .col_expr(
                memories::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(memories::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }
}
