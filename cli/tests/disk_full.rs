//! A full disk (issue 12, item 3): with a small tmpfs as the home, an apply
//! that runs out of space fails cleanly: every target keeps its old content,
//! no truncated backup is left, the state and the journal still load, and
//! the next apply, with space again, converges.
//!
//! Needs root (to mount the tmpfs); skipped with a message otherwise.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Repo;

/// A tmpfs mounted on a directory, unmounted when dropped (also when an
/// assertion fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED disk_full: not running as root, cannot mount a tmpfs");
            return None;
        }
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            other => {
                eprintln!(
                    "SKIPPED disk_full: cannot mount a tmpfs on {} ({other:?})",
                    dir.display()
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The size of each new file and of the user's file to back up: the four
/// copies the converging run holds at once (old, backup, temp, new) fit in
/// the 4 MiB tmpfs with room to spare.
const SIZE: usize = 512 * 1024;

/// `n` bytes of one repeated letter: a truncated copy is easy to tell.
fn blob(letter: u8, n: usize) -> Vec<u8> {
    vec![letter; n]
}

/// Writes a filler file until the disk is full, then frees `keep` bytes.
fn fill(path: &Path, keep: u64) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(keep)).unwrap();
    f.sync_all().unwrap();
}

fn manifest(version: &str) -> String {
    format!(
        "[file.a]\npath = \"~/a\"\nsource = \"a.{version}\"\n\n\
         [file.b]\npath = \"~/b\"\nsource = \"b.{version}\"\n"
    )
}

/// Every file below `dir`, with no temp name among them.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn apply_on_a_full_disk_fails_cleanly_and_the_next_one_converges() {
    let r = Repo::new(&manifest("v1"));
    let Some(_mounted) = Tmpfs::mount(r.home(), "4m") else {
        return;
    };
    let home = r.home().to_path_buf();
    r.write_source("a.v1", "a version 1\n");
    r.write_source("b.v1", "b version 1\n");
    r.write_source("a.v2", &String::from_utf8(blob(b'A', SIZE)).unwrap());
    r.write_source("b.v2", &String::from_utf8(blob(b'B', SIZE)).unwrap());
    r.ok(&["apply", "--yes"]);
    // b is replaced by hand: the next apply backs up the user's 1 MiB first.
    let user_b = blob(b'u', SIZE);
    fs::write(home.join("b"), &user_b).unwrap();

    // Half of SIZE free: neither the new a nor b's backup fits.
    let filler = home.join("filler");
    fill(&filler, SIZE as u64 / 2);
    r.write_manifest(&manifest("v2"));
    let (code, out, err) = r.run(&["apply", "--yes", "--force"]);
    assert_ne!(
        code, 0,
        "an apply without space cannot succeed:\n{out}\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        format!("{out}{err}").contains("No space left"),
        "says why:\n{out}\n{err}"
    );

    // Every target keeps its old content.
    assert_eq!(fs::read_to_string(home.join("a")).unwrap(), "a version 1\n");
    assert!(
        fs::read(home.join("b")).unwrap() == user_b,
        "b kept the user's content"
    );
    // No temp file anywhere, and no truncated backup: a copy of b is whole or absent.
    for p in files_below(&home) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "temp left: {}", p.display());
        if p.starts_with(r.sb.state_dir().join("backups")) && name == "b" {
            assert!(
                fs::read(&p).unwrap() == user_b,
                "truncated backup {}",
                p.display()
            );
        }
    }
    // The state and the journal load.
    r.sb.state_json();
    let layout = r.sb.layout();
    stead_lib::journal::load(
        &layout.state_dir().join(stead_lib::journal::JOURNAL_FILE),
        &layout.backups_dir(),
    )
    .expect("journal loads");

    // With space again, the next apply converges.
    fs::remove_file(&filler).unwrap();
    r.ok(&["apply", "--yes", "--force"]);
    assert!(fs::read(home.join("a")).unwrap() == blob(b'A', SIZE));
    assert!(fs::read(home.join("b")).unwrap() == blob(b'B', SIZE));
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
    let copies: Vec<_> = files_below(&r.sb.state_dir().join("backups"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "b"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        fs::read(&copies[0]).unwrap() == user_b,
        "the backup is whole"
    );
}
