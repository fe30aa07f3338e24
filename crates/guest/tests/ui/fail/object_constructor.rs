use wasmpickle_guest::object;

pub struct A(i64);

#[object]
impl A {
    pub fn new() -> i64 {
        0
    }
}

pub struct B(i64);

#[object]
impl B {
    pub fn new() {}
}

pub struct C(i64);

#[object]
impl C {
    pub fn new(&self) -> Self {
        C(self.0)
    }
}

pub struct D(i64);

#[object]
impl D {
    pub async fn new<T>(x: impl Into<i64>, #[env] y: i64) -> Result<Self, String> {
        Ok(D(x.into() + y))
    }
}

fn main() {}
