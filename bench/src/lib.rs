//! Benchmarks of the `stead` binary, each beside a plain-Rust baseline
//! measured in the same run, so the figures are ratios that survive a noisy
//! machine.
//!
//! * `files-N`: N small files in N/100 directories: cold apply, warm no-op
//!   apply, repair of 1% drift, and `stead state check-drift`.
//! * `tree-N`: the same N files declared as one tree (`[file.tree]` whose
//!   `source` is a directory of the config repo), the same four operations.
//! * `noop-N`: N `noop` resources in a random DAG (about 2 `after` edges
//!   each, pointing only to earlier resources): load + plan + apply.
//!
//! stead always runs as a child process with its own temp home, state dir,
//! config repo and `HOME`; nothing here touches the real home directory.
//! The peak RSS of the child is read by a tiny wrapper (this crate's binary
//! re-executed as `stead-bench rss -- CMD...`) that runs the command as its
//! only child and reports `getrusage(RUSAGE_CHILDREN).ru_maxrss`.
//!
//! Beside the baseline, each `files-N`/`tree-N` row is printed beside its
//! floors ([`floors`]) and, with `--peers`, beside other tools ([`peers`]).

pub mod fleet;
pub mod floors;
pub mod packages;
pub mod peers;
pub mod watch;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// stead's default `--jobs`; the baselines use as many threads.
pub const STEAD_DEFAULT_JOBS: usize = 8;

/// Mode of every benchmark file (stead's default for a new file).
pub(crate) const FILE_MODE: u32 = 0o644;

/// Everything a benchmark needs to run stead.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `stead` binary.
    pub stead: PathBuf,
    /// The `stead-bench` binary, re-executed as the `rss` wrapper.
    pub wrapper: PathBuf,
    /// Threads of the baselines.
    pub threads: usize,
    /// Where temp dirs are made (the filesystem measured).
    pub tmp_root: PathBuf,
}

/// One run of a child process.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall time of the child, measured by the wrapper.
    pub wall: Duration,
    /// Peak resident set of the child, KiB.
    pub max_rss_kb: u64,
    /// Exit code (-1 if killed by a signal).
    pub exit: i32,
    /// What the child wrote to stderr.
    pub stderr: String,
}

/// An error of the benchmark itself.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// A result of the benchmark.
pub type Result<T> = std::result::Result<T, Error>;

/// `stead-bench rss -- CMD ARGS...`: runs CMD (stdout discarded, stderr
/// inherited) as the only child of this process and prints one line:
/// `exit wall_ns max_rss_kb` (the wrapper itself succeeds whatever CMD's exit).
pub fn rss_wrapper(cmd: &[String]) -> Result<()> {
    let (prog, args) = cmd.split_first().ok_or("rss: no command given")?;
    let start = Instant::now();
    let status = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("rss: cannot run {prog}: {e}"))?;
    let wall = start.elapsed();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // Linux reports ru_maxrss in KiB.
    println!(
        "{} {} {}",
        status.code().unwrap_or(-1),
        wall.as_nanos(),
        usage.max_rss()
    );
    Ok(())
}

/// The temp dirs of one stead "machine".
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// Makes the dirs under `env.tmp_root`.
    pub fn new(env: &Env, prefix: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&env.tmp_root)?;
        for sub in ["home", "state", "config", "env-home"] {
            fs::create_dir(dir.path().join(sub))?;
        }
        Ok(Workspace { dir })
    }

    /// The root of the temp dirs.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// What `~` means for stead (`--home`).
    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }
    /// `--state-dir`.
    pub fn state(&self) -> PathBuf {
        self.root().join("state")
    }
    /// `--config`: the generated config repo.
    pub fn config(&self) -> PathBuf {
        self.root().join("config")
    }
    /// `$HOME` of the child process (never the real one).
    pub fn env_home(&self) -> PathBuf {
        self.root().join("env-home")
    }
}

impl Env {
    /// Runs `stead --home .. --state-dir .. --config .. ARGS` under the wrapper.
    pub fn stead(&self, ws: &Workspace, args: &[&str]) -> Result<Measured> {
        measure(self.stead_command(ws, args))
    }

