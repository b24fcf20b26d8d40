//! What every preflight failure says to a person who does not know the OCI distribution API: the one place where
//! a [`Problem`] (what the registry, the network or the profile did, as data) becomes its [`Reason`] and its
//! message. A message is what is wrong, naming the image, repository or registry; then what to do; then, last and
//! only as a detail, the upstream error's own text. Credentials never appear: a user name may, a password or
//! token never does (nothing here is given one).

use super::{Failure, Reason};

/// How a connection failed, as far as the error's text tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The host name does not resolve.
    Dns,
    /// Nothing listens there (or a firewall rejects).
    Refused,
    /// No answer in time.
    Timeout,
    /// Anything else (reset, protocol error, ...).
    Other,
}

impl Cause {
    /// The cause an error chain's text (see [`super::error_chain`]) names.
    pub fn of(text: &str) -> Self {
        let lower = text.to_lowercase();
        if ["dns error", "failed to lookup address", "name or service not known", "no such host", "nodename nor"]
            .iter()
            .any(|s| lower.contains(s))
        {
            Self::Dns
        } else if lower.contains("connection refused") {
            Self::Refused
        } else if lower.contains("timed out") || lower.contains("timeout") || lower.contains("deadline") {
            Self::Timeout
        } else {
            Self::Other
        }
    }
}

/// What went wrong in a preflight or an image check, as data. [`Problem::failure`] phrases it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The registry (or its token service) refused a login with `status`.
    CredentialsRefused { registry: String, user: String, status: u16 },
    /// The registry asks for credentials and there are none.
    CredentialsRequired { registry: String },
    /// The credentials were not good for pulling `repository` (401/403, `DENIED`, `UNAUTHORIZED`).
    PullDenied { repository: String, detail: String },
    /// The registry's token service would not send credentials over plain HTTP, or has no usable realm.
    TokenRealmRefused { registry: String, why: String },
    /// The tag (or digest) is not in the repository.
    TagNotFound { repository: String, tag: String },
    /// The repository does not exist on the registry.
    RepositoryNotFound { repository: String, registry: String },
    /// An index without an image for the platform.
    PlatformMissing { platform: String, available: Vec<String> },
    /// The registry could not be reached.
    Unreachable { target: String, cause: Cause, detail: String },
    /// The registry answered 429: too many requests.
    RateLimited { registry: String },
    /// `GET /v2/` answered neither 200 nor 401.
    NotARegistry { url: String, status: u16 },
    /// The registry answered in a way the protocol does not allow, or failed (5xx, bad challenge, no token).
    RegistryFailed { target: String, detail: String },
    /// regcred could not build its HTTP client (a process without a crypto provider, say).
    ClientUnavailable { detail: String },
    /// The registry's TLS certificate is not trusted.
    TlsUntrusted { target: String, detail: String },
    /// The extra CA bundle given is not PEM.
    CaBundleInvalid { detail: String },
    /// Config plus layers exceed the profile's `maxImageSize`.
    TooLarge { size: u64, max: u64 },
    /// The manifest's media type is not an image manifest regcred knows.
    NotAnImageManifest { media_type: String },
    /// The manifest's format is not one the profile accepts.
    ManifestTypeRefused { media_type: String, accepted: Vec<String> },
    /// The manifest could not be read.
    ManifestUnreadable { detail: String },
    /// The image reference does not parse.
    InvalidReference { image: String, detail: String },
    /// A probe image on a registry the profile does not serve.
    NotServed { image: String, registry: String },
}

/// A Docker Hub host (where pull rate limits apply).
fn docker_hub(registry: &str) -> bool {
    super::super::is_docker_hub(registry)
}

impl Problem {
    /// The machine-readable reason: a condition reason, an admission warning's and a CLI line's.
    pub fn reason(&self) -> Reason {
        match self {
            Self::CredentialsRefused { .. }
            | Self::CredentialsRequired { .. }
            | Self::PullDenied { .. }
            | Self::TokenRealmRefused { .. } => Reason::AuthenticationFailed,
            Self::TagNotFound { .. } | Self::RepositoryNotFound { .. } | Self::PlatformMissing { .. } => {
                Reason::ImageNotFound
            }
            Self::Unreachable { .. }
            | Self::RateLimited { .. }
            | Self::NotARegistry { .. }
            | Self::RegistryFailed { .. }
            | Self::ClientUnavailable { .. } => Reason::RegistryUnreachable,
            Self::TlsUntrusted { .. } | Self::CaBundleInvalid { .. } => Reason::TlsUntrusted,
            Self::TooLarge { .. } => Reason::ImageTooLarge,
            Self::NotAnImageManifest { .. } | Self::ManifestTypeRefused { .. } | Self::ManifestUnreadable { .. } => {
                Reason::UnsupportedManifestType
            }
            Self::InvalidReference { .. } => Reason::InvalidReference,
            Self::NotServed { .. } => Reason::ImageNotServed,
        }
    }

