//! Spare relay buffers, kept per worker thread: a session between requests holds no I/O
//! memory (its empty buffers come here), and the next read on the same thread takes one back
//! instead of asking the allocator for a fresh [`READ_CHUNK`] every transaction.
//!
//! # Design
//!
//! A thread-local list, so taking and giving are a `RefCell` borrow and a `Vec` push or pop,
//! with no lock and no atomic. The list is bounded ([`SPARE_MAX`] buffers, each at most
//! [`KEEP_MAX`] bytes), so what it holds is a fixed cost per worker thread whatever the number
//! of clients; a buffer a big request or result grew beyond that goes back to the allocator.
//! A buffer is kept only once it holds nothing and its whole allocation is reclaimed for it
//! alone (not shared with a split-off part), so a taken buffer never carries another
//! client's bytes and never aliases anything.

use std::cell::RefCell;

use bytes::BytesMut;

use super::READ_CHUNK;

/// Most buffers kept per worker thread: enough for the sessions a worker serves at once in
/// a busy pool, small enough to be noise beside thousands of idle clients.
pub const SPARE_MAX: usize = 8;

/// Largest buffer kept, in bytes of allocation.
pub const KEEP_MAX: usize = 2 * READ_CHUNK;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Gives `buf`'s allocation to this thread's spares (or to the allocator) when it holds
/// nothing; `buf` is left without an allocation either way. A buffer holding bytes is left
/// as it is.
pub fn give(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut spare = std::mem::take(buf);
    // Reclaims the consumed front; false when the allocation is shared with a split-off
    // part or smaller than a read chunk, and then it is not worth keeping.
    if !spare.try_reclaim(READ_CHUNK) || spare.capacity() > KEEP_MAX {
        return;
    }
    // A thread being torn down has no spares to keep; the buffer is then simply freed.
    let _ = SPARE.try_with(|list| {
        if let Ok(mut list) = list.try_borrow_mut() {
            if list.len() < SPARE_MAX {
                list.push(spare);
            }
        }
    });
}

/// A spare buffer of at least [`READ_CHUNK`] bytes of room, if this thread has one.
pub fn take() -> Option<BytesMut> {
    SPARE
        .try_with(|list| list.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// Puts a spare buffer into `buf` when it has no allocation, so a read goes straight into
/// it; true when it did (`buf` then has at least [`READ_CHUNK`] bytes of room).
pub fn refill(buf: &mut BytesMut) -> bool {
    if buf.capacity() > 0 {
        return false;
    }
    match take() {
        Some(spare) => {
            *buf = spare;
            true
        }
        None => false,
    }
}

/// How many spares this thread holds (for tests).
#[cfg(test)]
pub fn held() -> usize {
    SPARE.with(|list| list.borrow().len())
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    #[test]
    fn an_empty_buffer_is_reused_and_one_with_bytes_or_shared_is_not() {
        while take().is_some() {}
        let mut b = BytesMut::with_capacity(READ_CHUNK);
        b.extend_from_slice(b"abc");
        give(&mut b);
        assert_eq!(&b[..], b"abc", "bytes still to send stay");
        assert_eq!(held(), 0);
        b.advance(3);
        let at = b.as_ptr() as usize;
        give(&mut b);
        assert_eq!(b.capacity(), 0, "given away");
        assert_eq!(held(), 1);
        let mut again = BytesMut::new();
        assert!(refill(&mut again));
        assert!(again.is_empty() && again.capacity() >= READ_CHUNK);
        // The same allocation, its consumed front reclaimed.
        assert_eq!(again.as_ptr() as usize, at - 3);
        assert_eq!(held(), 0);

        let mut shared = BytesMut::with_capacity(READ_CHUNK);
        shared.extend_from_slice(b"abcd");
        let _part = shared.split_to(2);
        shared.clear();
        give(&mut shared);
        assert_eq!(held(), 0, "an allocation shared with a split-off part");
        let mut big = BytesMut::with_capacity(4 * READ_CHUNK);
        give(&mut big);
        assert_eq!(held(), 0, "a buffer a big message grew");
    }

    #[test]
    fn the_list_is_bounded() {
        while take().is_some() {}
        for _ in 0..SPARE_MAX + 3 {
            let mut b = BytesMut::with_capacity(READ_CHUNK);
            give(&mut b);
        }
        assert_eq!(held(), SPARE_MAX);
        while take().is_some() {}
    }
}
