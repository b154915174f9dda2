//! The compiled manifest: a loaded [`Manifest`] kept in the state dir
//! (`converged.manifest`) beside the converged seal ([`crate::seal`]), so
//! that a run that finds only some resources drifted plans them without
//! parsing `stead.toml` again (at 10 000 files the parse, the paths'
//! resolution and the build were about 32 ms of a 1% repair's 130).
//!
//! It is only a cache, and it is only ever used through a seal: the run that
//! seals stores the compiled form's digest in the seal, and a run that
//! finds the seal drifted ([`crate::seal::Check::Drifted`]) has just found
//! `stead.toml`, every link the load followed and the run's key exactly as
//! they were when the seal was made, so the manifest is the one sealed. A
//! missing, torn or foreign file, or one whose digest is not the seal's,
//! is no compiled form: the run loads `stead.toml` as always.
//!
//! Only manifests of the built-in kinds whose specs are plain data are
//! compiled (files, directories, links, execs, noops), and none holding a
//! `sensitive` file: its inline content must not be copied out of the
//! manifest. (Secret references hold names, never values.)
//!
//! Layout: a magic line, a postcard payload, and the payload's BLAKE3
//! digest, which is also the form's identity. The payload (format 3) holds
//! the format, the manifest's fields but its resources, every resource's
//! marker paths, the resources' ids, the graph's order and edges, and each
//! resource as postcard bytes of its own: a repair reads the whole file
//! (its digest is checked as always) but decodes only the resources of its
//! scope ([`read_scope`]), not all of them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use thin_vec::ThinVec;

use super::{DirSpec, ExecSpec, FileSpec, Manifest, Partial, Resource, Retry, Spec, SymlinkSpec};
use crate::fsutil::{self, FsError};

/// The compiled manifest's file in the state dir.
pub const COMPILED_FILE: &str = "converged.manifest";

/// What the file starts with.
pub const MAGIC: &[u8] = b"stead compiled manifest\n";

/// The format this build reads and writes (another is no compiled form).
/// Format 2 (2026-12-06) adds the graph's edges; format 3 (2026-12-07) the
/// graph's order, the marker paths and each resource's bytes on their own,
/// so that a repair decodes only its scope. A file of an earlier format,
/// as an earlier stead wrote it, is replaced by the next run that seals.
const FORMAT: u32 = 3;

/// A compiled form's identity: the BLAKE3 digest of its payload.
pub type Digest = [u8; 32];

/// An edge of the manifest's graph as kept: the dependency's node, the
/// dependent's node, the edge kind's number ([`crate::graph`] makes them
/// and turns them back into its edges; this module only keeps them).
pub type PackedEdge = (u32, u32, u8);

/// A manifest as stored, borrowed from the loaded one and its graph.
#[derive(Serialize)]
struct StoredRef<'a> {
    format: u32,
    path: &'a Path,
    config_dir: &'a Path,
    home: &'a Path,
    real_home: &'a Path,
    profile: Option<&'a str>,
    profiles: &'a BTreeSet<String>,
    vars: &'a BTreeMap<String, String>,
    protected: &'a [PathBuf],
    followed_links: &'a [PathBuf],
    /// Every resource's marker paths: a scope's plan leaves them all alone.
    markers: &'a [&'a Path],
    /// The resources' ids, in manifest order (a node's index is its place).
    #[serde(serialize_with = "ids")]
    ids: &'a [Resource],
    /// The graph's order (dependencies first), as nodes.
    #[serde(serialize_with = "nodes")]
    order: &'a [usize],
    /// The graph's edges, as the graph's build found them: a repair makes
    /// the graph from them without looking for them again.
    edges: &'a [PackedEdge],
    /// Each resource as postcard bytes of its own, in manifest order.
    #[serde(serialize_with = "resources")]
    resources: &'a [Resource],
}

