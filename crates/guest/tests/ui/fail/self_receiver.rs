use wasmpickle_guest::export;

pub struct Counter(u32);

impl Counter {
    #[export]
    pub fn get(&self) -> u32 {
        self.0
    }
}

fn main() {}
