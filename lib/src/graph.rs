//! The resource graph: explicit edges (`after`, `before`, `notify`),
//! references, and autoedges (a path under a managed dir depends on the dir;
//! a symlink depends on the resource that creates its target). Cycles are
//! reported with the resources that form them.
//!
//! The manifest does not build its graph: [`load`] and [`parse`] read a
//! manifest and then check its graph, reporting a cycle with the manifest's
//! other problems.

use std::ffi::OsStr;
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::manifest::compiled::PackedEdge;
use crate::manifest::{LoadError, LoadOptions, Manifest, ManifestError, Parsed, Problem};
use crate::resource::registry;

/// The manifest's maps of ids and paths hash with foldhash, not SipHash:
/// they are looked up a few times per resource and edge, and the keys are
/// the user's own manifest, not input from someone else.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Why an edge exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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

    /// Its number in a compiled manifest ([`PackedEdge`]): fixed, since
    /// files keep it (another numbering needs another compiled format).
    fn number(self) -> u8 {
        match self {
            EdgeKind::After => 0,
            EdgeKind::Before => 1,
            EdgeKind::Notify => 2,
            EdgeKind::Reference => 3,
            EdgeKind::ParentDir => 4,
            EdgeKind::SymlinkTarget => 5,
        }
    }

    fn of_number(number: u8) -> Option<EdgeKind> {
        Some(match number {
            0 => EdgeKind::After,
            1 => EdgeKind::Before,
            2 => EdgeKind::Notify,
            3 => EdgeKind::Reference,
            4 => EdgeKind::ParentDir,
            5 => EdgeKind::SymlinkTarget,
            _ => return None,
        })
    }
}

/// `from` must finish before `to` starts. Both are node indices (see
/// [`Graph::ids`] and [`Graph::ends`]): a graph of 100 000 resources held
/// two copies of an id per edge otherwise. 32-bit, as every node index in
/// the graph: a manifest of 2³² resources would not fit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The dependency's node.
    pub from: u32,
    /// The dependent's node.
    pub to: u32,
    /// Why.
    pub kind: EdgeKind,
}

/// Each node's neighbours, all in one vector (compressed rows): node `i`'s
/// are `nodes[start[i]..start[i + 1]]`. A vector per node cost 24 bytes
/// for none and 32 for one, twice per node: 5 MB at 100 000 resources,
/// held through every plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adjacency {
    start: Vec<u32>,
    nodes: Vec<u32>,
}

