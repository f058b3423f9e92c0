//! Compile errors a new user meets, and what they say: each `tests/ui/*.rs`
//! must fail to compile with the message in the `.stderr` beside it
//! (regenerate with `TRYBUILD=overwrite cargo test -p shoal --test ui`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
