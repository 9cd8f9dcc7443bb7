//! `mxc-relay demo`: the whole job on embedded defaults — a simulator in-process, 20 merchants
//! polled, each new authorization, dispute, settlement batch and ACH deposit printed as it
//! arrives and published to Kafka (a topic per resource), each decline, chargeback, rejected
//! batch and returned deposit sent as a signed webhook to a verifying receiver, and a running
//! summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::future::BoxFuture;

use mxc::RESOURCES;
use mxc_relay::config::{Config, LogFormat, RouteConfig, SinkConfig, StdoutFormat, WebhookConfig};
use mxc_relay::event::Event;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::receiver::{Delivery, Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;
use mxc_relay::sink::{Outcome, Sink, StdoutSink};
use mxc_relay::telemetry::{self, Metrics};
use mxc_sim::{SettlementConfig, SimConfig};

#[derive(Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. 30s); without it, run until Ctrl-C.
    #[arg(long, value_parser = mxc_relay::config::parse_duration)]
    duration: Option<Duration>,
    /// Merchants (XMIDs) to watch.
    #[arg(long, default_value_t = 20)]
    merchants: usize,
    /// Authorizations per second the simulator generates over all merchants.
    #[arg(long, default_value_t = 8.0)]
    rate: f64,
    /// Keep the store here instead of a temporary directory removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Publish to this Kafka broker (HOST:PORT) instead of librdkafka's in-process mock cluster.
    #[arg(long)]
    kafka: Option<String>,
}

/// How long the demo waits, at its end, for what it admitted to reach every sink.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// The Kafka sink's topic template: `mxc.authorizations`, `mxc.disputes` …
const DEMO_TOPIC: &str = "mxc.{resource}";

/// The console sink, counting what it prints, by event type, for the summary line.
struct CountingConsole {
    inner: StdoutSink,
    events: AtomicU64,
    by_type: Mutex<BTreeMap<String, u64>>,
}

impl CountingConsole {
    fn count(&self, event_type: &str) -> u64 {
        self.by_type
            .lock()
            .map(|m| m.get(event_type).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Sink for CountingConsole {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = self.inner.deliver(events).await;
            for (event, outcome) in events.iter().zip(&outcomes) {
                if *outcome == Outcome::Delivered {
                    self.events.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut counts) = self.by_type.lock() {
                        *counts.entry(event.event_type.clone()).or_default() += 1;
                    }
                    // Read the field, not the text: MXC's JSON spacing is not ours to assume.
                    if event.resource == "authorizations" {
                        let body: serde_json::Value =
                            serde_json::from_str(event.body()).unwrap_or_default();
                        if body["data"]["authorizationResponseStatus"] != "Approved" {
                            if let Ok(mut counts) = self.by_type.lock() {
                                *counts.entry("declines".into()).or_default() += 1;
                            }
                        }
                    }
                }
            }
            outcomes
        })
    }
}

