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

    /// The `/rtc` text frame: `type` and the body's fields.
    pub fn to_rtc_json(&self) -> String {
        rtc_frame(self.kind, &self.body, None)
    }
}

/// Writes a `/rtc` frame `{"type": kind, …body, "id": id}` straight from its parts, without
/// building a new map: this runs for every forwarded message. `kind` replaces a `type` in
/// `body`, and `id`, when given, an `id`.
pub fn rtc_frame(kind: &str, body: &Map<String, Value>, id: Option<&Value>) -> String {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"type\":");
    write_json(&mut out, kind);
    for (k, v) in body {
        if k == "type" || (id.is_some() && k == "id") {
            continue;
        }
        out.push(b',');
        write_json(&mut out, k);
        out.push(b':');
        write_json(&mut out, v);
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        write_json(&mut out, id);
    }
    out.push(b'}');
    // serde_json writes UTF-8 only, so this never falls back.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing strings, maps and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rtc_frame_puts_type_first_and_the_id_last() {
        let body = json!({"callId": "c", "id": "old", "sdp": {"type": "offer", "sdp": "v=0\r\n"}});
        let Value::Object(body) = body else {
            unreachable!("an object literal")
        };
        let text = rtc_frame("ack", &body, Some(&json!(7)));
        assert!(text.starts_with(r#"{"type":"ack","#), "{text}");
        assert!(text.ends_with(r#","id":7}"#), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v,
            json!({"type": "ack", "id": 7, "callId": "c", "sdp": {"type": "offer", "sdp": "v=0\r\n"}})
        );
        let own_type = Event::new("x", json!({"type": "y", "n": 1}));
        let v: Value = serde_json::from_str(&own_type.to_rtc_json()).expect("json");
        assert_eq!(v, json!({"type": "x", "n": 1}));
        let no_id = rtc_frame("ack", &Map::new(), None);
        assert_eq!(no_id, r#"{"type":"ack"}"#);
    }

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
