//! Media objects delivery keeps in memory, as an origin shield would, so that a popular stream
//! costs no storage read per request, up to `delivery.cache_mib`, the oldest evicted first:
//! - segments, which never change once written, until evicted;
//! - playlists that are not a live media playlist (master playlists, and playlists with
//!   `#EXT-X-ENDLIST`), for [`PLAYLIST_TTL`]: a subtitle track added to a recording, or a
//!   publisher back within its reconnect window, shows within that time. (Playback targets are cached by the database layer: [`crate::db::Db::playback_target`].)

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a cached playlist is served before storage is read again.
pub const PLAYLIST_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct CachedObject {
    pub body: Bytes,
    pub content_type: String,
    /// When it must be read again (playlists); `None`: never (segments).
    pub expires: Option<Instant>,
}

#[derive(Default)]
struct Objects {
    map: HashMap<String, CachedObject>,
    order: VecDeque<String>,
    bytes: usize,
}

pub struct DeliveryCache {
    objects: Mutex<Objects>,
    budget: usize,
}

impl DeliveryCache {
    /// A cache holding up to `budget_bytes` of objects (0: objects are not kept).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            objects: Mutex::new(Objects::default()),
            budget: budget_bytes,
        }
    }

    pub fn object(&self, key: &str) -> Option<CachedObject> {
        let o = self.objects.lock().unwrap();
        let hit = o.map.get(key)?;
        hit.expires
            .is_none_or(|at| Instant::now() < at)
            .then(|| hit.clone())
    }

    /// Drops an object this node just rewrote.
    pub fn forget(&self, key: &str) {
        let mut o = self.objects.lock().unwrap();
        if let Some(gone) = o.map.remove(key) {
            o.bytes -= gone.body.len();
            o.order.retain(|k| k != key);
        }
    }

    /// Keeps an object (replacing an expired copy); objects larger than an eighth of the
    /// budget are not kept.
    pub fn put_object(&self, key: &str, object: CachedObject) {
        let size = object.body.len();
        if size > self.budget / 8 {
            return;
        }
        let mut o = self.objects.lock().unwrap();
        if let Some(old) = o.map.get_mut(key) {
            let old_size = old.body.len();
            *old = object;
            o.bytes = o.bytes - old_size + size;
            return;
        }
        while o.bytes + size > self.budget {
            let Some(old) = o.order.pop_front() else {
                break;
            };
            if let Some(gone) = o.map.remove(&old) {
                o.bytes -= gone.body.len();
            }
        }
        o.bytes += size;
        o.order.push_back(key.to_string());
        o.map.insert(key.to_string(), object);
        metrics::gauge!("ferrocast_delivery_cache_bytes").set(o.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: usize) -> CachedObject {
        CachedObject {
            body: Bytes::from(vec![0u8; n]),
            content_type: "video/mp2t".into(),
            expires: None,
        }
    }

    #[test]
    fn objects_stay_within_the_budget_oldest_out_first() {
        let cache = DeliveryCache::new(1000);
        cache.put_object("a", object(100));
        cache.put_object("b", object(100));
        cache.put_object("big", object(200)); // over budget / 8: not kept
        assert!(cache.object("big").is_none());
        for i in 0..10 {
            cache.put_object(&format!("c{i}"), object(100));
        }
        assert!(cache.object("a").is_none() && cache.object("b").is_none());
        assert!(cache.object("c0").is_some() && cache.object("c9").is_some());
        assert!(cache.objects.lock().unwrap().bytes <= 1000);
        let off = DeliveryCache::new(0);
        off.put_object("a", object(1));
        assert!(off.object("a").is_none());
    }

    #[test]
    fn playlists_expire() {
        let cache = DeliveryCache::new(1000);
        let mut playlist = object(10);
        playlist.expires = Some(Instant::now() + PLAYLIST_TTL);
        cache.put_object("p", playlist.clone());
        assert!(cache.object("p").is_some());
        playlist.expires = Some(Instant::now());
        cache.put_object("p", playlist);
        assert!(cache.object("p").is_none(), "expired");
        cache.put_object("p", object(20));
        assert!(cache.object("p").is_some(), "replaced");
        assert_eq!(cache.objects.lock().unwrap().bytes, 20);
        cache.forget("p");
        assert!(cache.object("p").is_none());
        assert_eq!(cache.objects.lock().unwrap().bytes, 0);
    }
}
