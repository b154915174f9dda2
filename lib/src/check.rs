//! The report a check program prints (issue 18's contract): one JSON
//! document on stdout, read into typed items and their migration steps,
//! every problem named by the check and the JSON path where it is, and each
//! item and step fingerprinted.
//!
//! ```json
//! {"items": [{"id": "schema-behind", "severity": "error",
//!             "message": "the database is at version 3, the config wants 4",
//!             "steps": [{"id": "backup", "title": "back up", "command": ["cp", "db", "db.bak"]},
//!                       {"id": "migrate", "title": "migrate in place", "command": "sqlite3 db < 4.sql",
//!                        "user": "app", "after": ["backup"], "reboot": false}],
//!             "default": "migrate"}]}
//! ```
//!
//! `"items": []` means all is well. Keys are closed: an unknown one is an
//! error (a typo must not silently drop a step's `after`). Ids are plain
//! (letters, digits, `.`, `_`, `-`), unique within their list; a step's
//! `after` names steps of its own item, without a cycle; `default` names
//! one of its steps. An item is addressed `CHECK/ITEM`.
//!
//! Fingerprints name their algorithm (`blake3-v1:`), so a later change of
//! how they are made can never silently turn into "every choice changed"
//! (Flyway's checksum churn). They cover what a choice depends on: a
//! step's id, command, user, `after` and `reboot` (not its title); an
//! item's id, severity, `default` and its steps' fingerprints (not its
//! message): rewording a message or a title keeps every choice.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::Command;

/// The prefix of every fingerprint this version makes.
pub const FINGERPRINT: &str = "blake3-v1:";

/// How much an item matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The change will not succeed until it is resolved.
    Error,
    /// It may go wrong.
    Warning,
    /// It would be better.
    Recommendation,
}

/// One migration step an item offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Its id within the item.
    pub id: String,
    /// What it does, in words.
    pub title: String,
    /// What runs.
    pub command: Command,
    /// Who it runs as (`None`: the user stead runs as).
    pub user: Option<String>,
    /// Steps of the same item it runs after.
    pub after: Vec<String>,
    /// The machine must reboot after it.
    pub reboot: bool,
    /// `blake3-v1:<hex>` of what a choice of it depends on.
    pub fingerprint: String,
}

/// One finding of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its id within the check.
    pub id: String,
    /// How much it matters.
    pub severity: Severity,
    /// What is wrong, in words.
    pub message: String,
    /// The ways to resolve it.
    pub steps: Vec<Step>,
    /// The step a prompt offers first, if any (nothing runs unchosen).
    pub default: Option<String>,
    /// `blake3-v1:<hex>` of what a choice for it depends on.
    pub fingerprint: String,
}

/// A check's whole report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Its items, in the order printed (empty: all is well).
    pub items: Vec<Item>,
}

/// A report that cannot be used: which check, where in the document, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check} printed a report stead cannot use: at {path}: {message}")]
pub struct ReportError {
    /// The check (`check.db`).
    pub check: String,
    /// Where (`$.items[0].steps[1].after[0]`; `$` for the whole document).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Reads `stdout` of the check `check` as its report.
pub fn parse(check: &str, stdout: &[u8]) -> Result<Report, ReportError> {
    let fail = |path: &str, message: String| ReportError {
        check: check.to_string(),
        path: path.to_string(),
        message,
    };
    let doc: Value = serde_json::from_slice(stdout).map_err(|e| {
        fail(
            "$",
            format!("not one JSON document ({e}); a check prints {{\"items\": [...]}} and nothing else on stdout"),
        )
    })?;
    let reader = Reader { fail: &fail };
    let root = reader.object(&doc, "$", &["items"])?;
    let items = reader.array(required(root, "items", "$", &fail)?, "$.items")?;
    let mut out = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("$.items[{i}]");
        let item = reader.item(item, &path)?;
        if !seen.insert(item.id.clone()) {
            return Err(fail(
                &format!("{path}.id"),
                format!("item `{}` is reported twice", item.id),
            ));
        }
        out.push(item);
    }
    Ok(Report { items: out })
}

/// What an item's address is: `CHECK/ITEM` (`db/schema-behind`).
pub fn address(check_name: &str, item: &str) -> String {
    format!("{check_name}/{item}")
}

type Fail<'f> = dyn Fn(&str, String) -> ReportError + 'f;

