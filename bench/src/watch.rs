//! `stead-bench watch`: watch mode over the files-N data set, in one run:
//!
//! * repair latency: from a hand edit of one managed file (saved as an
//!   editor saves: a temp file renamed over it) to the watch's line saying
//!   its run is done (the file checked to be repaired), median over the
//!   edits, beside `stead apply --yes` repairing one such edit (what a user
//!   without the watch runs: a fresh process that plans the whole manifest);
//! * idle CPU: the watch process's CPU time over an idle window, as a
//!   share of one core.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::{Env, FileSet, Result, Workspace};

/// What to measure.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Managed files.
    pub files: usize,
    /// Edits measured (each case; the median is reported).
    pub edits: usize,
    /// The idle window.
    pub idle: Duration,
    /// The watch's `--debounce` (part of the latency).
    pub debounce_ms: u64,
}

/// Saves `content` over `path` as an editor does.
fn save(path: &std::path::Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The watch's CPU time so far (user + system), from `/proc`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields.get(11).ok_or("short stat")?.parse::<u64>()?
        + fields.get(12).ok_or("short stat")?.parse::<u64>()?;
    let per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.ok_or("no CLK_TCK")? as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// The next `"event": "run"` line of the watch.
fn next_run(lines: &Receiver<serde_json::Value>) -> Result<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let doc = lines
            .recv_timeout(left)
            .map_err(|_| "the watch printed no run line")?;
        if doc["event"] == "run" {
            if doc.get("error").is_some() {
                return Err(format!("a watch run failed: {doc}").into());
            }
            return Ok(doc);
        }
    }
}

/// Measures and returns the Markdown table.
pub fn run(env: &Env, opts: &WatchOptions) -> Result<String> {
    let set = FileSet {
        n: opts.files,
        tree: false,
    };
    let ws = Workspace::new(env, "stead-bench-watch-")?;
    set.write_manifest(&ws.config())?;
    env.stead_expect(&ws, &["init"], 0)?;
    env.stead_expect(&ws, &["apply", "--yes"], 0)?;
    let home = ws.home();
    let pick = |k: usize| (k * 7919) % set.n;

    // The baseline: a hand edit repaired by `stead apply --yes`.
    let mut apply = Vec::new();
    for k in 0..opts.edits {
        let i = pick(k);
        save(&home.join(set.rel(i)), &set.drifted(i))?;
        apply.push(env.stead_expect(&ws, &["apply", "--yes"], 0)?.wall);
        if std::fs::read_to_string(home.join(set.rel(i)))? != set.content(i) {
            return Err(format!("apply did not repair {}", set.rel(i)).into());
        }
    }

    let mut child = Command::new(&env.stead)
        .arg("--home")
        .arg(&home)
        .arg("--state-dir")
        .arg(ws.state())
        .arg("--config")
        .arg(ws.config())
        .args(["--json", "watch", "--debounce"])
        .arg(opts.debounce_ms.to_string())
        .env("HOME", ws.env_home())
        .env("NO_COLOR", "1")
        .env_remove("STEAD_CONFIG")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line)
                && tx.send(doc).is_err()
            {
                break;
            }
        }
    });
    let measured = (|| -> Result<(Vec<Duration>, Duration, usize)> {
        let first = next_run(&lines)?;
        let watching = first["watching"].as_u64().unwrap_or(0) as usize;
        let mut latency = Vec::new();
        for k in 0..opts.edits {
            let i = pick(k + opts.edits);
            let path = home.join(set.rel(i));
            let start = Instant::now();
            save(&path, &set.drifted(i))?;
            next_run(&lines)?;
            latency.push(start.elapsed());
            if std::fs::read_to_string(&path)? != set.content(i) {
                return Err(format!("the watch did not repair {}", set.rel(i)).into());
            }
        }
        // Let the events of the last repair pass, then measure idling.
        std::thread::sleep(Duration::from_secs(1));
        let before = cpu_time(child.id())?;
        std::thread::sleep(opts.idle);
        let idle_cpu = cpu_time(child.id())?.saturating_sub(before);
        Ok((latency, idle_cpu, watching))
    })();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let (latency, idle_cpu, watching) = measured?;
    let (watch_median, apply_median) = (median(latency), median(apply));
    let share = idle_cpu.as_secs_f64() / opts.idle.as_secs_f64() * 100.0;
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    Ok(format!(
        "| case | stead watch | baseline | ratio |\n|---|---|---|---|\n\
         | repair of one hand-edited file of {n} (edit to run done, median of {e}; debounce {db} ms) | {w} | `stead apply --yes`: {a} | {r:.2}× |\n\
         | idle over {idle:?}, {n} files in {watching} watched directories | {cpu:.3}% of one core ({t:.1} ms CPU) | | |\n",
        n = set.n,
        e = opts.edits,
        db = opts.debounce_ms,
        w = ms(watch_median),
        a = ms(apply_median),
        r = watch_median.as_secs_f64() / apply_median.as_secs_f64().max(1e-9),
        idle = opts.idle,
        cpu = share,
        t = idle_cpu.as_secs_f64() * 1000.0,
    ))
}
