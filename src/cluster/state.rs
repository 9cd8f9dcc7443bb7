//! The state that moves with a shard, through the state topic (compacted, keyed per merchant
//! and resource): each merchant's cursor and the record ids of its look-back window, published
//! only once every event admitted up to it is delivered — so the next owner resumes where
//! delivery really stood, and nothing admitted but undelivered by an instance that dies is
//! skipped. Every instance tails the topic and adopts the others' states into its own store.
//! Each instance also publishes its status there (`cluster status` reads it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{kafka_config, ClusterError};
use crate::config::ClusterConfig;
use crate::poll::{Handoff, PolledState};
use crate::store::{Cursor, Store};

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

/// A message of the state topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateMessage {
    /// One merchant's delivered state for one resource.
    Merchant(MerchantState),
    /// An instance: its shards and merchants, now.
    Instance(InstanceStatus),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MerchantState {
    /// The instance that polled it.
    pub instance: String,
    /// That instance's process (a fresh id per start): what a reader skips as its own.
    #[serde(default)]
    pub run: String,
    pub xmid: String,
    /// The store's cursor key (`XMID`, `disputes/XMID` …).
    pub key: String,
    pub position: DateTime<Utc>,
    pub floor: DateTime<Utc>,
    /// Seen-set keys of the records admitted in its last window.
    pub seen: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub shards: Vec<u32>,
    pub merchants: usize,
    pub at: DateTime<Utc>,
    /// Set by an instance leaving the group.
    pub stopped: bool,
    /// Its shards' merchants and their poll lag (absent from older versions).
    #[serde(default)]
    pub lag: Vec<ShardLag>,
    /// Shards the group took from it that it still polls until their next owner claims them
    /// (lists them in `shards`); the next owner starts once they leave this list.
    #[serde(default)]
    pub releasing: Vec<u32>,
    /// Stopping: it claims nothing (several stopping at once do not wait for each other).
    #[serde(default)]
    pub leaving: bool,
}

/// One shard's merchants as its owner sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardLag {
    pub shard: u32,
    pub merchants: usize,
    /// The longest since a merchant's cursor moved, in seconds.
    pub max_lag_s: f64,
}

impl StateMessage {
    /// The message's key: `merchant/CURSOR_KEY` or `instance/NAME`.
    pub fn key(&self) -> String {
        match self {
            StateMessage::Merchant(m) => format!("merchant/{}", m.key),
            StateMessage::Instance(i) => format!("instance/{}", i.instance),
        }
    }
}

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

/// Where the state topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One partition per shard (1 + shard) after the instances' (0): a shard's merchants are
    /// read alone, and `cluster status` reads partition 0 only.
    ByShard { shards: u32 },
    /// A topic made otherwise (by an older version): partitions by key, every one read.
    Mixed { partitions: i32 },
}

impl Layout {
    /// The layout of a state topic of `partitions` beside a control topic of `shards`.
    pub fn of(partitions: i32, shards: u32) -> Layout {
        if i64::from(partitions) == i64::from(shards) + 1 {
            Layout::ByShard { shards }
        } else {
            Layout::Mixed { partitions }
        }
    }

    /// The partition a message goes to (`None`: by its key).
    fn partition_of(&self, message: &StateMessage) -> Option<i32> {
        let Layout::ByShard { shards } = *self else {
            return None;
        };
        Some(match message {
            StateMessage::Instance(_) => 0,
            StateMessage::Merchant(m) => 1 + super::shard_of(&m.xmid, shards) as i32,
        })
    }

    /// The partitions holding these shards' merchants.
    fn partitions_of(&self, shards: &[u32]) -> Vec<i32> {
        match *self {
            Layout::ByShard { .. } => shards.iter().map(|s| 1 + *s as i32).collect(),
            Layout::Mixed { partitions } => (0..partitions).collect(),
        }
    }
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
            .spawn(move || tail(tailer, inner))
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

