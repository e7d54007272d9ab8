//! Column names resolved to positions when the plugin is built: the
//! mapping names the columns it reads and writes by literals, and each
//! literal becomes an index into a fixed list at compile time, so a row
//! costs no name comparisons (by position) and a misspelt name fails the
//! build.

/// The position of `name` in `list`. In a `const` (see [`crate::column!`]
/// and [`crate::input!`]) a name missing from the list fails the build.
pub const fn index_of(list: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < list.len() {
        if const_eq(list[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("a column name missing from its list")
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
