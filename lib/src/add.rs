//! `stead add`: take files (or directories) that already exist in the home
//! into the config repo, declare them in `stead.toml` keeping the user's
//! comments and layout (`toml_edit`), and record them as owned, so the next
//! plan shows them unchanged.
//!
//! The order is what makes it safe to stop at any point: the copies are made
//! first (each complete, at its final name only when whole), then the new
//! manifest text is checked by loading it, then `stead.toml` is replaced
//! atomically; only then is a home file replaced by a link (`--link`), after
//! its copy was read back and compared. A refusal or a failure before the
//! manifest is written removes the copies it made.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::fsutil::{self, FsError};
use crate::manifest::{LoadOptions, MANIFEST_FILE, Manifest, ManifestError};
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::resource::Action;
use crate::state::State;

/// File names of private keys, refused without `--force`.
const KEY_NAMES: &[&str] = &[
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
];

/// What to add.
#[derive(Debug, Clone)]
pub struct AddRequest {
    /// The paths to add (absolute; links among their parents are resolved).
    pub paths: Vec<PathBuf>,
    /// Declare the copy as a `template` instead of a `source`.
    pub template: bool,
    /// Replace the home file by a link to the copy (`[symlink.NAME]`).
    pub link: bool,
    /// The resource name (only with one path).
    pub name: Option<String>,
    /// Add secret-looking files too.
    pub force: bool,
}

/// One path added.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Added {
    /// The resource id (`file.bashrc`, `symlink.bashrc`).
    pub id: String,
    /// The path in the home, as stored (`~/.bashrc`).
    pub path: String,
    /// The copy, relative to the config repo (`bashrc`).
    pub source: String,
    /// A directory (a tree source).
    pub dir: bool,
    /// The home path is now a link to the copy.
    pub linked: bool,
}

