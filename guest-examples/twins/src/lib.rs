//! Live objects (twins): three types exported with `#[object]`, whose state the host keeps in
//! one instance across calls and can snapshot.
//!
//! | export | behaviour |
//! |---|---|
//! | `Counter.new(env: CounterStart)` | starts at `env.start`, counting by `env.step` |
//! | `Counter.incr() -> i64` | adds the step, returns the new value |
//! | `Counter.add(n: i64) -> i64` | adds `n`, returns the new value |
//! | `Counter.get() -> i64` | the value |
//! | `Counter.reset()` | back to `env.start` |
//! | `Counter.fail()` | adds the step, then panics: a trap with a status-2 reply in the panic slot |
//! | `Stats.new()` | an empty accumulator; no environment |
//! | `Stats.push(x: f64) -> u64` | adds one sample, returns the count |
//! | `Stats.extend(xs: Vec<f64>) -> u64` | adds samples in order, returns the count |
//! | `Stats.summary() -> Summary` | count, mean, sample variance, min and max |
//! | `Kv.new(env: KvConfig)` | an empty table of at most `env.max_entries` entries; a guest error when that is 0 |
//! | `Kv.set(key: String, value: String) -> Option<String>` | inserts or replaces, returns the old value; a guest error when a new key does not fit |
//! | `Kv.get(key: &str) -> Option<String>` | the value of `key` |
//! | `Kv.remove(key: &str) -> Option<String>` | removes `key`, returns its value |
//! | `Kv.len() -> u64`, `Kv.is_empty() -> bool` | the number of entries, and whether it is 0 |
//! | `Kv.keys() -> Vec<String>` | every key, sorted |
//!
//! Arithmetic is deterministic: `Counter` wraps around on overflow (in every profile), and
//! `Stats` uses only `f64` additions, multiplications and divisions, which WebAssembly
//! defines exactly (the host canonicalizes NaNs). `Kv` keeps a `BTreeMap`, so `keys` comes
//! out sorted and no hash seed is involved.
//!
//! # Memory
//!
//! Built with Rust's default allocator (dlmalloc), not the SDK's `BumpAlloc`: a bump allocator
//! never frees, which suits a fresh instance per call but not an object that lives for many
//! calls, where every call's inputs, replies and temporary strings would pile up until memory
//! ran out. dlmalloc reuses what the host frees with `wasmpickle_free` and what the methods
//! drop.
//!
//! The stack is 128 KiB (`build.rs`) rather than Rust's 1 MiB or the lean profile's 64 KiB.
//! Smaller than the default because every snapshot of an object copies linear memory, the
//! stack region included; larger than the lean profile because an overflow traps and loses
//! the object with its instance, so the margin matters more than for a fresh instance per
//! call. No method here recurses, and Rust keeps most locals in wasm locals rather than on
//! this stack: painting the stack between calls showed no call using more than 420 bytes of
//! it (the deepest being a bad-input reply; `Stats.extend` with 5,000 samples, a `Kv.set` and
//! the panic path stay under 400). The stack lies below the data and the heap (the target's
//! `--stack-first` layout), so an overflow traps instead of overwriting the object. Memory
//! starts at the linker's minimum and grows as dlmalloc needs, instead of the lean profile's
//! 512 KiB up front: a long-lived instance pays for growth once, and a snapshot of a small
//! object stays small.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmpickle_guest::object;

/// The environment of `Counter.new`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CounterStart {
    /// The first value, and the value `reset` returns to.
    pub start: i64,
    /// What `incr` adds.
    pub step: i64,
}

/// A counter that steps by a fixed amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    start: i64,
    step: i64,
    value: i64,
}

#[object]
impl Counter {
    /// Starts at `env.start`, counting by `env.step`.
    pub fn new(env: CounterStart) -> Self {
        Counter {
            start: env.start,
            step: env.step,
            value: env.start,
        }
    }

    /// Adds the step (wrapping around on overflow) and returns the new value.
    pub fn incr(&mut self) -> i64 {
        self.value = self.value.wrapping_add(self.step);
        self.value
    }

    /// Adds `n` (wrapping around on overflow) and returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value = self.value.wrapping_add(n);
        self.value
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Goes back to the start value.
    pub fn reset(&mut self) {
        self.value = self.start;
    }

    /// Adds the step, then panics before returning, so the instance traps with the object
    /// half-updated: a host must not use, or snapshot, an instance after a trap.
    pub fn fail(&mut self) {
        self.value = self.value.wrapping_add(self.step);
        panic!("counter failed on request at value {}", self.value);
    }
}

/// The result of `Stats.summary`. A map with these keys on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many samples were pushed.
    pub count: u64,
    /// Their mean; `None` without samples.
    pub mean: Option<f64>,
    /// The sample variance (divided by `count - 1`); `None` with fewer than two samples,
    /// where it is undefined.
    pub variance: Option<f64>,
    /// The smallest sample; `None` without samples.
    pub min: Option<f64>,
    /// The largest sample; `None` without samples.
    pub max: Option<f64>,
}

