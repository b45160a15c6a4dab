//! CMCD v2 event reports (CTA-5004-B event mode; hls.js `cmcd.eventTargets`): a player posts
//! lines of CMCD, one event each, to `POST /v1/cmcd`. They become the same events as the
//! beacons, so a player without the script still gets startup, rebuffering and the rest:
//!
//! - a play state change (`e=ps`) by its `sta`: `s` starting is the play request, `p`
//!   playing, `k` seeking, `r` rebuffering, `a` paused, `e` ended, `f` a fatal error, `d`
//!   preloading the view's start;
//! - a bitrate change (`e=bc`) a rendition change, its `br` in kbps;
//! - an error (`e=e`) a non-fatal error, and a time interval (`e=t`) a heartbeat;
//! - other events (content id, playback rate, response received, …) are not used.
//!
//! Every line needs the session id (`sid`, the view), the content id (`cid`, the playback
//! id), its time (`ts`) and sequence number (`sn`). Their sequence numbers are kept apart
//! from the script's ([`SEQ_BASE`] on), so a view fed by both never mixes them up.

use super::beacon::{self, Batch, MAX_AHEAD_MS, MAX_EVENTS, MAX_PAST_MS, Player};
use super::cmcd;
use super::view::{Event, EventKind};

/// Event reports' sequence numbers start here in a view.
pub const SEQ_BASE: u32 = 1 << 31;

/// Why a report was refused (400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReport {
    #[error("a report is UTF-8 text, one CMCD event per line")]
    NotText,
    #[error("a report holds 1 to {MAX_EVENTS} events")]
    EventCount,
    #[error("line {0}: {1} is missing or malformed")]
    Missing(usize, &'static str),
    #[error("line {0}: its time is out of range of the server's clock")]
    Time(usize),
    #[error("a report names {MAX_VIEWS} views at most")]
    Views,
}

/// Views one report may name (a player reports its own session; a new one after a reset).
const MAX_VIEWS: usize = 4;