impl Adjacency {
    /// The rows of `n` nodes from `(row, neighbour)` pairs, each row in the
    /// pairs' order.
    fn from_pairs(n: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> Adjacency {
        let mut start = vec![0u32; n + 1];
        for (row, _) in pairs.clone() {
            start[row as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next: Vec<u32> = start[..n].to_vec();
        let mut nodes = vec![0u32; start[n] as usize];
        for (row, neighbour) in pairs {
            let at = &mut next[row as usize];
            nodes[*at as usize] = neighbour;
            *at += 1;
        }
        Adjacency { start, nodes }
    }

    /// How many nodes it has rows for.
    pub fn len(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<usize> for Adjacency {
    type Output = [u32];

    /// Node `node`'s neighbours.
    fn index(&self, node: usize) -> &[u32] {
        &self.nodes[self.start[node] as usize..self.start[node + 1] as usize]
    }
}

/// A dependency cycle, in order (the first id again closes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The ids around the cycle, first repeated at the end.
    pub ids: Vec<String>,
}

/// The DAG of a manifest's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Resource ids, in manifest order (index = node).
    pub ids: Vec<Box<str>>,
    /// Every edge, deduplicated per (from, to, kind).
    pub edges: Vec<Edge>,
    /// For each node, the nodes it waits for.
    pub dependencies: Adjacency,
    /// For each node, the nodes that wait for it.
    pub dependents: Adjacency,
    /// A topological order (dependencies first), stable by manifest order.
    pub order: Vec<usize>,
    /// The nodes sorted by id (for [`Graph::index_of`]): a map from id
    /// to node would hold one more copy of every id.
    by_id: Vec<u32>,
}

/// Loads `<config_dir>/stead.toml` and builds its graph: every problem,
/// a dependency cycle included, is reported together.
pub fn load(config_dir: &Path, options: &LoadOptions) -> Result<(Manifest, Graph), LoadError> {
    Ok(check(Manifest::read(config_dir, options)?)?)
}

/// Parses manifest text (as if read from `path` in `config_dir`) and builds
/// its graph, like [`load`].
pub fn parse(
    text: &str,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Result<(Manifest, Graph), ManifestError> {
    check(Manifest::parse_parts(text, path, config_dir, options)?)
}

/// Builds the graph of a parsed manifest; a cycle becomes one more problem.
/// The graph skips edges to resources that failed to load, so a cycle among
/// the rest is reported in the same run as the other problems.
pub fn check(mut parsed: Parsed) -> Result<(Manifest, Graph), ManifestError> {
    let graph = match Graph::build(&parsed.manifest) {
        Ok(graph) => Some(graph),
        Err(cycle) => {
            let first = cycle
                .ids
                .iter()
                .find_map(|id| parsed.manifest.resources.iter().find(|r| &r.id == id));
            if let Some(r) = first {
                parsed.problems.push(
                    Problem::at(r.span.clone(), format!("dependency cycle: {}", cycle.ids.join(" → ")))
                        .label("part of the cycle")
                        .help("remove one of its edges: after, before, notify, a reference or an autoedge"),
                );
            }
            None
        }
    };
    let text = std::sync::Arc::clone(&parsed.text);
    let manifest = parsed.finish()?;
    match graph {
        Some(graph) => Ok((manifest, graph)),
        // A cycle always names a loaded resource, so `finish` failed above.
        None => Err(ManifestError {
            path: manifest.path,
            text,
            problems: vec![Problem {
                message: "dependency cycle".into(),
                span: None,
                label: String::new(),
                help: None,
            }],
        }),
    }
}

impl Graph {
    /// Builds the graph of `manifest`, or the cycle that prevents it.
    pub fn build(manifest: &Manifest) -> Result<Graph, Cycle> {
        let ids = ids_of(manifest);
        let edges = collect_edges(manifest, &ids);
        Graph::assemble(ids, edges)
    }

    /// The graph of `manifest` from the edges [`Graph::build`] found for
    /// this same manifest before ([`Graph::packed_edges`]; its compiled
    /// form keeps them, so that a repair does not look for them again:
    /// about half of reading it). `None` when an edge names a node the
    /// manifest does not have or an unknown kind, or the edges make a cycle.
    pub fn from_packed(manifest: &Manifest, packed: Vec<PackedEdge>) -> Option<Graph> {
        let ids = ids_of(manifest);
        let n = ids.len();
        let fits = |node: u32| (node as usize) < n;
        let edges = packed
            .into_iter()
            .map(|(from, to, kind)| {
                (fits(from) && fits(to) && from != to).then_some(())?;
                Some(Edge {
                    from,
                    to,
                    kind: EdgeKind::of_number(kind)?,
                })
            })
            .collect::<Option<Vec<Edge>>>()?;
        Graph::assemble(ids, edges).ok()
    }

    /// Its edges as a compiled manifest keeps them.
    pub fn packed_edges(&self) -> Vec<PackedEdge> {
        self.edges
            .iter()
            .map(|e| (e.from, e.to, e.kind.number()))
            .collect()
    }

    /// The graph of nodes `ids` and `edges` (each between two of them).
    fn assemble(ids: Vec<Box<str>>, edges: Vec<Edge>) -> Result<Graph, Cycle> {
        let n = ids.len();
        // One dependency per (from, to), whatever the edges' kinds, in the
        // order the edges were found.
        let mut seen: HashSet<(u32, u32)> = HashSet::default();
        let pairs: Vec<(u32, u32)> = edges
            .iter()
            .map(|e| (e.from, e.to))
            .filter(|&pair| seen.insert(pair))
            .collect();
        drop(seen);
        let dependencies = Adjacency::from_pairs(n, pairs.iter().map(|&(f, t)| (t, f)));
        let dependents = Adjacency::from_pairs(n, pairs.iter().copied());
        let order = topological_order(&dependencies, &dependents);
        // Kahn leaves out exactly the nodes on or behind a cycle (no second
        // topological sort needed to tell).
        if order.len() != n {
            return Err(name_cycle(&pairs, &ids));
        }
        drop(pairs);
        let mut by_id: Vec<u32> = (0..n as u32).collect();
        by_id.sort_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]));
        Ok(Graph {
            ids,
            edges,
            dependencies,
            dependents,
            order,
            by_id,
        })
    }

    /// `ids` and every resource that waits for one of them, transitively
    /// (ids not in the graph are left out).
    pub fn with_dependents(
        &self,
        ids: &std::collections::HashSet<String>,
    ) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        let mut stack: Vec<usize> = ids.iter().filter_map(|id| self.index_of(id)).collect();
        while let Some(n) = stack.pop() {
            if out.insert(self.ids[n].to_string()) {
                stack.extend(self.dependents[n].iter().map(|&d| d as usize));
            }
        }
        out
    }

