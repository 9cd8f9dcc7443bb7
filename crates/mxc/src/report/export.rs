//! The export (scroll) form of a report query, for backfills larger than paging can reach:
//! its pages parsed into records, or raw (each record's exact JSON text).

use bytes::Bytes;
use reqwest::Method;

use super::{Batch, QueryString, ReportQuery};
use crate::client::Client;
use crate::error::{excerpt, MxcError};
use crate::record::{Envelope, ParseError, Record, RejectedRecord};

impl Client {
    /// Starts an export (scroll) over the query: for backfills larger than paging can reach.
    pub fn report_export(&self, query: ReportQuery) -> ExportPager {
        ExportPager {
            client: self.clone(),
            query,
            scroll_id: None,
            done: false,
        }
    }
}

/// Pages through the export (scroll) form: the first call opens the scroll, each next one
/// posts `{"scrollId": …}`; an empty page ends it.
pub struct ExportPager {
    client: Client,
    query: ReportQuery,
    scroll_id: Option<String>,
    done: bool,
}

impl ExportPager {
    pub async fn next_page(&mut self) -> Result<Option<Batch>, MxcError> {
        if self.done {
            return Ok(None);
        }
        let (params, body) = self.request()?;
        let page = self
            .client
            .page(
                Method::POST,
                self.query.resource.export_path,
                &params,
                body.as_ref(),
            )
            .await?
            .of(self.query.resource);
        let empty = page.records.is_empty() && page.rejected.is_empty();
        if !self.advance(empty, page.scroll_id)? {
            return Ok(None);
        }
        Ok(Some(Batch {
            records: page.records,
            rejected: page.rejected,
            total_records: page.total_records,
        }))
    }

    /// Like [`ExportPager::next_page`], with the records left unparsed (see [`RawPage`]).
    pub async fn next_raw_page(&mut self) -> Result<Option<RawPage>, MxcError> {
        if self.done {
            return Ok(None);
        }
        let (params, body) = self.request()?;
        let path = self.query.resource.export_path;
        let endpoint = format!("POST {path}");
        let (status, bytes) = self
            .client
            .send(Method::POST, path, &params, body.as_ref(), &endpoint)
            .await?;
        let mut page = RawPage::parse(&bytes).map_err(|detail| MxcError::Malformed {
            endpoint,
            status,
            detail: detail.to_string(),
            excerpt: excerpt(&bytes),
        })?;
        let empty = page.records.is_empty() && page.rejected.is_empty();
        if !self.advance(empty, page.scroll_id.take())? {
            return Ok(None);
        }
        Ok(Some(page))
    }

    /// The query string and body of the next call: the first opens the scroll, the others
    /// name it.
    fn request(&self) -> Result<(QueryString, Option<serde_json::Value>), MxcError> {
        self.query.check()?;
        let body = self
            .scroll_id
            .as_ref()
            .map(|id| serde_json::json!({ "scrollId": id }));
        Ok((self.query.params(), body))
    }

    /// Takes in an answer: false when it ends the scroll (an empty page).
    fn advance(&mut self, empty: bool, scroll_id: Option<String>) -> Result<bool, MxcError> {
        if empty {
            self.done = true;
            return Ok(false);
        }
        match scroll_id {
            Some(id) => self.scroll_id = Some(id),
            None if self.scroll_id.is_none() => {
                return Err(MxcError::Malformed {
                    endpoint: format!("POST {}", self.query.resource.export_path),
                    status: 200,
                    detail: "the export answer has records but no _scroll_id".into(),
                    excerpt: String::new(),
                })
            }
            None => {}
        }
        Ok(true)
    }
}

/// One page of the export as MXC sent it, its records not parsed: each record's exact JSON
/// text cut out of the body (sharing its buffer), for callers that pass records on as they
/// are. Reading the envelope still checks that every record is well-formed JSON.
#[derive(Debug, Default)]
pub struct RawPage {
    /// The records that are JSON objects, in the page's order.
    pub records: Vec<Bytes>,
    /// The others, with the reason, as [`Page::rejected`](crate::Page::rejected) has them.
    pub rejected: Vec<RejectedRecord>,
    /// The window's `totalRecords`, when the server says.
    pub total_records: Option<u64>,
    scroll_id: Option<String>,
}

impl RawPage {
    /// Reads the envelope; the same answers are malformed as for
    /// [`Page::parse`](crate::Page::parse).
    pub fn parse(body: &Bytes) -> Result<RawPage, ParseError> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ParseError::NotAnObjectPage);
        }
        let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(ParseError::Envelope)?;
        let mut page = RawPage {
            records: Vec::with_capacity(envelope.records.len()),
            rejected: Vec::new(),
            total_records: envelope.total_records,
            scroll_id: envelope.scroll_id,
        };
        for (index, raw) in envelope.records.into_iter().enumerate() {
            let text = raw.get();
            if text.starts_with('{') {
                // serde_json borrows raw values from the input: `text` lies within `body`.
                page.records.push(body.slice_ref(text.as_bytes()));
            } else {
                let reason = Record::from_json(text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not a JSON object".into());
                page.rejected.push(RejectedRecord {
                    index,
                    id: None,
                    reason,
                });
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_page_keeps_each_record_text_exactly() {
        let body = Bytes::from_static(
            br#"{"aggregations":{"totalAmount":{"value":1.5}},"totalRecords":7,"_scroll_id":"s-1","records":[
                {"id":"a", "n": [1, 2]},["not an object"],{"id":"b","x":"\u00e9"}]}"#,
        );
        let mut page = RawPage::parse(&body).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(&page.records[0][..], br#"{"id":"a", "n": [1, 2]}"#);
        assert_eq!(&page.records[1][..], br#"{"id":"b","x":"\u00e9"}"#);
        assert_eq!(page.rejected.len(), 1);
        assert_eq!(page.rejected[0].index, 1);
        assert!(
            page.rejected[0].reason.contains("an array"),
            "{:?}",
            page.rejected
        );
        assert_eq!(page.total_records, Some(7));
        assert_eq!(page.scroll_id.take().as_deref(), Some("s-1"));
        for bad in [
            &br#"[{"records":[]}]"#[..],
            br#"{"totalRecords":1}"#,
            br#"{"records":[{"id""#,
        ] {
            assert!(RawPage::parse(&Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
