//! A config repo that is a git clone: the shared record's copies in it (at
//! HEAD, at the remote and at their merge base), the working copy, the
//! merge driver that keeps git from text-merging the record, and the tree
//! operations every backend over a clone shares (the tracking commit, the
//! merge of the upstream, how a file stands against the last commit).

use std::path::Path;

use super::SyncError;
use super::backend::Revision;
use super::git::{Git, Upstream};
use super::shared::{self, SHARED_RECORD_PATH, SharedRecord};
use crate::fsutil;

/// The merge driver's name in `.gitattributes` and git config.
pub const MERGE_DRIVER: &str = "stead";

/// The `.gitattributes` line that routes the record to the driver.
pub const ATTRIBUTES_LINE: &str = ".stead/state.json merge=stead";

use super::SyncError as Error;
pub use super::backend::Records;
use super::backend::{SourceStatus, StoppedUpdate, Update};
use super::git::{MergeOutcome, PathStatus};

/// Whether the remote branch has commits HEAD does not.
pub fn remote_has_news(git: &Git, records: &Records) -> Result<bool, SyncError> {
    Ok(match (&records.remote_rev, &records.local_rev) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(r), Some(h)) => !git.is_ancestor(r.as_str(), h.as_str())?,
    })
}

/// Reads the record at `rev`, naming it `rev:.stead/state.json` in errors.
pub fn read_at(git: &Git, rev: &str) -> Result<Option<SharedRecord>, SyncError> {
    match git.show_file(rev, SHARED_RECORD_PATH)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(shared::parse(
            &bytes,
            &format!("{rev}:{SHARED_RECORD_PATH}"),
        )?)),
    }
}

/// Reads HEAD's, the remote branch's and their merge base's copies (as of
/// the last fetch).
pub fn read_records(git: &Git, up: &Upstream) -> Result<Records, SyncError> {
    let head_commit = git.head()?;
    let remote_commit = if git.rev_exists(&up.tracking_ref)? {
        Some(git.run(&["rev-parse", &up.tracking_ref])?)
    } else {
        None
    };
    let base_commit = match (&head_commit, &remote_commit) {
        (Some(h), Some(r)) => git.merge_base(h, r)?,
        _ => None,
    };
    let read = |c: &Option<String>| match c {
        Some(c) => read_at(git, c),
        None => Ok(None),
    };
    let rev = |c: Option<String>| c.map(Revision::new);
    Ok(Records {
        local: read(&head_commit)?,
        remote: read(&remote_commit)?,
        base: read(&base_commit)?,
        local_rev: rev(head_commit),
        remote_rev: rev(remote_commit),
        base_rev: rev(base_commit),
    })
}

/// How many of the remote's commits since the base are searched for the
/// one that changed a machine's entry.
const CHANGED_BY_SEARCH: usize = 50;

/// The newest commit on the remote since the base (first parents) whose
/// record changed machine `me`'s profile or config path: its author and
/// short id, as `Name <email> in commit abc1234 (2026-12-03)`.
pub fn own_entry_changed_by(
    git: &Git,
    records: &Records,
    me: &str,
) -> Result<Option<String>, SyncError> {
    let Some(remote) = &records.remote_rev else {
        return Ok(None);
    };
    let range = match &records.base_rev {
        Some(base) => format!("{}..{}", base.as_str(), remote.as_str()),
        None => remote.as_str().to_string(),
    };
    let limit = format!("-{CHANGED_BY_SEARCH}");
    let listed = git.run(&[
        "log",
        &limit,
        "--first-parent",
        "--format=%H",
        &range,
        "--",
        SHARED_RECORD_PATH,
    ])?;
    let own = |r: Option<SharedRecord>| {
        r.and_then(|r| r.machines.get(me).cloned())
            .map(|m| (m.active_profile, m.config_path))
    };
    for commit in listed.lines().filter(|l| !l.is_empty()) {
        let after = own(read_at(git, commit).ok().flatten());
        let parent = format!("{commit}^");
        let before = if git.rev_exists(&parent)? {
            own(read_at(git, &parent).ok().flatten())
        } else {
            None
        };
        if after != before {
            let who = git.run(&[
                "log",
                "-1",
                "--format=%an <%ae> in commit %h (%ad)",
                "--date=short",
                commit,
            ])?;
            return Ok(Some(who));
        }
    }
    Ok(None)
}

/// The working tree's copy (`None`: there is none).
pub fn read_working(git: &Git) -> Result<Option<SharedRecord>, SyncError> {
    let path = git.root().join(SHARED_RECORD_PATH);
    // A FIFO in the repo must not hang sync or history: it is refused.
    match crate::ownfile::read(&path) {
        Ok(bytes) => Ok(Some(shared::parse(&bytes, &path.display().to_string())?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fsutil::FsError::new("cannot read", &path, e).into()),
    }
}

/// Replaces the working tree's copy atomically.
pub fn write_working(git: &Git, record: &SharedRecord) -> Result<(), SyncError> {
    let path = git.root().join(SHARED_RECORD_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fsutil::FsError::new("cannot create", dir, e))?;
    }
    fsutil::atomic_write(&path, &shared::to_bytes(record), 0o644)?;
    Ok(())
}

