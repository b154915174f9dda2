//! `package`: a software package present, absent, pinned to a version or
//! kept at the latest, through the machine's package manager (apt, dnf,
//! pacman or brew; [`managers`] asks each its questions).
//!
//! Reading is one query per plan and manager for every declared package
//! ([`super::SharedReads`]), never one per package. Packages that change
//! the same way and wait for the same resources run as one transaction
//! ([`crate::plan::transactions`]), and each member's outcome comes from the
//! package database read again afterwards, not from the transaction's exit
//! status (a failed transaction may have installed some). stead owns only
//! what it installed: a package that was there before is never removed
//! when its declaration goes away.

pub mod apt;
pub mod brew;
pub mod dnf;
pub mod managers;
pub mod pacman;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::manifest::{Kind, OtherSpec, Problem, Resource, Spec, SpecInput};

use super::kind::{
    ApplyEnv, Key, KeyType, KindSchema, Ownership, Planned, ResourceKind, custom_data, custom_op,
    unexpected_op, unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError};

pub use managers::Manager;
use managers::{Found, FoundState};

/// The kind's name.
const PACKAGE: Kind = Kind::named("package");

/// What a package should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    /// Installed (at `version`, when pinned).
    Present,
    /// Not installed.
    Absent,
    /// Installed at the newest version the manager knows.
    Latest,
}

/// What a `package` resource declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// The package's name for its manager.
    pub name: String,
    /// What it should be.
    pub ensure: Ensure,
    /// A pinned version (with `present`).
    pub version: Option<String>,
    /// `None`: the one this machine has (`manager = "auto"`).
    pub manager: Option<Manager>,
    /// `names = [...]`: the declaration stands for one resource per name.
    pub names: Vec<String>,
}

/// What apply does for one package (the op's data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Step {
    manager: Manager,
    /// Install (or upgrade/downgrade) when true, remove when false.
    install: bool,
    name: String,
    /// The version to install (a pin, or the candidate for `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    /// It was not installed when planned: stead installs it and owns it.
    #[serde(default)]
    installs: bool,
}

/// The `package` kind.
pub struct Package;

impl KindSchema for Package {
    fn kind(&self) -> Kind {
        PACKAGE
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::optional("name", KeyType::Str),
            Key::optional("names", KeyType::StrList),
            Key::optional("ensure", KeyType::Str),
            Key::optional("version", KeyType::Str),
            Key::optional("manager", KeyType::Str),
        ];
        KEYS
    }

    fn ownership(&self) -> Ownership {
        // It owns names, not paths ([`ResourceKind::owned_names`]); nothing
        // already installed is adopted.
        Ownership {
            owns_path: true,
            adopt_when_right: false,
        }
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let ensure = ensure(input)?;
        let manager = manager(input)?;
        let version = match input.text_at("version") {
            Some((v, span)) => Some(checked(input, v, span, "version")?),
            None => None,
        };
        if version.is_some() && ensure != Ensure::Present {
            let span = input.span();
            input.problem(
                Problem::at(span, "`version` pins a package that is present; it cannot go with ensure = \"absent\" or \"latest\"")
                    .label("version with the wrong ensure"),
            );
            return None;
        }
        let names = names(input)?;
        let name = match input.text_at("name") {
            Some((n, span)) => checked(input, n, span, "name")?,
            None => own_name(input.id()).to_string(),
        };
        let spec = PackageSpec {
            name,
            ensure,
            version,
            manager,
            names,
        };
        Some(Spec::Other(OtherSpec {
            kind: PACKAGE,
            path: None,
            data: Arc::new(spec),
        }))
    }

    /// `names = [...]`: one resource per package (`package.NAME/git`), and
    /// the declaration's own id as a group that waits for all of them, so
    /// edges to it mean "after every one".
    fn expand(&self, resource: Resource, _problems: &mut Vec<Problem>) -> Vec<Resource> {
        let Some(spec) = package_spec(&resource.spec).filter(|p| !p.names.is_empty()) else {
            return vec![resource];
        };
        let mut out = Vec::with_capacity(spec.names.len() + 1);
        for name in &spec.names {
            let member = PackageSpec {
                name: name.clone(),
                names: Vec::new(),
                ..spec.clone()
            };
            out.push(Resource {
                id: format!("{}/{name}", resource.id),
                spec: Spec::Other(OtherSpec {
                    kind: PACKAGE,
                    path: None,
                    data: Arc::new(member),
                }),
                after: resource.after.clone(),
                before: Default::default(),
                notify: resource.notify.clone(),
                references: Default::default(),
                retry: resource.retry,
                span: resource.span.clone(),
            });
        }
        let members = out.iter().map(|r| r.id.clone()).collect();
        out.push(Resource {
            spec: Spec::Noop,
            after: members,
            notify: Default::default(),
            ..resource
        });
        out
    }
}

