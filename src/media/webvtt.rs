//! WebVTT writing (W3C WebVTT): the file header, then one block per cue. Subtitles and
//! storyboard previews both write through here.

use std::fmt::Write;

/// One cue: times in milliseconds and its text (one or more lines, none of them blank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// A cue timestamp, `HH:MM:SS.mmm`.
pub fn timestamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Milliseconds for a time in seconds (negative times count as zero).
pub fn ms(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1000.0).round() as u64
}

/// A WebVTT file: `WEBVTT`, the `header` lines that follow it (such as `X-TIMESTAMP-MAP`),
/// then the cues, each after a blank line.
pub fn write<'a>(header: &[&str], cues: impl IntoIterator<Item = &'a Cue>) -> String {
    let mut out = String::from("WEBVTT\n");
    for line in header {
        out.push_str(line);
        out.push('\n');
    }
    for cue in cues {
        let _ = write!(
            out,
            "\n{} --> {}\n{}\n",
            timestamp(cue.start_ms),
            timestamp(cue.end_ms),
            cue.text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_carry_hours_and_milliseconds() {
        assert_eq!(timestamp(0), "00:00:00.000");
        assert_eq!(timestamp(3_723_004), "01:02:03.004");
        assert_eq!(timestamp(ms(59.9996)), "00:01:00.000");
        assert_eq!(ms(-1.0), 0);
    }

    #[test]
    fn a_file_is_the_header_then_one_block_per_cue() {
        let cues = [
            Cue {
                start_ms: 0,
                end_ms: 1500,
                text: "one".into(),
            },
            Cue {
                start_ms: 1500,
                end_ms: 3000,
                text: "two\nlines".into(),
            },
        ];
        assert_eq!(
            write(&["X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"], &cues),
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\
             \n00:00:00.000 --> 00:00:01.500\none\n\
             \n00:00:01.500 --> 00:00:03.000\ntwo\nlines\n"
        );
        assert_eq!(write(&[], &[]), "WEBVTT\n");
    }
}
