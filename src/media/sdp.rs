//! WHIP offers: checked and narrowed before the WebRTC stack answers them. Each media section
//! keeps exactly one codec Ferrocast takes (the publisher's first choice among H.264 with
//! packetization-mode 1 and VP8 for video, Opus for audio), so the answer names one codec per
//! section and the pipeline knows what it will receive before the first packet.

/// A codec kept in an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// `H264`, `VP8` or `OPUS`.
    pub name: String,
    pub payload_type: u8,
    /// Its retransmission (RTX, RFC 4588) payload type, where the offer has one: kept so
    /// that lost packets are resent (NACK) on their own stream.
    pub rtx_payload_type: Option<u8>,
}

/// An offer narrowed to what Ferrocast takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub sdp: String,
    pub video: Option<Codec>,
    pub audio: Option<Codec>,
    /// `video` / `audio`, in m-line order.
    pub mlines: Vec<String>,
}

/// Video codecs a WHIP publisher may send.
pub const WHIP_VIDEO: &[&str] = &["H264", "VP8"];
/// Video codecs a WHEP viewer may receive: the broadcast's H.264, or a WebRTC publisher's
/// VP8, copied (a viewer's offer is narrowed again to the one its stream has).
pub const WHEP_VIDEO: &[&str] = &["H264", "VP8"];

/// Why an offer was refused (shown to the publisher).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("not an SDP offer: {0}")]
    Malformed(String),
    #[error("{0}")]
    Unsupported(String),
}

struct Section<'a> {
    lines: Vec<&'a str>,
}

fn rtpmap(line: &str) -> Option<(u8, String)> {
    let rest = line.strip_prefix("a=rtpmap:")?;
    let (pt, enc) = rest.split_once(' ')?;
    Some((pt.parse().ok()?, enc.trim().to_string()))
}

/// The payload type an attribute line is about (`a=rtpmap:96 …`, `a=fmtp:96 …`, `a=rtcp-fb:96 …`).
fn attribute_pt(line: &str) -> Option<u8> {
    for prefix in ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.split(' ').next()?.parse().ok();
        }
    }
    None
}

