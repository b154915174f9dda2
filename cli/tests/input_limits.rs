//! Manifest input that is absurd but well-formed (a duration past any
//! clock) is a clear error with its place, never a panic and never a
//! silently different value.

mod common;

use common::Repo;

/// What a panic looks like from outside: Rust's panic exit code, or its message.
fn assert_no_panic(code: i32, err: &str) {
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert!(!err.contains("panicked"), "stead panicked:\n{err}");
}

fn exec_manifest(key: &str, value: &str) -> String {
    format!("[exec.slow]\ncommand = [\"true\"]\nretry = 1\n{key} = {value}\n")
}

#[test]
fn a_duration_past_the_allowed_range_is_a_load_error_with_its_place() {
    for (key, value) in [
        ("delay", "\"99999999999999999999999s\""),
        ("timeout", "\"99999999999999999999999s\""),
        ("timeout", &format!("\"1{}s\"", "0".repeat(400))),
        ("delay", "18446744073709551615"),
        ("timeout", "18446744073709551"),
    ] {
        let r = Repo::new(&exec_manifest(key, value));
        let (code, out, err) = r.run(&["plan"]);
        assert_no_panic(code, &err);
        assert_ne!(code, 0, "{key} = {value} loaded:\n{out}");
        // The value sits on line 4 of stead.toml, after `<key> = `.
        let column = key.len() + 4;
        assert!(
            err.contains(&format!("stead.toml:4:{column}")),
            "{key} = {value}: no file:line:column in\n{err}"
        );
        assert!(
            err.contains(&format!("`{key}` must be at most 365 days")),
            "{key} = {value}: the range is not said in\n{err}"
        );
    }
}

#[test]
fn a_duration_inside_the_range_still_loads() {
    // The top of the range, in hours and in seconds, and a small one.
    for value in ["\"8760h\"", "31536000", "\"500ms\""] {
        let r = Repo::new(&exec_manifest("timeout", value));
        let (code, out, err) = r.run(&["plan"]);
        assert_eq!(code, 0, "timeout = {value}:\n{out}\n{err}");
    }
}