/// The demo's Kafka: a mock cluster on its own thread (it is not `Send`), and a consumer
/// that counts what arrives.
mod kafka {
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
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_logging("warn", LogFormat::Pretty);
    anyhow::ensure!(
        (1..=10_000).contains(&args.merchants),
        "--merchants must be 1 to 10000, got {}",
        args.merchants
    );
    let simulator = mxc_sim::start(SimConfig {
        merchants: args.merchants,
        rate: args.rate,
        backlog: Duration::from_secs(300),
        // As MXC: some records arrive hours after their transaction, and each is searchable
        // a second (now and then a few) after it arrives. The cursor on `created` reads each
        // once, however late.
        index_delay: Duration::from_secs(1),
        seed: rand::random(),
        // Time compressed further than by default, so a short demo shows each kind.
        settlement: SettlementConfig {
            dispute_rate: 0.03,
            dispute_delay_ms: 60_000,
            batch_every_ms: 60_000,
            deposit_delay_ms: 20_000,
            ..SettlementConfig::default()
        },
        ..SimConfig::default()
    })
    .await?;
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("mxc-relay-demo-{}", std::process::id())),
            true,
        ),
    };

    let xmids = simulator.xmids().into_iter().take(args.merchants).collect();
    let mut config = Config::for_simulator(simulator.base_url(), xmids);
    config.pollers.interval = Duration::from_secs(2);
    // Polls every 2 s: a 1 s guard below the cursor re-reads half a poll, not two and a half.
    config.pollers.overlap = Duration::from_secs(1);
    // Disputes, batches and deposits have no ingestion time: their windows look back.
    config.pollers.look_back = Duration::from_secs(120);
    // Four resources per merchant every 2 s: 40 polls a second.
    config.pollers.requests_per_second = 100.0;
    config.pollers.burst = 40;
    config.pollers.resources = RESOURCES.iter().map(|r| r.name.to_string()).collect();
    // Start two minutes back, so the first poll already shows some traffic.
    config.pollers.start = mxc::instant(chrono::Utc::now() - chrono::Duration::minutes(2));
    config.store.path = data_dir.clone();
    config.sinks.insert(
        "console".into(),
        SinkConfig::Stdout {
            format: StdoutFormat::Compact,
        },
    );
    // Every record of every resource to the console, to Kafka, and the urgent ones as
    // webhooks: one route per resource and destination.
    let route = |name: String, sink: &str, resource: &str, alerts: bool| RouteConfig {
        name: Some(name),
        sink: sink.into(),
        resource: resource.into(),
        alerts,
        event_type: None,
        filter: None,
        redact: mxc_relay::config::RedactConfig {
            drop: vec!["cardNumber.data".into()],
            mask: vec!["cardNumber.hash".into()],
        },
    };
    for resource in RESOURCES {
        config.routes.push(route(
            resource.name.to_string(),
            "console",
            resource.name,
            false,
        ));
    }
    // Kafka: a real broker if given, else librdkafka's mock cluster in this process.
    let topics: Vec<String> = RESOURCES
        .iter()
        .map(|r| DEMO_TOPIC.replace("{resource}", r.name))
        .collect();
    let (kafka, brokers) = match &args.kafka {
        Some(address) => {
            kafka::ensure_topics(address, &topics).await?;
            (None, address.clone())
        }
        None => {
            let mock = kafka::MockKafka::start(&topics)?;
            let brokers = mock.brokers.clone();
            (Some(mock), brokers)
        }
    };
    // On a real broker the topics may hold earlier runs: count only what arrives from now on.
    let kafka_counter = kafka::Counter::start(&brokers, &topics, kafka.is_some())?;
    config.sinks.insert(
        "kafka".into(),
        SinkConfig::Kafka {
            brokers: brokers.clone(),
            topic: DEMO_TOPIC.into(),
            key: mxc_relay::config::KafkaKey::Xmid,
            compression: "lz4".into(),
            properties: Default::default(),
            cloudevents: false,
        },
    );
    for resource in RESOURCES {
        config.routes.push(route(
            format!("{}-to-kafka", resource.name),
            "kafka",
            resource.name,
            false,
        ));
    }
    // Decline alerts: signed webhooks to a verifying receiver in this process.
    let secret = WebhookSecret::generate();
    let receiver = Receiver::start(
        "127.0.0.1:0".parse()?,
        ReceiverConfig {
            secrets: vec![secret.clone()],
            tolerance: Duration::from_secs(300),
            keep: false,
            on_delivery: Some(Box::new(|d: &Delivery| {
                println!("  ↳ webhook {}", super::webhook::describe(d))
            })),
        },
    )
    .await?;
    let mut alerts = WebhookConfig::new(receiver.url(), secret.expose());
    alerts.allow_insecure = true;
    config
        .sinks
        .insert("alerts".into(), SinkConfig::Webhook(Box::new(alerts)));
    for resource in RESOURCES {
        let mut alerts = route(
            format!("{}-alerts", resource.name),
            "alerts",
            resource.name,
            true,
        );
        alerts.redact.drop.push("uar".into());
        config.routes.push(alerts);
    }
    let problems = config.validate();
    anyhow::ensure!(problems.is_empty(), "demo configuration: {problems:?}");

    let console = Arc::new(CountingConsole {
        inner: StdoutSink::new(StdoutFormat::Compact),
        events: AtomicU64::new(0),
        by_type: Mutex::new(BTreeMap::new()),
    });
    let metrics = Metrics::new();
    let sinks: BTreeMap<String, Arc<dyn Sink>> =
        BTreeMap::from([("console".to_string(), console.clone() as Arc<dyn Sink>)]);
    eprintln!(
        "mxc-relay demo: MXC simulator at {}, watching {} merchants (authorizations, disputes, batches, ACH deposits), Kafka topics {} on {}, alerts (declines, chargebacks, rejected batches, returned deposits) signed to {}, store in {}{} (times in UTC)",
        simulator.base_url(),
        config.pollers.xmids.len(),
        topics.join(", "),
        if kafka.is_some() { format!("an in-process mock cluster ({brokers})") } else { brokers.clone() },
        receiver.url(),
        data_dir.display(),
        match args.duration {
            Some(d) => format!(", for {}", humantime::format_duration(d)),
            None => ", until Ctrl-C".to_string(),
        }
    );
    let mut pipeline = Pipeline::start_with_sinks(&config, metrics.clone(), sinks).await?;

    let started = Instant::now();
    let store = pipeline.store.clone();
    let summary = |final_line: bool| {
        let events = console.count("authorization.created");
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "{} {events} authorizations ({:.1}/s), {} declines, {} disputes, {} batches, {} deposits, {} alerts verified, {} on Kafka, {} duplicates dropped, poll lag ≤ {:.1}s, outbox {}",
            if final_line { "total:" } else { "──" },
            events as f64 / secs,
            console.count("declines"),
            console.count("dispute.created"),
            console.count("batch.created"),
            console.count("ach.deposit"),
            receiver.count(),
            kafka_counter.received(),
            metrics.records("duplicate"),
            metrics.poll_lag_max.get(),
            ["console", "kafka", "alerts"].iter().map(|s| store.outbox_len(s).unwrap_or(0)).sum::<usize>(),
        );
        if std::io::stderr().is_terminal() && !final_line {
            eprintln!("\x1b[2m{line}\x1b[0m");
        } else {
            eprintln!("{line}");
        }
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => summary(false),
            _ = super::shutdown_signal() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
    }
    super::exit_on_second_signal();
    // Let what was admitted reach every sink, so the totals add up (on a busy machine that
    // can take a while: say so rather than print totals that do not add up).
    if !pipeline.drain(DRAIN_WITHIN).await {
        eprintln!(
            "mxc-relay demo: the outboxes did not empty within {}; the totals below leave out what is still in them",
            humantime::format_duration(DRAIN_WITHIN)
        );
    }
    pipeline.shutdown().await?;
    kafka_counter.settle(Duration::from_secs(3));
    summary(true);
    drop(kafka_counter);
    drop(kafka);
    simulator.shutdown().await?;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(ExitCode::SUCCESS)
}
