//! Image references and the kubelet's way of matching them against dockerconfigjson keys.
//!
//! The grammar is distribution/reference's, as oci-client implements it (the preflight's client parses with the
//! same): `[registry[:port]/]repository[:tag][@digest]`, where a first path component counts as a registry only if
//! it contains a `.` or a `:` or is `localhost`, Docker Hub is the default registry and single-component Docker
//! Hub repositories live under `library/`. Only the matching is regcred's own, because it must be the kubelet's
//! exactly (`k8s.io/kubernetes/pkg/credentialprovider`: `URLsMatchStr` and the Docker Hub default).
//!
//! Matching follows the kubelet's credential keyring: a key such as `https://index.docker.io/v1/`,
//! `registry.example.com:5000/team` or `*.dkr.ecr.eu-west-1.amazonaws.com` matches an image when the ports are
//! equal, the hosts have the same number of dot-separated parts and each part matches as a glob (`*`, `?`), and
//! the key's path is a prefix of the image's repository path. Docker Hub's key `index.docker.io` also matches
//! every Docker Hub image (`nginx`, `library/nginx`, `docker.io/...`).

pub use oci_client::{ParseError, Reference as ImageRef};

/// The registry Docker Hub images are normalised to.
pub const DOCKER_HUB: &str = "docker.io";

/// Parses and normalises an image reference with oci-client's grammar (distribution/reference's), refusing also
/// what that grammar lets through but distribution's does not (a repository path in upper case, a registry host
/// with characters outside `[A-Za-z0-9.-]`), and reading the one form it lacks: an IPv6 literal registry
/// (`[::1]:5000/app`).
pub fn parse(reference: &str) -> Result<ImageRef, ParseError> {
    if let Some(rest) = reference.strip_prefix('[') {
        return parse_ipv6(rest);
    }
    let parsed = ImageRef::try_from(reference)?;
    if parsed.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::NameContainsUppercase);
    }
    let host = parsed.registry().rsplit_once(':').map_or(parsed.registry(), |(h, _)| h);
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    Ok(parsed)
}

/// [`parse`], remembered: the webhook parses every image of every Pod, and a cluster runs few distinct images
/// (a regular-expression match costs microseconds; a lookup, a fraction of one). At most [`MEMO_SIZE`] references
/// are kept; when full, the memo starts over. `None`: the reference does not parse.
pub fn parse_memo(reference: &str) -> Option<std::sync::Arc<ImageRef>> {
    use std::sync::{Arc, PoisonError};
    // Longer than any real reference: never parsed, never kept (a tenant's megabyte-long "image" in a Pod or an
    // Event would otherwise sit in the memo).
    if reference.len() > MAX_REFERENCE {
        return None;
    }
    let memo = MEMO.get_or_init(Memo::default);
    if let Some(hit) = memo.lock().unwrap_or_else(PoisonError::into_inner).get(reference) {
        return hit.clone();
    }
    let parsed = parse(reference).ok().map(Arc::new);
    let mut memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
    if memo.len() >= MEMO_SIZE {
        memo.clear();
    }
    memo.insert(reference.into(), parsed.clone());
    parsed
}

/// The image as one canonical full reference (`nginx` is `docker.io/library/nginx:latest`), or as written when it
/// does not parse: two spellings of one image compare equal.
pub fn canonical(image: &str) -> String {
    parse_memo(image.trim()).map_or_else(|| image.trim().to_owned(), |r| r.whole())
}

/// What [`parse_memo`] remembers: each reference and what it parsed to.
type Memo = std::sync::Mutex<std::collections::HashMap<Box<str>, Option<std::sync::Arc<ImageRef>>>>;
static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();

/// Image references [`parse_memo`] keeps.
pub const MEMO_SIZE: usize = 4096;

/// The longest image reference regcred reads: a repository name of up to 255 characters (the distribution
/// spec's limit), a host, a tag of up to 128 and a digest fit well within it.
pub const MAX_REFERENCE: usize = 1024;

