//! Well-behaved closures over captured state: the guest most tests and benchmarks call.
//!
//! Built with the lean profile: a 64 KiB stack and 512 KiB of initial memory (`build.rs`) and
//! [`BumpAlloc`] as the global allocator, so a fresh instance per call touches as few pages
//! as possible. Every export's environment is a struct, encoded as a map keyed by field name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmpickle_guest::{BumpAlloc, export};

#[global_allocator]
static ALLOC: BumpAlloc = BumpAlloc::new();

/// The environment of [`scale`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    /// What `x` is multiplied by.
    pub factor: f64,
}

/// Multiplies `x` by the captured factor.
#[export]
pub fn scale(env: Scale, x: f64) -> f64 {
    env.factor * x
}

/// The environment of [`polynomial`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Poly {
    /// Coefficients from the highest power down to the constant term: `[a, b, c]` is
    /// `a·x² + b·x + c`. Empty is the zero polynomial.
    pub coeffs: Vec<f64>,
}

/// Evaluates the captured polynomial at `x` (Horner's method).
#[export]
pub fn polynomial(env: Poly, x: f64) -> f64 {
    env.coeffs.iter().fold(0.0, |acc, &c| acc * x + c)
}

/// The environment of [`word_counts`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WordCfg {
    /// Count words case-insensitively (by their lowercase form).
    pub lowercase: bool,
    /// Ignore words with fewer characters than this.
    pub min_len: u32,
}

/// Counts the words of `text`, split at anything that is not alphanumeric, as a map sorted by
/// word.
#[export]
pub fn word_counts(env: WordCfg, text: String) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().count() < env.min_len as usize || word.is_empty() {
            continue;
        }
        let word = match env.lowercase {
            true => word.to_lowercase(),
            false => word.to_owned(),
        };
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

/// The environment of [`fold_bytes`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fold {
    /// The starting value.
    pub seed: u64,
    /// What the running value is multiplied by after each byte.
    pub multiplier: u64,
}

/// Folds `data` into one number, FNV-1a style: for each byte, xor it in, then multiply
/// (wrapping). With seed `0xcbf29ce484222325` and multiplier `0x100000001b3` this is FNV-1a.
#[export]
pub fn fold_bytes(env: Fold, data: serde_bytes::ByteBuf) -> u64 {
    data.iter().fold(env.seed, |acc, &b| {
        (acc ^ u64::from(b)).wrapping_mul(env.multiplier)
    })
}

/// The environment of [`checked_div`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Div {
    /// What `x` is divided by.
    pub divisor: i64,
}

/// Divides `x` by the captured divisor, rounding toward zero. Fails (a guest error, not a
/// trap) when the divisor is zero or the quotient overflows.
#[export]
pub fn checked_div(env: Div, x: i64) -> Result<i64, String> {
    match env.divisor {
        0 => Err(format!("cannot divide {x} by zero")),
        d => x
            .checked_div(d)
            .ok_or_else(|| format!("{x} / {d} overflows i64")),
    }
}

/// Describes this module. Takes no environment and no arguments.
#[export]
pub fn describe() -> String {
    format!(
        "wasmpickle example guest `math` {}: scale, polynomial, word_counts, fold_bytes, \
         checked_div, describe",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_compute() {
        assert_eq!(scale(Scale { factor: 2.5 }, 4.0), 10.0);
        let poly = Poly {
            coeffs: vec![2.0, -3.0, 1.0],
        };
        assert_eq!(polynomial(poly, 3.0), 10.0);
        assert_eq!(polynomial(Poly { coeffs: vec![] }, 3.0), 0.0);
        let counts = word_counts(
            WordCfg {
                lowercase: true,
                min_len: 2,
            },
            "The cat, the hat; a THE.".into(),
        );
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("cat".into(), 1), ("hat".into(), 1), ("the".into(), 3)]
        );
        let fnv = Fold {
            seed: 0xcbf2_9ce4_8422_2325,
            multiplier: 0x100_0000_01b3,
        };
        assert_eq!(
            fold_bytes(fnv, serde_bytes::ByteBuf::from(&b"a"[..])),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(checked_div(Div { divisor: 2 }, 7), Ok(3));
        assert!(checked_div(Div { divisor: 0 }, 7).is_err());
        assert!(checked_div(Div { divisor: -1 }, i64::MIN).is_err());
        assert!(describe().contains("scale"));
    }
}
