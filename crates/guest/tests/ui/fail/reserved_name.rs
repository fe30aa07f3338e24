use wasmpickle_guest::export;

#[export(name = "memory")]
pub fn a(x: u8) -> u8 {
    x
}

#[export(name = "wasmpickle_alloc")]
pub fn b(x: u8) -> u8 {
    x
}

#[export(name = "wasmpickle_next")]
pub fn c(x: u8) -> u8 {
    x
}

/// The function's own name is checked when there is no `name = "..."`.
#[export]
pub fn wasmpickle_panic(x: u8) -> u8 {
    x
}

#[export]
pub fn __heap_base(x: u8) -> u8 {
    x
}

fn main() {}
