//! Reading the state topic for good, on a thread of its own: every other instance's merchant
//! states adopted into the store, their statuses kept; and waiting until it has read what is
//! there now (a shard just assigned starts from what its last owner published).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Message};

use super::topic::high_watermarks;
use super::{Handover, Inner, InstanceStatus, MerchantState, StateMessage};
use crate::store::Cursor;

impl Handover {
    /// The other instances that said something within `fresh` and have not stopped: their
    /// latest statuses.
    pub fn live_others(&self, fresh: Duration) -> Vec<InstanceStatus> {
        let fresh = chrono::Duration::from_std(fresh).unwrap_or_default();
        let now = self.inner.store.clock().now();
        self.inner
            .statuses
            .lock()
            .map(|s| {
                s.values()
                    .filter(|i| !i.stopped && now - i.at < fresh)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Changes with every status of another instance read.
    pub fn statuses_read(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.statuses_read.subscribe()
    }

    /// Waits until the tailer has read (and adopted) everything on the partitions of `shards`
    /// now, so a shard just assigned starts from what its last owner published. False after
    /// `within`.
    pub async fn catch_up(&self, shards: &[u32], within: Duration) -> bool {
        self.read_to_end(self.inner.layout.partitions_of(shards), within)
            .await
    }

    /// Waits until the tailer has read every instance's status published until now. False
    /// after `within`.
    pub async fn catch_up_statuses(&self, within: Duration) -> bool {
        self.read_to_end(self.inner.layout.status_partitions(), within)
            .await
    }

    async fn read_to_end(&self, partitions: Vec<i32>, within: Duration) -> bool {
        let config = self.inner.config.clone();
        let topic = self.inner.topic.clone();
        let ends =
            tokio::task::spawn_blocking(move || high_watermarks(&config, &topic, &partitions))
                .await;
        let ends = match ends {
            Ok(Ok(ends)) => ends,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the state topic's end; starting from the local state");
                return false;
            }
            Err(_) => return false,
        };
        let deadline = Instant::now() + within;
        loop {
            let behind = {
                let tailed = self
                    .inner
                    .tailed
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                ends.iter()
                    .any(|(p, end)| *end > 0 && tailed.get(p).copied().unwrap_or(0) < *end)
            };
            if !behind {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!("the state topic was not read to its end in time; starting from the local state");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads the state topic for good, adopting every other instance's merchant states: in
/// batches (the newest state per merchant of what arrived), each in one store transaction, and
/// only then counted as read, so `catch_up` waits for them to be adopted.
pub(super) fn tail(consumer: BaseConsumer, inner: Arc<Inner>) {
    const BATCH: usize = 5_000;
    let mut batch: HashMap<String, MerchantState> = HashMap::new();
    let mut read: HashMap<i32, i64> = HashMap::new();
    let mut started = Instant::now();
    while !inner.stop_tailing.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(
            if batch.is_empty() && read.is_empty() {
                200
            } else {
                0
            },
        ));
        match polled {
            Some(Ok(message)) => {
                take(&inner, &message, &mut batch);
                read.insert(message.partition(), message.offset() + 1);
                if batch.len() < BATCH && started.elapsed() < Duration::from_millis(500) {
                    continue;
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "reading the state topic");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            None => {}
        }
        // Caught up for now (or the batch is full): adopt, then count as read.
        if !adopt(&inner, &mut batch) {
            // Not counted as read: `catch_up` keeps waiting, and the batch is tried again.
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        if let Ok(mut tailed) = inner.tailed.lock() {
            tailed.extend(read.drain());
        }
        started = Instant::now();
    }
}

/// Takes in one message: another process's merchant state into `batch`, another instance's
/// status at once.
fn take(inner: &Inner, message: &BorrowedMessage<'_>, batch: &mut HashMap<String, MerchantState>) {
    match message
        .payload()
        .map(serde_json::from_slice::<StateMessage>)
    {
        Some(Ok(StateMessage::Merchant(state))) if state.run != inner.run => {
            batch.insert(state.key.clone(), state);
        }
        // At once, not with the batch: a hand-over waits on these.
        Some(Ok(StateMessage::Instance(status))) if status.instance != inner.instance => {
            if let Ok(mut statuses) = inner.statuses.lock() {
                statuses.insert(status.instance.clone(), status);
            }
            inner.statuses_read.send_modify(|n| *n += 1);
        }
        Some(Err(error)) => tracing::warn!(%error, topic = %inner.topic,
            partition = message.partition(), offset = message.offset(),
            "unreadable message on the state topic skipped"),
        _ => {}
    }
}

/// Adopts the batch's states into the store in one transaction; false (the batch kept) if
/// that failed.
fn adopt(inner: &Inner, batch: &mut HashMap<String, MerchantState>) -> bool {
    let states: Vec<MerchantState> = batch.drain().map(|(_, s)| s).collect();
    if states.is_empty() {
        return true;
    }
    let adopted = inner.store.adopt_all(
        &states
            .iter()
            .map(|s| {
                let cursor = Cursor {
                    position: s.position,
                    floor: s.floor,
                };
                (s.key.as_str(), cursor, s.seen.as_slice())
            })
            .collect::<Vec<_>>(),
    );
    match adopted {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(%error, merchants = states.len(), "cannot adopt merchant states; retrying");
            batch.extend(states.into_iter().map(|s| (s.key.clone(), s)));
            false
        }
    }
}
