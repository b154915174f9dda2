//! What an `exec` wrote, end to end: stdout and stderr in the order they
//! were written, any bytes (shown lossily, kept exactly in the journal).

mod common;

use common::Repo;

#[test]
fn exec_output_keeps_its_order_and_its_exact_bytes_in_the_journal() {
    let r = Repo::new(
        "[exec.bytes]\ncommand = \"printf 'a\\\\377b\\\\n'; echo err >&2; echo c\"\ntimeout = \"1m30s\"\n",
    );
    r.ok(&["apply", "--yes"]);
    let journal = std::fs::read_to_string(r.sb.state_dir().join("journal.jsonl")).unwrap();
    let done: serde_json::Value = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["resource"] == "exec.bytes" && v["state"] == "succeeded")
        .unwrap_or_else(|| panic!("no outcome record:\n{journal}"));
    // a, 0xff, b, then stderr's line between stdout's two.
    assert_eq!(done["output"]["hex"], "61ff620a6572720a630a", "{done}");
}

#[test]
fn a_failing_exec_shows_non_utf8_output_lossily_in_order() {
    let r = Repo::new(
        "[exec.f]\ncommand = \"echo one; printf 'x\\\\377y\\\\n' >&2; echo three; exit 3\"\n",
    );
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("one\n  x\u{fffd}y\n  three"), "{out}");
    // The journal keeps the failure's output as written.
    let journal = std::fs::read_to_string(r.sb.state_dir().join("journal.jsonl")).unwrap();
    let failed: serde_json::Value = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["resource"] == "exec.f" && v["state"] == "failed")
        .unwrap_or_else(|| panic!("no failed record:\n{journal}"));
    assert_eq!(
        failed["output"]["hex"], "6f6e650a78ff790a74687265650a",
        "{failed}"
    );
}
