//! Registry preflight: proves credentials and probe images against the registry itself, through the OCI
//! distribution API, and says precisely what is wrong.
//!
//! The `/v2/` ping and its challenge (Basic, or Bearer through the registry's token service) are done here with
//! reqwest, because oci-client has no call that verifies credentials without an image. Manifests are fetched with
//! oci-client (`pull_manifest_raw`), and read here: the media type decides whether the manifest type is accepted,
//! an index is resolved to the configured platform, and the image size is the config's plus the layers'.

mod client;
mod manifest;
mod phrase;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use client::{ClientError, Session, crypto_provider, error_chain, https_client, realm_allowed, untrusted_tls};
use client::{check_image, ping};
pub use phrase::{Cause, Problem};

use crate::api::{ManifestType, RegistryTls, Validation};

/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Why a check failed; each is a condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    AuthenticationFailed,
    RegistryUnreachable,
    #[serde(rename = "TLSUntrusted")]
    TlsUntrusted,
    ImageNotFound,
    ImageTooLarge,
    UnsupportedManifestType,
    InvalidReference,
    /// A probe image on a registry the profile does not serve: its credentials are not sent there.
    ImageNotServed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::RegistryUnreachable => "RegistryUnreachable",
            Self::TlsUntrusted => "TLSUntrusted",
            Self::ImageNotFound => "ImageNotFound",
            Self::ImageTooLarge => "ImageTooLarge",
            Self::UnsupportedManifestType => "UnsupportedManifestType",
            Self::InvalidReference => "InvalidReference",
            Self::ImageNotServed => "ImageNotServed",
        }
    }

    /// The exit status of `regcred check` for this failure: distinct per reason, for scripts.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::AuthenticationFailed => 3,
            Self::RegistryUnreachable => 4,
            Self::TlsUntrusted => 5,
            Self::ImageNotFound => 6,
            Self::ImageTooLarge => 7,
            Self::UnsupportedManifestType => 8,
            Self::InvalidReference => 2,
            Self::ImageNotServed => 9,
        }
    }
}

/// A failed check: the reason and a message for humans (never secret material), phrased by [`Problem`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

/// Manifest formats a profile may accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Docker,
    Oci,
}

/// What to check, and how to reach the registry.
#[derive(Clone, Debug)]
pub struct Options {
    /// Extra trusted CA certificates (PEM), for private registries.
    pub ca_pem: Option<String>,
    /// Skip TLS verification: only by an explicit opt-in.
    pub insecure_skip_verify: bool,
    /// `os/arch[/variant]` an index is resolved to.
    pub platform: String,
    /// Largest accepted image (config plus layers), in bytes.
    pub max_size: Option<u64>,
    /// Accepted manifest formats; empty accepts both.
    pub accepted: Vec<ManifestKind>,
    /// Per request.
    pub timeout: Duration,
}