/// Running statistics in constant memory, by Welford's algorithm.
///
/// A NaN sample makes the mean and variance NaN from then on; `min` and `max` follow
/// `f64::min` and `f64::max`, which skip a NaN when there is a number to compare with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    count: u64,
    mean: f64,
    /// The sum of squared differences from the mean.
    m2: f64,
    min: f64,
    max: f64,
}

#[object]
impl Stats {
    /// An empty accumulator.
    pub fn new() -> Self {
        Stats::default()
    }

    /// Adds one sample and returns the number of samples.
    pub fn push(&mut self, x: f64) -> u64 {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        if self.count == 1 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count
    }

    /// Adds the samples in order and returns the number of samples.
    pub fn extend(&mut self, xs: Vec<f64>) -> u64 {
        for x in xs {
            self.push(x);
        }
        self.count
    }

    /// The statistics of the samples so far.
    pub fn summary(&self) -> Summary {
        let any = self.count > 0;
        Summary {
            count: self.count,
            mean: any.then_some(self.mean),
            variance: (self.count >= 2).then(|| self.m2 / (self.count - 1) as f64),
            min: any.then_some(self.min),
            max: any.then_some(self.max),
        }
    }
}

/// The environment of `Kv.new`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvConfig {
    /// How many entries the table holds at most; at least 1.
    pub max_entries: u32,
}

/// A bounded table of strings, sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    max_entries: u32,
    entries: BTreeMap<String, String>,
}

#[object]
impl Kv {
    /// An empty table of at most `env.max_entries` entries. Fails when that is 0.
    pub fn new(env: KvConfig) -> Result<Self, String> {
        if env.max_entries == 0 {
            return Err("max_entries is 0: the table could hold nothing".to_owned());
        }
        Ok(Kv {
            max_entries: env.max_entries,
            entries: BTreeMap::new(),
        })
    }

    /// Sets `key` to `value` and returns the value it replaces. Replacing always works;
    /// adding a key to a full table fails and changes nothing.
    pub fn set(&mut self, key: String, value: String) -> Result<Option<String>, String> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries as usize {
            return Err(format!(
                "cannot add key `{key}`: the table is full at {} entries",
                self.max_entries
            ));
        }
        Ok(self.entries.insert(key, value))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.entries.get(key).cloned()
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_steps_wraps_and_resets() {
        let mut c = Counter::new(CounterStart { start: 10, step: 3 });
        assert_eq!(c.incr(), 13);
        assert_eq!(c.add(-20), -7);
        assert_eq!(c.get(), -7);
        c.reset();
        assert_eq!(c.get(), 10);
        let mut edge = Counter::new(CounterStart {
            start: i64::MAX,
            step: 1,
        });
        assert_eq!(edge.incr(), i64::MIN);
    }

    #[test]
    #[should_panic(expected = "counter failed on request at value 4")]
    fn counter_fails_on_request() {
        Counter::new(CounterStart { start: 1, step: 3 }).fail();
    }

    #[test]
    fn stats_summarize() {
        let mut s = Stats::new();
        assert_eq!(
            s.summary(),
            Summary {
                count: 0,
                mean: None,
                variance: None,
                min: None,
                max: None
            }
        );
        assert_eq!(s.push(2.0), 1);
        let one = s.summary();
        assert_eq!((one.mean, one.variance), (Some(2.0), None));
        assert_eq!(s.extend(vec![4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 8);
        let all = s.summary();
        assert_eq!(all.count, 8);
        assert_eq!(all.mean, Some(5.0));
        // The population variance of these eight is 4; the sample variance is 32 / 7.
        assert!((all.variance.unwrap() - 32.0 / 7.0).abs() < 1e-12);
        assert_eq!((all.min, all.max), (Some(2.0), Some(9.0)));
    }

    #[test]
    fn kv_is_bounded_and_sorted() {
        assert!(Kv::new(KvConfig { max_entries: 0 }).is_err());
        let mut kv = Kv::new(KvConfig { max_entries: 2 }).unwrap();
        assert!(kv.is_empty());
        assert_eq!(kv.set("b".into(), "1".into()), Ok(None));
        assert_eq!(kv.set("a".into(), "2".into()), Ok(None));
        assert_eq!(
            kv.set("c".into(), "3".into()),
            Err("cannot add key `c`: the table is full at 2 entries".into())
        );
        assert_eq!(kv.set("b".into(), "4".into()), Ok(Some("1".into())));
        assert_eq!(kv.keys(), ["a", "b"]);
        assert_eq!(kv.get("b").as_deref(), Some("4"));
        assert_eq!(kv.remove("a").as_deref(), Some("2"));
        assert_eq!(kv.get("a"), None);
        assert_eq!(kv.len(), 1);
    }
}
