//! Compile-fail tests of `#[derive(Model)]`: every error is reported at
//! once, on the offending token, with fixed wording. The `.stderr` files are
//! the output of the compiler the suite runs with (rustc 1.95 on the
//! project's machines; the toolchain is not pinned, because CI cannot
//! fetch one, so a compiler release that rewords a message needs them
//! refreshed); refresh them with
//! `TRYBUILD=overwrite cargo test -p topsail-tests --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