/// A manifest as read back (the same encoding as [`StoredRef`], after its
/// format), its ids and resources borrowed from the payload.
#[derive(Deserialize)]
struct Stored<'a> {
    path: PathBuf,
    config_dir: PathBuf,
    home: PathBuf,
    real_home: PathBuf,
    profile: Option<String>,
    profiles: BTreeSet<String>,
    vars: BTreeMap<String, String>,
    protected: Vec<PathBuf>,
    followed_links: Vec<PathBuf>,
    markers: Vec<PathBuf>,
    #[serde(borrow)]
    ids: Vec<&'a str>,
    order: Vec<u32>,
    edges: Vec<PackedEdge>,
    #[serde(borrow)]
    resources: Vec<&'a [u8]>,
}

fn ids<S: Serializer>(list: &&[Resource], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|r| r.id.as_str()))
}

fn nodes<S: Serializer>(list: &&[usize], s: S) -> Result<S::Ok, S::Error> {
    // Nodes are u32 wherever the graph packs them (its edges too).
    s.collect_seq(list.iter().map(|&node| node as u32))
}

/// A resource as stored: one of the plain-data specs.
#[derive(Serialize)]
struct ResourceRef<'a> {
    spec: SpecRef<'a>,
    after: &'a [String],
    before: &'a [String],
    notify: &'a [String],
    references: &'a [String],
    retry: StoredRetry,
    span: (usize, usize),
}

/// [`Retry`] field by field: its serde form leaves out `forever` when false
/// (for JSON), which a format without field names cannot read back.
type StoredRetry = (u32, u64, bool, bool);

#[derive(Deserialize)]
struct StoredResource {
    spec: StoredSpec,
    after: ThinVec<String>,
    before: ThinVec<String>,
    notify: ThinVec<String>,
    references: ThinVec<String>,
    retry: StoredRetry,
    span: (usize, usize),
}

/// The specs that are plain data, in one order for both directions.
#[derive(Serialize)]
enum SpecRef<'a> {
    File(&'a FileSpec),
    Dir(&'a DirSpec),
    Symlink(&'a SymlinkSpec),
    Exec(&'a ExecSpec),
    Noop,
}

#[derive(Deserialize)]
enum StoredSpec {
    File(FileSpec),
    Dir(DirSpec),
    Symlink(SymlinkSpec),
    Exec(Box<ExecSpec>),
    Noop,
}

/// The resources one by one, each encoded on its own as it is written: a
/// vector of borrowed forms, or of their bytes, would be an allocation the
/// size of the manifest's own at 100 000 files.
fn resources<S: Serializer>(list: &&[Resource], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(Encoded))
}

/// A resource, serialized as the bytes of its own postcard encoding.
struct Encoded<'a>(&'a Resource);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let stored = ResourceRef {
            // Checked by `compilable` before anything is written.
            spec: match &r.spec {
                Spec::File(f) => SpecRef::File(f),
                Spec::Dir(d) => SpecRef::Dir(d),
                Spec::Symlink(l) => SpecRef::Symlink(l),
                Spec::Exec(e) => SpecRef::Exec(e),
                Spec::Noop | Spec::Other(_) => SpecRef::Noop,
            },
            after: &r.after,
            before: &r.before,
            notify: &r.notify,
            references: &r.references,
            retry: (
                r.retry.retries,
                r.retry.delay_ms,
                r.retry.exponential,
                r.retry.forever,
            ),
            span: (r.span.start, r.span.end),
        };
        let bytes = postcard::to_allocvec(&stored).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

/// Whether `manifest` may be compiled: only plain-data kinds, and no
/// sensitive file.
fn compilable(manifest: &Manifest) -> bool {
    manifest.resources.iter().all(|r| match &r.spec {
        Spec::File(f) => !f.sensitive,
        Spec::Dir(_) | Spec::Symlink(_) | Spec::Exec(_) | Spec::Noop => true,
        Spec::Other(_) => false,
    })
}

fn stored_ref<'a>(manifest: &'a Manifest, kept: &Kept<'a>) -> StoredRef<'a> {
    StoredRef {
        format: FORMAT,
        path: &manifest.path,
        config_dir: &manifest.config_dir,
        home: &manifest.home,
        real_home: &manifest.real_home,
        profile: manifest.profile.as_deref(),
        profiles: &manifest.profiles,
        vars: &manifest.vars,
        protected: &manifest.protected,
        followed_links: &manifest.followed_links,
        markers: kept.markers,
        ids: &manifest.resources,
        order: kept.order,
        edges: kept.edges,
        resources: &manifest.resources,
    }
}

/// What a compiled form keeps beside the manifest, made by those who know
/// the graph and the kinds.
#[derive(Debug, Clone, Copy)]
pub struct Kept<'a> {
    /// The graph's edges ([`crate::graph::Graph::packed_edges`]).
    pub edges: &'a [PackedEdge],
    /// The graph's order, as nodes (dependencies first).
    pub order: &'a [usize],
    /// Every resource's marker paths, in the resources' order.
    pub markers: &'a [&'a Path],
}

