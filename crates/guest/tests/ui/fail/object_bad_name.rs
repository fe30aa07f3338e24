use wasmpickle_guest::object;

pub struct Counter(i64);

#[object(name = "my.Counter")]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }
}

pub struct Other(i64);

#[object(name = "wasmpickle_other")]
impl Other {
    pub fn new() -> Self {
        Other(0)
    }

    #[method(name = "get.value")]
    pub fn get(&self) -> i64 {
        self.0
    }

    #[method(name = "new")]
    pub fn renew(&mut self) {}

    #[method(name = "")]
    pub fn empty(&self) {}

    #[method(name = "twice")]
    pub fn one(&self) {}

    #[method(name = "twice")]
    pub fn two(&self) {}

    #[method(nmae = "x")]
    pub fn typo(&self) {}
}

/// The type's own name is checked when there is no `name = "..."`.
#[allow(non_camel_case_types)]
pub struct wasmpickle_thing;

#[object]
impl wasmpickle_thing {
    pub fn new() -> Self {
        wasmpickle_thing
    }
}

fn main() {}