/// How the state records a package stead installed: `apt:git`.
fn owned_name(manager: Manager, name: &str) -> String {
    format!("{}:{name}", manager.as_str())
}

/// The part of an id after `package.`.
fn own_name(id: &str) -> &str {
    id.split_once('.').map_or(id, |(_, n)| n)
}

fn ensure(input: &mut SpecInput) -> Option<Ensure> {
    match input.literal("ensure") {
        None => Some(Ensure::Present),
        Some((e, span)) => match e.as_str() {
            "present" => Some(Ensure::Present),
            "absent" => Some(Ensure::Absent),
            "latest" => Some(Ensure::Latest),
            _ => {
                input.problem(
                    Problem::at(
                        span,
                        format!(
                            "`ensure` of a package must be \"present\", \"absent\" or \"latest\", not {e:?}"
                        ),
                    )
                    .label("bad value"),
                );
                None
            }
        },
    }
}

fn manager(input: &mut SpecInput) -> Option<Option<Manager>> {
    let Some((m, span)) = input.literal("manager") else {
        return Some(None);
    };
    if m == "auto" {
        return Some(None);
    }
    if let Some(manager) = Manager::named(&m) {
        return Some(Some(manager));
    }
    input.problem(
        Problem::at(
            span,
            format!(
                "`manager` must be \"auto\", \"apt\", \"dnf\", \"pacman\" or \"brew\", not {m:?}"
            ),
        )
        .label("bad value"),
    );
    None
}

