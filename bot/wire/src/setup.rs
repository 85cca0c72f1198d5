//! A project's setup commands (a devcontainer.json's `onCreateCommand`,
//! `updateContentCommand`, `postCreateCommand`): the steps the runner hands to `loop setup` in
//! the container, and the lines `loop setup` writes back on the agent's stdout, which the
//! runner decodes into events. Both sides use these types, so the shapes exist once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One named setup command. Steps run in order; the first that fails ends the setup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetupStep {
    /// What the thread calls it: the devcontainer.json field, e.g. `postCreateCommand`.
    pub name: String,
    pub command: SetupCommand,
}

/// A command in the Dev Container spec's shapes (untagged, as devcontainer.json writes them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SetupCommand {
    /// A command line for `/bin/sh -c`.
    Shell(String),
    /// A program and its arguments, run without a shell.
    Argv(Vec<String>),
    /// Named commands run at the same time; the step fails when any of them fails.
    Parallel(BTreeMap<String, SetupCommand>),
}

/// `subtype` of a [`SetupReport::Line`].
pub const LINE_SUBTYPE: &str = "loop_setup";
/// `subtype` of a [`SetupReport::Failed`].
pub const FAILED_SUBTYPE: &str = "loop_setup_failed";

/// What `loop setup` reports, one JSON object a line on the agent's stdout, among the Claude
/// CLI's own stream-json as a `"type": "system"` event (see [`SetupReportLine`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "subtype")]
pub enum SetupReport {
    /// One line a step printed (stdout or stderr).
    #[serde(rename = "loop_setup")]
    Line { name: String, line: String },
    /// A step failed (non-zero exit, killed, or could not start); the steps after it were
    /// skipped and the agent ran anyway.
    #[serde(rename = "loop_setup_failed")]
    Failed {
        name: String,
        /// The exit status; 128 + the signal when killed, 127 when it could not start.
        exit_code: i32,
        /// The step's last lines of output, oldest first.
        tail: String,
    },
}

impl SetupReport {
    /// The report as the line `loop setup` writes.
    pub fn as_line(&self) -> SetupReportLine<'_> {
        SetupReportLine {
            kind: "system",
            report: self,
        }
    }
}

/// A [`SetupReport`] with the stream-json `"type": "system"` around it.
#[derive(Debug, Serialize)]
pub struct SetupReportLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    report: &'a SetupReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_in_the_dev_container_shapes() {
        let steps: Vec<SetupStep> = serde_json::from_str(
            r#"[{"name":"onCreateCommand","command":"make"},
                {"name":"postCreateCommand","command":{"a":["npm","ci"],"b":"pip install ."}}]"#,
        )
        .expect("steps");
        assert_eq!(steps[0].command, SetupCommand::Shell("make".into()));
        let SetupCommand::Parallel(entries) = &steps[1].command else {
            panic!("{steps:?}");
        };
        assert_eq!(
            entries["a"],
            SetupCommand::Argv(vec!["npm".into(), "ci".into()])
        );
        assert_eq!(entries["b"], SetupCommand::Shell("pip install .".into()));
    }

    #[test]
    fn a_report_is_a_system_event_line() {
        let report = SetupReport::Failed {
            name: "postCreateCommand".into(),
            exit_code: 2,
            tail: "boom".into(),
        };
        let text = serde_json::to_string(&report.as_line()).expect("json");
        assert_eq!(
            text,
            r#"{"type":"system","subtype":"loop_setup_failed","name":"postCreateCommand","exit_code":2,"tail":"boom"}"#
        );
        assert_eq!(
            serde_json::from_str::<SetupReport>(&text).expect("reads back"),
            report
        );
        let line = SetupReport::Line {
            name: "postCreateCommand".into(),
            line: "ok".into(),
        };
        let text = serde_json::to_string(&line.as_line()).expect("json");
        assert_eq!(
            text,
            r#"{"type":"system","subtype":"loop_setup","name":"postCreateCommand","line":"ok"}"#
        );
    }
}
