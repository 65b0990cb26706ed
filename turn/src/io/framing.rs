//! Splitting a TCP/TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5:
//! each ChannelData is padded to a multiple of 4 bytes on stream transports; STUN messages
//! carry their own length).

use crate::core::message::{classify, Kind, CHANNEL_DATA_HEADER};

/// One complete frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes belonging to the message (what the core sees).
    pub len: usize,
    /// Bytes to consume from the stream (message plus padding).
    pub consumed: usize,
}

/// Outcome of looking at the head of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    /// Need more bytes.
    Incomplete,
    /// Not STUN nor ChannelData: the stream is out of sync and must be closed.
    Invalid,
}

/// Finds the first frame in `buf`.
pub fn next_frame(buf: &[u8]) -> Next {
    if buf.len() < 4 {
        return Next::Incomplete;
    }
    let (len, consumed) = match classify(buf) {
        Kind::Stun(total) => (total, total),
        Kind::ChannelData(_, len) => (
            CHANNEL_DATA_HEADER + len,
            CHANNEL_DATA_HEADER + len.div_ceil(4) * 4,
        ),
        Kind::Garbage => return Next::Invalid,
    };
    if buf.len() < consumed {
        return Next::Incomplete;
    }
    Next::Frame(Frame { len, consumed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stun_and_padded_channel_data() {
        // ChannelData 0x4000 with 5 bytes, padded to 8 → 12 bytes on the wire.
        let mut s = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        // A STUN header with no attributes (20 bytes).
        s.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        s.extend_from_slice(&[7; 12]);
        assert_eq!(
            next_frame(&s),
            Next::Frame(Frame {
                len: 9,
                consumed: 12
            })
        );
        assert_eq!(
            next_frame(&s[12..]),
            Next::Frame(Frame {
                len: 20,
                consumed: 20
            })
        );
        assert_eq!(next_frame(&s[..11]), Next::Incomplete);
        assert_eq!(next_frame(&s[12..30]), Next::Incomplete);
        assert_eq!(next_frame(&[0xFF, 0, 0, 0]), Next::Invalid);
        assert_eq!(next_frame(&[0x40]), Next::Incomplete);
    }
}
