use wasmpickle_guest::object;

#[derive(Default)]
pub struct Counter(i64);

#[object]
impl Clone for Counter {
    fn clone(&self) -> Self {
        Counter(self.0)
    }
}

#[object]
pub struct NotAnImpl;

fn main() {}
