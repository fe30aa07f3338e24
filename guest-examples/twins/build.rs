//! The link flags of `twins`: a 128 KiB stack instead of Rust's 1 MiB (see the crate docs for
//! why that size, and why not the lean profile's initial memory). Set here rather than in
//! `.cargo/config.toml` so that it applies to this crate's `cdylib` only, whoever builds it.

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=131072");
}
