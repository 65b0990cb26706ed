//! The `/rtc` client messages (seed 001 plus rooms): parsing of a JSON text frame into a typed
//! [`ClientMessage`], with errors that name the field, and checks of SDP and candidate shapes.

use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::signaling::call::CallType;

/// What a client may send. Every variant may also carry an `id` (see [`Frame`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ClientMessage {
    CallInitiate {
        to: String,
        call_type: Option<CallType>,
        sdp: Option<Value>,
        room_name: Option<String>,
        call_id: Option<String>,
    },
    CallAccept {
        call_id: String,
    },
    CallReject {
        call_id: String,
        reason: Option<String>,
    },
    CallAnswer {
        call_id: String,
        sdp: Value,
    },
    IceCandidate {
        call_id: String,
        /// `null` marks the end of candidates, but the field must be present.
        candidate: Value,
        to: Option<String>,
    },
    CallSdpUpdate {
        call_id: String,
        sdp: Value,
        to: Option<String>,
    },
    CallHangup {
        call_id: String,
    },
    MediaState {
        call_id: String,
        audio: Option<bool>,
        video: Option<bool>,
        screen: Option<bool>,
        camera: Option<String>,
    },
    CallStats {
        call_id: String,
        stats: Value,
    },
    Ping {},
    RoomJoin {
        room_id: String,
    },
    RoomLeave {
        room_id: String,
    },
}

/// Every message type a client may send.
pub const TYPES: &[&str] = &[
    "call-initiate",
    "call-accept",
    "call-reject",
    "call-answer",
    "ice-candidate",
    "call-sdp-update",
    "call-hangup",
    "media-state",
    "call-stats",
    "ping",
    "room-join",
    "room-leave",
];

/// A parsed frame: the request id to echo (if any) and the message or why it was refused.
#[derive(Debug)]
pub struct Frame {
    pub id: Option<Value>,
    pub message: Result<ClientMessage, Error>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Frame {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Frame {
                id: None,
                message: Err(Error::invalid(
                    "invalid_json",
                    format!("the frame is not JSON: {e}"),
                )),
            }
        }
    };
    let Value::Object(map) = &value else {
        return Frame {
            id: None,
            message: Err(Error::invalid(
                "invalid_message",
                "a frame must be a JSON object",
            )),
        };
    };
    let id = map
        .get("id")
        .filter(|v| v.is_string() || v.is_number())
        .cloned();
    let message = match map.get("type") {
        None => Err(Error::invalid("invalid_message", "type: missing")),
        Some(Value::String(t)) if !TYPES.contains(&t.as_str()) => Err(Error::invalid(
            "unknown_type",
            format!("type: `{t}` is not a known message type"),
        )),
        Some(Value::String(t)) => {
            // Externally tagged form `{"<type>": {fields}}`, so the error path names the field.
            let mut fields = map.clone();
            fields.remove("type");
            fields.remove("id");
            let tagged = Value::Object([(t.clone(), Value::Object(fields))].into_iter().collect());
            serde_path_to_error::deserialize(&tagged).map_err(|e| {
                let path = e.path().to_string();
                let field = path.split_once('.').map(|(_, f)| f).unwrap_or("");
                let inner = e.into_inner();
                if field.is_empty() || field == "?" {
                    Error::invalid("invalid_field", inner.to_string())
                } else {
                    Error::invalid("invalid_field", format!("{field}: {inner}"))
                }
            })
        }
        Some(_) => Err(Error::invalid("invalid_message", "type: must be a string")),
    };
    Frame { id, message }
}

/// Checks an `RTCSessionDescriptionInit`: `{type: offer|answer|pranswer|rollback, sdp: string}`.
pub fn check_sdp(sdp: &Value, field: &str) -> Result<(), Error> {
    let kind = sdp.get("type").and_then(Value::as_str);
    let ok_type = matches!(kind, Some("offer" | "answer" | "pranswer" | "rollback"));
    let ok_sdp = kind == Some("rollback") || sdp.get("sdp").is_some_and(Value::is_string);
    if ok_type && ok_sdp {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_field",
            format!("{field}: must be a session description {{type: offer|answer|pranswer|rollback, sdp: string}}"),
        ))
    }
}

/// The SDP's type (`offer`, `answer`, …).
pub fn sdp_type(sdp: &Value) -> &str {
    sdp.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Checks an `RTCIceCandidateInit` (an object with a string `candidate`) or `null`.
pub fn check_candidate(c: &Value) -> Result<(), Error> {
    match c {
        Value::Null => Ok(()),
        Value::Object(m) if m.get("candidate").is_some_and(Value::is_string) => Ok(()),
        _ => Err(Error::invalid(
            "invalid_field",
            "candidate: must be an RTCIceCandidateInit object or null",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_type_with_its_id() {
        let f = parse(
            r#"{"type":"call-initiate","id":7,"to":"bob","callType":"audio","sdp":{"type":"offer","sdp":"v=0"}}"#,
        );
        assert_eq!(f.id, Some(json!(7)));
        match f.message.expect("valid") {
            ClientMessage::CallInitiate {
                to, call_type, sdp, ..
            } => {
                assert_eq!(to, "bob");
                assert_eq!(call_type, Some(CallType::Audio));
                assert!(sdp.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(r#"{"type":"ping"}"#).message.expect("ping"),
            ClientMessage::Ping {}
        );
        let f = parse(r#"{"type":"ice-candidate","callId":"c","candidate":null}"#);
        assert!(matches!(
            f.message,
            Ok(ClientMessage::IceCandidate {
                candidate: Value::Null,
                ..
            })
        ));
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let code = |t: &str| parse(t).message.expect_err("invalid").code();
        assert_eq!(code("nope"), "invalid_json");
        assert_eq!(code("[1]"), "invalid_message");
        assert_eq!(code(r#"{"to":"bob"}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"call-teleport"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":5}"#), "invalid_message");
        let err = parse(r#"{"type":"call-accept","id":"a1"}"#);
        assert_eq!(
            err.id,
            Some(json!("a1")),
            "the id is echoed even when the message is refused"
        );
        assert!(err
            .message
            .expect_err("missing")
            .to_string()
            .contains("callId"));
        let err = parse(r#"{"type":"call-initiate","to":42}"#)
            .message
            .expect_err("type");
        assert!(err.to_string().starts_with("to:"), "{err}");
        let err = parse(r#"{"type":"ice-candidate","callId":"c"}"#)
            .message
            .expect_err("missing candidate");
        assert!(err.to_string().contains("candidate"), "{err}");
    }

    #[test]
    fn sdp_and_candidates_are_checked() {
        assert!(check_sdp(&json!({"type": "offer", "sdp": "v=0"}), "sdp").is_ok());
        assert!(check_sdp(&json!({"type": "rollback"}), "sdp").is_ok());
        assert!(check_sdp(&json!({"type": "offer"}), "sdp").is_err());
        assert!(check_sdp(&json!("v=0"), "sdp").is_err());
        assert!(
            check_candidate(&json!({"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}))
                .is_ok()
        );
        assert!(check_candidate(&Value::Null).is_ok());
        assert!(check_candidate(&json!(5)).is_err());
    }
}
