//! Which connections are let in, for RTMP ingest and for HTTP. A connection that has not
//! proved itself yet (an RTMP client not publishing, an HTTP client that has not sent a
//! whole request) is cheap to open and hold: one byte, then silence until a deadline. So
//! those are capped per address, and at the global cap the oldest of them is dropped to let
//! a newcomer in. Next in line, for HTTP, is a kept-alive connection that has moved no byte
//! for [`IDLE_EVICTABLE_MS`], the longest idle first. A publisher is never dropped for room,
//! nor a connection with bytes in flight: a flood of sockets, silent or sending a request now
//! and then, can neither lock a broadcaster or a viewer out nor cut one off.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

/// An established HTTP connection idle this long may be closed to make room.
pub const IDLE_EVICTABLE_MS: u64 = 2_000;

/// The connections admitted, shared by the listener and every connection's [`Admitted`].
#[derive(Debug)]
pub struct Admission {
    /// For metrics: `rtmp` or `http`.
    kind: &'static str,
    max_connections: usize,
    max_pending_per_ip: usize,
    /// Activity times are milliseconds after this.
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// By admission order (ids only grow), so the first pending one is the oldest.
    connections: BTreeMap<u64, Connection>,
    pending_by_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Connection {
    ip: IpAddr,
    /// Not established yet: counted against its address.
    pending: bool,
    /// The sender that drops it; none once it may never be dropped (a publisher).
    drop_it: Option<oneshot::Sender<()>>,
    /// Established HTTP: when a byte last moved ([`Admission::now_ms`] terms); evictable
    /// once idle.
    activity: Option<Arc<AtomicU64>>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections from this address that are not established")]
    AddressPending,
    #[error("too many connections, none of them idle")]
    Full,
}

impl Admission {
    pub fn new(kind: &'static str, max_connections: usize, max_pending_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            max_connections: max_connections.max(1),
            max_pending_per_ip: max_pending_per_ip.max(1),
            epoch: Instant::now(),
            inner: Mutex::default(),
        })
    }

    /// Milliseconds since this admission began: the clock of activity marks.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The instant [`Admission::now_ms`] counts from.
    pub fn clock(&self) -> Instant {
        self.epoch
    }

    /// Lets a connection from `ip` in, making room when the server is full. The
    /// [`Admitted`] frees its place when dropped; `dropped` resolves when the connection must
    /// end to make room.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let ip = client_of(ip);
        let mut inner = self.inner.lock().unwrap();
        if inner.pending_by_ip.get(&ip).copied().unwrap_or(0) >= self.max_pending_per_ip {
            return Err(Refused::AddressPending);
        }
        if inner.connections.len() >= self.max_connections {
            let victim = inner.victim(self.now_ms()).ok_or(Refused::Full)?;
            let gone = inner.remove(victim).expect("found above");
            if let Some(tx) = gone.drop_it {
                let _ = tx.send(());
            }
            metrics::counter!("ferrocast_connections_dropped_total", "protocol" => self.kind)
                .increment(1);
        }
        let (tx, rx) = oneshot::channel();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.connections.insert(
            id,
            Connection {
                ip,
                pending: true,
                drop_it: Some(tx),
                activity: None,
            },
        );
        *inner.pending_by_ip.entry(ip).or_default() += 1;
        Ok(Admitted {
            admission: self.clone(),
            id,
            dropped: Some(rx),
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().connections.len()
    }
}

/// Who a connection counts against: its IPv4 address, or its IPv6 /64 (one subscriber's
/// network gets a whole /64 to pick addresses from). IPv4-mapped IPv6 counts as IPv4.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Inner {
    /// Who makes room: the oldest pending connection, else the longest-idle established
    /// one that may be dropped.
    fn victim(&self, now_ms: u64) -> Option<u64> {
        if let Some((id, _)) = self.connections.iter().find(|(_, c)| c.pending) {
            return Some(*id);
        }
        self.connections
            .iter()
            .filter(|(_, c)| c.drop_it.is_some())
            .filter_map(|(id, c)| Some((*id, c.activity.as_ref()?.load(Ordering::Relaxed))))
            .filter(|(_, at)| now_ms.saturating_sub(*at) >= IDLE_EVICTABLE_MS)
            .min_by_key(|(_, at)| *at)
            .map(|(id, _)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Connection> {
        let gone = self.connections.remove(&id)?;
        if gone.pending {
            self.unpend(gone.ip);
        }
        Some(gone)
    }

    fn unpend(&mut self, ip: IpAddr) {
        if let Some(n) = self.pending_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.pending_by_ip.remove(&ip);
            }
        }
    }

    /// Marks `id` established; `activity` None: never dropped from now on.
    fn establish(&mut self, id: u64, activity: Option<Arc<AtomicU64>>) {
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        if !c.pending {
            return;
        }
        c.pending = false;
        let ip = c.ip;
        match activity {
            None => c.drop_it = None,
            Some(a) => c.activity = Some(a),
        }
        self.unpend(ip);
    }
}

