use wasmpickle_guest::object;

pub struct Counter(i64);

#[object]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn into_value(self) -> i64 {
        self.0
    }

    pub fn boxed(self: Box<Self>) -> i64 {
        self.0
    }

    /// Not exported, so by value is fine.
    fn consume(self) -> i64 {
        self.0
    }
}

fn main() {}
