//! What goes in (events) and comes out (fired windows).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event to ingest.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Event {
    /// Its id: a number or a string; an id counts once per window.
    pub id: Value,
    /// RFC 3339 text or epoch milliseconds; may be left out with `serve --time ingest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
    /// With a key, windows are per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// With a value, windows carry sum, min and max.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Anything the event carries; it comes back with its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl Event {
    /// An event with an id and a timestamp.
    pub fn new(id: impl Into<Value>, timestamp: impl Into<Value>) -> Event {
        Event {
            id: id.into(),
            timestamp: Some(timestamp.into()),
            ..Event::default()
        }
    }

    /// An event without a timestamp (`serve --time ingest` stamps it).
    pub fn stamped(id: impl Into<Value>) -> Event {
        Event {
            id: id.into(),
            ..Event::default()
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }

    pub fn value(mut self, value: f64) -> Event {
        self.value = Some(value);
        self
    }

    pub fn payload(mut self, payload: impl Into<Value>) -> Event {
        self.payload = Some(payload.into());
        self
    }
}

/// A fired window, as the daemon returns or streams it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Window {
    pub window_id: String,
    pub window_start: String,
    pub window_end: String,
    #[serde(default)]
    pub key: Option<String>,
    pub count: u64,
    /// The events' ids, in admission order.
    pub events: Vec<Value>,
    /// One per id when any event had a payload (`null` for those without).
    #[serde(default)]
    pub payloads: Option<Vec<Value>>,
    #[serde(default)]
    pub sum: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Why it fired: `length`, `time`, `watermark`, `close`, `flush`.
    #[serde(default)]
    pub reason: String,
    /// Its position in its partition's output log.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub partition: Option<u32>,
    /// In a consumer group: how often the group handed it out (1 the first time).
    #[serde(default)]
    pub delivery: Option<u32>,
}
