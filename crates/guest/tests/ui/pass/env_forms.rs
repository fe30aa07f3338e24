//! Every way to declare the environment, and none.

use serde::Deserialize;
use wasmpickle_guest::export;

#[derive(Deserialize)]
pub struct Scale {
    factor: f64,
}

/// Named `env`.
#[export]
pub fn scale(env: Scale, x: f64) -> f64 {
    env.factor * x
}

/// Named `_env` and unused.
#[export]
fn ignores_env(_env: Scale, x: f64) -> f64 {
    x
}

/// Any name, marked `#[env]`; the attribute is removed from the emitted function.
#[export]
pub fn offset(#[env] base: i64, mut x: i64) -> i64 {
    x += base;
    x
}

/// No environment, no arguments, no result.
#[export]
pub fn nothing() {}

/// No environment, several arguments, one of them a pattern.
#[export]
pub fn area((w, h): (u32, u32), scale: u32) -> u32 {
    w * h * scale
}

/// A parameter named `env` that is not first is an ordinary argument.
#[export]
pub fn second(x: u8, env: u8) -> u16 {
    u16::from(x) + u16::from(env)
}

fn main() {
    assert_eq!(scale(Scale { factor: 2.0 }, 4.0), 8.0);
    assert_eq!(ignores_env(Scale { factor: 2.0 }, 4.0), 4.0);
    assert_eq!(offset(10, 5), 15);
    nothing();
    assert_eq!(area((2, 3), 2), 12);
    assert_eq!(second(1, 2), 3);
}
