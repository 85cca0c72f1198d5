//! The handshake between the agent side (which installs the filter) and the supervisor (which
//! serves it): one `SOCK_SEQPACKET` socketpair, one method per protocol step, in the style of
//! youki's `process/channel.rs`.
//!
//! 1. The agent side installs the filter and calls [`AgentSender::send_listener`]: the channel
//!    id as the message body and the listener fd as `SCM_RIGHTS`.
//! 2. The supervisor calls [`SupervisorReceiver::wait_for_listener`], starts serving, then
//!    [`SupervisorReceiver::ack_listener`] (one `0x01` byte).
//! 3. The agent side returns from [`AgentSender::wait_for_ack`] and execs the agent: from here
//!    on every trapped syscall finds a supervisor.
//!
//! `SOCK_SEQPACKET` keeps message boundaries, so the channel id needs no length prefix.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// Longest channel id accepted on the wire.
pub const MAX_CHANNEL_ID: usize = 1024;

/// The byte the supervisor sends once it serves the listener.
const ACK: u8 = 0x01;

/// Errors of the handshake, named by step.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `socketpair(2)` failed.
    #[error("cannot create the handshake socketpair")]
    Socketpair(#[source] nix::Error),
    /// Sending the listener failed.
    #[error("cannot send the notify listener to the supervisor")]
    SendListener(#[source] nix::Error),
    /// Receiving the listener failed.
    #[error("cannot receive the notify listener from the agent side")]
    ReceiveListener(#[source] nix::Error),
    /// The message carried no fd, more than one, or the peer hung up.
    #[error("handshake message from the agent side carried {fds} fds and {bytes} bytes")]
    BadListenerMessage {
        /// How many fds arrived.
        fds: usize,
        /// How many bytes arrived.
        bytes: usize,
    },
    /// The channel id is too long or not UTF-8.
    #[error("invalid channel id in the handshake ({len} bytes)")]
    BadChannelId {
        /// Its length.
        len: usize,
    },
    /// Sending the ack failed.
    #[error("cannot acknowledge the notify listener")]
    SendAck(#[source] nix::Error),
    /// Waiting for the ack failed or the supervisor hung up.
    #[error("no acknowledgement from the supervisor (got {got:?})")]
    WaitForAck {
        /// The byte received, if any.
        got: Option<u8>,
        /// The error, if any.
        #[source]
        source: Option<nix::Error>,
    },
}

/// The supervisor's end.
#[derive(Debug)]
pub struct SupervisorReceiver {
    sock: OwnedFd,
}

/// The agent side's end.
#[derive(Debug)]
pub struct AgentSender {
    sock: OwnedFd,
}

/// Creates a connected pair. Both ends are close-on-exec; `wrap` moves the agent's end to fd 3
/// in the child explicitly.
pub fn handshake_channel() -> Result<(SupervisorReceiver, AgentSender), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Socketpair)?;
    Ok((SupervisorReceiver { sock: a }, AgentSender { sock: b }))
}

impl AgentSender {
    /// Wraps an inherited socket (fd 3 in the `syscallwrap` child).
    pub fn from_fd(sock: OwnedFd) -> AgentSender {
        AgentSender { sock }
    }

    /// The raw fd, to place it at a known number in a child.
    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Step 1: sends the channel id and the listener fd.
    pub fn send_listener(&self, listener: &OwnedFd, channel_id: &str) -> Result<(), ChannelError> {
        if channel_id.len() > MAX_CHANNEL_ID {
            return Err(ChannelError::BadChannelId {
                len: channel_id.len(),
            });
        }
        // An empty datagram would be indistinguishable from a hang-up on the other side.
        let body: &[u8] = if channel_id.is_empty() {
            b"\0"
        } else {
            channel_id.as_bytes()
        };
        let fds = [listener.as_raw_fd()];
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(body)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(ChannelError::SendListener)?;
        Ok(())
    }

    /// Step 3: blocks until the supervisor serves the listener.
    pub fn wait_for_ack(&self) -> Result<(), ChannelError> {
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(self.sock.as_fd(), &mut byte) {
                Ok(1) if byte[0] == ACK => return Ok(()),
                Ok(1) => {
                    return Err(ChannelError::WaitForAck {
                        got: Some(byte[0]),
                        source: None,
                    });
                }
                Ok(_) => {
                    return Err(ChannelError::WaitForAck {
                        got: None,
                        source: None,
                    });
                }
                Err(nix::Error::EINTR) => continue,
                Err(err) => {
                    return Err(ChannelError::WaitForAck {
                        got: None,
                        source: Some(err),
                    });
                }
            }
        }
    }
}

impl SupervisorReceiver {
    /// Step 2a: receives the listener fd and the channel id.
    pub fn wait_for_listener(&self) -> Result<(OwnedFd, String), ChannelError> {
        let mut buf = [0u8; MAX_CHANNEL_ID + 1];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let (bytes, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(ChannelError::ReceiveListener)? {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            fds.extend(received);
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(nix::Error::EINTR) => continue,
                Err(err) => return Err(ChannelError::ReceiveListener(err)),
            }
        };
        // SAFETY: the kernel installed these fds in this process for this message; nothing
        // else refers to them, so each is owned exactly once here.
        let mut owned: Vec<OwnedFd> = fds
            .into_iter()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        if owned.len() != 1 || bytes == 0 {
            return Err(ChannelError::BadListenerMessage {
                fds: owned.len(),
                bytes,
            });
        }
        let body = &buf[..bytes];
        let channel_id = if body == b"\0" {
            String::new()
        } else {
            std::str::from_utf8(body)
                .map_err(|_| ChannelError::BadChannelId { len: bytes })?
                .to_owned()
        };
        let listener = owned.remove(0);
        Ok((listener, channel_id))
    }

    /// Step 2b: tells the agent side that the listener is served.
    pub fn ack_listener(&self) -> Result<(), ChannelError> {
        loop {
            match nix::unistd::write(self.sock.as_fd(), &[ACK]) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(err) => return Err(ChannelError::SendAck(err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_fd_and_channel_id() {
        let (sup, agent) = handshake_channel().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = OwnedFd::from(file);
        agent.send_listener(&fd, "C0123").unwrap();
        let (received, channel) = sup.wait_for_listener().unwrap();
        assert_eq!(channel, "C0123");
        assert_ne!(received.as_raw_fd(), fd.as_raw_fd());
        sup.ack_listener().unwrap();
        agent.wait_for_ack().unwrap();
    }

    #[test]
    fn empty_channel_id_round_trips() {
        let (sup, agent) = handshake_channel().unwrap();
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        agent.send_listener(&fd, "").unwrap();
        assert_eq!(sup.wait_for_listener().unwrap().1, "");
    }

    #[test]
    fn hang_up_is_an_error() {
        let (sup, agent) = handshake_channel().unwrap();
        drop(agent);
        assert!(sup.wait_for_listener().is_err());
        let (sup, agent) = handshake_channel().unwrap();
        drop(sup);
        assert!(agent.wait_for_ack().is_err());
    }
}
