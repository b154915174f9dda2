//! What to run and how it is reported: the cases in order, the rows
//! (medians, ratios to the baseline and to the floors, the targets of
//! issue 15), and the Markdown tables printed by `stead-bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::peers::{self, PeerResult, Tool};
use crate::{
    Env, FileSet, Leftovers, Measured, NoopSet, Result, Sample, Workspace, files_repeat,
    floor_names, load_average, noop_prepare, noop_repeat,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// A stead built with `--features stead-lib/journal-nosync`, and the N of
    /// the journal-cost case (cold apply, journal fsyncs on vs off).
    pub journal_cost: Option<(PathBuf, usize)>,
    /// N of the files-N cases.
    pub files: Vec<usize>,
    /// N of the tree-N cases.
    pub trees: Vec<usize>,
    /// N of the noop-N cases.
    pub noops: Vec<usize>,
    /// Repeats per case (the median is reported).
    pub repeat: usize,
    /// Run the peers on the files-N cases (`--peers`), with these programs
    /// given explicitly (the rest are looked up on `PATH`).
    pub peers: Option<Vec<(Tool, PathBuf)>>,
}

impl Options {
    /// The full benchmark of the issue.
    pub fn full() -> Self {
        Options {
            journal_cost: None,
            files: vec![1_000, 10_000, 100_000],
            trees: vec![10_000],
            noops: vec![1_000, 10_000, 100_000],
            repeat: 3,
            peers: None,
        }
    }
    /// Small N, one repeat: a smoke test in seconds.
    pub fn quick() -> Self {
        Options {
            journal_cost: None,
            files: vec![300],
            trees: vec![300],
            noops: vec![1_000],
            repeat: 1,
            peers: None,
        }
    }
}

/// A floor's times beside one row.
#[derive(Debug, Clone)]
pub struct FloorTime {
    /// Its name ([`floor_names`]).
    pub name: &'static str,
    /// Median over the repeats.
    pub median: Duration,
    /// Every time, in run order.
    pub all: Vec<Duration>,
}

/// A row of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `files-1000`, `noop-100000`, ...
    pub case: String,
    /// What was measured.
    pub operation: &'static str,
    /// Median stead wall time.
    pub stead: Duration,
    /// Median baseline time.
    pub baseline: Duration,
    /// What the baseline was.
    pub baseline_name: &'static str,
    /// Highest peak RSS of stead over the repeats, KiB.
    pub max_rss_kb: u64,
    /// Every stead time, in run order.
    pub stead_all: Vec<Duration>,
    /// Every baseline time, in run order.
    pub baseline_all: Vec<Duration>,
    /// The floors measured beside it.
    pub floors: Vec<FloorTime>,
    /// The targets this row is held to, and whether each was met.
    pub targets: Vec<(String, bool)>,
}

impl Row {
    fn new(
        case: String,
        operation: &'static str,
        baseline_name: &'static str,
        s: &[&Sample],
    ) -> Self {
        let stead_all: Vec<Duration> = s.iter().map(|x| x.stead.wall).collect();
        let baseline_all: Vec<Duration> = s.iter().map(|x| x.baseline).collect();
        let names: Vec<&'static str> = s
            .first()
            .map(|x| x.floors.iter().map(|(n, _)| *n).collect())
            .unwrap_or_default();
        let floors = names
            .into_iter()
            .map(|name| {
                let all: Vec<Duration> = s
                    .iter()
                    .filter_map(|x| x.floors.iter().find(|(n, _)| *n == name).map(|f| f.1))
                    .collect();
                FloorTime {
                    name,
                    median: median(&all),
                    all,
                }
            })
            .collect();
        Row {
            case,
            operation,
            stead: median(&stead_all),
            baseline: median(&baseline_all),
            baseline_name,
            max_rss_kb: s.iter().map(|x| x.stead.max_rss_kb).max().unwrap_or(0),
            stead_all,
            baseline_all,
            floors,
            targets: Vec::new(),
        }
    }

    /// stead / baseline.
    pub fn ratio(&self) -> f64 {
        ratio(self.stead, self.baseline)
    }

