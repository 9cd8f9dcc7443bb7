//! The delivery worker of the Kafka, file and stdout sinks (webhooks run their own dispatcher):
//! drains one sink's outbox in order, forever, with backoff on failure.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::{round, Outcome, Sink};
use crate::store::Store;
use crate::telemetry::events::{
    DeliveryFailed, DeliveryPath, EventDeadLettered, EventsDelivered, InternalEvent,
};
use crate::telemetry::Metrics;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub batch_size: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Delivers `sink_name`'s outbox until `stop` is cancelled; a delivery in progress is finished
/// first (the caller bounds how long it may take).
pub async fn run_worker(
    sink_name: String,
    sink: Arc<dyn Sink>,
    store: Store,
    config: WorkerConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let notify = match store.notifier(&sink_name) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(sink = %sink_name, error = %e, "delivery worker cannot start");
            return;
        }
    };
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(config.retry_min)
            .with_max_delay(config.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    let mut attempts: u32 = 0;
    while !stop.is_cancelled() {
        let entries = match store.peek(&sink_name, config.batch_size) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(sink = %sink_name, error = %e, "cannot read the outbox");
                pause(&stop, delays.next().unwrap_or(config.retry_max)).await;
                continue;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        let events: Vec<_> = entries.iter().map(|e| e.event.clone()).collect();
        let outcomes = sink.deliver(&events).await;
        attempts += 1;
        let mut delivered = Vec::new();
        let mut retry = None;
        // XMIDs with an earlier entry still waiting in this batch: their later entries stay in
        // the outbox even if delivered, so that a retry cannot be overtaken (a repeat, with the
        // same id, is allowed; a reordering is not).
        let mut waiting: HashSet<String> = HashSet::new();
        for (entry, outcome) in entries.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered if waiting.contains(&entry.event.xmid) => {}
                Outcome::Delivered => delivered.push(entry),
                Outcome::Dead(reason) => {
                    EventDeadLettered {
                        path: DeliveryPath::Worker,
                        sink: &sink_name,
                        event_id: &entry.event.id,
                        record_id: &entry.event.record_id,
                        xmid: &entry.event.xmid,
                        reason: &reason,
                    }
                    .emit(&metrics);
                    if let Err(e) = store.bury(&sink_name, entry, &reason, attempts, None).await {
                        tracing::error!(sink = %sink_name, error = %e, "cannot dead-letter an event; it stays in the outbox");
                        retry.get_or_insert((e.to_string(), entry.event.clone()));
                        waiting.insert(entry.event.xmid.clone());
                    }
                }
                Outcome::Retry(reason) => {
                    DeliveryFailed { sink: &sink_name }.emit(&metrics);
                    retry.get_or_insert((reason, entry.event.clone()));
                    waiting.insert(entry.event.xmid.clone());
                }
            }
        }
        if !delivered.is_empty() {
            EventsDelivered {
                sink: &sink_name,
                fetched_at_ms: delivered.iter().map(|e| e.event.fetched_at_ms),
            }
            .emit(&metrics);
            let seqs: Vec<u64> = delivered.iter().map(|e| e.seq).collect();
            if let Err(e) = store.remove(&sink_name, &seqs).await {
                // They were delivered: at worst they are delivered again, with the same ids.
                tracing::error!(sink = %sink_name, error = %e, "cannot remove delivered events");
            }
        }
        match retry {
            None => {
                delays = backoff();
                attempts = 0;
            }
            Some((reason, event)) => {
                let delay = delays.next().unwrap_or(config.retry_max);
                tracing::warn!(sink = %sink_name, event_id = %event.id, record_id = %event.record_id, xmid = %event.xmid,
                    %reason, retry_in = %humantime::format_duration(round(delay)), "delivery failed");
                pause(&stop, delay).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::event::Event;
    use crate::store::Admission;

    const SINK: &str = "out";

    fn event(xmid: &str, record_id: &str) -> Event {
        crate::store::testing::event(SINK, xmid, record_id)
    }

    type Answer = Box<dyn Fn(&Event, usize) -> Outcome + Send + Sync>;

    /// A sink that answers each event as `answer` says, given how many times that event was
    /// handed to it before, and remembers each batch it was handed (as record ids).
    struct Scripted {
        answer: Answer,
        batches: Mutex<Vec<Vec<String>>>,
    }

    impl Scripted {
        fn handed(&self) -> Vec<String> {
            self.batches.lock().unwrap().concat()
        }
    }

    impl Sink for Scripted {
        fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
            let mut batches = self.batches.lock().unwrap();
            let before = batches.concat();
            let outcomes = events
                .iter()
                .map(|e| {
                    let times = before.iter().filter(|r| **r == e.record_id).count();
                    (self.answer)(e, times)
                })
                .collect();
            batches.push(events.iter().map(|e| e.record_id.clone()).collect());
            Box::pin(async move { outcomes })
        }
    }

    struct Running {
        store: Store,
        sink: Arc<Scripted>,
        metrics: Metrics,
        stop: CancellationToken,
        task: Option<tokio::task::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    /// A store in a temporary directory holding `events` in `SINK`'s outbox (one record each,
    /// in this order), and a worker draining it into a [`Scripted`] sink.
    async fn start(events: &[Event], batch_size: usize, answer: Answer) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::open(dir.path(), &[SINK]);
        let admissions: Vec<Admission> = events
            .iter()
            .map(|e| Admission {
                record_id: e.record_id.clone(),
                xmid: e.xmid.clone(),
                events: vec![e.clone()],
            })
            .collect();
        assert_eq!(
            store.admit(&admissions, &[]).await.unwrap().new,
            events.len()
        );
        let sink = Arc::new(Scripted {
            answer,
            batches: Mutex::default(),
        });
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_worker(
            SINK.to_string(),
            sink.clone(),
            store.clone(),
            WorkerConfig {
                batch_size,
                retry_min: Duration::from_millis(1),
                retry_max: Duration::from_millis(5),
            },
            metrics.clone(),
            stop.clone(),
        ));
        Running {
            store,
            sink,
            metrics,
            stop,
            task: Some(task),
            _dir: dir,
        }
    }

    impl Running {
        /// Waits (10 s at most) until the outbox is empty, then stops the worker.
        async fn drained(mut self) -> Running {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.store.outbox_len(SINK).unwrap() > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the outbox still holds {} entries; handed so far: {:?}",
                    self.store.outbox_len(SINK).unwrap(),
                    self.sink.handed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.stop.cancel();
            let task = self.task.take().expect("running");
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the worker stops once cancelled")
                .unwrap();
            self
        }

        fn count(&self, outcome: &str) -> u64 {
            self.metrics
                .events
                .with_label_values(&[SINK, outcome])
                .get()
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn it_hands_the_outbox_over_in_order_in_batches_and_removes_what_was_delivered() {
        let events: Vec<Event> = (0..5)
            .map(|i| event(if i % 2 == 0 { "X1" } else { "X2" }, &format!("r{i}")))
            .collect();
        let run = start(&events, 2, Box::new(|_, _| Outcome::Delivered))
            .await
            .drained()
            .await;
        assert_eq!(
            *run.sink.batches.lock().unwrap(),
            vec![ids(&["r0", "r1"]), ids(&["r2", "r3"]), ids(&["r4"])]
        );
        assert_eq!(run.count("failed"), 0);
        assert!(run.store.dead_letters(SINK).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_retried_entry_holds_back_the_later_entries_of_its_xmid_but_no_other() {
        // X1's r0 fails once: X1's r1 and r3 are delivered in the same batch but stay in the
        // outbox, so they go again after r0; X2's r2 is removed and not sent again.
        let events = [
            event("X1", "r0"),
            event("X1", "r1"),
            event("X2", "r2"),
            event("X1", "r3"),
        ];
        let run = start(
            &events,
            10,
            Box::new(|e, times| match (e.record_id.as_str(), times) {
                ("r0", 0) => Outcome::Retry("receiver busy".into()),
                _ => Outcome::Delivered,
            }),
        )
        .await
        .drained()
        .await;
        assert_eq!(
            run.sink.handed(),
            ids(&["r0", "r1", "r2", "r3", "r0", "r1", "r3"])
        );
        assert_eq!(run.count("failed"), 1);
    }

    #[tokio::test]
    async fn a_dead_entry_is_dead_lettered_with_its_reason_and_holds_nothing_back() {
        let events = [event("X1", "r0"), event("X1", "r1")];
        let run = start(
            &events,
            10,
            Box::new(|e, _| match e.record_id.as_str() {
                "r0" => Outcome::Dead("kafka refused the message: too large".into()),
                _ => Outcome::Delivered,
            }),
        )
        .await
        .drained()
        .await;
        assert_eq!(run.sink.handed(), ids(&["r0", "r1"]));
        let dead = run.store.dead_letters(SINK).unwrap();
        assert_eq!(dead.len(), 1);
        let (_, letter) = &dead[0];
        assert_eq!(letter.event.record_id, "r0");
        assert_eq!(letter.reason, "kafka refused the message: too large");
        assert_eq!(letter.attempts, 1);
        assert_eq!(run.count("dead_lettered"), 1);
    }

    #[tokio::test]
    async fn an_entry_retried_until_it_succeeds_is_delivered_once_it_does() {
        // Three failures, then success: the backoff goes on and the entry is not lost.
        let events = [event("X1", "r0")];
        let run = start(
            &events,
            10,
            Box::new(|_, times| {
                if times < 3 {
                    Outcome::Retry("unreachable".into())
                } else {
                    Outcome::Delivered
                }
            }),
        )
        .await
        .drained()
        .await;
        assert_eq!(run.sink.handed(), ids(&["r0", "r0", "r0", "r0"]));
        assert_eq!(run.count("failed"), 3);
        assert!(run.store.dead_letters(SINK).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idle_worker_stops_at_once_when_cancelled() {
        let mut run = start(&[], 10, Box::new(|_, _| Outcome::Delivered)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        run.stop.cancel();
        tokio::time::timeout(Duration::from_millis(500), run.task.take().unwrap())
            .await
            .expect("the worker stops without waiting for its 1 s rescan")
            .unwrap();
        assert!(run.sink.handed().is_empty());
    }
}
