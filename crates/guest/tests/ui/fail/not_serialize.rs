use wasmpickle_guest::export;

pub struct Opaque;

#[export]
pub fn gives() -> Opaque {
    Opaque
}

fn main() {}
