//! Live chat rooms: one per live stream, fanning each message out to its members.
//!
//! A member is a bounded queue of serialized messages. Fan-out never waits: a member whose
//! queue is full (a reader slower than the room) is dropped, and its connection closed, so
//! it never slows the others. Flood control, names and colours live here too; the
//! WebSocket itself is `api::chat`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Messages one member may have waiting before it is dropped.
pub const QUEUE: usize = 256;
/// Members one room may have.
pub const MAX_PER_ROOM: usize = 5000;
/// Connections one address may hold, all rooms together.
pub const MAX_PER_ADDRESS: usize = 20;
/// Characters one message may have.
pub const MAX_TEXT: usize = 500;
/// Visible messages sent on joining.
pub const HISTORY: i64 = 50;

/// Frames of any kind (text, binary, ping) one socket may send: a burst of this many,
/// refilled at [`FRAMES_PER_S`]. Frames past it are dropped unread, so that a flood costs
/// no parsing, no database and no answer; a socket that has had [`FLOOD_CLOSE`] dropped is
/// closed. (Messages have their own, stricter, flood control below.)
pub const FRAME_BURST: f64 = 20.0;
pub const FRAMES_PER_S: f64 = 10.0;
pub const FLOOD_CLOSE: u32 = 200;

/// What to do with a socket's next frame (see [`FrameBudget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    Read,
    /// Dropped unread; `first`: the first of a run (the sender is told once).
    Dropped {
        first: bool,
    },
    /// Too many dropped: close the socket.
    Close,
}

/// One socket's frame budget (a token bucket).
#[derive(Debug)]
pub struct FrameBudget {
    tokens: f64,
    at: Instant,
    dropped: u32,
    in_run: bool,
}

impl FrameBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: FRAME_BURST,
            at: now,
            dropped: 0,
            in_run: false,
        }
    }

    pub fn take(&mut self, now: Instant) -> FrameVerdict {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * FRAMES_PER_S;
        self.tokens = (self.tokens + refill).min(FRAME_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.in_run = false;
            return FrameVerdict::Read;
        }
        self.dropped += 1;
        if self.dropped >= FLOOD_CLOSE {
            return FrameVerdict::Close;
        }
        let first = !self.in_run;
        self.in_run = true;
        FrameVerdict::Dropped { first }
    }
}

/// Flood control: `BURST` messages in `WINDOW`, then silence for `TIMEOUT`.
const BURST: usize = 3;
const WINDOW: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(10);

/// Every room on this server.
#[derive(Default)]
pub struct ChatHub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Flood control and slow mode by room and sender (a viewer, or an anonymous viewer's
    /// address), whatever connections they send from, and kept when a room empties: leaving
    /// and coming back does not reset them.
    paces: Mutex<Paces>,
    next_id: AtomicU64,
}

/// One live stream's room.
#[derive(Default)]
pub struct Room {
    members: Mutex<HashMap<u64, mpsc::Sender<Arc<str>>>>,
}

/// Senders' paces, by (room, sender), and when idle ones were last forgotten.
#[derive(Default)]
struct Paces {
    by_sender: HashMap<(String, String), Pace>,
    pruned: Option<Instant>,
}

/// One sender's pace in a room.
#[derive(Debug, Default)]
struct Pace {
    flood: Flood,
    last: Option<Instant>,
}

/// Why a message may not be sent now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Flood control: too many at once.
    Flood(Duration),
    /// Slow mode: one message per so many seconds.
    SlowMode(Duration),
}

/// Senders whose pace is kept before the idle ones are forgotten (at most once a second).
const SENDERS_KEPT: usize = 100_000;
/// The longest slow mode: how long a sender's pace can matter.
const LONGEST_SLOW: Duration = Duration::from_secs(3600);

/// Why a connection may not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    RoomFull,
    TooManyFromAddress,
}

/// A member's place in a room: leaves it (and frees its address's slot) when dropped.
pub struct Membership {
    hub: Arc<ChatHub>,
    room_key: String,
    room: Arc<Room>,
    id: u64,
    address: Option<IpAddr>,
}

