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
//! Layout: a magic line, a postcard payload (the format, the manifest and
//! its graph's edges), and the payload's BLAKE3 digest, which is also the
//! form's identity.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use thin_vec::ThinVec;

use super::{DirSpec, ExecSpec, FileSpec, Manifest, Resource, Retry, Spec, SymlinkSpec};
use crate::fsutil::{self, FsError};

/// The compiled manifest's file in the state dir.
pub const COMPILED_FILE: &str = "converged.manifest";

/// What the file starts with.
pub const MAGIC: &[u8] = b"stead compiled manifest\n";

/// The format this build reads and writes (another is no compiled form).
/// Format 2 (2026-12-06) adds the graph's edges; a format 1 file, as an
/// earlier stead wrote it, is replaced by the next run that seals.
const FORMAT: u32 = 2;

/// A compiled form's identity: the BLAKE3 digest of its payload.
pub type Digest = [u8; 32];

/// An edge of the manifest's graph as kept: the dependency's node, the
/// dependent's node, the edge kind's number ([`crate::graph`] makes them
/// and turns them back into its edges; this module only keeps them).
pub type PackedEdge = (u32, u32, u8);

/// A manifest as stored, borrowed from the loaded one.
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
    #[serde(serialize_with = "resources")]
    resources: &'a [Resource],
    protected: &'a [PathBuf],
    followed_links: &'a [PathBuf],
    /// The graph's edges, as the graph's build found them: a repair makes
    /// the graph from them without looking for them again.
    edges: &'a [PackedEdge],
}

/// A manifest as read back (the same encoding as [`StoredRef`]).
#[derive(Deserialize)]
struct Stored {
    format: u32,
    path: PathBuf,
    config_dir: PathBuf,
    home: PathBuf,
    real_home: PathBuf,
    profile: Option<String>,
    profiles: BTreeSet<String>,
    vars: BTreeMap<String, String>,
    #[serde(deserialize_with = "presized")]
    resources: Vec<StoredResource>,
    protected: Vec<PathBuf>,
    followed_links: Vec<PathBuf>,
    edges: Vec<PackedEdge>,
}

/// At most this much is reserved up front for the resources a compiled
/// form says it holds (the rest, if it holds more, grows as usual).
const PRESIZE_BYTES: usize = 64 << 20;

/// The resources, read into a vector reserved once for the count the
/// payload gives: serde's own reservation stops at 1 MiB (a cautious
/// default for untrusted counts), and growing past it copies the resources
/// read so far into fresh memory (1 MiB of them at 10 000 files, about
/// 0.4 ms of a repair's compiled read; docs/performance.md, "ninth pass").
/// The count is bounded all the same: a payload is stead's own (its digest
/// is the seal's), but a fuzzer makes up its own.
fn presized<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StoredResource>, D::Error> {
    struct Resources;
    impl<'de> serde::de::Visitor<'de> for Resources {
        type Value = Vec<StoredResource>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of resources")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let most = PRESIZE_BYTES / std::mem::size_of::<StoredResource>().max(1);
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(most));
            while let Some(resource) = seq.next_element()? {
                out.push(resource);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Resources)
}

/// A resource as stored: one of the plain-data specs.
#[derive(Serialize)]
struct ResourceRef<'a> {
    id: &'a str,
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
    id: String,
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

/// The resources one by one: a vector of borrowed forms would be an
/// allocation the size of the manifest's own at 100 000 files.
fn resources<S: Serializer>(list: &&[Resource], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|r| ResourceRef {
        id: &r.id,
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
    }))
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

fn stored_ref<'a>(manifest: &'a Manifest, edges: &'a [PackedEdge]) -> StoredRef<'a> {
    StoredRef {
        format: FORMAT,
        path: &manifest.path,
        config_dir: &manifest.config_dir,
        home: &manifest.home,
        real_home: &manifest.real_home,
        profile: manifest.profile.as_deref(),
        profiles: &manifest.profiles,
        vars: &manifest.vars,
        resources: &manifest.resources,
        protected: &manifest.protected,
        followed_links: &manifest.followed_links,
        edges,
    }
}

