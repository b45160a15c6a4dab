//! A view's events, packed for storage: 9 bytes a heartbeat where JSON takes 70.
//! Each ended view is written with its whole timeline, so this is most of what beacon
//! ingest writes.
//!
//! The format (version 1), after a version byte, event after event in `seq` order:
//! - the kind (its index in [`KINDS`]), then a varint of flags naming the optional fields
//!   present ([`Field`]; a `fatal` value is a flag of its own);
//! - `seq` and `t` as zigzag varints of the difference from the previous event's;
//! - the fields present, in flag order: the playhead as a zigzag difference from the
//!   previous playhead present; sizes, bitrate and HTTP status as varints; strings as a
//!   varint length and UTF-8; the program date-time as a zigzag difference from `t`; a
//!   duration as a zigzag varint.
//!
//! Unpacking trusts nothing: a cut or malformed timeline is an error, not a panic, and it
//! allocates no more than the input bounds.

use super::view::{Event, EventKind};
use crate::db::StoredView;

const VERSION: u8 = 1;

/// The kinds by their stored index: append only, never reorder.
pub const KINDS: [EventKind; 14] = [
    EventKind::Viewinit,
    EventKind::Play,
    EventKind::Playing,
    EventKind::Pause,
    EventKind::Seeking,
    EventKind::Seeked,
    EventKind::Rebufferstart,
    EventKind::Rebufferend,
    EventKind::Renditionchange,
    EventKind::Error,
    EventKind::Ended,
    EventKind::Heartbeat,
    EventKind::Viewend,
    EventKind::Keyloaded,
];

/// The optional fields, by their flag bit: append only.
#[derive(Clone, Copy)]
enum Field {
    Playhead = 0,
    PlayerW,
    PlayerH,
    Bitrate,
    Width,
    Height,
    Fatal,
    FatalTrue,
    Code,
    Message,
    Context,
    HttpStatus,
    ProgramDate,
    Duration,
}

impl Field {
    fn bit(self) -> u64 {
        1 << self as u32
    }
}

/// Strings are bounded by the beacon checks (500 characters at most); longer is corrupt.
const MAX_STRING_BYTES: u64 = 4 * 1024;

/// A timeline that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored timeline cannot be read: {0}")]
pub struct Corrupt(&'static str);

/// A view's events, packed as they come: what the aggregator holds of an open view (about
/// 9 bytes a heartbeat in memory, where the events themselves take 200), and what it
/// stores. Events are appended in `seq` order; one that comes out of order (a late or
/// resent batch) makes it unpack, merge and pack again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    bytes: Vec<u8>,
    len: usize,
    /// The last event's `seq` and `t`, and the last playhead, as the next delta needs them.
    seq: i64,
    t: i64,
    playhead: i64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            bytes: vec![VERSION],
            len: 0,
            seq: 0,
            t: 0,
            playhead: 0,
        }
    }
}

impl Timeline {
    /// Packs events given in `seq` order.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut timeline = Self::default();
        for e in events {
            timeline.push(e);
        }
        timeline
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The events, in `seq` order.
    pub fn events(&self) -> Vec<Event> {
        unpack(&self.bytes).expect("a timeline packed here reads back")
    }

    /// Adds events (each `seq` once: one already held is left as it was); `keep` says
    /// whether an event is taken, given how many the timeline holds.
    pub fn add(&mut self, mut events: Vec<Event>, mut keep: impl FnMut(&Event, usize) -> bool) {
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        if self.is_empty() || events.first().is_none_or(|e| i64::from(e.seq) > self.seq) {
            for e in &events {
                if keep(e, self.len) {
                    self.push(e);
                }
            }
            return;
        }
        let mut all: std::collections::BTreeMap<u32, Event> =
            self.events().into_iter().map(|e| (e.seq, e)).collect();
        for e in events {
            if !all.contains_key(&e.seq) && keep(&e, all.len()) {
                all.insert(e.seq, e);
            }
        }
        *self = Self::of(all.values());
    }