/// Makes sure `state_dir` holds the compiled form of `manifest` (with what
/// is `kept` of its graph and kinds) and returns its digest: the file is
/// rewritten only
/// when what is there is another manifest's (the payload is made twice
/// then: once to hash it, once to write it, never held whole).
/// `Ok(None)`: this manifest is not compiled (a kind with its own spec
/// type, a sensitive file, a path that is not UTF-8), and an older
/// compiled form is removed.
pub fn refresh(
    state_dir: &Path,
    manifest: &Manifest,
    kept: Kept,
) -> Result<Option<Digest>, FsError> {
    let path = state_dir.join(COMPILED_FILE);
    let stored = stored_ref(manifest, &kept);
    // A manifest read in part is never the whole one to keep.
    let digest = (compilable(manifest)
        && manifest.partial.is_none()
        && kept.order.len() == manifest.resources.len())
    .then(|| {
        postcard::to_io(&stored, blake3::Hasher::new())
            .ok()
            .map(|hasher| *hasher.finalize().as_bytes())
    })
    .flatten();
    let Some(digest) = digest else {
        return remove(state_dir).map(|()| None);
    };
    if trailer(&path).is_some_and(|held| held == digest) {
        return Ok(Some(digest));
    }
    fsutil::atomic_write_with(&path, 0o600, &mut |_| {}, &mut |out| {
        out.write_all(MAGIC)?;
        postcard::to_io(&stored, &mut *out).map_err(io::Error::other)?;
        out.write_all(&digest)
    })?;
    Ok(Some(digest))
}

/// The digest a compiled file ends with (not checked against its payload:
/// [`read`] does that).
fn trailer(path: &Path) -> Option<Digest> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::End(-32)).ok()?;
    let mut digest = [0u8; 32];
    file.read_exact(&mut digest).ok()?;
    Some(digest)
}

/// The compiled manifest in `state_dir` whose digest is `digest`, if it is
/// there and whole; anything else is `None` (and a file that is not the
/// one asked for is left for the next sealing run to replace).
pub fn read(state_dir: &Path, digest: &Digest) -> Option<Manifest> {
    read_with_edges(state_dir, digest).map(|(manifest, _)| manifest)
}

/// [`read`], with the graph's edges kept with it (unchecked: the graph
/// checks that they fit the manifest).
pub fn read_with_edges(state_dir: &Path, digest: &Digest) -> Option<(Manifest, Vec<PackedEdge>)> {
    let bytes = crate::ownfile::read(&state_dir.join(COMPILED_FILE)).ok()?;
    let mut stored = decode(&bytes, digest)?;
    if stored.resources.len() != stored.ids.len() {
        return None;
    }
    // Reserved once: collected through `Option`, the vector would grow by
    // doubling from nothing (copies into fresh memory, docs/performance.md,
    // "ninth pass").
    let mut resources = Vec::with_capacity(stored.ids.len());
    for (id, bytes) in stored.ids.iter().zip(&stored.resources) {
        resources.push(resource_of(id, bytes)?);
    }
    let edges = std::mem::take(&mut stored.edges);
    Some((manifest_of(stored, resources, None), edges))
}