/// Makes sure `state_dir` holds the compiled form of `manifest` (with its
/// graph's `edges`) and returns its digest: the file is rewritten only
/// when what is there is another manifest's (the payload is made twice
/// then: once to hash it, once to write it, never held whole).
/// `Ok(None)`: this manifest is not compiled (a kind with its own spec
/// type, a sensitive file, a path that is not UTF-8), and an older
/// compiled form is removed.
pub fn refresh(
    state_dir: &Path,
    manifest: &Manifest,
    edges: &[PackedEdge],
) -> Result<Option<Digest>, FsError> {
    let path = state_dir.join(COMPILED_FILE);
    let stored = stored_ref(manifest, edges);
    let digest = compilable(manifest)
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
    read_stored(state_dir, digest).map(|stored| manifest_of(stored).0)
}

/// [`read`], with the graph's edges kept with it (unchecked: the graph
/// checks that they fit the manifest).
pub fn read_with_edges(state_dir: &Path, digest: &Digest) -> Option<(Manifest, Vec<PackedEdge>)> {
    read_stored(state_dir, digest).map(manifest_of)
}

fn read_stored(state_dir: &Path, digest: &Digest) -> Option<Stored> {
    let bytes = crate::ownfile::read(&state_dir.join(COMPILED_FILE)).ok()?;
    decode(&bytes, digest)
}

/// [`read_stored`] of bytes already read.
fn decode(bytes: &[u8], digest: &Digest) -> Option<Stored> {
    let body = bytes.strip_prefix(MAGIC)?;
    let (payload, sum) = body.split_at_checked(body.len().checked_sub(32)?)?;
    if sum != digest || blake3::hash(payload).as_bytes() != digest {
        return None;
    }
    let stored: Stored = postcard::from_bytes(payload).ok()?;
    (stored.format == FORMAT).then_some(stored)
}

/// The stored manifest, and its graph's edges.
fn manifest_of(stored: Stored) -> (Manifest, Vec<PackedEdge>) {
    let manifest = Manifest {
        path: stored.path,
        config_dir: stored.config_dir,
        home: stored.home,
        real_home: stored.real_home,
        profile: stored.profile,
        profiles: stored.profiles,
        vars: stored.vars,
        resources: stored
            .resources
            .into_iter()
            .map(|r| Resource {
                id: r.id,
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
            .collect(),
        protected: stored.protected,
        followed_links: stored.followed_links,
    };
    (manifest, stored.edges)
}

/// Removes the compiled form (nothing to remove is fine).
pub fn remove(state_dir: &Path) -> Result<(), FsError> {
    fsutil::remove_if_present(&state_dir.join(COMPILED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LoadOptions, MANIFEST_FILE};

    /// [`refresh`] with the edges of the manifest's own graph.
    fn compile(dir: &Path, manifest: &Manifest) -> Result<Option<Digest>, FsError> {
        let graph = crate::graph::Graph::build(manifest).unwrap();
        refresh(dir, manifest, &graph.packed_edges())
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
        // Past serde's own reservation (1 MiB of resources), a vector grown
        // by doubling ends with more room than it holds.
        let cautious = (1 << 20) / std::mem::size_of::<StoredResource>();
        let count = cautious * 3 + 7;
        let text: String = (0..count)
            .map(|i| format!("[file.f{i}]\npath = \"~/f{i}\"\ncontent = \"{i}\"\n\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let manifest = load(dir.path(), &text);
        let digest = compile(dir.path(), &manifest).unwrap().unwrap();
        let stored = read_stored(dir.path(), &digest).unwrap();
        assert_eq!(stored.resources.len(), count);
        assert_eq!(stored.resources.capacity(), count);
        let (back, _) = manifest_of(stored);
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
