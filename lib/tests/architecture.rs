//! The rules of docs/architecture.md that the compiler does not enforce,
//! checked on the source: no module cycles in `lib/` or `cli/`, and at most
//! one process-wide mutable static in the library.
//!
//! A module is a file (or a `mod.rs` folder) under `src/`; it depends on
//! another when its code (not its comments or `#[cfg(test)]` part) names
//! `crate::other` or `super::other`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`sync::git`) -> its source, comments and tests removed.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            // The crate root, and test-only files (`#[cfg(test)] mod tests;`).
            if parts == ["lib"] || parts == ["main"] || parts.last().is_some_and(|p| p == "tests") {
                continue;
            }
            out.insert(parts.join("::"), code_of(&path));
        }
    }
    out
}

/// The file's code: without `//` comments and from `#[cfg(test)]` on.
fn code_of(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths named after `prefix` (`crate::`, `super::`), as `a::b::c`.
fn named_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        found.push(path.trim_end_matches(':').to_string());
    }
    found
}

/// Module -> the other modules it depends on.
fn dependencies(mods: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, code) in mods {
        let parent = name.rsplit_once("::").map(|(p, _)| p);
        let mut targets: Vec<String> = named_after(code, "crate::");
        targets.extend(
            named_after(code, "super::")
                .into_iter()
                .map(|p| match parent {
                    Some(parent) => format!("{parent}::{p}"),
                    None => p,
                }),
        );
        for target in targets {
            let parts: Vec<&str> = target.split("::").collect();
            // The longest module the path names.
            let module = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|m| mods.contains_key(m));
            let Some(module) = module else { continue };
            let related = module == *name
                || name.starts_with(&format!("{module}::"))
                || module.starts_with(&format!("{name}::"));
            if !related {
                let (key, _) = mods.get_key_value(&module).unwrap();
                edges.entry(name.as_str()).or_default().insert(key.as_str());
            }
        }
    }
    edges
}

/// A cycle, if the graph has one.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|n| *n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for &node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

/// The same graph with every module folded into its top-level module
/// (`sync::git` -> `sync`).
fn top_level<'a>(
    edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let top = |m: &'a str| m.split("::").next().unwrap_or(m);
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, tos) in edges {
        for to in tos {
            if top(from) != top(to) {
                out.entry(top(from)).or_default().insert(top(to));
            }
        }
    }
    out
}

#[test]
fn no_module_cycles_in_lib_or_cli() {
    for krate in ["lib", "cli"] {
        let mods = modules(&src(krate));
        assert!(mods.len() > 5, "{krate}: too few modules found: {mods:?}");
        let edges = dependencies(&mods);
        for (what, graph) in [
            ("module", edges.clone()),
            ("top-level module", top_level(&edges)),
        ] {
            assert!(
                find_cycle(&graph).is_none(),
                "{krate}/src has a {what} cycle: {}",
                find_cycle(&graph).unwrap_or_default().join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mods: BTreeMap<String, String> = [
        ("a".to_string(), "use crate::b::X;".to_string()),
        ("b".to_string(), "fn f() { super::c::g() }".to_string()),
        ("c".to_string(), "use crate::a;".to_string()),
        ("d".to_string(), "use crate::a;".to_string()),
    ]
    .into();
    let edges = dependencies(&mods);
    assert_eq!(find_cycle(&edges), Some(vec!["a", "b", "c", "a"]));
}

/// A `static` whose value can change: `static mut`, or a type with
/// interior mutability. An immutable table (`static KINDS: &[..]`) is not.
fn is_mutable_static(line: &str) -> bool {
    let line = line.strip_prefix("pub ").unwrap_or(line);
    let Some(rest) = line.strip_prefix("static ") else {
        return false;
    };
    let ty = rest.split('=').next().unwrap_or(rest);
    rest.starts_with("mut ")
        || ["Mutex", "RwLock", "Atomic", "Cell", "OnceLock", "LazyLock"]
            .iter()
            .any(|m| ty.contains(m))
}

#[test]
fn mutable_statics_are_told_from_immutable_tables() {
    assert!(is_mutable_static(
        "static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());"
    ));
    assert!(is_mutable_static(
        "pub static STOP: AtomicBool = AtomicBool::new(false);"
    ));
    assert!(is_mutable_static("static mut N: u32 = 0;"));
    assert!(!is_mutable_static(
        "static KINDS: &[&dyn ResourceKind] = &["
    ));
    assert!(!is_mutable_static("let x = 1;"));
}

#[test]
fn the_library_keeps_at_most_one_process_wide_mutable_static() {
    let statics: Vec<String> = modules(&src("lib"))
        .iter()
        .flat_map(|(name, code)| {
            code.lines()
                .map(str::trim_start)
                .filter(|l| is_mutable_static(l))
                .map(move |l| format!("{name}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        statics.len() <= 1,
        "the library may keep one process-wide static (the last-resort lock cleanup): {statics:#?}"
    );
}

#[test]
fn unsafe_code_is_allowed_in_one_place_only() {
    // The workspace denies unsafe code; the user switch of a migration
    // step between fork and exec (`pre_exec`) is the one audited exception.
    let mut allowed = Vec::new();
    for krate in ["lib", "cli", "testkit", "bench"] {
        for (name, code) in modules(&src(krate)) {
            let count = code.matches("allow(unsafe_code)").count();
            if count > 0 {
                allowed.push(format!("{krate}/{name}: {count}"));
            }
        }
    }
    assert_eq!(
        allowed,
        vec!["lib/resource::exec: 1".to_string()],
        "unsafe code is allowed only for the user switch in resource::exec"
    );
}