/// Why nothing (or, for [`AddError::Link`], only part) was added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Nothing to add.
    #[error("no path given\nName the files to add: 'stead add ~/.bashrc'.")]
    NoPaths,
    /// `--as` with several paths.
    #[error(
        "--as names one resource, and {0} paths were given\nAdd them one at a time to name each."
    )]
    NameForMany(usize),
    /// An unusable `--as`.
    #[error(
        "--as {0:?} is not a valid resource name\nUse letters, digits, '_' and '-' (the id becomes file.NAME)."
    )]
    BadName(String),
    /// `--as` names a resource that exists.
    #[error("{0} is already declared in stead.toml\nPick another name with --as.")]
    NameTaken(String),
    /// The path does not exist.
    #[error("cannot add {}: {source}", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not below the home (after links are resolved).
    #[error(
        "{} is not inside the home {}\nstead add takes files below your home only; declare other paths by hand in stead.toml.",
        path.display(), home.display()
    )]
    OutsideHome {
        /// The path.
        path: PathBuf,
        /// The home.
        home: PathBuf,
    },
    /// Inside the config repo or the state dir.
    #[error("{} is inside {what} ({})\nstead add copies files from the home into the config repo; this one is stead's own.", path.display(), dir.display())]
    Own {
        /// The path.
        path: PathBuf,
        /// "the config repo", "the state dir".
        what: &'static str,
        /// That directory.
        dir: PathBuf,
    },
    /// Something stead add does not copy.
    #[error(
        "{} is {what}\nstead add copies regular files and directories of them; {hint}",
        path.display()
    )]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Already declared.
    #[error(
        "{} is already managed by {id}\nEdit its source with 'stead edit {}'.",
        path.display(), path.display()
    )]
    Managed {
        /// The path.
        path: PathBuf,
        /// The resource declaring it.
        id: String,
    },
    /// `--template` with a directory.
    #[error(
        "{} is a directory, and --template takes files\nAdd it without --template: inside a tree, files ending in .j2 render as templates.",
        .0.display()
    )]
    TemplateDir(PathBuf),
    /// Inside a tree's directory.
    #[error(
        "{} is inside the tree {tree}\nA new file of a tree goes into the tree's source directory in the config repo; the next apply manages it.",
        path.display()
    )]
    InTree {
        /// The path.
        path: PathBuf,
        /// The tree's id.
        tree: String,
    },
    /// Looks like a private key.
    #[error(
        "{} looks like a secret ({why})\nNothing was added. A config repo is often shared or pushed; add it anyway with --force if you are sure.",
        path.display()
    )]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why it looks like one.
        why: &'static str,
    },
    /// The copy's place in the repo is taken.
    #[error(
        "{} already exists in the config repo\nNothing was added. Move it away, or declare {} by hand.",
        dest.display(), path.display()
    )]
    SourceExists {
        /// Where the copy would go.
        dest: PathBuf,
        /// The path being added.
        path: PathBuf,
    },
    /// The manifest does not load (as it is, or with the additions).
    #[error("{0}")]
    Manifest(#[from] crate::manifest::LoadError),
    /// `toml_edit` could not read the manifest that `toml` did.
    #[error("{}:{line}:{col}: {message}\nNothing was written.", path.display())]
    Toml {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the parser said.
        message: String,
    },
    /// The manifest with the additions did not load: nothing was written.
    #[error("the declarations stead add made do not load; nothing was written\n{0}")]
    Invalid(Box<ManifestError>),
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The manifest was written, but a home file could not be replaced by
    /// its link.
    #[error(
        "{} was declared and copied, but could not be replaced by a link: {source}\nIts copy is in the config repo; 'stead apply --force' makes the link (the file is backed up first).",
        path.display()
    )]
    Link {
        /// The home path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The commented `stead.toml` that `stead init` writes into an empty
/// config repo: it loads, declares nothing, and shows the shape of a file
/// resource (commented out); with `profile`, it declares that profile.
pub fn starter_manifest(profile: Option<&str>) -> String {
    let mut text = String::from(
        "# stead.toml: what this machine should look like (see docs/manifest.md).\n\
         #\n\
         # 'stead add ~/.bashrc' copies a file from your home into this repo and\n\
         # declares it here; 'stead plan' shows what would change, 'stead apply'\n\
         # makes it so, 'stead status' says what changed since.\n\
         \n\
         # A file copied from this repo into your home (uncomment to use; the\n\
         # source is relative to this directory):\n\
         #\n\
         # [file.bashrc]\n\
         # path = \"~/.bashrc\"\n\
         # source = \"bashrc\"\n\
         # mode = \"0644\"\n",
    );
    if let Some(p) = profile {
        let key = toml_edit::Key::new(p).display_repr().into_owned();
        text.push_str(&format!(
            "\n# The profile this machine applies ('stead init --profile {p}').\n[profile.{key}]\n"
        ));
    }
    text
}

/// Writes [`starter_manifest`] into `dir` if it is an empty directory.
/// Returns whether it did (a directory with anything in it is left alone).
pub fn write_starter(dir: &Path, profile: Option<&str>) -> Result<bool, FsError> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(FsError::new("cannot read", dir, e)),
    };
    if entries.next().is_some() {
        return Ok(false);
    }
    fsutil::atomic_write(
        &dir.join(MANIFEST_FILE),
        starter_manifest(profile).as_bytes(),
        0o644,
    )?;
    Ok(true)
}

/// Records as owned the resources in `ids` (and those of a tree in `ids`,
/// named `ID/...`) that `plan` (made after [`add`]) shows unchanged, the way apply adopts what is already exactly as
/// declared, checksums included. Returns the ids the plan shows a change
/// for (a template that renders otherwise than the file it came from).
pub fn adopt(state: &mut State, plan: &Plan, ids: &HashSet<String>) -> Vec<String> {
    // A tree's files and directories are resources of their own, named
    // below the tree's id (`file.nvim/lua/x.lua`).
    let added = |id: &str| {
        ids.contains(id)
            || id
                .split_once('/')
                .is_some_and(|(root, _)| ids.contains(root))
    };
    let mut adopted = plan.clone();
    adopted
        .changes
        .retain(|c| added(&c.id) && c.action == Action::Unchanged);
    adopted.removals_from = adopted.changes.len();
    adopted.depends_on = vec![Vec::new(); adopted.changes.len()];
    let serial = state.lineage.serial.saturating_add(1);
    crate::plan::record(
        state,
        &adopted,
        &Outcome::unchanged(adopted.changes.len()),
        serial,
    );
    plan.changes[..plan.removals_from]
        .iter()
        .filter(|c| added(&c.id) && c.action != Action::Unchanged)
        .map(|c| c.id.clone())
        .collect()
}

