//! The in-container audit shipper: the gate supervisor's decisions that the daemon would not
//! otherwise see (policy denies, "allowed for session" hits, overload and unreadable denies,
//! and with `gates.audit.verbose` every policy allow) go to
//! `POST {API_URL}/api/gate/container-audit`, so `gate_audit` on the host has them.
//!
//! Answers a person gave are not shipped: the daemon recorded them when it answered.
//! [`AuditShipper::record`] runs on the supervisor's threads and must not block, so records go
//! through a bounded queue to one sender thread (started on first use, after `syscallwrap`
//! dropped its capabilities); when the queue is full a record is dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use loop_gate::notify::AuditSink;
use loop_gate::wire::{AuditOutcome, AuditRecord};

use loop_wire::container::env;

/// Most records in one request (the daemon refuses more).
use loop_wire::api::MAX_AUDIT_BATCH as MAX_BATCH;
/// How long an exiting `syscallwrap` or `dockerproxy` waits for its last records to be
/// delivered.
pub const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Records waiting for the sender before new ones are dropped.
const QUEUE: usize = 4096;
/// One delivery attempt's limit: the audit must never hold the agent's exit for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

enum Item {
    Record(AuditRecord),
    /// Send what is queued, then acknowledge.
    Flush(SyncSender<()>),
}

struct Inner {
    url: String,
    token: String,
    verbose: bool,
    queue: OnceLock<Option<SyncSender<Item>>>,
    dropped: AtomicU64,
}

/// Ships audit records to the daemon. Cheap to clone.
#[derive(Clone)]
pub struct AuditShipper {
    inner: Arc<Inner>,
}

impl AuditShipper {
    pub fn new(api_url: &str, token: String, verbose: bool) -> AuditShipper {
        AuditShipper {
            inner: Arc::new(Inner {
                url: format!(
                    "{}{}",
                    api_url.trim_end_matches('/'),
                    loop_wire::routes::GATE_AUDIT
                ),
                token,
                verbose,
                queue: OnceLock::new(),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// From `API_URL`, `LOOP_GATE_TOKEN` and `LOOP_GATE_AUDIT_VERBOSE`.
    pub fn from_env() -> AuditShipper {
        AuditShipper::new(
            &std::env::var(env::API_URL).unwrap_or_default(),
            std::env::var(loop_gate::wrap::GATE_TOKEN_ENV).unwrap_or_default(),
            std::env::var(env::GATE_AUDIT_VERBOSE).is_ok_and(|v| v == "1"),
        )
    }

    /// Whether a record is shipped at all.
    pub fn wanted(&self, outcome: AuditOutcome) -> bool {
        match outcome {
            AuditOutcome::Allowed => self.inner.verbose,
            AuditOutcome::Denied
            | AuditOutcome::AllowedBySession
            | AuditOutcome::DeniedOverLimit
            | AuditOutcome::DeniedUnreadable => true,
            // The daemon recorded these when it answered (or could not be reached at all).
            AuditOutcome::ApprovedOnce
            | AuditOutcome::ApprovedForSession
            | AuditOutcome::DeniedByApprover => false,
        }
    }

    fn queue(&self) -> Option<&SyncSender<Item>> {
        self.inner
            .queue
            .get_or_init(|| {
                if self.inner.token.is_empty() || !self.inner.url.starts_with("http") {
                    return None;
                }
                let (tx, rx) = sync_channel(QUEUE);
                let inner = Arc::clone(&self.inner);
                std::thread::Builder::new()
                    .name("loop-gate-audit".to_owned())
                    .spawn(move || send_loop(&inner, &rx))
                    .map_err(|err| tracing::warn!(error = %err, "cannot start the audit sender"))
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }

    /// Sends what is queued; waits at most `timeout` (the agent has exited, the process is
    /// about to).
    pub fn flush(&self, timeout: Duration) {
        let Some(Some(queue)) = self.inner.queue.get() else {
            return;
        };
        let (ack, done) = sync_channel(1);
        if queue.send(Item::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
        let dropped = self.inner.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "gate audit records were dropped");
        }
    }
}

impl AuditSink for AuditShipper {
    fn record(&self, record: AuditRecord) {
        if !self.wanted(record.outcome) {
            return;
        }
        let Some(queue) = self.queue() else {
            return;
        };
        match queue.try_send(Item::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sender thread: batches what is queued and posts it; a failed post is logged and its
/// records dropped (the audit is best effort; the decisions themselves were already made).
fn send_loop(inner: &Inner, rx: &Receiver<Item>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the audit runtime");
            return;
        }
    };
    let client = match reqwest::Client::builder().timeout(SEND_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(error = %err, "cannot build the audit client");
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Item::Record(record) => batch.push(record),
                Item::Flush(ack) => acks.push(ack),
            }
            next = if batch.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            let result = runtime.block_on(async {
                client
                    .post(&inner.url)
                    .bearer_auth(&inner.token)
                    .json(&batch)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
            });
            if let Err(err) = result {
                inner
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %err, records = batch.len(), "cannot ship gate audit records");
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_daemon_did_not_see_is_shipped() {
        let quiet = AuditShipper::new("http://x", "t".into(), false);
        assert!(quiet.wanted(AuditOutcome::Denied));
        assert!(quiet.wanted(AuditOutcome::AllowedBySession));
        assert!(!quiet.wanted(AuditOutcome::Allowed));
        assert!(!quiet.wanted(AuditOutcome::ApprovedOnce));
        assert!(!quiet.wanted(AuditOutcome::DeniedByApprover));
        assert!(AuditShipper::new("http://x", "t".into(), true).wanted(AuditOutcome::Allowed));
    }

    #[test]
    fn without_a_daemon_records_are_dropped_quietly() {
        let shipper = AuditShipper::new("", String::new(), true);
        shipper.record(AuditRecord {
            channel_id: "c".into(),
            pid: 1,
            syscall: "execve".into(),
            action: None,
            rule: None,
            outcome: AuditOutcome::Denied,
        });
        shipper.flush(Duration::from_millis(10));
    }
}
