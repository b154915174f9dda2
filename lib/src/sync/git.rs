//! The git backend: stead drives the `git` program (never a library).
//!
//! Every call runs `git` in the repository's top-level directory with
//! `LC_ALL=C` (so its messages parse the same everywhere) and
//! `GIT_TERMINAL_PROMPT=0` (so it fails instead of waiting for a password),
//! plus any extra environment given with [`Git::with_env`]. Variables that
//! would point git at another repository (`GIT_DIR`, `GIT_WORK_TREE`, ...)
//! are removed, so a `Git` always works on its own root.
//!
//! No branch name is ever assumed: the branch is whatever `HEAD` names, and
//! its remote counterpart is the configured upstream or the branch of the
//! same name on the only (or `origin`) remote ([`Git::upstream`]).
//!
//! Remote failures are sorted into what a caller acts on: a remote that
//! cannot be reached ([`GitError::Unreachable`]), a push the remote refused
//! ([`PushOutcome::Rejected`]) and a lease that was lost
//! ([`LeaseOutcome::Lost`]). Pushes use `--porcelain`, whose per-ref status
//! lines tell a refused ref from a remote that never answered.
//!
//! Every call that talks to a remote (clone, fetch, push, ls-remote) has a
//! network timeout ([`Git::with_network_timeout`], default
//! [`DEFAULT_NETWORK_TIMEOUT`]): git's own `http.lowSpeedLimit` /
//! `http.lowSpeedTime`, ssh's `ConnectTimeout` / `ServerAliveInterval` (only
//! when the user has no ssh command of their own), and a hard deadline on the
//! process: at the deadline git's whole process group is killed and the call
//! fails as [`GitError::Unreachable`], naming the timeout.
//!
//! The remote lock is a ref (e.g. `refs/stead/lock`) on the remote pointing at
//! a parentless commit whose tree holds one blob, `lock.json`. It is taken,
//! broken and released with `--force-with-lease`, so two machines can never
//! both believe they replaced the same value.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a git call that talks to a remote may take, unless configured.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables that would make git work on another repository than ours.
const REPO_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
];

/// The identity of the commits that carry the remote lock.
const LOCK_IDENTITY: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "stead"),
    ("GIT_AUTHOR_EMAIL", "stead@localhost"),
    ("GIT_COMMITTER_NAME", "stead"),
    ("GIT_COMMITTER_EMAIL", "stead@localhost"),
];

/// The file in a remote lock commit's tree.
const LOCK_FILE: &str = "lock.json";

/// Why a git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The git program is not installed / cannot be started.
    #[error("cannot run git: {0} (install git and make sure it is on PATH)")]
    NotInstalled(String),
    /// The directory is not inside a git work tree.
    #[error(
        "{} is not a git repository (or is not inside one): run `git init` or `git clone` there, or point stead at a git work tree",
        .path.display()
    )]
    NotARepo {
        /// The directory that was given.
        path: PathBuf,
    },
    /// The remote cannot be reached (network, missing path, auth).
    #[error("cannot reach remote '{remote}': {reason}")]
    Unreachable {
        /// The remote's name or URL.
        remote: String,
        /// Git's own first meaningful stderr line(s).
        reason: String,
    },
    /// Any other failing git command.
    #[error("git {args} failed in {} (exit {code}): {stderr}", .dir.display())]
    Failed {
        /// The arguments, joined by spaces.
        args: String,
        /// The directory git ran in.
        dir: PathBuf,
        /// Git's exit code (-1 when killed by a signal).
        code: i32,
        /// Git's stderr, trimmed.
        stderr: String,
    },
}

/// Called with each git command (its arguments, joined by spaces) before it
/// runs: what `--verbose` shows.
#[derive(Clone)]
pub struct Trace(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace")
    }
}

/// A git work tree, driven through the `git` program.
#[derive(Debug, Clone)]
pub struct Git {
    root: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
    trace: Option<Trace>,
}

/// Where the current branch is pushed to and fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The remote's name, e.g. `origin`.
    pub remote: String,
    /// The branch's name on the remote (without `refs/heads/`).
    pub branch: String,
    /// The local remote-tracking ref, e.g. `refs/remotes/origin/main`; it may
    /// not exist yet (check with [`Git::rev_exists`]).
    pub tracking_ref: String,
}

/// What a [`Git::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The revision was already merged; nothing changed.
    UpToDate,
    /// HEAD moved forward to the revision; no merge commit.
    FastForward,
    /// A merge commit was made.
    Merged,
    /// The merge stopped on conflicts in these paths and is still in progress.
    Conflicts(Vec<String>),
}

/// What a [`Git::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote branch now points at our HEAD.
    Pushed,
    /// The remote refused, with git's reason, e.g. `fetch first` or `non-fast-forward`.
    Rejected(String),
}

/// How one path stands against HEAD ([`Git::path_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStatus {
    /// Tracked and as committed (or neither tracked nor on disk).
    Unchanged,
    /// Changed in the work tree or the index relative to HEAD.
    Changed,
    /// On disk but not tracked (ignored files count).
    Untracked,
}

/// What a leased update of a remote ref did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The ref was created, replaced or deleted as asked.
    Done,
    /// The remote ref was not what we expected: someone else holds or changed it.
    Lost,
}

/// One per-ref status line of `git push --porcelain`.
#[derive(Debug)]
struct RefStatus {
    flag: char,
    to: String,
    summary: String,
}

impl RefStatus {
    /// Git's reason for a rejection: the text in parentheses, else the summary.
    fn reason(&self) -> String {
        match (self.summary.find('('), self.summary.rfind(')')) {
            (Some(a), Some(b)) if a < b => self.summary[a + 1..b].to_string(),
            _ => self
                .summary
                .trim_matches(|c| c == '[' || c == ']')
                .to_string(),
        }
    }
}

impl Git {
    /// Opens the work tree containing `dir`; the root is its top level.
    pub fn open(dir: &Path) -> Result<Git, GitError> {
        Git::open_with_env(dir, Vec::new())
    }

    /// Like [`Git::open`], with extra environment for every git call (see [`Git::with_env`]).
    pub fn open_with_env(dir: &Path, env: Vec<(String, String)>) -> Result<Git, GitError> {
        if !dir.is_dir() {
            return Err(GitError::NotARepo {
                path: dir.to_path_buf(),
            });
        }
        let probe = Git {
            root: dir.to_path_buf(),
            env,
            timeout: DEFAULT_NETWORK_TIMEOUT,
            trace: None,
        };
        let out = probe.output(&["rev-parse", "--show-toplevel"], None, &[])?;
        let top = stdout_line(&out.stdout);
        if !out.status.success() || top.is_empty() {
            return Err(GitError::NotARepo {
                path: dir.to_path_buf(),
            });
        }
        Ok(Git {
            root: PathBuf::from(top),
            env: probe.env,
            timeout: DEFAULT_NETWORK_TIMEOUT,
            trace: probe.trace,
        })
    }

    /// Clones `url` into `dest` (created by git); an empty remote gives an
    /// unborn branch. An unreachable `url` gives [`GitError::Unreachable`].
    pub fn clone_repo(url: &str, dest: &Path) -> Result<Git, GitError> {
        Git::clone_repo_with_env(url, dest, Vec::new())
    }

