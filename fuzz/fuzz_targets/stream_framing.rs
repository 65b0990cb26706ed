//! Fuzzes the TCP/TLS stream framing (`io::framing::next_frame`): every frame lies inside the
//! buffer and consumes at least its own length, is STUN (unpadded) or ChannelData (padded to a
//! multiple of 4), and splitting a stream does not depend on how the bytes arrive: the first
//! input byte chooses read sizes, the rest is the stream, and the frames found chunk by chunk
//! (as the connection loop reads them) equal those found in the whole buffer at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_turn::testing::{next_frame, Frame, Next};

/// Frames of `buf` in order, and whether the stream turned out invalid.
fn split_whole(buf: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut start = 0;
    loop {
        match next_frame(&buf[start..]) {
            Next::Incomplete => return (frames, false),
            Next::Invalid => return (frames, true),
            Next::Frame(Frame { len, consumed }) => {
                assert!(len <= consumed, "the message fits in what is consumed");
                assert!(consumed >= 4, "every frame makes progress");
                assert!(
                    start + consumed <= buf.len(),
                    "a frame lies inside the buffer"
                );
                assert!(consumed - len < 4, "padding is under 4 bytes");
                match buf[start] >> 6 {
                    0 => assert_eq!(len, consumed, "a STUN message is not padded"),
                    1 => assert_eq!(
                        consumed % 4,
                        0,
                        "ChannelData is padded to 4 (RFC 8656 §12.5)"
                    ),
                    _ => panic!("a frame is STUN or ChannelData"),
                }
                frames.push(buf[start..start + len].to_vec());
                start += consumed;
            }
        }
    }
}

/// The same split the way `io::stream::serve` does it: read a chunk, take every complete
/// frame, move the rest to the front.
fn split_chunked(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        let mut start = 0;
        loop {
            match next_frame(&buf[start..]) {
                Next::Incomplete => break,
                Next::Invalid => return (frames, true),
                Next::Frame(f) => {
                    frames.push(buf[start..start + f.len].to_vec());
                    start += f.consumed;
                }
            }
        }
        buf.drain(..start);
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let whole = split_whole(stream);
    let chunked = split_chunked(stream, usize::from(first % 64) + 1);
    assert_eq!(whole, chunked, "framing depends on read sizes");
});