/// One admitted connection's place; freed on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    id: u64,
    dropped: Option<oneshot::Receiver<()>>,
}

impl Admitted {
    /// The connection proved itself and may never be dropped for room (RTMP: it publishes).
    pub fn established(&self) {
        self.admission
            .inner
            .lock()
            .unwrap()
            .establish(self.id, None);
    }

    /// A handle that marks this connection established once it proves itself (HTTP: a
    /// whole request came), after which it is dropped for room only while `activity` says
    /// it has been idle for [`IDLE_EVICTABLE_MS`].
    pub fn marker(&self, activity: Arc<AtomicU64>) -> Established {
        Established {
            admission: self.admission.clone(),
            id: self.id,
            activity,
        }
    }

    /// The admission's clock ([`Admission::now_ms`]).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Resolves when the connection was dropped to make room; never, once it cannot be.
    pub async fn dropped(&mut self) {
        if let Some(rx) = self.dropped.as_mut() {
            if rx.await.is_ok() {
                return;
            }
            // The sender went when the connection became undroppable.
            self.dropped = None;
        }
        std::future::pending().await
    }
}

/// Marks one admitted connection established ([`Admitted::marker`]).
#[derive(Debug, Clone)]
pub struct Established {
    admission: Arc<Admission>,
    id: u64,
    activity: Arc<AtomicU64>,
}

impl Established {
    pub fn mark(&self) {
        self.admission
            .inner
            .lock()
            .unwrap()
            .establish(self.id, Some(self.activity.clone()));
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.inner.lock().unwrap().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    async fn is_dropped(a: &mut Admitted) -> bool {
        tokio::time::timeout(Duration::from_millis(50), a.dropped())
            .await
            .is_ok()
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let a = Admission::new("test", 100, 2);
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        let _one = a.admit(v6(1)).unwrap();
        let _two = a.admit(v6(2)).unwrap();
        assert_eq!(
            a.admit(v6(3)).unwrap_err(),
            Refused::AddressPending,
            "same /64"
        );
        assert!(
            a.admit(IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]))
                .is_ok()
        );
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let _m = a.admit(mapped).unwrap();
        let _m2 = a.admit(ip(9)).unwrap();
        assert_eq!(
            a.admit(ip(9)).unwrap_err(),
            Refused::AddressPending,
            "mapped is IPv4"
        );
    }

    #[test]
    fn pending_connections_are_capped_per_address() {
        let a = Admission::new("test", 100, 2);
        let _one = a.admit(ip(1)).unwrap();
        let two = a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(1)).unwrap_err(), Refused::AddressPending);
        assert!(a.admit(ip(2)).is_ok(), "other addresses are not counted");
        // An established connection no longer counts as pending.
        two.established();
        let _three = a.admit(ip(1)).unwrap();
        drop(two);
        assert_eq!(a.admit(ip(1)).unwrap_err(), Refused::AddressPending);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_pending_is_dropped_never_a_publisher() {
        let a = Admission::new("test", 3, 10);
        let mut publisher = a.admit(ip(1)).unwrap();
        publisher.established();
        let mut old = a.admit(ip(2)).unwrap();
        let mut newer = a.admit(ip(2)).unwrap();
        let newcomer = a.admit(ip(3)).unwrap();
        assert_eq!(a.len(), 3);
        assert!(is_dropped(&mut old).await, "the oldest pending one goes");
        assert!(!is_dropped(&mut newer).await, "only the oldest goes");
        assert!(!is_dropped(&mut publisher).await, "a publisher never goes");
        // The dropped one's place was taken at once; its own drop frees nothing twice.
        drop(old);
        assert_eq!(a.len(), 3);
        newer.established();
        newcomer.established();
        assert_eq!(a.admit(ip(4)).unwrap_err(), Refused::Full);
        drop((publisher, newer, newcomer));
        assert_eq!(a.len(), 0);
    }

    #[tokio::test]
    async fn at_the_cap_an_idle_kept_alive_connection_makes_room_a_busy_one_never() {
        let a = Admission::new("test", 2, 10);
        let (busy_at, idle_at) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut busy = a.admit(ip(1)).unwrap();
        busy.marker(busy_at.clone()).mark();
        let mut idle = a.admit(ip(1)).unwrap();
        idle.marker(idle_at.clone()).mark();
        // Both moved a byte just now: nobody can be dropped.
        busy_at.store(a.now_ms(), Ordering::Relaxed);
        idle_at.store(a.now_ms(), Ordering::Relaxed);
        assert_eq!(a.admit(ip(2)).unwrap_err(), Refused::Full);
        // Later, one has stayed silent past the limit: it makes room.
        tokio::time::sleep(Duration::from_millis(IDLE_EVICTABLE_MS + 100)).await;
        busy_at.store(a.now_ms(), Ordering::Relaxed);
        let _newcomer = a.admit(ip(2)).unwrap();
        assert!(is_dropped(&mut idle).await);
        assert!(!is_dropped(&mut busy).await);
    }
}

