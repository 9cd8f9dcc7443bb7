//! `mxc-relay fetch`: a one-shot query that prints records (authorizations, disputes, batches
//! or ACH deposits) as JSON lines, handy for checking credentials and data against the real API.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Args;

use mxc_relay::config::{Config, LogFormat, MxcConfig};
use mxc_relay::mxc::{Batch, Client, MxcError, ReportQuery, Resource};

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
    let until = args.until.unwrap_or_else(Utc::now);
    let mut query = ReportQuery::new(args.xmids.clone(), args.since, until).of(args.resource);
    query.page_size = args.page_size;

    let started = Instant::now();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut records, mut rejected, mut pages) = (0u64, 0u64, 0u64);
    let mut print = |batch: Batch| -> anyhow::Result<()> {
        pages += 1;
        for r in &batch.rejected {
            eprintln!(
                "warning: record {} (page {pages}, position {}) skipped: {}",
                r.id.as_deref().unwrap_or("without id"),
                r.index,
                r.reason
            );
        }
        rejected += batch.rejected.len() as u64;
        for record in &batch.records {
            writeln!(stdout, "{}", record.json())?;
        }
        records += batch.records.len() as u64;
        if pages % 10 == 0 {
            match batch.total_records {
                Some(total) => eprintln!("… {records} of {total} records"),
                None => eprintln!("… {records} records"),
            }
        }
        Ok(())
    };
    if args.export {
        let mut pager = client.report_export(query);
        while let Some(batch) = pager.next_page().await.map_err(fetch_error)? {
            print(batch)?;
        }
    } else {
        let mut pager = client
            .report_pages(query)
            .with_max_result_window(mxc.max_result_window);
        while let Some(batch) = pager.next_page().await.map_err(fetch_error)? {
            print(batch)?;
        }
    }
    stdout.flush()?;
    eprintln!(
        "fetched {records} record(s) in {pages} page(s) for {} XMID(s) in {:.1}s{}",
        args.xmids.len(),
        started.elapsed().as_secs_f64(),
        if rejected > 0 {
            format!("; {rejected} unreadable record(s) skipped")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch_error(e: MxcError) -> anyhow::Error {
    anyhow::Error::new(e).context("fetch failed")
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
