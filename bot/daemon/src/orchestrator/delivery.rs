//! The outbox's one deliverer. Answers, notices and command replies are written to the outbox
//! first; their writers only wake this task ([`Orchestrator::deliver_soon`]), and it alone
//! posts. Channels are delivered to in parallel, each channel's messages in order.
//!
//! Exactly once, part by part: a message is claimed in the database with a lease before
//! anything is posted, and each platform message of it (a long answer is several parts) is
//! recorded right after the platform accepted it. The window left is between a part's post
//! and its record, and it is resolved towards posting again rather than losing the answer: a
//! daemon killed there posts that part once more after the restart, whose first act is to
//! release the dead daemon's claims. Discord shows the repeat once, since every part carries a
//! `nonce` (the message's delivery key and the part number) with `enforce_nonce`; Slack has
//! no idempotency key, so there the one part in flight may appear twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use loop_adapter::ChannelKey;
use tokio::task::{Id as TaskId, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Orchestrator;
use loop_store::{OutboxMessage, OutboxStatus, now_ms};

/// How long a claim holds a message without progress. Every part's post is bounded by
/// [`PART_TIMEOUT`] and renews the lease, so a live deliverer never loses its claim; a dead
/// one's claim is free again after this (or at once, when a daemon starts).
const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// Bound on posting one part, the adapters' own 429 retries included (Discord's back off for
/// about a minute at most).
const PART_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the outbox is looked at without a wake-up: retries after a failed post.
const RETRY_TICK: Duration = Duration::from_secs(2);
/// Channels delivered to at once.
const PARALLEL_CHANNELS: usize = 16;
/// At shutdown, how long the last answers may take to go out before they are left for the
/// next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries of one outbox message before it is given up on.
const MAX_SEND_ATTEMPTS: i32 = 8;

const _: () = assert!(PART_TIMEOUT.as_millis() < CLAIM_LEASE.as_millis());

/// What became of one outbox message.
enum Delivery {
    /// Posted (or given up on for good): the channel's next message may go.
    Done,
    /// Not now (a failed post, a claim held elsewhere): the channel waits for the next pass,
    /// so its messages keep their order.
    Later,
}

/// Channel deliveries in flight, by task.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<bool>,
    channels: HashMap<TaskId, String>,
}

impl InFlight {
    fn is_busy(&self, channel: &str) -> bool {
        self.channels.values().any(|c| c == channel)
    }

    /// Waits for one channel's delivery to end: its channel and whether everything went out.
    /// `None` when nothing is in flight.
    async fn next_done(&mut self) -> Option<(String, bool)> {
        let (id, delivered) = match self.tasks.join_next_with_id().await? {
            Ok((id, delivered)) => (id, delivered),
            Err(err) => {
                tracing::error!(error = %err, "a delivery task failed");
                (err.id(), false)
            }
        };
        Some((self.channels.remove(&id).unwrap_or_default(), delivered))
    }
}

impl Orchestrator {
    /// Tells the deliverer that the outbox has something new. Never posts itself.
    pub fn deliver_soon(&self) {
        self.inner.deliver.notify_one();
    }

    /// Delivers the outbox until `stop`, then drains what is left for at most
    /// [`DRAIN_TIMEOUT`] (the answers of the turns that finished during shutdown).
    pub(super) async fn run_deliverer(&self, stop: CancellationToken) {
        let mut in_flight = InFlight::default();
        loop {
            self.start_deliveries(&mut in_flight, &HashSet::new()).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.deliver.notified() => {}
                Some(_) = in_flight.next_done(), if !in_flight.tasks.is_empty() => {}
                _ = tokio::time::sleep(RETRY_TICK) => {}
            }
        }
        let drain = async {
            // A channel whose post fails now is left for the next start rather than retried
            // until the deadline.
            let mut failing = HashSet::new();
            loop {
                self.start_deliveries(&mut in_flight, &failing).await;
                match in_flight.next_done().await {
                    Some((channel, false)) => {
                        failing.insert(channel);
                    }
                    Some((_, true)) => {}
                    None => break,
                }
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!(
                "outbox not drained at shutdown; the rest goes out after the next start"
            );
        }
    }

