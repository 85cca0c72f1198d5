//! loop-gate: the agent's security gate.
//!
//! The agent's dangerous syscalls are held by a seccomp user-notify filter until a policy, or a
//! person through the chat, decides. The crate is split by what each part owns:
//!
//! - [`policy`]: the policy file, its validation, the baseline and the pure decision function.
//! - [`gitguard`]: a repository's control files (hooks, config, gitdir pointers), whose changes
//!   the baseline holds for a person's approval.
//! - [`filter`]: which syscalls are trapped and why, the BPF program, and installing it.
//! - [`inject`]: race-free opens: the supervisor opens as the agent and injects the fd.
//! - [`notify`]: the supervisor loop that receives notifications, reads the target's
//!   arguments, asks the policy and an [`notify::Approver`], and answers the kernel.
//! - [`channel`]: the typed handshake that hands the listener fd to the supervisor.
//! - [`wire`]: the approval protocol (`POST /api/gate/container-approval`) that the bot serves.
//! - [`wrap`]: `loop syscallwrap -- CMD ARGS`, the root parent and agent child handshake.
//! - [`dockerproxy`]: `loop dockerproxy`, the agent container's policy-checked Docker socket.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod channel;
pub mod dockerproxy;
pub mod filter;
pub mod gitguard;
pub mod inject;
pub mod notify;
pub mod policy;
pub mod wire;
pub mod wrap;
