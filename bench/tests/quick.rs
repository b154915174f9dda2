//! The quick benchmark end to end against the debug `stead` binary, with the
//! steps checked: files are right after a cold apply, check-drift reports
//! drift (exit 4) after the drift step and none (exit 0) after the repair.
//! Everything happens in temp dirs; the children's HOME is a temp dir too.

mod common;

use std::fs;
use std::path::PathBuf;

use stead_bench::{Env, FileSet, NoopSet, Options, Workspace};

use common::stead_binary;

fn env(tmp: &tempfile::TempDir) -> Env {
    Env {
        stead: stead_binary(),
        wrapper: PathBuf::from(env!("CARGO_BIN_EXE_stead-bench")),
        threads: 4,
        tmp_root: tmp.path().to_path_buf(),
    }
}

#[test]
fn files_steps_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env(&tmp);
    let set = FileSet {
        n: 250,
        tree: false,
    };
    let ws = Workspace::new(&env, "files-").unwrap();
    set.write_manifest(&ws.config()).unwrap();

    let cold = env.stead(&ws, &["apply", "--yes"]).unwrap();
    assert_eq!(cold.exit, 0, "cold apply failed: {}", cold.stderr);
    assert!(cold.max_rss_kb > 0, "the wrapper reports a peak RSS");
    assert_eq!(set.dirs(), 3);
    for i in 0..set.n {
        let got = fs::read_to_string(ws.home().join(format!("d{}/f{i}", i / 100))).unwrap();
        assert_eq!(got, set.content(i));
    }
    assert!(
        fs::read_to_string(ws.home().join("d2/f249"))
            .unwrap()
            .starts_with("# stead bench file 249\n")
    );
    // The children's HOME is the workspace's, and stays empty of managed files.
    assert!(!ws.env_home().join("d0").exists());

    let warm = env.stead(&ws, &["apply", "--yes"]).unwrap();
    assert_eq!(warm.exit, 0, "{}", warm.stderr);
    assert_eq!(
        env.stead(&ws, &["state", "check-drift"]).unwrap().exit,
        0,
        "no drift right after apply"
    );

    set.drift(&ws.home()).unwrap();
    assert_eq!(set.drift_set(), vec![0, 100, 200]);
    assert_eq!(
        fs::read_to_string(ws.home().join("d1/f100")).unwrap(),
        "# edited by hand 100\n"
    );
    assert_eq!(
        env.stead(&ws, &["state", "check-drift"]).unwrap().exit,
        4,
        "check-drift finds the drift"
    );
    let repair = env.stead(&ws, &["apply", "--yes"]).unwrap();
    assert_eq!(repair.exit, 0, "{}", repair.stderr);
    assert_eq!(
        fs::read_to_string(ws.home().join("d1/f100")).unwrap(),
        set.content(100)
    );
    set.verify(&ws.home()).unwrap();
    assert_eq!(
        env.stead(&ws, &["state", "check-drift"]).unwrap().exit,
        0,
        "no drift after the repair"
    );
}

