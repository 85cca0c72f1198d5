//! Approval prompts as Block Kit messages, and the `block_actions` their buttons produce.
//!
//! Each button carries the approval id as its `value` and says what it decides in its
//! `action_id`, so a click is understood without any state kept here.

use loop_adapter::{ApprovalChoice, ApprovalPrompt};
use serde_json::{Value, json};

use crate::mrkdwn::{escape, to_mrkdwn};

/// `block_id` of the buttons row.
pub const ACTIONS_BLOCK: &str = "loop_approval";
pub const APPROVE_ONCE: &str = "loop_approve_once";
pub const APPROVE_SESSION: &str = "loop_approve_session";
pub const DENY: &str = "loop_deny";

/// The blocks of a prompt waiting for a decision.
pub fn prompt_blocks(prompt: &ApprovalPrompt) -> Value {
    let mut text = format!(
        "🔐 *Approval needed*\n`{}`",
        escape(&prompt.summary).replace('`', "'")
    );
    if let Some(detail) = &prompt.detail {
        text.push('\n');
        text.push_str(&to_mrkdwn(detail));
    }
    json!([
        {"type": "section", "block_id": "loop_approval_text", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": [
            button(APPROVE_ONCE, "Approve", &prompt.approval_id, Some("primary")),
            button(APPROVE_SESSION, "Always allow in this session", &prompt.approval_id, None),
            button(DENY, "Deny", &prompt.approval_id, Some("danger")),
        ]},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Approval `{}` · only approvers can decide", escape(&prompt.approval_id))}
        ]}
    ])
}

fn button(action_id: &str, label: &str, value: &str, style: Option<&str>) -> Value {
    let mut button = json!({
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": true},
        "value": value,
    });
    if let Some(style) = style {
        button["style"] = json!(style);
    }
    button
}

/// The blocks of a decided prompt: its outcome (who and how) and when, without buttons, so it
/// cannot be decided again from this message.
pub fn decided_blocks(outcome_mrkdwn: &str, unix_seconds: i64, fallback_time: &str) -> Value {
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": outcome_mrkdwn}},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Decided <!date^{unix_seconds}^{{date_short_pretty}} at {{time_secs}}|{fallback_time}>")}
        ]}
    ])
}

/// What a button's `action_id` decides, if it is one of ours.
pub fn choice_of(action_id: &str) -> Option<ApprovalChoice> {
    match action_id {
        APPROVE_ONCE => Some(ApprovalChoice::AllowOnce),
        APPROVE_SESSION => Some(ApprovalChoice::AllowSession),
        DENY => Some(ApprovalChoice::Deny),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_has_three_buttons_carrying_the_id() {
        let blocks = prompt_blocks(&ApprovalPrompt {
            approval_id: "ab12".into(),
            summary: "execve git push".into(),
            detail: None,
            text: "fallback".into(),
        });
        let buttons = blocks[1]["elements"].as_array().expect("buttons");
        assert_eq!(buttons.len(), 3);
        for button in buttons {
            assert_eq!(button["value"], "ab12");
            assert!(choice_of(button["action_id"].as_str().expect("id")).is_some());
        }
        assert_eq!(buttons[1]["text"]["text"], "Always allow in this session");
        // Slack's Block Kit model (as slack-morphism reads it) accepts these blocks.
        let parsed: Vec<slack_morphism::prelude::SlackBlock> =
            serde_json::from_value(blocks).expect("valid blocks");
        assert_eq!(parsed.len(), 3);
        assert_eq!(choice_of("other"), None);
    }
}