fn names(input: &mut SpecInput) -> Option<Vec<String>> {
    if !input.has("names") {
        return Some(Vec::new());
    }
    if input.has("name") {
        let span = input.span();
        input.problem(
            Problem::at(span, "a package takes `name` or `names`, not both")
                .label("name and names"),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (n, span) in input.list("names") {
        match checked(input, n, span, "names") {
            Some(n) => out.push(n),
            None => ok = false,
        }
    }
    if out.is_empty() && ok {
        let span = input.span();
        input.problem(Problem::at(span, "`names` is empty").label("no packages"));
        return None;
    }
    ok.then_some(out)
}

/// A name or version that goes on a command line: not empty, no blanks or
/// control characters, no leading `-` (never an option); in a name no `=`
/// or `/` (apt reads those as a version or a release) and no `:` (an
/// architecture: dpkg reports the name without it, so the plan would never
/// find it installed and would install it again every run).
fn checked(
    input: &mut SpecInput,
    value: String,
    span: std::ops::Range<usize>,
    key: &str,
) -> Option<String> {
    let bad = value.is_empty()
        || value.starts_with('-')
        || value.chars().any(|c| {
            c.is_whitespace() || c.is_control() || (key != "version" && "=/:".contains(c))
        });
    if bad {
        input.problem(
            Problem::at(
                span,
                format!(
                    "{value:?} is not a package {}",
                    if key == "version" { "version" } else { "name" }
                ),
            )
            .label("bad value")
            .help("no spaces, no leading '-', and in a name no '=', '/' or ':' (no architecture)"),
        );
        return None;
    }
    Some(value)
}

/// The package spec in `spec`, if it is one.
pub fn package_spec(spec: &Spec) -> Option<&PackageSpec> {
    match spec {
        Spec::Other(o) if o.kind == PACKAGE => o.data::<PackageSpec>(),
        _ => None,
    }
}

fn resolve(manager: Option<Manager>) -> Result<Manager, ResourceError> {
    manager.or_else(Manager::detect).ok_or_else(|| {
        ResourceError::Exec(
            "no supported package manager on this machine (none of dpkg-query, rpm with dnf, \
             pacman or brew is on PATH); set `manager` to the one to use"
                .into(),
        )
    })
}

/// What one plan read from a manager's database, shared by every package
/// it plans.
type Snapshot = Result<HashMap<String, Found>, String>;

/// The key of a plan-wide read of `manager`'s `what`.
fn shared_key(manager: Manager, what: Read) -> &'static str {
    match (manager, what) {
        (Manager::Apt, Read::Installed) => "package:apt:installed",
        (Manager::Apt, Read::Candidates) => "package:apt:candidates",
        (Manager::Apt, Read::Interrupted) => "package:apt:interrupted",
        (Manager::Dnf, Read::Installed) => "package:dnf:installed",
        (Manager::Dnf, Read::Candidates) => "package:dnf:candidates",
        (Manager::Dnf, Read::Interrupted) => "package:dnf:interrupted",
        (Manager::Pacman, Read::Installed) => "package:pacman:installed",
        (Manager::Pacman, Read::Candidates) => "package:pacman:candidates",
        (Manager::Pacman, Read::Interrupted) => "package:pacman:interrupted",
        (Manager::Brew, Read::Installed) => "package:brew:installed",
        (Manager::Brew, Read::Candidates) => "package:brew:candidates",
        (Manager::Brew, Read::Interrupted) => "package:brew:interrupted",
    }
}

/// What a plan reads of a manager once.
#[derive(Clone, Copy)]
enum Read {
    Installed,
    Candidates,
    Interrupted,
}

/// Every package name the manifest declares for `manager`, for its one
/// query (`latest_only`: those that say `latest`).
fn declared_names(ctx: &PlanContext, manager: Manager, latest_only: bool) -> Vec<String> {
    let machine = Manager::detect();
    let mut names: Vec<String> = ctx
        .manifest
        .resources
        .iter()
        .filter_map(|r| package_spec(&r.spec))
        .filter(|p| p.names.is_empty() && (!latest_only || p.ensure == Ensure::Latest))
        .filter(|p| p.manager.or(machine) == Some(manager))
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn as_strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

impl ResourceKind for Package {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
        let Some(p) = package_spec(spec) else {
            return Err(unexpected_spec(self.kind(), spec));
        };
        let manager = resolve(p.manager)?;
        // It owns a name, not a path: `owned` is true only when an
        // interrupted run finished it (`PlanContext::recovered`); the state
        // records what it owns by name.
        let snapshot = ctx
            .shared
            .get_or_read::<Snapshot>(shared_key(manager, Read::Installed), || {
                managers::query(manager, &as_strs(&declared_names(ctx, manager, false)))
            })
            .ok_or_else(|| ResourceError::Internal("package snapshot of another type".into()))?;
        let found = match snapshot.as_ref() {
            Ok(map) => map.get(&p.name),
            Err(e) => {
                return Err(ResourceError::Exec(format!(
                    "cannot read the package database: {e}"
                )));
            }
        };
        let candidate = match p.ensure {
            Ensure::Latest => candidate(ctx, manager, &p.name)?,
            _ => None,
        };
        let recorded = ctx.owned.contains(None, &owned_name(manager, &p.name));
        let mut planned = decide(p, manager, found, candidate, recorded || owned)?;
        if owned
            && !recorded
            && planned.action == Action::Unchanged
            && found.is_some_and(Found::is_installed)
        {
            // An interrupted run installed it and could not record it: it
            // is stead's, and this plan says so for the state to record.
            planned.reason = "installed by an interrupted run of stead; recorded as its own".into();
            planned.op = custom_op(
                PACKAGE,
                &Step {
                    manager,
                    install: true,
                    name: p.name.clone(),
                    version: None,
                    installs: true,
                },
            )?;
        }
        let changes = matches!(
            planned.action,
            Action::Create | Action::Update | Action::Remove
        );
        if changes && let Some((why, repair)) = interrupted(ctx, manager)? {
            return Ok(Planned::conflict(format!(
                "{why}; nothing is installed or removed until it is repaired: {repair}, then apply again"
            )));
        }
        Ok(planned)
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        self.apply_together(&[op], env)
            .pop()
            .unwrap_or_else(|| Err(ResourceError::Internal("no result for a package".into())))
    }

    fn shipped_paths(
        &self,
        ops: &[&Op],
        _ctx: &PlanContext,
    ) -> Result<Vec<Vec<PathBuf>>, ResourceError> {
        let steps: Vec<Option<Step>> = ops
            .iter()
            .map(|op| match op {
                Op::Custom { data } => custom_data(PACKAGE, data).ok(),
                _ => None,
            })
            .collect();
        let mut lists: HashMap<Manager, HashMap<String, Vec<PathBuf>>> = HashMap::new();
        for manager in steps.iter().flatten().map(|s| s.manager) {
            if lists.contains_key(&manager) {
                continue;
            }
            let names: Vec<&str> = steps
                .iter()
                .flatten()
                .filter(|s| s.manager == manager)
                .map(|s| s.name.as_str())
                .collect();
            let found = managers::shipped(manager, &names).map_err(ResourceError::Exec)?;
            lists.insert(manager, found);
        }
        Ok(steps
            .iter()
            .map(|step| {
                step.as_ref()
                    .and_then(|s| lists.get(&s.manager)?.get(&s.name).cloned())
                    .unwrap_or_default()
            })
            .collect())
    }

    fn transaction(&self, op: &Op) -> Option<String> {
        let Op::Custom { data } = op else { return None };
        let step: Step = custom_data(PACKAGE, data).ok()?;
        Some(format!(
            "{}:{}",
            step.manager.as_str(),
            if step.install { "install" } else { "remove" }
        ))
    }

    fn apply_together(&self, ops: &[&Op], env: &ApplyEnv) -> Vec<Result<Applied, ResourceError>> {
        let steps: Vec<Result<Step, ResourceError>> = ops
            .iter()
            .map(|op| match op {
                Op::Custom { data } => custom_data(PACKAGE, data),
                other => Err(unexpected_op(PACKAGE, other)),
            })
            .collect();
        let good: Vec<&Step> = steps.iter().filter_map(|s| s.as_ref().ok()).collect();
        let mut results = run_steps(&good, env).into_iter();
        steps
            .into_iter()
            .map(|s| match s {
                Ok(_) => results.next().unwrap_or_else(|| {
                    Err(ResourceError::Internal("no result for a package".into()))
                }),
                Err(e) => Err(e),
            })
            .collect()
    }

    fn owned_names(&self, op: &Op) -> Option<Vec<String>> {
        let Op::Custom { data } = op else {
            return Some(Vec::new());
        };
        let step: Step = custom_data(PACKAGE, data).ok()?;
        Some(if step.install && step.installs {
            vec![owned_name(step.manager, &step.name)]
        } else {
            Vec::new()
        })
    }

    fn plan_removal_of_names(&self, names: &[String]) -> Result<Planned, ResourceError> {
        for owned in names {
            let Some((manager, name)) = owned
                .split_once(':')
                .and_then(|(m, n)| Some((Manager::named(m)?, n)))
            else {
                continue;
            };
            let installed = managers::query(manager, &[name]).map_err(|e| {
                ResourceError::Exec(format!("cannot read the package database: {e}"))
            })?;
            if !installed.get(name).is_some_and(Found::is_installed) {
                continue;
            }
            if let Some((why, repair)) =
                managers::interrupted(manager).map_err(ResourceError::Exec)?
            {
                return Ok(Planned::conflict(format!(
                    "no longer declared, but {why}: {repair}, then apply again"
                )));
            }
            let step = Step {
                manager,
                install: false,
                name: name.to_string(),
                version: None,
                installs: false,
            };
            return Ok(Planned::new(
                Action::Remove,
                "no longer declared; stead installed it",
                custom_op(PACKAGE, &step)?,
            ));
        }
        Ok(Planned::new(
            Action::Remove,
            "no longer declared; no longer installed",
            Op::None,
        ))
    }
}

/// The candidate version of `name` (one query per plan and manager for
/// every `latest` package).
fn candidate(
    ctx: &PlanContext,
    manager: Manager,
    name: &str,
) -> Result<Option<String>, ResourceError> {
    type Candidates = Result<HashMap<String, Option<String>>, String>;
    let all = ctx
        .shared
        .get_or_read::<Candidates>(shared_key(manager, Read::Candidates), || {
            managers::candidates(manager, &as_strs(&declared_names(ctx, manager, true)))
        })
        .ok_or_else(|| ResourceError::Internal("package candidates of another type".into()))?;
    match all.as_ref() {
        Ok(map) => Ok(map.get(name).cloned().flatten()),
        Err(e) => Err(ResourceError::Exec(format!(
            "cannot read candidate versions: {e}"
        ))),
    }
}

/// Whether the manager was interrupted, and its repair (read once per plan
/// and manager, and only by a plan that would change a package).
fn interrupted(
    ctx: &PlanContext,
    manager: Manager,
) -> Result<Option<(String, String)>, ResourceError> {
    type Interrupted = Result<Option<(String, String)>, String>;
    let read = ctx
        .shared
        .get_or_read::<Interrupted>(shared_key(manager, Read::Interrupted), || {
            managers::interrupted(manager)
        })
        .ok_or_else(|| ResourceError::Internal("interrupted read of another type".into()))?;
    read.as_ref()
        .clone()
        .map_err(|e| ResourceError::Exec(e.clone()))
}

/// The plan for one package, from what its manager's database says of it.
fn decide(
    p: &PackageSpec,
    manager: Manager,
    found: Option<&Found>,
    candidate: Option<String>,
    owned: bool,
) -> Result<Planned, ResourceError> {
    let step = |install: bool, version: Option<String>, installs: bool| {
        custom_op(
            PACKAGE,
            &Step {
                manager,
                install,
                name: p.name.clone(),
                version,
                installs,
            },
        )
    };
    if let Some(Found {
        state: FoundState::HalfDone(status),
        ..
    }) = found
    {
        return Ok(Planned::conflict(format!(
            "dpkg left {} half done (status {status}): run 'sudo dpkg --configure -a', then apply again",
            p.name
        )));
    }
    if p.version.is_some() && !manager.pins() {
        return Ok(Planned::conflict(format!(
            "{} installs what its repositories hold and cannot install a chosen version: remove `version`",
            manager.as_str()
        )));
    }
    let current = found
        .filter(|f| f.is_installed())
        .map(|f| f.version.as_str());
    let pinned = |v: &str| {
        p.version
            .as_deref()
            .is_none_or(|pin| manager.version_matches(v, pin))
    };
    let planned = match (p.ensure, current) {
        (Ensure::Absent, None) => Planned::unchanged("not installed"),
        (Ensure::Absent, Some(v)) => Planned::new(
            Action::Remove,
            format!("{v} installed; ensure = \"absent\""),
            step(false, None, false)?,
        ),
        (Ensure::Present, Some(v)) if pinned(v) => Planned::unchanged(if owned {
            "installed"
        } else {
            "installed before stead; never removed by it"
        }),
        (Ensure::Present, Some(v)) => {
            let pin = p.version.clone().unwrap_or_default();
            Planned::new(
                Action::Update,
                format!("{v} → {pin}"),
                step(true, Some(pin), false)?,
            )
        }
        (Ensure::Latest, Some(v)) => match candidate {
            Some(c) if c != v => Planned::new(
                Action::Update,
                format!("{v} → {c} (latest)"),
                step(true, manager.pins().then_some(c), false)?,
            ),
            _ => Planned::unchanged("installed, latest"),
        },
        (Ensure::Present | Ensure::Latest, None) => {
            let was = match found {
                Some(f) if f.state == FoundState::ConfigFiles => "removed, its config files left",
                _ => "not installed",
            };
            let version = p.version.clone().or(candidate.filter(|_| manager.pins()));
            Planned::new(Action::Create, was, step(true, version, true)?)
        }
    };
    Ok(planned)
}

/// Runs the steps (all one manager and one action) as one transaction, then
/// reads the database again for each one's outcome. When the transaction
/// failed and held more than one package, each package it did not get
/// right is tried alone, so one bad name fails only itself.
fn run_steps(steps: &[&Step], env: &ApplyEnv) -> Vec<Result<Applied, ResourceError>> {
    let Some(first) = steps.first() else {
        return Vec::new();
    };
    let packages: Vec<(&str, Option<&str>)> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.version.as_deref()))
        .collect();
    let outcome = managers::transaction(first.manager, first.install, &packages, env.control);
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let after = managers::query(first.manager, &names);
    let mut results: Vec<Result<Applied, ResourceError>> =
        steps.iter().map(|s| judge(s, &after, &outcome)).collect();
    if steps.len() > 1 && matches!(&outcome, Ok(o) if !o.success) {
        for (n, step) in steps.iter().enumerate() {
            if results[n].is_err() {
                results[n] = run_steps(&[step], env).pop().unwrap_or_else(|| {
                    Err(ResourceError::Internal("no result for a package".into()))
                });
            }
        }
    }
    results
}

