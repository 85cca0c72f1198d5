//! The scheduler's way in: a due task's run enters the inbox like a chat message (stored,
//! then the dispatcher is woken), and a run of a task made in a channel gets a thread of its
//! own. The scheduler knows only [`TaskIntake`], so it does not depend on the orchestrator.

use futures::future::BoxFuture;
use loop_adapter::{ChannelKey, Message};

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
            let adapter = self.adapter_for(channel.platform)?;
            match adapter.open_thread(channel, title).await {
                Ok(thread) => thread,
                Err(err) => {
                    tracing::warn!(channel = %channel, error = %err, "cannot open a thread for a task run; it runs in the channel");
                    None
                }
            }
        })
    }
}