    /// The median of floor `name`, if it was measured beside this row.
    pub fn floor(&self, name: &str) -> Option<Duration> {
        self.floors
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.median)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn median(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One repeat of the journal's cost: a cold apply of `n` files by `env`'s
/// stead (journal fsyncs on) and by `nosync` (the same build with the
/// journal's fsyncs off), on fresh temp dirs each; which goes first
/// alternates with `on_first`.
pub fn journal_cost_repeat(env: &Env, nosync: &Path, n: usize, on_first: bool) -> Result<Sample> {
    let set = FileSet { n, tree: false };
    let off_env = Env {
        stead: nosync.to_path_buf(),
        ..env.clone()
    };
    let cold = |e: &Env, name: &str| -> Result<Measured> {
        let ws = Workspace::new(e, &format!("stead-bench-journal-{name}-{n}-"))?;
        set.write_manifest(&ws.config())?;
        let m = e.stead_expect(&ws, &["apply", "--yes"], 0)?;
        set.verify(&ws.home())?;
        Ok(m)
    };
    let (on, off) = if on_first {
        let on = cold(env, "on")?;
        (on, cold(&off_env, "off")?)
    } else {
        let off = cold(&off_env, "off")?;
        (cold(env, "on")?, off)
    };
    Ok(Sample::plain(on, off.wall))
}

/// The operations of a files-N row, in order (also the columns of the
/// side-by-side table).
pub const FILE_OPERATIONS: [&str; 5] = [
    "cold apply",
    "warm no-op apply",
    "steady no-op apply",
    "1% drift repaired",
    "check-drift (1% drifted)",
];

/// The rows of one `files-N` or `tree-N` case over `repeat` repeats, held
/// to issue 15's targets: a cold apply within 2x the no-fsync writer, a
/// steady no-op (stat cache filled) within 2x the lstat floor, a 1% drift
/// repair within 2x (stead's own steady no-op + the durable rewrite of the
/// drifted files).
///
/// The repeats' temp dirs are deleted when the last one ends, not between
/// them (`kept`; [`crate::INODE_REUSE_DELAY`] says why).
fn files_rows(env: &Env, set: &FileSet, repeat: usize, kept: &mut Leftovers) -> Result<Vec<Row>> {
    use floor_names as f;
    let case = set.case();
    let mut reps = Vec::new();
    for r in 0..repeat {
        eprintln!("{case}: repeat {}/{repeat}", r + 1);
        reps.push(files_repeat(env, set, kept)?);
    }
    kept.delete(&env.tmp_root)?;
    let row = |op: usize, baseline: &'static str, pick: fn(&crate::FilesRepeat) -> &Sample| {
        Row::new(
            case.clone(),
            FILE_OPERATIONS[op],
            baseline,
            &reps.iter().map(pick).collect::<Vec<_>>(),
        )
    };
    let mut cold = row(0, "atomic writer", |r| &r.cold);
    let warm = row(1, "read+hash", |r| &r.warm);
    let mut steady = row(2, "read+hash", |r| &r.steady);
    let mut repair = row(3, "read+hash+rewrite", |r| &r.repair);
    let check = row(4, "read+hash", |r| &r.check_drift);
    if let Some(w) = cold.floor(f::NOFSYNC_WRITER) {
        let ok = ratio(cold.stead, w) <= 2.0;
        cold.targets.push(("<= 2x no-fsync writer".into(), ok));
    }
    if let Some(l) = steady.floor(f::LSTAT) {
        let ok = ratio(steady.stead, l) <= 2.0;
        steady.targets.push(("<= 2x lstat floor".into(), ok));
    }
    if let Some(w) = repair.floor(f::REWRITE) {
        let ok = ratio(repair.stead, steady.stead + w) <= 2.0;
        repair
            .targets
            .push(("<= 2x (stead no-op + rewrite)".into(), ok));
    }
    Ok(vec![cold, warm, steady, repair, check])
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// stead's rows, in run order.
    pub rows: Vec<Row>,
    /// The peers' results (empty without `--peers`).
    pub peers: Vec<PeerResult>,
    /// The load average at the start and after each case, labelled.
    pub load: Vec<(String, String)>,
}

impl Report {
    /// Every target missed, as `case operation (target)`.
    pub fn missed(&self) -> Vec<String> {
        self.rows
            .iter()
            .flat_map(|r| {
                r.targets
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(move |(t, _)| format!("{} {} ({t})", r.case, r.operation))
            })
            .collect()
    }
}

/// Runs every located peer `repeat` times on `set`; a peer not installed
/// gets a result with no runs.
fn peer_results(
    env: &Env,
    set: &FileSet,
    located: &[peers::Located],
    repeat: usize,
    kept: &mut Leftovers,
) -> Result<Vec<PeerResult>> {
    let mut out = Vec::new();
    for l in located {
        let runs = match &l.program {
            None => None,
            Some(program) => {
                kept.wait_out();
                let mut runs = Vec::new();
                for r in 0..repeat {
                    eprintln!(
                        "{} {}: repeat {}/{repeat}",
                        set.case(),
                        l.tool.name(),
                        r + 1
                    );
                    runs.push(peers::peer_repeat(env, l.tool, program, set, kept)?);
                }
                kept.delete(&env.tmp_root)?;
                Some(runs)
            }
        };
        out.push(PeerResult {
            case: set.case(),
            tool: l.tool,
            runs,
        });
    }
    Ok(out)
}

/// Holds the cold row of a case to issue 15's "faster than cfengine and
/// dotdrop measured in the same run".
fn peer_targets(rows: &mut [Row], results: &[PeerResult]) {
    for p in results {
        if !matches!(p.tool, Tool::Cfengine | Tool::Dotdrop) {
            continue;
        }
        let Some(runs) = &p.runs else { continue };
        let peer_cold = median(&runs.iter().map(|(c, _)| c.wall).collect::<Vec<_>>());
        if let Some(cold) = rows
            .iter_mut()
            .find(|r| r.case == p.case && r.operation == FILE_OPERATIONS[0])
        {
            let ok = cold.stead < peer_cold;
            cold.targets
                .push((format!("faster than {}", p.tool.name()), ok));
        }
    }
}

/// Runs the cases in `opts`, printing progress to stderr.
pub fn run(env: &Env, opts: &Options) -> Result<Report> {
    let repeat = opts.repeat.max(1);
    let mut rows = Vec::new();
    let mut peer_rows = Vec::new();
    let mut load = vec![("start".to_string(), load_average())];
    let mut kept = Leftovers::default();
    if let Some((nosync, n)) = &opts.journal_cost {
        let mut reps = Vec::new();
        for r in 0..repeat {
            eprintln!("journal-cost files-{n}: repeat {}/{repeat}", r + 1);
            reps.push(journal_cost_repeat(env, nosync, *n, r % 2 == 0)?);
        }
        let mut row = Row::new(
            format!("files-{n}"),
            "cold apply, journal fsyncs on",
            "same, journal fsyncs off",
            &reps.iter().collect::<Vec<_>>(),
        );
        let ok = row.ratio() <= 1.25;
        row.targets.push(("<= 1.25x".into(), ok));
        rows.push(row);
        load.push((format!("after journal-cost files-{n}"), load_average()));
        kept.deleted(2 * n * repeat);
    }
    let located = opts
        .peers
        .as_ref()
        .map(|explicit| peers::locate(explicit, std::env::var_os("PATH").as_deref()));
    let sets = opts.files.iter().map(|&n| FileSet { n, tree: false });
    let trees = opts.trees.iter().map(|&n| FileSet { n, tree: true });
    for set in sets.chain(trees) {
        kept.wait_out();
        let mut case_rows = files_rows(env, &set, repeat, &mut kept)?;
        if let (Some(located), false) = (&located, set.tree) {
            let results = peer_results(env, &set, located, repeat, &mut kept)?;
            peer_targets(&mut case_rows, &results);
            peer_rows.extend(results);
            load.push((format!("after {} and peers", set.case()), load_average()));
        } else {
            load.push((format!("after {}", set.case()), load_average()));
        }
        rows.extend(case_rows);
    }
    kept.wait_out();
    for &n in &opts.noops {
        let set = NoopSet {
            n,
            seed: 0x5EED_0000 + n as u64,
        };
        eprintln!("noop-{n}: preparing");
        let ws = noop_prepare(env, &set)?;
        let mut reps = Vec::new();
        for r in 0..repeat {
            eprintln!("noop-{n}: repeat {}/{repeat}", r + 1);
            reps.push(noop_repeat(env, &set, &ws)?);
        }
        let mut row = Row::new(
            format!("noop-{n}"),
            "load+plan+apply",
            "toml parse+toposort",
            &reps.iter().collect::<Vec<_>>(),
        );
        if n == 100_000 {
            let ok = row.stead < Duration::from_secs(2);
            row.targets.push(("< 2 s".into(), ok));
        }
        rows.push(row);
        load.push((format!("after noop-{n}"), load_average()));
    }
    Ok(Report {
        rows,
        peers: peer_rows,
        load,
    })
}

fn targets_cell(targets: &[(String, bool)]) -> String {
    targets
        .iter()
        .map(|(t, ok)| format!("{t}: {}", if *ok { "met" } else { "MISSED" }))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The result table, Markdown: stead beside its baseline.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | operation | stead | baseline | ratio | stead peak RSS | baseline is | target |\n\
         |---|---|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.1} MiB | {} | {} |\n",
            r.case,
            r.operation,
            fmt_dur(r.stead),
            fmt_dur(r.baseline),
            r.ratio(),
            r.max_rss_kb as f64 / 1024.0,
            r.baseline_name,
            targets_cell(&r.targets)
        ));
    }
    out
}

