//! The admin API's OpenAPI document: the checked-in copy (`deploy/admin-openapi.json`) is the
//! one the code generates, the running service serves it, and a real validator accepts it.

use std::path::Path;
use std::process::Command;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/admin-openapi.json");

#[test]
fn the_checked_in_document_is_the_one_the_code_generates() {
    let generated = mxc_relay::admin::openapi_document() + "\n";
    if std::env::var_os("MXC_RELAY_UPDATE_OPENAPI").is_some() {
        std::fs::write(CHECKED_IN, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        checked_in == generated,
        "deploy/admin-openapi.json is stale (the admin API changed): regenerate it with\n    MXC_RELAY_UPDATE_OPENAPI=1 cargo test --test it openapi::\nand commit it"
    );
}

/// PyPI's openapi-spec-validator (pinned, installed by `.ci/test`); skipped without it, except
/// under CI.
#[test]
fn a_real_validator_accepts_the_document() {
    let probe = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-spec-validator is missing (.ci/test installs it)"
        );
        eprintln!("skipped: python3 -m pip install openapi-spec-validator==0.9.0");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-openapi.json");
    std::fs::write(&file, mxc_relay::admin::openapi_document()).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(Path::new(&file))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("OK"), "{said}");
}