    /// What is wrong, what to do, and the upstream detail if any.
    pub fn parts(&self) -> (String, String, Option<&str>) {
        match self {
            Self::CredentialsRefused { .. }
            | Self::CredentialsRequired { .. }
            | Self::PullDenied { .. }
            | Self::TokenRealmRefused { .. } => self.authentication(),
            Self::TagNotFound { .. } | Self::RepositoryNotFound { .. } | Self::PlatformMissing { .. } => {
                self.not_found()
            }
            Self::Unreachable { .. }
            | Self::RateLimited { .. }
            | Self::NotARegistry { .. }
            | Self::RegistryFailed { .. }
            | Self::ClientUnavailable { .. } => self.unreachable(),
            Self::TlsUntrusted { target, detail } => (
                format!("the TLS certificate of {target} is not trusted"),
                "if the registry uses a private CA, put that CA's PEM in the profile's spec.tls.caBundle \
                 (regcred check: --ca-file); otherwise check that the registry serves its full certificate chain \
                 for this host name"
                    .into(),
                Some(detail),
            ),
            Self::CaBundleInvalid { detail } => (
                "the CA bundle given is not valid PEM".into(),
                "put the CA certificates as PEM (-----BEGIN CERTIFICATE-----) in spec.tls.caBundle or --ca-file".into(),
                Some(detail),
            ),
            Self::TooLarge { .. }
            | Self::NotAnImageManifest { .. }
            | Self::ManifestTypeRefused { .. }
            | Self::ManifestUnreadable { .. } => self.manifest(),
            Self::InvalidReference { image, detail } => (
                format!("{image:?} is not an image reference"),
                "write it as [registry/]repository[:tag][@sha256:digest], in lower case".into(),
                Some(detail),
            ),
            Self::NotServed { image, registry } => (
                format!("{image} is not on registry {registry}, so the profile's credentials are never sent there"),
                format!("write the image relative to the registry (team/app:1) or under {registry}/"),
                None,
            ),
        }
    }

    fn authentication(&self) -> (String, String, Option<&str>) {
        match self {
            Self::CredentialsRefused { registry, user, status } => (
                format!("registry {registry} refused the credentials of user {user:?} (HTTP {status})"),
                "check the username and password or token in the profile's credentials (they may be mistyped, \
                 expired or revoked)"
                    .into(),
                None,
            ),
            Self::CredentialsRequired { registry } => (
                format!("registry {registry} requires credentials and none were given"),
                "give the profile credentials (spec.credentials), or regcred check --username/--docker-config".into(),
                None,
            ),
            Self::PullDenied { repository, detail } => (
                format!(
                    "the credentials may not pull from repository {repository} (not allowed, or it does not exist)"
                ),
                "check the repository name, and grant the profile's account pull (read) access to it".into(),
                Some(detail),
            ),
            Self::TokenRealmRefused { registry, why } => (
                format!("registry {registry}'s token service cannot be used: {why}"),
                "configure the registry's token service with an https:// realm".into(),
                None,
            ),
            _ => unreachable_family(),
        }
    }

    fn not_found(&self) -> (String, String, Option<&str>) {
        match self {
            Self::TagNotFound { repository, tag } => (
                format!("tag {tag:?} does not exist in repository {repository}"),
                format!("check the tag and the repository name (list the tags with: crane ls {repository})"),
                None,
            ),
            Self::RepositoryNotFound { repository, registry } => (
                format!("repository {repository} does not exist on registry {registry}"),
                "check the image name (its path and spelling)".into(),
                None,
            ),
            Self::PlatformMissing { platform, available } => (
                format!("the image has no variant for platform {platform} (it has: {})", available.join(", ")),
                "push the image for that platform, or set spec.validation.platform to the nodes' platform".into(),
                None,
            ),
            _ => unreachable_family(),
        }
    }

