//! What the manifest loader needs to know of a resource kind: its name, its
//! keys and their types, the key holding its path, whether it owns that
//! path, and how its spec is built from the keys. The kinds implement
//! [`KindSchema`] in `resource/` (with their behaviour, `ResourceKind`);
//! the registry hands the loader a [`KindTable`] through
//! [`super::LoadOptions`]. So the loader types every key from the kind's own
//! table without knowing any kind's code, and `manifest` never depends on
//! `resource`.

use super::{Kind, Problem, Resource, Spec, SpecInput};

/// How a manifest key's value is typed (checked while loading, with the
/// error messages of the loader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// A string (references resolved when the spec is built).
    Str,
    /// `true` or `false`.
    Bool,
    /// A string run with `sh -c`, or an array of program and arguments.
    Command,
    /// A table of strings (`env`).
    StrMap,
    /// `"30s"`, `"500ms"`, `"2m"` or a number of seconds.
    Duration,
    /// An array of strings (`ignore`).
    StrList,
    /// A whole number from 1 to 4096 (`length`).
    Count,
}

/// One manifest key of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Its name in the manifest.
    pub name: &'static str,
    /// Its type.
    pub ty: KeyType,
    /// Whether a resource must have it.
    pub required: bool,
}

impl Key {
    /// An optional key.
    pub const fn optional(name: &'static str, ty: KeyType) -> Key {
        Key {
            name,
            ty,
            required: false,
        }
    }

    /// A required key.
    pub const fn required(name: &'static str, ty: KeyType) -> Key {
        Key {
            name,
            ty,
            required: true,
        }
    }
}

/// Whether stead records what a kind manages as its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Its path is recorded as owned once applied, and removed when the
    /// resource is no longer declared.
    pub owns_path: bool,
    /// Something already exactly as declared is adopted (recorded as owned)
    /// without being written. Directories are not: a dir stead did not
    /// create stays the user's.
    pub adopt_when_right: bool,
}

impl Ownership {
    /// Owns nothing (commands, groups, edits inside a file stead does not own).
    pub const NONE: Ownership = Ownership {
        owns_path: false,
        adopt_when_right: false,
    };
}

/// A kind as the loader sees it.
pub trait KindSchema: Sync {
    /// The kind (its name in manifests, ids, state and plans).
    fn kind(&self) -> Kind;

    /// Its manifest keys besides the ones every resource takes, in the
    /// order the "takes: ..." help lists them.
    fn keys(&self) -> &'static [Key];

    /// The key holding the path it manages, resolved before the other keys
    /// (it may use only `${vars.NAME}`) and the value `${kind.name}` gives.
    fn path_key(&self) -> Option<&'static str> {
        None
    }

    /// Whether stead owns its path.
    fn ownership(&self) -> Ownership {
        Ownership::NONE
    }

    /// Builds the spec from the typed keys; problems go to `input` (then
    /// `None`).
    fn build(&self, input: &mut SpecInput) -> Option<Spec>;

    /// Whether a manifest may declare it as `[KIND.NAME]` (false for a kind
    /// that only comes out of another's [`KindSchema::expand`]).
    fn declarable(&self) -> bool {
        true
    }

    /// The resources one declaration stands for (a file tree is one per
    /// file and directory); problems go to `problems`. Default: itself.
    fn expand(&self, resource: Resource, problems: &mut Vec<Problem>) -> Vec<Resource> {
        let _ = problems;
        vec![resource]
    }
}

/// The kinds a manifest may declare, by name (the resource registry).
pub trait KindTable: Sync {
    /// The kind named `name`, if there is one.
    fn find(&self, name: &str) -> Option<&dyn KindSchema>;

    /// The schema of `kind` (one the table found: every declared kind).
    fn get(&self, kind: Kind) -> &dyn KindSchema;

    /// Every kind's name, in the order messages list them.
    fn names(&self) -> Vec<&'static str>;
}
