//! What the SFU makes of a participant's offer before its session answers it: a participant
//! publishes on the m-lines it opens and receives only on the ones the SFU opens, so a new
//! m-line offered `sendrecv` is taken as `sendonly` (the answer says `recvonly`). Otherwise the
//! answer would promise the participant a track on that m-line that nobody ever sends.

/// `offer` with `a=sendrecv` turned into `a=sendonly` in every media section whose mid
/// `known` does not name (the m-lines the session has negotiated before keep their direction).
pub fn publish_only(offer: &str, known: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(offer.len());
    for section in sections(offer) {
        let is_media = section.starts_with("m=");
        let mid = section
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .map(str::trim);
        let new_line = is_media && mid.is_some_and(|m| !known(m));
        if !new_line {
            out.push_str(section);
            continue;
        }
        for line in section.split_inclusive('\n') {
            let (body, end) = split_end(line);
            if body == "a=sendrecv" {
                out.push_str("a=sendonly");
            } else {
                out.push_str(body);
            }
            out.push_str(end);
        }
    }
    out
}

/// The session part, then each media section (from its `m=` line to the next).
fn sections(sdp: &str) -> Vec<&str> {
    let mut starts = vec![0];
    let mut at = 0;
    for line in sdp.split_inclusive('\n') {
        if at > 0 && line.starts_with("m=") {
            starts.push(at);
        }
        at += line.len();
    }
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

/// A line without and with its line ending.
fn split_end(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\r', '\n']);
    (body, &line[body.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v s\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:s\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn new_m_lines_become_send_only_known_ones_keep_their_direction() {
        let out = publish_only(OFFER, |mid| mid == "s");
        let expected = OFFER
            .replacen("a=mid:a\r\na=sendrecv", "a=mid:a\r\na=sendonly", 1)
            .replacen("a=sendrecv\r\na=mid:v", "a=sendonly\r\na=mid:v", 1);
        assert_eq!(out, expected);
        assert!(out.contains("a=mid:s\r\na=sendrecv"), "{out}");
    }

    #[test]
    fn other_directions_and_line_endings_are_left_alone() {
        let lf = "v=0\nm=audio 9 RTP/AVP 0\na=mid:0\na=recvonly\nm=video 9 RTP/AVP 96\na=mid:1\na=sendrecv\n";
        assert_eq!(
            publish_only(lf, |_| false),
            lf.replace("a=mid:1\na=sendrecv", "a=mid:1\na=sendonly")
        );
        assert_eq!(publish_only("garbage", |_| false), "garbage");
        assert_eq!(publish_only("", |_| false), "");
    }
}
