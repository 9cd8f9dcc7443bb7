//! The demo's Kafka: a mock cluster on its own thread (it is not `Send`), and a consumer
//! that counts what arrives.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;

pub struct MockKafka {
    pub brokers: String,
    stop: mpsc::Sender<()>,
}

impl MockKafka {
    pub fn start(topics: &[String]) -> anyhow::Result<MockKafka> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        std::thread::spawn(move || {
            let cluster = match MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            for topic in &topics {
                if let Err(e) = cluster.create_topic(topic, PARTITIONS, 1) {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            // Keep the cluster alive until the demo ends.
            let _ = stop_rx.recv();
        });
        let brokers = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the mock Kafka cluster thread died"))?
            .map_err(|e| anyhow::anyhow!("cannot start the mock Kafka cluster: {e}"))?;
        Ok(MockKafka { brokers, stop })
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// Creates the topics on a real broker unless they exist.
pub async fn ensure_topics(brokers: &str, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .map_err(|e| anyhow::anyhow!("Kafka at {brokers}: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("Kafka at {brokers}: cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Reads the topics and counts messages, on its own thread.
pub struct Counter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counter {
    pub fn start(
        brokers: &str,
        topics: &[String],
        from_beginning: bool,
    ) -> anyhow::Result<Counter> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "mxc-relay-demo")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for topic in topics {
            // However many partitions the topic has (a compose-made one has more than ours).
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len() as i32)
                .filter(|n| *n > 0)
                .unwrap_or(PARTITIONS);
            for p in 0..partitions {
                let offset = if from_beginning {
                    Offset::Beginning
                } else {
                    Offset::End
                };
                list.add_partition_offset(topic, p, offset)?;
            }
        }
        consumer.assign(&list)?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Counter {
            count,
            stop,
            thread: Some(thread),
        })
    }

    pub fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until the count stops moving (or `within` passes).
    pub fn settle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = self.received();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.received();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Counter {
    /// Stops and closes the consumer before the cluster goes away.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The demo's Kafka: a real broker if given, else a mock cluster in this process; and the
/// counter of what reaches its topics.
pub struct DemoKafka {
    pub brokers: String,
    pub topics: Vec<String>,
    /// Before `mock`: fields drop in order, and the consumer closes before the cluster goes.
    pub counter: Counter,
    pub mock: Option<MockKafka>,
}

impl DemoKafka {
    /// On the broker at `address` (its topics created unless they exist), or a mock cluster.
    pub async fn start(address: Option<&str>, topics: Vec<String>) -> anyhow::Result<DemoKafka> {
        let (mock, brokers) = match address {
            Some(address) => {
                ensure_topics(address, &topics).await?;
                (None, address.to_string())
            }
            None => {
                let mock = MockKafka::start(&topics)?;
                let brokers = mock.brokers.clone();
                (Some(mock), brokers)
            }
        };
        // On a real broker the topics may hold earlier runs: count only what arrives from now on.
        let counter = Counter::start(&brokers, &topics, mock.is_some())?;
        Ok(DemoKafka {
            brokers,
            topics,
            counter,
            mock,
        })
    }

    /// Where it is, for the opening line.
    pub fn describe(&self) -> String {
        match &self.mock {
            Some(_) => format!("an in-process mock cluster ({})", self.brokers),
            None => self.brokers.clone(),
        }
    }
}
