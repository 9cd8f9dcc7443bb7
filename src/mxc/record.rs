//! The record model: each record keeps its exact JSON (the ~140 documented fields and any
//! unknown ones pass through untouched) plus a typed view of what routing needs.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// One record as MXC sent it.
#[derive(Debug, Clone)]
pub struct Record {
    raw: Box<RawValue>,
    view: RecordView,
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

impl Record {
    /// Reads the typed view of `raw`. Fails, naming the field, when a known field has the wrong
    /// type (an amount given as text, a time that is not ISO-8601 …).
    pub fn from_raw(raw: Box<RawValue>) -> Result<Record, String> {
        let mut track = serde_path_to_error::Track::new();
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let view =
            RecordView::deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
                .map_err(|e| {
                    format!(
                        "field `{}`: {}",
                        track.path(),
                        strip_position(&e.to_string())
                    )
                })?;
        Ok(Record { raw, view })
    }

    /// Parses one record from JSON text.
    pub fn from_json(json: &str) -> Result<Record, String> {
        let raw = RawValue::from_string(json.to_string()).map_err(|e| e.to_string())?;
        Record::from_raw(raw)
    }

    /// The exact JSON text MXC sent for this record.
    pub fn json(&self) -> &str {
        self.raw.get()
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

    /// `transactionDateAndTime` as a UTC instant.
    pub fn transaction_time(&self) -> Option<DateTime<Utc>> {
        self.view
            .transaction_date_and_time
            .map(|t| t.with_timezone(&Utc))
    }

    /// The whole record as a JSON tree, for routing filters and redaction.
    pub fn to_value(&self) -> serde_json::Value {
        // The text was valid JSON when the record was built.
        serde_json::from_str(self.raw.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

/// serde_json appends "at line 1 column 123"; within one record that says nothing useful.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// One page of a report endpoint (`/report/v1/tsys/*`, `/boarding/v1/uar`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records matching the whole query (not only this page).
    pub total_records: u64,
    /// `aggregations.totalAmount.value`, when the endpoint sends it.
    pub total_amount: Option<f64>,
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    /// `_scroll_id` of the export form.
    pub scroll_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    aggregations: Option<serde_json::Value>,
    #[serde(default)]
    total_records: Option<u64>,
    records: Vec<Box<RawValue>>,
    #[serde(default, rename = "_scroll_id")]
    scroll_id: Option<String>,
}

impl Page {
    /// Parses a page. The envelope must be well-formed; a record inside it that cannot be read
    /// lands in [`Page::rejected`] with its reason instead of failing the page.
    pub fn parse(body: &[u8]) -> Result<Page, String> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let total_amount = envelope
            .aggregations
            .as_ref()
            .and_then(|a| a.pointer("/totalAmount/value"))
            .and_then(|v| v.as_f64());
        let mut page = Page {
            total_records: envelope
                .total_records
                .unwrap_or(envelope.records.len() as u64),
            total_amount,
            records: Vec::with_capacity(envelope.records.len()),
            rejected: Vec::new(),
            scroll_id: envelope.scroll_id,
        };
        for (index, raw) in envelope.records.into_iter().enumerate() {
            match Record::from_raw(raw.clone()) {
                Ok(record) => page.records.push(record),
                Err(reason) => page.rejected.push(RejectedRecord {
                    index,
                    id: id_of(raw.get()),
                    reason,
                }),
            }
        }
        Ok(page)
    }
}

/// The `id` of a record whose other fields may be unreadable.
fn id_of(json: &str) -> Option<String> {
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
    fn a_bad_field_rejects_only_its_record() {
        let body = br#"{"totalRecords":2,"records":[
            {"id":"a","authorizedAmount":"12.00"},
            {"id":"b","authorizedAmount":12.0,"someUnknownField":{"x":[1,2]}}]}"#;
        let page = Page::parse(body).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].id(), Some("b"));
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].id.as_deref(), Some("a"));
        assert!(
            page.rejected[0]
                .reason
                .starts_with("field `authorizedAmount`: invalid type"),
            "{}",
            page.rejected[0].reason
        );
    }

    #[test]
    fn an_envelope_without_records_is_an_error() {
        assert!(Page::parse(br#"{"totalRecords":0}"#).is_err());
        assert!(Page::parse(br#"{"totalRecords":1,"records":[{"id""#).is_err());
    }

    #[test]
    fn an_empty_id_is_no_id() {
        let r = Record::from_json(r#"{"id":"","accountNumber":"X"}"#).unwrap();
        assert_eq!(r.id(), None);
        assert_eq!(r.xmid(), Some("X"));
    }
}