/// The address an address counts as: IPv6 per /64 (what one subscriber gets).
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl ChatHub {
    /// Joins the room of `live_stream_id`; the receiver gets every message sent to it.
    pub fn join(
        self: &Arc<Self>,
        live_stream_id: &str,
        address: Option<IpAddr>,
    ) -> Result<(Membership, mpsc::Receiver<Arc<str>>), JoinRefusal> {
        let address = address.map(bucket);
        if let Some(ip) = address {
            let mut counts = self.per_address.lock().unwrap();
            let n = counts.entry(ip).or_default();
            if *n >= MAX_PER_ADDRESS {
                return Err(JoinRefusal::TooManyFromAddress);
            }
            *n += 1;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Rooms, then members (as leaving locks them): a room being emptied and removed
        // now cannot take this member.
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.entry(live_stream_id.to_string()).or_default().clone();
        let mut members = room.members.lock().unwrap();
        let full = members.len() >= MAX_PER_ROOM;
        if !full {
            members.insert(id, tx);
        }
        drop(members);
        drop(rooms);
        let membership = Membership {
            hub: self.clone(),
            room_key: live_stream_id.to_string(),
            room,
            id,
            address,
        };
        if full {
            return Err(JoinRefusal::RoomFull); // the membership's drop frees the address
        }
        Ok((membership, rx))
    }

    /// Sends `message` (serialized) to every member of the room of `live_stream_id`.
    pub fn send(&self, live_stream_id: &str, message: &serde_json::Value) {
        let room = self.rooms.lock().unwrap().get(live_stream_id).cloned();
        if let Some(room) = room {
            room.send(Arc::from(message.to_string()));
        }
    }

    /// Members of the room of `live_stream_id` now.
    pub fn members(&self, live_stream_id: &str) -> usize {
        self.rooms
            .lock()
            .unwrap()
            .get(live_stream_id)
            .map_or(0, |r| r.members.lock().unwrap().len())
    }
}

impl Room {
    /// Fan-out without waiting: a member that cannot take the message now is dropped.
    fn send(&self, message: Arc<str>) {
        let mut members = self.members.lock().unwrap();
        members.retain(|_, tx| tx.try_send(message.clone()).is_ok());
    }
}

impl Membership {
    /// Whether `sender` may send now, with `slow` between messages (zero: off); counts the
    /// message if so.
    pub fn pace(&self, sender: &str, slow: Duration, now: Instant) -> Result<(), Wait> {
        let mut paces = self.hub.paces.lock().unwrap();
        let key = (self.room_key.clone(), sender.to_string());
        if paces.by_sender.len() >= SENDERS_KEPT
            && !paces.by_sender.contains_key(&key)
            && paces
                .pruned
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            let keep = LONGEST_SLOW.max(TIMEOUT).max(WINDOW);
            paces.by_sender.retain(|_, p| {
                p.last
                    .is_some_and(|t| now.saturating_duration_since(t) < keep)
                    || p.flood.silent_until.is_some_and(|u| u > now)
            });
            paces.pruned = Some(now);
        }
        let pace = paces.by_sender.entry(key).or_default();
        if let Some(last) = pace.last
            && now - last < slow
        {
            return Err(Wait::SlowMode(slow - (now - last)));
        }
        pace.flood.allow(now).map_err(Wait::Flood)?;
        pace.last = Some(now);
        Ok(())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        {
            let mut rooms = self.hub.rooms.lock().unwrap();
            let mut members = self.room.members.lock().unwrap();
            members.remove(&self.id);
            if members.is_empty()
                && rooms
                    .get(&self.room_key)
                    .is_some_and(|r| Arc::ptr_eq(r, &self.room))
            {
                drop(members);
                rooms.remove(&self.room_key);
            }
        }
        if let Some(ip) = self.address {
            let mut counts = self.hub.per_address.lock().unwrap();
            if let Some(n) = counts.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// One member's flood control.
#[derive(Debug, Default)]
pub struct Flood {
    sent: VecDeque<Instant>,
    silent_until: Option<Instant>,
}

impl Flood {
    /// Whether a message may be sent at `now`; else how long until one may.
    pub fn allow(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.silent_until {
            if now < until {
                return Err(until - now);
            }
            self.silent_until = None;
            self.sent.clear();
        }
        while self.sent.front().is_some_and(|t| now - *t >= WINDOW) {
            self.sent.pop_front();
        }
        if self.sent.len() >= BURST {
            self.silent_until = Some(now + TIMEOUT);
            return Err(TIMEOUT);
        }
        self.sent.push_back(now);
        Ok(())
    }
}

/// A message's text as kept: control characters removed (line breaks become spaces),
/// trimmed; `None` if nothing is left or it is longer than [`MAX_TEXT`].
pub fn clean_text(raw: &str) -> Option<String> {
    let text: String = raw
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    let text = text.trim();
    (!text.is_empty() && text.chars().count() <= MAX_TEXT).then(|| text.to_string())
}

/// A display name from a token's viewer (printable, at most 32 characters).
pub fn display_name(viewer: &str) -> String {
    let name: String = viewer
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "viewer".into()
    } else {
        name.to_string()
    }
}

/// A colour for `viewer`, always the same one.
pub fn color(viewer: &str) -> &'static str {
    const PALETTE: [&str; 10] = [
        "#ff7a59", "#ffb020", "#3ecf8e", "#38bdf8", "#a78bfa", "#f472b6", "#facc15", "#34d399",
        "#60a5fa", "#fb7185",
    ];
    let h = viewer
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    PALETTE[h as usize % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_messages_in_two_seconds_then_ten_seconds_of_silence() {
        let mut f = Flood::default();
        let t = Instant::now();
        assert!(f.allow(t).is_ok());
        assert!(f.allow(t + Duration::from_millis(100)).is_ok());
        assert!(f.allow(t + Duration::from_millis(200)).is_ok());
        assert_eq!(f.allow(t + Duration::from_millis(300)), Err(TIMEOUT));
        assert!(f.allow(t + Duration::from_secs(5)).is_err());
        assert!(f.allow(t + Duration::from_millis(10_301)).is_ok());
        // At a calm pace nothing is refused.
        let mut f = Flood::default();
        for i in 0..20 {
            assert!(f.allow(t + Duration::from_millis(700 * i)).is_ok(), "{i}");
        }
    }

    #[test]
    fn a_sender_is_paced_across_connections_and_slow_mode_spaces_messages() {
        let hub = Arc::new(ChatHub::default());
        let (a, _ra) = hub.join("s", None).unwrap();
        let (b, _rb) = hub.join("s", None).unwrap();
        let t = Instant::now();
        let off = Duration::ZERO;
        // One sender on two connections: one flood allowance.
        assert!(a.pace("viewer:ann", off, t).is_ok());
        assert!(b.pace("viewer:ann", off, t).is_ok());
        assert!(a.pace("viewer:ann", off, t).is_ok());
        assert_eq!(b.pace("viewer:ann", off, t), Err(Wait::Flood(TIMEOUT)));
        // Another sender is not held back by it.
        assert!(a.pace("viewer:bob", off, t).is_ok());
        // Slow mode: 5 s between messages.
        let slow = Duration::from_secs(5);
        assert!(a.pace("viewer:cy", slow, t).is_ok());
        assert_eq!(
            b.pace("viewer:cy", slow, t + Duration::from_secs(2)),
            Err(Wait::SlowMode(Duration::from_secs(3)))
        );
        assert!(
            a.pace("viewer:cy", slow, t + Duration::from_secs(5))
                .is_ok()
        );
        // Leaving (the room empties) and coming back does not reset slow mode.
        drop((a, b));
        let (c, _rc) = hub.join("s", None).unwrap();
        assert_eq!(
            c.pace("viewer:cy", slow, t + Duration::from_secs(6)),
            Err(Wait::SlowMode(Duration::from_secs(4)))
        );
        // Another room keeps its own.
        let (d, _rd) = hub.join("other", None).unwrap();
        assert!(
            d.pace("viewer:cy", slow, t + Duration::from_secs(6))
                .is_ok()
        );
    }

    #[test]
    fn texts_names_and_colours() {
        assert_eq!(clean_text("  hi\nthere\u{0007} "), Some("hi there".into()));
        assert_eq!(clean_text(" \n "), None);
        assert_eq!(clean_text(&"a".repeat(MAX_TEXT + 1)), None);
    }

    #[test]
    fn a_socket_has_a_burst_of_frames_then_ten_a_second_and_a_flood_is_closed() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(t0);
        for _ in 0..20 {
            assert_eq!(b.take(t0), FrameVerdict::Read);
        }
        assert_eq!(b.take(t0), FrameVerdict::Dropped { first: true });
        assert_eq!(b.take(t0), FrameVerdict::Dropped { first: false });
        // A tenth of a second later one more is read, and the next drop starts a new run.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(t1), FrameVerdict::Read);
        assert_eq!(b.take(t1), FrameVerdict::Dropped { first: true });
        // A client at ten frames a second is never dropped.
        let mut steady = FrameBudget::new(t0);
        for i in 0..1000 {
            let at = t0 + Duration::from_millis(100 * i);
            assert_eq!(steady.take(at), FrameVerdict::Read, "frame {i}");
        }
        // A flood: closed once FLOOD_CLOSE frames were dropped.
        let verdicts: Vec<FrameVerdict> = (0..400).map(|_| b.take(t1)).collect();
        let closed_at = verdicts.iter().position(|v| *v == FrameVerdict::Close);
        assert_eq!(
            closed_at,
            Some((FLOOD_CLOSE - 4) as usize),
            "three were dropped before"
        );
        assert_eq!(
            clean_text("<script>alert(1)</script>").unwrap(),
            "<script>alert(1)</script>"
        );
        assert_eq!(display_name(&"x".repeat(50)).len(), 32);
        assert_eq!(color("ana"), color("ana"));
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_member_and_not_the_others() {
        let hub = Arc::new(ChatHub::default());
        let (_slow, mut slow_rx) = hub.join("s", None).unwrap();
        let (_fast, mut fast_rx) = hub.join("s", None).unwrap();
        for i in 0..QUEUE + 10 {
            hub.send("s", &serde_json::json!({ "n": i }));
            fast_rx.recv().await.unwrap(); // the fast member keeps up
        }
        assert_eq!(hub.members("s"), 1, "the slow member was dropped");
        let mut got = 0;
        while slow_rx.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(
            got, QUEUE,
            "its queue held what it could, then it was closed"
        );
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_leaving_frees_it() {
        let hub = Arc::new(ChatHub::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| hub.join("s", Some(ip)).unwrap())
            .collect();
        assert_eq!(
            hub.join("s", Some(ip)).err(),
            Some(JoinRefusal::TooManyFromAddress)
        );
        drop(held);
        let again = hub.join("s", Some(ip));
        assert!(again.is_ok());
        assert_eq!(hub.members("s"), 1);
    }
}
