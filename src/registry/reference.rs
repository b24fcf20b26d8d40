//! Image references and the kubelet's way of matching them against dockerconfigjson keys.
//!
//! The grammar is the one of distribution/reference: `[registry[:port]/]repository[:tag][@digest]`, where a first
//! path component counts as a registry only if it contains a `.` or a `:` or is `localhost`, Docker Hub is the
//! default registry and single-component Docker Hub repositories live under `library/`.
//!
//! Matching follows the kubelet's credential keyring: a key such as `https://index.docker.io/v1/`,
//! `registry.example.com:5000/team` or `*.dkr.ecr.eu-west-1.amazonaws.com` matches an image when the ports are
//! equal, the hosts have the same number of dot-separated parts and each part matches as a glob (`*`, `?`), and
//! the key's path is a prefix of the image's repository path. Docker Hub's key `index.docker.io` also matches
//! every Docker Hub image (`nginx`, `library/nginx`, `docker.io/...`).

use std::fmt;

/// The registry Docker Hub images are normalised to.
pub const DOCKER_HUB: &str = "docker.io";
/// Longest repository name (registry included) distribution accepts.
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, with Docker Hub's aliases normalised to `docker.io`.
    pub registry: String,
    /// The repository path, e.g. `library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The name the kubelet looks credentials up with: `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the image reference is empty")]
    Empty,
    #[error("the repository name must be lowercase")]
    Uppercase,
    #[error("the registry `{0}` is not a valid host[:port]")]
    InvalidRegistry(String),
    #[error("the repository path component `{0}` is invalid")]
    InvalidComponent(String),
    #[error("the tag `{0}` is invalid")]
    InvalidTag(String),
    #[error("the digest `{0}` is invalid")]
    InvalidDigest(String),
    #[error("the repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Parses and normalises an image reference.
pub fn parse(reference: &str) -> Result<ImageRef, ParseError> {
    if reference.is_empty() {
        return Err(ParseError::Empty);
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest)?;
            (rest, Some(digest.to_owned()))
        }
        None => (reference, None),
    };
    // A tag follows the last ':' that comes after the last '/' (a ':' before it belongs to a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            validate_tag(tag)?;
            (&rest[..last_slash + i], Some(tag.to_owned()))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(ParseError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ParseError::TooLong);
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, remainder)) if first.contains(['.', ':']) || first == "localhost" => {
            // distribution accepts upper case in the registry only.
            validate_registry(first)?;
            (first.to_owned(), remainder.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let registry = if registry == "index.docker.io" { DOCKER_HUB.to_owned() } else { registry };
    let repository =
        if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ParseError::Uppercase);
    }
    for component in repository.split('/') {
        validate_component(component)?;
    }
    Ok(ImageRef { registry, repository, tag, digest })
}

fn validate_registry(registry: &str) -> Result<(), ParseError> {
    let invalid = || ParseError::InvalidRegistry(registry.to_owned());
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(invalid)?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(invalid());
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(invalid());
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_component(component: &str) -> Result<(), ParseError> {
    let invalid = || ParseError::InvalidComponent(component.to_owned());
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(invalid());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(invalid());
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), ParseError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = tag.len() <= 128 && chars.next().is_some_and(word) && chars.all(|c| word(c) || c == '.' || c == '-');
    if ok { Ok(()) } else { Err(ParseError::InvalidTag(tag.to_owned())) }
}

/// `algorithm:hex`, the algorithm `[a-z0-9]+` joined by `+._-`, the hex part at least 32 characters.
fn validate_digest(digest: &str) -> Result<(), ParseError> {
    let invalid = || ParseError::InvalidDigest(digest.to_owned());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(invalid)?;
    let algo_ok = !algorithm.is_empty()
        && algorithm
            .split(['+', '.', '_', '-'])
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let len_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => true,
    };
    if algo_ok && hex_ok && len_ok { Ok(()) } else { Err(invalid()) }
}

/// A dockerconfigjson key as the kubelet stores it: no scheme, `/v1/` or `/v2/` dropped, host plus path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialKey {
    host: String,
    port: Option<String>,
    path: String,
}