    /// Starts a delivery for every channel with unclaimed messages that has none in flight.
    async fn start_deliveries(&self, in_flight: &mut InFlight, skip: &HashSet<String>) {
        if in_flight.tasks.len() >= PARALLEL_CHANNELS {
            return;
        }
        let pending = match self.inner.store.deliverable_outbox(now_ms()).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the outbox");
                return;
            }
        };
        for (channel, messages) in by_channel(pending) {
            if in_flight.tasks.len() >= PARALLEL_CHANNELS {
                break;
            }
            if in_flight.is_busy(&channel) || skip.contains(&channel) {
                continue;
            }
            let this = self.clone();
            let task = in_flight
                .tasks
                .spawn(async move { this.deliver_channel(messages).await });
            in_flight.channels.insert(task.id(), channel);
        }
    }

    /// Delivers one channel's messages in order; `true` when all went out.
    async fn deliver_channel(&self, messages: Vec<OutboxMessage>) -> bool {
        for message in messages {
            if let Delivery::Later = self.deliver_one(message).await {
                return false;
            }
        }
        true
    }

    #[tracing::instrument(skip_all, fields(channel = %message.channel_key, outbox_id = message.id))]
    async fn deliver_one(&self, message: OutboxMessage) -> Delivery {
        let store = &self.inner.store;
        let lease = lease_ms();
        let claim = match store.claim_outbox(message.id, now_ms(), lease).await {
            Ok(Some(claim)) => claim,
            Ok(None) => return Delivery::Later,
            Err(err) => {
                tracing::error!(error = %err, "cannot claim an outbox message");
                return Delivery::Later;
            }
        };
        let Ok(channel) = message.channel_key.parse::<ChannelKey>() else {
            tracing::warn!("giving up on an outbox message with a malformed channel");
            let _ = store.mark_send_failed(&claim, 0).await;
            self.delivered();
            return Delivery::Done;
        };
        let adapter = match self.adapter(channel.platform) {
            Ok(adapter) => adapter,
            Err(err) => {
                tracing::warn!(error = %err, "cannot deliver; will retry");
                return self.failed(&claim).await;
            }
        };
        let parts = adapter.parts(&message.body);
        let already = usize::try_from(message.parts_sent).unwrap_or(0);
        for (index, part) in parts.iter().enumerate().skip(already) {
            let key = format!("{}.{index}", message.delivery_key);
            let posted =
                tokio::time::timeout(PART_TIMEOUT, adapter.post_part(&channel, part, Some(&key)))
                    .await;
            let posted = match posted {
                Ok(Ok(posted)) => posted,
                Ok(Err(err)) => {
                    tracing::warn!(part = index, error = %err, "delivery failed; will retry");
                    return self.failed(&claim).await;
                }
                Err(_) => {
                    tracing::warn!(
                        part = index,
                        timeout_sec = PART_TIMEOUT.as_secs(),
                        "delivery timed out; will retry"
                    );
                    return self.failed(&claim).await;
                }
            };
            let first_id = (index == 0).then_some(posted.message_id.as_str());
            let sent = i32::try_from(index + 1).unwrap_or(i32::MAX);
            match store
                .record_parts_sent(&claim, sent, first_id, now_ms(), lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("lost the claim on an outbox message; leaving it to its holder");
                    return Delivery::Later;
                }
                Err(err) => {
                    // The part is out but not recorded: once the lease runs out it is posted
                    // again (Discord shows it once, by nonce). Losing it is the worse outcome.
                    tracing::error!(part = index, error = %err, "cannot record a delivered part");
                    return Delivery::Later;
                }
            }
        }
        match store.mark_sent(&claim).await {
            Ok(true) => tracing::debug!(parts = parts.len(), "delivered"),
            Ok(false) => tracing::warn!("lost the claim on an outbox message after posting it"),
            Err(err) => tracing::error!(error = %err, "cannot record a delivery"),
        }
        self.delivered();
        Delivery::Done
    }

    async fn failed(&self, claim: &loop_store::OutboxClaim) -> Delivery {
        if let Err(err) = self
            .inner
            .store
            .mark_send_failed(claim, MAX_SEND_ATTEMPTS)
            .await
        {
            tracing::error!(error = %err, "cannot record a failed delivery");
        }
        self.delivered();
        Delivery::Later
    }

    /// Wakes whoever waits for a message to leave the outbox ([`Orchestrator::wait_delivered`]).
    fn delivered(&self) {
        self.inner.delivered.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until outbox message `id` is no longer pending (posted or given up on), at most
    /// `limit`; `false` if it still is.
    pub(super) async fn wait_delivered(&self, id: i64, limit: Duration) -> bool {
        let mut changes = self.inner.delivered.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.inner.store.outbox_message(id).await {
                Ok(message) if message.status != OutboxStatus::Pending => return true,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(outbox_id = id, error = %err, "cannot read an outbox message");
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

fn lease_ms() -> i64 {
    i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX)
}

/// Messages grouped by channel: channels in the order of their oldest message, each
/// channel's messages oldest first.
fn by_channel(messages: Vec<OutboxMessage>) -> Vec<(String, Vec<OutboxMessage>)> {
    let mut groups: Vec<(String, Vec<OutboxMessage>)> = Vec::new();
    for message in messages {
        match groups
            .iter_mut()
            .find(|(key, _)| *key == message.channel_key)
        {
            Some((_, group)) => group.push(message),
            None => groups.push((message.channel_key.clone(), vec![message])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_store::OutboxKind;

    fn message(id: i64, channel: &str) -> OutboxMessage {
        OutboxMessage {
            id,
            channel_key: channel.to_owned(),
            run_id: None,
            kind: OutboxKind::Notice,
            body: String::new(),
            status: OutboxStatus::Pending,
            attempts: 0,
            parts_sent: 0,
            delivery_key: String::new(),
            platform_message_id: None,
        }
    }

    #[test]
    fn groups_keep_channel_and_message_order() {
        let groups = by_channel(vec![
            message(1, "slack:B"),
            message(2, "slack:A"),
            message(3, "slack:B"),
            message(4, "discord:C"),
            message(5, "slack:A"),
        ]);
        let shape: Vec<(String, Vec<i64>)> = groups
            .into_iter()
            .map(|(channel, messages)| (channel, messages.iter().map(|m| m.id).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("slack:B".to_owned(), vec![1, 3]),
                ("slack:A".to_owned(), vec![2, 5]),
                ("discord:C".to_owned(), vec![4]),
            ]
        );
    }
}