    /// The command [`Env::stead`] runs (for a case that adds to its
    /// environment).
    pub fn stead_command(&self, ws: &Workspace, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.wrapper);
        cmd.arg("rss")
            .arg("--")
            .arg(&self.stead)
            .arg("--home")
            .arg(ws.home())
            .arg("--state-dir")
            .arg(ws.state())
            .arg("--config")
            .arg(ws.config())
            .arg("--no-color")
            .args(args)
            .env("HOME", ws.env_home())
            .env("NO_COLOR", "1")
            .env_remove("STEAD_CONFIG")
            .env_remove("STEAD_HOME")
            .env_remove("STEAD_STATE_DIR")
            .env_remove("STEAD_HISTORY_LIMIT")
            .stdin(Stdio::null());
        cmd
    }

    /// Like [`Env::stead`], failing unless the exit code is `want`.
    pub fn stead_expect(&self, ws: &Workspace, args: &[&str], want: i32) -> Result<Measured> {
        let m = self.stead(ws, args)?;
        if m.exit != want {
            return Err(format!(
                "stead {} exited {} (expected {want}):\n{}",
                args.join(" "),
                m.exit,
                m.stderr
            )
            .into());
        }
        Ok(m)
    }
}

/// Runs `cmd` (the `rss` wrapper around a child) and reads the wrapper's
/// line: exit code, wall time and peak RSS of the child.
pub fn measure(mut cmd: Command) -> Result<Measured> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let [exit, wall_ns, rss] = fields[..] else {
        return Err(format!("the rss wrapper failed: {stdout}{stderr}").into());
    };
    Ok(Measured {
        exit: exit.parse()?,
        wall: Duration::from_nanos(wall_ns.parse()?),
        max_rss_kb: rss.parse()?,
        stderr,
    })
}

/// A deterministic xorshift64* generator.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

// ---------------------------------------------------------------- files-N

/// The `files-N` data set: N files in N/100 dirs (at least one); as
/// `tree-N`, the same files declared as one tree.
#[derive(Debug, Clone, Copy)]
pub struct FileSet {
    /// Number of files.
    pub n: usize,
    /// Declared as one tree whose source is a directory of the repo,
    /// rather than one `[file.fI]` each.
    pub tree: bool,
}

impl FileSet {
    /// Number of directories.
    pub fn dirs(&self) -> usize {
        self.n.div_ceil(100).max(1)
    }
    /// Directory of file `i`, relative to home.
    pub fn dir_of(&self, i: usize) -> String {
        format!("d{}", i / 100)
    }
    /// Path of file `i`, relative to home.
    pub fn rel(&self, i: usize) -> String {
        format!("d{}/f{i}", i / 100)
    }
    /// The declared content of file `i` (about 100 bytes, ASCII, no quotes).
    pub fn content(&self, i: usize) -> String {
        let mut rng = XorShift::new(i as u64 + 1);
        format!(
            "# stead bench file {i}\nkey = {:016x}\nvalue = {:016x}{:016x}\nend\n",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64()
        )
    }
    /// What the drift step writes over file `i`.
    pub fn drifted(&self, i: usize) -> String {
        format!("# edited by hand {i}\n")
    }
    /// The files the drift step changes: every 100th (1%, at least one).
    pub fn drift_set(&self) -> Vec<usize> {
        (0..self.n).step_by(100).collect()
    }

    /// The case's name: `files-N` or `tree-N`.
    pub fn case(&self) -> String {
        format!("{}-{}", if self.tree { "tree" } else { "files" }, self.n)
    }

    /// Writes `stead.toml` (and for a tree, its source) into `config`.
    pub fn write_manifest(&self, config: &Path) -> Result<()> {
        if self.tree {
            return self.write_tree(config);
        }
        let mut text = String::with_capacity(self.n * 160);
        text.push_str("# Generated by stead-bench.\n\n");
        for d in 0..self.dirs() {
            text.push_str(&format!("[dir.d{d}]\npath = \"~/d{d}\"\n\n"));
        }
        for i in 0..self.n {
            let content = self.content(i).replace('\n', "\\n");
            text.push_str(&format!(
                "[file.f{i}]\npath = \"~/{}\"\ncontent = \"{content}\"\n\n",
                self.rel(i)
            ));
        }
        fs::write(config.join("stead.toml"), text)?;
        Ok(())
    }