    fn push(&mut self, e: &Event) {
        let out = &mut self.bytes;
        let kind = KINDS
            .iter()
            .position(|k| *k == e.kind)
            .expect("every kind is listed");
        out.push(kind as u8);
        let mut flags = 0;
        let present = [
            (Field::Playhead, e.playhead_ms.is_some()),
            (Field::PlayerW, e.player_w.is_some()),
            (Field::PlayerH, e.player_h.is_some()),
            (Field::Bitrate, e.bitrate.is_some()),
            (Field::Width, e.width.is_some()),
            (Field::Height, e.height.is_some()),
            (Field::Fatal, e.fatal.is_some()),
            (Field::FatalTrue, e.fatal == Some(true)),
            (Field::Code, e.code.is_some()),
            (Field::Message, e.message.is_some()),
            (Field::Context, e.context.is_some()),
            (Field::HttpStatus, e.http_status.is_some()),
            (Field::ProgramDate, e.program_date_ms.is_some()),
            (Field::Duration, e.duration_ms.is_some()),
        ];
        for (field, is) in present {
            if is {
                flags |= field.bit();
            }
        }
        varint(out, flags);
        zigzag(out, i64::from(e.seq).wrapping_sub(self.seq));
        self.seq = i64::from(e.seq);
        zigzag(out, e.t.wrapping_sub(self.t));
        self.t = e.t;
        if let Some(p) = e.playhead_ms {
            zigzag(out, p.wrapping_sub(self.playhead));
            self.playhead = p;
        }
        for n in [e.player_w, e.player_h].into_iter().flatten() {
            varint(out, u64::from(n));
        }
        if let Some(b) = e.bitrate {
            varint(out, b);
        }
        for n in [e.width, e.height].into_iter().flatten() {
            varint(out, u64::from(n));
        }
        for s in [&e.code, &e.message, &e.context].into_iter().flatten() {
            varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        if let Some(s) = e.http_status {
            varint(out, u64::from(s));
        }
        if let Some(d) = e.program_date_ms {
            zigzag(out, e.t.wrapping_sub(d));
        }
        if let Some(d) = e.duration_ms {
            zigzag(out, d);
        }
        self.len += 1;
    }
}

/// Packs events (in `seq` order, as a view holds them).
pub fn pack<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    Timeline::of(events).bytes
}

/// The events a stored view holds: its packed timeline, or the JSON of a view written
/// before timelines were packed; none once pruned.
pub fn stored(view: &StoredView) -> Result<Vec<Event>, Corrupt> {
    match (&view.timeline, &view.events) {
        (Some(packed), _) => unpack(packed),
        (None, Some(json)) => {
            serde_json::from_str(json).map_err(|_| Corrupt("not the JSON of events"))
        }
        (None, None) => Ok(Vec::new()),
    }
}