/// The part of the compiled manifest in `state_dir` (whose digest is
/// `digest`) that a repair of the resources `drifted` plans: those of them
/// it declares and every resource that waits for one of them, transitively,
/// in the graph's order, with the edges among them (renumbered to their
/// places). The manifest is marked [`Partial`], with every resource's
/// marker paths. `None` for anything [`read`] refuses, and for a stored
/// order that is not a topological order of the stored edges.
///
/// The scope is closed under "waits for", so every path of edges between
/// two of its resources stays inside it: the graph of the part orders them
/// as the whole graph does.
pub fn read_scope(
    state_dir: &Path,
    digest: &Digest,
    drifted: &HashSet<String>,
) -> Option<(Manifest, Vec<PackedEdge>)> {
    let bytes = crate::ownfile::read(&state_dir.join(COMPILED_FILE)).ok()?;
    let mut stored = decode(&bytes, digest)?;
    let n = stored.ids.len();
    if stored.resources.len() != n || stored.order.len() != n {
        return None;
    }
    let rank = ranks(&stored.order)?;
    let scope = scope_of(&stored, &rank, drifted)?;
    let mut place = vec![u32::MAX; n];
    for (at, &node) in scope.iter().enumerate() {
        place[node as usize] = at as u32;
    }
    let edges = stored
        .edges
        .iter()
        .filter_map(|&(from, to, kind)| {
            let (from, to) = (place[from as usize], place[to as usize]);
            (from != u32::MAX && to != u32::MAX).then_some((from, to, kind))
        })
        .collect();
    let resources = scope
        .iter()
        .map(|&node| resource_of(stored.ids[node as usize], stored.resources[node as usize]))
        .collect::<Option<Vec<Resource>>>()?;
    let partial = Partial {
        markers: std::mem::take(&mut stored.markers),
    };
    Some((manifest_of(stored, resources, Some(partial)), edges))
}

/// Each node's place in `order`, which must hold every node once.
fn ranks(order: &[u32]) -> Option<Vec<u32>> {
    let mut rank = vec![u32::MAX; order.len()];
    for (at, &node) in order.iter().enumerate() {
        let slot = rank.get_mut(node as usize)?;
        if *slot != u32::MAX {
            return None;
        }
        *slot = at as u32;
    }
    Some(rank)
}

/// The nodes of `drifted`'s ids and of everything that waits for them,
/// sorted by `rank`; `None` when an edge leaves the stored nodes, or its
/// dependency does not come first in the order.
fn scope_of(stored: &Stored, rank: &[u32], drifted: &HashSet<String>) -> Option<Vec<u32>> {
    let n = rank.len();
    // Each node's dependents, as a range of one list.
    let mut start = vec![0usize; n + 1];
    for &(from, to, _) in &stored.edges {
        let (f, t) = (from as usize, to as usize);
        if f >= n || t >= n || rank[f] >= rank[t] {
            return None;
        }
        start[f + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut next = start.clone();
    let mut dependents = vec![0u32; stored.edges.len()];
    for &(from, to, _) in &stored.edges {
        dependents[next[from as usize]] = to;
        next[from as usize] += 1;
    }
    let mut in_scope = vec![false; n];
    let mut stack: Vec<u32> = (0..n as u32)
        .filter(|&node| drifted.contains(stored.ids[node as usize]))
        .collect();
    while let Some(node) = stack.pop() {
        let node = node as usize;
        if !std::mem::replace(&mut in_scope[node], true) {
            stack.extend_from_slice(&dependents[start[node]..start[node + 1]]);
        }
    }
    let mut scope: Vec<u32> = (0..n as u32)
        .filter(|&node| in_scope[node as usize])
        .collect();
    scope.sort_unstable_by_key(|&node| rank[node as usize]);
    Some(scope)
}

/// The payload of a compiled file's `bytes` whose digest is `digest`, in
/// this build's format.
fn decode<'a>(bytes: &'a [u8], digest: &Digest) -> Option<Stored<'a>> {
    let body = bytes.strip_prefix(MAGIC)?;
    let (payload, sum) = body.split_at_checked(body.len().checked_sub(32)?)?;
    if sum != digest || blake3::hash(payload).as_bytes() != digest {
        return None;
    }
    // The format first: another format's fields are not this one's.
    let (format, rest) = postcard::take_from_bytes::<u32>(payload).ok()?;
    if format != FORMAT {
        return None;
    }
    postcard::from_bytes(rest).ok()
}

