use wasmpickle_guest::export;

#[export]
pub fn sum(first: u32, rest: ...) -> u32 {
    first
}

fn main() {}
