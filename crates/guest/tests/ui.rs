//! Compile tests of `#[export]`: what it accepts, and the error for every misuse.
//!
//! The `.stderr` files are the expected compiler output. After changing a message, regenerate
//! them with `TRYBUILD=overwrite cargo test -p wasmpickle-guest --test ui` and read the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
