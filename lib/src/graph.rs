//! The resource graph: explicit edges (`after`, `before`, `notify`),
//! references, and autoedges (a path under a managed dir depends on the dir;
//! a symlink depends on the resource that creates its target). Cycles are
//! reported with the resources that form them.

use std::collections::HashMap;
use std::path::PathBuf;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::manifest::{Manifest, Spec};

/// Why an edge exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// `after = [...]` on the dependent.
    After,
    /// `before = [...]` on the dependency.
    Before,
    /// `notify = [...]`: also a refresh edge.
    Notify,
    /// A `${kind.name}` reference.
    Reference,
    /// A path under a managed directory (autoedge).
    ParentDir,
    /// A symlink to a managed path (autoedge).
    SymlinkTarget,
}

impl EdgeKind {
    /// Whether stead added the edge by itself.
    pub fn is_auto(self) -> bool {
        matches!(self, EdgeKind::ParentDir | EdgeKind::SymlinkTarget)
    }
}

/// `from` must finish before `to` starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Edge {
    /// The dependency.
    pub from: String,
    /// The dependent.
    pub to: String,
    /// Why.
    pub kind: EdgeKind,
}

/// A dependency cycle, in order (the first id again closes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The ids around the cycle, first repeated at the end.
    pub ids: Vec<String>,
}

/// The DAG of a manifest's resources.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Resource ids, in manifest order (index = node).
    pub ids: Vec<String>,
    /// Every edge, deduplicated per (from, to, kind).
    pub edges: Vec<Edge>,
    /// For each node, the nodes it waits for.
    pub dependencies: Vec<Vec<usize>>,
    /// For each node, the nodes that wait for it.
    pub dependents: Vec<Vec<usize>>,
    /// A topological order (dependencies first), stable by manifest order.
    pub order: Vec<usize>,
}

impl Graph {
    /// Builds the graph of `manifest`, or the cycle that prevents it.
    pub fn build(manifest: &Manifest) -> Result<Graph, Cycle> {
        let ids: Vec<String> = manifest.resources.iter().map(|r| r.id.clone()).collect();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut edges: Vec<Edge> = Vec::new();
        let mut add = |from: &str, to: &str, kind: EdgeKind| {
            if from != to && index.contains_key(from) && index.contains_key(to) {
                let e = Edge {
                    from: from.to_string(),
                    to: to.to_string(),
                    kind,
                };
                if !edges.contains(&e) {
                    edges.push(e);
                }
            }
        };
        let by_path: HashMap<PathBuf, &str> = manifest
            .resources
            .iter()
            .filter_map(|r| r.spec.path().map(|p| (p.to_path_buf(), r.id.as_str())))
            .collect();
        let dirs: HashMap<PathBuf, &str> = manifest
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Dir(d) => Some((d.path.clone(), r.id.as_str())),
                _ => None,
            })
            .collect();
        for r in &manifest.resources {
            for dep in &r.after {
                add(dep, &r.id, EdgeKind::After);
            }
            for dependent in &r.before {
                add(&r.id, dependent, EdgeKind::Before);
            }
            for target in &r.notify {
                add(&r.id, target, EdgeKind::Notify);
            }
            for referenced in &r.references {
                add(referenced, &r.id, EdgeKind::Reference);
            }
            if let Some(path) = r.spec.path() {
                for ancestor in path.ancestors().skip(1) {
                    if let Some(dir) = dirs.get(ancestor) {
                        add(dir, &r.id, EdgeKind::ParentDir);
                        break;
                    }
                }
            }
            if let Spec::Symlink(s) = &r.spec {
                if let Some(creator) = by_path.get(&s.target) {
                    add(creator, &r.id, EdgeKind::SymlinkTarget);
                } else {
                    for ancestor in s.target.ancestors().skip(1) {
                        if let Some(dir) = dirs.get(ancestor) {
                            add(dir, &r.id, EdgeKind::SymlinkTarget);
                            break;
                        }
                    }
                }
            }
        }

        let n = ids.len();
        let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(n, edges.len());
        let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
        let mut dependencies = vec![Vec::new(); n];
        let mut dependents = vec![Vec::new(); n];
        for e in &edges {
            let (f, t) = (index[e.from.as_str()], index[e.to.as_str()]);
            if !dependencies[t].contains(&f) {
                dependencies[t].push(f);
                dependents[f].push(t);
                g.add_edge(nodes[f], nodes[t], ());
            }
        }
        if toposort(&g, None).is_err() {
            return Err(find_cycle(&g, &ids));
        }
        // Kahn's algorithm taking the lowest manifest index first: a stable order.
        let mut indegree: Vec<usize> = dependencies.iter().map(Vec::len).collect();
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        Ok(Graph {
            ids,
            edges,
            dependencies,
            dependents,
            order,
        })
    }

    /// The node index of an id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }

    /// Graphviz text; autoedges dashed and labelled.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph stead {\n  rankdir=LR;\n");
        for id in &self.ids {
            out.push_str(&format!("  \"{id}\";\n"));
        }
        for e in &self.edges {
            let style = match e.kind {
                EdgeKind::ParentDir | EdgeKind::SymlinkTarget => ", style=dashed",
                EdgeKind::Notify => ", color=blue",
                _ => "",
            };
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"{style}];\n",
                e.from,
                e.to,
                serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
        out.push_str("}\n");
        out
    }
}

fn find_cycle(g: &DiGraph<usize, ()>, ids: &[String]) -> Cycle {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Walk inside the component from its first node until we return.
        let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc.iter().min_by_key(|n| g[**n]).unwrap_or(&scc[0]);
        let mut path = vec![start];
        let mut seen = std::collections::HashSet::new();
        let mut current = start;
        loop {
            seen.insert(current);
            let mut next_nodes: Vec<NodeIndex> = g
                .neighbors(current)
                .filter(|n| members.contains(n))
                .collect();
            next_nodes.sort_by_key(|n| g[*n]);
            if next_nodes.contains(&start) {
                path.push(start);
                break;
            }
            match next_nodes.into_iter().find(|n| !seen.contains(n)) {
                Some(n) => {
                    path.push(n);
                    current = n;
                }
                None => {
                    path.push(start);
                    break;
                }
            }
        }
        return Cycle {
            ids: path.into_iter().map(|n| ids[g[n]].clone()).collect(),
        };
    }
    Cycle { ids: Vec::new() }
}