impl Options {
    /// The options a profile's `validation` and `tls` ask for.
    pub fn for_profile(validation: &Validation, tls: Option<&RegistryTls>) -> Self {
        Self {
            ca_pem: tls.and_then(|t| t.ca_bundle.clone()),
            insecure_skip_verify: tls.and_then(|t| t.insecure_skip_verify) == Some(true),
            platform: validation.platform.clone().unwrap_or_else(|| "linux/amd64".into()),
            max_size: validation.max_image_size.as_deref().and_then(crate::quantity::parse_size),
            accepted: validation
                .manifest_types
                .iter()
                .map(|t| match t {
                    ManifestType::Docker => ManifestKind::Docker,
                    ManifestType::Oci => ManifestKind::Oci,
                })
                .collect(),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ca_pem: None,
            insecure_skip_verify: false,
            platform: "linux/amd64".into(),
            max_size: None,
            accepted: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Registry credentials. `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// What one probe image resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// The full reference checked.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Config plus layers, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The platform an index was resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The outcome of a preflight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub registry: String,
    /// `None`: the credentials (or anonymous access) work.
    pub credentials: Option<Failure>,
    pub images: Vec<ImageResult>,
    pub duration_ms: u64,
}

impl Report {
    /// The first failure, credentials first.
    pub fn first_failure(&self) -> Option<&Failure> {
        self.credentials.as_ref().or_else(|| self.images.iter().find_map(|i| i.failure.as_ref()))
    }
}

/// The full reference of a probe image: as given when it names a registry (a first component with a `.` or `:`,
/// or `localhost`), otherwise under the profile's registry (which may carry a path prefix).
pub fn qualify(image: &str, registry: &str) -> String {
    if super::reference::names_registry(image) {
        image.to_owned()
    } else {
        format!("{}/{image}", registry.trim_end_matches('/'))
    }
}

/// Why a probe image may not be checked with `registry`'s credentials: it is on a registry `registry` does not
/// serve (see [`super::serves`]), so the kubelet would never send them there. `None`: it may.
pub fn not_served(image: &str, registry: &str) -> Option<Failure> {
    let full = qualify(image, registry);
    (!super::serves(registry, &full))
        .then(|| Problem::NotServed { image: full, registry: registry.to_owned() }.failure())
}

/// Checks `credentials` (or anonymous access) against `registry` (`host[:port][/path]`), then every probe image.
/// A probe image on a registry `registry` does not serve is refused ([`not_served`]) without a request.
pub async fn check(registry: &str, credentials: Option<&Credentials>, images: &[String], options: &Options) -> Report {
    let started = Instant::now();
    let host = super::host_of(registry);
    // Docker Hub's names (docker.io, index.docker.io) are not where its API answers.
    let host = if super::is_docker_hub(host) { "registry-1.docker.io".to_owned() } else { host.to_owned() };
    let mut report = Report { registry: host.clone(), credentials: None, images: Vec::new(), duration_ms: 0 };
    let session = Session::new(options);
    match &session {
        Ok(session) => report.credentials = ping(&session.http, &host, credentials).await.err(),
        Err(f) => report.credentials = Some(f.clone()),
    }
    for image in images {
        let full = qualify(image, registry);
        let result = match (not_served(image, registry), &session) {
            (Some(f), _) => ImageResult { image: full, failure: Some(f), ..ImageResult::default() },
            // Images are checked only with working credentials: otherwise every image would repeat the failure.
            (None, Ok(session)) if report.credentials.is_none() => {
                check_image(session, credentials, &full, options).await
            }
            (None, _) => continue,
        };
        report.images.push(result);
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

/// Resolves `images` (full references) with `credentials` (or anonymously) through `session` (built for
/// `options` and these credentials only: see [`Session`]), all at once, without the `/v2/` ping: each image's own
/// requests say whether the credentials are good for it. The admission checks' call.
pub async fn resolve_images(
    session: &Session,
    credentials: Option<&Credentials>,
    images: &[String],
    options: &Options,
) -> Vec<ImageResult> {
    futures::future::join_all(images.iter().map(|image| check_image(session, credentials, image, options))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_images_go_under_the_profile_registry() {
        let cases = [
            ("team/app:1", "reg.example.com:5000", "reg.example.com:5000/team/app:1"),
            ("app", "reg.example.com", "reg.example.com/app"),
            ("repo/app@sha256:abc", "europe-docker.pkg.dev/proj", "europe-docker.pkg.dev/proj/repo/app@sha256:abc"),
            ("other.example.com/team/app:1", "reg.example.com", "other.example.com/team/app:1"),
            ("localhost/app", "reg.example.com", "localhost/app"),
            ("localhost:5000/app", "reg.example.com", "localhost:5000/app"),
            ("library/nginx", "docker.io", "docker.io/library/nginx"),
        ];
        for (image, registry, want) in cases {
            assert_eq!(qualify(image, registry), want, "{image} under {registry}");
        }
    }

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials { username: "bot".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
