//! A cache by raw bytes (a path, a user agent, a referrer's host) whose answers live in a
//! vector and are handed out by place. A pageview borrows its texts from the answers at its
//! places once its lookups are done, so they are never copied: a copy of a shared text touched
//! its count, a cache miss a pageview (`perf`, docs/PERFORMANCE.md, fifteenth session). The
//! map and the vector are cleared together, so a place holds until the next insert.

use foldhash::{HashMap, HashMapExt};

pub struct Placed<V> {
    places: HashMap<Vec<u8>, u32>,
    values: Vec<V>,
}

impl<V> Placed<V> {
    pub fn new() -> Placed<V> {
        Placed {
            places: HashMap::new(),
            values: Vec::new(),
        }
    }

    /// The place of `key`'s answer, if it is cached.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        self.places.get(key).map(|&at| at as usize)
    }

    /// Caches `value` as `key`'s answer; its place.
    pub fn insert(&mut self, key: &[u8], value: V) -> usize {
        self.places.insert(key.to_vec(), self.values.len() as u32);
        self.values.push(value);
        self.values.len() - 1
    }

    /// Forgets every answer (every place given so far).
    pub fn clear(&mut self) {
        self.places.clear();
        self.values.clear();
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

impl<V> std::ops::Index<usize> for Placed<V> {
    type Output = V;

    fn index(&self, at: usize) -> &V {
        &self.values[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_hold_their_answers_until_cleared() {
        let mut cache = Placed::new();
        let a = cache.insert(b"/a", "A");
        let b = cache.insert(b"/b", "B");
        assert_eq!((cache.find(b"/a"), cache.find(b"/b")), (Some(a), Some(b)));
        assert_eq!((cache[a], cache[b], cache.len()), ("A", "B", 2));
        cache.clear();
        assert_eq!((cache.find(b"/a"), cache.len()), (None, 0));
        let c = cache.insert(b"/c", "C");
        assert_eq!((cache.find(b"/c"), cache[c]), (Some(c), "C"));
    }
}
