//! `mxc-relay fetch`: a one-shot query that prints records (authorizations, disputes, batches
//! or ACH deposits) as JSON lines, handy for checking credentials and data against the real API,
//! and with `--export` for pulling large windows fast.

mod ordered;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use mxc::{instant, Client, Clock, MxcError, RawPage, ReportQuery, Resource};
use mxc_relay::config::{Config, LogFormat, MxcConfig};

use ordered::Ordered;

/// Scrolls one `fetch --export` keeps open at most. MXC documents no limit; each open scroll
/// holds a search context on its side (Elasticsearch's default allows 500 per node, for all
/// its users), so a handful is the polite most.
const MAX_PARALLEL: u16 = 16;
/// How often a throttled page (HTTP 429: not processed, so safe to send again) is retried.
const THROTTLE_RETRIES: u32 = 5;
/// How often progress is printed on a long export.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct FetchArgs {
    /// Configuration file for the [mxc] settings; without it, the MXC_* environment variables
    /// and --base-url are used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// API base URL [default: https://api.mxconnect.com].
    #[arg(long, env = "MXC_BASE_URL")]
    base_url: Option<String>,
    /// XMID to query; repeat it or separate with commas for several in one call.
    #[arg(long = "xmid", required = true, value_delimiter = ',')]
    xmids: Vec<String>,
    /// Window start: an ISO-8601 instant, a date, or a duration ago (`1h`).
    #[arg(long, value_parser = super::instant)]
    since: DateTime<Utc>,
    /// Window end, same forms [default: now].
    #[arg(long, value_parser = super::instant)]
    until: Option<DateTime<Utc>>,
    /// Use the export (scroll) form, for large windows.
    #[arg(long)]
    export: bool,
    /// With --export: read the window as this many consecutive time slices at once, each its
    /// own scroll, and print them in time order (1 reads it as one scroll) [default: 4].
    #[arg(long, requires = "export", value_parser = clap::value_parser!(u16).range(1..=MAX_PARALLEL as i64))]
    parallel: Option<u16>,
    /// With --export: memory, in MiB, for records of later slices read before their turn to
    /// be printed; past it they wait in a temporary file (in TMPDIR).
    #[arg(long, requires = "export", default_value_t = 256)]
    buffer_mib: usize,
    /// What to fetch: authorizations, disputes, batches or ach.
    #[arg(long, default_value = "authorizations", value_parser = super::resource)]
    resource: &'static Resource,
    /// Records per page, 1 to 100.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
}

pub async fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let mxc = match &args.config {
        Some(path) => {
            let config = Config::load(path).map_err(anyhow::Error::new)?;
            mxc_relay::telemetry::init_logging(&config.log.level, config.log.format);
            config.mxc
        }
        None => {
            mxc_relay::telemetry::init_logging("warn", LogFormat::Pretty);
            from_env()?
        }
    };
    let mut client_config = mxc.client_config();
    if let Some(url) = &args.base_url {
        client_config.base_url = url.clone();
    }
    let client = Client::new(client_config)?;
    let until = args.until.unwrap_or_else(|| mxc::SystemClock.now());
    let mut query = ReportQuery::new(args.xmids.clone(), args.since, until).of(args.resource);
    query.page_size = args.page_size;

    let started = Instant::now();
    let done = if args.export {
        let slices = query.split(args.parallel.unwrap_or(4).into());
        export(&client, slices, args.buffer_mib.saturating_mul(1 << 20)).await?
    } else {
        pages(&client, query, mxc.max_result_window).await?
    };
    eprintln!(
        "fetched {} record(s) in {} page(s) for {} XMID(s) in {:.1}s{}{}",
        done.records,
        done.pages,
        args.xmids.len(),
        started.elapsed().as_secs_f64(),
        match done.slices {
            1 => String::new(),
            n => format!(", {n} slices of the window read at once"),
        },
        skipped(done.rejected),
    );
    Ok(ExitCode::SUCCESS)
}

