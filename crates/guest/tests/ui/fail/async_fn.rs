use wasmpickle_guest::export;

#[export]
pub async fn fetch(x: u32) -> u32 {
    x
}

fn main() {}
