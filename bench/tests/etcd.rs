//! `stead-bench etcd` end to end at a small scale (5 machines × 2 syncs,
//! `fleet status` over 20 records) against the debug `stead` binary: the
//! table comes out with no CAS retry on stead's side, and no etcd or temp
//! dir is left behind. Needs etcd: skipped with a message when it is not
//! installed, a failure under CI (as `Etcd::require` does).

mod common;

use std::process::Command;

use common::stead_binary;

#[test]
fn etcd_case_small_end_to_end() {
    if !stead_testkit::etcd::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed: apt-get install etcd-server"
        );
        eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stead-bench"))
        .args(["etcd", "--machines", "5", "--syncs", "2", "--records", "20"])
        .args(["--repeat", "1", "--stead"])
        .arg(stead_binary())
        .arg("--tmp")
        .arg(tmp.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stead-bench etcd failed: {}{table}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("| 5 machines × 2 syncs at once: wall |"),
        "{table}"
    );
    assert!(table.contains("| compare-and-set retries | 0 |"), "{table}");
    assert!(
        table.contains("| the same, each sync under its machine's own lock"),
        "{table}"
    );
    assert!(
        table.contains("`stead fleet status --json` over 20 machine records"),
        "{table}"
    );
    // Every temp dir was removed (the etcd fixture's own lives elsewhere).
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