    /// The tree's source, `src/` with the same layout and modes as the
    /// home's files, and a manifest declaring it as one tree at `~`.
    fn write_tree(&self, config: &Path) -> Result<()> {
        let src = config.join("src");
        for d in 0..self.dirs() {
            fs::create_dir_all(src.join(format!("d{d}")))?;
        }
        for i in 0..self.n {
            let p = src.join(self.rel(i));
            fs::write(&p, self.content(i))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(FILE_MODE))?;
        }
        let text = "# Generated by stead-bench.\n\n[file.tree]\npath = \"~\"\nsource = \"src\"\n";
        fs::write(config.join("stead.toml"), text)?;
        Ok(())
    }

    /// Checks that every file under `home` holds its declared content.
    pub fn verify(&self, home: &Path) -> Result<()> {
        for i in 0..self.n {
            let p = home.join(self.rel(i));
            let got = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if got != self.content(i).as_bytes() {
                return Err(format!("{} does not hold its declared content", p.display()).into());
            }
            let mode = fs::metadata(&p)?.permissions().mode() & 0o7777;
            if mode != FILE_MODE {
                return Err(format!("{} has mode {mode:04o}", p.display()).into());
            }
        }
        Ok(())
    }

    /// Overwrites the drift set under `home` (a plain write, as a user would).
    pub fn drift(&self, home: &Path) -> Result<()> {
        for i in self.drift_set() {
            fs::write(home.join(self.rel(i)), self.drifted(i))?;
        }
        Ok(())
    }
}

/// Runs `work(i)` for `i in 0..n` on `threads` threads.
pub(crate) fn parallel<F>(threads: usize, n: usize, work: F) -> Result<()>
where
    F: Fn(usize) -> io::Result<()> + Sync,
{
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, n.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        work(i)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a baseline thread panicked")??;
        }
        Ok(())
    })
}

