//! Segment-sized buffers, reused across segments and broadcasts.
//!
//! A 2 s segment of a 4 Mbit/s stream is about 1 MiB. Allocated fresh for every segment, its
//! pages were faulted in one by one as the muxer filled it and handed back to the kernel when
//! the upload dropped it: 87 % of a passthrough publisher's page faults (about 2200 in 20 s,
//! `perf record -e page-faults`). A finished segment's buffer now waits here for the next
//! segment of any stream, with its pages still mapped.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Mutex;

use bytes::Bytes;

/// Free buffers kept, at most, in all (bytes of capacity), the oldest given back first: enough
/// for every stream of a busy node to find one when it cuts.
const MAX_FREE_BYTES: usize = 64 << 20;
/// Free buffers kept, at most, in number.
const MAX_FREE: usize = 64;
/// A free buffer serves a request for up to twice its size less this much: a 200 KiB audio
/// segment does not take (and carry through the upload queue) a 2 MiB video buffer.
const SLACK: usize = 64 << 10;

/// A free list of segment buffers.
pub struct Pool {
    free: Mutex<Free>,
}

struct Free {
    /// Oldest first.
    buffers: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// The process's pool, which every segment uses.
static POOL: Pool = Pool::new();

impl Pool {
    pub const fn new() -> Self {
        Self {
            free: Mutex::new(Free {
                buffers: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// The smallest free buffer with room for `capacity` bytes, if one is not much larger.
    fn take(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let most = capacity.saturating_mul(2).saturating_add(SLACK);
        let (i, _) = free
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| (capacity..=most).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())?;
        let buffer = free.buffers.remove(i).expect("index from the list");
        free.bytes -= buffer.capacity();
        Some(buffer)
    }

    /// Keeps `buffer` for a later segment, giving back the oldest ones beyond the limits.
    fn give(&self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if capacity == 0 || capacity > MAX_FREE_BYTES {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while free.buffers.len() >= MAX_FREE || free.bytes + capacity > MAX_FREE_BYTES {
            let Some(old) = free.buffers.pop_front() else {
                break;
            };
            free.bytes -= old.capacity();
        }
        free.bytes += capacity;
        free.buffers.push_back(buffer);
    }
}

/// One segment's bytes. Dropped (or, after [`SegmentBuf::into_bytes`], when the last `Bytes`
/// handle is dropped), the buffer goes back to its pool.
pub struct SegmentBuf {
    vec: Vec<u8>,
    pool: &'static Pool,
}

impl Default for SegmentBuf {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl SegmentBuf {
    /// An empty buffer with room for at least `capacity` bytes: a free one of about that size
    /// when there is one, else a new one.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::from_pool(&POOL, capacity)
    }

    fn from_pool(pool: &'static Pool, capacity: usize) -> Self {
        let mut vec = pool
            .take(capacity)
            .unwrap_or_else(|| Vec::with_capacity(capacity));
        vec.clear();
        Self { vec, pool }
    }

    /// The bytes, to fill or change in place.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// Shared, without a copy; the buffer goes back to the pool when the last handle goes.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.vec));
    }
}

impl From<Vec<u8>> for SegmentBuf {
    fn from(vec: Vec<u8>) -> Self {
        Self { vec, pool: &POOL }
    }
}

impl Deref for SegmentBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.vec
    }
}

impl AsRef<[u8]> for SegmentBuf {
    fn as_ref(&self) -> &[u8] {
        &self.vec
    }
}

impl Clone for SegmentBuf {
    fn clone(&self) -> Self {
        let mut copy = Self::from_pool(self.pool, self.vec.len());
        copy.vec.extend_from_slice(&self.vec);
        copy
    }
}

impl PartialEq for SegmentBuf {
    fn eq(&self, other: &Self) -> bool {
        self.vec == other.vec
    }
}

impl std::fmt::Debug for SegmentBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentBuf({} bytes)", self.vec.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    #[test]
    fn a_dropped_buffer_is_handed_out_again_with_its_memory() {
        let pool = pool();
        let mut first = SegmentBuf::from_pool(pool, 1 << 20);
        first.vec_mut().extend_from_slice(&[7; 1000]);
        let address = first.as_ptr();
        let shared = first.into_bytes();
        let copy = shared.clone();
        drop(shared);
        assert_eq!(copy.len(), 1000, "a handle still holds it");
        assert!(
            pool.take(1 << 20).is_none(),
            "not free while a handle holds it"
        );
        drop(copy);
        let again = SegmentBuf::from_pool(pool, 900 << 10);
        assert!(again.is_empty(), "handed out empty");
        assert_eq!(
            again.as_ptr(),
            address,
            "the same memory, not a new allocation"
        );
    }

    #[test]
    fn a_request_gets_the_smallest_fitting_buffer_and_never_a_much_larger_one() {
        let pool = pool();
        for size in [4 << 20, 1 << 20, 2 << 20] {
            pool.give(Vec::with_capacity(size));
        }
        assert_eq!(pool.take(1_500_000).map(|b| b.capacity()), Some(2 << 20));
        // 200 KiB fits the 1 MiB buffer's size only with far too much to spare.
        assert!(pool.take(200 << 10).is_none());
        assert_eq!(pool.take(3 << 20).map(|b| b.capacity()), Some(4 << 20));
    }

    #[test]
    fn beyond_its_limits_the_pool_gives_back_its_oldest_buffers() {
        let pool = pool();
        for _ in 0..MAX_FREE + 10 {
            drop(SegmentBuf::from_pool(pool, 1000));
        }
        let big = MAX_FREE_BYTES / 2 + 1;
        drop(SegmentBuf::from_pool(pool, big));
        drop(SegmentBuf::from_pool(pool, big));
        let free = pool.free.lock().unwrap();
        assert!(free.buffers.len() <= MAX_FREE);
        assert!(free.bytes <= MAX_FREE_BYTES);
        assert_eq!(
            free.bytes,
            free.buffers.iter().map(Vec::capacity).sum::<usize>()
        );
        assert_eq!(
            free.buffers.back().map(Vec::capacity),
            Some(big),
            "the newest is kept"
        );
    }
}
