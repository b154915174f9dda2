//! Lineage secrets (`scope = "lineage"`) across real git clones: kept in the
//! config repo encrypted to every member's published recipient, made once,
//! encrypted again to a machine that joins by the next member that syncs,
//! and made anew when a machine is removed, so that its key no longer opens
//! it. The value never enters git's objects.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::remote::{Machine, Remote};

const MANIFEST: &str = r#"
[secret.db]
scope = "lineage"
length = 36

[file.pgpass]
path = "~/.pgpass"
content = "db:5432:me:${secret.db}\n"
"#;

fn value(m: &Machine) -> String {
    let text = fs::read_to_string(m.sb.home().join(".pgpass")).expect("the target exists");
    text.trim_end().rsplit(':').next().unwrap().to_string()
}

/// Whether `identity` decrypts the lineage secret in `clone`.
fn opens(identity: &Path, clone: &Path) -> bool {
    Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(clone.join(".stead/secrets/db.age"))
        .output()
        .expect("age is installed (.ci/run installs it)")
        .status
        .success()
}

/// Every object of the bare remote, uncompressed, as one byte string.
fn all_objects(remote: &Remote) -> Vec<u8> {
    let out = Command::new("git")
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .current_dir(&remote.remote)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn a_joining_machine_reads_it_after_a_member_syncs_and_a_removed_one_cannot_read_its_next_value() {
    let remote = Remote::seeded("main", &[("stead.toml", MANIFEST)]);
    let a = remote.join(None);
    let out = a.ok(&["sync"]);
    assert!(out.contains("+ secret.db"), "{out}");
    let first = value(&a);
    assert_eq!(first.len(), 36);

    // B joins: it cannot read the secret yet, and says so.
    let b = remote.join(None);
    let (_, out, err) = b.run(&["sync"]);
    assert!(
        out.contains("pending: it was encrypted before this machine joined"),
        "{out}\n{err}"
    );
    assert!(!b.sb.home().join(".pgpass").exists());
    // A's next sync encrypts it to B as well (same value); B's next sync reads it.
    let out = a.ok(&["sync"]);
    assert!(out.contains("recipients changed"), "{out}");
    assert_eq!(value(&a), first);
    b.ok(&["sync"]);
    assert_eq!(value(&b), first, "both machines hold the one value");
    assert!(opens(
        &b.sb.state_dir().join("identity.age"),
        &b.clone_dir()
    ));

    // B is removed: the next apply on A makes a new value for A alone.
    let out = a.ok(&["state", "remove-machine", &b.id()]);
    assert!(out.contains("secret.db is marked for rotation"), "{out}");
    let out = a.ok(&["sync"]);
    assert!(out.contains("rotation requested"), "{out}");
    let second = value(&a);
    assert_ne!(second, first);
    assert!(opens(
        &a.sb.state_dir().join("identity.age"),
        &a.clone_dir()
    ));
    assert!(
        !opens(&b.sb.state_dir().join("identity.age"), &a.clone_dir()),
        "the removed machine's key still opens the new value"
    );

    // Neither value is in any object git holds, nor in either clone's
    // files but the targets.
    let objects = all_objects(&remote);
    assert!(!objects.is_empty());
    for v in [&first, &second] {
        assert!(!contains(&objects, v), "a value is in git's objects");
    }
    let record = remote.record_on("main");
    assert!(!record.to_string().contains(&first));
}
