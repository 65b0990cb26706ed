//! Fuzzes the `/rtc` frame parser (`signaling::wire::parse`) and the SDP/candidate shape checks
//! on whatever it accepts: no input may panic, and an accepted frame keeps its promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signalbox::signaling::wire::{check_candidate, check_sdp, parse, sdp_type, ClientMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = parse(text);
    if let Some(id) = &frame.id {
        assert!(
            id.is_string() || id.is_number(),
            "only string or number ids are echoed"
        );
    }
    match &frame.message {
        Err(e) => {
            // Error texts go back to the client: building them must not panic either.
            let _ = (e.code(), e.to_string());
        }
        Ok(msg) => check(msg),
    }
});

fn check(msg: &ClientMessage) {
    let sdp = |v: &Value| {
        let _ = check_sdp(v, "sdp");
        let _ = sdp_type(v);
    };
    match msg {
        ClientMessage::CallInitiate { sdp: Some(v), .. } => sdp(v),
        ClientMessage::CallAnswer { sdp: v, .. } | ClientMessage::CallSdpUpdate { sdp: v, .. } => {
            sdp(v)
        }
        ClientMessage::IceCandidate { candidate, .. } => {
            let _ = check_candidate(candidate);
        }
        _ => {}
    }
}
