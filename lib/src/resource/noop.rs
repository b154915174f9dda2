//! `noop`: does nothing and owns nothing (grouping with edges, tests,
//! benchmarks).

use crate::manifest::{Kind, Spec, SpecInput};

use super::kind::{Key, KindSchema, Planned, ResourceKind};
use super::{PlanContext, ResourceError};

/// The `noop` kind.
pub struct Noop;

impl KindSchema for Noop {
    fn kind(&self) -> Kind {
        Kind::Noop
    }

    fn keys(&self) -> &'static [Key] {
        &[]
    }

    fn build(&self, _input: &mut SpecInput) -> Option<Spec> {
        Some(Spec::Noop)
    }
}

impl ResourceKind for Noop {
    fn plan(
        &self,
        _spec: &Spec,
        _ctx: &PlanContext,
        _owned: bool,
    ) -> Result<Planned, ResourceError> {
        Ok(Planned::unchanged(""))
    }

    /// A noop rests on nothing.
    fn seal_paths(&self, _spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        Some(Vec::new())
    }
}
