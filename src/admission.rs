//! Which connections are let in, for RTMP ingest and for HTTP. A connection that has not
//! proved itself yet (an RTMP client not publishing, an HTTP client that has not sent a
//! whole request) is cheap to open and hold: one byte, then silence until a deadline. So
//! those are capped per address, and at the global cap the oldest of them is dropped to let
//! a newcomer in. An established connection is never dropped for room: a flood of idle
//! sockets can neither lock a broadcaster or a viewer out nor cut one off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The connections admitted, shared by the listener and every connection's [`Admitted`].
#[derive(Debug)]
pub struct Admission {
    /// For metrics: `rtmp` or `http`.
    kind: &'static str,
    max_connections: usize,
    max_pending_per_ip: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// By admission order (ids only grow), so the first pending one is the oldest.
    connections: std::collections::BTreeMap<u64, Connection>,
    pending_by_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Connection {
    ip: IpAddr,
    /// Pending connections hold the sender that drops them; established ones hold none.
    drop_it: Option<oneshot::Sender<()>>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections from this address that are not established")]
    AddressPending,
    #[error("too many connections, all of them established")]
    Full,
}

impl Admission {
    pub fn new(kind: &'static str, max_connections: usize, max_pending_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            max_connections: max_connections.max(1),
            max_pending_per_ip: max_pending_per_ip.max(1),
            inner: Mutex::default(),
        })
    }

    /// Lets a connection from `ip` in, dropping the oldest pending connection when the
    /// server is full. The [`Admitted`] frees its place when dropped; `dropped` resolves when
    /// the connection must end to make room.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut inner = self.inner.lock().unwrap();
        if inner.pending_by_ip.get(&ip).copied().unwrap_or(0) >= self.max_pending_per_ip {
            return Err(Refused::AddressPending);
        }
        if inner.connections.len() >= self.max_connections {
            let oldest = inner
                .connections
                .iter()
                .find(|(_, c)| c.drop_it.is_some())
                .map(|(id, _)| *id)
                .ok_or(Refused::Full)?;
            let gone = inner.remove(oldest).expect("found above");
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
                drop_it: Some(tx),
            },
        );
        *inner.pending_by_ip.entry(ip).or_default() += 1;
        Ok(Admitted {
            admission: self.clone(),
            id,
            dropped: Some(rx),
        })
    }

    /// Connections admitted now (pending and publishing).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().connections.len()
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Connection> {
        let gone = self.connections.remove(&id)?;
        if gone.drop_it.is_some() {
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
}

/// One admitted connection's place; freed on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    id: u64,
    dropped: Option<oneshot::Receiver<()>>,
}

impl Admitted {
    /// The connection proved itself (RTMP: it publishes; HTTP: a whole request came): from
    /// now on it is never dropped for room.
    pub fn established(&self) {
        self.marker().mark();
    }

    /// A handle that marks this connection established, for the code that sees it happen.
    pub fn marker(&self) -> Established {
        Established {
            admission: self.admission.clone(),
            id: self.id,
        }
    }

    /// Resolves when the connection was dropped to make room; never, once established.
    pub async fn dropped(&mut self) {
        if let Some(rx) = self.dropped.as_mut() {
            if rx.await.is_ok() {
                return;
            }
            // The sender went when the connection was established: never dropped.
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
}

impl Established {
    pub fn mark(&self) {
        let mut inner = self.admission.inner.lock().unwrap();
        let ip = match inner.connections.get_mut(&self.id) {
            Some(c) if c.drop_it.is_some() => {
                c.drop_it = None;
                c.ip
            }
            _ => return,
        };
        inner.unpend(ip);
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

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn pending_connections_are_capped_per_address() {
        let a = Admission::new("test", 100, 2);
        let _one = a.admit(ip(1)).unwrap();
        let two = a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(1)).unwrap_err(), Refused::AddressPending);
        assert!(a.admit(ip(2)).is_ok(), "other addresses are not counted");
        // A publishing connection no longer counts as pending.
        two.established();
        let _three = a.admit(ip(1)).unwrap();
        drop(two);
        assert_eq!(a.admit(ip(1)).unwrap_err(), Refused::AddressPending);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_pending_is_dropped_never_an_established_one() {
        let a = Admission::new("test", 3, 10);
        let mut publisher = a.admit(ip(1)).unwrap();
        publisher.established();
        let mut old = a.admit(ip(2)).unwrap();
        let mut newer = a.admit(ip(2)).unwrap();
        let _newcomer = a.admit(ip(3)).unwrap();
        assert_eq!(a.len(), 3);
        tokio::time::timeout(std::time::Duration::from_secs(1), old.dropped())
            .await
            .expect("the oldest pending connection is told to go");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), newer.dropped());
        assert!(pending.await.is_err(), "only the oldest goes");
        let never = tokio::time::timeout(std::time::Duration::from_millis(50), publisher.dropped());
        assert!(never.await.is_err(), "a publisher is never dropped");
        // The dropped one's place was taken at once; its own drop frees nothing twice.
        drop(old);
        assert_eq!(a.len(), 3);
        let mut all_publishing = vec![publisher];
        for c in [newer, _newcomer] {
            c.established();
            all_publishing.push(c);
        }
        assert_eq!(a.admit(ip(4)).unwrap_err(), Refused::Full);
        drop(all_publishing);
        assert_eq!(a.len(), 0);
    }
}
