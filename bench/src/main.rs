//! `stead-bench`: measures the `stead` binary beside plain-Rust baselines.
//!
//! ```text
//! cargo build --release -p stead
//! cargo run --release -p stead-bench -- [--quick] [--repeat N] [--files N,N] [--trees N,N] [--noops N,N]
//!                                       [--stead PATH] [--threads N] [--tmp DIR]
//!                                       [--peers] [--dotdrop PATH]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use stead_bench::{Env, Options, STEAD_DEFAULT_JOBS};

const USAGE: &str = "\
usage: stead-bench [OPTIONS]
       stead-bench rss -- CMD [ARGS...]
       stead-bench packages [--declared N,N] [--install K] [--repeat N] [--stead PATH] [--tmp DIR]
       stead-bench watch [--files N] [--edits N] [--idle SECS] [--debounce MS] [--stead PATH] [--tmp DIR]
       stead-bench etcd [--machines N] [--syncs K] [--records R] [--repeat N] [--stead PATH] [--tmp DIR]

Measures the stead binary (files-N, tree-N and noop-N) beside plain-Rust baselines
run in the same process, and prints a Markdown table of medians and ratios.
A case keeps its repeats' temp dirs until it ends; after it deleted 10 000 files
or more, the next case waits 361 s (on ext4 without a journal every inode made
within minutes of a large deletion costs more: docs/performance.md). Leave as
long after another bench run.

options:
  --quick           small N, one repeat (a smoke test)
  --repeat N        runs per measurement; the median is reported (default 3)
  --files N,N,...   files-N cases (default 1000,10000,100000; 'none' for none)
  --trees N,N,...   tree-N cases: the files-N files as one tree (default 10000)
  --noops N,N,...   noop-N cases (default 1000,10000,100000; 'none' for none)
  --stead PATH      the stead binary (default: 'stead' next to this binary)
  --journal-cost P  also measure a cold apply against P, a stead built with
                    --features stead-lib/journal-nosync (journal fsyncs off)
  --journal-cost-files N  files in that case (default 10000; after --journal-cost)
  --threads N       threads of the baselines (default 8, stead's --jobs default)
  --tmp DIR         where the temp dirs go (default: the system temp dir)
  --peers           also run GNU stow, dotdrop and cfengine 3 (cf-agent) on the
                    files-N cases, when installed (a missing one is reported)
  --dotdrop PATH    the dotdrop program for --peers (default: 'dotdrop' on PATH)

'rss' runs CMD as its only child and prints 'exit wall_ns max_rss_kb'.

'packages' measures the package kind on a throw-away apt root (real apt and
dpkg; needs apt-utils): a warm plan of N declared packages (default 50,500)
beside one dpkg-query, and installing K packages (default 10) in stead's one
transaction beside apt-get one by one and one apt-get, and the autoedges'
cost: a plan of the largest N package upgrades and 200 files (stead reads
what the packages ship) beside the upgrades alone and the files alone.

'watch' measures stead watch over N managed files (default 10000): the time
from an editor-style save of one file to the watch's run that repaired it
(median of --edits, default 9), beside 'stead apply --yes' repairing the
same kind of edit, and the watch's CPU use over an idle window (default 10 s).

'etcd' measures a fleet on a real one-member etcd on loopback (issue 20): N
machines (default 200), one thread each, doing K syncs (default 3) at once
through stead's etcd backend (wall time, syncs/s, CAS retries (any fails
the run), etcd's own counters per sync), the same syncs each under its
machine's own lock (hybrid; a machine kept waiting by another fails the
run), beside the same syncs on the whole
record in one key (compare-and-set on its revision, retried), and 'stead
fleet status --json' over R machine records (default 1000; median of
--repeat, default 3) beside one range read of the prefix parsed into a record.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stead-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(v: &str) -> stead_bench::Result<Vec<usize>> {
    if v == "none" {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse::<usize>()
                .map_err(Into::into)
        })
        .collect()
}

