//! The in-memory memo backend: least recently used entries go first, bounded in bytes.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::lru::LruCache;

use super::{BackendStats, Fetched, MemoBackend, MemoKey};

/// A memo backend in this process's memory, holding at most a number of **bytes** and
/// evicting the least recently used entries beyond it.
///
/// Bounded in bytes rather than entries because results vary from a few bytes to megabytes:
/// a bound in entries bounds nothing. Each entry is charged its key (32 bytes) and its value;
/// the bookkeeping around them (about 100 bytes an entry) is not charged, so size the budget
/// with some room. A value larger than the whole budget is not stored. Eviction order is
/// exact LRU ([`lru`](https://docs.rs/lru) underneath); [`get`](MemoBackend::get) counts as a
/// use. Entries past their time to live are dropped when next read, and evicted like any
/// other before that.
///
/// Nothing survives the process; use [`RedbBackend`](crate::RedbBackend) for that.
#[derive(Debug)]
pub struct LruBackend {
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: LruCache<MemoKey, Entry>,
    bytes: u64,
    evictions: u64,
}

#[derive(Debug)]
struct Entry {
    value: Box<[u8]>,
    expires: Option<Instant>,
}

/// What an entry counts against the budget.
fn charge(value_len: usize) -> u64 {
    32 + value_len as u64
}

impl LruBackend {
    /// An empty backend holding at most `max_bytes` bytes of keys and values.
    pub fn new(max_bytes: u64) -> LruBackend {
        LruBackend {
            capacity: max_bytes,
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
                evictions: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the cache inconsistent in a way that
        // matters (at worst the byte count is off until the next clear), so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoBackend for LruBackend {
    fn get(&self, key: &MemoKey) -> io::Result<Fetched> {
        let mut state = self.state();
        let Some(entry) = state.entries.get(key) else {
            return Ok(Fetched::Absent);
        };
        if entry.expires.is_some_and(|at| at <= Instant::now()) {
            if let Some(gone) = state.entries.pop(key) {
                state.bytes -= charge(gone.value.len());
            }
            return Ok(Fetched::Absent);
        }
        Ok(Fetched::Value(entry.value.to_vec()))
    }

    fn set(&self, key: &MemoKey, value: &[u8], ttl: Option<Duration>) -> io::Result<()> {
        let mut state = self.state();
        if let Some(old) = state.entries.pop(key) {
            state.bytes -= charge(old.value.len());
        }
        let cost = charge(value.len());
        if cost > self.capacity {
            return Ok(());
        }
        while state.bytes + cost > self.capacity {
            let Some((_, old)) = state.entries.pop_lru() else {
                break;
            };
            state.bytes -= charge(old.value.len());
            state.evictions += 1;
        }
        state.entries.put(
            *key,
            Entry {
                value: value.into(),
                expires: ttl.map(|ttl| Instant::now() + ttl),
            },
        );
        state.bytes += cost;
        Ok(())
    }

    fn remove(&self, key: &MemoKey) -> io::Result<bool> {
        let mut state = self.state();
        Ok(match state.entries.pop(key) {
            Some(old) => {
                state.bytes -= charge(old.value.len());
                true
            }
            None => false,
        })
    }

    fn clear(&self) -> io::Result<u64> {
        let mut state = self.state();
        let n = state.entries.len() as u64;
        state.entries.clear();
        state.bytes = 0;
        Ok(n)
    }

    fn stats(&self) -> io::Result<BackendStats> {
        let state = self.state();
        let mut stats = BackendStats::new(state.entries.len() as u64, state.bytes);
        stats.capacity = Some(self.capacity);
        stats.evictions = state.evictions;
        Ok(stats)
    }
}
