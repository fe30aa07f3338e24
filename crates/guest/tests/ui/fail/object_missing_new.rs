use wasmpickle_guest::object;

pub struct Counter(i64);

#[object]
impl Counter {
    pub fn start(value: i64) -> Self {
        Counter(value)
    }

    pub fn get(&self) -> i64 {
        self.0
    }
}

fn main() {}
