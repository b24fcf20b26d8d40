//! The `regcred.dev` API: custom resource types only, no behaviour.

mod profile;

pub use profile::*;

/// The API group of every regcred resource.
pub const GROUP: &str = "regcred.dev";