/// `time (×r)` where r = stead / time.
fn vs_stead(stead: Duration, t: Duration) -> String {
    format!("{} (×{:.2})", fmt_dur(t), ratio(stead, t))
}

/// For each files-N and tree-N case, one Markdown table with the
/// operations as columns and as rows stead, the peers and the floors; a
/// peer or floor cell reads `time (×r)`, r = stead's median / its median.
pub fn side_by_side(report: &Report) -> String {
    let mut out = String::new();
    let mut cases: Vec<&str> = Vec::new();
    for r in report.rows.iter().filter(|r| !r.floors.is_empty()) {
        if !cases.contains(&r.case.as_str()) {
            cases.push(&r.case);
        }
    }
    for case in cases {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.case == case).collect();
        let by_op = |op: &str| rows.iter().find(|r| r.operation == op).copied();
        out.push_str(&format!(
            "{case}, side by side (×r = stead's median / this one's):\n\n| | {} | peak RSS |\n|---|{}---:|\n",
            FILE_OPERATIONS.join(" | "),
            "---:|".repeat(FILE_OPERATIONS.len())
        ));
        let rss = rows.iter().map(|r| r.max_rss_kb).max().unwrap_or(0);
        let cells: Vec<String> = FILE_OPERATIONS
            .iter()
            .map(|op| by_op(op).map(|r| fmt_dur(r.stead)).unwrap_or_default())
            .collect();
        out.push_str(&format!(
            "| stead | {} | {} |\n",
            cells.join(" | "),
            fmt_kb(rss)
        ));
        for p in report.peers.iter().filter(|p| p.case == case) {
            out.push_str(&peer_line(p, &by_op));
        }
        let mut floor_names: Vec<&'static str> = Vec::new();
        for r in &rows {
            for f in &r.floors {
                if !floor_names.contains(&f.name) {
                    floor_names.push(f.name);
                }
            }
        }
        for name in floor_names {
            let cells: Vec<String> = FILE_OPERATIONS
                .iter()
                .map(|op| {
                    by_op(op)
                        .and_then(|r| r.floor(name).map(|t| vs_stead(r.stead, t)))
                        .unwrap_or_default()
                })
                .collect();
            out.push_str(&format!("| floor: {name} | {} | |\n", cells.join(" | ")));
        }
        out.push('\n');
    }
    out
}

