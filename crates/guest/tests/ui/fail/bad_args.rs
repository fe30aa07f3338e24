use wasmpickle_guest::export;

#[export(nmae = "scale")]
pub fn a(x: u8) -> u8 {
    x
}

#[export(name = scale)]
pub fn b(x: u8) -> u8 {
    x
}

#[export(name = "x", name = "y")]
pub fn c(x: u8) -> u8 {
    x
}

#[export(name)]
pub fn d(x: u8) -> u8 {
    x
}

#[export(name = "")]
pub fn e(x: u8) -> u8 {
    x
}

fn main() {}
