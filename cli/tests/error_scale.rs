//! Error reporting scales with the manifest: thousands of problems, or
//! thousands of references in one string, are reported in about the time it
//! takes to read the file (it was quadratic: tens of seconds, a gigabyte),
//! and the report shows a bounded number of them. A caret far into a huge
//! line is reported without a snippet instead of panicking inside miette.

mod common;

use std::time::{Duration, Instant};

use common::Repo;

/// Far above what a linear report takes even on a loaded debug build, far
/// below what the quadratic one took (15-55 s).
const DEADLINE: Duration = Duration::from_secs(8);

/// `stead plan` killed at the deadline -> (code, stderr, elapsed).
fn plan_within(r: &Repo) -> (i32, String, Duration) {
    let started = Instant::now();
    let out =
        r.sb.stead(&["--config", r.config.path().to_str().unwrap(), "plan"])
            .timeout(DEADLINE)
            .output()
            .expect("run stead");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        took < DEADLINE,
        "reporting the errors took {took:?} (killed at the deadline)"
    );
    (out.status.code().unwrap_or(-1), err, took)
}

fn assert_no_panic(code: i32, err: &str) {
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert!(!err.contains("panicked"), "stead panicked:\n{err}");
}

#[test]
fn ten_thousand_problems_are_reported_quickly_and_capped() {
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "[file.f{i}]\npath = \"~/f{i}\"\ncontent = \"x\"\nbogus = 1\n"
        ));
    }
    let r = Repo::new(&text);
    let (code, err, _) = plan_within(&r);
    assert_no_panic(code, &err);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("10000 problems in"),
        "no count in:\n{}",
        &err[..err.len().min(2000)]
    );
    // The first problems with their place; the rest counted, not printed.
    assert!(
        err.contains("stead.toml:4:1: unknown key `bogus` in [file.f0]"),
        "{}",
        &err[..2000]
    );
    assert!(
        err.contains("... and 9900 more"),
        "no cap in:\n{}",
        &err[err.len().saturating_sub(3000)..]
    );
    assert!(!err.contains("[file.f5000]"), "problem 5000 was printed");
}

#[test]
fn ten_thousand_references_in_one_string_are_reported_quickly() {
    // A `\t` escape makes the decoded string differ from the file text, the
    // path that searched the raw text again for every reference.
    let refs = "${vars.nope}".repeat(10_000);
    let text = format!("[file.a]\npath = \"~/a\"\ncontent = \"\\t{refs}\"\n");
    let r = Repo::new(&text);
    let (code, err, _) = plan_within(&r);
    assert_no_panic(code, &err);
    assert_eq!(code, 1, "{}", &err[..err.len().min(2000)]);
    assert!(
        err.contains("10000 problems in"),
        "{}",
        &err[..err.len().min(2000)]
    );
    // Each reference is placed at its own column (after `content = "\t`).
    assert!(
        err.contains("stead.toml:3:14: unknown variable `nope`"),
        "{}",
        &err[..2000]
    );
    assert!(
        err.contains("stead.toml:3:26: unknown variable `nope`"),
        "{}",
        &err[..2000]
    );
}

#[test]
fn a_problem_past_column_65535_is_reported_without_a_snippet() {
    let text = format!(
        "[file.a]\npath = \"~/a\"\ncontent = \"{}${{vars.nope}}\"\n",
        "x".repeat(70_000)
    );
    let r = Repo::new(&text);
    let (code, err, _) = plan_within(&r);
    assert_no_panic(code, &err);
    assert_eq!(code, 1);
    assert!(
        err.contains("stead.toml:3:70012: unknown variable `nope`"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.len() < 20_000,
        "the huge line was printed whole ({} bytes)",
        err.len()
    );
}

#[test]
fn the_summary_column_counts_bytes_like_the_caret() {
    // Two 2-byte characters before the reference: byte column 16, char column 14.
    let text = "[file.a]\npath = \"~/a\"\ncontent = \"éé${vars.nope}\"\n";
    let r = Repo::new(text);
    let (code, err, _) = plan_within(&r);
    assert_eq!(code, 1);
    assert!(err.contains("stead.toml:3:16: unknown variable"), "{err}");
    assert!(
        err.contains("[") && err.contains("stead.toml:3:16]"),
        "miette's header disagrees:\n{err}"
    );
}

#[test]
fn ten_thousand_unknown_references_among_ten_thousand_variables_are_reported_quickly() {
    // Each problem's help listed every variable: 10 000 x 10 000 names.
    let mut text = String::from("[vars]\n");
    for i in 0..10_000 {
        text.push_str(&format!("v{i} = \"x\"\n"));
    }
    let refs: String = (0..10_000).map(|i| format!("${{vars.w{i}}}")).collect();
    text.push_str(&format!("[file.a]\npath = \"~/a\"\ncontent = \"{refs}\"\n"));
    let r = Repo::new(&text);
    let (code, err, _) = plan_within(&r);
    assert_no_panic(code, &err);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown variable `w0` (variables: v0, v1"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.contains("... (9980 more)"),
        "{}",
        &err[..err.len().min(2000)]
    );
}