/// One step's outcome: what the database says now, with the transaction's
/// own report when it is not right.
fn judge(
    step: &Step,
    after: &Result<HashMap<String, Found>, String>,
    outcome: &Result<crate::resource::exec::Outcome, ResourceError>,
) -> Result<Applied, ResourceError> {
    let now = match after {
        Ok(map) => map.get(&step.name),
        Err(e) => {
            return Err(ResourceError::Exec(format!(
                "cannot read the package database after the transaction: {e}"
            )));
        }
    };
    let installed = now.filter(|f| f.is_installed());
    let right = if step.install {
        installed.is_some_and(|f| {
            step.version
                .as_deref()
                .is_none_or(|v| step.manager.version_matches(&f.version, v))
        })
    } else {
        installed.is_none()
    };
    if right {
        return Ok(Applied::default());
    }
    let what = match (step.install, &step.version) {
        (true, Some(v)) => format!("{} {v} is not installed", step.name),
        (true, None) => format!("{} is not installed", step.name),
        (false, _) => format!("{} is still installed", step.name),
    };
    match outcome {
        Err(e) => Err(ResourceError::Exec(format!("{what}: {e}"))),
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.output);
            let tail: Vec<&str> = out.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(ResourceError::CommandFailed {
                message: format!(
                    "{what} ({} {})\n--- output ---\n{}",
                    step.manager.as_str(),
                    o.status,
                    tail.join("\n")
                ),
                output: o.output.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::tests::{Fixture, change};

    #[test]
    fn names_expand_to_one_resource_each_and_a_group_that_waits_for_them() {
        let fx = Fixture::new();
        let m = fx.manifest("[package.tools]\nnames = [\"git\", \"curl\"]\nmanager = \"apt\"\n");
        let ids: Vec<&str> = m.resources.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["package.tools/git", "package.tools/curl", "package.tools"]
        );
        let group = &m.resources[2];
        assert_eq!(group.spec, Spec::Noop);
        assert_eq!(group.after, ["package.tools/git", "package.tools/curl"]);
        assert_eq!(package_spec(&m.resources[1].spec).unwrap().name, "curl");
    }

    #[test]
    fn bad_values_are_load_errors_with_their_place() {
        let fx = Fixture::new();
        for (text, want) in [
            (
                "[package.a]\nensure = \"installed\"\n",
                "\"present\", \"absent\" or \"latest\"",
            ),
            (
                "[package.a]\nmanager = \"yum\"\n",
                "\"auto\", \"apt\", \"dnf\", \"pacman\" or \"brew\"",
            ),
            ("[package.a]\nname = \"-rf\"\n", "is not a package name"),
            ("[package.a]\nname = \"a b\"\n", "is not a package name"),
            ("[package.a]\nname = \"a=1\"\n", "is not a package name"),
            (
                "[package.a]\nname = \"git:amd64\"\n",
                "is not a package name",
            ),
            (
                "[package.a]\nversion = \"1\"\nensure = \"latest\"\n",
                "cannot go with",
            ),
            ("[package.a]\nnames = []\n", "`names` is empty"),
            ("[package.a]\nname = \"x\"\nnames = [\"y\"]\n", "not both"),
        ] {
            let e = fx.manifest_error(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    fn spec(ensure: Ensure, version: Option<&str>) -> PackageSpec {
        PackageSpec {
            name: "git".into(),
            ensure,
            version: version.map(str::to_string),
            manager: Some(Manager::Apt),
            names: Vec::new(),
        }
    }

    fn at(version: &str, status: &str) -> Found {
        let state = match status {
            "ii" => FoundState::Installed,
            "rc" => FoundState::ConfigFiles,
            other => FoundState::HalfDone(other.into()),
        };
        Found {
            version: version.into(),
            state,
        }
    }

    fn decided(p: &PackageSpec, i: Option<&Found>, c: Option<&str>) -> Planned {
        decide(p, Manager::Apt, i, c.map(str::to_string), false).unwrap()
    }

    #[test]
    fn the_plan_reads_the_status_not_the_version() {
        let present = spec(Ensure::Present, None);
        assert_eq!(
            decided(&present, Some(&at("1.0", "ii")), None).action,
            Action::Unchanged
        );
        let rc = decided(&present, Some(&at("1.0", "rc")), None);
        assert_eq!(rc.action, Action::Create);
        assert!(rc.reason.contains("config files"), "{}", rc.reason);
        assert_eq!(decided(&present, None, None).action, Action::Create);
        let half = decided(&present, Some(&at("1.0", "iF")), None);
        assert_eq!(half.action, Action::Conflict);
        assert!(
            half.reason.contains("dpkg --configure -a"),
            "{}",
            half.reason
        );
    }

    #[test]
    fn pins_latest_and_absent_plan_what_they_say() {
        let pinned = spec(Ensure::Present, Some("1.1"));
        let up = decided(&pinned, Some(&at("1.0", "ii")), None);
        assert_eq!(
            (up.action, up.reason.as_str()),
            (Action::Update, "1.0 → 1.1")
        );
        assert_eq!(
            decided(&pinned, Some(&at("1.1", "ii")), None).action,
            Action::Unchanged
        );
        let latest = spec(Ensure::Latest, None);
        assert_eq!(
            decided(&latest, Some(&at("1.0", "ii")), Some("1.1")).action,
            Action::Update
        );
        assert_eq!(
            decided(&latest, Some(&at("1.1", "ii")), Some("1.1")).action,
            Action::Unchanged
        );
        let absent = spec(Ensure::Absent, None);
        assert_eq!(
            decided(&absent, Some(&at("1.0", "ii")), None).action,
            Action::Remove
        );
        assert_eq!(
            decided(&absent, Some(&at("1.0", "rc")), None).action,
            Action::Unchanged
        );
    }

    #[test]
    fn pacman_cannot_pin_and_latest_installs_what_its_repositories_hold() {
        let mut pinned = spec(Ensure::Present, Some("1.0"));
        pinned.manager = Some(Manager::Pacman);
        let p = decide(&pinned, Manager::Pacman, None, None, false).unwrap();
        assert_eq!(p.action, Action::Conflict);
        assert!(p.reason.contains("remove `version`"), "{}", p.reason);
        let mut latest = spec(Ensure::Latest, None);
        latest.manager = Some(Manager::Pacman);
        let up = decide(
            &latest,
            Manager::Pacman,
            Some(&at("1.0-1", "ii")),
            Some("1.1-1".into()),
            false,
        )
        .unwrap();
        assert_eq!(up.action, Action::Update);
        let Op::Custom { data } = &up.op else {
            panic!("{:?}", up.op)
        };
        assert_eq!(data.get("version"), None, "{data}");
    }

    #[test]
    fn only_a_package_stead_installed_becomes_its_own() {
        let install = decided(&spec(Ensure::Present, None), None, None);
        assert_eq!(
            Package.owned_names(&install.op),
            Some(vec!["apt:git".to_string()])
        );
        let upgrade = decided(
            &spec(Ensure::Present, Some("2")),
            Some(&at("1", "ii")),
            None,
        );
        assert_eq!(Package.owned_names(&upgrade.op), Some(Vec::new()));
        assert_eq!(
            Package.transaction(&install.op).as_deref(),
            Some("apt:install")
        );
        let remove = decided(&spec(Ensure::Absent, None), Some(&at("1", "ii")), None);
        assert_eq!(
            Package.transaction(&remove.op).as_deref(),
            Some("apt:remove")
        );
        let _ = change;
    }
}
