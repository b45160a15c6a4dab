//! The DASH manifest (ISO/IEC 23009-1) of a CMAF output: the same init segments and
//! fragments the HLS playlists list, as one `SegmentTemplate` with a `SegmentTimeline` and
//! `$Number$` per representation. Live: a dynamic MPD whose `availabilityStartTime` is the
//! wall-clock time of the first fragment (media time `presentationTimeOffset`), with
//! `UTCTiming` at Ferrocast's `/time`; finished: a static one. Content protection is signalled
//! for CENC (`cenc:default_KID`) and the W3C ClearKey system with its licence URL, which the
//! delivery fills in per playback id ([`LICENCE_URL`]). A key rotation starts a new `Period`
//! (each with its key id and its init segments), as DASH-IF's guidelines have it.

use std::fmt::Write;

use crate::media::cenc::Scheme;

/// Placeholder the delivery replaces with the licence URL of the playback id the MPD is
/// served for (with its token).
pub const LICENCE_URL: &str = "ferrocast:clearkey-licence";
/// Placeholder the delivery replaces with the absolute URL of `/time`.
pub const TIME_URL: &str = "ferrocast:time";
pub const MPD_TYPE: &str = "application/dash+xml";
/// The manifest's name, at the top of the output's prefix.
pub const MANIFEST: &str = "manifest.mpd";

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Video {
        width: u32,
        height: u32,
        frame_rate: Option<f64>,
    },
    Audio,
}

/// One representation: a track's init and fragments under `{id}/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation<'a> {
    pub id: &'a str,
    pub content: Content,
    pub codec: &'a str,
    pub bandwidth: u64,
    pub timescale: u32,
    /// Init segment, under `{id}/`.
    pub init: String,
    /// Number of the first fragment in `timeline`.
    pub start_number: u64,
    /// Decode time and duration of each fragment, in `timescale` units.
    pub timeline: &'a [(u64, u64)],
    /// Media time at `availabilityStartTime` (live) or at the start (finished).
    pub presentation_time_offset: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// Wall clock of `presentation_time_offset`, ms since the Unix epoch.
    pub availability_start_ms: i64,
    pub publish_ms: i64,
    /// The live window players may seek in.
    pub time_shift_buffer_s: f64,
}

/// One key's stretch of the presentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Period<'a> {
    pub id: u64,
    /// Presentation time of its start (0 for the first of a presentation without rotation).
    pub start_s: f64,
    pub kid: [u8; 16],
    /// Other DRM systems (Widevine, PlayReady, FairPlay): system id (UUID) and `pssh` box.
    pub systems: Vec<(String, Vec<u8>)>,
    pub representations: Vec<Representation<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest<'a> {
    /// `None`: a static (finished) presentation.
    pub live: Option<Live>,
    pub max_segment_s: f64,
    pub scheme: Scheme,
    pub periods: Vec<Period<'a>>,
    /// Where the segments are, relative to the manifest (`cmaf/` beside a TS set).
    pub base_url: Option<&'a str>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn iso_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn duration(s: f64) -> String {
    format!("PT{:.3}S", s.max(0.0))
}

