//! The hasher of a client's statement maps: std's keyed SipHash under one random key per
//! process. A `HashMap` with its own `RandomState` carries that key (16 bytes) in every map;
//! each tracked client has two maps, and every idle client keeps them. Statement names come
//! from the client, so the key stays secret and random (no fixed-key hash a client could
//! collide on purpose).

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Builds hashers from the process's one random key; zero-sized, so a map costs only its table.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessKeyed;

impl BuildHasher for ProcessKeyed {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        KEY.get_or_init(RandomState::new).build_hasher()
    }
}

/// A map keyed under [`ProcessKeyed`].
pub type Map<K, V> = std::collections::HashMap<K, V, ProcessKeyed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_process_and_no_room_in_the_map() {
        let (a, b) = (ProcessKeyed, ProcessKeyed);
        assert_eq!(a.hash_one(b"stmt"), b.hash_one(b"stmt"));
        assert_ne!(a.hash_one(b"stmt_1"), a.hash_one(b"stmt_2"));
        assert_eq!(std::mem::size_of::<ProcessKeyed>(), 0);
        // Not SipHash's fixed zero key, whose collisions a client could work out in advance.
        let fixed = std::hash::BuildHasherDefault::<DefaultHasher>::default();
        assert_ne!(a.hash_one(b"stmt"), fixed.hash_one(b"stmt"));
        let mut m: Map<Box<[u8]>, u8> = Map::default();
        m.insert(b"s1".to_vec().into(), 1);
        assert_eq!(m.get(&b"s1"[..]), Some(&1));
    }
}
