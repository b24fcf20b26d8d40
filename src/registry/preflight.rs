//! Registry preflight: proves credentials and probe images against the registry itself, through the OCI
//! distribution API, and says precisely what is wrong.
//!
//! The `/v2/` ping and its challenge (Basic, or Bearer through the registry's token service) are done here with
//! reqwest, because oci-client has no call that verifies credentials without an image. Manifests are fetched with
//! oci-client (`pull_manifest_raw`), and read here: the media type decides whether the manifest type is accepted,
//! an index is resolved to the configured platform, and the image size is the config's plus the layers'.

use std::time::{Duration, Instant};

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use serde::{Deserialize, Serialize};

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
        }
    }
}

/// A failed check: the reason and a message for humans (never secret material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

fn failure(reason: Reason, message: impl Into<String>) -> Failure {
    Failure { reason, message: message.into() }
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
            max_size: validation.max_image_size.as_deref().and_then(parse_size),
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

/// Parses a quantity such as `20Gi`, `500M` or `1.5Gi` into bytes.
pub fn parse_size(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * factor;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a finite, non-negative quantity below u64::MAX; a size is not exact to the byte beyond 2^53"
    )]
    let bytes = (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64);
    bytes
}

/// The manifest formats by media type: `Some(kind)` for an image manifest, `None` for anything else.
fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        DOCKER_MANIFEST => Some(ManifestKind::Docker),
        OCI_MANIFEST => Some(ManifestKind::Oci),
        _ => None,
    }
}

/// The subset of a manifest or index this module reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl Manifest {
    /// The declared media type, or what the shape says when it is omitted (OCI allows that).
    fn media_type(&self) -> String {
        match (&self.media_type, &self.manifests) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => OCI_INDEX.into(),
            (None, None) => OCI_MANIFEST.into(),
        }
    }

    fn size(&self) -> u64 {
        self.config.as_ref().map_or(0, |c| c.size) + self.layers.iter().flatten().map(|l| l.size).sum::<u64>()
    }

    /// The digest of the index entry for `platform` (`os/arch` matches any variant; `os/arch/variant` only it).
    fn entry_for(&self, platform: &str) -> Result<(String, String), Vec<String>> {
        let entries = self.manifests.as_deref().unwrap_or_default();
        let found = entries.iter().filter_map(|e| Some((e, e.platform.as_ref()?))).find(|(_, p)| {
            let name = p.name();
            name == platform || format!("{}/{}", p.os, p.architecture) == platform
        });
        match found {
            Some((e, p)) => Ok((e.digest.clone(), p.name())),
            None => Err(entries.iter().filter_map(|e| e.platform.as_ref().map(Platform::name)).collect()),
        }
    }
}

/// Judges a resolved image manifest against the options.
fn judge(media_type: &str, size: u64, options: &Options) -> Option<Failure> {
    let Some(kind) = manifest_kind(media_type) else {
        return Some(failure(Reason::UnsupportedManifestType, format!("{media_type} is not an image manifest")));
    };
    if !options.accepted.is_empty() && !options.accepted.contains(&kind) {
        let accepted: Vec<&str> = options
            .accepted
            .iter()
            .map(|k| match k {
                ManifestKind::Docker => "Docker v2",
                ManifestKind::Oci => "OCI",
            })
            .collect();
        return Some(failure(
            Reason::UnsupportedManifestType,
            format!("the manifest is {media_type}; accepted: {}", accepted.join(", ")),
        ));
    }
    match options.max_size {
        Some(max) if size > max => Some(failure(
            Reason::ImageTooLarge,
            format!("the image is {size} bytes (config and layers), more than the {max} allowed"),
        )),
        _ => None,
    }
}

