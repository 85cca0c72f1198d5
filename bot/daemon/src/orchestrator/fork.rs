//! `/loop fork N PROMPT`: N threads try one prompt on N branches from one base, and a
//! comparison is posted where it was asked.

use loop_adapter::{Author, ChannelKey};

use super::{Orchestrator, OrchestratorError};

impl Orchestrator {
    /// `/loop fork N PROMPT`.
    pub(super) async fn fork_command(
        &self,
        _channel: &ChannelKey,
        _author: &Author,
        _count: u32,
        _prompt: String,
    ) -> Result<String, OrchestratorError> {
        Ok("`/loop fork` is not available yet.".to_owned())
    }
}
