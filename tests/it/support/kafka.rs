//! The Kafka-protocol broker the tests share (Tansu, started by `.ci/test`), and reading a
//! topic back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The shared broker's address; `None` (skip) outside CI when none is running.
pub fn broker() -> Option<String> {
    match std::env::var("MXC_RELAY_TEST_KAFKA") {
        Ok(b) if !b.is_empty() => Some(b),
        _ if std::env::var("CI").is_ok() => {
            panic!("MXC_RELAY_TEST_KAFKA is not set: run the tests with .ci/test, which starts a Tansu broker")
        }
        _ => {
            eprintln!("skipped: no Kafka broker (run the tests with .ci/test to start one)");
            None
        }
    }
}

pub fn topic_name(test: &str) -> String {
    format!("mxc-test-{test}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// One message read back.
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    /// The value's bytes, as sent.
    pub value: Vec<u8>,
}

/// Reads the topic from the beginning (no consumer group: assigned partitions) until `done`
/// says so and then 3 s passed without another message (so extras show), or until `within`
/// passed. Blocking: call it from `spawn_blocking`.
pub fn read_topic(
    broker: &str,
    topic: &str,
    mut done: impl FnMut(&[Received]) -> bool,
    within: Duration,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut last_arrival = Instant::now();
    let mut finished = false;
    while Instant::now() < deadline
        && (!finished || last_arrival.elapsed() < Duration::from_secs(3))
    {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_arrival = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Received {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).to_string(),
                    headers,
                    body: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
                finished = finished || done(&out);
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None => finished = finished || done(&out),
        }
    }
    out
}
