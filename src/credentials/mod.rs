//! Credentials: where they come from (a Secret in regcred's own namespace, or short-lived tokens minted by the
//! [`refresher`] from AWS ECR, GCP, Azure Container Registry or Quay, most of them from workload identity with no
//! stored secret) and the dockerconfigjson they become. Secret material is held in
//! [`SecretBytes`], which never prints its content.

pub mod azure;
pub mod ecr;
pub mod egress;
pub mod gcp;
pub mod identity;
pub mod oauth;
pub mod quay;
pub mod refresher;
mod source;
pub mod tokens;

pub use source::{CredentialError, DockerConfig, dockerconfig_from_source, render};

use std::fmt;

/// Secret material. `Debug` and `Display` print only its length, so credentials cannot reach logs, Events or
/// status by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps secret material.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret material itself: only for writing it where it belongs.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print_their_content() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), b"hunter2");
    }
}
