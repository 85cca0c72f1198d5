//! Approval prompts answered with a chat button. The decision itself is the gate's
//! (`crate::gate::answer`, shared with `loop approve`/`loop deny`); the orchestrator only
//! knows who answered where, and tells a person whose answer came too late or from elsewhere.

use loop_adapter::{ApprovalChoice, Author, ChannelKey};

use super::{Orchestrator, OrchestratorError};
use crate::gate::answer::{Answered, answer, decision_of_choice};
use loop_store::StoreError;

impl Orchestrator {
    /// A person answered an approval prompt in a chat (the adapter checked they may). A late
    /// or misplaced answer is explained to that person only.
    pub async fn answer_approval_in_chat(
        &self,
        channel: ChannelKey,
        approval_id: &str,
        choice: ApprovalChoice,
        decided_by: &Author,
    ) -> Result<(), OrchestratorError> {
        let who = if decided_by.name.is_empty() {
            decided_by.id.clone()
        } else {
            decided_by.name.clone()
        };
        let outcome = answer(
            self.store(),
            self.gate(),
            approval_id,
            Some(&channel.to_string()),
            decision_of_choice(choice),
            &who,
        )
        .await;
        let reply = match outcome {
            Ok(Answered::Now(record)) => {
                tracing::info!(approval = %record.id, by = %who, ?choice, "approval answered in chat");
                return Ok(());
            }
            Ok(Answered::Already(record)) => format!(
                "Approval `{}` was already answered ({}{}).",
                record.id,
                record.status.as_str(),
                record
                    .decided_by
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ),
            Ok(Answered::WrongChannel) | Err(StoreError::NotFound(_)) => {
                format!("There is no approval `{approval_id}` in this channel.")
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(adapter) = self.adapter_for(channel.platform)
            && let Err(err) = adapter.post_private(&channel, &decided_by.id, &reply).await
        {
            tracing::debug!(error = %err, "cannot tell the person about their late answer");
        }
        Ok(())
    }
}
