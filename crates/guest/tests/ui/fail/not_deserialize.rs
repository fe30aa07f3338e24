use wasmpickle_guest::export;

pub struct Opaque;

#[export]
pub fn takes(x: Opaque) -> u8 {
    let _ = x;
    0
}

#[export]
pub fn env_too(env: Opaque) -> u8 {
    let _ = env;
    0
}

fn main() {}
