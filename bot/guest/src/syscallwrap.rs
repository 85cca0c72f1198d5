//! `loop syscallwrap -- CMD ARGS`: the gate's root parent process, which supervises the agent,
//! and the re-executed agent side that installs the filter and execs the command.
//!
//! Both run before any tokio runtime exists: the gate drops capabilities per thread, so
//! [`run_parent`] must be called while the process has one thread.

use std::ffi::OsString;

use loop_gate::wrap::{self, WrapConfig, WrapError};
use loop_wire::container::env;
use loop_wire::error_chain;

use crate::approver::HttpApprover;
use crate::audit::{AUDIT_FLUSH_TIMEOUT, AuditShipper};

/// Whether this process is the re-exec'd agent side of `syscallwrap`.
pub use loop_gate::wrap::is_child_mode;

/// Sets `LOOP_GATE_LOG` (an env filter, `warn` by default) for the supervisor's stderr, which
/// ends up in the container's log. Creates no thread.
pub fn init_logging() {
    crate::init_stderr_logging(env::GATE_LOG);
}

/// The command after `--` in `loop syscallwrap -- CMD ARGS` (the child re-exec sees the same
/// arguments as the parent).
pub fn command_after_dashes(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter().skip_while(|a| a != "--").skip(1).collect()
}

/// The re-exec'd agent side: installs the filter and execs the command. Returns only when
/// that failed, with the exit status to use.
pub fn run_child() -> i32 {
    let command = command_after_dashes(std::env::args_os());
    match wrap::run_syscallwrap_child(&command) {
        Ok(never) => match never {},
        Err(err) => {
            eprintln!("loop syscallwrap (agent side): {}", error_chain(&err));
            126
        }
    }
}

/// The root parent: loads the policy, starts the agent side and supervises it. Returns the
/// agent's exit status (126 when the agent could not be started).
pub fn run_parent(command: &[OsString]) -> i32 {
    match parent(command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("loop syscallwrap: {}", error_chain(&err));
            126
        }
    }
}

fn parent(command: &[OsString]) -> Result<i32, WrapError> {
    let mut config = WrapConfig::from_env()?;
    if let Some(max) = std::env::var(env::GATE_MAX_PENDING)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        config.max_pending = max;
    }
    let approver = HttpApprover::from_env();
    let audit = AuditShipper::from_env();
    let code =
        wrap::run_syscallwrap_audited(&config, approver, Some(Box::new(audit.clone())), command)?;
    // The agent is done; what it was denied last should still reach the daemon.
    audit.flush(AUDIT_FLUSH_TIMEOUT);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_what_follows_the_dashes() {
        let args = ["loop", "syscallwrap", "--", "claude", "--", "-p"].map(OsString::from);
        assert_eq!(
            command_after_dashes(args),
            ["claude", "--", "-p"].map(OsString::from).to_vec()
        );
        assert!(command_after_dashes(["loop", "syscallwrap"].map(OsString::from)).is_empty());
    }
}
