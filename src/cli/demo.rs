//! `mxc-relay demo`: the whole job on embedded defaults — a simulator in-process, 20 merchants
//! polled, each new authorization printed as it arrives, and a running summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::future::BoxFuture;

use mxc_relay::config::{Config, LogFormat, RouteConfig, SinkConfig, StdoutFormat};
use mxc_relay::pipeline::Pipeline;
use mxc_relay::route::Event;
use mxc_relay::secret::Secret;
use mxc_relay::sim::{self, SimConfig};
use mxc_relay::sink::{Outcome, Sink, StdoutSink};
use mxc_relay::telemetry::{self, Metrics};

#[derive(Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. 30s); without it, run until Ctrl-C.
    #[arg(long, value_parser = super::sim::duration)]
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
}

/// The console sink, counting what it prints for the summary line.
struct CountingConsole {
    inner: StdoutSink,
    events: AtomicU64,
    declines: AtomicU64,
}

impl Sink for CountingConsole {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = self.inner.deliver(events).await;
            for (event, outcome) in events.iter().zip(&outcomes) {
                if *outcome == Outcome::Delivered {
                    self.events.fetch_add(1, Ordering::Relaxed);
                    if !event
                        .body
                        .contains(r#""authorizationResponseStatus":"Approved""#)
                    {
                        self.declines.fetch_add(1, Ordering::Relaxed);
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
    let simulator = sim::start(SimConfig {
        merchants: args.merchants,
        rate: args.rate,
        backlog: Duration::from_secs(300),
        // Late records stay within the look-back below, so none is missed.
        max_lateness: Duration::from_secs(90),
        seed: rand::random(),
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

    let mut config = Config::default();
    config.mxc.base_url = simulator.base_url();
    config.mxc.api_key = Secret::new(sim::DEFAULT_API_KEY);
    config.mxc.username = sim::DEFAULT_USERNAME.to_string();
    config.mxc.password = Secret::new(sim::DEFAULT_PASSWORD);
    config.pollers.xmids = simulator.xmids().into_iter().take(args.merchants).collect();
    config.pollers.interval = Duration::from_secs(2);
    config.pollers.look_back = Duration::from_secs(120);
    config.pollers.requests_per_second = 50.0;
    config.pollers.burst = 20;
    // Start two minutes back, so the first poll already shows some traffic.
    config.pollers.start =
        mxc_relay::mxc::instant(chrono::Utc::now() - chrono::Duration::minutes(2));
    config.store.path = data_dir.clone();
    config.sinks.insert(
        "console".into(),
        SinkConfig::Stdout {
            format: StdoutFormat::Compact,
        },
    );
    config.routes.push(RouteConfig {
        name: Some("authorizations".into()),
        sink: "console".into(),
        event_type: "authorization.created".into(),
        filter: None,
        redact: mxc_relay::config::RedactConfig {
            drop: vec!["cardNumber.data".into()],
            mask: vec!["cardNumber.hash".into()],
        },
    });
    let problems = config.validate();
    anyhow::ensure!(problems.is_empty(), "demo configuration: {problems:?}");

    let console = Arc::new(CountingConsole {
        inner: StdoutSink::new(StdoutFormat::Compact),
        events: AtomicU64::new(0),
        declines: AtomicU64::new(0),
    });
    let metrics = Metrics::new();
    let sinks: BTreeMap<String, Arc<dyn Sink>> =
        BTreeMap::from([("console".to_string(), console.clone() as Arc<dyn Sink>)]);
    eprintln!(
        "mxc-relay demo: MXC simulator at {}, watching {} merchants, store in {}{} (times in UTC)",
        simulator.base_url(),
        config.pollers.xmids.len(),
        data_dir.display(),
        match args.duration {
            Some(d) => format!(", for {}", humantime::format_duration(d)),
            None => ", until Ctrl-C".to_string(),
        }
    );
    let pipeline = Pipeline::start_with_sinks(&config, metrics.clone(), sinks).await?;

    let started = Instant::now();
    let store = pipeline.store.clone();
    let summary = |final_line: bool| {
        let events = console.events.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "{} {events} authorizations ({:.1}/s), {} declines, {} duplicates dropped, poll lag ≤ {:.1}s, outbox {}",
            if final_line { "total:" } else { "──" },
            events as f64 / secs,
            console.declines.load(Ordering::Relaxed),
            metrics.records("duplicate"),
            metrics.poll_lag_max.get(),
            store.outbox_len("console").unwrap_or(0),
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
    pipeline.shutdown().await?;
    summary(true);
    simulator.shutdown().await?;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(ExitCode::SUCCESS)
}
