use wasmpickle_guest::export;

#[export]
pub fn keep(text: &'static str) -> usize {
    text.len()
}

fn main() {}
