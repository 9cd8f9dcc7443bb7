//! What the tests wait for and read back: a sink's file, its lines, and conditions.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The JSON lines of a sink's file, complete ones only (a line still being written waits).
pub fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Complete lines in a file, without parsing them.
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// The record id of a sink's line (`data.id` of the event).
pub fn record_id(line: &Value) -> String {
    line["data"]["id"].as_str().unwrap().to_string()
}

/// The record ids of a sink's lines (`data.id` of each event).
pub fn record_ids(lines: &[Value]) -> HashSet<&str> {
    lines
        .iter()
        .map(|l| l["data"]["id"].as_str().expect("an event names its record"))
        .collect()
}

/// Waits until `done` or `within` passed; whether `done` came true.
pub async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// Waits until the file at `path` holds `n` complete lines or `within` passed; how many it
/// holds then. Counts lines without parsing them (thousands of 7 KB events stay cheap to
/// re-read): [`lines`] reads them afterwards.
pub async fn wait_for_lines(path: &Path, n: usize, within: Duration) -> usize {
    wait_until(within, || line_count(path) >= n).await;
    line_count(path)
}

/// Polls `check` every 5 ms until it gives a value, and panics if `within` passes first: when
/// it first gave one, and that value. For timing checks, finer than [`wait_until`].
pub async fn wait_for<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> (Instant, T) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return (Instant::now(), found);
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
