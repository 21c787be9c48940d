//! What keeps the in-memory backend small and steady as it grows: an append-only sequence that
//! never moves what it holds, and a table of the few strings that every order repeats.
//!
//! Measured at 1.2 M orders before these (bench/RESULTS.md, issue 26): ~1.9 KB per order, and
//! throughput falling by a fifth as the store grew, because every append could double a `Vec`
//! of a million events (a copy of hundreds of megabytes under the store's lock, which every
//! request waits on) and every order carried its own copies of its client id, its rate source
//! and its metadata map.

use std::collections::HashMap;
use std::hash::Hash;

/// Items per chunk of a [`Chunked`]: 16,384 (a few megabytes of events), so that a chunk is
/// allocated rarely and a half-filled last chunk wastes little.
const CHUNK: usize = 1 << 14;

/// An append-only sequence in chunks of fixed capacity: an append never copies what is already
/// there (a `Vec` doubles and copies everything), so its cost does not grow with the length.
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// How many items it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `item` at index `len()`.
    pub(crate) fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The item at `index`, if there is one.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    /// The items at `start..end` (clamped to the length), in order.
    pub(crate) fn range(&self, start: usize, end: usize) -> impl DoubleEndedIterator<Item = &T> {
        let end = end.min(self.len);
        (start.min(end)..end).filter_map(move |index| self.get(index))
    }
}

/// Interned values: each distinct value is kept once and named by a `u32` (a client id, a rate
/// source), so a million orders of ten clients hold ten strings, not a million.
pub(crate) struct Names<T> {
    index: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names {
            index: HashMap::new(),
            values: Vec::new(),
        }
    }
}

/// More distinct names than a `u32` counts: the process would need terabytes first, but the
/// conversion is checked, never wrapped.
#[derive(Debug, thiserror::Error)]
#[error("more than {} distinct names in the in-memory store", u32::MAX)]
pub(crate) struct TooManyNames;

impl<T: Clone + Hash + Eq> Names<T> {
    /// The name of `value`, kept now if it is new.
    pub(crate) fn intern(&mut self, value: &T) -> Result<u32, TooManyNames> {
        if let Some(name) = self.index.get(value) {
            return Ok(*name);
        }
        let name = u32::try_from(self.values.len()).map_err(|_| TooManyNames)?;
        self.values.push(value.clone());
        self.index.insert(value.clone(), name);
        Ok(name)
    }

    /// The name of `value`, if it was ever interned.
    pub(crate) fn find(&self, value: &T) -> Option<u32> {
        self.index.get(value).copied()
    }

    /// The value named `name` (a name this table gave).
    pub(crate) fn value(&self, name: u32) -> Option<&T> {
        self.values.get(usize::try_from(name).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_keeps_order_across_chunks() {
        let mut items = Chunked::default();
        let n = 2 * CHUNK + 3;
        for i in 0..n {
            items.push(i);
        }
        assert_eq!(items.len(), n);
        assert_eq!(items.get(CHUNK), Some(&CHUNK));
        assert_eq!(items.get(n), None);
        let tail: Vec<usize> = items.range(CHUNK - 1, CHUNK + 2).copied().collect();
        assert_eq!(tail, [CHUNK - 1, CHUNK, CHUNK + 1]);
        let newest: Vec<usize> = items.range(0, usize::MAX).rev().take(2).copied().collect();
        assert_eq!(newest, [n - 1, n - 2]);
        assert_eq!(
            items.range(n + 5, n + 9).count(),
            0,
            "a start past the end is empty"
        );
    }

    #[test]
    fn names_are_kept_once() {
        let mut names = Names::default();
        let a = names.intern(&"alice".to_owned()).unwrap();
        let b = names.intern(&"bob".to_owned()).unwrap();
        assert_eq!(names.intern(&"alice".to_owned()).unwrap(), a);
        assert_ne!(a, b);
        assert_eq!(names.value(b).map(String::as_str), Some("bob"));
        assert_eq!(names.find(&"carol".to_owned()), None);
        assert_eq!(names.value(7), None);
    }
}