    /// The node index of an id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id
            .binary_search_by(|&i| (*self.ids[i as usize]).cmp(id))
            .ok()
            .map(|at| self.by_id[at] as usize)
    }

    /// The ids of an edge's dependency and dependent.
    pub fn ends(&self, edge: &Edge) -> (&str, &str) {
        (&self.ids[edge.from as usize], &self.ids[edge.to as usize])
    }

    /// Graphviz text; autoedges dashed and labelled.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph stead {\n  rankdir=LR;\n");
        for id in &self.ids {
            out.push_str(&format!("  \"{id}\";\n"));
        }
        for e in &self.edges {
            let (from, to) = self.ends(e);
            let style = match e.kind {
                EdgeKind::ParentDir | EdgeKind::SymlinkTarget => ", style=dashed",
                EdgeKind::Notify => ", color=blue",
                _ => "",
            };
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"{style}];\n",
                from,
                to,
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

/// Each resource's id, in manifest order (index = node).
fn ids_of(manifest: &Manifest) -> Vec<Box<str>> {
    manifest
        .resources
        .iter()
        .map(|r| Box::from(r.id.as_str()))
        .collect()
}

/// Every edge, deduplicated per (from, to, kind).
fn collect_edges(manifest: &Manifest, ids: &[Box<str>]) -> Vec<Edge> {
    let index: HashMap<&str, u32> = ids.iter().zip(0u32..).map(|(id, i)| (&**id, i)).collect();
    let mut edges: Vec<Edge> = Vec::new();
    // (from, to, kind) already in `edges`: deduplication in O(1), not a scan.
    let mut seen: HashSet<(u32, u32, EdgeKind)> = HashSet::default();
    let mut add = |from: &str, to: &str, kind: EdgeKind| {
        if from == to {
            return;
        }
        if let (Some(&f), Some(&t)) = (index.get(from), index.get(to))
            && seen.insert((f, t, kind))
        {
            edges.push(Edge {
                from: f,
                to: t,
                kind,
            });
        }
    };
    let auto = Autoedges::new(manifest);
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
        auto.of(r, &mut add);
    }
    // Grown by doubling: up to half of it was room never used.
    edges.shrink_to_fit();
    edges
}

/// Edges stead adds by itself, asked of each kind through the registry.
struct Autoedges<'m> {
    /// Who manages each path. Keyed by the path's bytes: paths here are
    /// normalized, and hashing a `Path` walks its components, which shows in
    /// large manifests.
    by_path: HashMap<&'m OsStr, &'m str>,
    /// Resources whose kind holds paths (dirs): what lies under them depends on them.
    dirs: HashMap<&'m OsStr, &'m str>,
}

impl<'m> Autoedges<'m> {
    fn new(manifest: &'m Manifest) -> Autoedges<'m> {
        let with_path = |r: &'m crate::manifest::Resource| {
            r.spec.path().map(|p| (p.as_os_str(), r.id.as_str()))
        };
        Autoedges {
            by_path: manifest.resources.iter().filter_map(with_path).collect(),
            dirs: manifest
                .resources
                .iter()
                .filter(|r| registry::get(r.kind()).holds_paths())
                .filter_map(with_path)
                .collect(),
        }
    }