fn real_main(args: &[String]) -> stead_bench::Result<()> {
    if args.first().map(String::as_str) == Some("rss") {
        let cmd = match args.get(1).map(String::as_str) {
            Some("--") => &args[2..],
            _ => &args[1..],
        };
        return stead_bench::rss_wrapper(cmd);
    }
    if args.first().map(String::as_str) == Some("watch") {
        return watch_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("packages") {
        return packages_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("etcd") {
        return etcd_main(&args[1..]);
    }
    let exe = std::env::current_exe()?;
    let mut opts = Options::full();
    let mut stead: Option<PathBuf> = None;
    let mut threads = STEAD_DEFAULT_JOBS;
    let mut tmp = std::env::temp_dir();
    let mut dotdrop: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => {
                let q = Options::quick();
                opts.files = q.files;
                opts.trees = q.trees;
                opts.noops = q.noops;
                opts.repeat = q.repeat;
            }
            "--repeat" => opts.repeat = value()?.parse()?,
            "--files" => opts.files = list(&value()?)?,
            "--noops" => opts.noops = list(&value()?)?,
            "--trees" => opts.trees = list(&value()?)?,
            "--stead" => stead = Some(PathBuf::from(value()?)),
            "--journal-cost" => {
                let nosync = PathBuf::from(value()?);
                if !nosync.is_file() {
                    return Err(format!(
                        "no stead binary at {}: build it with cargo build --release -p stead --features stead-lib/journal-nosync --target-dir target/nosync",
                        nosync.display()
                    )
                    .into());
                }
                opts.journal_cost = Some((nosync.canonicalize()?, 10_000));
            }
            "--journal-cost-files" => {
                let n = value()?.parse()?;
                if let Some((_, files)) = opts.journal_cost.as_mut() {
                    *files = n;
                }
            }
            "--threads" => threads = value()?.parse()?,
            "--tmp" => tmp = PathBuf::from(value()?),
            "--peers" => {
                opts.peers.get_or_insert_with(Vec::new);
            }
            "--dotdrop" => {
                let path = PathBuf::from(value()?);
                dotdrop = Some(path);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
        }
    }
    if let (Some(explicit), Some(path)) = (opts.peers.as_mut(), dotdrop) {
        explicit.push((stead_bench::peers::Tool::Dotdrop, path));
    }
    let stead = match stead {
        Some(p) => p,
        None => exe
            .parent()
            .map(|d| d.join("stead"))
            .ok_or("cannot tell where this binary is")?,
    };
    if !stead.is_file() {
        return Err(format!(
            "no stead binary at {}: build it first (cargo build --release -p stead) or pass --stead PATH",
            stead.display()
        )
        .into());
    }
    let env = Env {
        stead: stead.canonicalize()?,
        wrapper: exe,
        threads,
        tmp_root: tmp,
    };
    eprintln!(
        "stead-bench: stead {}, baselines on {} threads, temp dirs in {}, {} repeat(s)",
        env.stead.display(),
        env.threads,
        env.tmp_root.display(),
        opts.repeat
    );
    let report = stead_bench::run(&env, &opts)?;
    println!("{}", stead_bench::table(&report.rows));
    println!("{}", stead_bench::side_by_side(&report));
    println!("{}\n", stead_bench::load_line(&report));
    println!("All samples (run order):\n{}", stead_bench::raw(&report));
    let missed = report.missed();
    if !missed.is_empty() {
        println!("Targets missed: {}", missed.join("; "));
    }
    Ok(())
}

/// `stead-bench watch ...`.
fn watch_main(args: &[String]) -> stead_bench::Result<()> {
    let mut opts = stead_bench::watch::WatchOptions {
        files: 10_000,
        edits: 9,
        idle: std::time::Duration::from_secs(10),
        debounce_ms: 200,
    };
    let mut stead: Option<PathBuf> = None;
    let mut tmp = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--files" => opts.files = value()?.parse::<usize>()?.max(1),
            "--edits" => opts.edits = value()?.parse::<usize>()?.max(1),
            "--idle" => opts.idle = std::time::Duration::from_secs(value()?.parse()?),
            "--debounce" => opts.debounce_ms = value()?.parse()?,
            "--stead" => stead = Some(PathBuf::from(value()?)),
            "--tmp" => tmp = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
        }
    }
    let env = bench_env(stead, tmp)?;
    print!("{}", stead_bench::watch::run(&env, &opts)?);
    Ok(())
}

/// The stead binary (`--stead`, else next to this one) and where temp dirs go.
fn bench_env(stead: Option<PathBuf>, tmp: PathBuf) -> stead_bench::Result<Env> {
    let exe = std::env::current_exe()?;
    let stead = stead.unwrap_or_else(|| exe.with_file_name("stead"));
    if !stead.is_file() {
        return Err(format!(
            "no stead binary at {}: cargo build --release -p stead, or --stead PATH",
            stead.display()
        )
        .into());
    }
    Ok(Env {
        stead: stead.canonicalize()?,
        wrapper: exe,
        threads: STEAD_DEFAULT_JOBS,
        tmp_root: tmp,
    })
}

/// `stead-bench packages ...`.
fn packages_main(args: &[String]) -> stead_bench::Result<()> {
    let mut opts = stead_bench::packages::PackageOptions {
        declared: vec![50, 500],
        install: 10,
        repeat: 3,
    };
    let mut stead: Option<PathBuf> = None;
    let mut tmp = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--declared" => opts.declared = list(&value()?)?,
            "--install" => opts.install = value()?.parse()?,
            "--repeat" => opts.repeat = value()?.parse()?,
            "--stead" => stead = Some(PathBuf::from(value()?)),
            "--tmp" => tmp = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
        }
    }
    let env = bench_env(stead, tmp)?;
    print!("{}", stead_bench::packages::run(&env, &opts)?);
    Ok(())
}

/// `stead-bench etcd ...`.
fn etcd_main(args: &[String]) -> stead_bench::Result<()> {
    let mut opts = stead_bench::fleet::FleetOptions {
        machines: 200,
        syncs: 3,
        records: 1000,
        repeat: 3,
    };
    let mut stead: Option<PathBuf> = None;
    let mut tmp = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))
        };
        match a.as_str() {
            "--machines" => opts.machines = value()?.parse::<usize>()?.max(1),
            "--syncs" => opts.syncs = value()?.parse::<usize>()?.max(1),
            "--records" => opts.records = value()?.parse::<usize>()?.max(1),
            "--repeat" => opts.repeat = value()?.parse::<usize>()?.max(1),
            "--stead" => stead = Some(PathBuf::from(value()?)),
            "--tmp" => tmp = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}\n\n{USAGE}").into()),
        }
    }
    let env = bench_env(stead, tmp)?;
    print!("{}", stead_bench::fleet::run(&env, &opts)?);
    Ok(())
}
