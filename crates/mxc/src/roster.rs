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

/// Tries of one roster page that MXC throttled or failed for a moment.
const PAGE_TRIES: u32 = 6;

impl Client {
    /// Every merchant of the roster, paging `size=100&from=N` until the roster is exhausted.
    pub async fn roster(&self) -> Result<Vec<Merchant>, MxcError> {
        self.roster_paced(|| std::future::ready(())).await
    }

    /// [`Client::roster`], awaiting `before_page` before each page (a request budget). A page
    /// throttled (429) or failed for a moment is tried again, after the `Retry-After` MXC
    /// asked for (at most 30 s) or 1, 2, 4 … s, up to 6 times: a roster of 100,000 merchants
    /// is 1,000 pages, and one 429 should not throw the others away.
    pub async fn roster_paced<F, Fut>(&self, mut before_page: F) -> Result<Vec<Merchant>, MxcError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let endpoint = format!("GET {ROSTER_PATH}");
        let mut merchants = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let params = [
                ("size", MAX_PAGE_SIZE.to_string()),
                ("from", offset.to_string()),
            ];
            let mut tries = 0;
            let page = loop {
                before_page().await;
                tries += 1;
                match self.page(Method::GET, ROSTER_PATH, &params, None).await {
                    Ok(page) => break page,
                    Err(error) if error.is_transient() && tries < PAGE_TRIES => {
                        let backoff = std::time::Duration::from_secs(1 << (tries - 1));
                        let wait = error
                            .retry_after()
                            .unwrap_or(backoff)
                            .min(std::time::Duration::from_secs(30));
                        tokio::time::sleep(wait).await;
                    }
                    Err(error) => return Err(error),
                }
            };
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
