//! The roster's merchants: the kinds of business and the cities they are drawn from, how one
//! is drawn from the seed, its share of the traffic, and its roster entry.

use chrono::FixedOffset;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::draw::lognormal;
use super::Dataset;

/// One merchant account (XMID) of the roster.
#[derive(Debug, Clone)]
pub struct SimMerchant {
    pub xmid: String,
    pub name: String,
    pub active: bool,
    pub status: &'static str,
    pub(super) account_id: String,
    pub(super) entity_id: String,
    pub(super) location_id: String,
    pub(super) domain_id: String,
    pub(super) mcc: &'static Mcc,
    pub(super) city: &'static City,
    pub(super) terminal: String,
    pub(super) store: String,
    /// Share of the portfolio's traffic.
    weight: f64,
}

impl SimMerchant {
    /// The UTC offset of the merchant's city: its records' local times use it.
    pub fn utc_offset(&self) -> FixedOffset {
        FixedOffset::east_opt(self.city.utc_offset_hours * 3600)
            .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
    }

    pub fn terminal(&self) -> &str {
        &self.terminal
    }
}

#[derive(Debug)]
pub(super) struct Mcc {
    pub(super) code: &'static str,
    pub(super) industry: &'static str,
    pub(super) sector: &'static str,
    pub(super) business_type: &'static str,
    nouns: &'static [&'static str],
    /// Typical ticket in dollars.
    pub(super) ticket: f64,
}

const MCCS: &[Mcc] = &[
    Mcc {
        code: "5411",
        industry: "Grocery Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Market", "Grocers", "Foods"],
        ticket: 48.0,
    },
    Mcc {
        code: "5812",
        industry: "Restaurants",
        sector: "Accommodation and Food Services",
        business_type: "Restaurant",
        nouns: &["Grill", "Kitchen", "Bistro", "Diner"],
        ticket: 36.0,
    },
    Mcc {
        code: "5814",
        industry: "Fast Food Restaurants",
        sector: "Accommodation and Food Services",
        business_type: "Restaurant",
        nouns: &["Burgers", "Tacos", "Pizza"],
        ticket: 14.0,
    },
    Mcc {
        code: "5541",
        industry: "Service Stations",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Fuel", "Gas & Go"],
        ticket: 42.0,
    },
    Mcc {
        code: "5462",
        industry: "Bakeries",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Bakery", "Bake Shop"],
        ticket: 11.0,
    },
    Mcc {
        code: "5732",
        industry: "Electronics Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Electronics", "Computers"],
        ticket: 190.0,
    },
    Mcc {
        code: "7011",
        industry: "Hotels and Motels",
        sector: "Accommodation and Food Services",
        business_type: "Lodging",
        nouns: &["Inn", "Hotel", "Suites"],
        ticket: 240.0,
    },
    Mcc {
        code: "5912",
        industry: "Drug Stores and Pharmacies",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Pharmacy", "Drugs"],
        ticket: 32.0,
    },
    Mcc {
        code: "7538",
        industry: "Automotive Service Shops",
        sector: "Other Services",
        business_type: "Service",
        nouns: &["Auto Repair", "Tire & Lube"],
        ticket: 310.0,
    },
    Mcc {
        code: "8011",
        industry: "Doctors",
        sector: "Health Care and Social Assistance",
        business_type: "Healthcare",
        nouns: &["Family Medicine", "Clinic"],
        ticket: 150.0,
    },
    Mcc {
        code: "5691",
        industry: "Clothing Stores",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Outfitters", "Apparel"],
        ticket: 85.0,
    },
    Mcc {
        code: "5999",
        industry: "Miscellaneous Retail",
        sector: "Retail Trade",
        business_type: "Retail",
        nouns: &["Goods", "Supply Co"],
        ticket: 60.0,
    },
];

const PREFIXES: &[&str] = &[
    "Blue Ridge",
    "Harbor",
    "Maple",
    "Summit",
    "Riverside",
    "Golden Gate",
    "Lakeside",
    "Pine Street",
    "Sunset",
    "Oak Hill",
    "Cedar",
    "Main Street",
    "Red Rock",
    "Silver Lake",
    "Bayview",
    "Prairie",
];

