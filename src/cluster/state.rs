//! The state that moves with a shard, through the state topic (compacted, keyed per merchant
//! and resource): each merchant's cursor and the record ids of its look-back window, published
//! only once every event admitted up to it is delivered — so the next owner resumes where
//! delivery really stood, and nothing admitted but undelivered by an instance that dies is
//! skipped. Every instance tails the topic and adopts the others' states into its own store.
//! Each instance also publishes its status there (`cluster status` reads it).
//!
//! This module publishes; `tail` reads the topic for good, `topic` reads it once (its ends,
//! and the statuses for `cluster status`), `message` says what it carries and where.

mod message;
mod tail;
mod topic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub use message::{InstanceStatus, Layout, MerchantState, ShardLag, StateMessage};
pub(super) use topic::partitions;
pub use topic::read_status;

use super::{kafka_config, ClusterError};
use crate::config::ClusterConfig;
use crate::poll::{Handoff, PolledState};
use crate::store::Store;

/// Most ids carried for one merchant (its newest): a window that holds more repeats the rest.
pub const MAX_IDS: usize = 10_000;
/// Past this many outbox entries, which merchants wait is not worked out: nothing is published.
const MAX_WAITING_SCAN: usize = 50_000;
/// States kept per merchant while their events are delivered.
const MAX_PENDING: usize = 8;
/// A merchant whose polls admit nothing has its state published this often, not after every
/// poll: at 100,000 merchants polled every 10 s, 10,000 messages a second for every instance
/// to read and adopt would say nothing new. A next owner re-reads at most this much more.
const IDLE_STATE_EVERY: Duration = Duration::from_secs(600);

/// A merchant's state, publishable once the outbox holds nothing of its below `watermark`.
struct Pending {
    /// Every outbox entry of this poll is below it.
    watermark: u64,
    state: MerchantState,
}

/// Publishes this instance's delivered states and adopts the others'.
#[derive(Clone)]
pub struct Handover {
    inner: Arc<Inner>,
    /// Stops the reader thread when the last handle goes (a failed start or reload included).
    _tailing: Arc<StopTailing>,
}

struct StopTailing(Arc<Inner>);

impl Drop for StopTailing {
    fn drop(&mut self) {
        self.0.stop_tailing.store(true, Ordering::Relaxed);
    }
}

struct Inner {
    instance: String,
    /// This process's id: its own states, read back, are skipped (a namesake's are not).
    run: String,
    topic: String,
    store: Store,
    producer: FutureProducer,
    pending: Mutex<HashMap<String, VecDeque<Pending>>>,
    /// Per merchant: a digest of the ids of the last state queued, and when it was queued.
    queued: Mutex<HashMap<String, (u64, Instant)>>,
    /// Next offset the tailer will read, per partition.
    tailed: Mutex<HashMap<i32, i64>>,
    stop_tailing: AtomicBool,
    config: ClusterConfig,
    layout: Layout,
    /// The other instances' latest statuses, by name, as the tailer reads them.
    statuses: Mutex<HashMap<String, InstanceStatus>>,
    /// Counts the statuses read, so the sharding task wakes at each.
    statuses_read: tokio::sync::watch::Sender<u64>,
}

