//! Helpers shared by the known-answer tests: loading one JSON vector file per source.

#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helper: a bad vector file must abort the test"
)]

use serde_json::Value;

/// Loads `tests/vectors/<name>` and checks that it names its source.
pub(crate) fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        json["source"].as_str().is_some_and(|s| !s.is_empty()),
        "{path} must name its source"
    );
    json
}

/// Decodes the hex string at `v` (panics with the value's name if absent or malformed).
pub(crate) fn hex(v: &Value) -> Vec<u8> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    ::hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}