/// What a fetch printed and skipped.
struct Summary {
    records: u64,
    pages: u64,
    rejected: u64,
    slices: usize,
}

/// The paged form (`from`/`size`): each page's records, parsed, printed as MXC sent them.
async fn pages(
    client: &Client,
    query: ReportQuery,
    max_result_window: u32,
) -> anyhow::Result<Summary> {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut done = Summary {
        records: 0,
        pages: 0,
        rejected: 0,
        slices: 1,
    };
    let mut pager = client
        .report_pages(query)
        .with_max_result_window(max_result_window);
    while let Some(batch) = pager.next_page().await.map_err(fetch_error)? {
        done.pages += 1;
        for r in &batch.rejected {
            eprintln!(
                "warning: record {} (page {}, position {}) skipped: {}",
                r.id.as_deref().unwrap_or("without id"),
                done.pages,
                r.index,
                r.reason
            );
        }
        done.rejected += batch.rejected.len() as u64;
        for record in &batch.records {
            writeln!(stdout, "{}", record.json())?;
        }
        done.records += batch.records.len() as u64;
        if done.pages.is_multiple_of(10) {
            match batch.total_records {
                Some(total) => eprintln!("… {} of {total} records", done.records),
                None => eprintln!("… {} records", done.records),
            }
        }
    }
    stdout.flush()?;
    Ok(done)
}

fn skipped(rejected: u64) -> String {
    if rejected > 0 {
        format!("; {rejected} unreadable record(s) skipped")
    } else {
        String::new()
    }
}

fn fetch_error(e: MxcError) -> anyhow::Error {
    anyhow::Error::new(e).context("fetch failed")
}

/// What the slices of an export have read, for progress and the summary.
struct Counts {
    slices: usize,
    records: AtomicU64,
    pages: AtomicU64,
    rejected: AtomicU64,
    /// Each slice's `totalRecords`, once its first page said (`u64::MAX` until then).
    totals: Vec<AtomicU64>,
}

impl Counts {
    fn progress(&self, started: Instant) -> String {
        let records = self.records.load(Ordering::Relaxed);
        let rate = records as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let totals: Option<u64> = self
            .totals
            .iter()
            .map(|t| Some(t.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX))
            .sum();
        match totals {
            Some(total) => format!("… {records} of {total} records ({rate:.0}/s)"),
            None => format!("… {records} records ({rate:.0}/s)"),
        }
    }
}

/// What a slice's reader hands the writer, in the slice's order.
enum Event {
    Page(usize, RawPage),
    Done(usize),
}

/// Reads the slices at once, each with its own scroll, and prints their records as they come
/// (each record's exact JSON text, not parsed) in slice order, on a thread of its own.
async fn export(
    client: &Client,
    slices: Vec<ReportQuery>,
    buffer: usize,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let n = slices.len();
    let counts = Arc::new(Counts {
        slices: n,
        records: AtomicU64::new(0),
        pages: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        totals: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
    });
    // A few pages in flight per slice: the readers wait only when the output does.
    let (tx, mut rx) = mpsc::channel::<Event>(2 * n);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let stdout = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
        let mut out = Ordered::new(stdout, n, buffer, std::env::temp_dir());
        while let Some(event) = rx.blocking_recv() {
            match event {
                Event::Page(slice, page) => out.page(slice, page),
                Event::Done(slice) => out.done(slice),
            }
            .context("cannot write the records")?;
        }
        let complete = out.complete();
        out.finish().context("cannot write the records")?;
        anyhow::ensure!(complete, "the export stopped before its end");
        Ok(())
    });
    let mut readers = JoinSet::new();
    for (slice, query) in slices.into_iter().enumerate() {
        readers.spawn(read_slice(
            client.clone(),
            slice,
            query,
            tx.clone(),
            counts.clone(),
        ));
    }
    drop(tx);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut failed = None;
    loop {
        tokio::select! {
            joined = readers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    failed = Some(e);
                    break;
                }
                Some(Err(e)) => {
                    failed = Some(anyhow::anyhow!("a slice's reader stopped: {e}"));
                    break;
                }
            },
            _ = progress.tick() => eprintln!("{}", counts.progress(started)),
        }
    }
    if let Some(error) = failed {
        // The others stop too; the writer then sees the end of its input and stops.
        readers.shutdown().await;
        let _ = writer.await;
        return Err(error);
    }
    writer.await.context("the output thread stopped")??;
    Ok(Summary {
        records: counts.records.load(Ordering::Relaxed),
        pages: counts.pages.load(Ordering::Relaxed),
        rejected: counts.rejected.load(Ordering::Relaxed),
        slices: n,
    })
}

