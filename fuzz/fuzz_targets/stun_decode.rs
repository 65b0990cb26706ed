//! Fuzzes the datagram classifier and the STUN decoder of the TURN core, plus every attribute
//! read the core makes on a decoded request: no input may panic, the classifier agrees with
//! the decoder, and what decodes has a STUN header (aligned length, magic cookie).
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
        if let Kind::Stun(total) = kind {
            // RFC 8489 §5: a length that is a multiple of 4, and the magic cookie.
            assert_eq!(total % 4, 0, "a STUN message is 4-byte aligned");
            assert_eq!(data[4..8], [0x21, 0x12, 0xA4, 0x42], "the magic cookie");
            // A well-formed prefix decodes the same with trailing bytes cut off.
            assert!(decode_and_read(&data[..total]));
        }
    }
    let _ = read_answer(data);
});
