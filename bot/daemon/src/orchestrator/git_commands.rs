//! `/loop base` and `/loop diff`: a thread's branch seen from chat.

use loop_adapter::{Author, ChannelKey};

use super::{Orchestrator, OrchestratorError};

impl Orchestrator {
    /// `/loop base [BRANCH]`.
    pub(super) async fn base_command(
        &self,
        _channel: &ChannelKey,
        _author: &Author,
        _branch: Option<String>,
    ) -> Result<String, OrchestratorError> {
        Ok("`/loop base` is not available yet.".to_owned())
    }

    /// `/loop diff`.
    pub(super) async fn diff_command(
        &self,
        _channel: &ChannelKey,
    ) -> Result<String, OrchestratorError> {
        Ok("`/loop diff` is not available yet.".to_owned())
    }
}
