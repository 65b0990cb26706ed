//! Fuzzes the datagram classifier and the STUN decoder of the TURN core, plus every attribute
//! read the core makes on a decoded request: no input may panic, and the classifier agrees
//! with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_turn::testing::{classify, decode_and_read, read_answer, Kind};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    match kind {
        Kind::ChannelData(channel, _) => {
            assert_eq!(channel >> 14, 1, "ChannelData starts with bits 01");
        }
        Kind::Stun(total) => assert!(total >= 20, "a STUN message has a 20-byte header"),
        Kind::Garbage => {}
    }
    let decoded = decode_and_read(data);
    if decoded {
        assert!(
            matches!(kind, Kind::Stun(total) if total <= data.len()),
            "what decodes as STUN is classified as STUN: {kind:?}"
        );
        // A well-formed prefix decodes the same with trailing bytes cut off.
        if let Kind::Stun(total) = kind {
            assert!(decode_and_read(&data[..total]));
        }
    }
    let _ = read_answer(data);
});
