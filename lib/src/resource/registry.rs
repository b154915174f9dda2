//! The registry of resource kinds: the one list that maps a kind's name to
//! its [`ResourceKind`]. Adding a kind is one file in `resource/` and one
//! line in [`KINDS`].

use crate::manifest::Kind;

use super::kind::ResourceKind;
use super::noop;

/// Every kind, in the order error messages list them (one line per kind).
static KINDS: &[&dyn ResourceKind] = &[
    &super::file::File,
    &super::dir::Dir,
    &super::symlink::Symlink,
    &super::exec::Exec,
    &super::noop::Noop,
    &super::line::Line,
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
            let json = serde_json::to_string(&Kind::parse(n).unwrap()).unwrap();
            assert_eq!(json, format!("\"{n}\""));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap().as_str(), n);
        }
        assert!(serde_json::from_str::<Kind>("\"nope\"").is_err());
    }
}
