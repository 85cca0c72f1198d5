//! `/loop push` and `/loop pr`: a thread's branch leaves the host, with credentials the
//! agent never sees.

use loop_adapter::ChannelKey;

use super::{Orchestrator, OrchestratorError};

impl Orchestrator {
    /// `/loop push`.
    pub(super) async fn push_command(
        &self,
        _channel: &ChannelKey,
    ) -> Result<String, OrchestratorError> {
        Ok("`/loop push` is not available yet.".to_owned())
    }

    /// `/loop pr [TITLE]`.
    pub(super) async fn pr_command(
        &self,
        _channel: &ChannelKey,
        _title: Option<String>,
    ) -> Result<String, OrchestratorError> {
        Ok("`/loop pr` is not available yet.".to_owned())
    }
}