    fn unreachable(&self) -> (String, String, Option<&str>) {
        match self {
            Self::Unreachable { target, cause, detail } => {
                let (what, todo) = match cause {
                    Cause::Dns => ("its host name does not resolve (DNS)", "check the registry's host name"),
                    Cause::Refused => {
                        ("the connection was refused", "check the registry's host and port, and that it is running")
                    }
                    Cause::Timeout => (
                        "it did not answer in time",
                        "check that regcred's Pods may reach it (NetworkPolicy, firewall, HTTPS_PROXY)",
                    ),
                    Cause::Other => {
                        ("the connection failed", "check that regcred's Pods may reach it (NetworkPolicy, proxy)")
                    }
                };
                (format!("cannot reach {target}: {what}"), todo.into(), Some(detail))
            }
            Self::RateLimited { registry } if docker_hub(registry) => (
                format!("Docker Hub's pull rate limit was reached (registry {registry})"),
                "wait, or give the profile Docker Hub credentials (authenticated pulls have a higher limit)".into(),
                None,
            ),
            Self::RateLimited { registry } => (
                format!("registry {registry} refused to answer: too many requests (HTTP 429)"),
                "wait, or raise the registry's rate limit for this account".into(),
                None,
            ),
            Self::NotARegistry { url, status } => (
                format!("{url} answered HTTP {status}, not as a container registry does"),
                "check the registry's address (spec.server): host, port and path".into(),
                None,
            ),
            Self::RegistryFailed { target, detail } => (
                format!("{target} failed to answer"),
                "try again later; if it persists, check the registry's health and logs".into(),
                Some(detail),
            ),
            Self::ClientUnavailable { detail } => (
                "regcred could not build its HTTPS client".into(),
                "report this as a bug in regcred".into(),
                Some(detail),
            ),
            _ => unreachable_family(),
        }
    }

    fn manifest(&self) -> (String, String, Option<&str>) {
        match self {
            Self::TooLarge { size, max } => (
                format!("the image is {} (config and layers), more than the {} allowed", bytes(*size), bytes(*max)),
                "use a smaller image, or raise spec.validation.maxImageSize".into(),
                None,
            ),
            Self::NotAnImageManifest { media_type } => (
                format!("this is not a container image: its manifest is {media_type}"),
                "push it as a Docker v2 or OCI image (old schema 1 images must be pushed again)".into(),
                None,
            ),
            Self::ManifestTypeRefused { media_type, accepted } => (
                format!("the image is {}, and the profile accepts only {}", kind(media_type), accepted.join(", ")),
                "push the image in an accepted format, or add its format to spec.validation.manifestTypes".into(),
                None,
            ),
            Self::ManifestUnreadable { detail } => (
                "the image's manifest cannot be read".into(),
                "push the image again; if it persists, check the registry".into(),
                Some(detail),
            ),
            _ => unreachable_family(),
        }
    }

    /// The message: what is wrong; what to do (detail).
    pub fn message(&self) -> String {
        let (what, todo, detail) = self.parts();
        match detail.map(str::trim).filter(|d| !d.is_empty()) {
            Some(d) => format!("{what}; {todo} ({d})"),
            None => format!("{what}; {todo}"),
        }
    }

    /// The failure a check reports.
    pub fn failure(&self) -> Failure {
        Failure { reason: self.reason(), message: self.message() }
    }
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        p.failure()
    }
}

/// Each family's function is called only with its own variants.
fn unreachable_family() -> (String, String, Option<&'static str>) {
    ("an unexpected failure".into(), "report this as a bug in regcred".into(), None)
}

/// A manifest format's name for people.
fn kind(media_type: &str) -> &str {
    match media_type {
        super::DOCKER_MANIFEST => "a Docker v2 image",
        super::OCI_MANIFEST => "an OCI image",
        other => other,
    }
}