/// Reads a report into one batch per (view, playback id), events in the order given;
/// lines of events Ferrocast does not use are skipped.
pub fn parse(body: &[u8], now_ms: i64) -> Result<Vec<Batch>, BadReport> {
    let text = std::str::from_utf8(body).map_err(|_| BadReport::NotText)?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() || lines.len() > MAX_EVENTS {
        return Err(BadReport::EventCount);
    }
    let mut batches: Vec<Batch> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let c = cmcd::parse([*line]).ok_or(BadReport::Missing(n, "the CMCD data"))?;
        let view_id = c
            .sid
            .clone()
            .filter(|s| beacon::id_shaped(s))
            .ok_or(BadReport::Missing(
                n,
                "sid (8 to 64 letters, digits, '-' or '_')",
            ))?;
        let playback_id = c
            .cid
            .clone()
            .filter(|p| {
                p.len() <= 64 && !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .ok_or(BadReport::Missing(n, "cid (the playback id)"))?;
        let t =
            c.ts.and_then(|t| i64::try_from(t).ok())
                .ok_or(BadReport::Missing(n, "ts"))?;
        if t - now_ms > MAX_AHEAD_MS || now_ms - t > MAX_PAST_MS {
            return Err(BadReport::Time(n));
        }
        let sn =
            c.sn.and_then(|s| u32::try_from(s).ok())
                .filter(|s| *s < SEQ_BASE)
                .ok_or(BadReport::Missing(n, "sn"))?;
        let Some(event) = event_of(&c, SEQ_BASE + sn, t) else {
            continue;
        };
        let views = batches.len();
        match batches
            .iter_mut()
            .find(|b| b.view_id == view_id && b.playback_id == playback_id)
        {
            Some(b) => b.events.push(event),
            None if views >= MAX_VIEWS => return Err(BadReport::Views),
            None => batches.push(Batch {
                view_id,
                viewer_id: None,
                playback_id,
                player: Player {
                    name: Some("cmcd".into()),
                    version: Some("2".into()),
                },
                events: vec![event],
            }),
        }
    }
    Ok(batches)
}

/// The event a CMCD event line stands for, if Ferrocast uses it.
fn event_of(c: &cmcd::Cmcd, seq: u32, t: i64) -> Option<Event> {
    let kind = match (c.e.as_deref()?, c.sta.as_deref()) {
        ("ps", Some("d")) => EventKind::Viewinit,
        ("ps", Some("s")) => EventKind::Play,
        ("ps", Some("p")) => EventKind::Playing,
        ("ps", Some("k")) => EventKind::Seeking,
        ("ps", Some("r")) => EventKind::Rebufferstart,
        ("ps", Some("a")) => EventKind::Pause,
        ("ps", Some("e")) => EventKind::Ended,
        ("ps", Some("f")) => EventKind::Error,
        ("bc", _) => EventKind::Renditionchange,
        ("e", _) => EventKind::Error,
        ("t", _) => EventKind::Heartbeat,
        _ => return None,
    };
    let mut e = Event::new(seq, kind, t);
    e.playhead_ms =
        c.pt.and_then(|p| i64::try_from(p).ok())
            .filter(|p| *p <= 366 * 86_400_000);
    match kind {
        EventKind::Renditionchange => {
            e.bitrate = c.br.filter(|b| *b <= 1_000_000).map(|kbps| kbps * 1000);
        }
        EventKind::Error => {
            let fatal = c.e.as_deref() == Some("ps");
            e.fatal = Some(fatal);
            e.code = Some(
                if fatal {
                    "cmcd_fatal_error"
                } else {
                    "cmcd_error"
                }
                .into(),
            );
            e.context = Some("media".into());
        }
        _ => {}
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    /// Lines as hls.js 1.7 posts them (`e`, `ts`, `sn` with the reporter's state), one
    /// view: its play states become the beacon events they stand for.
    #[test]
    fn play_states_become_view_events() {
        let line = |sn: u32, rest: &str, dt: i64| {
            format!(
                r#"cid="pb1",{rest},sf=h,sid="6e2fb550c4574ed8",sn={sn},ts={},v=2"#,
                NOW - 60_000 + dt
            )
        };
        let body = [
            line(0, "e=ps,sta=s", 0),
            line(1, "br=(2400),e=bc", 300),
            line(2, "e=ps,pt=0,sta=p", 900),
            line(3, "e=t,pt=9100,sta=p", 10_000),
            line(4, "e=ps,pt=9500,sta=r", 10_400),
            line(5, "e=ps,pt=9500,sta=p", 11_400),
            line(6, "e=rr,rc=200", 11_500),
            line(7, "e=ps,pt=12000,sta=e", 14_000),
        ]
        .join("\n");
        let batches = parse(body.as_bytes(), NOW).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(
            (b.view_id.as_str(), b.playback_id.as_str()),
            ("6e2fb550c4574ed8", "pb1")
        );
        let kinds: Vec<EventKind> = b.events.iter().map(|e| e.kind).collect();
        use EventKind::*;
        assert_eq!(
            kinds,
            [
                Play,
                Renditionchange,
                Playing,
                Heartbeat,
                Rebufferstart,
                Playing,
                Ended
            ]
        );
        assert_eq!(b.events[1].bitrate, Some(2_400_000));
        assert_eq!(b.events[0].seq, SEQ_BASE);
        let s = super::super::view::summarize(&b.events, None);
        assert_eq!(s.video_startup_time_ms, Some(900));
        assert_eq!((s.rebuffer_count, s.rebuffer_duration_ms), (1, 1000));
    }

    #[test]
    fn bad_reports_are_refused_with_their_reason() {
        let ok = format!(r#"e=ps,sta=s,sid="6e2fb550c4574ed8",cid="pb1",sn=0,ts={NOW}"#);
        let cases = [
            (b"\xff\xfe".to_vec(), "UTF-8"),
            (b"\n\n".to_vec(), "1 to 300"),
            (vec![ok.as_str(); 301].join("\n").into_bytes(), "1 to 300"),
            (
                ok.replace(r#"sid="6e2fb550c4574ed8","#, "").into_bytes(),
                "line 1: sid",
            ),
            (
                ok.replace(r#"cid="pb1""#, r#"cid="../x""#).into_bytes(),
                "cid",
            ),
            (
                ok.replace(&format!("ts={NOW}"), "ts=5").into_bytes(),
                "line 1: its time",
            ),
            (ok.replace("sn=0", "sn=4294967295").into_bytes(), "sn"),
            (
                (0..5)
                    .map(|i| ok.replace("6e2fb550c4574ed8", &format!("6e2fb550c457400{i}")))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes(),
                "4 views at most",
            ),
        ];
        for (body, reason) in cases {
            let err = parse(&body, NOW).unwrap_err().to_string();
            assert!(err.contains(reason), "{err:?} should say {reason:?}");
        }
    }
}
