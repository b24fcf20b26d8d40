//! The `regcred.dev` API: custom resource types only, no behaviour.

pub mod conditions;
pub mod kubelet;
mod profile;

pub use profile::*;

/// The API group of every regcred resource.
pub const GROUP: &str = "regcred.dev";

/// Label that opts a namespace or a Pod out of injection (and so out of self-healing, which relies on it).
pub const OPT_OUT_LABEL: &str = "regcred.dev/inject";
/// The value of [`OPT_OUT_LABEL`] that opts out.
pub const OPT_OUT_VALUE: &str = "disabled";
