//! `Result` return types become ok or error replies; anything else `Serialize` is a value.

use std::collections::BTreeMap;
use std::fmt;

use wasmpickle_guest::export;

#[export]
pub fn checked_div(x: i64, divisor: i64) -> Result<i64, String> {
    x.checked_div(divisor).ok_or_else(|| format!("cannot divide {x} by {divisor}"))
}

#[export]
pub fn io_result(path: String) -> std::io::Result<u64> {
    Err(std::io::Error::other(format!("no file system for {path}")))
}

#[derive(Debug)]
pub struct MyError;

impl fmt::Display for MyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("my error")
    }
}

pub mod error {
    /// A crate-local alias whose last segment is `Result`.
    pub type Result<T> = std::result::Result<T, super::MyError>;
}

#[export]
pub fn local_alias() -> error::Result<Vec<u8>> {
    Err(MyError)
}

/// A `Result` returned as a value through an alias with another name.
pub type Outcome = std::result::Result<u8, String>;

#[export]
pub fn as_value() -> Outcome {
    Ok(1)
}

#[export]
pub fn map() -> BTreeMap<String, Vec<Option<u32>>> {
    BTreeMap::new()
}

#[export]
pub fn boxed_dyn_error() -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}

fn main() {
    assert_eq!(checked_div(7, 2), Ok(3));
    assert!(io_result("x".into()).is_err());
    assert!(local_alias().is_err());
    assert_eq!(as_value(), Ok(1));
    assert!(map().is_empty());
    assert!(boxed_dyn_error().is_ok());
}