/// One stored resource, its `id` given back to it.
fn resource_of(id: &str, bytes: &[u8]) -> Option<Resource> {
    let r: StoredResource = postcard::from_bytes(bytes).ok()?;
    Some(Resource {
        id: id.to_string(),
        spec: match r.spec {
            StoredSpec::File(f) => Spec::File(f),
            StoredSpec::Dir(d) => Spec::Dir(d),
            StoredSpec::Symlink(l) => Spec::Symlink(l),
            StoredSpec::Exec(e) => Spec::Exec(e),
            StoredSpec::Noop => Spec::Noop,
        },
        after: r.after,
        before: r.before,
        notify: r.notify,
        references: r.references,
        retry: Retry {
            retries: r.retry.0,
            delay_ms: r.retry.1,
            exponential: r.retry.2,
            forever: r.retry.3,
        },
        span: r.span.0..r.span.1,
    })
}

/// The stored manifest's fields around `resources`.
fn manifest_of(stored: Stored, resources: Vec<Resource>, partial: Option<Partial>) -> Manifest {
    Manifest {
        path: stored.path,
        config_dir: stored.config_dir,
        home: stored.home,
        real_home: stored.real_home,
        profile: stored.profile,
        profiles: stored.profiles,
        vars: stored.vars,
        resources,
        protected: stored.protected,
        followed_links: stored.followed_links,
        partial,
    }
}

/// Removes the compiled form (nothing to remove is fine).
pub fn remove(state_dir: &Path) -> Result<(), FsError> {
    fsutil::remove_if_present(&state_dir.join(COMPILED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LoadOptions, MANIFEST_FILE};

    /// [`refresh`] with the edges and order of the manifest's own graph,
    /// and its execs' markers.
    fn compile(dir: &Path, manifest: &Manifest) -> Result<Option<Digest>, FsError> {
        let graph = crate::graph::Graph::build(manifest).unwrap();
        compile_with(dir, manifest, &graph.packed_edges(), &graph.order)
    }

    fn compile_with(
        dir: &Path,
        manifest: &Manifest,
        edges: &[PackedEdge],
        order: &[usize],
    ) -> Result<Option<Digest>, FsError> {
        let markers = markers(manifest);
        let markers: Vec<&Path> = markers.iter().map(PathBuf::as_path).collect();
        let kept = Kept {
            edges,
            order,
            markers: &markers,
        };
        refresh(dir, manifest, kept)
    }

    /// The `creates` of the manifest's execs (the only kind with markers
    /// among those compiled).
    fn markers(manifest: &Manifest) -> Vec<PathBuf> {
        manifest
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Exec(e) => e.creates.clone(),
                _ => None,
            })
            .collect()
    }

    /// `text` loaded from a temp config repo (`REPO` in it is that repo),
    /// with a home of its own.
    fn load(dir: &Path, text: &str) -> Manifest {
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("rc"), "x").unwrap();
        Manifest::parse(
            &text.replace("REPO", repo.to_str().unwrap()),
            &repo.join(MANIFEST_FILE),
            &repo,
            &LoadOptions {
                home: dir.join("home"),
                profile: text.contains("[profile.laptop").then(|| "laptop".into()),
                kinds: &crate::resource::registry::REGISTRY,
            },
        )
        .unwrap()
    }

    const PLAIN: &str = r#"