#[derive(Debug)]
pub(super) struct City {
    pub(super) name: &'static str,
    pub(super) state: &'static str,
    pub(super) postal: &'static str,
    pub(super) utc_offset_hours: i32,
}

const CITIES: &[City] = &[
    City {
        name: "Atlanta",
        state: "GA",
        postal: "30303",
        utc_offset_hours: -5,
    },
    City {
        name: "Austin",
        state: "TX",
        postal: "78701",
        utc_offset_hours: -6,
    },
    City {
        name: "Denver",
        state: "CO",
        postal: "80202",
        utc_offset_hours: -7,
    },
    City {
        name: "Seattle",
        state: "WA",
        postal: "98101",
        utc_offset_hours: -8,
    },
    City {
        name: "Chicago",
        state: "IL",
        postal: "60601",
        utc_offset_hours: -6,
    },
    City {
        name: "Boston",
        state: "MA",
        postal: "02108",
        utc_offset_hours: -5,
    },
    City {
        name: "Phoenix",
        state: "AZ",
        postal: "85004",
        utc_offset_hours: -7,
    },
    City {
        name: "Miami",
        state: "FL",
        postal: "33130",
        utc_offset_hours: -5,
    },
    City {
        name: "Portland",
        state: "OR",
        postal: "97204",
        utc_offset_hours: -8,
    },
    City {
        name: "Nashville",
        state: "TN",
        postal: "37203",
        utc_offset_hours: -6,
    },
];

/// Cumulative traffic weights of the active merchants.
pub(super) fn active_weights(merchants: &[SimMerchant]) -> Vec<(f64, usize)> {
    let mut cumulative = 0.0;
    merchants
        .iter()
        .enumerate()
        .filter(|(_, m)| m.active)
        .map(|(i, m)| {
            cumulative += m.weight;
            (cumulative, i)
        })
        .collect()
}

pub(super) fn new_merchant(rng: &mut ChaCha8Rng, xmid: String, active: bool) -> SimMerchant {
    let mcc = &MCCS[rng.gen_range(0..MCCS.len())];
    let city = &CITIES[rng.gen_range(0..CITIES.len())];
    let name = format!(
        "{} {}",
        PREFIXES[rng.gen_range(0..PREFIXES.len())],
        mcc.nouns[rng.gen_range(0..mcc.nouns.len())]
    );
    SimMerchant {
        xmid,
        name,
        active,
        status: if active { "Approved" } else { "Closed" },
        account_id: format!("{:024x}", rng.gen::<u128>() >> 32),
        entity_id: format!("{:010}", rng.gen_range(0..10_000_000_000u64)),
        location_id: format!("{:024x}", rng.gen::<u128>() >> 32),
        domain_id: format!("{:011}", rng.gen_range(0..100_000_000_000u64)),
        mcc,
        city,
        terminal: format!("{:04}", rng.gen_range(1..100)),
        store: format!("{:04}", rng.gen_range(1..1000)),
        weight: lognormal(rng, 0.0, 0.7),
    }
}

impl Dataset {
    /// The roster entry of a merchant, as `/boarding/v1/uar` returns it.
    pub fn roster_entry(merchant: &SimMerchant) -> Value {
        json!({
            "account": {
                "id": merchant.account_id,
                "number": merchant.xmid,
                "entityId": merchant.entity_id,
                "platform": "crm",
                "active": merchant.active,
                "status": merchant.status,
                "businessType": merchant.mcc.business_type,
                "product": { "id": "3", "name": "TSYS" },
            },
            "entity": { "id": merchant.entity_id, "name": merchant.name },
            "location": {
                "id": merchant.location_id,
                "name": merchant.name,
                "sic": merchant.mcc.code,
                "industry": merchant.mcc.industry,
                "address": {
                    "city": merchant.city.name,
                    "state": merchant.city.state,
                    "postalCode": merchant.city.postal,
                    "country": "United States",
                },
            },
        })
    }
}
