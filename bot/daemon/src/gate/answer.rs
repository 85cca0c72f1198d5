//! Answering an approval: the one path for the admin API (`loop approve`/`loop deny`) and for
//! chat buttons ([`loop_adapter::Inbound::Approval`]). The database decides who was first;
//! the request waiting in `POST /api/gate/container-approval` is then woken with the answer
//! and updates the prompt in the channel.

use loop_adapter::ApprovalChoice;
use loop_gate::wire::ApprovalDecision;

use super::GateHub;
use loop_store::{ApprovalAnswer, ApprovalRecord, Decided, Store, StoreError};

/// What became of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// Recorded: it is the decision.
    Now(ApprovalRecord),
    /// Someone (or the timeout) answered first; the approval as it stands.
    Already(ApprovalRecord),
    /// The answer came from another channel than the prompt's: ignored.
    WrongChannel,
}

/// The chat buttons' answer as the gate's.
pub fn decision_of_choice(choice: ApprovalChoice) -> ApprovalDecision {
    match choice {
        ApprovalChoice::AllowOnce => ApprovalDecision::AllowOnce,
        ApprovalChoice::AllowSession => ApprovalDecision::AllowSession,
        ApprovalChoice::Deny => ApprovalDecision::Deny,
    }
}

pub(crate) fn answer_of(decision: ApprovalDecision) -> ApprovalAnswer {
    match decision {
        ApprovalDecision::AllowOnce => ApprovalAnswer::AllowOnce,
        ApprovalDecision::AllowSession => ApprovalAnswer::AllowSession,
        ApprovalDecision::Deny => ApprovalAnswer::Deny,
    }
}

/// Records `decision` on approval `id` if it is still pending and wakes the request waiting
/// for it. `from_channel` (a channel key) is checked against the approval's channel when the
/// answer came from a chat. `NotFound` for an unknown id.
pub async fn answer(
    store: &Store,
    gate: &GateHub,
    id: &str,
    from_channel: Option<&str>,
    decision: ApprovalDecision,
    decided_by: &str,
) -> Result<Answered, StoreError> {
    if let Some(channel) = from_channel
        && store.approval(id).await?.channel_key != channel
    {
        return Ok(Answered::WrongChannel);
    }
    match store
        .decide_approval(id, answer_of(decision), decided_by)
        .await?
    {
        Decided::Now(record) => {
            if !gate.resolve(id, decision, decided_by) {
                tracing::info!(approval = %id, "answered, but no request waits for it any more");
            }
            Ok(Answered::Now(record))
        }
        Decided::Already(record) => Ok(Answered::Already(record)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_store::test_support::TestDb;
    use loop_store::{ApprovalStatus, NewApproval, now_ms};

    #[tokio::test]
    async fn the_first_answer_wins_and_only_from_the_prompts_channel() {
        let db = TestDb::sqlite().await;
        let store = db.store();
        let gate = GateHub::default();
        store
            .create_approval(NewApproval {
                id: "a1".into(),
                container_id: "local:c".into(),
                channel_key: "local:c".into(),
                run_id: Some("r1".into()),
                syscall: "execve".into(),
                summary: "exec /usr/bin/git push".into(),
                detail: "{}".into(),
                cache_key: "k".into(),
                expires_at: now_ms() + 60_000,
            })
            .await
            .expect("create");
        let waiting = gate.wait_for("a1", "local:c");
        assert_eq!(
            answer(
                store,
                &gate,
                "a1",
                Some("local:other"),
                ApprovalDecision::Deny,
                "eve"
            )
            .await
            .expect("answer"),
            Answered::WrongChannel
        );
        let first = answer(
            store,
            &gate,
            "a1",
            Some("local:c"),
            decision_of_choice(ApprovalChoice::AllowOnce),
            "alice",
        )
        .await
        .expect("answer");
        assert!(matches!(first, Answered::Now(r) if r.status == ApprovalStatus::Allowed));
        assert!(waiting.await.is_ok(), "the waiting request was woken");
        let second = answer(store, &gate, "a1", None, ApprovalDecision::Deny, "bob")
            .await
            .expect("answer");
        assert!(matches!(second, Answered::Already(r) if r.decided_by.as_deref() == Some("alice")));
        assert!(matches!(
            answer(store, &gate, "zz", None, ApprovalDecision::Deny, "bob").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
