//! `mxc-relay demo`: the whole job on embedded defaults — a simulator in-process, 20 merchants
//! polled, each new authorization, dispute, settlement batch and ACH deposit printed as it
//! arrives and published to Kafka (a topic per resource), each decline, chargeback, rejected
//! batch and returned deposit sent as a signed webhook to a verifying receiver, and a running
//! summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::future::BoxFuture;

use mxc::{Clock, RESOURCES};
use mxc_relay::config::{Config, LogFormat, RouteConfig, SinkConfig, StdoutFormat, WebhookConfig};
use mxc_relay::event::Event;
use mxc_relay::pipeline::Pipeline;
use mxc_relay::receiver::{Delivery, Receiver, ReceiverConfig};
use mxc_relay::signature::WebhookSecret;
use mxc_relay::sink::{Outcome, Sink, StdoutSink};
use mxc_relay::store::Store;
use mxc_relay::telemetry::{self, Metrics};
use mxc_sim::{RunningSim, SettlementConfig, SimConfig};

use kafka::DemoKafka;

mod kafka;

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
    fn new() -> CountingConsole {
        CountingConsole {
            inner: StdoutSink::new(StdoutFormat::Compact),
            events: AtomicU64::new(0),
            by_type: Mutex::new(BTreeMap::new()),
        }
    }

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

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_logging("warn", LogFormat::Pretty);
    anyhow::ensure!(
        (1..=10_000).contains(&args.merchants),
        "--merchants must be 1 to 10000, got {}",
        args.merchants
    );
    let simulator = start_simulator(&args).await?;
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("mxc-relay-demo-{}", std::process::id())),
            true,
        ),
    };
    let mut config = polling_config(&simulator, args.merchants, &data_dir);
    add_console(&mut config);
    let topics = RESOURCES
        .iter()
        .map(|r| DEMO_TOPIC.replace("{resource}", r.name))
        .collect();
    let kafka = DemoKafka::start(args.kafka.as_deref(), topics).await?;
    add_kafka(&mut config, &kafka.brokers);
    let receiver = add_alerts(&mut config).await?;
    let problems = config.validate();
    anyhow::ensure!(problems.is_empty(), "demo configuration: {problems:?}");

    let console = Arc::new(CountingConsole::new());
    let metrics = Metrics::new();
    let sinks: BTreeMap<String, Arc<dyn Sink>> =
        BTreeMap::from([("console".to_string(), console.clone() as Arc<dyn Sink>)]);
    announce(&simulator, &config, &kafka, &receiver, args.duration);
    let mut pipeline = Pipeline::start_with_sinks(&config, metrics.clone(), sinks).await?;
    let summary = Summary {
        started: Instant::now(),
        console,
        receiver,
        kafka: &kafka,
        metrics,
        store: pipeline.store.clone(),
    };
    run_until_stopped(args.duration, &summary).await;
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
    kafka.counter.settle(Duration::from_secs(3));
    summary.print(true);
    drop(summary);
    drop(kafka);
    simulator.shutdown().await?;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The simulator, in this process: `args.merchants` merchants, `args.rate` authorizations a
/// second, and time compressed so that a short demo shows each kind of record.
async fn start_simulator(args: &DemoArgs) -> anyhow::Result<RunningSim> {
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
    Ok(simulator)
}

/// The configuration for the simulator's first `merchants`, every resource, the store in
/// `data_dir`; no sink yet.
fn polling_config(simulator: &RunningSim, merchants: usize, data_dir: &Path) -> Config {
    let xmids = simulator.xmids().into_iter().take(merchants).collect();
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
    config.pollers.start = mxc::instant(mxc::SystemClock.now() - chrono::Duration::minutes(2));
    config.store.path = data_dir.to_path_buf();
    config
}

/// A route of every record of `resource` to `sink` (the alerts only, with `alerts`), card
/// numbers redacted.
fn route(name: String, sink: &str, resource: &str, alerts: bool) -> RouteConfig {
    RouteConfig {
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
    }
}