fn peer_line<'a>(p: &PeerResult, by_op: &dyn Fn(&str) -> Option<&'a Row>) -> String {
    let Some(runs) = &p.runs else {
        return format!(
            "| {}: not installed ({}) |{} |\n",
            p.tool.name(),
            p.tool.install_hint(),
            " |".repeat(FILE_OPERATIONS.len())
        );
    };
    let cell = |op: &str, pick: fn(&(Measured, Measured)) -> &Measured| {
        let t = median(&runs.iter().map(|r| pick(r).wall).collect::<Vec<_>>());
        by_op(op)
            .map(|r| vs_stead(r.stead, t))
            .unwrap_or_else(|| fmt_dur(t))
    };
    let rss = runs
        .iter()
        .map(|(c, w)| c.max_rss_kb.max(w.max_rss_kb))
        .max()
        .unwrap_or(0);
    format!(
        "| {} | {} | {} | | | | {} |\n",
        p.tool.name(),
        cell(FILE_OPERATIONS[0], |r| &r.0),
        cell(FILE_OPERATIONS[1], |r| &r.1),
        fmt_kb(rss)
    )
}

/// The load averages of the run, one line.
pub fn load_line(report: &Report) -> String {
    let parts: Vec<String> = report
        .load
        .iter()
        .map(|(label, l)| format!("{label}: {l}"))
        .collect();
    format!("Load average (1, 5, 15 min): {}", parts.join("; "))
}