    /// The nearest managed dir above `path`.
    fn holder(&self, path: &Path) -> Option<&'m str> {
        path.ancestors()
            .skip(1)
            .find_map(|a| self.dirs.get(a.as_os_str()).copied())
    }

    /// A path under a managed dir depends on it; a path the kind needs (a
    /// symlink's target) depends on what creates it, else on the managed dir
    /// that holds it.
    fn of(&self, r: &crate::manifest::Resource, add: &mut impl FnMut(&str, &str, EdgeKind)) {
        if let Some(dir) = r.spec.path().and_then(|p| self.holder(p)) {
            add(dir, &r.id, EdgeKind::ParentDir);
        }
        for needed in registry::get(r.kind()).needs_paths(&r.spec) {
            let creator = self.by_path.get(needed.as_os_str()).copied();
            if let Some(from) = creator.or_else(|| self.holder(needed)) {
                add(from, &r.id, EdgeKind::SymlinkTarget);
            }
        }
    }
}

/// Kahn's algorithm taking the lowest manifest index first: a stable order.
fn topological_order(dependencies: &Adjacency, dependents: &Adjacency) -> Vec<usize> {
    let n = dependencies.len();
    let mut indegree: Vec<usize> = (0..n).map(|i| dependencies[i].len()).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            let d = d as usize;
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// Only when there is a cycle is the petgraph form needed, to name it; its
/// edges are the deduplicated dependencies in the order they were found.
fn name_cycle(pairs: &[(u32, u32)], ids: &[Box<str>]) -> Cycle {
    let n = ids.len();
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(n, pairs.len());
    let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for &(f, t) in pairs {
        g.add_edge(nodes[f as usize], nodes[t as usize], ());
    }
    find_cycle(&g, ids)
}

fn find_cycle(g: &DiGraph<usize, ()>, ids: &[Box<str>]) -> Cycle {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Walk inside the component from its first node until we return.
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc.iter().min_by_key(|n| g[**n]).unwrap_or(&scc[0]);
        let mut path = vec![start];
        let mut seen = HashSet::default();
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
            ids: path.into_iter().map(|n| ids[g[n]].to_string()).collect(),
        };
    }
    Cycle { ids: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::tests::Fixture;

    #[test]
    fn adjacency_rows_keep_the_pairs_order_and_empty_rows_are_empty() {
        let pairs = [(2, 0), (0, 3), (2, 1), (0, 1)];
        let adj = Adjacency::from_pairs(4, pairs.iter().copied());
        assert_eq!(adj.len(), 4);
        assert_eq!(adj[0], [3, 1]);
        assert!(adj[1].is_empty());
        assert_eq!(adj[2], [0, 1]);
        assert!(adj[3].is_empty());
        let none = Adjacency::from_pairs(0, std::iter::empty());
        assert!(none.is_empty());
    }

    fn edges_of(g: &Graph) -> Vec<(&str, &str, EdgeKind)> {
        g.edges
            .iter()
            .map(|e| {
                let (from, to) = g.ends(e);
                (from, to, e.kind)
            })
            .collect()
    }

    fn build(fx: &Fixture, text: &str) -> Graph {
        Graph::build(&fx.manifest(text)).unwrap()
    }

    #[test]
    fn a_graph_from_its_packed_edges_is_the_built_graph_and_edges_that_do_not_fit_are_none() {
        let fx = Fixture::new();
        let m = fx.manifest(
            "[dir.d]\npath = \"~/d\"\n\n[file.a]\npath = \"~/d/a\"\ncontent = \"x\"\nnotify = [\"exec.e\"]\n\n\
             [exec.e]\ncommand = \"true\"\nrefresh_only = true\n",
        );
        let built = Graph::build(&m).unwrap();
        assert_eq!(built.edges.len(), 2, "{:?}", edges_of(&built));
        assert_eq!(
            Graph::from_packed(&m, built.packed_edges()),
            Some(built.clone())
        );
        for bad in [
            vec![(0, 3, 0)],
            vec![(3, 0, 0)],
            vec![(1, 1, 0)],
            vec![(0, 1, 6)],
            vec![(0, 1, 0), (1, 2, 0), (2, 0, 0)],
        ] {
            assert_eq!(Graph::from_packed(&m, bad.clone()), None, "{bad:?}");
        }
    }

    /// Every edge's dependency comes before its dependent in `order`.
    fn assert_order_respects_edges(g: &Graph) {
        let mut pos = vec![usize::MAX; g.ids.len()];
        for (p, &i) in g.order.iter().enumerate() {
            pos[i] = p;
        }
        assert!(pos.iter().all(|&p| p != usize::MAX), "order misses nodes");
        assert_eq!(g.order.len(), g.ids.len());
        for e in &g.edges {
            let (from, to) = g.ends(e);
            // Through the ids, so that index_of is checked too.
            let (f, t) = (g.index_of(from).unwrap(), g.index_of(to).unwrap());
            assert_eq!((f, t), (e.from as usize, e.to as usize));
            assert!(pos[f] < pos[t], "{from} must come before {to}");
        }
    }

    #[test]
    fn a_path_under_a_managed_dir_depends_on_the_nearest_one() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[file.f]\npath = \"~/d/sub/x/f\"\ncontent = \"\"\n\
             [dir.sub]\npath = \"~/d/sub\"\n[dir.d]\npath = \"~/d\"\n\
             [file.other]\npath = \"~/dd/f\"\ncontent = \"\"\n",
        );
        assert_eq!(
            edges_of(&g),
            [
                ("dir.sub", "file.f", EdgeKind::ParentDir),
                ("dir.d", "dir.sub", EdgeKind::ParentDir),
            ]
        );
        assert!(g.edges.iter().all(|e| e.kind.is_auto()));
        let (f, sub, d) = (
            g.index_of("file.f").unwrap(),
            g.index_of("dir.sub").unwrap(),
            g.index_of("dir.d").unwrap(),
        );
        assert_eq!(g.dependencies[f], [sub as u32]);
        assert_eq!(g.dependents[d], [sub as u32]);
        // Declared first, but run after the dirs that hold it.
        let ids: Vec<&str> = g.order.iter().map(|&i| &*g.ids[i]).collect();
        assert_eq!(ids, ["dir.d", "dir.sub", "file.f", "file.other"]);
    }

    #[test]
    fn a_symlink_depends_on_what_creates_its_target() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[symlink.to_file]\npath = \"~/l1\"\ntarget = \"~/real\"\n\
             [symlink.into_dir]\npath = \"~/l2\"\ntarget = \"~/d/inside/x\"\n\
             [symlink.repo]\npath = \"~/l3\"\ntarget = \"nvim\"\n\
             [file.real]\npath = \"~/real\"\ncontent = \"\"\n\
             [dir.d]\npath = \"~/d\"\n",
        );
        assert_eq!(
            edges_of(&g),
            [
                ("file.real", "symlink.to_file", EdgeKind::SymlinkTarget),
                ("dir.d", "symlink.into_dir", EdgeKind::SymlinkTarget),
            ]
        );
        assert!(EdgeKind::SymlinkTarget.is_auto());
        assert_order_respects_edges(&g);
    }

    #[test]
    fn references_make_edges_from_the_referenced_resource() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[file.note]\npath = \"~/note\"\ncontent = \"see ${file.rc} and ${dir.d}\"\n\
             [file.rc]\npath = \"~/rc\"\ncontent = \"\"\n[dir.d]\npath = \"@OUT@/d\"\n\
             [exec.e]\ncommand = [\"cat\", \"${file.rc}\"]\n",
        );
        let mut edges = edges_of(&g);
        edges.sort_by_key(|e| (e.0, e.1));
        assert_eq!(
            edges,
            [
                ("dir.d", "file.note", EdgeKind::Reference),
                ("file.rc", "exec.e", EdgeKind::Reference),
                ("file.rc", "file.note", EdgeKind::Reference),
            ]
        );
        assert!(!EdgeKind::Reference.is_auto());
        assert_order_respects_edges(&g);
    }

    #[test]
    fn explicit_edges_point_from_dependency_to_dependent() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[noop.a]\nbefore = [\"noop.c\"]\nnotify = [\"exec.reload\"]\n\
             [noop.b]\nafter = [\"noop.a\"]\n[noop.c]\n\
             [exec.reload]\ncommand = \"true\"\n",
        );
        assert_eq!(
            edges_of(&g),
            [
                ("noop.a", "noop.c", EdgeKind::Before),
                ("noop.a", "exec.reload", EdgeKind::Notify),
                ("noop.a", "noop.b", EdgeKind::After),
            ]
        );
        for k in [EdgeKind::After, EdgeKind::Before, EdgeKind::Notify] {
            assert!(!k.is_auto());
        }
        let a = g.index_of("noop.a").unwrap();
        for id in ["noop.b", "noop.c", "exec.reload"] {
            assert_eq!(g.dependencies[g.index_of(id).unwrap()], [a as u32], "{id}");
        }
        assert_eq!(g.dependents[a].len(), 3);
    }

    #[test]
    fn the_same_edge_twice_is_kept_once_per_kind() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[dir.d]\npath = \"~/d\"\n\
             [file.f]\npath = \"~/d/f\"\ncontent = \"${dir.d}\"\nafter = [\"dir.d\"]\n",
        );
        assert_eq!(
            edges_of(&g),
            [
                ("dir.d", "file.f", EdgeKind::After),
                ("dir.d", "file.f", EdgeKind::Reference),
                ("dir.d", "file.f", EdgeKind::ParentDir),
            ]
        );
        assert_eq!(g.dependencies[1], [0], "one dependency, not three");
        assert_eq!(g.dependents[0], [1]);
    }

    #[test]
    fn order_is_stable_by_manifest_order() {
        let fx = Fixture::new();
        let text = "[noop.e]\nafter = [\"noop.d\"]\n[noop.b]\n[noop.d]\n[noop.a]\n\
                    [noop.c]\nbefore = [\"noop.b\"]\n";
        let g = build(&fx, text);
        let ids: Vec<&str> = g.order.iter().map(|&i| &*g.ids[i]).collect();
        // Lowest manifest index first among the ready ones.
        assert_eq!(ids, ["noop.d", "noop.e", "noop.a", "noop.c", "noop.b"]);
        assert_order_respects_edges(&g);
        for _ in 0..5 {
            assert_eq!(build(&fx, text).order, g.order);
        }
    }

    #[test]
    fn a_cycle_names_every_member_in_order() {
        let fx = Fixture::new();
        let mut m =
            fx.manifest("[noop.x]\n[noop.a]\n[noop.b]\n[noop.c]\n[noop.y]\nafter = [\"noop.a\"]\n");
        // a → b → c → a (the loader refuses such a manifest, so make one by hand).
        let set = |m: &mut crate::manifest::Manifest, id: &str, after: &str| {
            let r = m.resources.iter_mut().find(|r| r.id == id).unwrap();
            r.after.push(after.to_string());
        };
        set(&mut m, "noop.b", "noop.a");
        set(&mut m, "noop.c", "noop.b");
        set(&mut m, "noop.a", "noop.c");
        let cycle = Graph::build(&m).unwrap_err();
        assert_eq!(cycle.ids, ["noop.a", "noop.b", "noop.c", "noop.a"]);
    }

    /// Loads as the CLI does: the manifest's problems and its graph's together.
    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let fx = Fixture::new();
        parse(
            &fx.text(text),
            &fx.repo.join("stead.toml"),
            &fx.repo,
            &LoadOptions {
                home: fx.home.clone(),
                profile: None,
                kinds: &crate::resource::registry::REGISTRY,
            },
        )
        .map(|(m, _)| m)
    }

    fn messages(e: &ManifestError) -> Vec<String> {
        e.problems.iter().map(|p| p.message.clone()).collect()
    }

    #[test]
    fn cycles_are_reported_with_their_members() {
        let e = load(
            "[noop.a]\nafter = [\"noop.c\"]\n[noop.b]\nafter = [\"noop.a\"]\n[noop.c]\nafter = [\"noop.b\"]\n",
        )
        .unwrap_err();
        let msgs = messages(&e);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].starts_with("dependency cycle: noop.a → noop.b → noop.c → noop.a"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_cycle_is_reported_with_the_other_problems() {
        let e = load(
            "[file.a]\npath = \"~/a\"\ncontent = \"a\"\ncolour = 1\n\n[noop.p]\nafter = [\"noop.q\"]\n\n[noop.q]\nafter = [\"noop.p\"]\n",
        )
        .unwrap_err();
        let msgs = messages(&e);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[1].starts_with("dependency cycle: noop.p → noop.q → noop.p"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_cycle_through_an_autoedge_is_a_load_error_with_its_place() {
        let fx = Fixture::new();
        let text = fx.text("[dir.d]\npath = \"~/d\"\nafter = [\"file.f\"]\n[file.f]\npath = \"~/d/f\"\ncontent = \"\"\n");
        let err = parse(
            &text,
            &fx.repo.join("stead.toml"),
            &fx.repo,
            &crate::manifest::LoadOptions {
                home: fx.home.clone(),
                profile: None,
                kinds: &crate::resource::registry::REGISTRY,
            },
        )
        .map(|(m, _)| m)
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let p = &err.problems[0];
        assert_eq!(p.message, "dependency cycle: dir.d → file.f → dir.d");
        let span = p.span.clone().unwrap();
        assert_eq!(err.line_col(span.start).0, 1, "points at [dir.d]");
        assert!(err.to_string().contains("dependency cycle"), "{err}");
    }

    #[test]
    fn cycle_report_through_references_and_symlinks() {
        let fx = Fixture::new();
        let text = fx.text(
            "[symlink.l]\npath = \"~/l\"\ntarget = \"~/f\"\n\
             [file.f]\npath = \"~/f\"\ncontent = \"${symlink.l}\"\n[noop.z]\n",
        );
        let err = parse(
            &text,
            &fx.repo.join("stead.toml"),
            &fx.repo,
            &crate::manifest::LoadOptions {
                home: fx.home.clone(),
                profile: None,
                kinds: &crate::resource::registry::REGISTRY,
            },
        )
        .map(|(m, _)| m)
        .unwrap_err();
        let msgs: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(msgs, ["dependency cycle: symlink.l → file.f → symlink.l"]);
    }

    #[test]
    fn to_dot_marks_autoedges() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[dir.d]\npath = \"~/d\"\n[file.f]\npath = \"~/d/f\"\ncontent = \"\"\nnotify = [\"exec.e\"]\n\
             [symlink.l]\npath = \"~/l\"\ntarget = \"~/d/f\"\nafter = [\"noop.n\"]\n\
             [exec.e]\ncommand = \"true\"\n[noop.n]\n",
        );
        let dot = g.to_dot();
        assert!(dot.starts_with("digraph stead {\n"), "{dot}");
        for id in ["dir.d", "file.f", "symlink.l", "exec.e", "noop.n"] {
            assert!(dot.contains(&format!("  \"{id}\";\n")), "{dot}");
        }
        assert!(
            dot.contains("\"dir.d\" -> \"file.f\" [label=\"parent_dir\", style=dashed];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"file.f\" -> \"symlink.l\" [label=\"symlink_target\", style=dashed];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"file.f\" -> \"exec.e\" [label=\"notify\", color=blue];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"noop.n\" -> \"symlink.l\" [label=\"after\"];"),
            "{dot}"
        );
        assert_eq!(dot.matches("dashed").count(), 2, "{dot}");
        assert!(dot.ends_with("}\n"));
    }

    #[test]
    fn every_id_finds_its_own_node_and_an_unknown_id_none() {
        let fx = Fixture::new();
        // Declared out of id order, so the sorted lookup is not the identity.
        let g = build(&fx, "[noop.m]\n[noop.b]\n[noop.z]\n[noop.a]\n[noop.bb]\n");
        for (i, id) in g.ids.iter().enumerate() {
            assert_eq!(g.index_of(id), Some(i), "{id}");
        }
        for unknown in ["noop.c", "", "noop", "noop.zz", "noop.b "] {
            assert_eq!(g.index_of(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn edges_to_resources_outside_the_profile_are_dropped() {
        let fx = Fixture::new();
        let g = build(
            &fx,
            "[profile.work.vars]\n[noop.a]\nafter = [\"noop.w\"]\n[noop.w]\nprofiles = [\"work\"]\n",
        );
        assert_eq!(g.ids, [Box::from("noop.a")]);
        assert!(g.edges.is_empty());
    }
}
