use wasmpickle_guest::object;

pub struct Counter(i64);

#[object]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub async fn wait(&self) {}

    pub fn generic<T: Into<i64>>(&mut self, x: T) {
        self.0 = x.into();
    }

    pub unsafe fn danger(&self) {}

    pub extern "C" fn c(&self) {}

    pub fn show(&self, x: impl std::fmt::Display) -> String {
        x.to_string()
    }

    pub fn with_env(&self, #[env] base: i64) -> i64 {
        base
    }

    #[method(name = "hidden")]
    fn private(&self) {}
}

fn main() {}
