//! How an outbox entry is laid out: a header line of JSON, then the body.

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::route::Event;

/// An outbox value: the event's fields as one JSON line, then its body as it is. Keeping the
/// body out of the JSON spares escaping and unescaping kilobytes of JSON per event.
pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Head<'a> {
        id: &'a str,
        event_type: &'a str,
        route: &'a str,
        resource: &'a str,
        sink: &'a str,
        xmid: &'a str,
        record_id: &'a str,
        occurred_at: Option<&'a str>,
        fetched_at_ms: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<&'a str>,
    }
    let head = Head {
        id: &event.id,
        event_type: &event.event_type,
        route: &event.route,
        resource: &event.resource,
        sink: &event.sink,
        xmid: &event.xmid,
        record_id: &event.record_id,
        occurred_at: event.occurred_at.as_deref(),
        fetched_at_ms: event.fetched_at_ms,
        traceparent: event.traceparent.as_deref(),
    };
    // One allocation at the final size.
    let mut out = Vec::with_capacity(event.body.len() + 256);
    // Serializing borrowed strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &head);
    out.push(b'\n');
    out.extend_from_slice(event.body.as_bytes());
    out
}

/// Why an outbox entry cannot be decoded (the store reports it as a corrupt entry).
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
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

/// An outbox entry's event (the body shares `bytes`, not copied).
pub(super) fn decode_event(bytes: Bytes) -> Result<Event, DecodeError> {
    #[derive(Deserialize)]
    struct Head {
        id: String,
        event_type: String,
        route: String,
        // Entries written before there were other resources are authorizations.
        #[serde(default = "authorizations")]
        resource: String,
        sink: String,
        xmid: String,
        record_id: String,
        occurred_at: Option<String>,
        // Entries written before it existed have none.
        #[serde(default)]
        fetched_at_ms: i64,
        #[serde(default)]
        traceparent: Option<String>,
    }
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(DecodeError::NoHeader)?;
    let head: Head = serde_json::from_slice(&bytes[..split]).map_err(DecodeError::Header)?;
    let body = ByteString::try_from(bytes.slice(split + 1..)).map_err(DecodeError::Body)?;
    let event = Event {
        id: head.id,
        event_type: head.event_type,
        route: head.route,
        resource: head.resource,
        sink: head.sink,
        xmid: head.xmid,
        record_id: head.record_id,
        occurred_at: head.occurred_at,
        fetched_at_ms: head.fetched_at_ms,
        traceparent: head.traceparent,
        body,
    };
    Ok(event)
}

fn authorizations() -> String {
    mxc::AUTHORIZATIONS.name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_outbox_encoding() {
        let event = Event {
            id: "evt_1".into(),
            event_type: "authorization.created".into(),
            route: "all".into(),
            resource: "authorizations".into(),
            sink: "archive".into(),
            xmid: "X\n1".into(),
            record_id: "r\"1".into(),
            occurred_at: None,
            fetched_at_ms: 1_764_000_000_000,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            body: "{\"data\":\"line\\nbreak\"}\n".into(),
        };
        assert_eq!(
            decode_event(encode_event(&event).into()).unwrap(),
            event.clone()
        );
        assert_eq!(
            decode_event(Bytes::from_static(b"no newline"))
                .unwrap_err()
                .to_string(),
            "no header line"
        );
    }
}
