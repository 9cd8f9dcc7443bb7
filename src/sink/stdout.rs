//! The stdout sink: the event envelopes as JSON lines, or one compact human line per event
//! (the demo's view), with declines in red on a terminal.

use std::io::{IsTerminal, Write};

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Outcome, Sink};
use crate::config::StdoutFormat;
use crate::event::Event;

pub struct StdoutSink {
    format: StdoutFormat,
    colour: bool,
}

impl StdoutSink {
    pub fn new(format: StdoutFormat) -> StdoutSink {
        StdoutSink {
            format,
            colour: std::io::stdout().is_terminal(),
        }
    }
}

impl Sink for StdoutSink {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut text = String::new();
            for event in events {
                match self.format {
                    StdoutFormat::Json => text.push_str(event.body()),
                    StdoutFormat::Compact => text.push_str(&compact_line(event, self.colour)),
                }
                text.push('\n');
            }
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => vec![Outcome::Delivered; events.len()],
                Err(e) => vec![Outcome::Retry(format!("stdout: {e}")); events.len()],
            }
        })
    }
}

/// `14:03:07  887654321012  Harbor Grill            $    42.10  Visa              Approved`;
/// disputes, batches and deposits say what they are in the last column. What needs action
/// (a decline, a chargeback, a rejected batch, a returned deposit) is in red on a terminal.
pub fn compact_line(event: &Event, colour: bool) -> String {
    let body: Value = serde_json::from_str(event.body()).unwrap_or(Value::Null);
    let data = &body["data"];
    let text = |key: &str| match &data[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let time = event
        .occurred_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".into());
    let (amount_field, kind, detail, alarm) = match event.resource.as_str() {
        "disputes" => (
            "disputeAmount",
            text("cardType"),
            format!(
                "{} {} {}",
                text("disputeType").to_uppercase(),
                text("reasonCode"),
                text("reasonDescription")
            ),
            text("disputeType") == "Chargeback",
        ),
        "batches" => (
            "netAmount",
            format!("batch {}", text("batchNumber")),
            format!("{} sales, {}", text("salesCount"), text("status")),
            data["rejected"] == Value::Bool(true),
        ),
        "ach" => (
            "amount",
            "ACH deposit".to_string(),
            format!("{} {}", text("status"), text("returnReason")),
            text("status") == "Returned",
        ),
        _ => {
            let status = text("authorizationResponseStatus");
            let approved = status == "Approved";
            let detail = if approved {
                status
            } else {
                format!(
                    "{} {} {}",
                    status.to_uppercase(),
                    text("authorizationResponse"),
                    text("authorizationResponseDescription")
                )
            };
            ("authorizedAmount", text("cardType"), detail, !approved)
        }
    };
    let amount = data[amount_field]
        .as_f64()
        .map(|a| format!("{a:>9.2}"))
        .unwrap_or_else(|| format!("{:>9}", "?"));
    let name: String = text("merchantName").chars().take(22).collect();
    let line = format!(
        "{time}  {:<12}  {name:<22}  ${amount}  {kind:<16}  ",
        event.xmid
    );
    let detail = detail.trim_end();
    if alarm && colour {
        format!("{line}\x1b[1;31m{detail}\x1b[0m")
    } else {
        format!("{line}{detail}")
    }
}
