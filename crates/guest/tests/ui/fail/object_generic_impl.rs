use wasmpickle_guest::object;

pub struct Cell<T>(T);

#[object]
impl<T: Default> Cell<T> {
    pub fn new() -> Self {
        Cell(T::default())
    }
}

pub struct Pair<T>(T, T);

#[object]
impl Pair<u8>
where
    u8: Copy,
{
    pub fn new() -> Self {
        Pair(0, 0)
    }
}

fn main() {}