/// Classifies a transport error: an untrusted certificate, or an unreachable registry.
fn transport(err: &(dyn std::error::Error + 'static), what: &str) -> Failure {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let text = chain.join(": ");
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("invalid peer") {
        failure(Reason::TlsUntrusted, format!("{what}: the registry's TLS certificate is not trusted ({text})"))
    } else {
        failure(Reason::RegistryUnreachable, format!("{what}: {text}"))
    }
}

/// Checks `credentials` (or anonymous access) against `registry` (`host[:port][/path]`), then every probe image.
pub async fn check(registry: &str, credentials: Option<&Credentials>, images: &[String], options: &Options) -> Report {
    let started = Instant::now();
    let host = registry.split('/').next().unwrap_or(registry);
    // Docker Hub's names (docker.io, index.docker.io) are not where its API answers.
    let host = if super::is_docker_hub(host) { "registry-1.docker.io".to_owned() } else { host.to_owned() };
    let mut report = Report { registry: host.clone(), credentials: None, images: Vec::new(), duration_ms: 0 };
    match http_client(options) {
        Ok(http) => report.credentials = ping(&http, &host, credentials).await.err(),
        Err(f) => report.credentials = Some(f),
    }
    // Images are checked only with working credentials: otherwise every image would repeat the same failure.
    if report.credentials.is_none() {
        let client = oci_client(options);
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        for image in images {
            report.images.push(check_image(&client, &auth, &qualify(image, registry), options).await);
        }
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

fn http_client(options: &Options) -> Result<reqwest::Client, Failure> {
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.timeout)
        .user_agent(concat!("regcred/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &options.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| failure(Reason::TlsUntrusted, format!("the CA bundle is not valid PEM: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if options.insecure_skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| transport(&e, "building the HTTP client"))
}

fn oci_client(options: &Options) -> oci_client::Client {
    crate::install_crypto_provider();
    let extra_root_certificates = options
        .ca_pem
        .iter()
        .map(|pem| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: pem.as_bytes().to_vec(),
        })
        .collect();
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Https,
        accept_invalid_certificates: options.insecure_skip_verify,
        extra_root_certificates,
        platform_resolver: None,
        read_timeout: Some(options.timeout),
        connect_timeout: Some(options.timeout),
        user_agent: concat!("regcred/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// `GET /v2/`, then the challenge it answers with: Basic is retried with the credentials, Bearer asks the token
/// service for a token with them.
async fn ping(http: &reqwest::Client, host: &str, credentials: Option<&Credentials>) -> Result<(), Failure> {
    let url = format!("https://{host}/v2/");
    let res = http.get(&url).send().await.map_err(|e| transport(&e, &format!("GET {url}")))?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    if status != reqwest::StatusCode::UNAUTHORIZED {
        return Err(failure(Reason::RegistryUnreachable, format!("GET {url} answered {status}: not a registry?")));
    }
    let challenge =
        res.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let (scheme, params) = parse_challenge(challenge);
    let scheme = scheme.as_str();
    let Some(creds) = credentials else {
        if scheme.eq_ignore_ascii_case("bearer") {
            // Anonymous pulls through a token service (Docker Hub, GHCR): only images can tell.
            return Ok(());
        }
        return Err(failure(Reason::AuthenticationFailed, format!("{host} requires credentials and none were given")));
    };
    let answer = if scheme.eq_ignore_ascii_case("basic") {
        http.get(&url).basic_auth(&creds.username, Some(&creds.password)).send().await
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let param = |name: &str| challenge_param(&params, name);
        let Some(realm) = param("realm") else {
            return Err(failure(Reason::RegistryUnreachable, format!("{host}: a Bearer challenge without a realm")));
        };
        let mut query = Vec::new();
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        http.get(&realm).query(&query).basic_auth(&creds.username, Some(&creds.password)).send().await
    } else {
        return Err(failure(Reason::RegistryUnreachable, format!("{host}: unknown challenge {scheme:?}")));
    };
    let answer = answer.map_err(|e| transport(&e, "authenticating"))?;
    match answer.status() {
        s if s.is_success() => Ok(()),
        s if s == reqwest::StatusCode::UNAUTHORIZED || s == reqwest::StatusCode::FORBIDDEN => Err(failure(
            Reason::AuthenticationFailed,
            format!("{host} rejected the credentials of user {:?} ({s})", creds.username),
        )),
        s => Err(failure(Reason::RegistryUnreachable, format!("authenticating with {host} answered {s}"))),
    }
}

/// The scheme and parameters of a `WWW-Authenticate` header's challenge: the first Bearer or Basic one when the
/// header offers several, otherwise the first. Quoted values keep their commas and escapes (RFC 9110 grammar,
/// parsed by http-auth). A header that does not parse gives its first word as the scheme and no parameters.
fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let challenges: Vec<http_auth::ChallengeRef<'_>> =
        http_auth::parser::ChallengeParser::new(header).filter_map(Result::ok).collect();
    let known = |c: &&http_auth::ChallengeRef<'_>| {
        c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("basic")
    };
    match challenges.iter().find(known).or(challenges.first()) {
        Some(c) => (c.scheme.to_owned(), c.params.iter().map(|(k, v)| ((*k).to_owned(), v.to_unescaped())).collect()),
        None => (header.split_whitespace().next().unwrap_or_default().to_owned(), Vec::new()),
    }
}

/// A parameter of a parsed challenge, by case-insensitive name.
fn challenge_param(params: &[(String, String)], name: &str) -> Option<String> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

const ACCEPT: [&str; 4] = [DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX];

async fn check_image(client: &oci_client::Client, auth: &RegistryAuth, image: &str, options: &Options) -> ImageResult {
    let mut result = ImageResult { image: image.to_owned(), ..Default::default() };
    let reference: Reference = match image.parse() {
        Ok(r) => r,
        Err(e) => {
            result.failure = Some(failure(Reason::InvalidReference, format!("{image} is not an image reference: {e}")));
            return result;
        }
    };
    let fetched = fetch(client, auth, &reference, true).await;
    let (manifest, digest) = match fetched {
        Ok(m) => m,
        Err(f) => {
            result.failure = Some(f);
            return result;
        }
    };
    let media_type = manifest.media_type();
    let (manifest, digest, media_type) = if media_type == DOCKER_LIST || media_type == OCI_INDEX {
        match manifest.entry_for(&options.platform) {
            Ok((entry, platform)) => {
                result.platform = Some(platform);
                // Same repository: the token from the first fetch serves.
                match fetch(client, auth, &reference.clone_with_digest(entry), false).await {
                    Ok((m, d)) => {
                        let t = m.media_type();
                        (m, d, t)
                    }
                    Err(f) => {
                        result.failure = Some(f);
                        return result;
                    }
                }
            }
            Err(available) => {
                result.digest = Some(digest);
                result.media_type = Some(media_type);
                result.failure = Some(failure(
                    Reason::ImageNotFound,
                    format!("{image} has no {} image (it has: {})", options.platform, available.join(", ")),
                ));
                return result;
            }
        }
    } else {
        (manifest, digest, media_type)
    };
    let size = manifest.size();
    result.failure = judge(&media_type, size, options);
    result.digest = Some(digest);
    result.media_type = Some(media_type);
    result.size = Some(size);
    result
}

async fn fetch(
    client: &oci_client::Client,
    auth: &RegistryAuth,
    reference: &Reference,
    authenticate: bool,
) -> Result<(Manifest, String), Failure> {
    // Authenticate for this repository explicitly: oci-client would otherwise fall back to an anonymous request
    // when the token service refuses, and report a generic 401.
    if authenticate && !matches!(auth, RegistryAuth::Anonymous) {
        client.auth(reference, auth, RegistryOperation::Pull).await.map_err(|e| classify(&e, reference))?;
    }
    let (body, digest) =
        client.pull_manifest_raw(reference, auth, &ACCEPT).await.map_err(|e| classify(&e, reference))?;
    let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| {
        failure(Reason::UnsupportedManifestType, format!("{reference}: the manifest is not JSON this can read: {e}"))
    })?;
    Ok((manifest, digest))
}

fn classify(err: &OciDistributionError, reference: &Reference) -> Failure {
    use OciDistributionError as E;
    let not_found = |detail: String| failure(Reason::ImageNotFound, format!("{reference}: {detail}"));
    match err {
        E::AuthenticationFailure(m) => {
            failure(Reason::AuthenticationFailed, format!("{reference}: the token service refused: {}", m.trim()))
        }
        E::UnauthorizedError { .. } => {
            failure(Reason::AuthenticationFailed, format!("{reference}: the registry answered 401 Unauthorized"))
        }
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                failure(Reason::AuthenticationFailed, format!("{reference}: {envelope}"))
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found(envelope.to_string())
            } else {
                failure(Reason::RegistryUnreachable, format!("{reference}: {envelope}"))
            }
        }
        E::ServerError { code: 404, message, .. } => not_found(message.clone()),
        E::ServerError { code: 401 | 403, message, .. } => {
            failure(Reason::AuthenticationFailed, format!("{reference}: {}", message.trim()))
        }
        E::RequestError(e) => transport(e, &reference.to_string()),
        E::UnsupportedMediaTypeError(t) => {
            failure(Reason::UnsupportedManifestType, format!("{reference}: unsupported media type {t}"))
        }
        other => failure(Reason::RegistryUnreachable, format!("{reference}: {other}")),
    }
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
    fn sizes_parse_like_quantities() {
        assert_eq!(parse_size("20Gi"), Some(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500M"), Some(500_000_000));
        assert_eq!(parse_size("1.5Ki"), Some(1536));
        assert_eq!(parse_size("1024"), Some(1024));
        for bad in ["", "Gi", "20GB", "-1", "1e3", "x"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn manifests_are_judged_by_type_and_size() {
        let opts =
            |accepted: Vec<ManifestKind>, max: Option<u64>| Options { accepted, max_size: max, ..Default::default() };
        assert_eq!(judge(DOCKER_MANIFEST, 10, &opts(vec![], None)), None);
        assert_eq!(judge(OCI_MANIFEST, 10, &opts(vec![ManifestKind::Oci], Some(10))), None);
        let rejected = judge(DOCKER_MANIFEST, 10, &opts(vec![ManifestKind::Oci], None)).unwrap();
        assert_eq!(rejected.reason, Reason::UnsupportedManifestType);
        assert!(rejected.message.contains("accepted: OCI"), "{}", rejected.message);
        assert_eq!(judge(OCI_MANIFEST, 11, &opts(vec![], Some(10))).unwrap().reason, Reason::ImageTooLarge);
        let schema1 = judge("application/vnd.docker.distribution.manifest.v1+prettyjws", 1, &opts(vec![], None));
        assert_eq!(schema1.unwrap().reason, Reason::UnsupportedManifestType);
    }

    #[test]
    fn indexes_resolve_to_the_platform_or_say_what_they_have() {
        let index: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": "sha256:arm", "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": "sha256:amd", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        }))
        .unwrap();
        assert_eq!(index.media_type(), OCI_INDEX);
        assert_eq!(index.entry_for("linux/amd64"), Ok(("sha256:amd".into(), "linux/amd64".into())));
        assert_eq!(index.entry_for("linux/arm64"), Ok(("sha256:arm".into(), "linux/arm64/v8".into())));
        assert_eq!(index.entry_for("linux/arm64/v8").map(|e| e.0), Ok("sha256:arm".into()));
        assert_eq!(index.entry_for("windows/amd64"), Err(vec!["linux/arm64/v8".to_owned(), "linux/amd64".to_owned()]));
        let image: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": "sha256:c", "size": 100},
            "layers": [{"digest": "sha256:l1", "size": 1000}, {"digest": "sha256:l2", "size": 24}],
        }))
        .unwrap();
        assert_eq!((image.media_type().as_str(), image.size()), (OCI_MANIFEST, 1124));
    }

    #[test]
    fn challenges_are_read() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="x""#;
        let (scheme, params) = parse_challenge(header);
        assert_eq!(scheme, "Bearer");
        assert_eq!(challenge_param(&params, "realm").as_deref(), Some("https://auth.example.com/token"));
        assert_eq!(challenge_param(&params, "SERVICE").as_deref(), Some("registry.example.com"));
        assert_eq!(challenge_param(&params, "error"), None);
        // A quoted value keeps its comma; an escaped quote is unescaped.
        let header = r#"Bearer realm="https://a.example/token",scope="repository:x:pull,push",error="say \"no\"""#;
        let (_, params) = parse_challenge(header);
        assert_eq!(challenge_param(&params, "scope").as_deref(), Some("repository:x:pull,push"));
        assert_eq!(challenge_param(&params, "error").as_deref(), Some(r#"say "no""#));
        // Several challenges: Bearer or Basic is chosen over a scheme regcred does not speak.
        let (scheme, params) = parse_challenge(r#"Negotiate, Basic realm="registry""#);
        assert_eq!((scheme.as_str(), challenge_param(&params, "realm").as_deref()), ("Basic", Some("registry")));
        // Unparsable: the scheme word, no parameters, never a panic.
        assert_eq!(parse_challenge("Bearer ,,,==\"").0, "Bearer");
        assert_eq!(parse_challenge("").0, "");
    }

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials { username: "bot".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
