use wasmpickle_guest::export;

#[export]
pub extern "C" fn add(x: u32, y: u32) -> u32 {
    x + y
}

fn main() {}