/// A key id as the UUID `cenc:default_KID` takes.
pub fn kid_uuid(kid: &[u8; 16]) -> String {
    let h = hex::encode(kid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub fn render(m: &Manifest) -> String {
    let mut o = String::with_capacity(4096);
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    o.push_str(
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" xmlns:cenc=\"urn:mpeg:cenc:2013\" \
         xmlns:dashif=\"https://dashif.org/CPS\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019\"",
    );
    let max_segment = m.max_segment_s.max(1.0);
    match &m.live {
        Some(live) => {
            let _ = write!(
                o,
                " type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
                 minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" \
                 suggestedPresentationDelay=\"{}\"",
                iso_time(live.availability_start_ms),
                iso_time(live.publish_ms),
                duration(max_segment),
                duration(live.time_shift_buffer_s),
                duration(3.0 * max_segment),
            );
        }
        None => {
            // The last period's start and its longest representation.
            let total = m.periods.last().map_or(0.0, |p| {
                p.start_s
                    + p.representations
                        .iter()
                        .map(|r| {
                            r.timeline.iter().map(|t| t.1).sum::<u64>() as f64
                                / f64::from(r.timescale.max(1))
                        })
                        .fold(0.0, f64::max)
            });
            let _ = write!(
                o,
                " type=\"static\" mediaPresentationDuration=\"{}\"",
                duration(total)
            );
        }
    }
    let _ = writeln!(
        o,
        " minBufferTime=\"{}\" maxSegmentDuration=\"{}\">",
        duration(2.0 * max_segment),
        duration(max_segment)
    );
    if let Some(base) = m.base_url {
        let _ = writeln!(o, "  <BaseURL>{}</BaseURL>", escape(base));
    }
    for p in &m.periods {
        period(&mut o, m.scheme, p);
    }
    if m.live.is_some() {
        let _ = writeln!(
            o,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{TIME_URL}\"/>"
        );
    }
    o.push_str("</MPD>\n");
    o
}

fn period(o: &mut String, scheme: Scheme, m: &Period) {
    let _ = writeln!(
        o,
        "  <Period id=\"{}\" start=\"{}\">",
        m.id,
        duration(m.start_s)
    );
    for (i, content) in ["video", "audio"].into_iter().enumerate() {
        let reps: Vec<&Representation> = m
            .representations
            .iter()
            .filter(|r| matches!(r.content, Content::Video { .. }) == (content == "video"))
            .collect();
        if reps.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "    <AdaptationSet id=\"{i}\" contentType=\"{content}\" mimeType=\"{content}/mp4\" \
             segmentAlignment=\"true\" startWithSAP=\"1\">"
        );
        let _ = writeln!(
            o,
            "      <ContentProtection schemeIdUri=\"urn:mpeg:dash:mp4protection:2011\" \
             value=\"{}\" cenc:default_KID=\"{}\"/>",
            String::from_utf8_lossy(&scheme.fourcc()),
            kid_uuid(&m.kid)
        );
        let _ = writeln!(
            o,
            "      <ContentProtection schemeIdUri=\"urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e\" \
             value=\"ClearKey1.0\"><dashif:Laurl>{LICENCE_URL}</dashif:Laurl></ContentProtection>"
        );
        for (system, pssh) in &m.systems {
            use base64::Engine;
            let _ = writeln!(
                o,
                "      <ContentProtection schemeIdUri=\"urn:uuid:{}\"><cenc:pssh>{}</cenc:pssh></ContentProtection>",
                escape(system),
                base64::engine::general_purpose::STANDARD.encode(pssh)
            );
        }
        for r in reps {
            representation(o, r);
        }
        o.push_str("    </AdaptationSet>\n");
    }
    o.push_str("  </Period>\n");
}

fn representation(o: &mut String, r: &Representation) {
    let id = escape(r.id);
    let _ = write!(
        o,
        "      <Representation id=\"{id}\" bandwidth=\"{}\" codecs=\"{}\"",
        r.bandwidth,
        escape(r.codec)
    );
    match &r.content {
        Content::Video {
            width,
            height,
            frame_rate,
        } => {
            let _ = write!(o, " width=\"{width}\" height=\"{height}\"");
            if let Some(rate) = frame_rate.filter(|r| *r > 0.0) {
                let _ = write!(o, " frameRate=\"{}/1000\"", (rate * 1000.0).round() as u64);
            }
        }
        Content::Audio => {
            let _ = write!(o, " audioSamplingRate=\"{}\"", r.timescale);
        }
    }
    o.push_str(">\n");
    let _ = writeln!(
        o,
        "        <SegmentTemplate timescale=\"{}\" presentationTimeOffset=\"{}\" \
         initialization=\"{id}/{}\" media=\"{id}/$Number$.m4s\" startNumber=\"{}\">",
        r.timescale,
        r.presentation_time_offset,
        escape(&r.init),
        r.start_number
    );
    o.push_str("          <SegmentTimeline>");
    let mut i = 0;
    while i < r.timeline.len() {
        let (t, d) = r.timeline[i];
        // Fragments that follow each other with one duration are one `S` with `r`.
        let mut repeat = 0;
        while let Some(&(next_t, next_d)) = r.timeline.get(i + 1 + repeat) {
            if next_d != d || next_t != t + d * (repeat as u64 + 1) {
                break;
            }
            repeat += 1;
        }
        if repeat > 0 {
            let _ = write!(o, "<S t=\"{t}\" d=\"{d}\" r=\"{repeat}\"/>");
        } else {
            let _ = write!(o, "<S t=\"{t}\" d=\"{d}\"/>");
        }
        i += 1 + repeat;
    }
    o.push_str("</SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(live: bool) -> String {
        let video = [
            (900_000, 180_000),
            (1_080_000, 180_000),
            (1_260_000, 176_400),
        ];
        let audio = [(480_000, 96_256), (576_256, 96_256)];
        render(&Manifest {
            live: live.then_some(Live {
                availability_start_ms: 1_765_000_000_000,
                publish_ms: 1_765_000_006_000,
                time_shift_buffer_s: 12.0,
            }),
            max_segment_s: 2.0,
            scheme: Scheme::Cbcs,
            periods: vec![Period {
                id: 0,
                start_s: 0.0,
                kid: [0xab; 16],
                systems: vec![(
                    "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed".into(),
                    b"PSSH".to_vec(),
                )],
                representations: vec![
                    Representation {
                        id: "720p",
                        content: Content::Video {
                            width: 1280,
                            height: 720,
                            frame_rate: Some(29.97),
                        },
                        codec: "avc1.64001f",
                        bandwidth: 3_000_000,
                        timescale: 90_000,
                        init: "init.mp4".into(),
                        start_number: 5,
                        timeline: &video,
                        presentation_time_offset: 900_000,
                    },
                    Representation {
                        id: "audio",
                        content: Content::Audio,
                        codec: "mp4a.40.2",
                        bandwidth: 128_000,
                        timescale: 48_000,
                        init: "init.mp4".into(),
                        start_number: 5,
                        timeline: &audio,
                        presentation_time_offset: 480_000,
                    },
                ],
            }],
            // A finished presentation here stands for a `both` output's, whose manifest
            // lies above its segments.
            base_url: (!live).then_some("cmaf/"),
        })
    }

    #[test]
    fn a_live_manifest_is_dynamic_with_timelines_protection_and_utc_timing() {
        let mpd = manifest(true);
        for part in [
            "type=\"dynamic\" availabilityStartTime=\"2025-12-06T05:46:40.000Z\"",
            "<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"ferrocast:time\"/>",
            "cenc:default_KID=\"abababab-abab-abab-abab-abababababab\"",
            "value=\"cbcs\"",
            "<dashif:Laurl>ferrocast:clearkey-licence</dashif:Laurl>",
            "initialization=\"720p/init.mp4\" media=\"720p/$Number$.m4s\" startNumber=\"5\"",
            "<S t=\"900000\" d=\"180000\" r=\"1\"/><S t=\"1260000\" d=\"176400\"/>",
            "<S t=\"480000\" d=\"96256\" r=\"1\"/>",
            "frameRate=\"29970/1000\"",
            "audioSamplingRate=\"48000\"",
            "<ContentProtection schemeIdUri=\"urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed\"><cenc:pssh>UFNTSA==</cenc:pssh></ContentProtection>",
        ] {
            assert!(mpd.contains(part), "{part} in {mpd}");
        }
        // Well-formed XML that a parser reads back.
        let doc = quick_xml_free_check(&mpd);
        assert_eq!(doc, 0, "{mpd}");
    }

    #[test]
    fn a_finished_manifest_is_static_with_its_duration() {
        let mpd = manifest(false);
        assert!(
            mpd.contains("type=\"static\" mediaPresentationDuration=\"PT5.960S\""),
            "{mpd}"
        );
        assert!(!mpd.contains("UTCTiming") && !mpd.contains("availabilityStartTime"));
        assert!(
            mpd.contains("  <BaseURL>cmaf/</BaseURL>\n  <Period "),
            "{mpd}"
        );
        assert!(!manifest(true).contains("BaseURL"));
    }

    #[test]
    fn a_key_rotation_is_a_new_period_with_its_key_id_and_init_segments() {
        let first = [(900_000u64, 180_000u64), (1_080_000, 180_000)];
        let second = [(1_260_000u64, 180_000u64)];
        let rep = |init: &str, start_number, timeline, pto| Representation {
            id: "720p",
            content: Content::Video {
                width: 1280,
                height: 720,
                frame_rate: None,
            },
            codec: "avc1.64001f",
            bandwidth: 3_000_000,
            timescale: 90_000,
            init: init.into(),
            start_number,
            timeline,
            presentation_time_offset: pto,
        };
        let mpd = render(&Manifest {
            live: None,
            max_segment_s: 2.0,
            scheme: Scheme::Cbcs,
            periods: vec![
                Period {
                    id: 0,
                    start_s: 0.0,
                    kid: [1; 16],
                    systems: vec![],
                    representations: vec![rep("init.mp4", 0, &first[..], 900_000)],
                },
                Period {
                    id: 1,
                    start_s: 4.0,
                    kid: [2; 16],
                    systems: vec![],
                    representations: vec![rep("init-1.mp4", 2, &second[..], 1_260_000)],
                },
            ],
            base_url: None,
        });
        for part in [
            "<Period id=\"0\" start=\"PT0.000S\">",
            "cenc:default_KID=\"01010101-0101-0101-0101-010101010101\"",
            "<Period id=\"1\" start=\"PT4.000S\">",
            "cenc:default_KID=\"02020202-0202-0202-0202-020202020202\"",
            "presentationTimeOffset=\"1260000\" initialization=\"720p/init-1.mp4\" media=\"720p/$Number$.m4s\" startNumber=\"2\"",
            "mediaPresentationDuration=\"PT6.000S\"",
        ] {
            assert!(mpd.contains(part), "{part} in {mpd}");
        }
        assert_eq!(quick_xml_free_check(&mpd), 0, "{mpd}");
    }

    /// Opening tags minus closing tags (self-closing count as both): 0 when balanced.
    fn quick_xml_free_check(xml: &str) -> i64 {
        let mut depth = 0i64;
        for tag in xml.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap();
            if tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            depth += if tag.starts_with('/') { -1 } else { 1 };
        }
        depth
    }
}
