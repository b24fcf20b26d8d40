//! The names regcred writes under: its field manager, the labels and annotations of the objects it manages, and
//! the names of the Secrets it writes. Every layer that writes or recognises those objects takes them from here.

use kube::ResourceExt;

use crate::api::RegistryProfile;

/// Field manager of every write regcred makes.
pub const FIELD_MANAGER: &str = "regcred";
/// Label on every managed Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "regcred";
/// Label naming the profile a managed Secret belongs to.
pub const PROFILE_LABEL: &str = "regcred.dev/profile";
/// Label on the token copies in regcred's own namespace (never `managed-by`: no sync plan may see them).
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The only Secret type regcred writes.
pub const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// Annotation on managed Secrets holding short-lived tokens: when they expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "regcred.dev/expires-at";
/// Annotation on a profile confirming the deletions the guard holds, set to the profile's `metadata.generation`
/// (see [`crate::secrets::guard`]).
pub const CONFIRM_DELETIONS_ANNOTATION: &str = "regcred.dev/confirm-deletions";

/// The Secret name a profile writes.
pub fn secret_name(profile: &RegistryProfile) -> String {
    profile.spec.secret_name.clone().unwrap_or_else(|| format!("regcred-{}", profile.name_any()))
}

/// The Secret in regcred's own namespace holding the current short-lived token of the profile with `uid`.
pub fn token_copy_name(uid: &str) -> String {
    format!("regcred-token-{uid}")
}