/// `[address]:port/repository...`: the rest parsed by the grammar under a stand-in host, the address put back.
fn parse_ipv6(rest: &str) -> Result<ImageRef, ParseError> {
    let (address, after) = rest.split_once(']').ok_or(ParseError::ReferenceInvalidFormat)?;
    let (port, path) = after.split_once('/').ok_or(ParseError::ReferenceInvalidFormat)?;
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') || !port_ok {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let inner = parse(&format!("ipv6.invalid{port}/{path}"))?;
    let registry = format!("[{address}]{port}");
    let repository = inner.repository().to_owned();
    Ok(match (inner.tag(), inner.digest()) {
        (Some(tag), Some(digest)) => ImageRef::with_tag_and_digest(registry, repository, tag.into(), digest.into()),
        (None, Some(digest)) => ImageRef::with_digest(registry, repository, digest.into()),
        (tag, None) => ImageRef::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// Whether an image reference names its registry (`registry.example.com/app`, `localhost:5000/app`) rather than
/// leaving it to a default: the first path component holds a `.` or a `:` or is `localhost`. The rule of the
/// grammar above, for references resolved against a profile's registry instead of Docker Hub.
pub fn names_registry(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
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

    /// Whether the key holds a path prefix (`registry.example.com/team`): it serves some of its registry's images
    /// only.
    pub fn has_path(&self) -> bool {
        !self.path.is_empty()
    }

    /// Whether the key is for `image`'s registry (host and port, as the kubelet matches them), whatever its path.
    pub fn matches_registry(&self, image: &ImageRef) -> bool {
        let (host, port) = split_port(image.registry());
        let key_parts: Vec<&str> = self.host.split('.').collect();
        let host = host.to_ascii_lowercase();
        let image_parts: Vec<&str> = host.split('.').collect();
        self.port == port
            && key_parts.len() == image_parts.len()
            && key_parts.iter().zip(&image_parts).all(|(k, i)| glob(k, i))
    }

    /// Whether the kubelet would offer this key's credentials for `image`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        let path = format!("/{}", image.repository());
        let direct = self.matches_registry(image) && path.starts_with(&self.path);
        // The kubelet's fallback: Docker Hub credentials serve every Docker Hub image.
        let docker_hub = self.host == "index.docker.io" && self.port.is_none() && self.path.is_empty();
        direct || (docker_hub && image.registry() == DOCKER_HUB)
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

    #[test]
    fn a_reference_longer_than_any_real_one_is_neither_parsed_nor_kept() {
        let real = format!("registry.example.com:5000/{}:{}", "a".repeat(200), "t".repeat(128));
        assert!(parse_memo(&real).is_some());
        let huge = format!("registry.example.com/{}", "a".repeat(MAX_REFERENCE));
        assert!(parse_memo(&huge).is_none());
        let kept = |r: &str| MEMO.get().is_some_and(|m| m.lock().unwrap().contains_key(r));
        assert!(kept(&real) && !kept(&huge), "the memo keeps real references only");
    }

    fn r(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (registry.into(), repository.into(), tag.map(Into::into), digest.map(Into::into))
    }

    fn parts(i: &ImageRef) -> (String, String, Option<String>, Option<String>) {
        (i.registry().into(), i.repository().into(), i.tag().map(Into::into), i.digest().map(Into::into))
    }

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_grammar_normalises_what_the_kubelet_normalises() {
        let digest = format!("nginx@{SHA}");
        let tagged_digest = format!("ghcr.io/org/app:v1@{SHA}");
        // Without a tag or digest, the tag is `latest` (what the runtime pulls).
        let cases = vec![
            ("nginx", r("docker.io", "library/nginx", Some("latest"), None)),
            ("nginx:1.27", r("docker.io", "library/nginx", Some("1.27"), None)),
            ("library/nginx", r("docker.io", "library/nginx", Some("latest"), None)),
            ("docker.io/nginx", r("docker.io", "library/nginx", Some("latest"), None)),
            ("index.docker.io/library/nginx:latest", r("docker.io", "library/nginx", Some("latest"), None)),
            ("bitnami/redis:7", r("docker.io", "bitnami/redis", Some("7"), None)),
            (&digest, r("docker.io", "library/nginx", None, Some(SHA))),
            (&tagged_digest, r("ghcr.io", "org/app", Some("v1"), Some(SHA))),
            ("localhost:5000/app", r("localhost:5000", "app", Some("latest"), None)),
            ("localhost/app:dev", r("localhost", "app", Some("dev"), None)),
            ("registry.example.com:8443/a/b/c:1.0", r("registry.example.com:8443", "a/b/c", Some("1.0"), None)),
            ("Registry.Example.com/app", r("Registry.Example.com", "app", Some("latest"), None)),
            ("[::1]:5000/app", r("[::1]:5000", "app", Some("latest"), None)),
            ("10.0.0.1:5000/app", r("10.0.0.1:5000", "app", Some("latest"), None)),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:9",
                r("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "team/app", Some("9"), None),
            ),
            ("gcr.io/project/app", r("gcr.io", "project/app", Some("latest"), None)),
            (
                "europe-west1-docker.pkg.dev/project/repo/app",
                r("europe-west1-docker.pkg.dev", "project/repo/app", Some("latest"), None),
            ),
            ("mcr.microsoft.com/dotnet/runtime:8.0", r("mcr.microsoft.com", "dotnet/runtime", Some("8.0"), None)),
            ("quay.io/a/b__c.d-e--f", r("quay.io", "a/b__c.d-e--f", Some("latest"), None)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref().map(parts), Ok(want), "{input}");
        }
    }

    #[test]
    fn malformed_references_are_errors_not_panics() {
        let too_long = format!("a/{}", "b".repeat(300));
        let cases = [
            "",
            "Nginx",
            "docker.io/Library/nginx",
            "Upper/lower:tag",
            "nginx:",
            "nginx:-bad",
            "nginx@sha256:abc",
            "nginx@md5",
            "a//b",
            "a/-b",
            "a/b_-c",
            "host.com:port/app",
            "bad_host.com/app",
            ":tag",
            &too_long,
        ];
        for input in cases {
            assert!(parse(input).is_err(), "{input} parsed: {:?}", parse(input));
        }
        // Arbitrary bytes never panic.
        for input in
            ["@", ":", "/", "a@", "@sha256:", "::::", "[", "[]:1/a", "a/b:c:d", "ü/ß", "a:1/b", "[::1/a", "[::1]x/a"]
        {
            let _ = parse(input);
        }
        assert!(parse("[zz]:5000/app").is_err() && parse("[::1]:port/app").is_err());
    }

    #[test]
    fn the_memo_answers_as_the_parser_does() {
        for reference in
            ["nginx", "ghcr.io/org/app:1", "Not A Valid Image", "[::1]:5000/app", "nginx", "Not A Valid Image"]
        {
            assert_eq!(parse_memo(reference).as_deref(), parse(reference).ok().as_ref(), "{reference}");
        }
    }

    #[test]
    fn a_reference_names_its_registry_by_the_grammars_rule() {
        for (reference, names) in [
            ("nginx", false),
            ("team/app:1", false),
            ("registry.example.com/app", true),
            ("localhost/app", true),
            ("localhost:5000/app", true),
            ("registry.example.com", false),
        ] {
            assert_eq!(names_registry(reference), names, "{reference}");
            let parsed = parse(reference).map(|r| r.registry().to_owned());
            assert_eq!(parsed.is_ok_and(|r| r != DOCKER_HUB), names, "{reference}: the parser disagrees");
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
