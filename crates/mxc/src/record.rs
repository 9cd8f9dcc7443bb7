//! The record model: each record keeps its exact JSON (the ~140 documented fields and any
//! unknown ones pass through untouched) plus a typed view of what routing needs.

use std::collections::HashMap;

use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::resource::{Resource, AUTHORIZATIONS};

/// One record as MXC sent it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its exact JSON text: a slice of the page's HTTP body (shared, not copied).
    raw: ByteString,
    view: RecordView,
    /// Known fields that had an unexpected type (and read as absent), e.g.
    /// "field `authorizedAmount`: invalid type: string \"12.00\", expected f64".
    type_problem: Option<String>,
    /// The record's time: its resource's time field (`transactionDateAndTime` until
    /// [`Record::of`] says which resource it belongs to).
    time: Option<DateTime<Utc>>,
}

/// The fields mxc-relay reads. Every one is optional: MXC may omit any of them, and a missing
/// `id` is handled (counted and skipped) by the caller, not here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub id: Option<String>,
    pub account_number: Option<String>,
    pub transaction_date_and_time: Option<DateTime<FixedOffset>>,
    pub created: Option<DateTime<FixedOffset>>,
    pub authorized_amount: Option<f64>,
    pub authorization_response: Option<String>,
    pub authorization_response_status: Option<String>,
    pub authorization_response_description: Option<String>,
    pub card_type: Option<String>,
    pub merchant_name: Option<String>,
    pub mcc_code: Option<String>,
    pub pos_entry_mode1: Option<String>,
}

/// Why one record of a page could not be read. The rest of the page is still usable.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// Position in the page's `records` array.
    pub index: usize,
    /// The record's `id`, when it could be read.
    pub id: Option<String>,
    pub reason: String,
}

/// Why a page or a record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A record that is not a JSON object: it says what it is instead ("an array" …).
    #[error("not a JSON object: {0}")]
    NotAnObject(&'static str),
    /// An object whose JSON cannot be read (`0` names the field where reading stopped).
    #[error("not a JSON object ({0})")]
    Unreadable(String),
    /// The page is not UTF-8 text.
    #[error("not UTF-8: {0}")]
    NotUtf8(String),
    /// The page is not JSON, or not the documented envelope.
    #[error("{0}")]
    Envelope(serde_json::Error),
    /// The page is a JSON array where the envelope is an object.
    #[error("the page is a JSON array, not an object")]
    ArrayPage,
    /// The page is not a JSON object at all.
    #[error("the page is not a JSON object")]
    NotAnObjectPage,
}

impl Record {
    /// Reads the typed view of `raw` (JSON text). A known field of an unexpected type (an
    /// amount given as text, a time that is not ISO-8601 …) reads as absent and is reported by
    /// [`Record::type_problem`]: the record itself, with its exact JSON, is kept. Fails only
    /// when the record is not a JSON object.
    pub fn from_text(raw: ByteString) -> Result<Record, ParseError> {
        if !is_object(&raw) {
            return Err(ParseError::NotAnObject(json_kind(&raw)));
        }
        // The common case first, at full speed; the path of a bad field is traced only when
        // there is one.
        let (view, type_problem) = match serde_json::from_str::<RecordView>(&raw) {
            Ok(view) => (view, None),
            Err(_) => {
                let mut track = serde_path_to_error::Track::new();
                let mut de = serde_json::Deserializer::from_str(&raw);
                let traced = RecordView::deserialize(serde_path_to_error::Deserializer::new(
                    &mut de, &mut track,
                ));
                let reason = traced.err().map(|e| strip_position(&e.to_string()));
                let problem = format!(
                    "field `{}`: {}",
                    track.path(),
                    reason.as_deref().unwrap_or("unreadable")
                );
                let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&raw)
                    .map_err(|_| ParseError::Unreadable(problem.clone()))?;
                (RecordView::lenient(&object), Some(problem))
            }
        };
        let time = view
            .transaction_date_and_time
            .map(|t| t.with_timezone(&Utc));
        Ok(Record {
            raw,
            view,
            type_problem,
            time,
        })
    }

    /// Reads the id and the time from `resource`'s fields, when they are not the
    /// authorizations' ones (`id`, `transactionDateAndTime`).
    pub fn of(mut self, resource: &Resource) -> Record {
        if resource.id_field == AUTHORIZATIONS.id_field
            && resource.time_field == AUTHORIZATIONS.time_field
        {
            return self;
        }
        // Other resources are low-volume: one more pass over the top level is cheap.
        let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(&self.raw) else {
            return self;
        };
        let id = fields.get(resource.id_field).and_then(|v| {
            match serde_json::from_str::<serde_json::Value>(v.get()).ok()? {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        });
        let time = fields
            .get(resource.time_field)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .and_then(|text| parse_time(&text));
        self.view.id = id;
        self.time = time;
        self
    }

    /// The first known field that had an unexpected type, if any.
    pub fn type_problem(&self) -> Option<&str> {
        self.type_problem.as_deref()
    }

    /// Parses one record from JSON text.
    pub fn from_json(json: &str) -> Result<Record, ParseError> {
        Record::from_text(ByteString::from(json))
    }

    /// The exact JSON text MXC sent for this record.
    pub fn json(&self) -> &str {
        &self.raw
    }

    pub fn view(&self) -> &RecordView {
        &self.view
    }

    /// The record id (the dedup key), when present and non-empty.
    pub fn id(&self) -> Option<&str> {
        self.view.id.as_deref().filter(|s| !s.is_empty())
    }

    /// The XMID (`accountNumber`).
    pub fn xmid(&self) -> Option<&str> {
        self.view.account_number.as_deref()
    }

    /// The record's time (its resource's time field) as a UTC instant.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }

    /// When MXC ingested the record (`created`), as a UTC instant.
    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.view.created.map(|t| t.with_timezone(&Utc))
    }

    /// The record's top-level `fields` (those it has) as a JSON object, the rest skipped
    /// unparsed: what a routing filter reads.
    pub fn pick(&self, fields: &[String]) -> serde_json::Value {
        let mut de = serde_json::Deserializer::from_str(&self.raw);
        match serde::de::DeserializeSeed::deserialize(pick::Pick(fields), &mut de) {
            Ok(object) => serde_json::Value::Object(object),
            // The text was valid JSON when the record was built.
            Err(_) => self.to_value(),
        }
    }

    /// The whole record as a JSON tree, for redaction.
    pub fn to_value(&self) -> serde_json::Value {
        // The text was valid JSON when the record was built.
        serde_json::from_str(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}

mod pick {
    //! A serde seed that keeps some top-level fields of an object and skips the others
    //! without building them.
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::{Map, Value};
    use std::fmt;

    pub struct Pick<'a>(pub &'a [String]);

    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = Map<String, Value>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some(wanted) = map.next_key_seed(Key(self.0))? {
                match wanted {
                    Some(i) => {
                        out.insert(self.0[i].clone(), map.next_value()?);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }

    /// A key: the index of the wanted field it names, if any (no allocation either way).
    struct Key<'a>(&'a [String]);

    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = Option<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|k| k == key))
        }
    }
}