/// Narrows a WHIP offer; see the module docs.
pub fn prepare_offer(offer: &str, video_codecs: &[&str]) -> Result<Offer, OfferError> {
    let lines: Vec<&str> = offer
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.first() != Some(&"v=0") {
        return Err(OfferError::Malformed("it must start with v=0".into()));
    }
    if let Some(bad) = lines
        .iter()
        .find(|l| l.len() < 2 || l.as_bytes()[1] != b'=')
    {
        return Err(OfferError::Malformed(format!(
            "line {bad:?} is not TYPE=VALUE"
        )));
    }
    let mut session: Vec<&str> = Vec::new();
    let mut sections: Vec<Section> = Vec::new();
    for line in &lines {
        if line.starts_with("m=") {
            sections.push(Section { lines: vec![line] });
        } else if let Some(s) = sections.last_mut() {
            s.lines.push(line);
        } else {
            session.push(line);
        }
    }
    if sections.is_empty() {
        return Err(OfferError::Malformed("it has no media (m=) section".into()));
    }
    if sections.len() > 2 {
        return Err(OfferError::Unsupported(
            "send at most one video and one audio track".into(),
        ));
    }
    let mut out: Vec<String> = session.iter().map(|l| l.to_string()).collect();
    let (mut video, mut audio) = (None, None);
    let mut mlines = Vec::new();
    for section in &sections {
        let m: Vec<&str> = section.lines[0][2..].split(' ').collect();
        if m.len() < 4 {
            return Err(OfferError::Malformed(format!(
                "media line {:?} is incomplete",
                section.lines[0]
            )));
        }
        let kind = m[0];
        let offered: Vec<u8> = m[3..].iter().filter_map(|p| p.parse().ok()).collect();
        let maps: Vec<(u8, String)> = section.lines.iter().filter_map(|l| rtpmap(l)).collect();
        let fmtp = |pt: u8| {
            section
                .lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))
                .unwrap_or("")
        };
        let names: Vec<String> = offered
            .iter()
            .filter_map(|pt| maps.iter().find(|(p, _)| p == pt))
            .map(|(_, e)| e.split('/').next().unwrap_or("").to_string())
            .collect();
        let chosen = offered.iter().find_map(|pt| {
            let (_, enc) = maps.iter().find(|(p, _)| p == pt)?;
            let enc = enc.to_ascii_uppercase();
            let ok = match kind {
                "video" => {
                    (enc == "VP8/90000" && video_codecs.contains(&"VP8"))
                        || (enc == "H264/90000"
                            && video_codecs.contains(&"H264")
                            && fmtp(*pt)
                                .split(';')
                                .any(|p| p.trim() == "packetization-mode=1"))
                }
                "audio" => enc.starts_with("OPUS/48000"),
                _ => false,
            };
            ok.then(|| Codec {
                name: enc.split('/').next().unwrap_or("").to_string(),
                payload_type: *pt,
                rtx_payload_type: None,
            })
        });
        let Some(mut codec) = chosen else {
            let wanted = match kind {
                "video" if video_codecs.contains(&"VP8") => "H.264 (packetization-mode=1) or VP8",
                "video" => "H.264 (packetization-mode=1)",
                "audio" => "Opus",
                _ => "audio or video",
            };
            return Err(OfferError::Unsupported(format!(
                "{kind}: none of the offered codecs ({}) is supported; send {wanted}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let slot = if kind == "video" {
            &mut video
        } else {
            &mut audio
        };
        if slot.is_some() {
            return Err(OfferError::Unsupported(format!(
                "send at most one {kind} track"
            )));
        }
        codec.rtx_payload_type = offered.iter().copied().find(|pt| {
            maps.iter()
                .any(|(p, e)| p == pt && e.to_ascii_lowercase().starts_with("rtx/"))
                && fmtp(*pt)
                    .split(';')
                    .any(|p| p.trim() == format!("apt={}", codec.payload_type))
        });
        let kept = |pt: u8| pt == codec.payload_type || Some(pt) == codec.rtx_payload_type;
        let payload_types = std::iter::once(codec.payload_type)
            .chain(codec.rtx_payload_type)
            .map(|pt| pt.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        out.push(format!("m={} {} {} {payload_types}", m[0], m[1], m[2]));
        for line in &section.lines[1..] {
            match attribute_pt(line) {
                Some(pt) if !kept(pt) => {}
                _ => out.push(line.to_string()),
            }
        }
        *slot = Some(codec);
        mlines.push(kind.to_string());
    }
    Ok(Offer {
        sdp: out.join("\r\n") + "\r\n",
        video,
        audio,
        mlines,
    })
}

/// An answer whose host candidates carry the server's public addresses instead of its own
/// (a server behind 1:1 NAT): each host candidate once per public address, same port.
pub fn with_public_ips(answer: &str, public_ips: &[String]) -> String {
    if public_ips.is_empty() {
        return answer.to_string();
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let is_host = line.starts_with("a=candidate:")
            && fields.len() >= 8
            && fields[6] == "typ"
            && fields[7] == "host";
        if !is_host {
            out.push(line.to_string());
            continue;
        }
        for ip in public_ips {
            let mut f = fields.clone();
            f[4] = ip;
            if seen.insert((f[2].to_ascii_uppercase(), ip.clone(), f[5].to_string())) {
                out.push(f.join(" "));
            }
        }
    }
    out.join("\r\n") + "\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a Chromium 156 offer (fake camera and microphone).
    const CHROME: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:45 AV1/90000\r\na=ssrc:1 cname:x\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n";

    #[test]
    fn keeps_the_first_supported_codec_of_each_section() {
        let o = prepare_offer(CHROME, WHIP_VIDEO).unwrap();
        assert_eq!(o.video.as_ref().unwrap().name, "VP8");
        assert_eq!(o.audio.as_ref().unwrap().payload_type, 111);
        assert!(
            o.sdp.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{}",
            o.sdp
        );
        assert!(o.sdp.contains("a=rtcp-fb:96 nack pli\r\n"));
        // Its retransmission stream stays (NACK), the other codecs go.
        assert_eq!(o.video.as_ref().unwrap().rtx_payload_type, Some(97));
        assert!(
            o.sdp
                .contains("a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n")
        );
        assert!(!o.sdp.contains("H264") && !o.sdp.contains("AV1"));
        assert!(
            o.sdp.contains("a=ssrc:1 cname:x\r\n"),
            "other attributes stay"
        );
        assert!(o.sdp.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(o.sdp.contains("a=group:BUNDLE 0 1\r\n"));
    }

    #[test]
    fn h264_needs_packetization_mode_1() {
        let h264_first = CHROME.replace("SAVPF 96 97 102 103 45", "SAVPF 103 102 96 97 45");
        let o = prepare_offer(&h264_first, WHIP_VIDEO).unwrap();
        assert_eq!(
            o.video,
            Some(Codec {
                name: "H264".into(),
                payload_type: 102,
                rtx_payload_type: None,
            })
        );
        assert!(!o.sdp.contains("rtx"), "97 is VP8's retransmission stream");
        assert!(o.sdp.contains("packetization-mode=1") && !o.sdp.contains("packetization-mode=0"));
        assert_eq!(o.mlines, ["video", "audio"]);
        // A viewer (WHEP) of an H.264 broadcast gets H.264 even where it prefers VP8.
        let o = prepare_offer(CHROME, &["H264"]).unwrap();
        assert_eq!(o.video.unwrap().payload_type, 102);
    }

    #[test]
    fn host_candidates_take_the_public_address() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=candidate:1 1 UDP 2015363327 10.0.0.5 40123 typ host\r\n\
a=candidate:2 1 UDP 2015363326 172.17.0.2 40123 typ host\r\n\
a=candidate:3 1 UDP 1677729535 198.51.100.1 40999 typ srflx raddr 10.0.0.5 rport 40123\r\n";
        let out = with_public_ips(answer, &["203.0.113.9".to_string()]);
        assert!(
            out.contains("a=candidate:1 1 UDP 2015363327 203.0.113.9 40123 typ host\r\n"),
            "{out}"
        );
        assert!(
            !out.contains("10.0.0.5 40123 typ host") && !out.contains("172.17.0.2"),
            "{out}"
        );
        assert_eq!(
            out.matches("203.0.113.9").count(),
            1,
            "one per address and port: {out}"
        );
        assert!(out.contains("typ srflx"), "other candidates stay");
        assert_eq!(with_public_ips(answer, &[]), answer);
    }

    #[test]
    fn refusals_say_why() {
        let av1_only = CHROME.replace("SAVPF 96 97 102 103 45", "SAVPF 45");
        let e = prepare_offer(&av1_only, WHIP_VIDEO)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("video") && e.contains("AV1") && e.contains("VP8"),
            "{e}"
        );
        assert!(matches!(
            prepare_offer("hello", WHIP_VIDEO),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(
            prepare_offer("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", WHIP_VIDEO),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(
            prepare_offer("v=0\r\nthis is not sdp\r\n", WHIP_VIDEO),
            Err(OfferError::Malformed(_))
        ));
    }
}