/// One path, checked and placed.
struct Item {
    /// The real path in the home.
    path: PathBuf,
    /// Path relative to the home.
    rel: PathBuf,
    /// The copy's place, relative to the config repo.
    source_rel: PathBuf,
    /// The resource name.
    name: String,
    dir: bool,
    mode: u32,
}

/// Adds `request.paths` to the config repo `config_dir` (its manifest read
/// with `options`): copies, declares, writes `stead.toml`, links. Returns
/// what was added; the caller records ownership ([`crate::plan::record`]
/// over a fresh plan), which is what makes the next plan empty.
pub fn add(
    config_dir: &Path,
    options: &LoadOptions,
    protected: &[PathBuf],
    request: &AddRequest,
) -> Result<Vec<Added>, AddError> {
    if request.paths.is_empty() {
        return Err(AddError::NoPaths);
    }
    if request.name.is_some() && request.paths.len() > 1 {
        return Err(AddError::NameForMany(request.paths.len()));
    }
    let manifest_path = config_dir.join(MANIFEST_FILE);
    // The manifest as it is must load: its errors come with file:line:col.
    let (manifest, _) = crate::graph::load(config_dir, options)?;
    let text = String::from_utf8_lossy(
        &fs::read(&manifest_path).map_err(|e| FsError::new("cannot read", &manifest_path, e))?,
    )
    .into_owned();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let (line, col) = e
            .span()
            .map(|s| crate::manifest::LineIndex::new(&text).line_col(s.start))
            .unwrap_or((1, 1));
        AddError::Toml {
            path: manifest_path.clone(),
            line,
            col,
            message: e.message().to_string(),
        }
    })?;
    let real_home = fs::canonicalize(&options.home).unwrap_or_else(|_| options.home.clone());
    let mut guarded = vec![(
        "the config repo",
        fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf()),
    )];
    guarded.extend(protected.iter().map(|p| {
        (
            "the state dir",
            fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        )
    }));
    let kind = if request.link { "symlink" } else { "file" };
    let mut taken = declared_names(&doc, kind);
    let mut items = Vec::new();
    for path in &request.paths {
        let item = check(path, &real_home, &guarded, &manifest, request, &mut taken)?;
        // The same file named twice (`~/.x` and `./.x`) is added once.
        if !items.iter().any(|i: &Item| i.path == item.path) {
            items.push(item);
        }
    }
    let mut made = Vec::new();
    let result = copy_and_declare(config_dir, &items, &mut doc, request, &mut made)
        .and_then(|()| verify(config_dir, &manifest_path, &doc, options));
    if let Err(e) = result {
        for dest in made.iter().rev() {
            let _ = remove_all(dest);
        }
        return Err(e);
    }
    let mode = fs::metadata(&manifest_path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    // A stead.toml that is a link to the real file stays a link.
    let real_manifest = fs::canonicalize(&manifest_path).unwrap_or(manifest_path);
    fsutil::atomic_write(&real_manifest, doc.to_string().as_bytes(), mode)?;
    let mut added = Vec::new();
    for item in &items {
        if request.link {
            link(&item.path, &config_dir.join(&item.source_rel), item.dir)?;
        }
        added.push(Added {
            id: format!("{kind}.{}", item.name),
            path: format!("~/{}", item.rel.display()),
            source: item.source_rel.display().to_string(),
            dir: item.dir,
            linked: request.link,
        });
    }
    Ok(added)
}