fn required<'v>(
    obj: &'v serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    fail: &Fail,
) -> Result<&'v Value, ReportError> {
    obj.get(key)
        .ok_or_else(|| fail(path, format!("`{key}` is missing")))
}

/// Walks the document, naming each problem's path.
struct Reader<'f> {
    fail: &'f Fail<'f>,
}

impl Reader<'_> {
    fn object<'v>(
        &self,
        v: &'v Value,
        path: &str,
        keys: &[&str],
    ) -> Result<&'v serde_json::Map<String, Value>, ReportError> {
        let Value::Object(obj) = v else {
            return Err((self.fail)(
                path,
                format!("expected an object, found {}", kind(v)),
            ));
        };
        if let Some(k) = obj.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err((self.fail)(
                &format!("{path}.{k}"),
                format!(
                    "unknown key `{k}` (an object here takes: {})",
                    keys.join(", ")
                ),
            ));
        }
        Ok(obj)
    }

    fn array<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Vec<Value>, ReportError> {
        match v {
            Value::Array(a) => Ok(a),
            other => Err((self.fail)(
                path,
                format!("expected an array, found {}", kind(other)),
            )),
        }
    }

    fn string(&self, v: &Value, path: &str) -> Result<String, ReportError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err((self.fail)(
                path,
                format!("expected a string, found {}", kind(other)),
            )),
        }
    }

    fn id(&self, v: &Value, path: &str) -> Result<String, ReportError> {
        let id = self.string(v, path)?;
        let plain = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err((self.fail)(
                path,
                format!("{id:?} is not an id (letters, digits, '.', '_', '-'; not empty)"),
            ));
        }
        Ok(id)
    }

    fn item(&self, v: &Value, path: &str) -> Result<Item, ReportError> {
        let fail = self.fail;
        let obj = self.object(v, path, &["id", "severity", "message", "steps", "default"])?;
        let id = self.id(required(obj, "id", path, fail)?, &format!("{path}.id"))?;
        let sev_path = format!("{path}.severity");
        let severity = match self
            .string(required(obj, "severity", path, fail)?, &sev_path)?
            .as_str()
        {
            "error" => Severity::Error,
            "warning" => Severity::Warning,
            "recommendation" => Severity::Recommendation,
            other => {
                return Err(fail(
                    &sev_path,
                    format!(
                        "{other:?} is not a severity (\"error\", \"warning\" or \"recommendation\")"
                    ),
                ));
            }
        };
        let message = self.string(
            required(obj, "message", path, fail)?,
            &format!("{path}.message"),
        )?;
        let steps = match obj.get("steps") {
            None => Vec::new(),
            Some(v) => self.steps(v, &format!("{path}.steps"))?,
        };
        let default = match obj.get("default") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let dpath = format!("{path}.default");
                let d = self.id(v, &dpath)?;
                if !steps.iter().any(|s| s.id == d) {
                    return Err(fail(
                        &dpath,
                        format!("names step `{d}`, which item `{id}` does not have"),
                    ));
                }
                Some(d)
            }
        };
        let fingerprint = fingerprint(&ItemPrint {
            id: &id,
            severity,
            default: default.as_deref(),
            steps: steps.iter().map(|s| s.fingerprint.as_str()).collect(),
        });
        Ok(Item {
            id,
            severity,
            message,
            steps,
            default,
            fingerprint,
        })
    }

    fn steps(&self, v: &Value, path: &str) -> Result<Vec<Step>, ReportError> {
        let fail = self.fail;
        let list = self.array(v, path)?;
        let mut steps: Vec<Step> = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let step = self.step(s, &format!("{path}[{i}]"))?;
            if steps.iter().any(|o| o.id == step.id) {
                return Err(fail(
                    &format!("{path}[{i}].id"),
                    format!("step `{}` is listed twice", step.id),
                ));
            }
            steps.push(step);
        }
        for (i, s) in steps.iter().enumerate() {
            for (j, a) in s.after.iter().enumerate() {
                if !steps.iter().any(|o| &o.id == a) || a == &s.id {
                    return Err(fail(
                        &format!("{path}[{i}].after[{j}]"),
                        format!("names step `{a}`, which is not another step of this item"),
                    ));
                }
            }
        }
        if let Some(i) = in_cycle(&steps) {
            return Err(fail(
                &format!("{path}[{i}].after"),
                format!("step `{}` waits for itself through `after`", steps[i].id),
            ));
        }
        Ok(steps)
    }

    fn step(&self, v: &Value, path: &str) -> Result<Step, ReportError> {
        let fail = self.fail;
        let obj = self.object(
            v,
            path,
            &["id", "title", "command", "user", "after", "reboot"],
        )?;
        let id = self.id(required(obj, "id", path, fail)?, &format!("{path}.id"))?;
        let title = match obj.get("title") {
            None => id.clone(),
            Some(t) => self.string(t, &format!("{path}.title"))?,
        };
        let cpath = format!("{path}.command");
        let command = match required(obj, "command", path, fail)? {
            Value::String(s) if !s.trim().is_empty() => Command::Shell(s.clone()),
            Value::Array(a) if !a.is_empty() => {
                let mut argv = Vec::with_capacity(a.len());
                for (k, arg) in a.iter().enumerate() {
                    argv.push(self.string(arg, &format!("{cpath}[{k}]"))?);
                }
                Command::Argv(argv)
            }
            Value::String(_) | Value::Array(_) => {
                return Err(fail(&cpath, "the command is empty".to_string()));
            }
            other => {
                return Err(fail(
                    &cpath,
                    format!(
                        "expected a string (run with sh -c) or an array (program and arguments), found {}",
                        kind(other)
                    ),
                ));
            }
        };
        let user = match obj.get("user") {
            None | Some(Value::Null) => None,
            Some(u) => Some(self.id(u, &format!("{path}.user"))?),
        };
        let mut after = Vec::new();
        if let Some(a) = obj.get("after") {
            let apath = format!("{path}.after");
            for (k, x) in self.array(a, &apath)?.iter().enumerate() {
                after.push(self.id(x, &format!("{apath}[{k}]"))?);
            }
        }
        let reboot = match obj.get("reboot") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(fail(
                    &format!("{path}.reboot"),
                    format!("expected true or false, found {}", kind(other)),
                ));
            }
        };
        let fingerprint = fingerprint(&StepPrint {
            id: &id,
            command: &command,
            user: user.as_deref(),
            after: &after,
            reboot,
        });
        Ok(Step {
            id,
            title,
            command,
            user,
            after,
            reboot,
            fingerprint,
        })
    }
}