/// Routes `.stead/state.json` to `stead __merge-driver` in this clone: the
/// `.gitattributes` line (returns whether the file changed, so the caller
/// can commit it) and the clone's git config naming `stead_exe`.
pub fn install_merge_driver(git: &Git, stead_exe: &Path) -> Result<bool, SyncError> {
    let quoted = shell_quote(&stead_exe.display().to_string());
    let driver = format!("{quoted} __merge-driver %O %A %B %P");
    if git
        .config_get(&format!("merge.{MERGE_DRIVER}.driver"))?
        .as_deref()
        != Some(&driver)
    {
        git.config_set(
            &format!("merge.{MERGE_DRIVER}.name"),
            "stead: 3-way merge of the shared state record",
        )?;
        git.config_set(&format!("merge.{MERGE_DRIVER}.driver"), &driver)?;
    }
    let path = git.root().join(".gitattributes");
    let current = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(fsutil::FsError::new("cannot read", &path, e).into()),
    };
    if current.lines().any(|l| l.trim() == ATTRIBUTES_LINE) {
        return Ok(false);
    }
    let mut next = current;
    if !next.is_empty() && !next.ends_with('\n') {
        next.push('\n');
    }
    next.push_str(ATTRIBUTES_LINE);
    next.push('\n');
    fsutil::atomic_write(&path, next.as_bytes(), 0o644)?;
    Ok(true)
}

/// `s` in single quotes for the shell git runs drivers with.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The commit `up`'s tracking ref names (`None`: not fetched yet).
pub fn tracking_commit(git: &Git, up: &Upstream) -> Result<Option<String>, Error> {
    if !git.rev_exists(&up.tracking_ref)? {
        return Ok(None);
    }
    Ok(Some(git.run(&["rev-parse", &up.tracking_ref])?))
}

/// Merges what the last fetch brought from `up` into the tree. Uncommitted
/// changes to files the merge would write are refused first, by name:
/// git's own refusal names neither the cause nor the way out.
pub fn merge_upstream(git: &Git, up: &Upstream, message: &str) -> Result<Update, Error> {
    let Some(theirs) = tracking_commit(git, up)? else {
        return Ok(Update::Clean);
    };
    let in_the_way = git.uncommitted_in_the_way(&theirs)?;
    if !in_the_way.is_empty() {
        return Err(Error::UncommittedInTheWay {
            root: git.root().to_path_buf(),
            files: in_the_way,
        });
    }
    match git.merge(&up.tracking_ref, message)? {
        MergeOutcome::Conflicts(files) => Ok(Update::Conflicts(files)),
        _ => Ok(Update::Clean),
    }
}

/// Whether a symbolic link lies on the way from `root` to `path` (or is
/// `path`): git does not look through it, and writing the path would
/// replace it.
pub fn link_on_the_way(root: &Path, path: &str) -> bool {
    let mut at = root.to_path_buf();
    Path::new(path).components().any(|part| {
        at.push(part);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}

/// How `path` stands against the tree's last commit ([`SourceStatus`]).
pub fn source_status(git: &Git, path: &str) -> Result<SourceStatus, Error> {
    if link_on_the_way(git.root(), path) {
        return Ok(SourceStatus::Symlink);
    }
    Ok(match git.path_status(path)? {
        PathStatus::Unchanged => SourceStatus::Committed,
        PathStatus::Changed => SourceStatus::Modified,
        PathStatus::Untracked => SourceStatus::Untracked,
    })
}

/// What to tell the user about a git merge of the tree stopped on conflicts.
pub fn stopped_merge() -> StoppedUpdate {
    StoppedUpdate {
        heading: "Git merge stopped on conflicts in other files of the config repo:".to_string(),
        finish: "edit the files, then: git add <files> && git commit".to_string(),
        undo: "git merge --abort".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn driver_install_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::init_repo_with_env(
            dir.path(),
            vec![
                ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
                ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ],
        )
        .unwrap();
        std::fs::write(dir.path().join(".gitattributes"), "*.png binary").unwrap();
        assert!(install_merge_driver(&git, Path::new("/opt/my stead/stead")).unwrap());
        assert!(!install_merge_driver(&git, Path::new("/opt/my stead/stead")).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".gitattributes")).unwrap(),
            "*.png binary\n.stead/state.json merge=stead\n"
        );
        assert_eq!(
            git.config_get("merge.stead.driver").unwrap().as_deref(),
            Some("'/opt/my stead/stead' __merge-driver %O %A %B %P")
        );
    }
}
