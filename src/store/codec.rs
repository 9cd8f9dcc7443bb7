//! How an outbox entry is laid out in sled: a header line of JSON, then the body (or, when
//! the body is in a segment, only where it is).

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::bodies::BodyRef;
use crate::route::Event;

/// An outbox value: the event's fields as one JSON line, then its body as it is. Keeping the
/// body out of the JSON spares escaping and unescaping kilobytes of JSON per event.
pub(super) fn encode_event(event: &Event, body_at: Option<BodyRef>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        body_at: Option<[u64; 3]>,
        id: &'a str,
        event_type: &'a str,
        route: &'a str,
        resource: &'a str,
        sink: &'a str,
        xmid: &'a str,
        record_id: &'a str,
        occurred_at: Option<&'a str>,
        fetched_at_ms: i64,
    }
    let head = Head {
        body_at: body_at.map(|r| [r.segment, r.offset, u64::from(r.len)]),
        id: &event.id,
        event_type: &event.event_type,
        route: &event.route,
        resource: &event.resource,
        sink: &event.sink,
        xmid: &event.xmid,
        record_id: &event.record_id,
        occurred_at: event.occurred_at.as_deref(),
        fetched_at_ms: event.fetched_at_ms,
    };
    let inline = if body_at.is_some() {
        0
    } else {
        event.body.len()
    };
    // One allocation at the final size.
    let mut out = Vec::with_capacity(inline + 256);
    // Serializing borrowed strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &head);
    out.push(b'\n');
    if body_at.is_none() {
        out.extend_from_slice(event.body.as_bytes());
    }
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
    /// The header says the body is in a segment, longer than a segment entry can be.
    #[error("a body length over 4 GiB")]
    BodyTooLong,
    /// An inline body that is not UTF-8.
    #[error("{0}")]
    Body(std::str::Utf8Error),
}

/// An outbox entry's event, with its body still to be read when it is in a segment.
pub(super) fn decode_event(value: sled::IVec) -> Result<(Event, Option<BodyRef>), DecodeError> {
    let bytes = Bytes::from_owner(value);
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        body_at: Option<[u64; 3]>,
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
    }
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(DecodeError::NoHeader)?;
    let head: Head = serde_json::from_slice(&bytes[..split]).map_err(DecodeError::Header)?;
    let (body, at) = match head.body_at {
        // Read by the caller, from its segment.
        Some([segment, offset, len]) => {
            let len = u32::try_from(len).map_err(|_| DecodeError::BodyTooLong)?;
            (
                ByteString::new(),
                Some(BodyRef {
                    segment,
                    offset,
                    len,
                }),
            )
        }
        // Entries written before bodies had segments (and replayed dead letters): the body
        // stays in sled's buffer (shared, not copied).
        None => (
            ByteString::try_from(bytes.slice(split + 1..)).map_err(DecodeError::Body)?,
            None,
        ),
    };
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
        body,
    };
    Ok((event, at))
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
            body: "{\"data\":\"line\\nbreak\"}\n".into(),
        };
        assert_eq!(
            decode_event(encode_event(&event, None).into()).unwrap(),
            (event.clone(), None)
        );
        let at = BodyRef {
            segment: 3,
            offset: 4096,
            len: 22,
        };
        let (head, body_at) = decode_event(encode_event(&event, Some(at)).into()).unwrap();
        assert_eq!(body_at, Some(at));
        assert_eq!(head.id, event.id);
        assert!(
            head.body.is_empty(),
            "the body is in its segment, not in the entry"
        );
        assert_eq!(
            decode_event(sled::IVec::from(&b"no newline"[..]))
                .unwrap_err()
                .to_string(),
            "no header line"
        );
    }
}
