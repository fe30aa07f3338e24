use wasmpickle_guest::export;

#[derive(Debug)]
pub struct Silent;

#[export]
pub fn fails() -> Result<u8, Silent> {
    Err(Silent)
}

fn main() {}
