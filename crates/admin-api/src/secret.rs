//! Write-only secret fields.

use crate::error::Error;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// What every response shows in place of a secret.
pub const MASK: &str = "***";

/// A secret in a resource document. Requests carry the plaintext; responses always carry
/// `"***"`. Sending `"***"` back in an update keeps the stored value, so a document read with
/// GET can be changed and PUT back without knowing its secrets.
#[derive(Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, format = Password, example = "***")]
pub struct SecretValue(String);

impl SecretValue {
    /// The masked value shown in responses.
    pub fn masked() -> Self {
        SecretValue(MASK.to_owned())
    }

    fn is_mask(&self) -> bool {
        self.0 == MASK
    }

    /// The store secret for a create: the mask is refused, there is nothing to keep.
    pub(crate) fn for_create(&self, field: &str) -> Result<store::Secret, Error> {
        if self.is_mask() {
            return Err(Error::Invalid {
                field: field.to_owned(),
                reason: format!("{MASK:?} keeps a stored secret and is only valid in an update"),
            });
        }
        Ok(store::Secret::new(self.0.clone()))
    }

    /// The store secret for an update: the mask keeps `stored`, if there is one.
    pub(crate) fn for_update(
        &self,
        field: &str,
        stored: Option<&store::Secret>,
    ) -> Result<store::Secret, Error> {
        match (self.is_mask(), stored) {
            (true, Some(s)) => Ok(s.clone()),
            (true, None) => Err(Error::Invalid {
                field: field.to_owned(),
                reason: format!("{MASK:?} keeps a stored secret, but none is stored"),
            }),
            (false, _) => Ok(store::Secret::new(self.0.clone())),
        }
    }

    pub(crate) fn is_keep(&self) -> bool {
        self.is_mask()
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// How a document's secrets become store secrets: for a create, or for an update of a stored
/// row whose current secrets are kept where the document says `"***"`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode<'a, T> {
    Create,
    Update(Option<&'a T>),
}

impl<'a, T> Mode<'a, T> {
    pub(crate) fn secret(
        &self,
        value: &SecretValue,
        field: &str,
        stored: impl FnOnce(&'a T) -> Option<&'a store::Secret>,
    ) -> Result<store::Secret, Error> {
        match self {
            Mode::Create => value.for_create(field),
            Mode::Update(old) => value.for_update(field, old.and_then(stored)),
        }
    }
}