/// Refuses what must not be added; says where its copy goes and its name.
fn check(
    path: &Path,
    real_home: &Path,
    guarded: &[(&'static str, PathBuf)],
    manifest: &Manifest,
    request: &AddRequest,
    taken: &mut HashSet<String>,
) -> Result<Item, AddError> {
    let meta = fs::symlink_metadata(path).map_err(|source| AddError::Missing {
        path: path.to_path_buf(),
        source,
    })?;
    let (real, rel) = in_home(path, real_home)?;
    let rel = rel.as_path();
    for (what, dir) in guarded {
        if real.starts_with(dir) || dir.starts_with(&real) {
            return Err(AddError::Own {
                path: path.to_path_buf(),
                what,
                dir: dir.clone(),
            });
        }
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(AddError::Unsupported {
            path: path.to_path_buf(),
            what: "a symlink",
            hint: "add the file it points to, or declare the link as a [symlink.NAME] by hand",
        });
    }
    if !ft.is_file() && !ft.is_dir() {
        return Err(AddError::Unsupported {
            path: path.to_path_buf(),
            what: "a special file",
            hint: "it cannot be kept in a repo",
        });
    }
    if let Some(r) = manifest
        .resources
        .iter()
        .find(|r| r.spec.path().is_some_and(|p| p == real || p == path))
    {
        return Err(AddError::Managed {
            path: path.to_path_buf(),
            id: r.id.clone(),
        });
    }
    if let Some(tree) = tree_holding(manifest, &real) {
        return Err(AddError::InTree {
            path: path.to_path_buf(),
            tree,
        });
    }
    if ft.is_dir() && request.template {
        return Err(AddError::TemplateDir(path.to_path_buf()));
    }
    if ft.is_dir() {
        scan_dir(&real, request.force)?;
    } else if !request.force
        && let Some(why) = secret(&real)
    {
        return Err(AddError::Secret {
            path: path.to_path_buf(),
            why,
        });
    }
    let name = pick_name(rel, request, taken)?;
    Ok(Item {
        rel: rel.to_path_buf(),
        source_rel: source_place(rel),
        path: real,
        name,
        dir: ft.is_dir(),
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// The real path (links among the parents resolved, the path itself not
/// followed) and its place relative to the home, which it must be below.
fn in_home(path: &Path, real_home: &Path) -> Result<(PathBuf, PathBuf), AddError> {
    let real = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => fs::canonicalize(parent)
            .map_err(|source| AddError::Missing {
                path: path.to_path_buf(),
                source,
            })?
            .join(name),
        _ => path.to_path_buf(),
    };
    match real.strip_prefix(real_home) {
        Ok(rel)
            if !rel.as_os_str().is_empty()
                && rel.components().all(|c| matches!(c, Component::Normal(_))) =>
        {
            let rel = rel.to_path_buf();
            Ok((real, rel))
        }
        _ => Err(AddError::OutsideHome {
            path: path.to_path_buf(),
            home: real_home.to_path_buf(),
        }),
    }
}

/// `--as NAME` (valid, not taken), else a unique name derived from `rel`.
fn pick_name(
    rel: &Path,
    request: &AddRequest,
    taken: &mut HashSet<String>,
) -> Result<String, AddError> {
    let Some(n) = &request.name else {
        return Ok(unique_name(&derive_name(rel), taken));
    };
    if !valid_name(n) {
        return Err(AddError::BadName(n.clone()));
    }
    if !taken.insert(n.clone()) {
        let kind = if request.link { "symlink" } else { "file" };
        return Err(AddError::NameTaken(format!("{kind}.{n}")));
    }
    Ok(n.clone())
}

/// The tree whose directory holds `real`, if any: a tree's files and
/// directories are resources named below its id (`file.nvim/lua`), and a new
/// file in one belongs in the tree's source, not in a declaration of its own.
fn tree_holding(manifest: &Manifest, real: &Path) -> Option<String> {
    let root = |id: &str| id.split_once('/').map(|(root, _)| root.to_string());
    let roots: HashSet<String> = manifest
        .resources
        .iter()
        .filter_map(|r| root(&r.id))
        .collect();
    manifest.resources.iter().find_map(|r| {
        let tree = root(&r.id).unwrap_or_else(|| r.id.clone());
        (roots.contains(&tree) && r.spec.path().is_some_and(|p| real.starts_with(p)))
            .then_some(tree)
    })
}

/// Refuses a directory holding a secret-looking file (unless forced), a
/// link or a special file (a tree source holds files and directories).
fn scan_dir(dir: &Path, force: bool) -> Result<(), AddError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| FsError::new("cannot read", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FsError::new("cannot read", &d, e))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| FsError::new("cannot read", &path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                if !force && let Some(why) = secret(&path) {
                    return Err(AddError::Secret { path, why });
                }
            } else {
                return Err(AddError::Unsupported {
                    path,
                    what: if ft.is_symlink() {
                        "a symlink inside the directory"
                    } else {
                        "a special file inside the directory"
                    },
                    hint: "add the directory's files one by one, or remove it first",
                });
            }
        }
    }
    Ok(())
}

/// Why a file looks like a private key, if it does: its name, or its first
/// line (PEM and OpenSSH private keys, PuTTY key files).
pub fn secret(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy();
    if KEY_NAMES.contains(&name.as_ref()) {
        return Some("its name is a private key's");
    }
    let mut head = Vec::with_capacity(256);
    let file = fs::File::open(path).ok()?;
    file.take(256).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let first = text.trim_start().lines().next().unwrap_or("");
    if first.starts_with("-----BEGIN") && first.contains("PRIVATE KEY-----") {
        return Some("it starts with a private key header");
    }
    if first.starts_with("PuTTY-User-Key-File") {
        return Some("it is a PuTTY private key");
    }
    None
}

/// Names of the `[KIND.NAME]` tables declared.
fn declared_names(doc: &toml_edit::DocumentMut, kind: &str) -> HashSet<String> {
    doc.get(kind)
        .and_then(toml_edit::Item::as_table_like)
        .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
        .unwrap_or_default()
}

/// A name a resource may have: letters, digits, `_` and `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The name for a home path: its file name without leading dots, other
/// characters than letters, digits, `_` and `-` made `_`
/// (`~/.config/git/config` → `config`, `~/.ssh/config` → `config`).
pub fn derive_name(rel: &Path) -> String {
    let base = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = base
        .trim_start_matches('.')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "file".to_string()
    } else {
        cleaned
    }
}

