//! Subtitles: SRT or WebVTT in, validated WebVTT out, and the HLS playlists that make players
//! offer the track (a one-segment subtitle playlist and a SUBTITLES group in the master).

use crate::media::webvtt;
pub use crate::media::webvtt::Cue;

/// Why a subtitle file was refused, with the 1-based line it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SubtitleError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> SubtitleError {
    SubtitleError {
        line,
        message: message.into(),
    }
}

/// Hours a cue time may have at most.
const MAX_HOURS: u64 = 1000;

/// `HH:MM:SS,mmm` (SRT) or `[HH:]MM:SS.mmm` (WebVTT) in milliseconds.
fn parse_time(s: &str, line: usize) -> Result<u64, SubtitleError> {
    let bad = || err(line, format!("{s:?} is not a timestamp like 00:01:02.500"));
    let (clock, millis) = s.trim().rsplit_once(['.', ',']).ok_or_else(bad)?;
    if millis.len() != 3 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (h, m, sec) = match nums.as_slice() {
        [m, s] => (0, *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad()),
    };
    if m > 59 || sec > 59 {
        return Err(bad());
    }
    // Hours are digits of any length in both formats: far beyond any video is refused
    // rather than overflowing.
    if h > MAX_HOURS {
        return Err(err(line, format!("{s:?} is more than {MAX_HOURS} hours")));
    }
    Ok(((h * 60 + m) * 60 + sec) * 1000 + millis.parse::<u64>().map_err(|_| bad())?)
}

/// Parses SRT or WebVTT (told apart by the `WEBVTT` header) into checked cues: every cue
/// ends after it starts, and cues start in order.
pub fn parse(text: &str) -> Result<Vec<Cue>, SubtitleError> {
    let text = text.trim_start_matches('\u{feff}');
    let lines: Vec<&str> = text.lines().collect();
    let webvtt = lines
        .first()
        .is_some_and(|l| l.trim_end().starts_with("WEBVTT"));
    let mut cues = Vec::new();
    let mut i = 0;
    if webvtt {
        // The header block (WEBVTT and lines such as X-TIMESTAMP-MAP) ends at a blank line.
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
    }
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        // WebVTT blocks that are not cues.
        if webvtt
            && ["NOTE", "STYLE", "REGION"]
                .iter()
                .any(|k| lines[i].starts_with(k))
        {
            while i < lines.len() && !lines[i].trim().is_empty() {
                i += 1;
            }
            continue;
        }
        // An identifier line (SRT counter, optional WebVTT id) precedes the timing line.
        if !lines[i].contains("-->") {
            if !webvtt && lines[i].trim().parse::<u64>().is_err() {
                return Err(err(i + 1, "expected a cue number"));
            }
            i += 1;
        }
        let Some(timing) = lines.get(i) else {
            return Err(err(i + 1, "file ends before the cue's timing line"));
        };
        let (a, b) = timing.split_once("-->").ok_or_else(|| {
            err(
                i + 1,
                "expected a timing line like 00:00:01,000 --> 00:00:04,000",
            )
        })?;
        let start_ms = parse_time(a, i + 1)?;
        // WebVTT settings may follow the end time.
        let end_ms = parse_time(b.split_whitespace().next().unwrap_or(""), i + 1)?;
        if end_ms <= start_ms {
            return Err(err(i + 1, "the cue ends before it starts"));
        }
        if let Some(prev) = cues.last().map(|c: &Cue| c.start_ms)
            && start_ms < prev
        {
            return Err(err(i + 1, "cues are out of order"));
        }
        let timing_line = i;
        i += 1;
        let mut body = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            body.push(lines[i].trim_end());
            i += 1;
        }
        if body.is_empty() {
            return Err(err(timing_line + 2, "the cue has no text"));
        }
        cues.push(Cue {
            start_ms,
            end_ms,
            text: body.join("\n"),
        });
    }
    if cues.is_empty() {
        return Err(err(1, "no cues found"));
    }
    Ok(cues)
}

