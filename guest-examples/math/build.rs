//! The lean profile's link flags (see the `wasmpickle-guest` crate docs): a 64 KiB stack
//! instead of 1 MiB, and 512 KiB of initial memory so that no call has to grow memory. Set
//! here rather than in `.cargo/config.toml` so that they apply to this crate's `cdylib` only,
//! whoever builds it.

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=65536");
    println!("cargo:rustc-link-arg-cdylib=--initial-memory=524288");
}
