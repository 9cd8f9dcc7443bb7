//! The merchant roster (`GET /boarding/v1/uar`): which XMIDs exist and which are active.

use reqwest::Method;
use serde::Deserialize;

use super::client::Client;
use super::error::MxcError;
use super::report::MAX_PAGE_SIZE;

pub const ROSTER_PATH: &str = "/boarding/v1/uar";

/// One merchant account of the roster.
#[derive(Debug, Clone, PartialEq)]
pub struct Merchant {
    /// `account.number`.
    pub xmid: String,
    /// `account.active`.
    pub active: bool,
    /// `account.status`, e.g. "Approved" or "Closed".
    pub status: Option<String>,
    /// `account.product.id`; "3" is TSYS.
    pub product_id: Option<String>,
    /// `location.name`, the DBA name.
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    account: Account,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Account {
    number: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    product: Option<Product>,
}

#[derive(Deserialize)]
struct Product {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    name: Option<String>,
}

impl Client {
    /// Every merchant of the roster, paging `size=100&from=N` until the roster is exhausted.
    pub async fn roster(&self) -> Result<Vec<Merchant>, MxcError> {
        let endpoint = format!("GET {ROSTER_PATH}");
        let mut merchants = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let params = [
                ("size", MAX_PAGE_SIZE.to_string()),
                ("from", offset.to_string()),
            ];
            let page = self.page(Method::GET, ROSTER_PATH, &params, None).await?;
            let received = (page.records.len() + page.rejected.len()) as u64;
            for (position, record) in page.records.into_iter().enumerate() {
                let entry: Entry =
                    serde_json::from_str(record.json()).map_err(|e| MxcError::Malformed {
                        endpoint: endpoint.clone(),
                        status: 200,
                        detail: format!("roster entry {}: {e}", offset + position as u64),
                        excerpt: super::error::excerpt(record.json().as_bytes()),
                    })?;
                merchants.push(Merchant {
                    xmid: entry.account.number,
                    active: entry.account.active,
                    status: entry.account.status,
                    product_id: entry.account.product.and_then(|p| p.id),
                    name: entry.location.and_then(|l| l.name),
                });
            }
            offset += received;
            let done = received == 0
                || match page.total_records {
                    Some(total) => offset >= total,
                    None => received < u64::from(MAX_PAGE_SIZE),
                };
            if done {
                return Ok(merchants);
            }
        }
    }
}
