//! Borrowed parameters borrow from the argument bytes.

use serde::Deserialize;
use wasmpickle_guest::export;

#[derive(Deserialize)]
pub struct Prefix<'a> {
    text: &'a str,
}

#[export]
pub fn shout(text: &str) -> String {
    text.to_uppercase()
}

#[export]
pub fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

#[export]
pub fn count(env: Prefix<'_>, data: &[u8], text: &str) -> usize {
    env.text.len() + data.len() + text.len()
}

#[export]
pub fn cow(text: std::borrow::Cow<'_, str>) -> String {
    text.into_owned()
}

/// `'static` is fine where the type does not borrow from the input.
#[export]
pub fn owned_cow(text: std::borrow::Cow<'static, str>) -> String {
    text.into_owned()
}

fn main() {
    assert_eq!(shout("hi"), "HI");
    assert_eq!(first_word("hello world"), "hello");
    assert_eq!(count(Prefix { text: "ab" }, b"cd", "e"), 5);
    assert_eq!(cow("x".into()), "x");
    assert_eq!(owned_cow("y".into()), "y");
}
