//! The allocator the `stead` binary is built with: jemalloc, configured to
//! give freed pages back after 100 ms (`.cargo/config.toml`). With
//! jemalloc's default of 10 s a run that plans 100 000 files peaks about
//! 50 MiB higher (docs/performance.md, "The allocator"), so the shipped
//! binary is checked for it, not assumed.

#![cfg(unix)]

/// jemalloc's own report of its options, printed at exit when asked for
/// with `_RJEM_MALLOC_CONF=stats_print:true` (the variable of the
/// prefixed jemalloc that `tikv-jemallocator` builds).
fn allocator_report() -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = assert_cmd::Command::cargo_bin("stead")
        .expect("stead binary")
        .env_remove("HOME")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .env_remove("STEAD_CONFIG")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .current_dir(dir.path())
        .arg("--version")
        .output()
        .expect("run stead");
    assert!(out.status.success(), "stead --version failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stead_runs_on_jemalloc_that_returns_freed_pages_within_100_ms() {
    let report = allocator_report();
    assert!(
        report.contains("jemalloc statistics"),
        "stead does not run on jemalloc (no statistics printed at exit):\n{report}"
    );
    for option in ["opt.dirty_decay_ms: 100 ", "opt.muzzy_decay_ms: 0 "] {
        assert!(
            report.contains(option),
            "jemalloc runs without `{option}`: was the binary built outside this \
             repository (without .cargo/config.toml)?\n{}",
            report
                .lines()
                .filter(|l| l.contains("decay") || l.contains("malloc_conf"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