/// The cues as a WebVTT file. The timestamp map ties cue times to the MPEG-TS clock the
/// segments start at, as HLS requires for WebVTT alongside TS.
pub fn to_webvtt(cues: &[Cue]) -> String {
    webvtt::write(&["X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"], cues)
}

/// A VOD subtitle playlist: the whole track as one segment of `duration_s`.
pub fn subtitle_playlist(vtt_uri: &str, duration_s: f64) -> String {
    let target = duration_s.ceil().max(1.0) as u64;
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{duration_s:.3},\n{vtt_uri}\n#EXT-X-ENDLIST\n"
    )
}

/// A subtitle track listed in the master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub language: String,
    pub name: String,
    pub uri: String,
}

/// Characters a track's name may hold at most.
pub const NAME_MAX: usize = 64;

/// A label players show for a track: 1 to [`NAME_MAX`] characters, none of them a control
/// character or a `"` (an RFC 8216 quoted-string holds neither), so it stays one attribute.
pub fn check_name(name: &str) -> Result<&str, &'static str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err("name must be 1 to 64 characters");
    }
    if name.chars().any(|c| c.is_control() || c == '"') {
        return Err("name must not hold quotes, line breaks or other control characters");
    }
    Ok(name)
}

/// A BCP 47 language tag's shape: subtags of 1 to 8 letters or digits joined by `-`, the
/// first 2 to 8 letters (`en`, `pt-BR`, `zh-Hant-TW`), 35 characters at most.
pub fn check_language(tag: &str) -> Result<&str, &'static str> {
    const BAD: &str = "language must be a code like en or pt-BR";
    let tag = tag.trim();
    let mut subtags = tag.split('-');
    let first = subtags.next().unwrap_or_default();
    let first_ok = (2..=8).contains(&first.len()) && first.chars().all(|c| c.is_ascii_alphabetic());
    let rest_ok =
        subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if tag.len() > 35 || !first_ok || !rest_ok {
        return Err(BAD);
    }
    Ok(tag)
}

/// A stored master playlist that does not parse (it was not written by this server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("master playlist: {0}")]
pub struct BadMaster(String);

