//! `stead apply`: take the lock, plan (or load a saved plan, refused if the
//! state moved), confirm on a tty, execute by readiness, record the outcome.
//! On a machine where `init` never ran it initializes first.

use crate::output::{out, outln};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use chrono::Utc;
use serde_json::json;
use stead_lib::engine::{self, EngineOptions, Event, RunJournal, Status};
use stead_lib::journal::{self, JournalWriter, OpState};
use stead_lib::machine::MachineInfo;
use stead_lib::plan::{self, Plan};
use stead_lib::resource::Action;
use stead_lib::state::State;

use super::plan::{DEFAULT_JOBS, current_state, plan_json, print_plan};
use crate::cli::ApplyArgs;
use crate::context::Context;
use crate::output::print_json;

pub fn run(ctx: &Context, args: &ApplyArgs) -> Result<ExitCode> {
    let jobs = args.jobs.unwrap_or(DEFAULT_JOBS).max(1);
    if args.dry_run {
        // A dry run takes no lock and writes nothing.
        let state = current_state(ctx)?;
        let mut plan = match &args.plan {
            Some(file) => load_saved(file, &state)?,
            None => {
                let (manifest, graph) = ctx.load_manifest(Some(&state), args.profile.as_deref())?;
                plan::make(&manifest, &graph, &state, args.force, jobs)?
            }
        };
        let view = journal_view(ctx, &args.rerun)?;
        check_rerun(&plan, &args.rerun)?;
        plan::settle_one_shots(&mut plan, &view.one_shots);
        plan::settle_refreshes(&mut plan, &view.pending_refreshes);
        if ctx.json {
            print_json(&plan_json(&plan));
        } else {
            print_plan(&ctx.out, &plan);
            outln!("\nDry run: nothing was changed.");
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Nobody can answer the question off a terminal (or under --json): a
    // script must say --yes, so an unattended run never changes a machine by
    // accident. Checked before anything is locked or initialized.
    let can_ask = !ctx.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !args.yes && !can_ask {
        anyhow::bail!(
            "apply needs confirmation, and there is no terminal to ask on{}.\n\
             Run 'stead apply --yes' to apply without asking, or 'stead plan' to see the changes first. Nothing was changed.",
            if ctx.json { " (--json)" } else { "" }
        );
    }

    let guard = ctx.lock("apply", None)?;
    let state = match ctx.load_state_locked(&guard)? {
        Some(s) => s,
        None => first_run_init(ctx, &guard, args)?,
    };
    let (code, _) = converge(
        ctx,
        &guard,
        state,
        &Converge {
            plan_file: args.plan.as_deref(),
            profile: args.profile.as_deref(),
            force: args.force,
            jobs,
            rerun: &args.rerun,
            yes: args.yes,
        },
    )?;
    guard.release()?;
    Ok(code)
}

/// What one converge run is asked to do.
pub(crate) struct Converge<'a> {
    /// A saved plan to execute instead of planning now.
    pub plan_file: Option<&'a std::path::Path>,
    /// Use (and record) this profile.
    pub profile: Option<&'a str>,
    /// Replace what stead does not own.
    pub force: bool,
    /// Changes at once.
    pub jobs: usize,
    /// One-shot execs to run again.
    pub rerun: &'a [String],
    /// Do not ask.
    pub yes: bool,
}

/// Plans and executes under a lock the caller holds (apply, sync), records
/// the outcome, and returns the exit code and the state as written.
pub(crate) fn converge(
    ctx: &Context,
    guard: &stead_lib::lock::LockGuard,
    mut state: State,
    args: &Converge,
) -> Result<(ExitCode, State)> {
    let jobs = args.jobs;
    let journal_path = ctx.layout.state_dir().join(journal::JOURNAL_FILE);
    let view = journal_view(ctx, args.rerun)?;
    report_interrupted_run(ctx, &view);
    let (mut plan, profile) = match args.plan_file {
        Some(file) => {
            let plan = load_saved(file, &state)?;
            let profile = plan.profile.clone();
            (plan, profile)
        }
        None => {
            let (manifest, graph) = ctx.load_manifest(Some(&state), args.profile)?;
            let plan = plan::make(&manifest, &graph, &state, args.force, jobs)?;
            (plan, manifest.profile.clone())
        }
    };
    check_rerun(&plan, args.rerun)?;
    plan::settle_one_shots(&mut plan, &view.one_shots);
    plan::settle_refreshes(&mut plan, &view.pending_refreshes);
    if !ctx.json {
        print_plan(&ctx.out, &plan);
    }
    if plan.is_empty() {
        // Nothing to change on disk, but the record may still have news: a
        // profile switched with --profile, the config repo of a first run,
        // files already exactly as declared that stead now adopts.
        let mut updated = state.clone();
        let unchanged = engine::Outcome {
            statuses: vec![Status::Unchanged; plan.changes.len()],
            attempts: vec![0; plan.changes.len()],
        };
        plan::record(&mut updated, &plan, &unchanged, state.lineage.serial + 1);
        plan::adopt_recovered(
            &mut updated,
            &plan,
            &view.recovered,
            state.lineage.serial + 1,
        );
        if let Some(p) = &profile {
            updated.active_profile = Some(p.clone());
        }
        if updated.config_path.is_none() {
            updated.config_path = Some(plan.config_dir.display().to_string());
        }
        if updated.resources != state.resources
            || updated.checksums != state.checksums
            || updated.active_profile != state.active_profile
            || updated.config_path != state.config_path
        {
            updated.last_apply = Some(Utc::now());
            ctx.store.commit(guard, &mut updated, "apply")?;
            state = updated;
        }
        if view.interrupted.is_some() {
            // The interrupted run's work was re-read and recorded; its
            // records have served their purpose (succeeded one-shot keys are
            // kept by compaction).
            journal::compact(&journal_path, "")?;
        }
        if ctx.json {
            print_json(
                &json!({"event": "summary", "counts": plan.counts(), "applied": 0, "failed": 0, "skipped": 0, "serial": state.lineage.serial}),
            );
        }
        return Ok((ExitCode::SUCCESS, state));
    }
    if !args.yes && !confirm()? {
        outln!("Apply cancelled; nothing was changed.");
        return Ok((ExitCode::SUCCESS, state));
    }
    if !ctx.json {
        outln!();
    }

    // A progress bar on a terminal; plain lines otherwise; JSON events with --json.
    let to_do = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .count() as u64;
    let bar = (!ctx.json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(to_do);
        if let Ok(style) = indicatif::ProgressStyle::with_template("  [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    // Action by id for the status lines (first match, as `Plan::change`; a map, not a scan per event).
    let mut actions: std::collections::HashMap<&str, Action> = std::collections::HashMap::new();
    for c in &plan.changes {
        actions.entry(c.id.as_str()).or_insert(c.action);
    }
    let printer = Mutex::new(());
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => outln!("{line}"),
    };
    let on_event = |event: Event| {
        let _line = printer.lock();
        match event {
            Event::Started { id } => {
                if ctx.json {
                    print_json_line(&json!({"event": "started", "id": id}));
                } else if let Some(b) = &bar {
                    b.set_message(id.to_string());
                } else if ctx.verbose {
                    say(format!("  … {id}"));
                }
            }
            Event::Finished { id, status } => {
                if ctx.json {
                    print_json_line(&status_json(id, status));
                    return;
                }
                if let Some(line) = status_line(ctx, actions.get(id).copied(), id, status) {
                    say(line);
                }
                if let Some(b) = &bar
                    && *status != Status::Unchanged
                {
                    b.inc(1);
                }
            }
        }
    };
    let reaper = start_reaper(ctx);
    crate::APPLYING.store(true, std::sync::atomic::Ordering::SeqCst);
    let run = RunJournal::new(
        JournalWriter::open(&journal_path, journal::JOURNAL_SYNC)?,
        engine::new_run_id(),
    )
    .with_pending_refreshes(view.pending_refreshes.clone());
    let run_op = format!("{}:0", run.run_id());
    run.writer()
        .append_durable(run.record(&run_op, "run", "run-start", OpState::Started))?;
    let outcome = engine::execute_journaled(
        &plan,
        &EngineOptions {
            jobs,
            backups: ctx.layout.backups_dir(),
        },
        Some(&run),
        &on_event,
    );
    crate::APPLYING.store(false, std::sync::atomic::Ordering::SeqCst);
    stead_lib::resource::exec::clear_reaper();
    if let Some(mut r) = reaper {
        let _ = r.wait();
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }

    let next_serial = state.lineage.serial + 1;
    plan::record(&mut state, &plan, &outcome, next_serial);
    plan::adopt_recovered(&mut state, &plan, &view.recovered, next_serial);
    state.last_apply = Some(Utc::now());
    if let Some(p) = profile {
        state.active_profile = Some(p);
    }
    if state.config_path.is_none() {
        state.config_path = Some(plan.config_dir.display().to_string());
    }
    ctx.store.commit(guard, &mut state, "apply")?;
    // The run ends only once the state holds its outcome: a crash before
    // this line leaves the run "interrupted" for the next one to report.
    let end = if outcome.has_failures() {
        OpState::Failed
    } else {
        OpState::Succeeded
    };
    run.writer()
        .append_durable(run.record(&run_op, "run", "run-end", end))?;
    let run_id = run.run_id().to_string();
    run.into_writer().close()?;
    journal::compact(&journal_path, &run_id)?;
    if !ctx.json {
        // Retries that ended well; the ones that gave up say so in the summary.
        for ((c, s), n) in plan
            .changes
            .iter()
            .zip(&outcome.statuses)
            .zip(&outcome.attempts)
        {
            if *n > 1 && matches!(s, Status::Done(_)) {
                outln!(
                    "  {} {} succeeded on attempt {n} of {}",
                    ctx.out.yellow("↻"),
                    c.id,
                    c.retry.retries + 1
                );
            }
        }
    }
    let code = summarize(ctx, &plan, &outcome.statuses, state.lineage.serial)?;
    if engine::stop_requested() {
        let not_started = outcome
            .statuses
            .iter()
            .filter(|s| matches!(s, Status::Skipped(w) if w.starts_with("interrupted")))
            .count();
        if !ctx.json {
            outln!(
                "\nInterrupted: {not_started} change(s) did not start; what ran is recorded. Run 'stead apply' to finish."
            );
        }
        return Ok((ExitCode::from(crate::EXIT_INTERRUPTED as u8), state));
    }
    Ok((code, state))
}

fn first_run_init(
    ctx: &Context,
    guard: &stead_lib::lock::LockGuard,
    args: &ApplyArgs,
) -> Result<State> {
    let id = ctx.machine_id()?;
    let mut state = State::new(MachineInfo::current(&id));
    let config = ctx.config_dir(None)?;
    let config = config.canonicalize().unwrap_or(config);
    state.config_path = Some(config.display().to_string());
    state.active_profile = args.profile.clone();
    ctx.store.commit(guard, &mut state, "init")?;
    if !ctx.json {
        outln!(
            "Initialized stead state at {} (first run on this machine).\n",
            ctx.store.path().display()
        );
    }
    Ok(state)
}

fn load_saved(file: &std::path::Path, state: &State) -> Result<Plan> {
    let raw =
        std::fs::read(file).with_context(|| format!("cannot read the plan {}", file.display()))?;
    let plan: Plan = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not a saved stead plan", file.display()))?;
    if plan.format != plan::PLAN_FORMAT {
        anyhow::bail!(
            "{} has plan format {}, this stead reads format {}",
            file.display(),
            plan.format,
            plan::PLAN_FORMAT
        );
    }
    if plan.state_serial != state.lineage.serial || plan.lineage_id != state.lineage.id {
        anyhow::bail!(
            "the saved plan {} is stale: it was made at state serial {}, and the state is now at serial {}{}\n\
             Nothing was changed. Run 'stead plan --out {}' again and review the new plan.",
            file.display(),
            plan.state_serial,
            state.lineage.serial,
            if plan.lineage_id != state.lineage.id {
                " of another lineage"
            } else {
                ""
            },
            file.display()
        );
    }
    Ok(plan)
}

fn confirm() -> Result<bool> {
    out!("Apply these changes? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn print_json_line(value: &serde_json::Value) {
    outln!("{value}");
}

fn status_json(id: &str, status: &Status) -> serde_json::Value {
    match status {
        Status::Done(a) => {
            json!({"event": "done", "id": id, "backup": a.backup, "checksum": a.checksum})
        }
        Status::Unchanged => json!({"event": "unchanged", "id": id}),
        Status::Failed(e) => json!({"event": "failed", "id": id, "error": e}),
        Status::Skipped(why) => json!({"event": "skipped", "id": id, "reason": why}),
    }
}

/// One line per finished change (none for unchanged ones).
fn status_line(ctx: &Context, action: Option<Action>, id: &str, status: &Status) -> Option<String> {
    let p = &ctx.out;
    match status {
        Status::Unchanged => None,
        Status::Done(applied) => {
            let verb = match (action, &applied.output) {
                (Some(Action::Create), _) => "created".to_string(),
                // A removal that left the path in place (a dir holding files
                // stead does not manage) must not claim it removed it.
                (Some(Action::Remove), Some(note)) => format!("no longer managed ({note})"),
                (Some(Action::Remove), None) => "removed".to_string(),
                // An exec whose guard, checked again right before running,
                // said there was nothing to do.
                (_, Some(note)) if note.starts_with("skipped: ") => {
                    format!("not run ({})", &note["skipped: ".len()..])
                }
                _ if id.starts_with("exec.") => "ran".to_string(),
                _ => "updated".to_string(),
            };
            let mut line = format!("  {} {id} {verb}", p.green("✓"));
            if let Some(b) = &applied.backup {
                line.push_str(&format!(
                    "\n      backed up the original to {}",
                    b.display()
                ));
            }
            Some(line)
        }
        Status::Failed(e) => {
            let first = e.lines().next().unwrap_or_default();
            Some(format!("  {} {id} failed: {first}", p.red("✗")))
        }
        Status::Skipped(why) => Some(format!("  {} {id} skipped: {why}", p.yellow("⊘"))),
    }
}

fn summarize(ctx: &Context, plan: &Plan, statuses: &[Status], serial: u64) -> Result<ExitCode> {
    let mut created = 0;
    let mut updated = 0;
    let mut removed = 0;
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for (c, s) in plan.changes.iter().zip(statuses) {
        match s {
            Status::Done(_) => match c.action {
                Action::Create => created += 1,
                Action::Remove => removed += 1,
                _ => updated += 1,
            },
            Status::Failed(e) => failed.push((c.id.as_str(), e.as_str())),
            Status::Skipped(why) => skipped.push((c.id.as_str(), why.as_str())),
            Status::Unchanged => {}
        }
    }
    if ctx.json {
        print_json_line(&json!({
            "event": "summary", "created": created, "updated": updated, "removed": removed,
            "failed": failed.len(), "skipped": skipped.len(), "serial": serial,
        }));
    } else if failed.is_empty() && skipped.is_empty() {
        outln!(
            "\n{} Apply complete: {created} created, {updated} updated, {removed} removed (state serial {serial}).",
            ctx.out.green("✓")
        );
    } else {
        outln!(
            "\n{} Apply finished with errors: {created} created, {updated} updated, {removed} removed, {} failed, {} skipped (state serial {serial}).",
            ctx.out.red("✗"),
            failed.len(),
            skipped.len()
        );
        for (id, e) in &failed {
            outln!("\n{} {id}:", ctx.out.red("Failed"));
            for line in e.lines() {
                outln!("  {line}");
            }
        }
        if !skipped.is_empty() {
            outln!("\nNot run:");
            for (id, why) in &skipped {
                outln!("  {id} ({why})");
            }
        }
        outln!("\nFix the causes and run 'stead apply' again; what succeeded is recorded.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed.is_empty() && skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the journal says before a run: an interrupted run, and one-shot steps.
pub(crate) struct JournalView {
    /// (run id, started, operations in flight) of a run that never ended.
    interrupted: Option<(String, chrono::DateTime<Utc>, usize)>,
    pub(crate) one_shots: plan::OneShots,
    /// Resources the interrupted run finished (to record as owned).
    recovered: std::collections::HashSet<String>,
    /// `refresh_only` execs with a refresh that no run consumed yet.
    pub(crate) pending_refreshes: std::collections::HashSet<String>,
}

/// Reads the journal (a torn last line is ignored; a corrupt middle is moved
/// aside to the backups dir and reported as an error that says where).
pub(crate) fn journal_view(ctx: &Context, rerun: &[String]) -> Result<JournalView> {
    let path = ctx.layout.state_dir().join(journal::JOURNAL_FILE);
    let loaded = journal::load(&path, &ctx.layout.backups_dir())?;
    if let Some(tail) = &loaded.torn_tail
        && ctx.verbose
    {
        eprintln!(
            "journal: ignored a torn last line ({} bytes) left by a crash",
            tail.len()
        );
    }
    let interrupted = journal::interrupted_run(&loaded.records).map(|(run_id, started)| {
        let n = journal::in_flight(&loaded.records, &run_id).len();
        (run_id, started, n)
    });
    // Across runs: a step refused for `--rerun` stays refused until it runs.
    let unfinished = journal::unfinished_keys(&loaded.records);
    let recovered = interrupted
        .as_ref()
        .map(|(run_id, _, _)| {
            loaded
                .records
                .iter()
                .filter(|r| &r.run_id == run_id && r.state == OpState::Succeeded)
                .map(|r| r.resource.clone())
                .collect()
        })
        .unwrap_or_default();
    Ok(JournalView {
        pending_refreshes: journal::pending_refreshes(&loaded.records),
        interrupted,
        recovered,
        one_shots: plan::OneShots {
            succeeded: journal::succeeded_keys(&loaded.records),
            unfinished,
            rerun: rerun.iter().cloned().collect(),
        },
    })
}

/// `--rerun` names one-shot execs of the plan, or it is a mistake.
fn check_rerun(plan: &Plan, rerun: &[String]) -> Result<()> {
    for id in rerun {
        let one_shot = plan.change(id).is_some_and(
            |c| matches!(&c.op, stead_lib::resource::Op::Run(r) if r.idempotency_key.is_some()),
        );
        if !one_shot {
            anyhow::bail!(
                "--rerun {id}: the plan has no one-shot exec by that name (one with once = true or an idempotency_key that would run)"
            );
        }
    }
    Ok(())
}

/// Says so when the journal holds a run that never ended. Its convergent
/// work needs nothing special: this run re-reads every resource and plans
/// again, and records what the interrupted run finished (files already as
/// declared are adopted).
fn report_interrupted_run(ctx: &Context, view: &JournalView) {
    let Some((run_id, started, in_flight)) = &view.interrupted else {
        return;
    };
    if ctx.json {
        print_json_line(
            &json!({"event": "recovering", "run_id": run_id, "started": started, "in_flight": in_flight}),
        );
    } else {
        let line = format!(
            "Recovering from interrupted run {run_id} (started {}, {in_flight} operations in flight)",
            started
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        );
        outln!("{}", ctx.out.yellow(&line));
    }
}

/// Starts `stead __reaper` in its own process group and announces every
/// command's process group to it: if this process dies (even by SIGKILL),
/// the reaper sees its input end and kills the commands left running, so an
/// apply never leaves orphans. Without it (it could not start), apply goes
/// on and says so with -v.
fn start_reaper(ctx: &Context) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok()?;
    let spawned = std::process::Command::new(exe)
        .arg("__reaper")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(mut child) => {
            let stdin = child.stdin.take()?;
            stead_lib::resource::exec::set_reaper(Box::new(stdin));
            Some(child)
        }
        Err(e) => {
            if ctx.verbose {
                eprintln!("cannot start the reaper ({e}); commands may outlive a killed apply");
            }
            None
        }
    }
}