/// One slice: its scroll page by page, to the writer. Stops quietly when the writer is gone
/// (its own error says why).
async fn read_slice(
    client: Client,
    slice: usize,
    query: ReportQuery,
    tx: mpsc::Sender<Event>,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let what = describe(slice, counts.slices, &query);
    let mut pager = client.report_export(query);
    let mut pages = 0u64;
    loop {
        let page = match next_page(&mut pager, &what).await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("fetch failed: {what}"))),
        };
        pages += 1;
        for r in &page.rejected {
            eprintln!(
                "warning: record {} ({what}, page {pages}, position {}) skipped: {}",
                r.id.as_deref().unwrap_or("without id"),
                r.index,
                r.reason
            );
        }
        if let Some(total) = page.total_records {
            counts.totals[slice].store(total, Ordering::Relaxed);
        }
        counts.pages.fetch_add(1, Ordering::Relaxed);
        counts
            .records
            .fetch_add(page.records.len() as u64, Ordering::Relaxed);
        counts
            .rejected
            .fetch_add(page.rejected.len() as u64, Ordering::Relaxed);
        if tx.send(Event::Page(slice, page)).await.is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Event::Done(slice)).await;
    Ok(())
}

/// The next page; a throttled one is asked again after the delay MXC gives (or 1, 2, 4 … s).
async fn next_page(pager: &mut mxc::ExportPager, what: &str) -> Result<Option<RawPage>, MxcError> {
    let mut attempt = 0;
    loop {
        match pager.next_raw_page().await {
            Err(MxcError::Throttled { retry_after, .. }) if attempt < THROTTLE_RETRIES => {
                let wait = retry_after
                    .unwrap_or(Duration::from_secs(1 << attempt))
                    .min(Duration::from_secs(60));
                eprintln!(
                    "{what}: throttled by MXC (HTTP 429), trying again in {}",
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `slice 2 of 4 (2026-01-01T01:00:00.000Z to 2026-01-01T01:59:59.999Z) of XMIDs A, B`, for
/// errors and warnings.
fn describe(slice: usize, slices: usize, query: &ReportQuery) -> String {
    const SHOWN: usize = 5;
    let mut xmids = query.xmids[..query.xmids.len().min(SHOWN)].join(", ");
    if query.xmids.len() > SHOWN {
        xmids.push_str(&format!(" and {} more", query.xmids.len() - SHOWN));
    }
    let window = format!("{} to {}", instant(query.from), instant(query.to));
    if slices == 1 {
        format!("{window} of XMIDs {xmids}")
    } else {
        format!(
            "slice {} of {slices} ({window}) of XMIDs {xmids}",
            slice + 1
        )
    }
}

/// The [mxc] settings from the environment alone.
fn from_env() -> anyhow::Result<MxcConfig> {
    let mut mxc = MxcConfig::default();
    mxc.apply_env(&|var| std::env::var(var).ok());
    if mxc.api_key.is_empty() {
        anyhow::bail!("no API key: set MXC_API_KEY, or pass --config FILE");
    }
    Ok(mxc)
}