/// Every sample, for the record (run order).
pub fn raw(report: &Report) -> String {
    let list = |v: &[Duration]| v.iter().map(|d| fmt_dur(*d)).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    for r in &report.rows {
        out.push_str(&format!(
            "{} {}: stead [{}] baseline [{}]\n",
            r.case,
            r.operation,
            list(&r.stead_all),
            list(&r.baseline_all)
        ));
        for f in &r.floors {
            out.push_str(&format!("  floor {}: [{}]\n", f.name, list(&f.all)));
        }
    }
    for p in &report.peers {
        if let Some(runs) = &p.runs {
            let cold: Vec<Duration> = runs.iter().map(|r| r.0.wall).collect();
            let warm: Vec<Duration> = runs.iter().map(|r| r.1.wall).collect();
            out.push_str(&format!(
                "{} {}: cold [{}] warm [{}]\n",
                p.case,
                p.tool.name(),
                list(&cold),
                list(&warm)
            ));
        }
    }
    out
}

fn fmt_kb(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stead_ms: u64, floors: Vec<(&'static str, Duration)>) -> Sample {
        Sample {
            stead: Measured {
                wall: Duration::from_millis(stead_ms),
                max_rss_kb: 1024,
                exit: 0,
                stderr: String::new(),
            },
            baseline: Duration::from_millis(10),
            floors,
        }
    }

    #[test]
    fn a_missing_peer_is_reported_as_not_installed() {
        let cold = sample(
            300,
            vec![(floor_names::NOFSYNC_WRITER, Duration::from_millis(100))],
        );
        let report = Report {
            rows: vec![Row::new(
                "files-10".into(),
                FILE_OPERATIONS[0],
                "atomic writer",
                &[&cold],
            )],
            peers: vec![PeerResult {
                case: "files-10".into(),
                tool: Tool::Stow,
                runs: None,
            }],
            load: vec![("start".into(), "1.00 0.50 0.25".into())],
        };
        let side = side_by_side(&report);
        assert!(
            side.contains("| GNU stow (symlinks): not installed (apt-get install stow) |"),
            "{side}"
        );
        assert!(
            side.contains("| floor: write+rename, no fsync | 100.0 ms (×3.00) |"),
            "{side}"
        );
        assert!(raw(&report).contains("floor write+rename, no fsync: [100.0 ms]"));
        assert_eq!(
            load_line(&report),
            "Load average (1, 5, 15 min): start: 1.00 0.50 0.25"
        );
    }

    #[test]
    fn floors_take_the_median_of_the_repeats() {
        let f = |ms| vec![(floor_names::LSTAT, Duration::from_millis(ms))];
        let (a, b, c) = (sample(5, f(3)), sample(6, f(1)), sample(7, f(2)));
        let row = Row::new(
            "files-1".into(),
            FILE_OPERATIONS[1],
            "read+hash",
            &[&a, &b, &c],
        );
        assert_eq!(
            row.floor(floor_names::LSTAT),
            Some(Duration::from_millis(2))
        );
        assert_eq!(row.floors[0].all.len(), 3);
        assert_eq!(row.floor(floor_names::READ_HASH), None);
    }
}