/// The master playlist with a `SUBTITLES` group of `tracks`, referenced by every variant.
pub fn master_with_subtitles(master: &str, tracks: &[Track]) -> Result<String, BadMaster> {
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes())
        .map_err(|e| BadMaster(format!("{e:?}")))?;
    let mut playlist = parsed;
    playlist
        .alternatives
        .retain(|a| a.media_type != m3u8_rs::AlternativeMediaType::Subtitles);
    for (n, t) in tracks.iter().enumerate() {
        // Checked when added; a track stored before that check is left out, not written.
        if check_name(&t.name).is_err() || check_language(&t.language).is_err() {
            continue;
        }
        playlist.alternatives.push(m3u8_rs::AlternativeMedia {
            media_type: m3u8_rs::AlternativeMediaType::Subtitles,
            uri: Some(t.uri.clone()),
            group_id: "subs".into(),
            language: Some(t.language.clone()),
            name: t.name.clone(),
            default: n == 0,
            autoselect: true,
            ..Default::default()
        });
    }
    for v in &mut playlist.variants {
        v.subtitles = (!tracks.is_empty()).then(|| "subs".to_string());
    }
    let mut out = Vec::new();
    playlist
        .write_to(&mut out)
        .expect("writing to a Vec cannot fail");
    Ok(String::from_utf8(out).expect("m3u8-rs writes UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRT: &str =
        "1\n00:00:01,000 --> 00:00:03,500\nHello\n\n2\n00:00:04,000 --> 00:00:06,000\nTwo\nlines\n";

    #[test]
    fn srt_becomes_webvtt() {
        let cues = parse(SRT).unwrap();
        assert_eq!(cues.len(), 2);
        assert_eq!((cues[0].start_ms, cues[0].end_ms), (1000, 3500));
        assert_eq!(cues[1].text, "Two\nlines");
        let vtt = to_webvtt(&cues);
        assert!(vtt.starts_with("WEBVTT\n"));
        assert!(vtt.contains("00:00:01.000 --> 00:00:03.500\nHello\n"));
        // Our own output parses back the same.
        assert_eq!(parse(&vtt).unwrap(), cues);
    }

    #[test]
    fn webvtt_with_notes_ids_and_settings_parses() {
        let vtt = "WEBVTT\n\nNOTE made by hand\n\nintro\n01:02.000 --> 01:03.000 align:start\nHi\n";
        let cues = parse(vtt).unwrap();
        assert_eq!(
            (cues[0].start_ms, cues[0].end_ms, cues[0].text.as_str()),
            (62_000, 63_000, "Hi")
        );
    }

    #[test]
    fn an_hour_count_beyond_any_video_is_refused_not_overflowed() {
        let huge = "1\n99999999999999999:00:00,000 --> 99999999999999999:00:01,000\nHi\n";
        let e = parse(huge).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("more than 1000 hours"), "{e}");
        assert!(parse("1\n999:00:00,000 --> 999:00:01,000\nHi\n").is_ok());
    }

    #[test]
    fn names_and_languages_stay_one_attribute() {
        assert_eq!(check_name(" English "), Ok("English"));
        assert_eq!(check_name("Français (CC)"), Ok("Français (CC)"));
        for bad in [
            "",
            "a\nhttps://evil.example/b.m3u8\n#",
            "a\",URI=\"x",
            &"n".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["en", "pt-BR", "zh-Hant-TW", "es-419"] {
            assert_eq!(check_language(good), Ok(good));
        }
        for bad in [
            "",
            "e",
            "en-",
            "-en",
            "en_US",
            "en\nx",
            "1en",
            "en-toolongsubtag",
        ] {
            assert!(check_language(bad).is_err(), "{bad:?}");
        }
        // A track stored before the checks is left out of the master, not written into it.
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n";
        let evil = Track {
            language: "en".into(),
            name: "a\nhttps://evil.example/b.m3u8\n#".into(),
            uri: "subtitles/en.m3u8".into(),
        };
        let out = master_with_subtitles(master, &[evil]).unwrap();
        assert!(!out.contains("evil"), "{out}");
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).count(),
            1,
            "{out}"
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let backwards =
            "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:05,000 --> 00:00:03,000\nbad\n";
        assert_eq!(parse(backwards).unwrap_err().line, 6);
        assert!(
            parse(backwards)
                .unwrap_err()
                .to_string()
                .contains("ends before it starts")
        );
        let garbled = "1\n00:00:01,000 -> 00:00:02,000\nx\n";
        assert_eq!(parse(garbled).unwrap_err().line, 2);
        assert_eq!(
            parse("1\n00:61:01,000 --> 00:00:02,000\nx\n")
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(parse("").unwrap_err().to_string(), "line 1: no cues found");
        let out_of_order =
            "1\n00:00:05,000 --> 00:00:06,000\na\n\n2\n00:00:01,000 --> 00:00:02,000\nb\n";
        assert_eq!(parse(out_of_order).unwrap_err().line, 6);
        assert_eq!(
            parse("1\n00:00:01,000 --> 00:00:02,000\n")
                .unwrap_err()
                .line,
            3
        );
    }

    #[test]
    fn the_master_playlist_gains_a_subtitles_group() {
        let master = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=1000,RESOLUTION=640x360\n360p/index.m3u8\n";
        let track = Track {
            language: "en".into(),
            name: "English".into(),
            uri: "subtitles/en.m3u8".into(),
        };
        let out = master_with_subtitles(master, &[track]).unwrap();
        let m = m3u8_rs::parse_master_playlist_res(out.as_bytes()).unwrap();
        assert_eq!(m.alternatives.len(), 1);
        assert_eq!(m.alternatives[0].language.as_deref(), Some("en"));
        assert_eq!(m.variants[0].subtitles.as_deref(), Some("subs"));
        assert!(subtitle_playlist("en.vtt", 10.0).contains("#EXTINF:10.000,\nen.vtt\n"));
    }
}
