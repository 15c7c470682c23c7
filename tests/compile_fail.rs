//! Wrong destructurings of the return table, and the §9 errors stategrad moves to compile time,
//! do not compile. One test function, so the cases are built together once.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
