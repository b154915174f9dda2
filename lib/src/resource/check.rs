//! `check`: a program that predicts, before anything changes, whether the
//! machine's state can simply be converged, and reports what must be
//! migrated instead ([`crate::check`]'s JSON contract). Planning runs it and
//! keeps its report in the change; [`crate::migration`] turns the report
//! and the choices made into the steps an apply runs. A check whose steps
//! run in an apply is run again after them (its change waits for them), so
//! what depends on the check runs only once its items are resolved.
//!
//! Its migration steps are changes of this kind too (`check.db/ITEM/STEP`,
//! [`Op::Run`]): one-shots run as the step's user.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Report;
use crate::command::Command;
use crate::manifest::{Kind, OtherSpec, Problem, Spec, SpecInput};

use super::exec::{self, RunAs};
use super::kind::{
    ApplyEnv, Key, KeyType, KindSchema, Planned, ResourceKind, custom_data, custom_op,
    unexpected_op, unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError};

/// The kind's name.
pub const CHECK: Kind = Kind::named("check");

/// The `check` kind.
pub struct Check;

/// How a check (and each of its migration steps) is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Its name (`db` for `[check.db]`), the first part of its items'
    /// addresses.
    pub name: String,
    /// The check program.
    pub command: Command,
    /// Who it runs as (`None`: the user stead runs as).
    pub user: Option<String>,
    /// Where it and its steps run (default: the config repo).
    pub cwd: PathBuf,
    /// Extra environment for it and its steps.
    pub env: BTreeMap<String, String>,
    /// Killed after this many milliseconds (also each step).
    pub timeout_ms: Option<u64>,
    /// The target home (`HOME` unless it runs as another user; always
    /// `STEAD_HOME`).
    pub home: PathBuf,
}

/// The op of a check's change: its spec and what it reported when planned;
/// applied, it runs the check again (after its migration steps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOp {
    /// How to run it.
    pub spec: CheckSpec,
    /// What it reported when the plan was made.
    pub report: Report,
    /// The items its migration steps in this run resolve: run again after
    /// them, it fails if it still reports one of them as an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolves: Vec<String>,
}

/// The spec of a `check` resource.
pub fn check_spec(spec: &Spec) -> Option<&CheckSpec> {
    match spec {
        Spec::Other(o) if o.kind == CHECK => o.data::<CheckSpec>(),
        _ => None,
    }
}

/// The op a check's change carries, if `op` is one.
pub fn check_op(op: &Op) -> Option<CheckOp> {
    match op {
        Op::Custom { data } => custom_data::<CheckOp>(CHECK, data).ok(),
        _ => None,
    }
}

/// A check's change with `op` as its op.
pub fn to_op(op: &CheckOp) -> Result<Op, ResourceError> {
    custom_op(CHECK, op)
}

impl KindSchema for Check {
    fn kind(&self) -> Kind {
        CHECK
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("command", KeyType::Command),
            Key::optional("user", KeyType::Str),
            Key::optional("cwd", KeyType::Str),
            Key::optional("env", KeyType::StrMap),
            Key::optional("timeout", KeyType::Duration),
        ];
        KEYS
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let name = input.name().to_string();
        // Its name starts every item's address (`db/schema-behind`) and the
        // ids of its steps' changes.
        if name.is_empty() || !name.chars().all(is_id_char) {
            let span = input.span();
            input.problem(
                Problem::at(
                    span,
                    format!("check.{name:?}: a check's name may hold only letters, digits, '.', '_' and '-'"),
                )
                .label("bad name")
                .help("its items are addressed CHECK/ITEM (`db/schema-behind` for [check.db])"),
            );
            return None;
        }
        let command = input.command("command");
        let user = input.text("user");
        let cwd = if input.has("cwd") {
            Some(input.target_path("cwd")?)
        } else {
            None
        };
        let cwd = cwd.unwrap_or_else(|| input.config_dir().to_path_buf());
        let env = input.map("env");
        let timeout_ms = input
            .duration("timeout")
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let home = input.home().to_path_buf();
        Some(Spec::Other(OtherSpec {
            kind: CHECK,
            path: None,
            data: Arc::new(CheckSpec {
                name,
                command: command?,
                user,
                cwd,
                env,
                timeout_ms,
                home,
            }),
        }))
    }
}

/// A character of an id in a check's report, and of a check's name.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl ResourceKind for Check {
    fn plan(
        &self,
        spec: &Spec,
        _ctx: &PlanContext,
        _owned: bool,
    ) -> Result<Planned, ResourceError> {
        let Some(check) = check_spec(spec) else {
            return Err(unexpected_spec(self.kind(), spec));
        };
        let report = run(check)?;
        let reason = match report.items.len() {
            0 => "no items".to_string(),
            1 => "1 item".to_string(),
            n => format!("{n} items"),
        };
        let op = to_op(&CheckOp {
            spec: check.clone(),
            report,
            resolves: Vec::new(),
        })?;
        // The action is decided with the record of choices
        // (crate::migration::settle), which the plan does not have here.
        Ok(Planned::new(Action::Unchanged, reason, op))
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        match op {
            Op::Run(r) => exec::run(r, env),
            Op::Custom { data } => {
                let op: CheckOp = custom_data(CHECK, data)?;
                let report = run(&op.spec)?;
                let unresolved: Vec<String> = report
                    .items
                    .iter()
                    .filter(|i| {
                        i.severity == crate::check::Severity::Error && op.resolves.contains(&i.id)
                    })
                    .map(|i| format!("{}/{}: {}", op.spec.name, i.id, i.message))
                    .collect();
                if !unresolved.is_empty() {
                    return Err(ResourceError::Exec(format!(
                        "check.{} still reports what its migration steps were to resolve: {}; \
                         what waits for it does not run ('stead check' shows the items)",
                        op.spec.name,
                        unresolved.join("; ")
                    )));
                }
                Ok(Applied {
                    report: Some(Box::new(report)),
                    ..Applied::default()
                })
            }
            other => Err(unexpected_op(self.kind(), other)),
        }
    }
}

/// Runs the check program and reads its report. A program that fails, or
/// prints what is not a report, is an error naming the check.
pub fn run(check: &CheckSpec) -> Result<Report, ResourceError> {
    let id = format!("check.{}", check.name);
    let as_user = match &check.user {
        Some(name) => RunAs::lookup(name)?,
        None => None,
    };
    let mut env = check.env.clone();
    env.entry("STEAD_HOME".to_string())
        .or_insert_with(|| check.home.display().to_string());
    let timeout = check.timeout_ms.map(Duration::from_millis);
    let (outcome, stdout) = exec::run_command_split(
        &check.command,
        Some(&check.cwd),
        &env,
        &check.home,
        timeout,
        as_user.as_ref(),
    )?;
    let stderr = String::from_utf8_lossy(&outcome.output);
    let stderr = stderr.trim_end();
    if !outcome.success {
        let mut msg = format!(
            "{id}: the check `{}` {}; nothing was planned",
            check.command.display(),
            outcome.status
        );
        if !stderr.is_empty() {
            msg.push_str("\n--- stderr ---\n");
            msg.push_str(stderr);
        }
        return Err(ResourceError::Exec(msg));
    }
    let stdout = stdout.map_err(|total| {
        ResourceError::Exec(format!(
            "{id}: the check printed {total} bytes on stdout, more than a report may hold"
        ))
    })?;
    crate::check::parse(&id, &stdout).map_err(|e| ResourceError::Exec(e.to_string()))
}