/// A step that waits for itself through `after` (its index), if any.
fn in_cycle(steps: &[Step]) -> Option<usize> {
    let index: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // Kahn's order: what is left once nothing more is ready is in a cycle.
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; steps.len()];
    while let Some(i) = ready.pop() {
        done[i] = true;
        for (j, s) in steps.iter().enumerate() {
            let waits = s
                .after
                .iter()
                .filter(|a| index.get(a.as_str()) == Some(&i))
                .count();
            if waits > 0 && !done[j] {
                waiting[j] -= waits;
                if waiting[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    done.iter().position(|d| !d)
}

/// What a step's fingerprint covers (a fixed, sorted form).
#[derive(Serialize)]
struct StepPrint<'a> {
    id: &'a str,
    command: &'a Command,
    user: Option<&'a str>,
    after: &'a [String],
    reboot: bool,
}

/// What an item's fingerprint covers.
#[derive(Serialize)]
struct ItemPrint<'a> {
    id: &'a str,
    severity: Severity,
    default: Option<&'a str>,
    steps: Vec<&'a str>,
}

fn fingerprint<T: Serialize>(what: &T) -> String {
    // Serializing these plain structs cannot fail; an empty text would
    // still give a fingerprint that changes with nothing, so say so.
    let text = serde_json::to_vec(what).unwrap_or_default();
    format!("{FINGERPRINT}{}", blake3::hash(&text).to_hex())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"items": [
      {"id": "schema-behind", "severity": "error", "message": "db at 3, config wants 4",
       "steps": [{"id": "backup", "title": "back up", "command": ["cp", "db", "db.bak"]},
                 {"id": "migrate", "title": "migrate", "command": "sqlite3 db < 4.sql",
                  "user": "app", "after": ["backup"]},
                 {"id": "restore", "title": "dump and restore", "command": "x", "reboot": true}],
       "default": "migrate"},
      {"id": "vacuum", "severity": "recommendation", "message": "vacuum it", "steps": []}
    ]}"#;

    fn err(doc: &str) -> ReportError {
        parse("check.db", doc.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_good_report_reads_into_items_and_steps() {
        let r = parse("check.db", GOOD.as_bytes()).unwrap();
        assert_eq!(r.items.len(), 2);
        let item = &r.items[0];
        assert_eq!(item.severity, Severity::Error);
        assert_eq!(item.default.as_deref(), Some("migrate"));
        assert_eq!(item.steps[1].user.as_deref(), Some("app"));
        assert_eq!(item.steps[1].after, ["backup"]);
        assert!(item.steps[2].reboot);
        assert_eq!(
            item.steps[0].command,
            Command::Argv(vec!["cp".into(), "db".into(), "db.bak".into()])
        );
        assert!(item.fingerprint.starts_with(FINGERPRINT));
        assert_eq!(address("db", &item.id), "db/schema-behind");
        assert!(
            parse("check.db", br#"{"items": []}"#)
                .unwrap()
                .items
                .is_empty()
        );
    }

    #[test]
    fn every_problem_names_the_check_and_its_json_path() {
        let cases = [
            ("not json", "$", "not one JSON document"),
            (
                r#"{"items": []} {"items": []}"#,
                "$",
                "not one JSON document",
            ),
            (r#"[]"#, "$", "expected an object, found an array"),
            (r#"{}"#, "$", "`items` is missing"),
            (
                r#"{"items": [], "extra": 1}"#,
                "$.extra",
                "unknown key `extra`",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "fatal", "message": "m"}]}"#,
                "$.items[0].severity",
                "not a severity",
            ),
            (
                r#"{"items": [{"id": "a b", "severity": "error", "message": "m"}]}"#,
                "$.items[0].id",
                "is not an id",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error"}]}"#,
                "$.items[0]",
                "`message` is missing",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m"}, {"id": "a", "severity": "warning", "message": "m"}]}"#,
                "$.items[1].id",
                "reported twice",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": "x", "after": ["t"]}]}]}"#,
                "$.items[0].steps[0].after[0]",
                "names step `t`",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": "x", "after": ["t"]}, {"id": "t", "command": "y", "after": ["s"]}]}]}"#,
                "$.items[0].steps[0].after",
                "waits for itself",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": []}]}]}"#,
                "$.items[0].steps[0].command",
                "the command is empty",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": ["x", 1]}]}]}"#,
                "$.items[0].steps[0].command[1]",
                "expected a string",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": "x", "reboot": "yes"}]}]}"#,
                "$.items[0].steps[0].reboot",
                "expected true or false",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": "x"}], "default": "t"}]}"#,
                "$.items[0].default",
                "names step `t`",
            ),
            (
                r#"{"items": [{"id": "a", "severity": "error", "message": "m", "steps": [{"id": "s", "command": "x", "after": ["s"]}]}]}"#,
                "$.items[0].steps[0].after[0]",
                "not another step",
            ),
        ];
        for (doc, path, says) in cases {
            let e = err(doc);
            assert_eq!(e.path, path, "{doc}: {e}");
            assert!(e.message.contains(says), "{doc}: {e}");
            assert!(
                e.to_string().starts_with("check.db printed a report"),
                "{e}"
            );
        }
    }

    #[test]
    fn fingerprints_change_with_what_a_choice_depends_on_and_only_that() {
        let base = parse("c", GOOD.as_bytes()).unwrap();
        let reworded = GOOD
            .replace("db at 3, config wants 4", "the schema is behind")
            .replace("\"back up\"", "\"copy first\"");
        let reworded = parse("c", reworded.as_bytes()).unwrap();
        assert_eq!(base.items[0].fingerprint, reworded.items[0].fingerprint);
        assert_eq!(
            base.items[0].steps[0].fingerprint,
            reworded.items[0].steps[0].fingerprint
        );
        let changed = parse(
            "c",
            GOOD.replace("sqlite3 db < 4.sql", "sqlite3 db < 5.sql")
                .as_bytes(),
        )
        .unwrap();
        assert_ne!(
            base.items[0].steps[1].fingerprint,
            changed.items[0].steps[1].fingerprint
        );
        assert_eq!(
            base.items[0].steps[0].fingerprint,
            changed.items[0].steps[0].fingerprint
        );
        assert_ne!(base.items[0].fingerprint, changed.items[0].fingerprint);
        let user = parse(
            "c",
            GOOD.replace("\"user\": \"app\"", "\"user\": \"root\"")
                .as_bytes(),
        )
        .unwrap();
        assert_ne!(
            base.items[0].steps[1].fingerprint,
            user.items[0].steps[1].fingerprint
        );
    }
}
