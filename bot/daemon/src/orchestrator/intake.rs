//! The scheduler's way in: a due task's run enters the inbox like a chat message (stored,
//! then the dispatcher is woken), and a run of a task made in a channel gets a thread of its
//! own (opened as a fork's variants open theirs). The scheduler knows only [`TaskIntake`], so
//! it does not depend on the orchestrator.

use futures::future::BoxFuture;
use loop_adapter::{AdapterError, ChannelKey, Message};

use super::{Orchestrator, OrchestratorError};
use crate::scheduler::{SchedulerError, TaskIntake};

/// The orchestrator's refusals as the scheduler decides on them: shutting down ends the tick,
/// anything else leaves the task due.
impl From<OrchestratorError> for SchedulerError {
    fn from(err: OrchestratorError) -> Self {
        match err {
            OrchestratorError::Store(err) => SchedulerError::Store(err),
            OrchestratorError::ShuttingDown => SchedulerError::ShuttingDown,
            other @ OrchestratorError::NoAdapter(_) => SchedulerError::Intake(Box::new(other)),
        }
    }
}

impl Orchestrator {
    /// Posts `title` in `channel` and opens a thread on it for a run of its own (a scheduled
    /// task's, a fork variant's). `None`: the platform has no threads (or is not running).
    pub(super) async fn open_run_thread(
        &self,
        channel: &ChannelKey,
        title: &str,
    ) -> Result<Option<ChannelKey>, AdapterError> {
        let Some(adapter) = self.adapter_for(channel.platform) else {
            return Ok(None);
        };
        adapter.open_thread(channel, title).await
    }
}

impl TaskIntake for Orchestrator {
    fn enqueue(&self, message: Message) -> BoxFuture<'_, Result<(), SchedulerError>> {
        Box::pin(async move {
            self.accept_scheduled(message).await?;
            Ok(())
        })
    }

    fn open_thread<'a>(
        &'a self,
        channel: &'a ChannelKey,
        title: &'a str,
    ) -> BoxFuture<'a, Option<ChannelKey>> {
        Box::pin(async move {
            match self.open_run_thread(channel, title).await {
                Ok(thread) => thread,
                Err(err) => {
                    tracing::warn!(channel = %channel, error = %err, "cannot open a thread for a task run; it runs in the channel");
                    None
                }
            }
        })
    }
}
