//! `name = "..."` renames the export; the Rust function keeps its name.

use wasmpickle_guest::export;

#[export(name = "add-one")]
pub fn add_one(x: u32) -> u32 {
    x + 1
}

/// A raw identifier exports under the plain name.
#[export]
pub fn r#type(x: u32) -> u32 {
    x
}

/// The full path works too.
#[wasmpickle_guest::export(name = "twice")]
fn double(x: u32) -> u32 {
    2 * x
}

mod nested {
    use wasmpickle_guest::export;

    /// Exports may live in any module; names must be unique across the module tree.
    #[export(name = "nested_id")]
    pub(crate) fn id(x: u32) -> u32 {
        x
    }
}

/// Compiled out, and its glue with it.
#[export]
#[cfg(any())]
pub fn absent(x: u32) -> u32 {
    x
}

fn main() {
    assert_eq!(add_one(1), 2);
    assert_eq!(r#type(3), 3);
    assert_eq!(double(2), 4);
    assert_eq!(nested::id(5), 5);
}
