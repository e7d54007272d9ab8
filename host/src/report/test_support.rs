//! Helpers shared by the report tests: a valid record to start from, and
//! its verdict.

use serde_json::{Value, json};

use super::{Report, ReportError};

/// A minimal valid record of the type `emoji`.
pub fn record(emoji: &str) -> Value {
    json!({
        "discovery_type": emoji,
        "system_name": "Hilbert Dimension",
        "location": "planet:Getre Beta",
        "description": "Found something.",
        "username": "Explorer#1234",
    })
}

pub fn with(mut value: Value, key: &str, v: Value) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.insert(key.to_owned(), v);
    }
    value
}

pub fn without(mut value: Value, key: &str) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.remove(key);
    }
    value
}

pub fn ok(value: &Value) -> Report {
    match Report::from_json(value) {
        Ok(report) => report,
        Err(e) => panic!("rejected: {e}\n{value:#}"),
    }
}

pub fn err(value: &Value) -> ReportError {
    match Report::from_json(value) {
        Ok(report) => panic!("accepted: {report:?}"),
        Err(e) => e,
    }
}

pub fn msg(value: &Value) -> String {
    err(value).to_string()
}
