//! A server-to-client event, independent of transport: a kind (the `/rtc` `type`, e.g.
//! `call-initiate`) and its fields. `/rtc` writes it as JSON with `type`; the Socket.IO adapter
//! maps it to seed 000's `webrtc:*` events.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub body: Map<String, Value>,
}

impl Event {
    /// An event from a JSON object literal (non-objects give an empty body).
    pub fn new(kind: &'static str, body: Value) -> Event {
        let body = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Event { kind, body }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }

    /// The `/rtc` text frame.
    pub fn to_rtc_json(&self) -> String {
        let mut m = Map::with_capacity(self.body.len() + 1);
        m.insert("type".into(), Value::String(self.kind.into()));
        for (k, v) in &self.body {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rtc_json_carries_the_type() {
        let e = Event::new("call-accept", json!({"callId": "c", "from": "bob"}));
        let v: Value = serde_json::from_str(&e.to_rtc_json()).expect("json");
        assert_eq!(
            v,
            json!({"type": "call-accept", "callId": "c", "from": "bob"})
        );
    }
}
