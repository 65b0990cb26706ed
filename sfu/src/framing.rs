//! RFC 4571 framing for ICE-TCP (RFC 6544): on a TCP connection every STUN, DTLS, RTP and
//! RTCP packet travels as a 16-bit big-endian length followed by that many bytes. This module
//! cuts a received byte stream into packets and frames packets for sending; it owns no socket.

use thiserror::Error;

/// Why a stream cannot be read on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// A frame announced more bytes than a WebRTC packet ever has: not ICE-TCP, or a peer
    /// trying to make us buffer.
    #[error("a frame of {0} bytes is over the limit of {1}")]
    TooLarge(usize, usize),
}

/// Cuts a byte stream into frames no larger than its limit.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    limit: usize,
}

impl Deframer {
    /// A deframer refusing frames over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Deframer {
            buf: Vec::with_capacity(limit + 2),
            limit,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(head) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len > self.limit {
            return Err(FramingError::TooLarge(len, self.limit));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let frame = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Ok(Some(frame))
    }
}

/// `packet` framed for sending; `None` when it does not fit a frame (over 65,535 bytes).
pub fn frame(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(2 + packet.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let packets: Vec<Vec<u8>> = vec![vec![1; 5], vec![], vec![2; 300], vec![3; 1]];
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| frame(p).unwrap_or_default())
            .collect();
        for cut in 1..stream.len() {
            let mut d = Deframer::new(1500);
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                d.push(chunk);
                while let Some(f) = d.next_frame().expect("within the limit") {
                    got.push(f);
                }
            }
            assert_eq!(got, packets, "chunks of {cut}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_bytes_arrive() {
        let mut d = Deframer::new(1500);
        d.push(&[0x05, 0xdd]); // 1501
        assert_eq!(d.next_frame(), Err(FramingError::TooLarge(1501, 1500)));
        let mut d = Deframer::new(1500);
        d.push(&[0x05, 0xdc]); // 1500: waits for the bytes
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn only_packets_up_to_65535_bytes_can_be_framed() {
        assert_eq!(frame(&[7; 3]), Some(vec![0, 3, 7, 7, 7]));
        assert!(frame(&vec![0; 65_535]).is_some());
        assert!(frame(&vec![0; 65_536]).is_none());
    }
}