    /// Like [`Git::clone_repo`], running the clone itself with extra environment
    /// too, and keeping it for the returned [`Git`].
    pub fn clone_repo_with_env(
        url: &str,
        dest: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Git, GitError> {
        Git::clone_repo_timed(url, dest, env, DEFAULT_NETWORK_TIMEOUT)
    }

    /// Like [`Git::clone_repo_with_env`], with a network timeout for the clone
    /// and for the returned [`Git`] (see [`Git::with_network_timeout`]).
    pub fn clone_repo_timed(
        url: &str,
        dest: &Path,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Git, GitError> {
        Git::clone_repo_traced(url, dest, env, timeout, None)
    }

    /// Like [`Git::clone_repo_timed`], telling `trace` every git command
    /// (see [`Git::with_trace`]).
    pub fn clone_repo_traced(
        url: &str,
        dest: &Path,
        env: Vec<(String, String)>,
        timeout: Duration,
        trace: Option<Trace>,
    ) -> Result<Git, GitError> {
        let base = Git {
            root: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env,
            timeout,
            trace: trace.clone(),
        };
        let dest_str = dest.to_string_lossy();
        let args = ["clone", "--quiet", "--", url, dest_str.as_ref()];
        let out = base.net_output(&args, url)?;
        if !out.status.success() {
            return Err(base.remote_failure(&args, url, &out));
        }
        let git = Git::open_with_env(dest, base.env)?.with_network_timeout(timeout);
        Ok(match trace {
            Some(t) => git.with_trace(t),
            None => git,
        })
    }

    /// Runs `git init` in `dir` (created if needed) and opens it.
    pub fn init_repo(dir: &Path) -> Result<Git, GitError> {
        Git::init_repo_with_env(dir, Vec::new())
    }

    /// Like [`Git::init_repo`], with extra environment (see [`Git::with_env`]).
    pub fn init_repo_with_env(dir: &Path, env: Vec<(String, String)>) -> Result<Git, GitError> {
        let base = Git {
            root: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env,
            timeout: DEFAULT_NETWORK_TIMEOUT,
            trace: None,
        };
        let dir_str = dir.to_string_lossy();
        base.run(&["init", "--quiet", "--", dir_str.as_ref()])?;
        Git::open_with_env(dir, base.env)
    }

    /// Adds an environment variable to every git call (tests use it to isolate
    /// git from the user's configuration).
    pub fn with_env(mut self, key: &str, value: &str) -> Git {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets how long a call that talks to a remote may take (at least one
    /// second): past it, git is killed and the call is
    /// [`GitError::Unreachable`].
    pub fn with_network_timeout(mut self, timeout: Duration) -> Git {
        self.timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// Tells `trace` every git command before it runs (`--verbose`).
    pub fn with_trace(mut self, trace: Trace) -> Git {
        self.trace = Some(trace);
        self
    }

    /// The network timeout.
    pub fn network_timeout(&self) -> Duration {
        self.timeout
    }

    /// The work tree's top-level directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs git with `args`; its stdout without the trailing newline.
    pub fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.output(args, None, &[])?;
        if !out.status.success() {
            return Err(self.failed(args, &out));
        }
        Ok(trim_newline(&String::from_utf8_lossy(&out.stdout)).to_string())
    }

    /// The names of the configured remotes.
    pub fn remotes(&self) -> Result<Vec<String>, GitError> {
        Ok(self
            .run(&["remote"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The URL of `remote`; None when there is no such remote.
    pub fn remote_url(&self, remote: &str) -> Result<Option<String>, GitError> {
        let args = ["remote", "get-url", "--", remote];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => Ok(Some(stdout_line(&out.stdout))),
            Some(2) => Ok(None),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// The current branch's name (also for an unborn branch); None when detached.
    pub fn current_branch(&self) -> Result<Option<String>, GitError> {
        let args = ["symbolic-ref", "--quiet", "HEAD"];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => {
                let full = stdout_line(&out.stdout);
                Ok(full.strip_prefix("refs/heads/").map(str::to_string))
            }
            Some(1) => Ok(None),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// The commit HEAD points at; None when the branch is unborn.
    pub fn head(&self) -> Result<Option<String>, GitError> {
        self.resolve_commit("HEAD")
    }

    /// The current branch's configured upstream; else `<remote>/<branch>` where
    /// remote is the only remote or `origin`, even if that remote branch does
    /// not exist yet (its tracking ref may then be missing: check with
    /// [`Git::rev_exists`]). None when detached or when there is no such remote.
    pub fn upstream(&self) -> Result<Option<Upstream>, GitError> {
        let Some(branch) = self.current_branch()? else {
            return Ok(None);
        };
        let remote_cfg = self.config_get(&format!("branch.{branch}.remote"))?;
        let merge_cfg = self.config_get(&format!("branch.{branch}.merge"))?;
        if let (Some(remote), Some(merge)) = (remote_cfg, merge_cfg) {
            let remote_branch = merge
                .strip_prefix("refs/heads/")
                .unwrap_or(&merge)
                .to_string();
            let configured = self
                .run(&[
                    "for-each-ref",
                    "--format=%(upstream)",
                    &format!("refs/heads/{branch}"),
                ])?
                .trim()
                .to_string();
            let tracking_ref = if configured.is_empty() {
                format!("refs/remotes/{remote}/{remote_branch}")
            } else {
                configured
            };
            return Ok(Some(Upstream {
                remote,
                branch: remote_branch,
                tracking_ref,
            }));
        }
        let remotes = self.remotes()?;
        let remote = match remotes.as_slice() {
            [only] => only.clone(),
            many if many.iter().any(|r| r == "origin") => "origin".to_string(),
            _ => return Ok(None),
        };
        Ok(Some(Upstream {
            tracking_ref: format!("refs/remotes/{remote}/{branch}"),
            remote,
            branch,
        }))
    }

    /// Whether `rev` names a commit.
    pub fn rev_exists(&self, rev: &str) -> Result<bool, GitError> {
        Ok(self.resolve_commit(rev)?.is_some())
    }

    /// Fetches `remote`; [`GitError::Unreachable`] when it cannot be reached.
    pub fn fetch(&self, remote: &str) -> Result<(), GitError> {
        let args = ["fetch", "--quiet", "--", remote];
        let out = self.net_output(&args, remote)?;
        if !out.status.success() {
            return Err(self.remote_failure(&args, remote, &out));
        }
        Ok(())
    }

    /// The best common ancestor of `a` and `b`; None when they share no history.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, GitError> {
        let args = ["merge-base", a, b];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => Ok(Some(stdout_line(&out.stdout))),
            Some(1) if out.stderr.is_empty() => Ok(None),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// Whether commit `a` is an ancestor of (or equal to) commit `b`.
    pub fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, GitError> {
        let args = ["merge-base", "--is-ancestor", a, b];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) if out.stderr.is_empty() => Ok(false),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// The bytes of `path` at `rev`; None when `path` is absent there.
    /// A `rev` that does not exist is an error.
    pub fn show_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let spec = format!("{rev}:{path}");
        let exists = self.output(&["cat-file", "-e", &spec], None, &[])?;
        if !exists.status.success() {
            if self.rev_exists(rev)? {
                return Ok(None);
            }
            let args = ["rev-parse", "--verify", rev];
            let out = self.output(&args, None, &[])?;
            return Err(self.failed(&args, &out));
        }
        let args = ["cat-file", "blob", &spec];
        let out = self.output(&args, None, &[])?;
        if !out.status.success() {
            return Err(self.failed(&args, &out));
        }
        Ok(Some(out.stdout))
    }

    /// Whether `paths` (every path when empty) have no staged or unstaged
    /// changes; untracked files do not count.
    pub fn is_clean(&self, paths: &[&str]) -> Result<bool, GitError> {
        let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
        args.extend_from_slice(paths);
        Ok(self.run(&args)?.trim().is_empty())
    }

    /// How `path` stands against HEAD: `git status` of that one path, with
    /// untracked and ignored files shown (an ignored file is as uncommitted
    /// as an untracked one). The path is taken literally, never as a glob.
    pub fn path_status(&self, path: &str) -> Result<PathStatus, GitError> {
        let spec = format!(":(literal){path}");
        let out = self.run(&[
            "status",
            "--porcelain=v1",
            "--untracked-files=all",
            "--ignored=matching",
            "--",
            &spec,
        ])?;
        let Some(line) = out.lines().find(|l| !l.trim().is_empty()) else {
            return Ok(PathStatus::Unchanged);
        };
        Ok(match line.get(..2) {
            Some("??" | "!!") => PathStatus::Untracked,
            _ => PathStatus::Changed,
        })
    }

    /// Stages `paths` (`git add`).
    pub fn add(&self, paths: &[&str]) -> Result<(), GitError> {
        let mut args = vec!["add", "--"];
        args.extend_from_slice(paths);
        self.run(&args).map(|_| ())
    }

    /// Commits what is staged; None when nothing is staged (no commit made),
    /// else the new HEAD.
    pub fn commit(&self, message: &str) -> Result<Option<String>, GitError> {
        let args = ["diff", "--cached", "--quiet"];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => return Ok(None),
            Some(1) => {}
            _ => return Err(self.failed(&args, &out)),
        }
        self.run(&["commit", "--quiet", "-m", message])?;
        self.head()
    }

    /// Merges `rev` into HEAD (`git merge --no-edit -m message rev`). On
    /// conflicts the merge is left in progress and the unmerged paths returned.
    pub fn merge(&self, rev: &str, message: &str) -> Result<MergeOutcome, GitError> {
        let target = self.resolve_commit(rev)?;
        let before = self.head()?;
        if let (Some(before), Some(target)) = (&before, &target)
            && self.is_ancestor(target, before)?
        {
            return Ok(MergeOutcome::UpToDate);
        }
        let args = ["merge", "--no-edit", "-m", message, rev];
        let out = self.output(&args, None, &[])?;
        if !out.status.success() {
            let unmerged = self.unmerged_paths()?;
            if unmerged.is_empty() {
                return Err(self.failed(&args, &out));
            }
            return Ok(MergeOutcome::Conflicts(unmerged));
        }
        let after = self.head()?;
        if after == before {
            Ok(MergeOutcome::UpToDate)
        } else if after.is_some() && after == target {
            Ok(MergeOutcome::FastForward)
        } else {
            Ok(MergeOutcome::Merged)
        }
    }

    /// Pushes HEAD to `up.branch` on `up.remote`, setting the current branch's
    /// upstream if it has none. A refusal is [`PushOutcome::Rejected`]; a
    /// remote that cannot be reached is [`GitError::Unreachable`].
    pub fn push(&self, up: &Upstream) -> Result<PushOutcome, GitError> {
        let dst = format!("refs/heads/{}", up.branch);
        let refspec = format!("HEAD:{dst}");
        let mut args = vec!["push", "--porcelain"];
        if let Some(branch) = self.current_branch()?
            && self
                .config_get(&format!("branch.{branch}.merge"))?
                .is_none()
        {
            args.push("--set-upstream");
        }
        args.extend_from_slice(&[up.remote.as_str(), refspec.as_str()]);
        let (out, statuses) = self.push_porcelain(&args, &up.remote)?;
        match statuses.iter().find(|s| s.to == dst) {
            Some(s) if s.flag == '!' => Ok(PushOutcome::Rejected(s.reason())),
            Some(_) if out.status.success() => Ok(PushOutcome::Pushed),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// Sets `key` to `value` in the repository's own config.
    pub fn config_set(&self, key: &str, value: &str) -> Result<(), GitError> {
        self.run(&["config", "--local", key, value]).map(|_| ())
    }

    /// The value of `key` (from any config level); None when unset.
    pub fn config_get(&self, key: &str) -> Result<Option<String>, GitError> {
        let args = ["config", "--get", key];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => Ok(Some(stdout_line(&out.stdout))),
            Some(1) => Ok(None),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// Reads the remote lock ref: None when it does not exist; else its
    /// commit and the bytes of its `lock.json`. Creates no local branch.
    pub fn remote_ref_read(
        &self,
        remote: &str,
        refname: &str,
    ) -> Result<Option<(String, Vec<u8>)>, GitError> {
        // The ref may move between ls-remote and fetch: then fetch again.
        for _ in 0..5 {
            let Some(sha) = self.ls_remote_ref(remote, refname)? else {
                return Ok(None);
            };
            if self.resolve_commit(&sha)?.is_none() {
                let args = [
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--",
                    remote,
                    refname,
                ];
                let out = self.net_output(&args, remote)?;
                if !out.status.success() {
                    if String::from_utf8_lossy(&out.stderr).contains("couldn't find remote ref") {
                        continue;
                    }
                    return Err(self.remote_failure(&args, remote, &out));
                }
                if self.resolve_commit(&sha)?.is_none() {
                    continue;
                }
            }
            let args = ["cat-file", "blob", &format!("{sha}:{LOCK_FILE}")];
            let out = self.output(&args, None, &[])?;
            if !out.status.success() {
                return Err(self.failed(&args, &out));
            }
            return Ok(Some((sha, out.stdout)));
        }
        Err(GitError::Failed {
            args: format!("fetch {remote} {refname}"),
            dir: self.root.clone(),
            code: 0,
            stderr: format!("{refname} kept changing on '{remote}' while it was read"),
        })
    }

    /// Makes a commit whose tree is `lock.json` = `content` and pushes it to
    /// `refname` on `remote` with a lease: `expected` None = the ref must not
    /// exist, Some(sha) = it must be exactly that commit. Returns
    /// ([`LeaseOutcome::Done`], the new commit) or ([`LeaseOutcome::Lost`], the
    /// new commit, which then is on no remote) when the lease failed.
    pub fn remote_ref_create(
        &self,
        remote: &str,
        refname: &str,
        content: &[u8],
        expected: Option<&str>,
    ) -> Result<(LeaseOutcome, String), GitError> {
        let blob = self.run_stdin(&["hash-object", "-w", "--stdin"], content, &[])?;
        let entry = format!("100644 blob {blob}\t{LOCK_FILE}\n");
        let tree = self.run_stdin(&["mktree"], entry.as_bytes(), &[])?;
        // A nonce in the message makes every lock commit unique, so a lease on
        // "absent" or on an old value can never be satisfied by an equal commit.
        let message = format!("stead lock {}", uuid::Uuid::new_v4());
        let commit = self.run_stdin(&["commit-tree", &tree, "-m", &message], &[], LOCK_IDENTITY)?;
        let lease = format!("--force-with-lease={refname}:{}", expected.unwrap_or(""));
        let refspec = format!("{commit}:{refname}");
        let args = ["push", "--porcelain", &lease, "--", remote, &refspec];
        let outcome = self.leased_push(&args, remote, refname)?;
        Ok((outcome, commit))
    }

    /// Deletes `refname` on `remote` if it is still `expected`; Lost if not.
    pub fn remote_ref_delete(
        &self,
        remote: &str,
        refname: &str,
        expected: &str,
    ) -> Result<LeaseOutcome, GitError> {
        let lease = format!("--force-with-lease={refname}:{expected}");
        let refspec = format!(":{refname}");
        let args = ["push", "--porcelain", &lease, "--", remote, &refspec];
        self.leased_push(&args, remote, refname)
    }

    /// Runs a leased push and reads the status of `refname`.
    fn leased_push(
        &self,
        args: &[&str],
        remote: &str,
        refname: &str,
    ) -> Result<LeaseOutcome, GitError> {
        let (out, statuses) = self.push_porcelain(args, remote)?;
        match statuses.iter().find(|s| s.to == refname) {
            Some(s) if s.flag == '!' => {
                let reason = s.reason();
                if reason.contains("stale info")
                    || reason.contains("fetch first")
                    || reason.contains("non-fast-forward")
                    || reason.contains("already exists")
                {
                    Ok(LeaseOutcome::Lost)
                } else {
                    Err(self.failed(args, &out))
                }
            }
            Some(_) if out.status.success() => Ok(LeaseOutcome::Done),
            _ => Err(self.failed(args, &out)),
        }
    }

    /// Runs `git push --porcelain ...`: its output and per-ref status lines.
    /// Failing with no status line at all means the remote never answered.
    fn push_porcelain(
        &self,
        args: &[&str],
        remote: &str,
    ) -> Result<(Output, Vec<RefStatus>), GitError> {
        let out = self.net_output(args, remote)?;
        let statuses = parse_porcelain(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() && statuses.is_empty() {
            return Err(self.remote_failure(args, remote, &out));
        }
        Ok((out, statuses))
    }

    /// The commit on `remote` that `refname` names exactly; None if absent.
    fn ls_remote_ref(&self, remote: &str, refname: &str) -> Result<Option<String>, GitError> {
        let args = ["ls-remote", "--", remote, refname];
        let out = self.net_output(&args, remote)?;
        if !out.status.success() {
            return Err(self.remote_failure(&args, remote, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (sha, name) = l.split_once('\t')?;
            (name.trim() == refname).then(|| sha.trim().to_string())
        }))
    }

    /// Whether `remote` answers: `git ls-remote --heads` under the network
    /// timeout (an unreachable remote, or one that never answers, is
    /// [`GitError::Unreachable`]). Changes nothing.
    pub fn check_reachable(&self, remote: &str) -> Result<(), GitError> {
        let args = ["ls-remote", "--heads", "--", remote];
        let out = self.net_output(&args, remote)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.remote_failure(&args, remote, &out))
        }
    }

    /// The commit `rev` names; None when it names none.
    fn resolve_commit(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let args = ["rev-parse", "--verify", "--quiet", &spec];
        let out = self.output(&args, None, &[])?;
        match out.status.code() {
            Some(0) => Ok(Some(stdout_line(&out.stdout))),
            Some(1) => Ok(None),
            _ => Err(self.failed(&args, &out)),
        }
    }

    /// The paths with uncommitted changes (staged, unstaged or untracked)
    /// that merging `rev` into HEAD would write: the ones git would refuse
    /// to overwrite.
    pub fn uncommitted_in_the_way(&self, rev: &str) -> Result<Vec<String>, GitError> {
        let Some(head) = self.head()? else {
            return Ok(Vec::new());
        };
        let changed: Vec<String> = self
            .run(&[
                "diff",
                "--name-only",
                "-z",
                "--no-renames",
                &format!("{head}...{rev}"),
            ])?
            .split('\0')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let status = self.run(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])?;
        let mut dirty = Vec::new();
        let mut entries = status.split('\0');
        while let Some(entry) = entries.next() {
            let (Some(code), Some(path)) = (entry.get(..2), entry.get(3..)) else {
                continue;
            };
            if code.starts_with('R') || code.starts_with('C') {
                // The source path of a rename or copy follows.
                if let Some(from) = entries.next() {
                    dirty.push(from.to_string());
                }
            }
            dirty.push(path.to_string());
        }
        Ok(changed.into_iter().filter(|p| dirty.contains(p)).collect())
    }

    /// The paths left unmerged by a stopped merge.
    pub fn unmerged_paths(&self) -> Result<Vec<String>, GitError> {
        Ok(self
            .run(&["diff", "--name-only", "--diff-filter=U"])?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Runs git with `input` on stdin; its trimmed stdout, Failed on non-zero.
    fn run_stdin(
        &self,
        args: &[&str],
        input: &[u8],
        env: &[(&str, &str)],
    ) -> Result<String, GitError> {
        let out = self.output(args, Some(input), env)?;
        if !out.status.success() {
            return Err(self.failed(args, &out));
        }
        Ok(stdout_line(&out.stdout))
    }

    /// Runs git in the root with the standard and extra environment.
    fn output(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> Result<Output, GitError> {
        self.tell(args);
        let mut cmd = self.command(args, env);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self.spawn(&mut cmd)?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            // A write error means git exited early; its status tells why.
            let _ = stdin.write_all(data);
        }
        child.wait_with_output().map_err(|e| GitError::Failed {
            args: args.join(" "),
            dir: self.root.clone(),
            code: -1,
            stderr: e.to_string(),
        })
    }

    /// Runs a git command that talks to `remote` under the network timeout:
    /// git's low-speed limit, ssh's connect and keep-alive timeouts, and a
    /// hard deadline at which git's whole process group is killed (then
    /// [`GitError::Unreachable`], naming the timeout).
    fn net_output(&self, args: &[&str], remote: &str) -> Result<Output, GitError> {
        self.tell(args);
        let secs = self.timeout.as_secs().max(1);
        let low_speed = format!("http.lowSpeedTime={secs}");
        let mut full = vec!["-c", "http.lowSpeedLimit=1000", "-c", low_speed.as_str()];
        full.extend_from_slice(args);
        let ssh = self.ssh_command(secs)?;
        let env: Vec<(&str, &str)> = ssh
            .as_deref()
            .map(|c| vec![("GIT_SSH_COMMAND", c)])
            .unwrap_or_default();
        let mut cmd = self.command(&full, &env);
        cmd.stdin(Stdio::null()).process_group(0);
        let mut child = self.spawn(&mut cmd)?;
        // A signal that ends stead meanwhile (Ctrl-C) kills git's group too:
        // in a group of its own, git would not see the terminal's signal.
        let pgid = child.id();
        let on_signal = crate::lock::register_cleanup(Box::new(move || kill_group(pgid)));
        let result = self.net_wait(args, remote, secs, &mut child);
        crate::lock::forget_cleanup(on_signal);
        result
    }

    /// Waits for a network git started by [`Git::net_output`], killing its
    /// group at the deadline.
    fn net_wait(
        &self,
        args: &[&str],
        remote: &str,
        secs: u64,
        child: &mut std::process::Child,
    ) -> Result<Output, GitError> {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        for (which, pipe) in [
            (
                0,
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
            (
                1,
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
            ),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut buf);
                }
                let _ = tx.send((which, buf));
            });
        }
        drop(tx);
        let failed = |e: std::io::Error| GitError::Failed {
            args: args.join(" "),
            dir: self.root.clone(),
            code: -1,
            stderr: e.to_string(),
        };
        let status = loop {
            if let Some(status) = child.try_wait().map_err(failed)? {
                break Some(status);
            }
            if started.elapsed() >= self.timeout {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let Some(status) = status {
            // A helper that outlived git may keep a pipe open: read what
            // there is until the deadline, never longer.
            for _ in 0..2 {
                let left = self.timeout.saturating_sub(started.elapsed());
                match rx.recv_timeout(left.max(Duration::from_millis(100))) {
                    Ok((0, buf)) => stdout = buf,
                    Ok((_, buf)) => stderr = buf,
                    Err(_) => break,
                }
            }
            return Ok(Output {
                status,
                stdout,
                stderr,
            });
        }
        // Not reaped yet, so the group id is still git's own.
        kill_group(child.id());
        let _ = child.wait();
        Err(GitError::Unreachable {
            remote: remote.to_string(),
            reason: format!(
                "'{remote}' gave no answer within {secs} s, so 'git {}' was stopped \
                 (the network timeout; set it with --network-timeout SECS or STEAD_NETWORK_TIMEOUT)",
                args.first().copied().unwrap_or("")
            ),
        })
    }

    /// The ssh command with connect and keep-alive timeouts, unless the user
    /// chose their own (`GIT_SSH_COMMAND`, `GIT_SSH` or `core.sshCommand`),
    /// which is left alone (the hard deadline still holds).
    fn ssh_command(&self, secs: u64) -> Result<Option<String>, GitError> {
        let own_env = ["GIT_SSH_COMMAND", "GIT_SSH"].iter().any(|k| {
            self.env.iter().any(|(e, v)| e == k && !v.is_empty())
                || std::env::var_os(k).is_some_and(|v| !v.is_empty())
        });
        if own_env || self.config_get("core.sshCommand")?.is_some() {
            return Ok(None);
        }
        let alive = (secs / 3).max(1);
        Ok(Some(format!(
            "ssh -o ConnectTimeout={secs} -o ServerAliveInterval={alive} -o ServerAliveCountMax=3"
        )))
    }

    /// Tells the trace, if any, that `git args` runs now.
    fn tell(&self, args: &[&str]) {
        if let Some(trace) = &self.trace {
            (trace.0)(&args.join(" "));
        }
    }

    /// `git args` in the root, with the standard and extra environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(&self.root);
        for var in REPO_ENV {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C").env("GIT_TERMINAL_PROMPT", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, cmd: &mut Command) -> Result<std::process::Child, GitError> {
        cmd.spawn().map_err(|e| {
            if self.root.is_dir() {
                GitError::NotInstalled(e.to_string())
            } else {
                GitError::NotARepo {
                    path: self.root.clone(),
                }
            }
        })
    }

    /// A [`GitError::Failed`] for a finished command.
    fn failed(&self, args: &[&str], out: &Output) -> GitError {
        GitError::Failed {
            args: args.join(" "),
            dir: self.root.clone(),
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    /// Unreachable when git's failure talking to `remote` says it could not
    /// reach it, else Failed.
    fn remote_failure(&self, args: &[&str], remote: &str, out: &Output) -> GitError {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if is_unreachable(out.status.code(), &stderr) {
            GitError::Unreachable {
                remote: remote.to_string(),
                reason: unreachable_reason(&stderr),
            }
        } else {
            self.failed(args, out)
        }
    }
}

/// Kills the process group `pgid` (a git started in its own group): git and
/// every helper it started (`git-remote-http`, `ssh`). A group already gone
/// is fine.
fn kill_group(pgid: u32) {
    if let Ok(raw) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether a failed remote command's stderr says the remote could not be reached.
fn is_unreachable(code: Option<i32>, stderr: &str) -> bool {
    const SIGNS: &[&str] = &[
        "does not appear to be a git repository",
        "could not read from remote repository",
        "unable to access",
        "could not resolve",
        "connection refused",
        "connection timed out",
        "couldn't connect",
        "could not connect",
        "permission denied",
        "authentication failed",
        "repository not found",
        "terminal prompts disabled",
        "could not read username",
        "host key verification failed",
        "no such file or directory",
    ];
    let lower = stderr.to_lowercase();
    if SIGNS.iter().any(|s| lower.contains(s)) {
        return true;
    }
    // Exit 128 is git's "fatal"; a missing ref on a reachable remote also is.
    code == Some(128) && !lower.contains("couldn't find remote ref")
}

/// Git's first meaningful stderr lines, without their `fatal:` prefixes.
fn unreachable_reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .map(|l| {
            l.strip_prefix("fatal:")
                .or_else(|| l.strip_prefix("error:"))
                .unwrap_or(l)
                .trim()
        })
        .take(2)
        .collect();
    if lines.is_empty() {
        "git gave no reason".to_string()
    } else {
        lines.join("; ")
    }
}

/// The per-ref status lines of `git push --porcelain`:
/// `<flag>\t<from>:<to>\t<summary>`.
fn parse_porcelain(stdout: &str) -> Vec<RefStatus> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut chars = line.chars();
            let flag = chars.next()?;
            if !matches!(flag, ' ' | '+' | '-' | '*' | '!' | '=') {
                return None;
            }
            let mut fields = line[flag.len_utf8()..].strip_prefix('\t')?.splitn(2, '\t');
            let refs = fields.next()?;
            let summary = fields.next().unwrap_or("").trim().to_string();
            let (_, to) = refs.rsplit_once(':')?;
            Some(RefStatus {
                flag,
                to: to.to_string(),
                summary,
            })
        })
        .collect()
}

/// `s` without one trailing newline (and carriage return).
fn trim_newline(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

/// The first line of git's stdout, trimmed.
fn stdout_line(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    const LOCK_REF: &str = "refs/stead/lock";

    /// Environment that keeps git away from the user's config and $HOME.
    fn iso_env(home: &Path) -> Vec<(String, String)> {
        let home = home.to_string_lossy().to_string();
        [
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("HOME", home.as_str()),
            ("XDG_CONFIG_HOME", home.as_str()),
            ("GIT_AUTHOR_NAME", "Test Author"),
            ("GIT_AUTHOR_EMAIL", "author@example.invalid"),
            ("GIT_COMMITTER_NAME", "Test Committer"),
            ("GIT_COMMITTER_EMAIL", "committer@example.invalid"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A temp dir holding a bare remote (`remote.git`) whose HEAD is `branch`.
    struct World {
        tmp: TempDir,
        env: Vec<(String, String)>,
    }

    impl World {
        fn new(branch: &str) -> World {
            let tmp = tempfile::tempdir().unwrap();
            let home = tmp.path().join("home");
            fs::create_dir(&home).unwrap();
            let env = iso_env(&home);
            let status = Command::new("git")
                .args(["init", "--quiet", "--bare", "-b", branch])
                .arg(tmp.path().join("remote.git"))
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("LC_ALL", "C")
                .status()
                .unwrap();
            assert!(status.success());
            World { tmp, env }
        }

        fn url(&self) -> String {
            self.tmp
                .path()
                .join("remote.git")
                .to_string_lossy()
                .to_string()
        }

        fn clone(&self, name: &str) -> Git {
            Git::clone_repo_with_env(&self.url(), &self.tmp.path().join(name), self.env.clone())
                .unwrap()
        }

        /// The commit a ref names in the bare remote, if any.
        fn remote_ref(&self, refname: &str) -> Option<String> {
            let remote = Git {
                root: self.tmp.path().join("remote.git"),
                env: self.env.clone(),
                timeout: DEFAULT_NETWORK_TIMEOUT,
                trace: None,
            };
            remote.resolve_commit(refname).unwrap()
        }
    }

    fn write(git: &Git, path: &str, content: &str) {
        fs::write(git.root().join(path), content).unwrap();
    }

    fn commit_file(git: &Git, path: &str, content: &str, message: &str) -> String {
        write(git, path, content);
        git.add(&[path]).unwrap();
        git.commit(message).unwrap().unwrap()
    }

    fn push_upstream(git: &Git) -> PushOutcome {
        let up = git.upstream().unwrap().unwrap();
        git.push(&up).unwrap()
    }

    #[test]
    fn empty_clone_then_commit_and_push_creates_the_branch_for_any_default_name() {
        for name in ["main", "master", "trunk"] {
            let w = World::new(name);
            let git = w.clone("a");
            assert_eq!(git.current_branch().unwrap().as_deref(), Some(name));
            assert_eq!(git.head().unwrap(), None);
            assert_eq!(git.remotes().unwrap(), vec!["origin".to_string()]);
            assert_eq!(git.remote_url("origin").unwrap(), Some(w.url()));
            assert_eq!(git.remote_url("nope").unwrap(), None);

            // Before the first push: derived from the only remote, not yet tracked.
            let up = git.upstream().unwrap().unwrap();
            let tracking = format!("refs/remotes/origin/{name}");
            assert_eq!(
                up,
                Upstream {
                    remote: "origin".into(),
                    branch: name.into(),
                    tracking_ref: tracking.clone(),
                }
            );
            assert!(!git.rev_exists(&up.tracking_ref).unwrap());
            assert!(git.is_clean(&[]).unwrap());
            assert_eq!(git.commit("nothing").unwrap(), None);

            write(&git, "state.json", "{}\n");
            write(&git, "untracked.txt", "x");
            assert!(git.is_clean(&[]).unwrap(), "untracked files do not count");
            git.add(&["state.json"]).unwrap();
            assert!(!git.is_clean(&[]).unwrap());
            assert!(!git.is_clean(&["state.json"]).unwrap());
            assert!(git.is_clean(&["other.json"]).unwrap());
            let sha = git.commit("first").unwrap().unwrap();
            assert_eq!(git.head().unwrap().as_deref(), Some(sha.as_str()));
            assert_eq!(git.commit("again").unwrap(), None);
            assert!(git.is_clean(&[]).unwrap());

            assert_eq!(git.push(&up).unwrap(), PushOutcome::Pushed);
            assert_eq!(
                w.remote_ref(&format!("refs/heads/{name}")),
                Some(sha.clone())
            );

            // After: the upstream is configured and its tracking ref exists.
            assert_eq!(
                git.config_get(&format!("branch.{name}.merge")).unwrap(),
                Some(format!("refs/heads/{name}"))
            );
            let up2 = git.upstream().unwrap().unwrap();
            assert_eq!(up2, up);
            assert!(git.rev_exists(&up2.tracking_ref).unwrap());

            // A second push of the same HEAD is still a success.
            assert_eq!(git.push(&up2).unwrap(), PushOutcome::Pushed);

            // A later clone checks out the branch that was pushed.
            let other = w.clone("b");
            assert_eq!(other.current_branch().unwrap().as_deref(), Some(name));
            assert_eq!(other.head().unwrap(), Some(sha));
        }
    }

    #[test]
    fn open_finds_the_top_level_and_refuses_a_plain_dir() {
        let w = World::new("main");
        let git = w.clone("a");
        let sub = git.root().join("sub/dir");
        fs::create_dir_all(&sub).unwrap();
        let opened = Git::open_with_env(&sub, w.env.clone()).unwrap();
        assert_eq!(
            opened.root().canonicalize().unwrap(),
            w.tmp.path().join("a").canonicalize().unwrap()
        );

        let plain = w.tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let err = Git::open_with_env(&plain, w.env.clone()).unwrap_err();
        assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");
        let err = Git::open_with_env(&w.tmp.path().join("missing"), w.env.clone()).unwrap_err();
        assert!(matches!(err, GitError::NotARepo { .. }), "{err:?}");

        let init = Git::init_repo_with_env(&w.tmp.path().join("fresh"), w.env.clone()).unwrap();
        assert_eq!(init.head().unwrap(), None);
        assert!(init.current_branch().unwrap().is_some());
        assert_eq!(init.upstream().unwrap(), None, "no remote, no upstream");
    }

    #[test]
    fn upstream_prefers_config_then_origin_among_many() {
        let w = World::new("main");
        let git = w.clone("a");
        // A clone configures the upstream; drop it to see the fallback.
        assert!(git.config_get("branch.main.merge").unwrap().is_some());
        git.run(&["config", "--unset", "branch.main.remote"])
            .unwrap();
        git.run(&["config", "--unset", "branch.main.merge"])
            .unwrap();
        git.run(&["remote", "add", "backup", &w.url()]).unwrap();
        let up = git.upstream().unwrap().unwrap();
        assert_eq!(up.remote, "origin");

        git.run(&["remote", "rename", "origin", "primary"]).unwrap();
        assert_eq!(git.upstream().unwrap(), None, "two remotes, none is origin");

        git.config_set("branch.main.remote", "backup").unwrap();
        git.config_set("branch.main.merge", "refs/heads/elsewhere")
            .unwrap();
        let up = git.upstream().unwrap().unwrap();
        assert_eq!(
            up,
            Upstream {
                remote: "backup".into(),
                branch: "elsewhere".into(),
                tracking_ref: "refs/remotes/backup/elsewhere".into(),
            }
        );

        git.run(&["checkout", "--quiet", "--detach"])
            .unwrap_or_default();
        commit_file(&git, "f", "1", "one");
        git.run(&["checkout", "--quiet", "--detach"]).unwrap();
        assert_eq!(git.current_branch().unwrap(), None);
        assert_eq!(git.upstream().unwrap(), None);
    }

    #[test]
    fn first_push_from_a_fresh_repo_sets_the_upstream() {
        for name in ["main", "master", "trunk"] {
            let w = World::new(name);
            let git = Git::init_repo_with_env(&w.tmp.path().join("a"), w.env.clone()).unwrap();
            git.run(&["symbolic-ref", "HEAD", &format!("refs/heads/{name}")])
                .unwrap();
            git.run(&["remote", "add", "origin", &w.url()]).unwrap();
            let up = git.upstream().unwrap().unwrap();
            assert_eq!(up.remote, "origin");
            assert_eq!(up.branch, name);
            assert_eq!(up.tracking_ref, format!("refs/remotes/origin/{name}"));
            assert_eq!(
                git.config_get(&format!("branch.{name}.merge")).unwrap(),
                None
            );
            let sha = commit_file(&git, "state.json", "{}", "first");
            assert_eq!(git.push(&up).unwrap(), PushOutcome::Pushed);
            assert_eq!(
                w.remote_ref(&format!("refs/heads/{name}")),
                Some(sha.clone())
            );
            assert_eq!(
                git.config_get(&format!("branch.{name}.remote"))
                    .unwrap()
                    .as_deref(),
                Some("origin")
            );
            assert_eq!(git.upstream().unwrap(), Some(up.clone()));
            assert!(git.rev_exists(&up.tracking_ref).unwrap());
        }
    }

    #[test]
    fn fetch_merge_base_and_show_file() {
        let w = World::new("trunk");
        let a = w.clone("a");
        let b = w.clone("b");
        let base = commit_file(&a, "state.json", "v1", "base");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);

        let up = b.upstream().unwrap().unwrap();
        assert!(!b.rev_exists(&up.tracking_ref).unwrap());
        b.fetch(&up.remote).unwrap();
        assert!(b.rev_exists(&up.tracking_ref).unwrap());
        // Merging into an unborn branch is a fast-forward.
        assert_eq!(
            b.merge(&up.tracking_ref, "sync").unwrap(),
            MergeOutcome::FastForward
        );
        assert_eq!(b.head().unwrap().as_deref(), Some(base.as_str()));

        let next = commit_file(&a, "state.json", "v2", "next");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        b.fetch("origin").unwrap();
        assert_eq!(
            b.merge_base("HEAD", &up.tracking_ref).unwrap().as_deref(),
            Some(base.as_str())
        );
        assert!(b.is_ancestor("HEAD", &up.tracking_ref).unwrap());
        assert!(!b.is_ancestor(&up.tracking_ref, "HEAD").unwrap());
        assert_eq!(
            b.show_file(&up.tracking_ref, "state.json").unwrap(),
            Some(b"v2".to_vec())
        );
        assert_eq!(
            b.show_file("HEAD", "state.json").unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(b.show_file(&up.tracking_ref, "absent.json").unwrap(), None);
        assert!(
            b.show_file("refs/heads/no-such-branch", "state.json")
                .is_err()
        );
        assert!(!b.rev_exists("refs/heads/no-such-branch").unwrap());

        assert_eq!(
            b.merge(&up.tracking_ref, "sync").unwrap(),
            MergeOutcome::FastForward
        );
        assert_eq!(b.head().unwrap(), Some(next));
        assert_eq!(
            b.merge(&up.tracking_ref, "sync").unwrap(),
            MergeOutcome::UpToDate
        );

        // Unrelated histories have no merge base.
        let other = Git::init_repo_with_env(&w.tmp.path().join("other"), w.env.clone()).unwrap();
        let lone = commit_file(&other, "x", "x", "lone");
        b.run(&["fetch", "--quiet", other.root().to_str().unwrap(), "HEAD"])
            .unwrap();
        assert_eq!(b.merge_base("HEAD", &lone).unwrap(), None);
    }

    #[test]
    fn merge_reports_merged_and_conflicts() {
        let w = World::new("master");
        let a = w.clone("a");
        commit_file(&a, "state.json", "base\n", "base");
        commit_file(&a, "notes.txt", "base\n", "base notes");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        let b = w.clone("b");

        // Different files: a real merge commit.
        commit_file(&a, "notes.txt", "from a\n", "a notes");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        commit_file(&b, "other.txt", "from b\n", "b other");
        b.fetch("origin").unwrap();
        let up = b.upstream().unwrap().unwrap();
        assert_eq!(
            b.merge(&up.tracking_ref, "stead: merge").unwrap(),
            MergeOutcome::Merged
        );
        assert_eq!(
            b.run(&["log", "-1", "--format=%s"]).unwrap(),
            "stead: merge"
        );
        assert_eq!(push_upstream(&b), PushOutcome::Pushed);

        // The same file on both sides: conflicts, merge left in progress.
        a.fetch("origin").unwrap();
        a.merge("refs/remotes/origin/master", "sync").unwrap();
        commit_file(&a, "state.json", "a\n", "a state");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        commit_file(&b, "state.json", "b\n", "b state");
        b.fetch("origin").unwrap();
        assert_eq!(
            b.merge(&up.tracking_ref, "sync").unwrap(),
            MergeOutcome::Conflicts(vec!["state.json".to_string()])
        );
        assert!(b.rev_exists("MERGE_HEAD").unwrap());
        assert!(!b.is_clean(&[]).unwrap());
    }

    #[test]
    fn uncommitted_in_the_way_lists_only_what_the_merge_would_write() {
        let w = World::new("main");
        let a = w.clone("a");
        commit_file(&a, "x.txt", "base\n", "base");
        commit_file(&a, "y.txt", "base\n", "base y");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        let b = w.clone("b");
        commit_file(&a, "x.txt", "from a\n", "a x");
        commit_file(&a, "new file.txt", "from a\n", "a new");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        b.fetch("origin").unwrap();
        let theirs = "refs/remotes/origin/main";
        assert!(b.uncommitted_in_the_way(theirs).unwrap().is_empty());
        // Modified x (in the way), untracked "new file.txt" (in the way),
        // modified y and untracked z (not touched by the merge).
        write(&b, "x.txt", "mine\n");
        write(&b, "new file.txt", "mine\n");
        write(&b, "y.txt", "mine\n");
        write(&b, "z.txt", "mine\n");
        let mut found = b.uncommitted_in_the_way(theirs).unwrap();
        found.sort();
        assert_eq!(found, vec!["new file.txt".to_string(), "x.txt".to_string()]);
        // An empty clone has nothing in the way.
        let w2 = World::new("main");
        assert!(
            w2.clone("c")
                .uncommitted_in_the_way("HEAD")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn push_is_rejected_when_the_remote_moved() {
        let w = World::new("main");
        let a = w.clone("a");
        commit_file(&a, "f", "1", "one");
        assert_eq!(push_upstream(&a), PushOutcome::Pushed);
        let b = w.clone("b");
        commit_file(&b, "f", "2", "b two");
        assert_eq!(push_upstream(&b), PushOutcome::Pushed);

        let before = w.remote_ref("refs/heads/main");
        commit_file(&a, "f", "3", "a two");
        let up = a.upstream().unwrap().unwrap();
        match a.push(&up).unwrap() {
            PushOutcome::Rejected(reason) => assert_eq!(reason, "fetch first"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        a.fetch("origin").unwrap();
        match a.push(&up).unwrap() {
            PushOutcome::Rejected(reason) => assert_eq!(reason, "non-fast-forward"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(w.remote_ref("refs/heads/main"), before, "remote untouched");
    }

    #[test]
    fn unreachable_remote_is_unreachable_not_rejected() {
        let w = World::new("main");
        let missing = w.tmp.path().join("no-such-remote.git");
        let missing = missing.to_str().unwrap();

        let err =
            Git::clone_repo_with_env(missing, &w.tmp.path().join("c"), w.env.clone()).unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");

        let git = w.clone("a");
        commit_file(&git, "f", "1", "one");
        git.run(&["remote", "set-url", "origin", missing]).unwrap();
        let up = git.upstream().unwrap().unwrap();

        let err = git.fetch("origin").unwrap_err();
        match &err {
            GitError::Unreachable { remote, reason } => {
                assert_eq!(remote, "origin");
                assert!(
                    reason.contains("does not appear to be a git repository"),
                    "{reason}"
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("cannot reach remote 'origin': ")
        );

        let err = git.push(&up).unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        let err = git.remote_ref_read("origin", LOCK_REF).unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        let err = git
            .remote_ref_create("origin", LOCK_REF, b"{}", None)
            .unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        let err = git
            .remote_ref_delete("origin", LOCK_REF, "0".repeat(40).as_str())
            .unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");

        // A server that refuses connections is unreachable too.
        git.run(&["remote", "set-url", "origin", "http://127.0.0.1:1/r.git"])
            .unwrap();
        let err = git.fetch("origin").unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
        let err = git.push(&up).unwrap_err();
        assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
    }

    #[test]
    fn remote_lock_create_read_break_and_delete() {
        let w = World::new("main");
        let a = w.clone("a");
        let b = w.clone("b");
        let branches_before = a.run(&["for-each-ref", "refs/heads"]).unwrap();

        assert_eq!(a.remote_ref_read("origin", LOCK_REF).unwrap(), None);

        let (outcome, first) = a
            .remote_ref_create("origin", LOCK_REF, b"{\"holder\":\"a\"}", None)
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Done);
        assert_eq!(w.remote_ref(LOCK_REF), Some(first.clone()));
        // Its tree is exactly lock.json.
        assert_eq!(
            a.run(&["ls-tree", "--name-only", &first]).unwrap(),
            "lock.json"
        );

        // Taking it again, from anywhere, loses.
        let (outcome, lost) = b
            .remote_ref_create("origin", LOCK_REF, b"{\"holder\":\"b\"}", None)
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Lost);
        assert_ne!(lost, first);
        let (outcome, _) = a
            .remote_ref_create("origin", LOCK_REF, b"{\"holder\":\"a\"}", None)
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Lost);
        assert_eq!(w.remote_ref(LOCK_REF), Some(first.clone()));

        assert_eq!(
            b.remote_ref_read("origin", LOCK_REF).unwrap(),
            Some((first.clone(), b"{\"holder\":\"a\"}".to_vec()))
        );

        // Deleting with a wrong value loses and leaves it.
        assert_eq!(
            b.remote_ref_delete("origin", LOCK_REF, &lost).unwrap(),
            LeaseOutcome::Lost
        );
        assert_eq!(w.remote_ref(LOCK_REF), Some(first.clone()));

        // Breaking a stale lock: replace exactly the value read.
        let (outcome, broken) = b
            .remote_ref_create("origin", LOCK_REF, b"{\"holder\":\"b\"}", Some(&first))
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Done);
        // A second breaker holding the old value loses.
        let (outcome, _) = a
            .remote_ref_create("origin", LOCK_REF, b"{\"holder\":\"a\"}", Some(&first))
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Lost);
        assert_eq!(
            a.remote_ref_read("origin", LOCK_REF).unwrap(),
            Some((broken.clone(), b"{\"holder\":\"b\"}".to_vec()))
        );
        // The old holder cannot release what is no longer its lock.
        assert_eq!(
            a.remote_ref_delete("origin", LOCK_REF, &first).unwrap(),
            LeaseOutcome::Lost
        );

        assert_eq!(
            b.remote_ref_delete("origin", LOCK_REF, &broken).unwrap(),
            LeaseOutcome::Done
        );
        assert_eq!(w.remote_ref(LOCK_REF), None);
        assert_eq!(a.remote_ref_read("origin", LOCK_REF).unwrap(), None);
        assert_eq!(
            b.remote_ref_delete("origin", LOCK_REF, &broken).unwrap(),
            LeaseOutcome::Lost,
            "deleting an absent lock is a lost lease"
        );

        // No branch was made or moved by any of it.
        assert_eq!(
            a.run(&["for-each-ref", "refs/heads"]).unwrap(),
            branches_before
        );
        assert_eq!(a.current_branch().unwrap().as_deref(), Some("main"));
        assert_eq!(a.head().unwrap(), None);
    }

    #[test]
    fn lock_commit_needs_no_user_identity() {
        let w = World::new("main");
        let env: Vec<(String, String)> = w
            .env
            .iter()
            .filter(|(k, _)| !k.ends_with("_NAME") && !k.ends_with("_EMAIL"))
            .cloned()
            .collect();
        let git = Git::clone_repo_with_env(&w.url(), &w.tmp.path().join("a"), env)
            .unwrap()
            .with_env("EMAIL", "")
            .with_env("GIT_AUTHOR_NAME", "")
            .with_env("GIT_COMMITTER_NAME", "");
        let (outcome, sha) = git
            .remote_ref_create("origin", LOCK_REF, b"{}", None)
            .unwrap();
        assert_eq!(outcome, LeaseOutcome::Done);
        assert_eq!(
            git.run(&["log", "-1", "--format=%an <%ae>", &sha]).unwrap(),
            "stead <stead@localhost>"
        );
    }

    #[test]
    fn run_failure_names_args_dir_and_code() {
        let w = World::new("main");
        let git = w.clone("a");
        match git.run(&["rev-parse", "--verify", "nope"]).unwrap_err() {
            GitError::Failed {
                args, dir, code, ..
            } => {
                assert_eq!(args, "rev-parse --verify nope");
                assert_eq!(dir, git.root());
                assert_eq!(code, 128);
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn porcelain_lines_parse() {
        let out = "To /r.git\n*\tHEAD:refs/heads/main\t[new branch]\n\
                   !\t(delete):refs/stead/lock\t[rejected] (stale info)\n\
                   -\t:refs/stead/x\t[deleted]\nDone\n";
        let s = parse_porcelain(out);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].flag, s[0].to.as_str()), ('*', "refs/heads/main"));
        assert_eq!((s[1].flag, s[1].reason()), ('!', "stale info".to_string()));
        assert_eq!((s[2].flag, s[2].to.as_str()), ('-', "refs/stead/x"));
        assert_eq!(
            unreachable_reason(
                "fatal: 'x' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease"
            ),
            "'x' does not appear to be a git repository; Could not read from remote repository."
        );
    }
}