/// `base`, else `base_2`, `base_3`... whichever is not taken (and takes it).
fn unique_name(base: &str, taken: &mut HashSet<String>) -> String {
    let mut name = base.to_string();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// Where the copy of a home path goes in the repo: the same path, with the
/// first component's leading dot dropped, so the repo's files are visible
/// (`.bashrc` → `bashrc`, `.config/git/config` → `config/git/config`).
pub fn source_place(rel: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for (i, c) in rel.components().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if i == 0 {
            let trimmed = s.trim_start_matches('.');
            out.push(if trimmed.is_empty() { "dot" } else { trimmed });
        } else {
            out.push(c.as_os_str());
        }
    }
    out
}

/// Copies each item into the repo and declares it in `doc`; `made` collects
/// the copies (removed by the caller on failure).
fn copy_and_declare(
    config_dir: &Path,
    items: &[Item],
    doc: &mut toml_edit::DocumentMut,
    request: &AddRequest,
    made: &mut Vec<PathBuf>,
) -> Result<(), AddError> {
    for item in items {
        let dest = config_dir.join(&item.source_rel);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(AddError::SourceExists {
                dest,
                path: item.path.clone(),
            });
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| FsError::new("cannot create", parent, e))?;
        }
        if item.dir {
            copy_dir(&item.path, &dest, made)?;
        } else {
            let bytes =
                fs::read(&item.path).map_err(|e| FsError::new("cannot read", &item.path, e))?;
            fsutil::atomic_write(&dest, &bytes, item.mode)?;
            made.push(dest);
        }
        declare(doc, item, request);
    }
    Ok(())
}

/// Copies a directory to a temp name beside `dest`, renamed into place when
/// whole.
fn copy_dir(from: &Path, dest: &Path, made: &mut Vec<PathBuf>) -> Result<(), AddError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = fsutil::temp_path(parent, &name);
    made.push(tmp.clone());
    copy_tree(from, &tmp)?;
    fs::rename(&tmp, dest).map_err(|e| FsError::new("cannot rename into", dest, e))?;
    made.pop();
    made.push(dest.to_path_buf());
    fsutil::fsync_dir(parent)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), AddError> {
    let mode = fs::metadata(from)
        .map_err(|e| FsError::new("cannot read", from, e))?
        .permissions()
        .mode()
        & 0o7777;
    fs::create_dir(to).map_err(|e| FsError::new("cannot create", to, e))?;
    let entries = fs::read_dir(from).map_err(|e| FsError::new("cannot read", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new("cannot read", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(|e| FsError::new("cannot read", &src, e))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if meta.file_type().is_file() {
            let bytes = fs::read(&src).map_err(|e| FsError::new("cannot read", &src, e))?;
            fsutil::atomic_write(&dst, &bytes, meta.permissions().mode() & 0o7777)?;
        }
    }
    // Set last: a read-only directory would refuse its own files.
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("cannot set permissions on", to, e))?;
    Ok(())
}

fn remove_all(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Adds `[file.NAME]` (or `[symlink.NAME]`) for `item` at the end of the
/// manifest, leaving every other line as it was.
fn declare(doc: &mut toml_edit::DocumentMut, item: &Item, request: &AddRequest) {
    use toml_edit::{Item as TItem, Table, value};
    let kind = if request.link { "symlink" } else { "file" };
    let source = item.source_rel.display().to_string();
    let mut table = Table::new();
    table.insert("path", value(format!("~/{}", item.rel.display())));
    if request.link {
        table.insert("target", value(source));
    } else {
        let key = if request.template {
            "template"
        } else {
            "source"
        };
        table.insert(key, value(source));
        if !item.dir && item.mode != 0o644 {
            table.insert("mode", value(format!("{:04o}", item.mode)));
        }
    }
    // The new table goes after everything the user wrote, comments at the
    // end of the file included (they are the document's trailing text).
    let trailing = doc.trailing().as_str().unwrap_or("").to_string();
    doc.set_trailing("");
    table.decor_mut().set_prefix(format!("{trailing}\n"));
    table.set_position(Some(last_position(doc.as_table()).map_or(0, |p| p + 1)));
    let parent = doc.entry(kind).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        TItem::Table(t)
    });
    if let Some(parent) = parent.as_table_mut() {
        parent.insert(&item.name, TItem::Table(table));
    }
}