/// Unpacks what [`pack`] wrote.
pub fn unpack(bytes: &[u8]) -> Result<Vec<Event>, Corrupt> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return Err(Corrupt("unknown version"));
    }
    // Every event takes at least 4 bytes: this many cannot be a lie.
    let mut events = Vec::with_capacity(bytes.len() / 4);
    let (mut seq, mut t, mut playhead) = (0i64, 0i64, 0i64);
    while !r.0.is_empty() {
        let kind = *KINDS
            .get(usize::from(r.byte()?))
            .ok_or(Corrupt("unknown event kind"))?;
        let flags = r.varint()?;
        let has = |f: Field| flags & f.bit() != 0;
        seq = seq.wrapping_add(r.zigzag()?);
        t = t.wrapping_add(r.zigzag()?);
        let number = u32::try_from(seq).map_err(|_| Corrupt("sequence number out of range"))?;
        let mut e = Event::new(number, kind, t);
        e.fatal = has(Field::Fatal).then(|| has(Field::FatalTrue));
        if has(Field::Playhead) {
            playhead = playhead.wrapping_add(r.zigzag()?);
            e.playhead_ms = Some(playhead);
        }
        e.player_w = r.u32_if(has(Field::PlayerW))?;
        e.player_h = r.u32_if(has(Field::PlayerH))?;
        if has(Field::Bitrate) {
            e.bitrate = Some(r.varint()?);
        }
        e.width = r.u32_if(has(Field::Width))?;
        e.height = r.u32_if(has(Field::Height))?;
        e.code = r.string_if(has(Field::Code))?;
        e.message = r.string_if(has(Field::Message))?;
        e.context = r.string_if(has(Field::Context))?;
        if has(Field::HttpStatus) {
            let s = r.varint()?;
            e.http_status =
                Some(u16::try_from(s).map_err(|_| Corrupt("HTTP status out of range"))?);
        }
        if has(Field::ProgramDate) {
            e.program_date_ms = Some(t.wrapping_sub(r.zigzag()?));
        }
        if has(Field::Duration) {
            e.duration_ms = Some(r.zigzag()?);
        }
        events.push(e);
    }
    Ok(events)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(out: &mut Vec<u8>, n: i64) {
    varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, Corrupt> {
        let (&b, rest) = self.0.split_first().ok_or(Corrupt("cut short"))?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Corrupt("a number runs past 64 bits"))
    }

    fn zigzag(&mut self) -> Result<i64, Corrupt> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn u32_if(&mut self, present: bool) -> Result<Option<u32>, Corrupt> {
        if !present {
            return Ok(None);
        }
        let n = self.varint()?;
        u32::try_from(n)
            .map(Some)
            .map_err(|_| Corrupt("a size out of range"))
    }

    fn string_if(&mut self, present: bool) -> Result<Option<String>, Corrupt> {
        if !present {
            return Ok(None);
        }
        let len = self.varint()?;
        if len > MAX_STRING_BYTES || len as usize > self.0.len() {
            return Err(Corrupt("a string runs past its end"));
        }
        let (s, rest) = self.0.split_at(len as usize);
        self.0 = rest;
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|_| Corrupt("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u32, kind: EventKind, t: i64) -> Event {
        Event::new(seq, kind, t)
    }

    /// Every fixture's events, and one event with every field at its extremes, come back
    /// as they went in; a heartbeat takes under 10 bytes.
    #[test]
    fn timelines_round_trip_and_stay_small() {
        let mut all = Vec::new();
        for entry in std::fs::read_dir("tests/fixtures/analytics").unwrap() {
            let fixture: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap())
                    .unwrap();
            let mut events: Vec<Event> = serde_json::from_value(fixture["events"].clone()).unwrap();
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
            assert_eq!(unpack(&pack(&events)).unwrap(), events);
            all.push(events.len());
        }
        assert!(all.len() >= 15, "{} fixtures", all.len());

        let mut full = event(u32::MAX, EventKind::Error, i64::MIN);
        full.playhead_ms = Some(i64::MAX);
        full.player_w = Some(u32::MAX);
        full.player_h = Some(0);
        full.bitrate = Some(u64::MAX);
        full.width = Some(1920);
        full.height = Some(1080);
        full.fatal = Some(false);
        full.code = Some("ключ 403".into());
        full.message = Some("m".repeat(500));
        full.context = Some(String::new());
        full.http_status = Some(u16::MAX);
        full.program_date_ms = Some(i64::MAX);
        full.duration_ms = Some(i64::MIN);
        let mut other = event(0, EventKind::Viewend, i64::MAX);
        other.fatal = Some(true);
        let events = vec![event(1, EventKind::Viewinit, 0), full, other];
        assert_eq!(unpack(&pack(&events)).unwrap(), events);

        let t0 = 1_765_000_000_000;
        let heartbeats: Vec<Event> = (1..=500)
            .map(|i| {
                let mut e = event(i, EventKind::Heartbeat, t0 + i64::from(i) * 10_000);
                e.playhead_ms = Some(i64::from(i) * 10_000);
                e
            })
            .collect();
        let packed = pack(&heartbeats);
        assert!(packed.len() < 500 * 10, "{} bytes", packed.len());
        let json = serde_json::to_string(&heartbeats).unwrap();
        assert!(
            packed.len() * 7 < json.len(),
            "{} against {}",
            packed.len(),
            json.len()
        );
    }

    /// Events added in order are appended; a late, resent or out-of-order batch is merged,
    /// each `seq` once and the one held first kept; `keep` sees how many are held.
    #[test]
    fn a_timeline_takes_batches_in_any_order_once() {
        let t0 = 1_765_000_000_000;
        let e = |seq: u32| {
            let mut e = event(seq, EventKind::Heartbeat, t0 + i64::from(seq) * 1000);
            e.playhead_ms = Some(i64::from(seq) * 1000);
            e
        };
        let mut timeline = Timeline::default();
        timeline.add(vec![e(3), e(1), e(2)], |_, _| true);
        timeline.add(vec![e(4), e(5)], |_, _| true);
        let mut resent = e(2);
        resent.playhead_ms = Some(999_999);
        timeline.add(vec![e(7), resent, e(6)], |_, _| true);
        let seqs: Vec<u32> = timeline.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(timeline.events()[1], e(2), "the first of a seq is kept");
        assert_eq!(timeline.len(), 7);
        assert_eq!(timeline, Timeline::of(&(1..=7).map(e).collect::<Vec<_>>()));
        assert_eq!(unpack(timeline.bytes()).unwrap(), timeline.events());
        // Appending after a merge continues from the merged state.
        timeline.add(vec![e(8)], |_, held| held < 8);
        timeline.add(vec![e(9)], |_, held| held < 8);
        timeline.add(vec![e(0)], |_, held| held < 8);
        assert_eq!(timeline.len(), 8, "the limit held");
        assert_eq!(timeline.events().last(), Some(&e(8)));
    }

    /// Cut, grown or garbled input is an error, never a panic.
    #[test]
    fn damaged_timelines_are_errors() {
        let mut e = event(3, EventKind::Error, 1_765_000_000_000);
        e.message = Some("a message".into());
        e.http_status = Some(403);
        let events = [event(1, EventKind::Play, 1_765_000_000_000), e];
        let packed = pack(&events);
        // A cut is an error, or (cut between events) the events before it.
        let mut errors = 0;
        for len in 0..packed.len() {
            match unpack(&packed[..len]) {
                Ok(got) => assert_eq!(got[..], events[..got.len()], "cut at {len}"),
                Err(_) => errors += 1,
            }
        }
        assert_eq!(
            errors,
            packed.len() - 2,
            "only the cuts between events read"
        );
        assert_eq!(unpack(&[2]), Err(Corrupt("unknown version")));
        assert_eq!(
            unpack(&[1, 14, 0, 2, 0]),
            Err(Corrupt("unknown event kind"))
        );
        assert!(
            unpack(&[
                1, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = unpack(&[&[VERSION][..], &bytes].concat());
        }
    }
}
