//! `stead apply`: take the lock, plan (or load a saved plan, refused if the
//! state moved), confirm on a tty, execute by readiness, record the outcome
//! (the library's converge transaction does all but the asking and the
//! showing). On a machine where `init` never ran it initializes first.

use crate::output::errln;
use crate::output::outln;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Result;
use serde_json::json;
use stead_lib::converge::{
    self, DEFAULT_JOBS, InterruptedRun, PlanSource, PrepareOptions, Prepared, Reporter, Target,
};
use stead_lib::engine::{Event, Status};
use stead_lib::machine::MachineInfo;
use stead_lib::manifest::Kind;
use stead_lib::migration::Answer;
use stead_lib::outcome::Skip;
use stead_lib::plan::Plan;
use stead_lib::resource::{Action, Change};
use stead_lib::run::RunControl;
use stead_lib::seal;
use stead_lib::state::State;
use stead_lib::state::checks::ChoiceVia;

use super::plan::{note_torn_tail, plan_json, print_plan};
use crate::context::Context;
use crate::exit::Exit;
use crate::output::print_json_line;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved by 'stead plan --out FILE'
    #[arg(value_name = "FILE")]
    pub plan: Option<std::path::PathBuf>,

    /// Show the plan and stop
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Replace what stead does not own, after copying it to <state-dir>/backups/
    #[arg(long)]
    pub force: bool,

    /// Run up to N changes at once (default: 8)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Use (and record) this profile
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Run this one-shot exec again (once / idempotency_key), even if the
    /// journal says it ran or an interrupted run left it unfinished
    #[arg(long, value_name = "RESOURCE")]
    pub rerun: Vec<String>,

    /// Read every managed file whole, trusting none by its unchanged stat
    /// (neither the stat cache nor the converged seal is used for this run)
    #[arg(long)]
    pub verify: bool,

    /// Choose a migration step for a check's item up front (kept in the
    /// state record, like 'stead choose')
    #[arg(long, value_name = "CHECK/ITEM=STEP")]
    pub choose: Vec<String>,
}