/// An instant as the reports write them: RFC 3339 (`2026-01-02T03:04:05.000-05:00`), without
/// an offset (taken as UTC), or a date alone (its midnight UTC).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

impl RecordView {
    /// Field by field: each one that does not read as its type is absent. Ids given as
    /// numbers are taken as text.
    fn lenient(object: &serde_json::Map<String, serde_json::Value>) -> RecordView {
        fn get<T: serde::de::DeserializeOwned>(
            o: &serde_json::Map<String, serde_json::Value>,
            key: &str,
        ) -> Option<T> {
            o.get(key).and_then(|v| T::deserialize(v).ok())
        }
        let id = match object.get("id") {
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => get(object, "id"),
        };
        RecordView {
            id,
            account_number: get(object, "accountNumber"),
            transaction_date_and_time: get(object, "transactionDateAndTime"),
            created: get(object, "created"),
            authorized_amount: get(object, "authorizedAmount"),
            authorization_response: get(object, "authorizationResponse"),
            authorization_response_status: get(object, "authorizationResponseStatus"),
            authorization_response_description: get(object, "authorizationResponseDescription"),
            card_type: get(object, "cardType"),
            merchant_name: get(object, "merchantName"),
            mcc_code: get(object, "mccCode"),
            pos_entry_mode1: get(object, "posEntryMode1"),
        }
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The text is the JSON: written as it is, not as a string.
        match serde_json::from_str::<&RawValue>(&self.raw) {
            Ok(raw) => raw.serialize(serializer),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

/// serde_json appends "at line 1 column 123"; within one record that says nothing useful.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Whether JSON text is an object. (A derived `Deserialize` also reads a struct from an array
/// of its fields in order, so a struct deserializing is not enough.)
fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// What a JSON value that is not an object is, for a rejection reason.
fn json_kind(json: &str) -> &'static str {
    match json.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// One page of a report endpoint (`/report/v1/tsys/*`, `/boarding/v1/uar`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records matching the whole query (not only this page), when the server says.
    pub total_records: Option<u64>,
    /// `aggregations.totalAmount.value`, when the endpoint sends it.
    pub total_amount: Option<f64>,
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    /// `_scroll_id` of the export form.
    pub scroll_id: Option<String>,
}

/// A page as the report endpoints send it, its records left as borrowed JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope<'a> {
    #[serde(default)]
    pub aggregations: Option<serde_json::Value>,
    #[serde(default)]
    pub total_records: Option<u64>,
    #[serde(borrow)]
    pub records: Vec<&'a RawValue>,
    #[serde(default, rename = "_scroll_id")]
    pub scroll_id: Option<String>,
}

impl Page {
    /// Reads each record's id and time from `resource`'s fields (see [`Record::of`]).
    pub fn of(mut self, resource: &Resource) -> Page {
        self.records = self.records.into_iter().map(|r| r.of(resource)).collect();
        self
    }