    /// The other instances that said something within `fresh` and have not stopped: their
    /// latest statuses.
    pub fn live_others(&self, fresh: Duration) -> Vec<InstanceStatus> {
        let fresh = chrono::Duration::from_std(fresh).unwrap_or_default();
        let now = Utc::now();
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
            at: Utc::now(),
            stopped,
            lag,
            releasing,
            leaving,
        });
        if let Err(error) = self.send(vec![status]).await {
            tracing::warn!(%error, "cannot publish this instance's status");
        }
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
        let partitions = match self.inner.layout {
            Layout::ByShard { .. } => vec![0],
            Layout::Mixed { partitions } => (0..partitions).collect(),
        };
        self.read_to_end(partitions, within).await
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

/// Reads the state topic for good, adopting every other instance's merchant states: in
/// batches (the newest state per merchant of what arrived), each in one store transaction, and
/// only then counted as read, so `catch_up` waits for them to be adopted.
fn tail(consumer: BaseConsumer, inner: Arc<Inner>) {
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
                match message
                    .payload()
                    .map(serde_json::from_slice::<StateMessage>)
                {
                    Some(Ok(StateMessage::Merchant(state))) if state.run != inner.run => {
                        batch.insert(state.key.clone(), state);
                    }
                    // At once, not with the batch: a hand-over waits on these.
                    Some(Ok(StateMessage::Instance(status)))
                        if status.instance != inner.instance =>
                    {
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
        let states: Vec<MerchantState> = batch.drain().map(|(_, s)| s).collect();
        if !states.is_empty() {
            if let Err(error) = inner.store.adopt_all(
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
            ) {
                // Not counted as read: `catch_up` keeps waiting, and the batch is tried again.
                tracing::error!(%error, merchants = states.len(), "cannot adopt merchant states; retrying");
                batch.extend(states.into_iter().map(|s| (s.key.clone(), s)));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        if let Ok(mut tailed) = inner.tailed.lock() {
            tailed.extend(read.drain());
        }
        started = Instant::now();
    }
}

pub(super) fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<i32, ClusterError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| ClusterError::Kafka(format!("topic {topic}: {e}")))?;
    let n = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if n == 0 {
        return Err(ClusterError::Kafka(format!(
            "topic {topic} has no partitions"
        )));
    }
    Ok(n)
}

/// The end (the offset the next message will get) of each of `partitions`.
fn high_watermarks(
    config: &ClusterConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, ClusterError> {
    let consumer: BaseConsumer = kafka_config(config)
        .create()
        .map_err(|e| ClusterError::client(config, e))?;
    partitions
        .iter()
        .map(|&p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| (p, high))
                .map_err(|e| ClusterError::Kafka(format!("topic {topic}[{p}]: {e}")))
        })
        .collect()
}

/// The latest message per key of the state topic's instance statuses (its partition 0), or of
/// the whole topic if it is not laid out by shard: for `cluster status`. Blocking.
pub fn read_status(config: &ClusterConfig) -> Result<Vec<StateMessage>, ClusterError> {
    let topic = &config.state_topic;
    let layout = {
        let consumer: BaseConsumer = kafka_config(config)
            .create()
            .map_err(|e| ClusterError::client(config, e))?;
        let shards = partitions(&consumer, &config.control_topic)?;
        Layout::of(partitions(&consumer, topic)?, shards as u32)
    };
    let read = match layout {
        Layout::ByShard { .. } => vec![0],
        Layout::Mixed { partitions } => (0..partitions).collect(),
    };
    let ends = high_watermarks(config, topic, &read)?;
    let consumer: BaseConsumer = kafka_config(config)
        .set(
            "group.id",
            format!("mxc-relay-status-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ClusterError::client(config, e))?;
    let mut list = TopicPartitionList::new();
    for (p, _) in &ends {
        list.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| ClusterError::client(config, e))?;
    }
    consumer
        .assign(&list)
        .map_err(|e| ClusterError::client(config, e))?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut latest: HashMap<String, StateMessage> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        if Instant::now() > deadline {
            return Err(ClusterError::Kafka(format!(
                "reading {topic} took over 60 s"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if let Some(Ok(state)) = m.payload().map(serde_json::from_slice::<StateMessage>) {
                    latest.insert(state.key(), state);
                }
            }
            Some(Err(e)) => return Err(ClusterError::Kafka(format!("{topic}: {e}"))),
            None => {}
        }
    }
    Ok(latest.into_values().collect())
}