pub fn run(ctx: &Context, args: &ApplyArgs) -> Result<ExitCode> {
    let choose = args
        .choose
        .iter()
        .map(|c| Answer::parse(c, ChoiceVia::Flag))
        .collect::<Result<Vec<_>, _>>()?;
    let request = Converge {
        plan_file: args.plan.as_deref(),
        profile: args.profile.as_deref(),
        force: args.force,
        jobs: args.jobs.unwrap_or(DEFAULT_JOBS).max(1),
        rerun: &args.rerun,
        yes: args.yes,
        agreed: None,
        verify: args.verify,
        choose: &choose,
        drift: None,
        compiled: None,
    };
    if args.dry_run {
        // A dry run takes no lock and writes nothing.
        let state = ctx.current_state()?;
        let prepared = converge::prepare_read_only(
            &ctx.layout,
            &state,
            &prepare_options(ctx, &request),
            &converge::Silent,
        )?;
        note_torn_tail(ctx, &prepared);
        if ctx.json {
            // The same stream as a real apply: the plan, then a summary.
            print_json_line(&plan_event(&prepared.plan));
            print_json_line(&summary_json([0; 5], state.lineage.serial, true));
        } else {
            print_plan(&ctx.out, &prepared.plan);
            outln!("\nDry run: nothing was changed.");
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Nobody can answer the question off a terminal (or under --json): a
    // script must say --yes, so an unattended run never changes a machine by
    // accident. Checked before anything is locked or initialized. Only stdin
    // must be a terminal: `stead apply | tee log` still asks (on stderr).
    let can_ask = !ctx.json && std::io::stdin().is_terminal();
    if !args.yes && !can_ask {
        anyhow::bail!(
            "apply needs confirmation, and there is no terminal to ask on{}.\n\
             Run 'stead apply --yes' to apply without asking, or 'stead plan' to see the changes first. Nothing was changed.",
            if ctx.json { " (--json)" } else { "" }
        );
    }

    // A first run asks before it writes anything: no state dir, no machine
    // id, no lock file until the user says yes.
    let mut request = request;
    let agreed = if !args.yes && ctx.store.load()?.is_none() {
        match ask_before_first_write(ctx, &request)? {
            Some(changes) => Some(changes),
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        None
    };
    request.agreed = agreed.as_deref();

    let seal = usable_seal(ctx, &request);
    let serial = seal
        .as_ref()
        .and_then(|s| s.serial_if_state_unchanged(&ctx.layout));
    let guard = ctx.lock("apply", serial)?;
    let check = seal.map(|s| {
        s.check(
            &converge::seal_key(&ctx.layout, &seal_request(ctx, &request)),
            request.jobs,
        )
    });
    let drift = match check {
        Some(seal::Check::Holds(hit)) => {
            // Under the lock, as a planned run would: a seal write killed by
            // a crash left its temp here (the rest of a killed run's temps
            // break the seal through the journal).
            for path in stead_lib::fsutil::remove_stale_temps(ctx.layout.state_dir(), None) {
                RecoveryReporter { ctx }.removed_temp(&path);
            }
            super::plan::print_sealed(ctx, &hit);
            guard.release()?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(seal::Check::Drifted(drift)) => Some(drift),
        Some(seal::Check::Broken) | None => None,
    };
    request.drift = drift.as_ref();
    // A repair reads the compiled manifest while it loads the state record.
    let compiled = drift
        .as_ref()
        .and_then(|d| converge::CompiledRead::start(&ctx.layout, d));
    request.compiled = compiled.as_ref();
    // A repair asks for a few of the record's entries: it reads it in part.
    let loaded = if drift.is_some() {
        ctx.load_state_in_part_locked(&guard)?
    } else {
        ctx.load_state_locked(&guard)?
    };
    let state = match loaded {
        Some(s) => s,
        None => first_run_init(ctx, &guard, args)?,
    };
    if state.unread.is_partial() {
        let (checksums, resources) = state.entry_counts();
        ctx.verbose_note(&format!(
            "The state record was read in part: its {checksums} checksum(s) and {resources} resource record(s) stay unparsed until the repair asks for one."
        ));
    }
    super::repo::refuse_if_removed(ctx, &state)?;
    let (code, _) = converge(ctx, &guard, state, &request)?;
    guard.release()?;
    Ok(code)
}

/// On a machine with no state yet: plans read-only, shows the plan and asks.
/// `None`: the user said no (nothing was written); else the changes agreed
/// to (empty when there is nothing to ask about).
fn ask_before_first_write(ctx: &Context, request: &Converge) -> Result<Option<Vec<Change>>> {
    let state = ctx.current_state()?;
    let prepared = converge::prepare_read_only(
        &ctx.layout,
        &state,
        &prepare_options(ctx, request),
        &converge::Silent,
    )?;
    let plan = &prepared.plan;
    if plan.is_empty() {
        return Ok(Some(Vec::new()));
    }
    print_plan(&ctx.out, plan);
    if !confirm(plan)? {
        outln!("Apply cancelled; nothing was changed (no state was written).");
        return Ok(None);
    }
    Ok(Some(plan.changes.clone()))
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
    /// Changes the user already saw and agreed to (a first run asks before
    /// it writes): the same plan is neither shown nor asked about again.
    pub agreed: Option<&'a [Change]>,
    /// Read every file whole (`--verify`).
    pub verify: bool,
    /// Choices for check items (`--choose`, and what a prompt asked).
    pub choose: &'a [stead_lib::migration::Answer],
    /// What the converged seal still vouches for: plan only the rest.
    pub drift: Option<&'a seal::Drift>,
    /// The drift's compiled manifest, being read while the state loads.
    pub compiled: Option<&'a converge::CompiledRead>,
}

/// The library's prepare options for a saved plan or the config repo.
fn prepare_options<'a>(ctx: &'a Context, request: &Converge<'a>) -> PrepareOptions<'a> {
    PrepareOptions {
        source: match request.plan_file {
            Some(file) => PlanSource::Saved(file),
            None => PlanSource::Manifest {
                config: ctx.config.as_deref(),
                profile: request.profile,
                force: request.force,
            },
        },
        jobs: request.jobs,
        rerun: request.rerun,
        check: ctx.file_check(request.verify),
        seal: request
            .plan_file
            .is_none()
            .then(|| seal_request(ctx, request)),
        checks: ctx.check_options(request.choose),
        only: None,
        drift: request.drift,
        compiled: request.compiled,
    }
}

/// What a converged seal is made for and checked against.
fn seal_request<'a>(ctx: &'a Context, request: &Converge<'a>) -> seal::Request<'a> {
    seal::Request {
        config: ctx.config.as_deref(),
        profile: request.profile,
    }
}

/// The seal an earlier no-op run left, when this run may skip planning if
/// it still holds: a plain apply of the config repo (not a saved plan,
/// `--verify`, `--rerun`, or `--json`, whose plan event lists every
/// resource).
fn usable_seal(ctx: &Context, request: &Converge) -> Option<seal::Seal> {
    let plain = request.plan_file.is_none()
        && !request.verify
        && request.rerun.is_empty()
        && request.agreed.is_none()
        && !ctx.json;
    plain.then(|| seal::Seal::read(&ctx.layout)).flatten()
}

/// Plans and executes under a lock the caller holds (apply, sync), records
/// the outcome, and returns the exit code and the state as written.
pub(crate) fn converge(
    ctx: &Context,
    guard: &stead_lib::lock::LockGuard,
    state: State,
    args: &Converge,
) -> Result<(ExitCode, State)> {
    let mut prepared = converge::prepare(
        &ctx.layout,
        &state,
        &prepare_options(ctx, args),
        &RecoveryReporter { ctx },
    )?;
    // Error items of checks need a choice before anything runs: asked on
    // a terminal, else refused naming `stead choose`.
    let asked;
    let with_answers;
    if !stead_lib::migration::unchosen(&prepared.plan).is_empty() {
        let Some(answers) = ask_for_choices(ctx, args, &prepared.plan)? else {
            return Ok((Exit::Failure.into(), state));
        };
        asked = [args.choose, &answers].concat();
        with_answers = Converge {
            choose: &asked,
            ..*args
        };
        prepared = converge::prepare(
            &ctx.layout,
            &state,
            &prepare_options(ctx, &with_answers),
            &converge::Silent,
        )?;
    }
    note_torn_tail(ctx, &prepared);
    if let Some(drift) = args.drift {
        super::plan::note_drift(ctx, drift, &prepared);
    }
    if prepared.plan.stat_trusted > 0 {
        ctx.verbose_note(&format!(
            "Trusted {} unchanged file(s) by their stat without reading them ('stead apply --verify' reads every file).",
            prepared.plan.stat_trusted
        ));
    }
    // Under the lock: temps of killed runs go before anything is written.
    converge::recover_temps(&ctx.layout, &state, &prepared, &RecoveryReporter { ctx });
    let plan = &prepared.plan;
    let agreed = args
        .agreed
        .is_some_and(|changes| *changes == plan.changes[..]);
    if ctx.json {
        print_json_line(&plan_event(plan));
    } else if !agreed {
        print_plan(&ctx.out, plan);
    }
    let target = Target {
        layout: &ctx.layout,
        store: &ctx.store,
        guard,
    };
    if plan.is_empty() {
        let state = converge::record_unchanged(target, state, &prepared)?;
        if ctx.json {
            print_json_line(&summary_json([0; 5], state.lineage.serial, false));
        }
        return Ok((ExitCode::SUCCESS, state));
    }
    if !args.yes && !agreed && !confirm(plan)? {
        outln!("Apply cancelled; nothing was changed.");
        return Ok((ExitCode::SUCCESS, state));
    }
    if !ctx.json {
        outln!();
    }
    execute(ctx, target, state, &prepared, args.jobs)
}

/// Answers for the error items of `plan` that have no valid choice: asked
/// on a terminal (unless `--yes` or `--json`), else an error naming
/// `stead choose`. `None`: the user left one unanswered (nothing changed).
fn ask_for_choices(ctx: &Context, args: &Converge, plan: &Plan) -> Result<Option<Vec<Answer>>> {
    let unchosen = stead_lib::migration::unchosen(plan);
    let can_ask = !ctx.json && !args.yes && std::io::stdin().is_terminal();
    if can_ask {
        super::check::print_items(
            &ctx.err,
            &unchosen
                .iter()
                .map(|(a, r)| ((*a).clone(), (*r).clone()))
                .collect(),
        );
        let answers = super::check::ask(&unchosen)?;
        if answers.is_none() {
            outln!("No step chosen; nothing was changed.");
        }
        return Ok(answers);
    }
    let items: Vec<String> = unchosen
        .iter()
        .map(|(address, record)| {
            let item = record.item.as_ref();
            let steps: Vec<&str> = item
                .map(|i| i.steps.iter().map(|s| s.id.as_str()).collect())
                .unwrap_or_default();
            format!(
                "  {address} ({}): {}
    steps: {}",
                record.status.as_str(),
                item.map_or("", |i| i.message.as_str()),
                if steps.is_empty() {
                    "none offered".to_string()
                } else {
                    steps.join(", ")
                }
            )
        })
        .collect();
    anyhow::bail!(
        "check items need a choice before apply can run:\n{}\n\
         Choose a step with 'stead choose CHECK/ITEM STEP' (or 'stead apply --choose CHECK/ITEM=STEP'), then apply again; \
         'stead check' lists the items. Nothing was changed.",
        items.join("\n")
    )
}

/// Runs the library's transaction with a progress display, under a run
/// control that the signal handler can reach and a reaper process.
fn execute(
    ctx: &Context,
    target: Target,
    state: State,
    prepared: &Prepared,
    jobs: usize,
) -> Result<(ExitCode, State)> {
    let plan = &prepared.plan;
    let progress = Progress::new(ctx, plan);
    let control = RunControl::new();
    // A plan that runs no program has no process group to reap: starting
    // the reaper (and waiting for it to end) was a few ms of a small repair.
    let reaper = if plan.may_run_commands() {
        start_reaper(ctx, &control)
    } else {
        None
    };
    let executed = {
        let _current = crate::CurrentRun::set(control.cancel_handle(), progress.bar.clone());
        converge::execute(target, state, prepared, jobs, &control, &progress)
    };
    control.clear_reaper();
    if let Some(mut r) = reaper {
        let _ = r.wait();
    }
    progress.finish();
    let executed = executed?;
    let (outcome, state) = (executed.outcome, executed.state);
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
    let interrupted = control.stop_requested();
    let code = summarize(
        ctx,
        plan,
        &outcome.statuses,
        state.lineage.serial,
        interrupted,
    )?;
    if interrupted {
        return Ok((crate::exit::Exit::Interrupted.into(), state));
    }
    Ok((code, state))
}

/// Tells the user about a run that never ended, before planning.
struct RecoveryReporter<'a> {
    ctx: &'a Context,
}

impl Reporter for RecoveryReporter<'_> {
    fn recovering(&self, run: &InterruptedRun) {
        report_interrupted_run(self.ctx, run);
    }

    fn removed_temp(&self, path: &std::path::Path) {
        if self.ctx.json {
            print_json_line(&json!({"event": "temp_removed", "path": path}));
        } else {
            let line = format!(
                "Removed a temp file an interrupted run left: {}",
                path.display()
            );
            outln!("{}", self.ctx.out.yellow(&line));
        }
    }
}

/// At most this many changes get a line each without `-v`; above it the
/// bar (or, off a terminal, the summary) tells the progress, and only what
/// matters (failures, skips, backups) gets a line.
const EACH_LINE_UP_TO: u64 = 20;

/// A progress bar on stderr when stderr is a terminal (elapsed, rate, ETA);
/// the lines that matter on stdout in every case, so nothing is lost when
/// stderr is redirected; JSON events with --json. Receives the library's
/// events from several threads.
struct Progress<'a> {
    ctx: &'a Context,
    bar: Option<indicatif::ProgressBar>,
    /// One line per finished change, not only the ones that matter.
    each: bool,
    /// The change by id for the status lines (first match, as `Plan::change`).
    changes: std::collections::HashMap<&'a str, &'a Change>,
    printer: Mutex<()>,
}

/// stderr for the progress bar, two columns narrower than it is. indicatif
/// pads the bar's line to the full width, so the `^C` the terminal echoes
/// for Ctrl-C would wrap to a line of its own, and the bar, cleared from
/// there, would stay on screen above the stop message; two spare columns
/// keep the echo on the bar's line.
#[derive(Debug)]
struct ShortOfTheEdge(console::Term);

impl indicatif::TermLike for ShortOfTheEdge {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(2).max(1)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> Progress<'a> {
    fn new(ctx: &'a Context, plan: &'a Plan) -> Self {
        let to_do = plan
            .changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
            .count() as u64;
        let bar = (!ctx.json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(to_do),
                indicatif::ProgressDrawTarget::term_like_with_hz(
                    Box::new(ShortOfTheEdge(console::Term::buffered_stderr())),
                    20,
                ),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "  [{bar:30}] {pos}/{len}  {elapsed} elapsed, {rate}, ETA {eta}  {wide_msg}",
            ) {
                // indicatif's own {per_sec} shows four decimals.
                let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                };
                bar.set_style(style.with_key("rate", rate).progress_chars("=> "));
            }
            bar
        });
        let mut changes = std::collections::HashMap::new();
        for c in &plan.changes {
            changes.entry(c.id.as_str()).or_insert(c);
        }
        Progress {
            ctx,
            bar,
            each: ctx.verbose || to_do <= EACH_LINE_UP_TO,
            changes,
            printer: Mutex::new(()),
        }
    }

    /// A line on stdout; the bar steps aside while it is written.
    fn say(&self, line: String) {
        match &self.bar {
            Some(b) => b.suspend(|| outln!("{line}")),
            None => outln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Reporter for Progress<'_> {
    fn event(&self, event: Event) {
        if matches!(event, Event::Durability(_)) {
            return;
        }
        let ctx = self.ctx;
        let _line = self.printer.lock();
        match event {
            Event::Started { id } => {
                if ctx.json {
                    print_json_line(&json!({"event": "started", "id": id}));
                } else if let Some(b) = &self.bar {
                    b.set_message(crate::output::clean(id).into_owned());
                } else if ctx.verbose {
                    self.say(format!("  … {id}"));
                }
            }
            // Shown once the run is over (the summary names give-ups).
            Event::Retrying { .. } | Event::Durability(_) => {}
            Event::Finished { id, status } => {
                if ctx.json {
                    print_json_line(&status_json(id, status));
                    return;
                }
                // A change a Ctrl-C kept from starting: counted in the one
                // summary line, never a line each.
                let matters = match status {
                    Status::Done(applied) => applied.backup.is_some(),
                    Status::Skipped(Skip::Interrupted) => false,
                    Status::Failed(_) | Status::Skipped(_) => true,
                    Status::Unchanged => false,
                };
                let interrupted = matches!(status, Status::Skipped(Skip::Interrupted));
                if (self.each || matters)
                    && !interrupted
                    && let Some(line) = status_line(ctx, self.changes.get(id).copied(), id, status)
                {
                    self.say(line);
                }
                if let Some(b) = &self.bar
                    && *status != Status::Unchanged
                {
                    b.inc(1);
                }
            }
        }
    }
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

/// Asks on stderr, or on the terminal itself when stderr is redirected (the
/// question must be seen), and reads the answer from stdin. When stdout is
/// not the terminal (`apply | tee log`) the plan may reach the screen after
/// the question, so the question says what it is about.
fn confirm(plan: &Plan) -> Result<bool> {
    let question = if std::io::stdout().is_terminal() {
        "Apply these changes? [y/N] ".to_string()
    } else {
        let n = plan.counts();
        format!(
            "\nApply these changes ({} to create, {} to update, {} to remove)? [y/N] ",
            n.create, n.update, n.remove
        )
    };
    let tty = (!std::io::stderr().is_terminal())
        .then(|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/tty")
                .ok()
        })
        .flatten();
    match tty {
        Some(mut tty) => {
            tty.write_all(question.as_bytes())?;
            tty.flush()?;
        }
        None => crate::output::write_stderr(format_args!("{question}")),
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// The `plan` event of `apply --json`: the plan document's fields.
fn plan_event(plan: &Plan) -> serde_json::Value {
    let mut event = json!({"event": "plan"});
    if let (Some(e), serde_json::Value::Object(fields)) = (event.as_object_mut(), plan_json(plan)) {
        e.extend(fields);
    }
    event
}

/// The last event of `apply --json`: `[created, updated, removed, failed,
/// skipped]` counts, the state serial, and whether it was a dry run.
fn summary_json(counts: [usize; 5], serial: u64, dry_run: bool) -> serde_json::Value {
    let [created, updated, removed, failed, skipped] = counts;
    json!({
        "event": "summary", "created": created, "updated": updated, "removed": removed,
        "failed": failed, "skipped": skipped, "serial": serial, "dry_run": dry_run,
    })
}

fn status_json(id: &str, status: &Status) -> serde_json::Value {
    match status {
        Status::Done(a) => {
            json!({"event": "done", "id": id, "backup": a.backup, "checksum": a.checksum})
        }
        Status::Unchanged => json!({"event": "unchanged", "id": id}),
        Status::Failed(e) => json!({"event": "failed", "id": id, "error": e}),
        Status::Skipped(why) => {
            json!({"event": "skipped", "id": id, "reason": why.to_string()})
        }
    }
}

/// One line per finished change (none for unchanged ones).
fn status_line(
    ctx: &Context,
    change: Option<&Change>,
    id: &str,
    status: &Status,
) -> Option<String> {
    let p = &ctx.out;
    match status {
        Status::Unchanged => None,
        Status::Done(applied) => {
            let action = change.map(|c| c.action);
            let verb = match (action, &applied.output, &applied.not_run) {
                (Some(Action::Create), _, _) => "created".to_string(),
                // A removal that left the path in place (a dir holding files
                // stead does not manage) must not claim it removed it.
                (Some(Action::Remove), Some(note), _) => format!("no longer managed ({note})"),
                // A record forgotten with nothing to remove (already gone,
                // or left in place: a tree's file dropped without `purge`).
                (Some(Action::Remove), None, _)
                    if change.is_some_and(|c| c.op == stead_lib::resource::Op::None) =>
                {
                    "no longer managed (nothing removed)".to_string()
                }
                (Some(Action::Remove), None, _) => "removed".to_string(),
                // An exec whose guard, checked again right before running,
                // said there was nothing to do.
                (_, _, Some(why)) => format!("not run ({why})"),
                _ if change.is_some_and(|c| c.kind == Kind::Exec) => "ran".to_string(),
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

/// The closing lines. After a Ctrl-C (`interrupted`), one line says how many
/// changes finished and how many never started (then the failures, if any).
fn summarize(
    ctx: &Context,
    plan: &Plan,
    statuses: &[Status],
    serial: u64,
    interrupted: bool,
) -> Result<ExitCode> {
    let mut created = 0;
    let mut updated = 0;
    let mut removed = 0;
    let mut not_started = 0;
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
            Status::Skipped(Skip::Interrupted) => not_started += 1,
            Status::Skipped(why) => skipped.push((c.id.as_str(), why.to_string())),
            Status::Unchanged => {}
        }
    }
    if interrupted && !ctx.json {
        let finished = created + updated + removed + failed.len();
        outln!(
            "\n{} Interrupted: {finished} finished ({created} created, {updated} updated, {removed} removed, {} failed), \
             {} not started (state serial {serial}). What ran is recorded; run 'stead apply' to finish.",
            ctx.out.yellow("⊘"),
            failed.len(),
            not_started + skipped.len(),
        );
        print_failures(ctx, &failed);
        return Ok(ExitCode::FAILURE);
    }
    if ctx.json {
        let counts = [created, updated, removed, failed.len(), skipped.len()];
        print_json_line(&summary_json(counts, serial, false));
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
        print_failures(ctx, &failed);
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

/// Each failed change and its whole error.
fn print_failures(ctx: &Context, failed: &[(&str, &str)]) {
    for (id, e) in failed {
        outln!("\n{} {id}:", ctx.out.red("Failed"));
        for line in e.lines() {
            outln!("  {line}");
        }
    }
}

/// Says so when the journal holds a run that never ended. Its convergent
/// work needs nothing special: this run re-reads every resource and plans
/// again, and records what the interrupted run finished (files already as
/// declared are adopted).
fn report_interrupted_run(ctx: &Context, run: &InterruptedRun) {
    let InterruptedRun {
        run_id,
        started,
        in_flight,
    } = run;
    if ctx.json {
        print_json_line(
            &json!({"event": "recovering", "run_id": run_id, "started": started, "in_flight": in_flight}),
        );
    } else {
        let line = format!(
            "Recovering from interrupted run {run_id} (started {}, {in_flight} operations in flight)",
            crate::output::utc(*started)
        );
        outln!("{}", ctx.out.yellow(&line));
    }
}

/// Starts `stead __reaper` in its own process group and announces every
/// command's process group to it: if this process dies (even by SIGKILL),
/// the reaper sees its input end and kills the commands left running, so an
/// apply never leaves orphans. Without it (it could not start), apply goes
/// on and says so with -v.
pub(crate) fn start_reaper(ctx: &Context, control: &RunControl) -> Option<std::process::Child> {
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
            control.set_reaper(Box::new(stdin));
            Some(child)
        }
        Err(e) => {
            if ctx.verbose {
                errln!("cannot start the reaper ({e}); commands may outlive a killed apply");
            }
            None
        }
    }
}