impl CredentialKey {
    /// Parses a dockerconfigjson key such as `https://index.docker.io/v1/` or `registry:5000/team`.
    pub fn parse(key: &str) -> Self {
        let without_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        let (authority, path) = match without_scheme.find('/') {
            Some(i) => (&without_scheme[..i], &without_scheme[i..]),
            None => (without_scheme, ""),
        };
        // `/v1/` and `/v2/` count as the bare host, exactly as the kubelet treats them.
        let path = if path.starts_with("/v2/") || path.starts_with("/v1/") { &path[3..] } else { path };
        let path = if path == "/" { "" } else { path };
        let (host, port) = split_port(authority);
        // The path prefix is compared as a plain string, as the kubelet does.
        Self { host: host.to_ascii_lowercase(), port, path: path.to_owned() }
    }

    /// Whether the kubelet would offer this key's credentials for `image`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        let (host, port) = split_port(&image.registry);
        let path = format!("/{}", image.repository);
        let hosts_match = {
            let key_parts: Vec<&str> = self.host.split('.').collect();
            let host = host.to_ascii_lowercase();
            let image_parts: Vec<&str> = host.split('.').collect();
            key_parts.len() == image_parts.len() && key_parts.iter().zip(&image_parts).all(|(k, i)| glob(k, i))
        };
        let direct = self.port == port && hosts_match && path.starts_with(&self.path);
        // The kubelet's fallback: Docker Hub credentials serve every Docker Hub image.
        let docker_hub = self.host == "index.docker.io" && self.port.is_none() && self.path.is_empty();
        direct || (docker_hub && image.registry == DOCKER_HUB)
    }
}

fn split_port(authority: &str) -> (String, Option<String>) {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((host, port)) => (format!("{host}]"), Some(port.to_owned())),
            None => (authority.to_owned(), None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), Some(port.to_owned())),
        None => (authority.to_owned(), None),
    }
}

