//! Lineage secrets (`scope = "lineage"`) across real git clones: kept in the
//! config repo encrypted to every member's published recipient, made once,
//! encrypted again to a machine that joins by the next member that syncs,
//! and made anew when a machine is removed, so that its key no longer opens
//! it. The value never enters git's objects.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
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
    // An admin key (Debian's age-keygen) that can recover the lineage's
    // secrets without being a machine.
    let keys = tempfile::tempdir().unwrap();
    let admin_key = keys.path().join("admin.key");
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(&admin_key)
        .output()
        .expect("age-keygen is installed (.ci/run installs age)");
    assert!(keygen.status.success());
    let admin = String::from_utf8(keygen.stderr).unwrap();
    let admin = admin.trim().trim_start_matches("Public key: ");
    let manifest = format!("[settings]\nsecret_recipients = [\"{admin}\"]\n{MANIFEST}");
    let remote = Remote::seeded("main", &[("stead.toml", manifest.as_str())]);
    let a = remote.join(None);
    let out = a.ok(&["sync"]);
    assert!(out.contains("+ secret.db"), "{out}");
    let first = value(&a);
    assert_eq!(first.len(), 36);
    assert!(opens(&admin_key, &a.clone_dir()), "the admin recovers it");

    // B joins: it cannot read the secret yet, and says so.
    let b = remote.join(None);
    let (_, out, err) = b.run(&["sync"]);
    assert!(
        out.contains("pending: it was encrypted before this machine joined"),
        "{out}\n{err}"
    );
    assert!(!b.sb.home().join(".pgpass").exists());
    let (code, out, _) = b.run(&["status"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("!  secret.db"), "{out}");
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

/// Every object of a git dir (bare or a clone's `.git`), uncompressed.
fn objects_of(git_dir: &Path) -> Vec<u8> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// Every regular file below `dir` but `.git` (searched as objects) and
/// `skip`, with its bytes.
fn files_below(dir: &Path, skip: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p == skip || p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_below(&p, skip));
        } else if meta.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

#[test]
fn canary_the_values_appear_only_in_the_targets_through_sync_edit_reapply_and_rotate() {
    let remote = Remote::seeded("main", &[("stead.toml", MANIFEST)]);
    let a = remote.join(None);
    let b = remote.join(None);
    let mut outputs: Vec<String> = Vec::new();
    let mut run = |m: &Machine, args: &[&str]| {
        for json in [false, true] {
            let mut all: Vec<&str> = if json { vec!["--json"] } else { vec![] };
            all.extend_from_slice(args);
            let (_, out, err) = m.run(&all);
            outputs.push(format!("$ stead {}\n{out}\n{err}", all.join(" ")));
        }
    };
    // A makes it; B joins; A encrypts it to B; B reads it (each step run
    // twice, plain and --json: the second finds nothing left to do).
    for (m, args) in [
        (&a, &["sync"][..]),
        (&b, &["sync"]),
        (&a, &["sync"]),
        (&b, &["sync"]),
        (&a, &["status"]),
        (&b, &["state", "check-drift"]),
    ] {
        run(m, args);
    }
    let first = value(&a);
    assert_eq!(value(&b), first);
    // B's file edited by hand, planned (and saved), restored.
    fs::write(
        b.sb.home().join(".pgpass"),
        format!("db:5432:me:{first}\n# mine\n"),
    )
    .unwrap();
    let saved = b.sb.home().join("saved.plan");
    for args in [
        &["plan"][..],
        &["status"],
        &["plan", "--out", saved.to_str().unwrap()],
        &["apply", "--yes"],
    ] {
        run(&b, args);
    }
    assert_eq!(value(&b), first);
    // Rotated on A: the new value reaches B through the remote.
    for (m, args) in [
        (&a, &["secret", "rotate", "db", "--yes"][..]),
        (&a, &["sync"]),
        (&b, &["sync"]),
    ] {
        run(m, args);
    }
    let second = value(&a);
    assert_ne!(second, first);
    assert_eq!(value(&b), second);

    let shown = outputs.join("\n");
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("the outputs".into(), shown.into_bytes()),
        ("the remote's objects".into(), objects_of(&remote.remote)),
    ];
    for m in [&a, &b] {
        haystacks.push((
            format!("{}'s clone objects", m.id()),
            objects_of(&m.clone_dir().join(".git")),
        ));
        let target = m.sb.home().join(".pgpass");
        // The home (clone, state dir, backups, saved plan) but the target.
        for (path, bytes) in files_below(m.sb.home(), &target) {
            haystacks.push((path.display().to_string(), bytes));
        }
        for (path, bytes) in files_below(&m.sb.state_dir(), &target) {
            haystacks.push((path.display().to_string(), bytes));
        }
    }
    assert!(
        haystacks.len() > 20,
        "searched too little: {}",
        haystacks.len()
    );
    // The search finds a value where it is: in the targets, each with the
    // mode a secret-bearing file gets when none is declared.
    for m in [&a, &b] {
        let path = m.sb.home().join(".pgpass");
        assert!(contains(&fs::read(&path).unwrap(), &second));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    for v in [&first, &second] {
        for (what, hay) in &haystacks {
            assert!(!contains(hay, v), "a value is in {what}");
        }
    }
    // B's hand edit was kept, encrypted.
    let backups: Vec<_> = files_below(&b.sb.state_dir().join("backups"), Path::new("/"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        backups
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".pgpass.age")),
        "{backups:?}"
    );
}
