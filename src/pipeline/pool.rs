//! Segment-sized buffers, reused across segments and broadcasts.
//!
//! A 2 s segment of a 4 Mbit/s stream is about 1 MiB. Allocated fresh for every segment, its
//! pages were faulted in one by one as the muxer filled it and handed back to the kernel when
//! the upload dropped it: 87 % of a passthrough publisher's page faults (about 2200 in 20 s,
//! `perf record -e page-faults`). A finished segment's buffer now waits here for the next
//! segment of any stream, with its pages still mapped.

use std::ops::Deref;
use std::sync::Mutex;

use bytes::Bytes;

/// Free buffers kept, at most, in all (bytes of capacity). Enough for every stream of a busy
/// node to find one when it cuts; beyond it, buffers are freed as before.
const MAX_FREE_BYTES: usize = 64 << 20;
/// Free buffers kept, at most, in number.
const MAX_FREE: usize = 64;

struct Free {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static FREE: Mutex<Free> = Mutex::new(Free {
    buffers: Vec::new(),
    bytes: 0,
});

/// One segment's bytes. Dropped (or, after [`SegmentBuf::into_bytes`], when the last `Bytes`
/// handle is dropped), the buffer goes back to the free list.
#[derive(Default)]
pub struct SegmentBuf {
    vec: Vec<u8>,
}

impl SegmentBuf {
    /// An empty buffer with room for at least `capacity` bytes: the smallest free one that
    /// has that room, else the largest free one grown to it, else a new one.
    pub fn with_capacity(capacity: usize) -> Self {
        let reused = {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            let fits = free
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= capacity)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            let pick = fits.or_else(|| {
                let largest = free.buffers.iter().enumerate();
                largest.max_by_key(|(_, b)| b.capacity()).map(|(i, _)| i)
            });
            pick.map(|i| {
                let b = free.buffers.swap_remove(i);
                free.bytes -= b.capacity();
                b
            })
        };
        let mut vec = reused.unwrap_or_default();
        vec.clear();
        vec.reserve(capacity);
        Self { vec }
    }

    /// The bytes, to fill or change in place.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// Shared, without a copy; the buffer is freed to the list when the last handle goes.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        let capacity = self.vec.capacity();
        if capacity == 0 {
            return;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if free.buffers.len() < MAX_FREE && free.bytes + capacity <= MAX_FREE_BYTES {
            free.bytes += capacity;
            free.buffers.push(std::mem::take(&mut self.vec));
        }
    }
}

impl From<Vec<u8>> for SegmentBuf {
    fn from(vec: Vec<u8>) -> Self {
        Self { vec }
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
        let mut copy = Self::with_capacity(self.vec.len());
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

    /// The list is shared by the whole process (and so by tests running beside this one):
    /// checked through a buffer's own address, which only this test knows.
    #[test]
    fn a_dropped_buffer_is_handed_out_again_with_its_memory() {
        let mut first = SegmentBuf::with_capacity(3 << 20);
        first.vec_mut().extend_from_slice(&[7; 1000]);
        let address = first.as_ptr();
        let shared = first.into_bytes();
        let copy = shared.clone();
        drop(shared);
        assert_eq!(copy.len(), 1000, "a handle still holds it");
        drop(copy);
        // Other tests' buffers are smaller than 3 MiB: the smallest that fits is this one.
        let again = SegmentBuf::with_capacity(3 << 20);
        assert!(again.is_empty(), "handed out empty");
        assert_eq!(
            again.as_ptr(),
            address,
            "the same memory, not a new allocation"
        );
    }
}