/// A size in bytes for people: `12.3 MiB` (the exact size is in the image's status).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    #[allow(clippy::cast_precision_loss)] // one decimal is all that is shown
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason a check reports, with its phrasing for one representative problem (several for a reason
    /// whose causes differ), and a word each message must contain: the image, repository or registry it is
    /// about.
    fn table() -> Vec<(Problem, &'static str)> {
        let reg = "registry.example.com";
        let repo = "registry.example.com/team/app";
        let s = String::from;
        let unreachable = |cause, detail: &str| Problem::Unreachable {
            target: format!("registry {reg}"),
            cause,
            detail: detail.to_owned(),
        };
        vec![
            (Problem::CredentialsRefused { registry: s(reg), user: s("bot"), status: 401 }, reg),
            (Problem::CredentialsRequired { registry: s(reg) }, reg),
            (Problem::PullDenied { repository: s(repo), detail: s("OCI API error: denied") }, repo),
            (
                Problem::TokenRealmRefused { registry: s(reg), why: s("the token realm http://a/t is plain http://") },
                reg,
            ),
            (Problem::TagNotFound { repository: s(repo), tag: s("1.2.3") }, repo),
            (Problem::RepositoryNotFound { repository: s(repo), registry: s(reg) }, repo),
            (Problem::PlatformMissing { platform: s("linux/amd64"), available: vec![s("linux/arm64")] }, "the image"),
            (unreachable(Cause::Dns, "dns error"), reg),
            (unreachable(Cause::Refused, "Connection refused"), reg),
            (unreachable(Cause::Timeout, "operation timed out"), reg),
            (unreachable(Cause::Other, "reset"), reg),
            (Problem::RateLimited { registry: s("registry-1.docker.io") }, "registry-1.docker.io"),
            (Problem::RateLimited { registry: s(reg) }, reg),
            (Problem::NotARegistry { url: s("https://registry.example.com/v2/"), status: 404 }, reg),
            (
                Problem::RegistryFailed { target: format!("registry {reg}"), detail: s("500 Internal Server Error") },
                reg,
            ),
            (Problem::ClientUnavailable { detail: s("no crypto provider") }, "regcred"),
            (
                Problem::TlsUntrusted {
                    target: format!("registry {reg}"),
                    detail: s("invalid peer certificate: UnknownIssuer"),
                },
                reg,
            ),
            (Problem::CaBundleInvalid { detail: s("no certificate") }, "CA bundle"),
            (Problem::TooLarge { size: 3 << 30, max: 1 << 30 }, "the image"),
            (
                Problem::NotAnImageManifest {
                    media_type: s("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                },
                "container image",
            ),
            (
                Problem::ManifestTypeRefused { media_type: s(super::super::DOCKER_MANIFEST), accepted: vec![s("OCI")] },
                "the image",
            ),
            (Problem::ManifestUnreadable { detail: s("expected value at line 1") }, "the image"),
            (
                Problem::InvalidReference { image: s("Team/App"), detail: s("repository name must be lowercase") },
                "Team/App",
            ),
            (Problem::NotServed { image: s("other.example.com/app"), registry: s(reg) }, "other.example.com/app"),
        ]
    }

    /// Every reason, so that a new one cannot go without phrasing.
    const REASONS: [Reason; 8] = [
        Reason::AuthenticationFailed,
        Reason::RegistryUnreachable,
        Reason::TlsUntrusted,
        Reason::ImageNotFound,
        Reason::ImageTooLarge,
        Reason::UnsupportedManifestType,
        Reason::InvalidReference,
        Reason::ImageNotServed,
    ];

    #[test]
    fn every_reason_is_phrased_for_a_person() {
        let table = table();
        for reason in REASONS {
            // A new reason must be listed in REASONS: this match has no wildcard.
            match reason {
                Reason::AuthenticationFailed
                | Reason::RegistryUnreachable
                | Reason::TlsUntrusted
                | Reason::ImageNotFound
                | Reason::ImageTooLarge
                | Reason::UnsupportedManifestType
                | Reason::InvalidReference
                | Reason::ImageNotServed => {}
            }
            assert!(table.iter().any(|(p, _)| p.reason() == reason), "{reason:?} has no phrasing in the table");
        }
        for (problem, names) in &table {
            let (what, todo, _) = problem.parts();
            let message = problem.message();
            assert!(what.contains(names), "{problem:?}: {what:?} does not name {names}");
            assert!(todo.len() > 10 && message.contains(&todo), "{problem:?}: no advice in {message:?}");
            assert!(!message.contains("OCI API") || message.ends_with(')'), "raw error first: {message}");
            assert!(message.starts_with(&what), "{message}");
            // The advice comes before any upstream detail.
            assert!(message.find(&todo) < problem.parts().2.and_then(|d| message.rfind(d)).or(Some(usize::MAX)));
        }
    }

    #[test]
    fn a_mistyped_tag_says_so_and_names_the_repository() {
        let p = Problem::TagNotFound { repository: "registry.example.com/team/app".into(), tag: "1.2.3".into() };
        assert_eq!(p.reason(), Reason::ImageNotFound);
        assert_eq!(
            p.message(),
            "tag \"1.2.3\" does not exist in repository registry.example.com/team/app; check the tag and the \
             repository name (list the tags with: crane ls registry.example.com/team/app)"
        );
    }

    #[test]
    fn docker_hub_rate_limits_are_told_apart() {
        let hub = Problem::RateLimited { registry: "registry-1.docker.io".into() };
        assert!(hub.message().contains("Docker Hub's pull rate limit"), "{}", hub.message());
        assert!(hub.message().contains("credentials"), "{}", hub.message());
    }

    #[test]
    fn connection_failures_are_told_apart() {
        for (text, cause) in [
            (
                "error sending request: client error (Connect): dns error: failed to lookup address information",
                Cause::Dns,
            ),
            ("tcp connect error: Connection refused (os error 111)", Cause::Refused),
            ("operation timed out", Cause::Timeout),
            ("connection reset by peer", Cause::Other),
        ] {
            assert_eq!(Cause::of(text), cause, "{text}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(10), "10 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
