//! One time zone everywhere: every time a human line shows is UTC and says
//! so; JSON carries RFC 3339 with `Z`. Run under a far-off `TZ`, so a time
//! shown in local time would not match.

mod common;

use common::Repo;

/// `YYYY-MM-DD HH:MM:SS[.fff] UTC` in `line`, within minutes of UTC now.
fn utc_stamp_in(line: &str) -> bool {
    let Some(end) = line.find(" UTC") else {
        return false;
    };
    let before = &line[..end];
    // Milliseconds, when shown, are not needed to place it.
    let before = match before.len().checked_sub(4).map(|i| before.split_at(i)) {
        Some((head, ms)) if ms.starts_with('.') => head,
        _ => before,
    };
    let Some(stamp) = before.get(before.len().saturating_sub(19)..) else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .is_ok_and(|t| (chrono::Utc::now().naive_utc() - t).num_minutes().abs() < 10)
}

#[test]
fn journal_and_history_show_utc_labelled_and_json_rfc3339_z() {
    let r = Repo::new("[exec.e]\ncommand = \"true\"\n");
    let tz = [("TZ", "Pacific/Kiritimati")];
    let run = |args: &[&str]| {
        let out =
            r.sb.stead(&[&["--config", r.config.path().to_str().unwrap()], args].concat())
                .envs(tz)
                .output()
                .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["apply", "--yes"]);
    let journal = run(&["state", "journal"]);
    let lines: Vec<&str> = journal.lines().filter(|l| l.contains("exec.e")).collect();
    assert!(!lines.is_empty(), "{journal}");
    assert!(lines.iter().all(|l| utc_stamp_in(l)), "{journal}");
    let history = run(&["state", "history"]);
    assert!(history.lines().all(utc_stamp_in), "{history}");
    // JSON: RFC 3339 in UTC, `Z`.
    let v: serde_json::Value = serde_json::from_str(&run(&["--json", "state", "history"])).unwrap();
    let stamp = v["history"][0]["timestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z'), "{stamp}");
}
