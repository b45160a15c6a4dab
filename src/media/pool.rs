//! A stream's spare segment buffer, reused from one segment to the next.
//!
//! A 2 s segment of a 4 Mbit/s stream is about 1 MiB. Allocated fresh for every segment, its
//! pages were faulted in one by one as the muxer filled it and handed back to the kernel when
//! the upload dropped it: 87 % of a passthrough publisher's page faults (about 2200 in 20 s,
//! `perf record -e page-faults`). Now the buffer of a segment whose upload is done waits as its
//! stream's spare, with its pages still mapped, for the stream's next segment. One spare per
//! stream (per rendition), freed with the stream: a shared free list kept buffers that no
//! later segment fitted, and more than doubled the bench's memory per publisher.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// One stream's spare buffer.
#[derive(Debug, Default)]
pub struct Spare {
    buffer: Mutex<Option<Vec<u8>>>,
}

impl Spare {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Keeps `buffer`, the larger one if a spare is already there.
    fn give(&self, buffer: Vec<u8>) {
        let mut slot = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_none_or(|s| s.capacity() < buffer.capacity())
        {
            *slot = Some(buffer);
        }
    }
}

/// One segment's bytes. Dropped (or, after [`SegmentBuf::into_bytes`], when the last `Bytes`
/// handle is dropped), the buffer becomes its stream's spare.
#[derive(Default)]
pub struct SegmentBuf {
    vec: Vec<u8>,
    spare: Option<Arc<Spare>>,
}

impl SegmentBuf {
    /// An empty buffer with room for at least `capacity` bytes: the stream's spare when it has
    /// one (grown if it is smaller), else a new one.
    pub fn with_capacity(spare: &Arc<Spare>, capacity: usize) -> Self {
        let mut vec = spare.take().unwrap_or_default();
        vec.clear();
        vec.reserve(capacity);
        Self {
            vec,
            spare: Some(spare.clone()),
        }
    }

    /// The bytes, to fill or change in place.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// Shared, without a copy; the buffer becomes the spare when the last handle goes.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for SegmentBuf {
    fn drop(&mut self) {
        if let Some(spare) = &self.spare
            && self.vec.capacity() > 0
        {
            spare.give(std::mem::take(&mut self.vec));
        }
    }
}

/// Bytes from elsewhere (a VOD fragment), not recycled.
impl From<Vec<u8>> for SegmentBuf {
    fn from(vec: Vec<u8>) -> Self {
        Self { vec, spare: None }
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
        self.vec.clone().into()
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

    #[test]
    fn a_dropped_buffer_is_the_next_segments_with_its_memory() {
        let spare = Spare::new();
        let mut first = SegmentBuf::with_capacity(&spare, 1 << 20);
        first.vec_mut().extend_from_slice(&[7; 1000]);
        let address = first.as_ptr();
        let shared = first.into_bytes();
        let copy = shared.clone();
        drop(shared);
        assert_eq!(copy.len(), 1000, "a handle still holds it");
        assert!(spare.take().is_none(), "not spare while a handle holds it");
        drop(copy);
        let again = SegmentBuf::with_capacity(&spare, 900 << 10);
        assert!(again.is_empty(), "handed out empty");
        assert_eq!(
            again.as_ptr(),
            address,
            "the same memory, not a new allocation"
        );
    }

    #[test]
    fn one_spare_is_kept_the_larger_and_a_smaller_one_grows_to_the_request() {
        let spare = Spare::new();
        let (small, large) = (
            SegmentBuf::with_capacity(&spare, 1000),
            SegmentBuf::with_capacity(&spare, 5000),
        );
        drop(large);
        drop(small);
        assert_eq!(spare.take().map(|b| b.capacity()), Some(5000));
        drop(SegmentBuf::with_capacity(&spare, 1000));
        let grown = SegmentBuf::with_capacity(&spare, 8000);
        assert!(grown.vec.capacity() >= 8000);
        assert!(spare.take().is_none(), "the spare was handed out");
    }

    #[test]
    fn buffers_from_elsewhere_are_not_kept() {
        let spare = Spare::new();
        drop(SegmentBuf::from(vec![1, 2, 3]));
        drop(SegmentBuf::default());
        assert!(spare.take().is_none());
    }
}
