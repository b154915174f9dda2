//! One lineage of machines over either sync backend, for scenarios written
//! once and run on both: git (the record in `.stead/` of the config repo on
//! a bare remote) and etcd (the record on a cluster started by the test, the
//! config repo still on a bare remote).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::etcd::EtcdWorld;
use super::remote::{Machine, Remote, hybrid};
use super::wait_until;

/// The manifest every fleet's config repo holds: three profiles, a copied
/// file and a template (two targets, so machines can change different ones).
pub const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[profile.work.vars]
who = "office"

[profile.laptop.vars]
who = "lap"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"

[file.greeting]
path = "~/.greeting"
template = "greeting.j2"
"#;

/// The config repo's files: [`MANIFEST`] and its sources.
pub const FILES: &[(&str, &str)] = &[
    ("stead.toml", MANIFEST),
    ("bashrc", "# shared bashrc\n"),
    ("greeting.j2", "hello from {{ vars.who }}\n"),
];

/// The branch of the git fleet's config repo.
const BRANCH: &str = "main";

/// A lineage on one backend.
pub enum Fleet {
    /// The record is `.stead/state.json` on the remote's branch.
    Git(Remote),
    /// The record is on etcd; the config repo's remote holds only config.
    Etcd(EtcdWorld),
}

impl Fleet {
    /// A new lineage on git: a bare remote seeded with [`FILES`].
    pub fn git() -> Fleet {
        Fleet::Git(Remote::seeded(BRANCH, FILES))
    }

    /// A new lineage on a one-member etcd, the config repo seeded with
    /// [`FILES`]; `None` when etcd is not installed (outside CI).
    pub fn etcd() -> Option<Fleet> {
        EtcdWorld::seeded(1, FILES).map(Fleet::Etcd)
    }

    /// The backend's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Fleet::Git(_) => "git",
            Fleet::Etcd(_) => "etcd",
        }
    }

    /// A new machine (own HOME, clone at `<home>/dots`, default profile)
    /// joined to the lineage: `init --repo` on git, a clone and
    /// `init --etcd` on etcd.
    pub fn join(&self) -> Machine {
        match self {
            Fleet::Git(remote) => remote.join(None),
            Fleet::Etcd(w) => w.join(),
        }
    }

    /// Two machines joined and synced, `a` last so that both saw everything.
    pub fn two_synced(&self) -> (Machine, Machine) {
        super::remote::two_synced(|| self.join(), || self.join())
    }

    /// The shared record as the store holds it now.
    pub fn record(&self) -> Value {
        match self {
            Fleet::Git(remote) => remote.record_on(BRANCH),
            Fleet::Etcd(w) => w.record(),
        }
    }

    /// Edits the shared record in the store by hand (git: a plain clone
    /// that commits and pushes; etcd: a fresh copy that publishes).
    pub fn edit_record(&self, edit: impl FnOnce(&mut Value)) {
        match self {
            Fleet::Git(remote) => {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static EDITS: AtomicUsize = AtomicUsize::new(0);
                let name = format!("editor-{}", EDITS.fetch_add(1, Ordering::SeqCst));
                remote.edit_record(&name, "edit the record by hand", &[], edit);
            }
            Fleet::Etcd(w) => w.edit_record_json(edit),
        }
    }

    /// The `init` that `m`, removed from the lineage, is told to run to
    /// rejoin it.
    pub fn rejoin_command(&self, m: &Machine) -> String {
        let clone = m.clone_dir();
        match self {
            Fleet::Git(remote) => format!(
                "stead init --repo {} --path {}",
                remote.url(),
                clone.display()
            ),
            Fleet::Etcd(w) => format!(
                "stead init --etcd {} --prefix /stead/v1/ --path {}",
                w.etcd.endpoints(),
                clone.display()
            ),
        }
    }

    /// Puts `m` on the hybrid lock: its own and the lineage's (git: the ref
    /// `refs/stead/lock` on the remote, broken once older than `timeout`;
    /// etcd: a key bound to a lease of `timeout` seconds).
    pub fn hybrid(&self, m: &Machine, timeout: u64) {
        hybrid(m, timeout);
    }

    /// Starts `apply --yes` on `m` with a manifest (written in its clone,
    /// not committed) whose exec waits for the returned holder's release;
    /// returns once the exec runs, so the apply holds its locks.
    pub fn hold_with_apply(&self, m: &Machine) -> Holder {
        let signals = tempfile::tempdir().unwrap();
        std::fs::write(
            m.clone_dir().join("stead.toml"),
            super::waiting_manifest(MANIFEST, signals.path()),
        )
        .unwrap();
        let stderr = std::fs::File::create(signals.path().join("stderr")).unwrap();
        let child = m.spawn_with(&["apply", "--yes"], Stdio::null(), Stdio::from(stderr));
        let mut holder = Holder {
            child: Some(child),
            signals,
        };
        let started = holder.signals.path().join("started");
        wait_until("the apply holds the locks and runs its exec", || {
            if let Some(status) = holder.child_mut().try_wait().unwrap() {
                panic!("the apply ended early: {status}\n{}", holder.stderr());
            }
            started.exists()
        });
        holder
    }
}

/// An apply held in its waiting exec. Dropped (also when an assertion
/// failed), it is released, given 30 s to end, then killed, and waited on:
/// no process outlives the test.
pub struct Holder {
    child: Option<Child>,
    signals: tempfile::TempDir,
}

impl Holder {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    fn release_file(&self) -> PathBuf {
        self.signals.path().join("release")
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.signals.path().join("stderr")).unwrap_or_default()
    }

    /// Lets its exec end and waits (bounded) for the apply to exit:
    /// (exit code, stderr).
    pub fn release(mut self) -> (i32, String) {
        std::fs::write(self.release_file(), "").unwrap();
        let mut child = self.child.take().unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(30));
        let code = status.and_then(|s| s.code()).unwrap_or(-1);
        (code, self.stderr())
    }
}

/// Waits up to `limit` for `child` to exit; kills it past that. Always reaps.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The release ends the exec (stead's child) too, killed or not.
            let _ = std::fs::write(self.release_file(), "");
            wait_bounded(&mut child, Duration::from_secs(30));
        }
    }
}
