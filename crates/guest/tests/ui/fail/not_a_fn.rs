use wasmpickle_guest::export;

#[export]
pub struct Scale {
    pub factor: f64,
}

fn main() {}
