//! Credentials: where they come from (a Secret in regcred's own namespace, or short-lived tokens minted by the
//! [`refresher`] from AWS ECR, GCP, Azure Container Registry or Quay, most of them from workload identity with no
//! stored secret) and the dockerconfigjson they become ([`dockerconfig`]). Secret material is held in
//! [`SecretBytes`], which never prints its content.

pub mod azure;
pub mod dockerconfig;
pub mod ecr;
pub mod egress;
pub mod gcp;
pub mod identity;
pub mod oauth;
pub mod phrase;
pub mod quay;
pub mod refresher;
mod source;
pub mod tokens;

pub use dockerconfig::{DockerConfig, render};
pub use source::{CredentialError, dockerconfig_from_source};

use secrecy::{ExposeSecret as _, SecretSlice};

/// Secret material, held by [`secrecy`]: `Debug` prints `[REDACTED]` in its place, so credentials cannot reach
/// logs, Events or status by accident, and the bytes are zeroed when dropped.
#[derive(Clone, Debug, Default)]
pub struct SecretBytes(SecretSlice<u8>);

impl SecretBytes {
    /// Wraps secret material.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }

    /// The secret material itself: only for writing it where it belongs.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// Two credentials are the same when their bytes are (a rotation is a change; nothing compares them against an
/// attacker's guess).
impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print_their_content() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", DockerConfig(s.clone())).contains("hunter2"));
        assert_eq!(s.expose(), b"hunter2");
    }
}
