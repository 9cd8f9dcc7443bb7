//! The event: one record made into a message for one route and sink. Its [`Head`] (who, what,
//! where from) is what the outbox header, the sinks' headers and the logs read; its body is the
//! envelope `{id, type, xmid, occurred_at, data}` around the record's JSON, written once at its
//! final size and shared (not copied) from the outbox to every sink.
//!
//! Low in the layers on purpose: `route` makes events, `store` keeps them, `sink` sends them,
//! and none of them needs another to know what an event is.

use std::ops::{Deref, Range};

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

/// What an event is, apart from its body: the outbox header, as serde writes and reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Stable for a given record and route: the same on every redelivery.
    pub id: String,
    pub event_type: String,
    pub route: String,
    /// The resource of its record (`authorizations`, `disputes` …). Entries written before
    /// there were other resources are authorizations.
    #[serde(default = "authorizations")]
    pub resource: String,
    /// The sink whose outbox holds it.
    pub sink: String,
    pub xmid: String,
    pub record_id: String,
    /// The record's time (`transactionDateAndTime`, `disputeDate` …) in UTC, RFC 3339.
    pub occurred_at: Option<String>,
    /// When the record was fetched (unix ms): delivery latency is measured from it. Entries
    /// written before it existed have none.
    #[serde(default)]
    pub fetched_at_ms: i64,
    /// The W3C `traceparent` of the record's span (traces on): its deliveries continue the
    /// trace, here and at the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event: its [`Head`] (its fields read through it: `event.xmid`) and its envelope. As JSON
/// (a dead letter holds one) it is the head's fields and `body`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct Event {
    #[serde(flatten)]
    pub head: Head,
    /// The envelope as JSON text (shared: a clone of the event does not copy it).
    body: ByteString,
    /// Where `data` (the record's JSON as the route shaped it) lies in `body`.
    #[serde(skip)]
    data: Range<usize>,
}

/// An event as JSON, read back.
#[derive(Deserialize)]
struct Stored {
    #[serde(flatten)]
    head: Head,
    body: ByteString,
}

impl From<Stored> for Event {
    fn from(stored: Stored) -> Event {
        Event::with_body(stored.head, stored.body)
    }
}

/// The envelope's fields before `data`, written by serde.
#[derive(Serialize)]
struct EnvelopeHead<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    xmid: &'a str,
    occurred_at: Option<&'a str>,
}

impl EnvelopeHead<'_> {
    fn of(head: &Head) -> EnvelopeHead<'_> {
        EnvelopeHead {
            id: &head.id,
            event_type: &head.event_type,
            xmid: &head.xmid,
            occurred_at: head.occurred_at.as_deref(),
        }
    }

    /// `{"id":…,"type":…,"xmid":…,"occurred_at":…,"data":`, up to where `data` starts.
    fn prefix(&self) -> String {
        // Serializing strings cannot fail.
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.pop(); // the closing brace: `data` comes last
        text.push_str(r#","data":"#);
        text
    }
}

/// Why an outbox entry cannot be read back as an event (the store reports it as corrupt).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No newline ends a header.
    #[error("no header line")]
    NoHeader,
    /// The header line is not the JSON this version writes.
    #[error("{0}")]
    Header(serde_json::Error),
    /// A body that is not UTF-8.
    #[error("{0}")]
    Body(std::str::Utf8Error),
}

impl Event {
    /// The event of `head` whose envelope wraps `data`, the record's JSON text (as the route
    /// shaped it; it is written as it is, not parsed again).
    pub fn new(head: Head, data: &str) -> Event {
        let prefix = EnvelopeHead::of(&head).prefix();
        // Written once, at its final size, into the buffer the sinks will send.
        let mut body = String::with_capacity(prefix.len() + data.len() + 1);
        body.push_str(&prefix);
        body.push_str(data);
        body.push('}');
        let data = prefix.len()..body.len() - 1;
        Event {
            head,
            body: ByteString::from(body),
            data,
        }
    }

    /// The envelope `{id, type, xmid, occurred_at, data}` as JSON text.
    pub fn body(&self) -> &ByteString {
        &self.body
    }

    /// The record's JSON (as the route shaped it): the envelope's `data`.
    pub fn data_json(&self) -> &str {
        self.body.get(self.data.clone()).unwrap_or("null")
    }

    /// The outbox value: the head as one JSON line, then the body as it is. Keeping the body
    /// out of the JSON spares escaping and unescaping kilobytes of JSON per event.
    pub fn to_outbox(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        // Serializing strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &self.head);
        out.push(b'\n');
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    /// An event from its outbox value (the body shares `bytes`, not copied).
    pub fn from_outbox(bytes: Bytes) -> Result<Event, DecodeError> {
        let split = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(DecodeError::NoHeader)?;
        let head: Head = serde_json::from_slice(&bytes[..split]).map_err(DecodeError::Header)?;
        let body = ByteString::try_from(bytes.slice(split + 1..)).map_err(DecodeError::Body)?;
        Ok(Event::with_body(head, body))
    }

    /// The event of `head` with `body`, the envelope [`Event::new`] wrote from the same head:
    /// `data` starts where the head's fields end, and ends before the closing brace.
    fn with_body(head: Head, body: ByteString) -> Event {
        let start = EnvelopeHead::of(&head).prefix().len();
        let data = start.min(body.len())..body.len().saturating_sub(1);
        Event { head, body, data }
    }
}

impl Deref for Event {
    type Target = Head;

    fn deref(&self) -> &Head {
        &self.head
    }
}

fn authorizations() -> String {
    mxc::AUTHORIZATIONS.name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(xmid: &str, record_id: &str, occurred_at: Option<&str>) -> Head {
        Head {
            id: "evt_1".into(),
            event_type: "authorization.created".into(),
            route: "all".into(),
            resource: "authorizations".into(),
            sink: "archive".into(),
            xmid: xmid.into(),
            record_id: record_id.into(),
            occurred_at: occurred_at.map(str::to_string),
            fetched_at_ms: 1_764_000_000_000,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    #[test]
    fn the_envelope_wraps_the_data_as_it_is() {
        let data = r#"{"id":"r\"1","note":"line\nbreak","n":1.50}"#;
        let event = Event::new(head("X\"1", "r\"1", Some("2026-01-02T08:04:05.000Z")), data);
        assert_eq!(event.data_json(), data);
        let body: serde_json::Value = serde_json::from_str(event.body()).unwrap();
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["id", "type", "xmid", "occurred_at", "data"]
        );
        assert_eq!(body["xmid"], "X\"1");
        assert_eq!(body["data"]["note"], "line\nbreak");
        // The record's text, not a re-encoding of it (1.50 stays 1.50).
        assert!(event.body().ends_with(r#""n":1.50}}"#));
    }

    #[test]
    fn an_event_survives_the_outbox_encoding() {
        for occurred_at in [None, Some("2026-01-02T08:04:05.000Z")] {
            let event = Event::new(head("X\n1", "r\"1", occurred_at), r#"{"data":"a\nb"}"#);
            let back = Event::from_outbox(event.to_outbox().into()).unwrap();
            assert_eq!(back, event);
            assert_eq!(back.data_json(), r#"{"data":"a\nb"}"#);
        }
        // And as JSON, as a dead letter keeps it.
        let event = Event::new(head("X1", "r1", None), r#"{"id":"r1"}"#);
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""xmid":"X1""#) && json.contains(r#""body":"#));
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.data_json(), r#"{"id":"r1"}"#);
        assert_eq!(
            Event::from_outbox(Bytes::from_static(b"no newline"))
                .unwrap_err()
                .to_string(),
            "no header line"
        );
    }
}
