use wasmpickle_guest::export;

#[export]
pub fn identity<T: serde::Serialize>(x: T) -> T {
    x
}

#[export]
pub fn fill<const N: usize>(x: u8) -> [u8; N] {
    [x; N]
}

#[export]
pub fn first<'a>(text: &'a str) -> &'a str {
    text
}

#[export]
pub fn bounded(x: u8) -> u8
where
    u8: Copy,
{
    x
}

fn main() {}
