//! `secret`: a value generated once and kept only age-encrypted in the state
//! dir ([`crate::secret`]); a file's `content` uses it as `${secret.NAME}`,
//! which makes that file wait for it and never shows its content.
//!
//! The plan and the op name the secret and how it is made, never its
//! value. A secret is made when it has none, made anew when a rotation was
//! asked for (`stead secret rotate`, or `state remove-machine` for a
//! lineage secret), and encrypted again (same value) when its recipients
//! change (for a lineage secret: a member joined). A lineage secret this
//! machine cannot read yet (it joined after it was made) is a pending
//! conflict until a member encrypts it to it. stead never removes a
//! secret's ciphertext: one no longer declared is forgotten, and its
//! `.age` file stays.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::manifest::{Kind, OtherSpec, Problem, Spec, SpecInput};
use crate::secret::{Charset, Scope, SecretError, SecretSpec};

use super::kind::{
    ApplyEnv, Key, KeyType, KindSchema, Planned, ResourceKind, custom_data, custom_op,
    unexpected_op, unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError};

/// The kind's name.
const SECRET: Kind = Kind::named("secret");

/// Characters in a value when `length` is not given.
const DEFAULT_LENGTH: usize = 32;

/// The `secret` kind.
pub struct Secret;

/// What apply does to a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Step {
    /// Make a new value (none yet, or a rotation).
    Generate,
    /// Encrypt the kept value to the recipients now declared.
    Reencrypt,
}

/// The op's data: the spec (names and public keys only) and the step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecretOp {
    spec: SecretSpec,
    step: Step,
}

/// The spec of a `secret` resource.
pub fn secret_spec(spec: &Spec) -> Option<&SecretSpec> {
    match spec {
        Spec::Other(o) if o.kind == SECRET => o.data::<SecretSpec>(),
        _ => None,
    }
}

impl KindSchema for Secret {
    fn kind(&self) -> Kind {
        SECRET
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::optional("length", KeyType::Count),
            Key::optional("charset", KeyType::Str),
            Key::optional("scope", KeyType::Str),
            Key::optional("recipients", KeyType::StrList),
        ];
        KEYS
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let name = input.name().to_string();
        // The name is a file name in the state dir: nothing that could
        // leave it.
        if !crate::secret::is_plain_name(&name) {
            let span = input.span();
            input.problem(
                Problem::at(
                    span,
                    format!("secret.{name:?}: a secret's name may hold only letters, digits, '_' and '-'"),
                )
                .label("bad name")
                .help("its value is kept in <state-dir>/secrets/NAME.age"),
            );
            return None;
        }
        let scope = scope(input);
        let mut ok = scope.is_some();
        let charset = match input.literal("charset") {
            None => Some(Charset::Alnum),
            Some((text, span)) => match Charset::parse(&text) {
                Ok(c) => Some(c),
                Err(why) => {
                    input.problem(Problem::at(span, why).label("bad charset"));
                    None
                }
            },
        };
        let mut recipients = input.secret_recipients().to_vec();
        for (r, span) in input.list("recipients") {
            match crate::secret::check_recipient(&r) {
                Ok(()) => recipients.push(r),
                Err(e) => {
                    ok = false;
                    input.problem(Problem::at(span, e.to_string()).label("not a recipient"));
                }
            }
        }
        recipients.sort();
        recipients.dedup();
        let length = input.count("length").map_or(DEFAULT_LENGTH, |n| n as usize);
        let charset = charset.filter(|_| ok)?;
        let scope = scope?;
        Some(Spec::Other(OtherSpec {
            kind: SECRET,
            path: None,
            data: Arc::new(SecretSpec {
                name,
                length,
                charset,
                recipients,
                scope,
            }),
        }))
    }
}

/// `scope`: `"machine"` (the default) or `"lineage"`.
fn scope(input: &mut SpecInput) -> Option<Scope> {
    match input.literal("scope") {
        None => Some(Scope::Machine),
        Some((s, _)) if s == "machine" => Some(Scope::Machine),
        Some((s, _)) if s == "lineage" => Some(Scope::Lineage),
        Some((s, span)) => {
            input.problem(
                Problem::at(
                    span,
                    format!("`scope` must be \"machine\" or \"lineage\", not {s:?}"),
                )
                .label("bad scope"),
            );
            None
        }
    }
}

impl ResourceKind for Secret {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, _owned: bool) -> Result<Planned, ResourceError> {
        let Some(s) = secret_spec(spec) else {
            return Err(unexpected_spec(self.kind(), spec));
        };
        let secrets = ctx.secrets;
        let op = |step: Step| {
            custom_op(
                SECRET,
                &SecretOp {
                    spec: s.clone(),
                    step,
                },
            )
        };
        let made = format!(
            "{} {} characters, kept encrypted{}",
            s.length,
            s.charset.describe(),
            if s.scope == Scope::Lineage {
                " for the lineage"
            } else {
                ""
            }
        );
        if !secrets.path_of(s.scope, &s.name)?.exists() {
            return Ok(Planned::new(
                Action::Create,
                format!("generated: {made}"),
                op(Step::Generate)?,
            ));
        }
        if secrets.rotation_requested(s.scope, &s.name)? {
            return Ok(Planned::new(
                Action::Update,
                format!("rotation requested: generated anew, {made}"),
                op(Step::Generate)?,
            ));
        }
        match secrets.value(s.scope, &s.name) {
            Ok(_) => {}
            Err(SecretError::Undecryptable { .. })
                if s.scope == Scope::Lineage && !secrets.is_recipient_of(s.scope, &s.name)? =>
            {
                return Ok(Planned::conflict(
                    "pending: it was encrypted before this machine joined the lineage; a member \
                     that can read it encrypts it to this machine at its next 'stead sync' \
                     (then 'stead sync' here)",
                ));
            }
            Err(e @ SecretError::Undecryptable { .. }) => {
                return Ok(Planned::conflict(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        let wanted = secrets.wanted_recipients(s)?;
        if secrets.stored_recipients(s.scope, &s.name)?.as_ref() != Some(&wanted) {
            return Ok(Planned::new(
                Action::Update,
                format!(
                    "recipients changed: encrypted again to {} recipient(s), same value",
                    wanted.len()
                ),
                op(Step::Reencrypt)?,
            ));
        }
        Ok(Planned::unchanged(""))
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        let Op::Custom { data } = op else {
            return Err(unexpected_op(self.kind(), op));
        };
        let SecretOp { spec, step } = custom_data::<SecretOp>(SECRET, data)?;
        match step {
            Step::Generate => env.secrets.generate(&spec)?,
            Step::Reencrypt => env.secrets.reencrypt(&spec)?,
        }
        Ok(Applied::default())
    }
}
