use wasmpickle_guest::export;

#[export]
pub fn show(x: impl std::fmt::Display) -> String {
    x.to_string()
}

#[export]
pub fn show_all(xs: Vec<impl std::fmt::Display>) -> usize {
    xs.len()
}

fn main() {}