/// Wrong keys a client may send in a minute (API keys, publishable keys, stream keys) before
/// its keys are refused unread for the rest of that minute.
pub const BAD_KEYS_PER_MINUTE: u32 = 20;

/// Clients remembered at once; past it, those whose minute is over are forgotten first.
const BAD_KEY_CLIENTS: usize = 100_000;

/// Wrong keys per client (an IPv4 address, or an IPv6 /64), counted per minute: past
/// [`BAD_KEYS_PER_MINUTE`], that client's keys are refused without being looked up until the
/// minute is over, so guessing a key goes no faster than that however fast the guesser is.
/// Each wrong key is counted in `/metrics`; a client that reaches the limit is logged once a
/// minute, with what it sent.
#[derive(Debug)]
pub struct BadKeys {
    limit: u32,
    epoch: Instant,
    /// Client → (start of its minute in ms after `epoch`, wrong keys in it).
    clients: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl BadKeys {
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            epoch: Instant::now(),
            clients: Mutex::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Ok, or the seconds until `ip`'s keys are looked at again.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = self.now_ms();
        let clients = self.clients.lock().expect("bad keys");
        match clients.get(&client_of(ip)) {
            Some((start, n)) if *n >= self.limit && now < start + 60_000 => {
                Err((start + 60_000 - now).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// `ip` sent a wrong key (`kind`: what it was). True when this one reached the limit.
    pub fn failed(&self, ip: IpAddr, kind: &'static str) -> bool {
        metrics::counter!("ferrocast_wrong_keys_total", "kind" => kind).increment(1);
        let now = self.now_ms();
        let client = client_of(ip);
        let mut clients = self.clients.lock().expect("bad keys");
        if clients.len() >= BAD_KEY_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (start, _)| now < *start + 60_000);
            if clients.len() >= BAD_KEY_CLIENTS {
                clients.clear();
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now >= entry.0 + 60_000 {
            *entry = (now, 0);
        }
        entry.1 += 1;
        let reached = entry.1 == self.limit;
        drop(clients);
        if reached {
            metrics::counter!("ferrocast_wrong_keys_blocked_total", "kind" => kind).increment(1);
            tracing::warn!(client = %client, kind, limit = self.limit, "wrong keys: this client's keys are refused unread for the rest of the minute");
        }
        reached
    }
}

#[cfg(test)]
mod bad_keys_tests {
    use super::*;

    #[test]
    fn a_client_past_its_wrong_keys_is_refused_for_the_minute_and_others_are_not() {
        let keys = BadKeys::new(3);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!keys.failed(a, "api key"));
        assert!(!keys.failed(same_64, "api key"));
        assert!(keys.check(a).is_ok());
        assert!(keys.failed(a, "stream key"), "the third reaches the limit");
        let wait = keys.check(same_64).unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
        assert!(keys.check(other).is_ok());
        // A minute later the client starts afresh.
        keys.clients
            .lock()
            .unwrap()
            .get_mut(&client_of(a))
            .unwrap()
            .0 = 0;
        let later = BadKeys {
            limit: 3,
            epoch: keys.epoch - std::time::Duration::from_secs(61),
            clients: Mutex::new(keys.clients.lock().unwrap().clone()),
        };
        assert!(later.check(a).is_ok());
    }
}
