//! Compile-fail tests of `#[derive(Model)]`: every error is reported at
//! once, on the offending token, with fixed wording. The `.stderr` files are
//! compiler output for the pinned toolchain; refresh them with
//! `TRYBUILD=overwrite cargo test -p topsail-tests --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