/// The same atomic write stead does for a single file
/// (lib/src/safe_path.rs `write_atomic`): temp file in the target's dir
/// created `O_EXCL|O_NOFOLLOW` with the final mode, write, fchmod, fsync the
/// file, rename over the target, fsync the dir.
pub fn baseline_atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, f) = floors::write_temp_beside(path, data, mode)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Baseline of a cold apply: create each dir and fsync its parent (what
/// stead's `dir` resource does), then write every file as stead does
/// (`create_dir_all` of the parent, then [`baseline_atomic_write`]).
pub fn baseline_write(set: &FileSet, home: &Path, threads: usize) -> Result<Duration> {
    let start = Instant::now();
    parallel(threads, set.dirs(), |d| {
        fs::create_dir_all(home.join(format!("d{d}")))?;
        File::open(home)?.sync_all()
    })?;
    parallel(threads, set.n, |i| {
        let p = home.join(set.rel(i));
        fs::create_dir_all(home.join(set.dir_of(i)))?;
        baseline_atomic_write(&p, set.content(i).as_bytes(), FILE_MODE)
    })?;
    Ok(start.elapsed())
}

/// Baseline of a read-only pass: read every file and blake3 it; returns the
/// time and which files differ from the declared content.
pub fn baseline_read_hash(
    set: &FileSet,
    home: &Path,
    threads: usize,
) -> Result<(Duration, Vec<usize>)> {
    let start = Instant::now();
    let differing = std::sync::Mutex::new(Vec::new());
    parallel(threads, set.n, |i| {
        let bytes = fs::read(home.join(set.rel(i)))?;
        let want = blake3::hash(set.content(i).as_bytes());
        if blake3::hash(&bytes) != want {
            differing
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push(i);
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let mut d = differing.into_inner().map_err(|_| "poisoned")?;
    d.sort_unstable();
    Ok((elapsed, d))
}

/// Baseline of a drift repair: read and hash every file, rewrite (atomically)
/// those that differ ([`floors::repair`], durable).
pub fn baseline_repair(set: &FileSet, home: &Path, threads: usize) -> Result<Duration> {
    Ok(floors::repair(&floors::Prepared::new(set, home), threads, true)?.total)
}

/// Floor names, as printed; a row's floors are looked up by them.
pub mod floor_names {
    /// Cold apply without durability.
    pub const NOFSYNC_WRITER: &str = "write+rename, no fsync";
    /// Cold apply the way stead writes today (the cold baseline).
    pub const FSYNC_WRITER: &str = "write+fsync per file (stead's way)";
    /// `lstat` of every file.
    pub const LSTAT: &str = "lstat every file";
    /// One open and read to EOF per file, byte compare.
    pub const READ_COMPARE: &str = "open+read+compare";
    /// Read and blake3 every file (the no-op baseline).
    pub const READ_HASH: &str = "read+hash";
    /// The repair baseline: read+hash, durable rewrite of what differs.
    pub const REPAIR: &str = "read+hash+rewrite (fsync)";
    /// The same with no fsync.
    pub const REPAIR_NOFSYNC: &str = "read+hash+rewrite, no fsync";
    /// The durable rewrite of the drifted files alone.
    pub const REWRITE: &str = "rewrite of the drifted files (fsync)";
}

/// Flushes the filesystem of `dir` (`syncfs`), untimed, so the next timed
/// writer does not pay for earlier dirty pages.
pub fn settle(dir: &Path) -> Result<()> {
    nix::unistd::syncfs(File::open(dir)?)?;
    Ok(())
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), or `?` where
/// it cannot be read: printed with the figures, as the machine is shared.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// How long after the cold apply the steady no-op's untimed run starts:
/// stead's stat cache trusts a file only if its mtime and ctime were at
/// least 2 s older than the read that recorded it (docs/state.md), plus a
/// margin for the filesystem's timestamp granularity.
pub const STAT_CACHE_SETTLE: Duration = Duration::from_millis(2_500);

/// How long the bench lets pass after it deleted many files before it times
/// anything again. ext4 without a journal (this machine's root filesystem)
/// passes over every inode freed in the last 60 s when it allocates one,
/// and over every one freed in the last 360 s whose inode table block is
/// dirty, as it is while files are made beside it (`recently_deleted` in
/// `fs/ext4/ialloc.c`), checking each one it passes: 100 `mkdir`s took
/// 10–100 ms right after 30 000 files were deleted and 2 ms six minutes
/// later. So whatever is timed within minutes of a large deletion pays for
/// it, in proportion to the inodes it makes (docs/performance.md, "A 1%
/// drift repair, sixteenth pass").
pub const INODE_REUSE_DELAY: Duration = Duration::from_secs(361);

/// A deletion of at least this many files makes the next case wait out
/// [`INODE_REUSE_DELAY`] (a quick run's small cases do not wait).
pub const MANY_DELETED: usize = 10_000;

/// The temp dirs of a case's repeats, kept until the case ends so that no
/// repeat is timed right after the deletion of the one before, and when the
/// bench last deleted many files.
#[derive(Debug, Default)]
pub struct Leftovers {
    dirs: Vec<tempfile::TempDir>,
    files: usize,
    many_deleted_at: Option<Instant>,
}

impl Leftovers {
    /// Keeps `dir`, which holds about `files` files, until [`Self::delete`].
    pub fn keep(&mut self, dir: tempfile::TempDir, files: usize) {
        self.dirs.push(dir);
        self.files += files;
    }

    /// Deletes every dir kept, then flushes the filesystem of `tmp_root`
    /// (the next case starts with nothing dirty), and notes when if they
    /// held many files.
    pub fn delete(&mut self, tmp_root: &Path) -> Result<()> {
        for dir in self.dirs.drain(..) {
            dir.close()?;
        }
        settle(tmp_root)?;
        let files = std::mem::take(&mut self.files);
        self.deleted(files);
        Ok(())
    }

    /// Notes that about `files` files were deleted just now, elsewhere
    /// (the peers' own temp dirs).
    pub fn deleted(&mut self, files: usize) {
        if files >= MANY_DELETED {
            self.many_deleted_at = Some(Instant::now());
        }
    }

    /// Sleeps out what is left of [`INODE_REUSE_DELAY`] since the last
    /// deletion of many files, saying so on stderr.
    pub fn wait_out(&self) {
        let Some(left) = self
            .many_deleted_at
            .and_then(|at| INODE_REUSE_DELAY.checked_sub(at.elapsed()))
        else {
            return;
        };
        eprintln!(
            "waiting {:.0} s after the last case's deletion: a filesystem may pass over the inodes it freed",
            left.as_secs_f64()
        );
        std::thread::sleep(left);
    }
}

/// One timed operation of a repeat.
#[derive(Debug, Clone)]
pub struct Sample {
    /// stead's run.
    pub stead: Measured,
    /// The baseline's time.
    pub baseline: Duration,
    /// The floors measured beside it (the baseline among them, by name).
    pub floors: Vec<(&'static str, Duration)>,
}

impl Sample {
    fn plain(stead: Measured, baseline: Duration) -> Self {
        Sample {
            stead,
            baseline,
            floors: Vec::new(),
        }
    }
}

/// The samples of one repeat of `files-N`.
#[derive(Debug, Clone)]
pub struct FilesRepeat {
    /// Cold apply vs. the baseline writer.
    pub cold: Sample,
    /// Warm no-op apply vs. read-and-hash: the first run after the cold
    /// apply, which reads every file (the stat cache cannot trust files
    /// written less than its racy window ago).
    pub warm: Sample,
    /// Steady no-op apply: once the racy window has passed and one untimed
    /// run has filled the stat cache, a run that may trust every file.
    pub steady: Sample,
    /// `check-drift` with 1% drift (exit 4) vs. read-and-hash.
    pub check_drift: Sample,
    /// Apply repairing 1% drift vs. read-and-hash + rewrite.
    pub repair: Sample,
}

/// The read-only floors on `p`: read+hash (the baseline, with its differing
/// files), lstat and read+compare, each required to find `want` differing.
fn read_floors(
    set: &FileSet,
    p: &floors::Prepared,
    threads: usize,
    want: &[usize],
) -> Result<(Duration, Vec<(&'static str, Duration)>)> {
    use floor_names as f;
    let (hash, differing) = baseline_read_hash(set, &p.home, threads)?;
    let (lstat, d_lstat) = floors::lstat_all(p, threads)?;
    let (cmp, d_cmp) = floors::read_compare(p, threads)?;
    if differing != want || d_lstat != want || d_cmp != want {
        return Err(format!(
            "a read floor saw other files differ than expected ({} by read+hash, {} by lstat, {} by read+compare, {} expected)",
            differing.len(),
            d_lstat.len(),
            d_cmp.len(),
            want.len()
        )
        .into());
    }
    Ok((
        hash,
        vec![
            (f::LSTAT, lstat),
            (f::READ_COMPARE, cmp),
            (f::READ_HASH, hash),
        ],
    ))
}

/// Runs one repeat of `files-N`, checking stead's results as it goes: the
/// files are right after the cold apply, check-drift exits 0 when clean, 4
/// after the drift, and 0 again after the repair. The floors run beside
/// each step and are checked too (the writers' files are right, the read
/// floors see exactly the drifted files, the repairs leave the files right).
/// Its temp dirs are left in `kept`, for the case to delete when it ends.
pub fn files_repeat(env: &Env, set: &FileSet, kept: &mut Leftovers) -> Result<FilesRepeat> {
    use floor_names as f;
    let ws = Workspace::new(env, &format!("stead-bench-{}-", set.case()))?;
    set.write_manifest(&ws.config())?;
    let base = tempfile::Builder::new()
        .prefix("stead-bench-baseline-")
        .tempdir_in(&env.tmp_root)?;
    let bhome = base.path().join("home");
    let nhome = base.path().join("home-nofsync");
    fs::create_dir(&bhome)?;
    fs::create_dir(&nhome)?;
    let p_base = floors::Prepared::new(set, &bhome);
    let p_nofsync = floors::Prepared::new(set, &nhome);
    let p_stead = floors::Prepared::new(set, &ws.home());

    // Cold. Each writer starts with nothing dirty on the filesystem (the
    // last repeat's deletions, the manifest just written, the other
    // writer's files), so none is charged for another's writeback.
    settle(&env.tmp_root)?;
    let b_cold = baseline_write(set, &bhome, env.threads)?;
    set.verify(&bhome)?;
    settle(&env.tmp_root)?;
    let n_cold = floors::nofsync_writer(&p_nofsync, env.threads)?;
    set.verify(&nhome)?;
    settle(&env.tmp_root)?;
    let s_cold = env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    let cold_end = Instant::now();
    set.verify(&ws.home())?;
    let cold = Sample {
        stead: s_cold,
        baseline: b_cold,
        floors: vec![(f::NOFSYNC_WRITER, n_cold), (f::FSYNC_WRITER, b_cold)],
    };

    // Warm no-op.
    let s_warm = env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    let (b_warm, warm_floors) = read_floors(set, &p_stead, env.threads, &[])
        .map_err(|e| format!("after the warm no-op apply: {e}"))?;
    let warm = Sample {
        stead: s_warm,
        baseline: b_warm,
        floors: warm_floors,
    };
    env.stead_expect(&ws, &["state", "check-drift"], 0)?;

    // Steady no-op: wait out the stat cache's racy window after the cold
    // apply's writes, let one untimed run record the files as trusted,
    // then time the next. This waits on a documented rule, not a guess.
    let since_cold = cold_end.elapsed();
    if since_cold < STAT_CACHE_SETTLE {
        std::thread::sleep(STAT_CACHE_SETTLE - since_cold);
    }
    env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    let s_steady = env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    let (b_steady, steady_floors) = read_floors(set, &p_stead, env.threads, &[])
        .map_err(|e| format!("after the steady no-op apply: {e}"))?;
    let steady = Sample {
        stead: s_steady,
        baseline: b_steady,
        floors: steady_floors,
    };

    // 1% drift: check-drift finds it, apply repairs it.
    set.drift(&ws.home())?;
    set.drift(&bhome)?;
    set.drift(&nhome)?;
    let s_check = env.stead_expect(&ws, &["state", "check-drift"], 4)?;
    let (b_check, check_floors) = read_floors(set, &p_stead, env.threads, &set.drift_set())
        .map_err(|e| format!("after the drift: {e}"))?;
    let check_drift = Sample {
        stead: s_check,
        baseline: b_check,
        floors: check_floors,
    };
    // Each repair starts with nothing dirty, as each cold writer does: not
    // the drift's edits (a user's edits are written back within 30 s by
    // the kernel), nor another repair's rewrites, which a `syncfs` barrier
    // would otherwise flush on its time. stead repairs first: the floors'
    // renames free the 100 replaced files (stead keeps each as a backup),
    // and inodes freed just before are passed over, one by one, by every
    // inode the next repair makes ([`INODE_REUSE_DELAY`]).
    settle(&env.tmp_root)?;
    let s_repair = env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    set.verify(&ws.home())?;
    env.stead_expect(&ws, &["state", "check-drift"], 0)?;
    settle(&env.tmp_root)?;
    let b_repair = floors::repair(&p_base, env.threads, true)?;
    set.verify(&bhome)?;
    settle(&env.tmp_root)?;
    let n_repair = floors::repair(&p_nofsync, env.threads, false)?;
    set.verify(&nhome)?;
    kept.keep(ws.dir, set.n);
    kept.keep(base, 2 * set.n);
    let repair = Sample {
        stead: s_repair,
        baseline: b_repair.total,
        floors: vec![
            (f::REPAIR, b_repair.total),
            (f::REPAIR_NOFSYNC, n_repair.total),
            (f::REWRITE, b_repair.writes),
        ],
    };
    Ok(FilesRepeat {
        cold,
        warm,
        steady,
        check_drift,
        repair,
    })
}

// ----------------------------------------------------------------- noop-N

/// The `noop-N` data set: N noops, each `after` up to 2 random earlier ones.
#[derive(Debug, Clone, Copy)]
pub struct NoopSet {
    /// Number of resources.
    pub n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl NoopSet {
    /// The dependencies of resource `i` (indices below `i`, no duplicates),
    /// for every `i`.
    pub fn edges(&self) -> Vec<Vec<usize>> {
        let mut rng = XorShift::new(self.seed);
        (0..self.n)
            .map(|i| {
                let mut deps = Vec::new();
                if i > 0 {
                    for _ in 0..2 {
                        let d = rng.below(i);
                        if !deps.contains(&d) {
                            deps.push(d);
                        }
                    }
                }
                deps
            })
            .collect()
    }

    /// Writes `stead.toml` into `config`.
    pub fn write_manifest(&self, config: &Path) -> Result<()> {
        let mut text = String::with_capacity(self.n * 48);
        text.push_str("# Generated by stead-bench.\n\n");
        for (i, deps) in self.edges().iter().enumerate() {
            text.push_str(&format!("[noop.n{i}]\n"));
            if !deps.is_empty() {
                let list: Vec<String> = deps.iter().map(|d| format!("\"noop.n{d}\"")).collect();
                text.push_str(&format!("after = [{}]\n", list.join(", ")));
            }
            text.push('\n');
        }
        fs::write(config.join("stead.toml"), text)?;
        Ok(())
    }
}

/// Baseline of load + plan: read and parse the same `stead.toml`, resolve
/// every `after` name, and order the DAG (Kahn). Returns the time and the
/// number of resources ordered.
pub fn baseline_noop(config: &Path) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let text = fs::read_to_string(config.join("stead.toml"))?;
    let root: toml::Table = text.parse()?;
    let noops = root
        .get("noop")
        .and_then(|v| v.as_table())
        .ok_or("no [noop] tables")?;
    let index: std::collections::HashMap<&str, usize> = noops
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let n = noops.len();
    let mut dependents = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, (_, t)) in noops.iter().enumerate() {
        if let Some(after) = t.get("after").and_then(|a| a.as_array()) {
            for a in after {
                let name = a.as_str().ok_or("after: not a string")?;
                let name = name.strip_prefix("noop.").ok_or("after: not a noop")?;
                let &d = index.get(name).ok_or("after: unknown resource")?;
                dependents[d].push(i);
                indegree[i] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    if ordered != n {
        return Err("the noop graph has a cycle".into());
    }
    Ok((start.elapsed(), ordered))
}

/// Prepares a `noop-N` workspace and runs one untimed apply (it initializes
/// the state, which later runs then only read).
pub fn noop_prepare(env: &Env, set: &NoopSet) -> Result<Workspace> {
    let ws = Workspace::new(env, &format!("stead-bench-noop-{}-", set.n))?;
    set.write_manifest(&ws.config())?;
    env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    Ok(ws)
}

/// What `stead -v apply` says on stderr when the converged seal held and
/// nothing was loaded or planned (cli/src/commands/plan.rs, `print_sealed`).
pub const SEALED_NOTE: &str = "without planning";

/// One timed repeat of `noop-N`: `stead apply --yes` vs. [`baseline_noop`].
/// The case times loading, planning and applying, so each repeat starts
/// without the converged seal an earlier one left (once the manifest is
/// older than the seal's racy window, a no-op seals and the next one skips
/// all three), and a repeat whose apply still found a seal is an error,
/// not a sample.
pub fn noop_repeat(env: &Env, set: &NoopSet, ws: &Workspace) -> Result<Sample> {
    let (baseline, ordered) = baseline_noop(&ws.config())?;
    if ordered != set.n {
        return Err(format!("the baseline ordered {ordered} of {} noops", set.n).into());
    }
    remove_seal(ws)?;
    let stead = env.stead_expect(ws, &["--verbose", "apply", "--yes"], 0)?;
    if stead.stderr.contains(SEALED_NOTE) {
        return Err(format!(
            "noop-{}: the apply found the converged seal and planned nothing:\n{}",
            set.n, stead.stderr
        )
        .into());
    }
    Ok(Sample::plain(stead, baseline))
}

/// Removes the converged seal of `ws` (none is fine).
pub fn remove_seal(ws: &Workspace) -> Result<()> {
    let path = ws.state().join(stead_lib::seal::SEAL_FILE);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()).into())
        }
        _ => Ok(()),
    }
}

// ----------------------------------------------------------------- report

mod report;
pub use report::{
    FILE_OPERATIONS, FloorTime, Options, Report, Row, journal_cost_repeat, load_line, raw, run,
    side_by_side, table,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_keeps_its_dirs_until_it_deletes_them_and_only_many_files_make_the_next_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let mut kept = Leftovers::default();
        let mut paths = Vec::new();
        for files in [MANY_DELETED / 2, MANY_DELETED / 2 - 1] {
            let dir = tempfile::tempdir_in(tmp.path()).unwrap();
            fs::write(dir.path().join("f"), "x").unwrap();
            paths.push(dir.path().to_path_buf());
            kept.keep(dir, files);
        }
        assert!(paths.iter().all(|p| p.join("f").is_file()));
        kept.delete(tmp.path()).unwrap();
        assert!(paths.iter().all(|p| !p.exists()));
        assert_eq!(kept.many_deleted_at, None, "fewer than MANY_DELETED files");

        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        kept.keep(dir, MANY_DELETED);
        kept.delete(tmp.path()).unwrap();
        assert!(kept.many_deleted_at.is_some());
        assert_eq!(kept.files, 0, "a deletion starts the count again");
    }
}