#[test]
fn baselines_do_the_same_work() {
    let tmp = tempfile::tempdir().unwrap();
    let set = FileSet {
        n: 120,
        tree: false,
    };
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    stead_bench::baseline_write(&set, &home, 3).unwrap();
    set.verify(&home).unwrap();
    let (_, differing) = stead_bench::baseline_read_hash(&set, &home, 3).unwrap();
    assert!(differing.is_empty());
    set.drift(&home).unwrap();
    let (_, differing) = stead_bench::baseline_read_hash(&set, &home, 3).unwrap();
    assert_eq!(differing, vec![0, 100]);
    stead_bench::baseline_repair(&set, &home, 3).unwrap();
    set.verify(&home).unwrap();
    // No temp file is left behind.
    let names: Vec<String> = fs::read_dir(home.join("d1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 20);
    assert!(names.iter().all(|n| !n.starts_with('.')));
}

/// No dot-named temp file is left in any directory of `home`.
fn assert_no_temps(home: &std::path::Path) {
    for d in fs::read_dir(home).unwrap() {
        for e in fs::read_dir(d.unwrap().path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "temp file {name} left behind");
        }
    }
}

#[test]
fn floors_do_the_work_they_time() {
    use stead_bench::floors::{self, Prepared};
    let tmp = tempfile::tempdir().unwrap();
    let set = FileSet {
        n: 250,
        tree: false,
    };
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let p = Prepared::new(&set, &home);

    // The no-fsync writer puts every file in place, mode 0644, no temps.
    floors::nofsync_writer(&p, 3).unwrap();
    set.verify(&home).unwrap();
    assert_no_temps(&home);

    // The read floors see no difference, then exactly the drifted files.
    assert!(floors::lstat_all(&p, 3).unwrap().1.is_empty());
    assert!(floors::read_compare(&p, 3).unwrap().1.is_empty());
    set.drift(&home).unwrap();
    assert_eq!(floors::lstat_all(&p, 3).unwrap().1, set.drift_set());
    assert_eq!(floors::read_compare(&p, 3).unwrap().1, set.drift_set());

    // A same-size change is invisible to lstat but not to a read.
    let same_len = set.content(7).to_uppercase();
    fs::write(home.join(set.rel(7)), &same_len).unwrap();
    assert_eq!(floors::lstat_all(&p, 3).unwrap().1, set.drift_set());
    assert_eq!(floors::read_compare(&p, 3).unwrap().1, vec![0, 7, 100, 200]);

    // Both repairs restore every file and leave no temps; the rewrite is
    // part of the total.
    let r = floors::repair(&p, 3, false).unwrap();
    assert!(r.writes <= r.total);
    set.verify(&home).unwrap();
    assert_no_temps(&home);
    set.drift(&home).unwrap();
    let r = floors::repair(&p, 3, true).unwrap();
    assert!(r.writes <= r.total);
    set.verify(&home).unwrap();
    assert_no_temps(&home);
}

#[test]
fn noop_dag_is_acyclic_and_deterministic() {
    let set = NoopSet { n: 500, seed: 7 };
    let edges = set.edges();
    assert_eq!(edges, set.edges(), "seeded");
    assert!(edges[0].is_empty());
    for (i, deps) in edges.iter().enumerate().skip(1) {
        assert!(!deps.is_empty() && deps.len() <= 2);
        assert!(deps.iter().all(|&d| d < i));
    }
    let total: usize = edges.iter().map(Vec::len).sum();
    assert!(total > 900, "about 2 edges each, got {total}");
    let tmp = tempfile::tempdir().unwrap();
    set.write_manifest(tmp.path()).unwrap();
    let (_, ordered) = stead_bench::baseline_noop(tmp.path()).unwrap();
    assert_eq!(ordered, 500);
}

#[test]
fn quick_mode_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env(&tmp);
    let report = stead_bench::run(&env, &Options::quick()).unwrap();
    let rows = &report.rows;
    let ops: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.case.as_str(), r.operation))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("files-300", "cold apply"),
            ("files-300", "warm no-op apply"),
            ("files-300", "steady no-op apply"),
            ("files-300", "1% drift repaired"),
            ("files-300", "check-drift (1% drifted)"),
            ("tree-300", "cold apply"),
            ("tree-300", "warm no-op apply"),
            ("tree-300", "steady no-op apply"),
            ("tree-300", "1% drift repaired"),
            ("tree-300", "check-drift (1% drifted)"),
            ("noop-1000", "load+plan+apply"),
        ]
    );
    for r in rows {
        assert!(r.ratio().is_finite() && r.ratio() > 0.0, "{r:?}");
        assert!(r.max_rss_kb > 0, "{r:?}");
    }
    // Every files/tree row has its floors, each measured (non-zero) once
    // per repeat; the noop row has none.
    use stead_bench::floor_names as f;
    let want: [&[&str]; 5] = [
        &[f::NOFSYNC_WRITER, f::FSYNC_WRITER],
        &[f::LSTAT, f::READ_COMPARE, f::READ_HASH],
        &[f::LSTAT, f::READ_COMPARE, f::READ_HASH],
        &[f::REPAIR, f::REPAIR_NOFSYNC, f::REWRITE],
        &[f::LSTAT, f::READ_COMPARE, f::READ_HASH],
    ];
    for (k, r) in rows[..10].iter().enumerate() {
        let names: Vec<&str> = r.floors.iter().map(|x| x.name).collect();
        assert_eq!(names, want[k % 5], "{} {}", r.case, r.operation);
        for fl in &r.floors {
            assert_eq!(fl.all.len(), 1);
            assert!(fl.median > std::time::Duration::ZERO, "{fl:?}");
        }
    }
    assert!(rows[10].floors.is_empty());
    // The targets are stated on the cold, steady and repair rows.
    for (k, r) in rows[..10].iter().enumerate() {
        let want = usize::from(matches!(k % 5, 0 | 2 | 3));
        assert_eq!(r.targets.len(), want, "{r:?}");
    }
    assert!(report.peers.is_empty(), "no --peers, no peers");
    let labels: Vec<&str> = report.load.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "start",
            "after files-300",
            "after tree-300",
            "after noop-1000"
        ]
    );
    let table = stead_bench::table(rows);
    assert!(table.contains("| files-300 | cold apply |"), "{table}");
    let side = stead_bench::side_by_side(&report);
    assert!(side.contains("| floor: lstat every file |"), "{side}");
    assert!(side.contains("tree-300, side by side"), "{side}");
    // Every temp dir was removed.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// `stead ARGS` in `ws` as the bench runs it, at `STEAD_NOW` = `now`: its
/// stderr.
fn stead_at(
    env: &Env,
    ws: &Workspace,
    now: chrono::DateTime<chrono::Utc>,
    args: &[&str],
) -> String {
    let mut cmd = env.stead_command(ws, args);
    cmd.env("STEAD_NOW", now.to_rfc3339());
    let run = stead_bench::measure(cmd).unwrap();
    assert_eq!(run.exit, 0, "stead {args:?}: {}", run.stderr);
    run.stderr
}

#[test]
fn every_noop_repeat_plans_even_when_a_seal_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let env = env(&tmp);
    let set = NoopSet { n: 30, seed: 3 };
    let ws = stead_bench::noop_prepare(&env, &set).unwrap();
    // A minute on, everything the no-op rests on has settled: it seals,
    // and the next apply finds the seal and plans nothing, as an earlier
    // repeat's seal would make a later repeat do.
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    stead_at(&env, &ws, later, &["apply", "--yes"]);
    assert!(
        ws.state().join(stead_lib::seal::SEAL_FILE).is_file(),
        "the no-op left no seal"
    );
    let sealed = stead_at(&env, &ws, later, &["--verbose", "apply", "--yes"]);
    assert!(
        sealed.contains(stead_bench::SEALED_NOTE),
        "a sealed apply says so with --verbose: {sealed}"
    );
    // The timed repeat still loads and plans.
    let sample = stead_bench::noop_repeat(&env, &set, &ws).unwrap();
    assert!(
        !sample.stead.stderr.contains(stead_bench::SEALED_NOTE),
        "{}",
        sample.stead.stderr
    );
}