[vars]
who = "me"

[profile.laptop.vars]
who = "laptop"

[dir.conf]
path = "~/conf"
mode = "0700"
purge = true

[file.inline]
path = "~/conf/a"
content = "hello ${vars.who}\n"
mode = "0640"
after = ["dir.conf"]
retry = 2
delay = "1s"

[file.source]
path = "~/conf/b"
source = "rc"

[file.output]
path = "~/conf/c"
content = "built=${exec.make.stdout}\n"

[symlink.link]
path = "~/l"
target = "~/conf/a"

[exec.make]
command = ["make", "-C", "${dir.conf}"]
creates = "~/conf/built"
env = { A = "1" }
timeout = "30s"
output = true
notify = ["noop.done"]

[exec.shell]
command = "echo hi"
refresh_only = true
retry = -1
delay = "2s"

[noop.done]
"#;

    /// The same, with a secret: a kind with its own spec type.
    const WITH_SECRET: &str = "[secret.db]\nlength = 40\n\n\
        [file.pgpass]\npath = \"~/.pgpass\"\ncontent = \"me:${secret.db}\\n\"\n\n\
        [profile.laptop]\n";

    fn same(a: &Manifest, b: &Manifest) {
        assert_eq!(a.resources, b.resources);
        assert_eq!(a.partial, b.partial);
        same_fields(a, b);
    }

    #[test]
    fn a_manifest_of_plain_kinds_reads_back_as_it_was_loaded() {
        let d = tempfile::tempdir().unwrap();
        let text = PLAIN;
        let loaded = load(d.path(), text);
        let digest = compile(d.path(), &loaded).unwrap().expect("compiled");
        let read_back = read(d.path(), &digest).expect("read back");
        same(&read_back, &loaded);
        // With the edges kept with it: every kind of edge the manifest has,
        // as a build finds them.
        let (with_edges, edges) = read_with_edges(d.path(), &digest).expect("read back");
        same(&with_edges, &loaded);
        let built = crate::graph::Graph::build(&loaded).unwrap();
        let kinds: BTreeSet<u8> = edges.iter().map(|e| e.2).collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert_eq!(edges, built.packed_edges());
        // Unchanged, it is not written again.
        let file = d.path().join(COMPILED_FILE);
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&file);
        assert_eq!(compile(d.path(), &loaded).unwrap(), Some(digest));
        assert_eq!(inode(&file), before);
        // Another manifest replaces it; the old digest reads nothing.
        let other = load(d.path(), &text.replace("hello", "bye"));
        let next = compile(d.path(), &other).unwrap().expect("compiled");
        assert_ne!(next, digest);
        assert!(read(d.path(), &digest).is_none());
        same(&read(d.path(), &next).unwrap(), &other);
    }

    #[test]
    fn many_resources_are_read_into_a_vector_reserved_once_for_their_count() {
        // A vector grown by doubling ends with more room than it holds.
        let count = 3 * 1024 + 7;
        let text: String = (0..count)
            .map(|i| format!("[file.f{i}]\npath = \"~/f{i}\"\ncontent = \"{i}\"\n\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let manifest = load(dir.path(), &text);
        let digest = compile(dir.path(), &manifest).unwrap().unwrap();
        let back = read(dir.path(), &digest).unwrap();
        assert_eq!(back.resources.len(), count);
        assert_eq!(back.resources.capacity(), count);
        same(&back, &manifest);
    }

    #[test]
    fn a_sensitive_file_or_a_kind_of_its_own_is_never_compiled() {
        let d = tempfile::tempdir().unwrap();
        let plain = load(d.path(), "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n");
        assert!(compile(d.path(), &plain).unwrap().is_some());
        for text in [
            "[file.a]\npath = \"~/a\"\ncontent = \"pin=1234\"\nsensitive = true\n",
            WITH_SECRET,
            "[line.a]\npath = \"~/a\"\nline = \"x\"\n",
        ] {
            let m = load(d.path(), text);
            assert_eq!(compile(d.path(), &m).unwrap(), None, "{text}");
            // The older form is gone with it.
            assert!(!d.path().join(COMPILED_FILE).exists(), "{text}");
        }
        let secret = load(
            d.path(),
            "[file.a]\npath = \"~/a\"\ncontent = \"pin=1234\"\nsensitive = true\n",
        );
        let _ = compile(d.path(), &secret);
        for entry in std::fs::read_dir(d.path()).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert!(!bytes.windows(8).any(|w| w == b"pin=1234"), "{entry:?}");
            }
        }
    }

    /// The ids the whole graph of `m` puts in the scope of `drifted`, in its
    /// order.
    fn whole_scope(m: &Manifest, drifted: &HashSet<String>) -> Vec<String> {
        let graph = crate::graph::Graph::build(m).unwrap();
        let scope = graph.with_dependents(drifted);
        graph
            .order
            .iter()
            .map(|&node| graph.ids[node].to_string())
            .filter(|id| scope.contains(id))
            .collect()
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn a_scope_is_what_drifted_and_what_waits_for_it_in_the_whole_graphs_order() {
        let d = tempfile::tempdir().unwrap();
        let whole = load(d.path(), PLAIN);
        let digest = compile(d.path(), &whole).unwrap().unwrap();
        let graph = crate::graph::Graph::build(&whole).unwrap();
        let markers = markers(&whole);
        assert_eq!(markers.len(), 1, "exec.make's marker");
        for drifted in [
            set(&["dir.conf"]),
            set(&["file.inline"]),
            set(&["exec.make", "file.source"]),
            set(&["noop.done"]),
            set(&["file.nowhere"]),
            set(&[]),
        ] {
            let (part, edges) = read_scope(d.path(), &digest, &drifted).unwrap();
            let ids: Vec<&str> = part.resources.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids, whole_scope(&whole, &drifted), "{drifted:?}");
            for r in &part.resources {
                let declared = whole.resources.iter().find(|w| w.id == r.id).unwrap();
                assert_eq!(r, declared);
            }
            assert_eq!(
                part.partial,
                Some(Partial {
                    markers: markers.clone(),
                })
            );
            // The edges among the part, and only those, renumbered.
            let node = |id: &str| graph.index_of(id).unwrap() as u32;
            let expected: Vec<PackedEdge> = graph
                .packed_edges()
                .into_iter()
                .filter_map(|(from, to, kind)| {
                    let at = |n: u32| ids.iter().position(|id| node(id) == n);
                    Some((at(from)? as u32, at(to)? as u32, kind))
                })
                .collect();
            assert_eq!(edges, expected, "{drifted:?}");
            same_fields(&part, &whole);
        }
        // `dir.conf` reaches almost everything; the leaf only itself.
        let (all, _) = read_scope(d.path(), &digest, &set(&["dir.conf"])).unwrap();
        assert!(all.resources.len() >= 5, "{:?}", all.resources.len());
        let (leaf, _) = read_scope(d.path(), &digest, &set(&["noop.done"])).unwrap();
        assert_eq!(leaf.resources.len(), 1);
    }

    /// Every field but the resources and `partial`.
    fn same_fields(a: &Manifest, b: &Manifest) {
        assert_eq!(
            (&a.path, &a.config_dir, &a.home, &a.real_home),
            (&b.path, &b.config_dir, &b.home, &b.real_home)
        );
        assert_eq!(
            (&a.profile, &a.profiles, &a.vars),
            (&b.profile, &b.profiles, &b.vars)
        );
        assert_eq!(
            (&a.protected, &a.followed_links),
            (&b.protected, &b.followed_links)
        );
    }

    #[test]
    fn an_order_that_is_not_the_graphs_is_no_scope_but_the_whole_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let m = load(d.path(), PLAIN);
        let graph = crate::graph::Graph::build(&m).unwrap();
        let edges = graph.packed_edges();
        let reversed: Vec<usize> = graph.order.iter().rev().copied().collect();
        let mut twice = graph.order.clone();
        twice[1] = twice[0];
        let mut past = graph.order.clone();
        past[0] = m.resources.len();
        for order in [reversed, twice, past] {
            let digest = compile_with(d.path(), &m, &edges, &order).unwrap().unwrap();
            assert!(
                read_scope(d.path(), &digest, &set(&["dir.conf"])).is_none(),
                "{order:?}"
            );
            same(&read(d.path(), &digest).unwrap(), &m);
        }
        // A manifest read in part is never kept as the whole.
        let digest = compile(d.path(), &m).unwrap().unwrap();
        let (part, _) = read_scope(d.path(), &digest, &set(&["noop.done"])).unwrap();
        assert_eq!(compile_with(d.path(), &part, &[], &[0]).unwrap(), None);
    }

    /// A compiled form stead wrote before format 3 (format 2, by 2143d7e,
    /// for a directory, a file in it and an exec with a marker), whole and
    /// with its digest right: it is no compiled form now, and the next run
    /// that seals replaces it.
    #[test]
    fn a_file_of_an_earlier_format_is_no_compiled_form_and_a_seal_replaces_it() {
        let old = include_bytes!("../../tests/fixtures/compiled-manifest-format-2.bin");
        let (body, sum) = old.split_at(old.len() - 32);
        let digest: Digest = sum.try_into().unwrap();
        assert_eq!(blake3::hash(&body[MAGIC.len()..]).as_bytes(), &digest);
        assert_eq!(
            postcard::take_from_bytes::<u32>(&body[MAGIC.len()..])
                .unwrap()
                .0,
            2
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(COMPILED_FILE), old).unwrap();
        assert!(read(d.path(), &digest).is_none());
        assert!(read_with_edges(d.path(), &digest).is_none());
        assert!(read_scope(d.path(), &digest, &set(&["file.a"])).is_none());
        let m = load(
            d.path(),
            "[dir.conf]\npath = \"~/conf\"\n\n[file.a]\npath = \"~/conf/a\"\ncontent = \"hello\\n\"\n",
        );
        let now = compile(d.path(), &m).unwrap().unwrap();
        assert_ne!(now, digest);
        same(&read(d.path(), &now).unwrap(), &m);
    }

    #[test]
    fn a_torn_altered_or_foreign_file_is_no_compiled_form() {
        let d = tempfile::tempdir().unwrap();
        let m = load(d.path(), "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n");
        let digest = compile(d.path(), &m).unwrap().unwrap();
        let file = d.path().join(COMPILED_FILE);
        let good = std::fs::read(&file).unwrap();
        assert!(read(d.path(), &digest).is_some());
        let mut flipped = good.clone();
        let mid = MAGIC.len() + 4;
        flipped[mid] ^= 1;
        let mut foreign = good.clone();
        foreign[0] = b'S';
        for bad in [
            good[..good.len() - 1].to_vec(),
            good[..good.len() / 2].to_vec(),
            Vec::new(),
            flipped,
            foreign,
        ] {
            std::fs::write(&file, &bad).unwrap();
            assert!(read(d.path(), &digest).is_none());
        }
        std::fs::write(&file, &good).unwrap();
        assert!(read(d.path(), &[0; 32]).is_none());
        std::fs::remove_file(&file).unwrap();
        assert!(read(d.path(), &digest).is_none());
    }
}
