//! The shared record must not let anyone with read access to the remote
//! recover a managed file's content (issue 12, item 13).
//!
//! A published plain blake3 of a small secret is a dictionary attack away
//! from the secret: a 4-digit PIN falls in 10^4 hashes. These tests apply and
//! sync a 0600 file holding a PIN to a bare remote, then try every PIN
//! against every version of the record the remote holds.

mod common;

use common::remote::{Machine, Remote as World};
use serde_json::Value;

const PIN: &str = "4821";

const MANIFEST: &str = r#"
[file.pin]
path = "~/.pin"
source = "pin"
mode = "0600"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#;

/// A bare remote seeded with the manifest, a PIN file and a bashrc.
impl World {
    fn new() -> World {
        World::seeded(
            "main",
            &[
                ("stead.toml", MANIFEST),
                ("pin", &format!("{PIN}\n")),
                ("bashrc", "# shared bashrc\n"),
            ],
        )
    }

    /// Every version of the shared record the remote holds, as text.
    fn every_remote_record(&self) -> Vec<String> {
        let commits = self.git(
            &self.remote,
            &["log", "--all", "--format=%H", "--", ".stead/state.json"],
        );
        let all: Vec<String> = commits
            .lines()
            .map(|c| self.git(&self.remote, &["show", &format!("{c}:.stead/state.json")]))
            .collect();
        assert!(!all.is_empty(), "the remote has no shared record");
        all
    }

    fn remote_record(&self) -> Value {
        self.record_on("main")
    }

    /// Rewrites the record on the remote, as an older stead (or a person) would.
    fn edit_remote_record(&self, edit: impl FnOnce(&mut Value)) {
        self.edit_record("editor", "a record as stead 0.1 wrote it", &[], edit);
    }

    fn machine(&self) -> Machine {
        self.join(None)
    }
}

/// Every PIN whose plain blake3 (as stead writes checksums: `blake3:<hex>`,
/// the file with or without its newline) appears in `text`.
fn brute_force(text: &str) -> Vec<String> {
    (0..10_000)
        .map(|n| format!("{n:04}"))
        .filter(|pin| {
            [format!("{pin}\n"), pin.clone()].iter().any(|content| {
                text.contains(&blake3::hash(content.as_bytes()).to_hex().to_string())
            })
        })
        .collect()
}

#[test]
fn no_pin_can_be_recovered_from_the_remote_record() {
    let w = World::new();
    let a = w.machine();
    a.ok(&["sync"]);
    let pin_path = a.sb.home().join(".pin");
    assert_eq!(
        std::fs::read_to_string(&pin_path).unwrap(),
        format!("{PIN}\n")
    );

    for text in w.every_remote_record() {
        assert_eq!(brute_force(&text), Vec::<String>::new(), "{text}");
    }

    // The record does carry a checksum for the file, only not one that can
    // be tried against guesses without this machine's key.
    let record = w.remote_record();
    let published = record["machines"][a.id()]["checksums"]["~/.pin"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        published.starts_with("keyed-blake3:"),
        "published checksum: {published:?}"
    );

    // The key is private to the machine and kept: a second sync publishes
    // the same values, so it has nothing to push.
    let key = a.sb.state_dir().join("record_key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let again = a.ok(&["sync"]);
    assert!(again.contains("Nothing to push"), "{again}");

    // Locally the checksums stay plain: drift is still found.
    let state: Value = serde_json::from_slice(&std::fs::read(a.sb.state_file()).unwrap()).unwrap();
    let local = state["checksums"]["~/.pin"].as_str().unwrap();
    assert_eq!(
        local,
        format!(
            "blake3:{}",
            blake3::hash(format!("{PIN}\n").as_bytes()).to_hex()
        )
    );
    std::fs::write(&pin_path, "0000\n").unwrap();
    let out =
        a.sb.stead(&["--json", "state", "check-drift"])
            .output()
            .unwrap();
    let drift = String::from_utf8_lossy(&out.stdout);
    assert!(drift.contains("\"~/.pin\""), "{drift}");
}

#[test]
fn a_record_with_plain_checksums_from_an_older_stead_still_syncs() {
    let w = World::new();
    let a = w.machine();
    a.ok(&["sync"]);
    let id = a.id();
    // What stead 0.1 published: the plain checksums of its files.
    w.edit_remote_record(|r| {
        let sums = r["machines"][&id]["checksums"].as_object_mut().unwrap();
        for (path, content) in [
            ("~/.pin", format!("{PIN}\n")),
            ("~/.bashrc", "# shared bashrc\n".into()),
        ] {
            sums.insert(
                path.to_string(),
                Value::from(format!(
                    "blake3:{}",
                    blake3::hash(content.as_bytes()).to_hex()
                )),
            );
        }
        r["lineage"]["serial"] = Value::from(r["lineage"]["serial"].as_u64().unwrap() + 1);
    });
    let out = a.ok(&["sync"]);
    assert!(!out.contains("onflict"), "{out}");
    // The next record published is keyed again, and the local state kept its
    // plain checksums (the file is not reported as drifted).
    let record = w.remote_record();
    let published = record["machines"][&id]["checksums"]["~/.pin"]
        .as_str()
        .unwrap();
    assert!(published.starts_with("keyed-blake3:"), "{published}");
    let state: Value = serde_json::from_slice(&std::fs::read(a.sb.state_file()).unwrap()).unwrap();
    assert!(
        state["checksums"]["~/.pin"]
            .as_str()
            .unwrap()
            .starts_with("blake3:")
    );
    let drift = a.ok(&["state", "check-drift"]);
    assert!(!drift.contains(".pin"), "{drift}");
}

#[test]
fn comparing_with_the_remote_writes_no_key() {
    // A machine set up by a stead from before record keys has no key file;
    // the read-only commands compare without making one.
    let w = World::new();
    let a = w.machine();
    a.ok(&["sync"]);
    let key = a.sb.state_dir().join("record_key");
    std::fs::remove_file(&key).unwrap();
    for args in [&["state", "check-conflicts"][..], &["state", "diff"][..]] {
        let (code, _, err) = a.run(args);
        assert!(code >= 0, "stead {args:?}: {err}");
        assert!(!key.exists(), "stead {args:?} wrote {}", key.display());
    }
    // The next sync, a writing command, makes it.
    a.ok(&["sync"]);
    assert!(key.exists());
}
