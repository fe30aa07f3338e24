//! `#[object]` in every form it accepts; the impls stay ordinary impls.

use serde::{Deserialize, Serialize};
use wasmpickle_guest::object;

#[derive(Deserialize)]
pub struct Start {
    value: i64,
}

pub struct Counter {
    value: i64,
}

/// The constructor's environment named `env`; methods with `&self` and `&mut self`.
#[object]
impl Counter {
    pub fn new(env: Start) -> Self {
        Counter { value: env.value }
    }

    pub fn incr(&mut self) -> i64 {
        self.value += 1;
        self.value
    }

    /// The explicit receiver forms, and a parameter named `env`, which is an argument.
    pub fn add(self: &mut Self, env: i64) -> i64 {
        self.value += env;
        self.value
    }

    pub fn get(self: &Counter) -> i64 {
        self.value
    }

    /// Not exported: private, `pub(crate)`, or without a receiver.
    fn private(&self) -> i64 {
        self.value
    }

    pub(crate) fn crate_only(&mut self) {}

    pub fn zero() -> Self {
        Counter { value: 0 }
    }

    pub const LIMIT: i64 = 100;
}

/// A failing constructor marked `#[env]`, borrowed arguments, `Self` in signatures, a
/// `Result` method, a renamed object and method, and a method compiled out.
#[derive(Clone, Serialize, Deserialize)]
pub struct Text {
    text: String,
}

#[object(name = "Doc")]
impl Text {
    pub fn new(#[env] limit: u32, initial: &str) -> Result<Text, String> {
        match initial.len() as u32 <= limit {
            true => Ok(Text {
                text: initial.to_owned(),
            }),
            false => Err(format!("`{initial}` is longer than {limit} bytes")),
        }
    }

    #[method(name = "append-bytes")]
    pub fn append(&mut self, bytes: &[u8]) -> Result<usize, std::str::Utf8Error> {
        self.text.push_str(std::str::from_utf8(bytes)?);
        Ok(self.text.len())
    }

    /// A result that borrows from the object.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn replace(&mut self, other: Self) -> Self {
        std::mem::replace(self, other)
    }

    pub fn r#type(&self) -> &'static str {
        "text"
    }

    #[cfg(any())]
    pub fn absent(&self) {}
}

/// No environment and no arguments; a tuple struct; an object in a module, under its path.
mod nested {
    pub struct Unit(pub u8);
}

#[object]
impl nested::Unit {
    pub fn new() -> nested::Unit {
        nested::Unit(0)
    }

    pub fn get(&self) -> u8 {
        self.0
    }
}

/// Compiled out, with its glue.
#[cfg(any())]
#[object]
impl Missing {
    pub fn new() -> Self {
        Missing
    }
}

fn main() {
    let mut c = Counter::new(Start { value: 1 });
    assert_eq!(c.incr(), 2);
    assert_eq!(c.add(3), 5);
    assert_eq!(c.get(), 5);
    assert_eq!(c.private(), 5);
    c.crate_only();
    assert_eq!(Counter::zero().get(), 0);
    assert_eq!(Counter::LIMIT, 100);

    assert!(Text::new(2, "abc").is_err());
    let mut t = Text::new(5, "ab").unwrap();
    assert_eq!(t.append(b"cd"), Ok(4));
    assert_eq!(t.text(), "abcd");
    let old = t.replace(Text { text: "x".into() });
    assert_eq!((old.text(), t.text(), t.r#type()), ("abcd", "x", "text"));

    assert_eq!(nested::Unit::new().get(), 0);
}