    /// Parses a page. The envelope must be well-formed; a record inside it that is not a JSON
    /// object lands in [`Page::rejected`] with its reason instead of failing the page.
    pub fn parse(body: &[u8]) -> Result<Page, ParseError> {
        Page::parse_bytes(Bytes::copy_from_slice(body))
    }

    /// [`Page::parse`] of an HTTP body as received: each record keeps a slice of it.
    pub fn parse_bytes(body: Bytes) -> Result<Page, ParseError> {
        let text = ByteString::try_from(body).map_err(|e| ParseError::NotUtf8(e.to_string()))?;
        let envelope: Envelope = serde_json::from_str(&text).map_err(ParseError::Envelope)?;
        if text.trim_start().as_bytes().first() != Some(&b'{') {
            return Err(ParseError::ArrayPage);
        }
        let total_amount = envelope
            .aggregations
            .as_ref()
            .and_then(|a| a.pointer("/totalAmount/value"))
            .and_then(|v| v.as_f64());
        let mut page = Page {
            total_records: envelope.total_records,
            total_amount,
            records: Vec::with_capacity(envelope.records.len()),
            rejected: Vec::new(),
            scroll_id: envelope.scroll_id,
        };
        for (index, raw) in envelope.records.into_iter().enumerate() {
            match Record::from_text(text.slice_ref(raw.get())) {
                Ok(record) => page.records.push(record),
                Err(reason) => page.rejected.push(RejectedRecord {
                    index,
                    id: id_of(raw.get()),
                    reason: reason.to_string(),
                }),
            }
        }
        Ok(page)
    }
}

/// The `id` of a record whose other fields may be unreadable.
fn id_of(json: &str) -> Option<String> {
    if !is_object(json) {
        return None;
    }
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    serde_json::from_str::<IdOnly>(json).ok().and_then(|r| r.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_wrong_type_keeps_the_record_and_says_so() {
        let body = br#"{"totalRecords":3,"records":[
            {"id":"a","authorizedAmount":"12.00","cardType":"Visa"},
            {"id":"b","authorizedAmount":12.0,"someUnknownField":{"x":[1,2]}},
            ["not", "an", "object"]]}"#;
        let page = Page::parse(body).unwrap();
        assert_eq!(page.records.len(), 2);
        let a = &page.records[0];
        assert_eq!(a.id(), Some("a"));
        assert_eq!(a.view().authorized_amount, None);
        assert_eq!(
            a.view().card_type.as_deref(),
            Some("Visa"),
            "the other fields still read"
        );
        let problem = a.type_problem().unwrap();
        assert!(
            problem.starts_with("field `authorizedAmount`: invalid type"),
            "{problem}"
        );
        assert_eq!(page.records[1].type_problem(), None);
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].index, 2);
    }

    #[test]
    fn a_numeric_id_is_read_as_text() {
        let r = Record::from_json(r#"{"id":12345,"accountNumber":"X"}"#).unwrap();
        assert_eq!(r.id(), Some("12345"));
        assert!(r.type_problem().is_some());
    }

    #[test]
    fn an_envelope_without_records_is_an_error() {
        assert!(Page::parse(br#"{"totalRecords":0}"#).is_err());
        assert!(Page::parse(br#"{"totalRecords":1,"records":[{"id""#).is_err());
    }

    #[test]
    fn other_resources_read_their_own_time_field() {
        use crate::resource::{BATCHES, DISPUTES};
        let r = Record::from_json(r#"{"id":"d-1","disputeDate":"2026-03-04T05:06:07.000-05:00","transactionDateAndTime":"2026-01-01T00:00:00Z"}"#)
            .unwrap()
            .of(&DISPUTES);
        assert_eq!(r.id(), Some("d-1"));
        assert_eq!(r.time().unwrap().to_rfc3339(), "2026-03-04T10:06:07+00:00");
        let b = Record::from_json(r#"{"id":"b-1","batchDate":"2026-03-04"}"#)
            .unwrap()
            .of(&BATCHES);
        assert_eq!(b.time().unwrap().to_rfc3339(), "2026-03-04T00:00:00+00:00");
        let none = Record::from_json(r#"{"id":"b-2","batchDate":"soon"}"#)
            .unwrap()
            .of(&BATCHES);
        assert_eq!(none.time(), None);
    }

    #[test]
    fn an_empty_id_is_no_id() {
        let r = Record::from_json(r#"{"id":"","accountNumber":"X"}"#).unwrap();
        assert_eq!(r.id(), None);
        assert_eq!(r.xmid(), Some("X"));
    }
}
