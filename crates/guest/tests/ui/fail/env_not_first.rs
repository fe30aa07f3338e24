use wasmpickle_guest::export;

#[export]
pub fn scale(x: f64, #[env] factor: f64) -> f64 {
    x * factor
}

fn main() {}
