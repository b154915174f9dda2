//! The registry of resource kinds: the one list that maps a kind's name to
//! its [`ResourceKind`]. Adding a kind is one file in `resource/` and one
//! line in `KINDS`.

use crate::manifest::Kind;
use crate::manifest::schema::{KindSchema, KindTable};

use super::kind::ResourceKind;
use super::noop;

/// The registry as the manifest loader's table of kinds
/// ([`crate::manifest::LoadOptions::kinds`]).
#[derive(Debug, Clone, Copy)]
pub struct Registry;

/// The registry, to hand to the loader.
pub static REGISTRY: Registry = Registry;

impl KindTable for Registry {
    fn find(&self, name: &str) -> Option<&dyn KindSchema> {
        find(name)
            .filter(|k| k.declarable())
            .map(|k| k as &dyn KindSchema)
    }

    fn get(&self, kind: Kind) -> &dyn KindSchema {
        get(kind)
    }

    fn names(&self) -> Vec<&'static str> {
        KINDS
            .iter()
            .filter(|k| k.declarable())
            .map(|k| k.kind().as_str())
            .collect()
    }
}

/// Deserializes a kind recorded in a saved plan: only a registered name is
/// one (`deserialize_with` on [`super::Change::kind`]).
pub fn deserialize_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    use serde::Deserialize;
    let name = String::deserialize(d)?;
    find(&name).map(|k| k.kind()).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown variant `{name}`, expected one of {}",
            names()
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Every kind, in the order error messages list them (one line per kind).
static KINDS: &[&dyn ResourceKind] = &[
    &super::file::File,
    &super::dir::Dir,
    &super::symlink::Symlink,
    &super::exec::Exec,
    &super::noop::Noop,
    &super::line::Line,
    &super::tree::Tree,
    &super::package::Package,
    &super::secret::Secret,
    &super::check::Check,
];

/// Every registered kind.
pub fn all() -> &'static [&'static dyn ResourceKind] {
    KINDS
}

/// The kind named `name`, if registered.
pub fn find(name: &str) -> Option<&'static dyn ResourceKind> {
    KINDS.iter().copied().find(|k| k.kind().as_str() == name)
}

/// The implementation of `kind`; a kind that is not registered (a saved plan
/// from a newer stead) behaves as `noop`: it touches nothing.
pub fn get(kind: Kind) -> &'static dyn ResourceKind {
    find(kind.as_str()).unwrap_or(&noop::Noop)
}

/// The names of every kind, for messages.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind().as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let names = names();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in names {
            assert_eq!(find(n).map(|k| k.kind().as_str()), Some(n));
            let kind = find(n).unwrap().kind();
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{n}\""));
            let mut de = serde_json::Deserializer::from_str(&json);
            assert_eq!(deserialize_kind(&mut de).unwrap().as_str(), n);
        }
        let mut de = serde_json::Deserializer::from_str("\"nope\"");
        assert!(deserialize_kind(&mut de).is_err());
    }
}