/// Glob match of one host label: `*` any run of characters, `?` one character (Go's `filepath.Match` without `/`).
fn glob(pattern: &str, text: &str) -> bool {
    crate::glob::glob_match_with(pattern, text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) -> ImageRef {
        ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_grammar_normalises_what_the_kubelet_normalises() {
        let digest = format!("nginx@{SHA}");
        let tagged_digest = format!("ghcr.io/org/app:v1@{SHA}");
        let cases: Vec<(&str, ImageRef)> = vec![
            ("nginx", r("docker.io", "library/nginx", None, None)),
            ("nginx:1.27", r("docker.io", "library/nginx", Some("1.27"), None)),
            ("library/nginx", r("docker.io", "library/nginx", None, None)),
            ("docker.io/nginx", r("docker.io", "library/nginx", None, None)),
            ("index.docker.io/library/nginx:latest", r("docker.io", "library/nginx", Some("latest"), None)),
            ("bitnami/redis:7", r("docker.io", "bitnami/redis", Some("7"), None)),
            (&digest, r("docker.io", "library/nginx", None, Some(SHA))),
            (&tagged_digest, r("ghcr.io", "org/app", Some("v1"), Some(SHA))),
            ("localhost:5000/app", r("localhost:5000", "app", None, None)),
            ("localhost/app:dev", r("localhost", "app", Some("dev"), None)),
            ("registry.example.com:8443/a/b/c:1.0", r("registry.example.com:8443", "a/b/c", Some("1.0"), None)),
            ("Registry.Example.com/app", r("Registry.Example.com", "app", None, None)),
            ("[::1]:5000/app", r("[::1]:5000", "app", None, None)),
            ("10.0.0.1:5000/app", r("10.0.0.1:5000", "app", None, None)),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:9",
                r("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "team/app", Some("9"), None),
            ),
            ("gcr.io/project/app", r("gcr.io", "project/app", None, None)),
            (
                "europe-west1-docker.pkg.dev/project/repo/app",
                r("europe-west1-docker.pkg.dev", "project/repo/app", None, None),
            ),
            ("mcr.microsoft.com/dotnet/runtime:8.0", r("mcr.microsoft.com", "dotnet/runtime", Some("8.0"), None)),
            ("quay.io/a/b__c.d-e--f", r("quay.io", "a/b__c.d-e--f", None, None)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn malformed_references_are_errors_not_panics() {
        let too_long = format!("a/{}", "b".repeat(300));
        let cases: Vec<(&str, ParseError)> = vec![
            ("", ParseError::Empty),
            ("Nginx", ParseError::Uppercase),
            ("docker.io/Library/nginx", ParseError::Uppercase),
            ("nginx:", ParseError::InvalidTag(String::new())),
            ("nginx:-bad", ParseError::InvalidTag("-bad".into())),
            ("nginx@sha256:abc", ParseError::InvalidDigest("sha256:abc".into())),
            ("nginx@md5", ParseError::InvalidDigest("md5".into())),
            ("a//b", ParseError::InvalidComponent(String::new())),
            ("a/-b", ParseError::InvalidComponent("-b".into())),
            ("a/b_-c", ParseError::InvalidComponent("b_-c".into())),
            ("host.com:port/app", ParseError::InvalidRegistry("host.com:port".into())),
            ("bad_host.com/app", ParseError::InvalidRegistry("bad_host.com".into())),
            ("[zz]:5000/app", ParseError::InvalidRegistry("[zz]:5000".into())),
            (":tag", ParseError::Empty),
            (&too_long, ParseError::TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), Err(want), "{input}");
        }
        // Arbitrary bytes never panic.
        for input in ["@", ":", "/", "a@", "@sha256:", "::::", "[", "[]:1/a", "a/b:c:d", "ü/ß", "a:1/b"] {
            let _ = parse(input);
        }
    }

    #[test]
    fn keys_match_images_the_way_the_kubelet_matches_them() {
        let cases = [
            // Docker Hub: the key every tool writes, and the kubelet's fallback for every Hub image.
            ("https://index.docker.io/v1/", "nginx", true),
            ("https://index.docker.io/v1/", "library/nginx:1", true),
            ("https://index.docker.io/v1/", "docker.io/bitnami/redis", true),
            ("https://index.docker.io/v1/", "index.docker.io/org/app", true),
            ("https://index.docker.io/v1/", "ghcr.io/org/app", false),
            ("index.docker.io", "nginx", true),
            ("docker.io", "nginx", true),
            ("docker.io/bitnami", "bitnami/redis", true),
            ("docker.io/bitnami", "nginx", false),
            // Host, port and path prefix.
            ("ghcr.io", "ghcr.io/org/app:1", true),
            ("ghcr.io/org", "ghcr.io/org/app", true),
            ("ghcr.io/org", "ghcr.io/other/app", false),
            (
                "ghcr.io/org/app",
                "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                true,
            ),
            ("https://ghcr.io", "ghcr.io/org/app", true),
            ("http://ghcr.io/v2/", "ghcr.io/org/app", true),
            ("GHCR.io", "ghcr.io/org/app", true),
            ("registry.example.com:5000", "registry.example.com:5000/app", true),
            ("registry.example.com:5000", "registry.example.com/app", false),
            ("registry.example.com", "registry.example.com:5000/app", false),
            ("localhost:5000", "localhost:5000/app", true),
            ("localhost:5000", "localhost:5001/app", false),
            ("example.com", "registry.example.com/app", false),
            ("registry.example.com", "example.com/app", false),
            // Wildcard hosts: one glob per label, same number of labels.
            ("*.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", true),
            ("*.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com/app", false),
            ("*.gcr.io", "eu.gcr.io/project/app", true),
            ("*.gcr.io", "gcr.io/project/app", false),
            ("*.gcr.io", "a.b.gcr.io/project/app", false),
            ("*-docker.pkg.dev", "europe-west1-docker.pkg.dev/p/r/app", true),
            ("europe-west1-docker.pkg.dev/p/r", "europe-west1-docker.pkg.dev/p/r/app", true),
            ("europe-west1-docker.pkg.dev/p/r", "us-docker.pkg.dev/p/r/app", false),
            ("reg?.example.com", "reg1.example.com/app", true),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/a/b", true),
            ("public.ecr.aws", "public.ecr.aws/nginx/nginx", true),
            ("mcr.microsoft.com", "mcr.microsoft.com/dotnet/runtime", true),
        ];
        for (key, image, want) in cases {
            let image_ref = parse(image).unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!(CredentialKey::parse(key).matches(&image_ref), want, "key {key} image {image}");
        }
    }

    #[test]
    fn glob_follows_go_filepath_match_for_labels() {
        assert!(glob("*", ""));
        assert!(glob("*", "abc"));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("?b", "ab"));
        assert!(!glob("?", ""));
        assert!(!glob("abc", "abcd"));
    }
}