/// Every record of every resource to the console.
fn add_console(config: &mut Config) {
    config.sinks.insert(
        "console".into(),
        SinkConfig::Stdout {
            format: StdoutFormat::Compact,
        },
    );
    for resource in RESOURCES {
        let name = resource.name.to_string();
        config
            .routes
            .push(route(name, "console", resource.name, false));
    }
}

/// Every record of every resource to Kafka at `brokers`, a topic per resource.
fn add_kafka(config: &mut Config, brokers: &str) {
    config.sinks.insert(
        "kafka".into(),
        SinkConfig::Kafka {
            brokers: brokers.to_string(),
            topic: DEMO_TOPIC.into(),
            key: mxc_relay::config::KafkaKey::Xmid,
            compression: "lz4".into(),
            properties: Default::default(),
            cloudevents: false,
        },
    );
    for resource in RESOURCES {
        let name = format!("{}-to-kafka", resource.name);
        config
            .routes
            .push(route(name, "kafka", resource.name, false));
    }
}

/// The alerts (declines, chargebacks …) as signed webhooks to a verifying receiver in this
/// process, which prints each; the receiver.
async fn add_alerts(config: &mut Config) -> anyhow::Result<Receiver> {
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
        let name = format!("{}-alerts", resource.name);
        let mut alerts = route(name, "alerts", resource.name, true);
        alerts.redact.drop.push("uar".into());
        config.routes.push(alerts);
    }
    Ok(receiver)
}

/// The opening line: what runs where, and for how long.
fn announce(
    simulator: &RunningSim,
    config: &Config,
    kafka: &DemoKafka,
    receiver: &Receiver,
    duration: Option<Duration>,
) {
    eprintln!(
        "mxc-relay demo: MXC simulator at {}, watching {} merchants (authorizations, disputes, batches, ACH deposits), Kafka topics {} on {}, alerts (declines, chargebacks, rejected batches, returned deposits) signed to {}, store in {}{} (times in UTC)",
        simulator.base_url(),
        config.pollers.xmids.len(),
        kafka.topics.join(", "),
        kafka.describe(),
        receiver.url(),
        config.store.path.display(),
        match duration {
            Some(d) => format!(", for {}", humantime::format_duration(d)),
            None => ", until Ctrl-C".to_string(),
        }
    );
}

/// What the summary lines count, from each sink's side.
struct Summary<'k> {
    started: Instant,
    console: Arc<CountingConsole>,
    receiver: Receiver,
    kafka: &'k DemoKafka,
    metrics: Metrics,
    store: Store,
}

impl Summary<'_> {
    /// A running line (dimmed on a terminal), or the final one.
    fn print(&self, final_line: bool) {
        let console = &self.console;
        let events = console.count("authorization.created");
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "{} {events} authorizations ({:.1}/s), {} declines, {} disputes, {} batches, {} deposits, {} alerts verified, {} on Kafka, {} duplicates dropped, poll lag ≤ {:.1}s, outbox {}",
            if final_line { "total:" } else { "──" },
            events as f64 / secs,
            console.count("declines"),
            console.count("dispute.created"),
            console.count("batch.created"),
            console.count("ach.deposit"),
            self.receiver.count(),
            self.kafka.counter.received(),
            self.metrics.records("duplicate"),
            self.metrics.poll_lag_max.get(),
            ["console", "kafka", "alerts"].iter().map(|s| self.store.outbox_len(s).unwrap_or(0)).sum::<usize>(),
        );
        if std::io::stderr().is_terminal() && !final_line {
            eprintln!("\x1b[2m{line}\x1b[0m");
        } else {
            eprintln!("{line}");
        }
    }
}

/// A summary line every 5 s until Ctrl-C, or until `duration` has passed.
async fn run_until_stopped(duration: Option<Duration>, summary: &Summary<'_>) {
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => summary.print(false),
            _ = super::shutdown_signal() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
    }
}
