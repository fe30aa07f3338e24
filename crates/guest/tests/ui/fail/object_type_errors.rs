use wasmpickle_guest::object;

pub struct NotDisplay;

pub struct NotDeserialize;

pub struct NotSerialize;

pub struct Counter(i64);

#[object]
impl Counter {
    pub fn new() -> Result<Self, NotDisplay> {
        Ok(Counter(0))
    }

    pub fn take(&mut self, x: NotDeserialize) {
        let _ = x;
    }

    pub fn give(&self) -> NotSerialize {
        NotSerialize
    }
}

fn main() {}