/// The highest position of any table in `table`, at any depth.
fn last_position(table: &toml_edit::Table) -> Option<isize> {
    table
        .iter()
        .filter_map(|(_, i)| i.as_table())
        .flat_map(|t| [t.position(), last_position(t)])
        .flatten()
        .max()
}

/// Loads the manifest text with the additions (with its graph), as
/// `stead.toml` would be read, so a declaration that does not load is never
/// written.
fn verify(
    config_dir: &Path,
    manifest_path: &Path,
    doc: &toml_edit::DocumentMut,
    options: &LoadOptions,
) -> Result<(), AddError> {
    crate::graph::parse(&doc.to_string(), manifest_path, config_dir, options)
        .map(|_| ())
        .map_err(|e| AddError::Invalid(Box::new(e)))
}

/// Whether two files have the same bytes, or two directories the same
/// names with the same content, all the way down.
fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?);
    if ma.is_file() && mb.is_file() {
        return Ok(fs::read(a)? == fs::read(b)?);
    }
    if !(ma.is_dir() && mb.is_dir()) {
        return Ok(false);
    }
    let names = |d: &Path| -> std::io::Result<std::collections::BTreeSet<std::ffi::OsString>> {
        fs::read_dir(d)?.map(|e| e.map(|e| e.file_name())).collect()
    };
    let (na, nb) = (names(a)?, names(b)?);
    if na != nb {
        return Ok(false);
    }
    for name in na {
        if !same_content(&a.join(&name), &b.join(&name))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Replaces the home path by a link to its copy, after the copy was read
/// back and found equal, every file of a directory too. The link is made at
/// a temp name and renamed over the file; a directory is moved aside first
/// and removed once the link is in place.
fn link(home_path: &Path, copy: &Path, dir: bool) -> Result<(), AddError> {
    let err = |source: std::io::Error| AddError::Link {
        path: home_path.to_path_buf(),
        source,
    };
    if !same_content(home_path, copy).map_err(err)? {
        return Err(err(std::io::Error::other(
            "its copy in the config repo differs from it",
        )));
    }
    let parent = home_path.parent().unwrap_or(Path::new("."));
    let name = home_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = fsutil::temp_path(parent, &name);
    std::os::unix::fs::symlink(copy, &tmp).map_err(err)?;
    if dir {
        let aside = fsutil::temp_path(parent, &name);
        fs::rename(home_path, &aside).map_err(err)?;
        if let Err(e) = fs::rename(&tmp, home_path) {
            let _ = fs::rename(&aside, home_path);
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        fs::remove_dir_all(&aside).map_err(err)?;
    } else if let Err(e) = fs::rename(&tmp, home_path) {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    fsutil::fsync_dir(parent)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_manifest_loads_with_no_problems() {
        let tmp = tempfile::tempdir().unwrap();
        for profile in [None, Some("work"), Some("my laptop")] {
            let text = starter_manifest(profile);
            let options = LoadOptions {
                home: tmp.path().to_path_buf(),
                profile: profile.map(str::to_string),
                kinds: &crate::resource::registry::REGISTRY,
            };
            let (m, _) =
                crate::graph::parse(&text, &tmp.path().join(MANIFEST_FILE), tmp.path(), &options)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(m.resources.is_empty());
            assert_eq!(m.profiles.len(), usize::from(profile.is_some()));
        }
        assert!(write_starter(tmp.path(), None).unwrap());
        // Not empty any more: left alone.
        assert!(!write_starter(tmp.path(), Some("x")).unwrap());
    }

    #[test]
    fn a_file_inside_a_trees_directory_is_refused_with_the_tree_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (home, repo) = (tmp.path().join("home"), tmp.path().join("repo"));
        fs::create_dir_all(home.join(".config/nvim/lua")).unwrap();
        fs::create_dir_all(&repo).unwrap();
        fs::write(home.join(".config/nvim/lua/new.lua"), "x").unwrap();
        // A tree's members are named below its id; declared by hand here.
        fs::write(
            repo.join(MANIFEST_FILE),
            "[dir.\"nvim/lua\"]\npath = \"~/.config/nvim/lua\"\n",
        )
        .unwrap();
        let options = LoadOptions {
            home: home.clone(),
            profile: None,
            kinds: &crate::resource::registry::REGISTRY,
        };
        let request = AddRequest {
            paths: vec![home.join(".config/nvim/lua/new.lua")],
            template: false,
            link: false,
            name: None,
            force: false,
        };
        match add(&repo, &options, &[], &request) {
            Err(AddError::InTree { tree, .. }) => assert_eq!(tree, "dir.nvim"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_and_places_are_derived_from_the_home_path() {
        assert_eq!(derive_name(Path::new(".bashrc")), "bashrc");
        assert_eq!(derive_name(Path::new(".config/git/config")), "config");
        assert_eq!(derive_name(Path::new("my file.txt")), "my_file_txt");
        assert_eq!(derive_name(Path::new("...")), "file");
        assert_eq!(source_place(Path::new(".bashrc")), Path::new("bashrc"));
        assert_eq!(
            source_place(Path::new(".config/git/.hidden")),
            Path::new("config/git/.hidden")
        );
        assert_eq!(source_place(Path::new("notes/a")), Path::new("notes/a"));
        let mut taken: HashSet<String> = ["config".to_string()].into();
        assert_eq!(unique_name("config", &mut taken), "config_2");
        assert_eq!(unique_name("config", &mut taken), "config_3");
        assert!(valid_name("git-config_2") && !valid_name("a.b") && !valid_name(""));
    }

    #[test]
    fn private_keys_look_like_secrets_and_public_ones_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("deploy");
        fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").unwrap();
        assert!(secret(&key).is_some());
        let pem = tmp.path().join("tls.pem");
        fs::write(&pem, "\n-----BEGIN RSA PRIVATE KEY-----\n").unwrap();
        assert!(secret(&pem).is_some());
        let named = tmp.path().join("id_ed25519");
        fs::write(&named, "anything").unwrap();
        assert!(secret(&named).is_some());
        let public = tmp.path().join("id_ed25519.pub");
        fs::write(&public, "ssh-ed25519 AAAA me@host\n").unwrap();
        assert_eq!(secret(&public), None);
        let cert = tmp.path().join("cert.pem");
        fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(secret(&cert), None);
    }

    #[test]
    fn a_declaration_is_appended_and_the_rest_is_kept_byte_for_byte() {
        let text = "# my dotfiles\n[vars]\nname = \"x\"  # who\n\n[file.a]  # first\npath = \"~/a\"\ncontent = \"a\"\n\n# trailing comment\n";
        let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
        let item = Item {
            path: PathBuf::from("/h/.bashrc"),
            rel: PathBuf::from(".bashrc"),
            source_rel: PathBuf::from("bashrc"),
            name: "bashrc".into(),
            dir: false,
            mode: 0o600,
        };
        let request = AddRequest {
            paths: vec![],
            template: false,
            link: false,
            name: None,
            force: false,
        };
        declare(&mut doc, &item, &request);
        let out = doc.to_string();
        assert!(out.starts_with(text), "{out}");
        assert!(
            out.ends_with(
                "\n[file.bashrc]\npath = \"~/.bashrc\"\nsource = \"bashrc\"\nmode = \"0600\"\n"
            ),
            "{out}"
        );
    }
}