impl Handover {
    /// Connects, and starts tailing the state topic from its beginning on a thread of its own.
    /// `shards`: the control topic's partitions.
    pub fn start(
        config: &ClusterConfig,
        store: Store,
        shards: u32,
    ) -> Result<Handover, ClusterError> {
        let tailer: BaseConsumer = kafka_config(config)
            .set(
                "group.id",
                format!("mxc-relay-tail-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| ClusterError::Kafka(format!("state reader: {e}")))?;
        let partitions = partitions(&tailer, &config.state_topic)?;
        let layout = Layout::of(partitions, shards);
        if let Layout::Mixed { partitions } = layout {
            tracing::warn!(topic = %config.state_topic, partitions, shards,
                "the state topic does not have one partition per shard plus one: every shard assigned waits for the whole topic to be read (a topic made by this version has {})", shards + 1);
        }
        let producer: FutureProducer = kafka_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .create()
            .map_err(|e| ClusterError::Kafka(format!("state producer: {e}")))?;
        let inner = Arc::new(Inner {
            instance: config.instance_name(),
            run: uuid::Uuid::new_v4().simple().to_string(),
            topic: config.state_topic.clone(),
            store,
            producer,
            pending: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
            tailed: Mutex::new(HashMap::new()),
            stop_tailing: AtomicBool::new(false),
            config: config.clone(),
            layout,
            statuses: Mutex::new(HashMap::new()),
            statuses_read: tokio::sync::watch::Sender::new(0),
        });
        let handover = Handover {
            _tailing: Arc::new(StopTailing(inner.clone())),
            inner,
        };
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&config.state_topic, p, Offset::Beginning)
                .map_err(|e| ClusterError::client(config, e))?;
        }
        tailer
            .assign(&list)
            .map_err(|e| ClusterError::Kafka(format!("state reader: {e}")))?;
        let inner = handover.inner.clone();
        std::thread::Builder::new()
            .name("state-tail".into())
            .spawn(move || tail::tail(tailer, inner))
            .map_err(|e| ClusterError::Kafka(format!("cannot start the state reader: {e}")))?;
        Ok(handover)
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// A poll completed: these states become publishable once its events are delivered.
    pub fn polled(&self, states: Vec<MerchantState>) {
        let watermark = match self.inner.store.watermark() {
            Ok(w) => w,
            Err(error) => {
                // Not published this time: the next poll's state will be.
                tracing::warn!(%error, "cannot number this poll's state; it is not handed over");
                return;
            }
        };
        let (Ok(mut pending), Ok(mut queued)) =
            (self.inner.pending.lock(), self.inner.queued.lock())
        else {
            return;
        };
        let now = Instant::now();
        for mut state in states {
            if state.seen.len() > MAX_IDS {
                state.seen.drain(..state.seen.len() - MAX_IDS);
            }
            // Nothing admitted since the last state queued (the same ids in its window): the
            // last one still says where delivery stands, give or take a re-read.
            let digest = digest(&state.seen);
            match queued.get(&state.key) {
                Some((last, at)) if *last == digest && now - *at < IDLE_STATE_EVERY => continue,
                _ => {
                    queued.insert(state.key.clone(), (digest, now));
                }
            }
            state.run = self.inner.run.clone();
            let queue = pending.entry(state.key.clone()).or_default();
            // Full (delivery lags): the newest replaces the last, and the oldest stay, so the
            // oldest can still clear and be published while the lag lasts.
            if queue.len() == MAX_PENDING {
                queue.pop_back();
            }
            queue.push_back(Pending { watermark, state });
        }
    }

    /// Publishes, for each merchant, its newest state whose events are all delivered.
    pub async fn publish_delivered(&self) -> Result<usize, ClusterError> {
        // Only polls that ended before the scan began are judged by it: one admitted while it
        // ran could have entries it did not see.
        let store = self.inner.store.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let cutoff = store.watermark()?;
            Ok::<_, crate::store::StoreError>((cutoff, store.waiting_by_xmid(MAX_WAITING_SCAN)?))
        })
        .await
        .map_err(|e| ClusterError::Store(format!("outbox scan: {e}")))?
        .map_err(|e| ClusterError::Store(format!("outbox scan: {e}")))?;
        let (cutoff, Some(waiting)) = scanned else {
            return Ok(0);
        };
        let ready: Vec<MerchantState> = {
            let Ok(mut pending) = self.inner.pending.lock() else {
                return Ok(0);
            };
            let mut ready = Vec::new();
            for queue in pending.values_mut() {
                let clear = |p: &Pending| {
                    p.watermark < cutoff
                        && waiting
                            .get(&p.state.xmid)
                            .is_none_or(|oldest| *oldest > p.watermark)
                };
                if let Some(at) = queue.iter().rposition(clear) {
                    let newest = queue.drain(..=at).next_back();
                    ready.extend(newest.map(|p| p.state));
                }
            }
            pending.retain(|_, q| !q.is_empty());
            ready
        };
        let n = ready.len();
        self.send(ready.into_iter().map(StateMessage::Merchant).collect())
            .await?;
        Ok(n)
    }

    /// Hands over `xmids` (their pollers already stopped): waits up to `within` for their
    /// events to be delivered, publishes their last delivered states, and forgets the rest.
    pub async fn finish(&self, xmids: &HashSet<String>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Err(error) = self.publish_delivered().await {
                tracing::warn!(%error, "cannot publish merchant states");
            }
            let left = self
                .inner
                .pending
                .lock()
                .map(|p| {
                    p.values()
                        .flatten()
                        .filter(|x| xmids.contains(&x.state.xmid))
                        .count()
                })
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(states = left, "handing over before every event was delivered: the next owner repeats those records (same ids)");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.retain(|_, q| q.front().is_none_or(|p| !xmids.contains(&p.state.xmid)));
        }
        // Should they come back, their first state is published whatever it holds.
        if let Ok(mut queued) = self.inner.queued.lock() {
            // A cursor key is `XMID` or `RESOURCE/XMID`.
            queued.retain(|key, _| !key.rsplit('/').next().is_some_and(|x| xmids.contains(x)));
        }
        self.flush().await;
    }

    /// Publishes this instance's status (`shards` and `releasing` as in [`InstanceStatus`]).
    pub async fn publish_status(
        &self,
        shards: Vec<u32>,
        releasing: Vec<u32>,
        merchants: usize,
        (leaving, stopped): (bool, bool),
        lag: Vec<ShardLag>,
    ) {
        let status = StateMessage::Instance(InstanceStatus {
            instance: self.inner.instance.clone(),
            shards,
            merchants,
            // The store's clock: the pipeline's, which `live_others` judges statuses by.
            at: self.inner.store.clock().now(),
            stopped,
            lag,
            releasing,
            leaving,
        });
        if let Err(error) = self.send(vec![status]).await {
            tracing::warn!(%error, "cannot publish this instance's status");
        }
    }

    async fn send(&self, messages: Vec<StateMessage>) -> Result<(), ClusterError> {
        let encoded: Vec<(String, Vec<u8>, Option<i32>)> = messages
            .iter()
            .map(|m| {
                (
                    m.key(),
                    serde_json::to_vec(m).unwrap_or_default(),
                    self.inner.layout.partition_of(m),
                )
            })
            .collect();
        let mut sends = Vec::with_capacity(encoded.len());
        for (key, payload, partition) in &encoded {
            let mut record = FutureRecord::to(&self.inner.topic)
                .key(key)
                .payload(payload);
            if let Some(partition) = partition {
                record = record.partition(*partition);
            }
            sends.push(self.inner.producer.send(record, Duration::from_secs(30)));
        }
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| {
                ClusterError::Kafka(format!("state topic {}: {e}", self.inner.topic))
            })?;
        }
        Ok(())
    }

    async fn flush(&self) {
        let producer = self.inner.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    }

    /// Stops the tailer thread.
    pub fn stop(&self) {
        self.inner.stop_tailing.store(true, Ordering::Relaxed);
    }
}

/// A digest of a window's ids (order included: a poll lists them as MXC returns them).
fn digest(ids: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ids.hash(&mut hasher);
    hasher.finish()
}

/// How the cluster plugs into polling: each poll's states, stamped with this instance.
impl Handoff for Handover {
    fn max_ids(&self) -> usize {
        MAX_IDS
    }

    fn polled(&self, states: Vec<PolledState>) {
        let instance = self.instance();
        Handover::polled(
            self,
            states
                .into_iter()
                .map(|s| MerchantState {
                    instance: instance.to_string(),
                    run: String::new(),
                    xmid: s.xmid,
                    key: s.key,
                    position: s.position,
                    floor: s.floor,
                    seen: s.seen,
                })
                .collect(),
        );
    }
}
