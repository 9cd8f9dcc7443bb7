//! `mxc-relay schema`: the event contract — each event type's JSON Schema, and the AsyncAPI
//! document of a configuration — printed, or written as the files of `deploy/schemas/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::Value;

use mxc_relay::config::Config;
use mxc_relay::schema::{asyncapi, Catalog, Enums, REFERENCE_CONFIG};

#[derive(Args)]
pub struct SchemaArgs {
    /// Describe what this configuration's routes produce (its secrets are not needed)
    /// [default: every resource's default event types, unredacted; for --asyncapi, the
    /// reference configuration: every resource to Kafka, the alerts as webhooks].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only this event type's JSON Schema [default: every one, as a JSON object keyed by type].
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Print the AsyncAPI 3.0 document instead.
    #[arg(long, conflicts_with = "event_type")]
    asyncapi: bool,
    /// Fields with known values (card brands, statuses) admit only those [default: the known
    /// values and any other string, as MXC may add some].
    #[arg(long)]
    closed_enums: bool,
    /// Write TYPE.json for each event type and asyncapi.json into DIR instead of printing
    /// (`--out deploy/schemas` regenerates the checked-in ones).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["event_type", "asyncapi"])]
    out: Option<PathBuf>,
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let enums = if args.closed_enums {
        Enums::Closed
    } else {
        Enums::Open
    };
    let (config, catalog) = match &args.config {
        Some(path) => {
            let config = Config::load_without_secrets(path).map_err(|e| anyhow!("{e}"))?;
            let catalog = Catalog::for_config(&config, enums)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            (config, catalog)
        }
        None => {
            let config = Config::from_toml_without_secrets(
                REFERENCE_CONFIG,
                "the reference configuration",
                &|_| None,
            )
            .map_err(|e| anyhow!("{e}"))?;
            (config, Catalog::defaults(enums))
        }
    };
    // The AsyncAPI document describes a configuration's own event types.
    let described = match &args.config {
        Some(_) => catalog.clone(),
        None => Catalog::for_config(&config, enums).map_err(|e| anyhow!("{e}"))?,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        for event in &catalog.events {
            write(
                &dir.join(format!("{}.json", event.event_type)),
                &event.document(),
            )?;
        }
        write(&dir.join("asyncapi.json"), &asyncapi(&config, &described))?;
        println!(
            "wrote {} JSON Schemas and asyncapi.json to {}",
            catalog.events.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let document = if args.asyncapi {
        asyncapi(&config, &described)
    } else {
        match &args.event_type {
            Some(t) => catalog
                .get(t)
                .ok_or_else(|| {
                    anyhow!(
                        "--type: no event type {t:?} {} (known: {})",
                        match &args.config {
                            Some(path) => format!("in {}", path.display()),
                            None =>
                                "by default (give --config FILE for a configuration's own)".into(),
                        },
                        catalog.types()
                    )
                })?
                .document(),
            None => catalog.documents(),
        }
    };
    println!("{}", pretty(&document));
    Ok(ExitCode::SUCCESS)
}

fn pretty(document: &Value) -> String {
    // Serializing a JSON tree to a String cannot fail.
    serde_json::to_string_pretty(document).unwrap_or_default()
}

fn write(path: &Path, document: &Value) -> anyhow::Result<()> {
    std::fs::write(path, pretty(document) + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}
