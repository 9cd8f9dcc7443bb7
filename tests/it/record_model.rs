//! The record model against the vendor's documented authorization response.

use mxc::Page;
use serde_json::Value;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/authorization-page.json"
));

#[test]
fn the_documented_page_parses() {
    let page = Page::parse(FIXTURE.as_bytes()).expect("fixture parses");
    assert_eq!(page.total_records, Some(1));
    assert_eq!(page.total_amount, Some(11.11));
    assert!(page.rejected.is_empty());
    let record = &page.records[0];
    assert_eq!(record.id(), Some("00000000-0000-0000-0000-000000000000"));
    assert_eq!(record.xmid(), Some("xmid_value"));
    let view = record.view();
    assert_eq!(view.authorized_amount, Some(11.11));
    assert_eq!(view.authorization_response.as_deref(), Some("00"));
    assert_eq!(
        view.authorization_response_status.as_deref(),
        Some("Approved")
    );
    assert_eq!(view.card_type.as_deref(), Some("Card_Brand"));
    assert_eq!(view.mcc_code.as_deref(), Some("5462"));
    assert_eq!(view.pos_entry_mode1.as_deref(), Some("05"));
    assert_eq!(
        record.time().map(|t| t.to_rfc3339()),
        Some("2019-11-07T12:55:49+00:00".to_string())
    );
}

#[test]
fn each_record_reserialises_to_its_input() {
    let input: Value = serde_json::from_str(FIXTURE).unwrap();
    let page = Page::parse(FIXTURE.as_bytes()).unwrap();
    for (record, original) in page
        .records
        .iter()
        .zip(input["records"].as_array().unwrap())
    {
        let out = serde_json::to_string(record).unwrap();
        let reparsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(&reparsed, original);
        // Field order and number formatting are kept too: the text is the text MXC sent.
        assert_eq!(out, record.json());
        assert_eq!(original.as_object().unwrap().len(), 144);
    }
}

#[test]
fn unknown_fields_pass_through() {
    let mut input: Value = serde_json::from_str(FIXTURE).unwrap();
    input["records"][0]["aFieldMxcAddsNextYear"] = serde_json::json!({"nested": [1, 2.50, "x"]});
    let page = Page::parse(input.to_string().as_bytes()).unwrap();
    let out: Value = serde_json::from_str(page.records[0].json()).unwrap();
    assert_eq!(out, input["records"][0]);
}
