//! The preflight's I/O: the `/v2/` ping and its challenge with reqwest, manifests with oci-client, and what their
//! errors mean.

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::{Reference, RegistryOperation};

use super::manifest::{Manifest, judge};
use super::phrase::{Cause, Problem};
use super::{Credentials, DOCKER_LIST, DOCKER_MANIFEST, Failure, ImageResult, OCI_INDEX, OCI_MANIFEST, Options};

/// The text of an error and of its sources, joined by `: `; a source whose text its parent already carries is left
/// out.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Whether an error's text says the peer's TLS certificate is not trusted.
pub fn untrusted_tls(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("invalid peer")
}

/// Classifies a transport error towards `target` (a registry host or an image): an untrusted certificate, or an
/// unreachable registry and why.
fn transport(err: &(dyn std::error::Error + 'static), target: &str) -> Failure {
    transport_text(&error_chain(err), target)
}

fn transport_text(text: &str, target: &str) -> Failure {
    let (target, detail) = (target.to_owned(), text.to_owned());
    if untrusted_tls(text) {
        Problem::TlsUntrusted { target, detail }.failure()
    } else {
        Problem::Unreachable { target, cause: Cause::of(text), detail }.failure()
    }
}

/// Why an HTTPS client could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The extra CA bundle is not PEM.
    CaBundle(String),
    /// reqwest refused the configuration: the error's chain.
    Build(String),
}

/// `Err` when no rustls crypto provider is installed for the process: regcred installs ring once at start (see
/// `main.rs`), and a client built without one would panic.
pub fn crypto_provider() -> Result<(), String> {
    match rustls::crypto::CryptoProvider::get_default() {
        Some(_) => Ok(()),
        None => {
            Err("no TLS crypto provider is installed (install rustls' ring provider before building clients)".into())
        }
    }
}

/// regcred's HTTPS client (rustls with ring): the system's roots plus `ca_pem`, or no verification at all when
/// `insecure`. Shared by the preflight and the token exchanges.
pub fn https_client(
    timeout: std::time::Duration,
    ca_pem: Option<&str>,
    insecure: bool,
) -> Result<reqwest::Client, ClientError> {
    crypto_provider().map_err(ClientError::Build)?;
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("regcred/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        for cert in
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| ClientError::CaBundle(e.to_string()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| ClientError::Build(error_chain(&e)))
}

/// The preflight's HTTP client for `options`.
pub(super) fn http_client(options: &Options) -> Result<reqwest::Client, Failure> {
    https_client(options.timeout, options.ca_pem.as_deref(), options.insecure_skip_verify).map_err(|e| match e {
        ClientError::CaBundle(detail) => Problem::CaBundleInvalid { detail }.failure(),
        ClientError::Build(detail) => unbuilt(detail),
    })
}

/// A client that could not be built: a CA it could not use, or something else.
fn unbuilt(detail: String) -> Failure {
    if untrusted_tls(&detail) {
        Problem::CaBundleInvalid { detail }.failure()
    } else {
        Problem::ClientUnavailable { detail }.failure()
    }
}

/// The manifest client. Built with `try_from`, never `new`: `new` falls back to a default client when the
/// configuration fails (a container without system CA certificates, say), and building that one panics.
pub(super) fn oci_client(options: &Options) -> Result<oci_client::Client, Failure> {
    crypto_provider().map_err(|detail| Problem::ClientUnavailable { detail }.failure())?;
    let extra_root_certificates = options
        .ca_pem
        .iter()
        .map(|pem| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: pem.as_bytes().to_vec(),
        })
        .collect();
    let config = oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Https,
        accept_invalid_certificates: options.insecure_skip_verify,
        extra_root_certificates,
        platform_resolver: None,
        read_timeout: Some(options.timeout),
        connect_timeout: Some(options.timeout),
        user_agent: concat!("regcred/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    oci_client::Client::try_from(config).map_err(|e| unbuilt(error_chain(&e)))
}

/// The longest token-service answer read: a token is a few kilobytes.
const TOKEN_BYTES: usize = 64 * 1024;

/// Whether Basic credentials may be sent to the token service at `realm`, for a registry reached over
/// `registry_scheme`: only over HTTPS, or over plain HTTP when the registry itself is plain HTTP (where the
/// credentials would cross the network in the clear anyway). `Err`: why not, for the condition's message.
pub fn realm_allowed(realm: &str, registry_scheme: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(realm).map_err(|e| format!("the token realm {realm:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if registry_scheme == "http" => Ok(()),
        "http" => Err(format!(
            "the token realm {realm} is plain http:// while the registry is HTTPS: credentials are never sent in the \
             clear (configure the registry's token service with an https:// realm)"
        )),
        other => Err(format!("the token realm {realm} has scheme {other}: only https:// is used")),
    }
}

/// A token service's answer: Docker's `token`, or OAuth2's `access_token`.
#[derive(serde::Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
}

/// What a registry wants before it serves a repository, once the credentials have been presented.
pub(super) enum Grant {
    /// Nothing: it answered `/v2/` without a challenge.
    Open,
    /// Basic authentication on every request to the registry itself.
    Basic,
    /// A Bearer token from its token service.
    Bearer(String),
}

/// `GET /v2/` and the challenge it answers with: Basic is retried with the credentials, Bearer asks the token
/// service (`realm`, only where [`realm_allowed`]) for a token with them, for `scope` when given. The one place
/// where a registry's credentials are sent by regcred itself (oci-client receives Basic credentials only for a
/// Basic registry, and otherwise the token obtained here).
pub(super) async fn authorize(
    http: &reqwest::Client,
    host: &str,
    scope: Option<&str>,
    credentials: Option<&Credentials>,
) -> Result<Grant, Failure> {
    let url = format!("https://{host}/v2/");
    let res = http.get(&url).send().await.map_err(|e| transport(&e, &format!("registry {host}")))?;
    let status = res.status();
    if status.is_success() {
        return Ok(Grant::Open);
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Problem::RateLimited { registry: host.to_owned() }.failure());
    }
    if status != reqwest::StatusCode::UNAUTHORIZED {
        return Err(Problem::NotARegistry { url, status: status.as_u16() }.failure());
    }
    let challenge =
        res.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let (scheme, params) = parse_challenge(challenge);
    let Some(creds) = credentials else {
        if scheme.eq_ignore_ascii_case("bearer") {
            // Anonymous pulls through a token service (Docker Hub, GHCR): only images can tell.
            return Ok(Grant::Open);
        }
        return Err(Problem::CredentialsRequired { registry: host.to_owned() }.failure());
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return basic(http, &url, host, scope, creds).await;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        let detail =
            format!("it asks for authentication scheme {scheme:?}, which regcred does not speak (Basic, Bearer)");
        return Err(Problem::RegistryFailed { target: format!("registry {host}"), detail }.failure());
    }
    bearer(http, host, &params, scope, creds).await
}

/// The failure of credentials a registry or its token service refused with `status`.
fn rejected(host: &str, creds: &Credentials, status: reqwest::StatusCode) -> Failure {
    Problem::CredentialsRefused { registry: host.to_owned(), user: creds.username.clone(), status: status.as_u16() }
        .failure()
}

/// What an answer to the credentials says: `Ok` when they were accepted.
fn accepted(host: &str, creds: &Credentials, status: reqwest::StatusCode) -> Result<(), Failure> {
    match status {
        s if s.is_success() => Ok(()),
        s if s == reqwest::StatusCode::UNAUTHORIZED || s == reqwest::StatusCode::FORBIDDEN => {
            Err(rejected(host, creds, s))
        }
        s if s == reqwest::StatusCode::TOO_MANY_REQUESTS => {
            Err(Problem::RateLimited { registry: host.to_owned() }.failure())
        }
        s => Err(Problem::RegistryFailed {
            target: format!("registry {host}"),
            detail: format!("the login answered HTTP {s}"),
        }
        .failure()),
    }
}

/// A Basic challenge: `GET /v2/` again with the credentials (to the registry's own host only).
async fn basic(
    http: &reqwest::Client,
    url: &str,
    host: &str,
    scope: Option<&str>,
    creds: &Credentials,
) -> Result<Grant, Failure> {
    // For an image, its own requests carry the credentials (to this host only) and say whether they work.
    if scope.is_some() {
        return Ok(Grant::Basic);
    }
    let answer = http.get(url).basic_auth(&creds.username, Some(&creds.password)).send().await;
    accepted(host, creds, answer.map_err(|e| transport(&e, &format!("registry {host}")))?.status())?;
    Ok(Grant::Basic)
}

/// A Bearer challenge (`params`): a token from the token service at its realm, asked for with the credentials.
async fn bearer(
    http: &reqwest::Client,
    host: &str,
    params: &[(String, String)],
    scope: Option<&str>,
    creds: &Credentials,
) -> Result<Grant, Failure> {
    let param = |name: &str| challenge_param(params, name);
    let Some(realm) = param("realm") else {
        let detail = "its Bearer challenge names no token service (realm)".to_owned();
        return Err(Problem::RegistryFailed { target: format!("registry {host}"), detail }.failure());
    };
    // The registry is always reached over HTTPS here.
    realm_allowed(&realm, "https")
        .map_err(|why| Problem::TokenRealmRefused { registry: host.to_owned(), why }.failure())?;
    let mut query = Vec::new();
    if let Some(service) = param("service") {
        query.push(("service", service));
    }
    if let Some(scope) = scope {
        query.push(("scope", scope.to_owned()));
    }
    let answer = http.get(&realm).query(&query).basic_auth(&creds.username, Some(&creds.password)).send().await;
    let answer = answer.map_err(|e| transport(&e, &format!("the token service of {host} ({realm})")))?;
    accepted(host, creds, answer.status())?;
    let token = read_token(answer, host).await?;
    // A registry that only checks credentials at the token service may answer the ping's request without a
    // token: the credentials were accepted.
    match (token, scope) {
        (Some(t), _) => Ok(Grant::Bearer(t)),
        (None, None) => Ok(Grant::Open),
        (None, Some(_)) => Err(Problem::RegistryFailed {
            target: format!("registry {host}"),
            detail: "its token service accepted the credentials but answered no token".into(),
        }
        .failure()),
    }
}

/// The token of a token service's answer (at most [`TOKEN_BYTES`] read); `None` when it holds none.
async fn read_token(mut answer: reqwest::Response, host: &str) -> Result<Option<String>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| transport(&e, &format!("the token service of {host}")))? {
        if body.len() + chunk.len() > TOKEN_BYTES {
            return Err(Problem::RegistryFailed {
                target: format!("registry {host}"),
                detail: format!("its token service's answer is larger than {TOKEN_BYTES} bytes"),
            }
            .failure());
        }
        body.extend_from_slice(&chunk);
    }
    let token = serde_json::from_slice::<Token>(&body).ok().and_then(|t| t.token.or(t.access_token));
    Ok(token.filter(|t| !t.is_empty()))
}

/// `GET /v2/` with the credentials, as [`authorize`] presents them: whether they work.
pub(super) async fn ping(http: &reqwest::Client, host: &str, credentials: Option<&Credentials>) -> Result<(), Failure> {
    authorize(http, host, None, credentials).await.map(|_| ())
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

/// The clients of one set of credentials and TLS options: reqwest for the challenge and the token service,
/// oci-client for manifests. oci-client keeps the authentication and the tokens it was given per registry and
/// repository, so a session serves one set of credentials only; reused, it keeps its connections.
#[derive(Clone)]
pub struct Session {
    pub(super) http: reqwest::Client,
    oci: oci_client::Client,
}

impl Session {
    /// Both clients for `options`.
    pub fn new(options: &Options) -> Result<Self, Failure> {
        Ok(Self { http: http_client(options)?, oci: oci_client(options)? })
    }
}

/// Resolves one image (a full reference) with `credentials` through `session`: its manifest, an index resolved to
/// the platform `options` name, and its type and size judged against them.
pub(super) async fn check_image(
    session: &Session,
    credentials: Option<&Credentials>,
    image: &str,
    options: &Options,
) -> ImageResult {
    let mut result = ImageResult { image: image.to_owned(), ..Default::default() };
    if let Err(f) = resolve_image(session, credentials, image, options, &mut result).await {
        result.failure = Some(f);
    }
    result
}

/// [`check_image`]'s steps, filling `result` in as they go; `Err`: the step that failed.
async fn resolve_image(
    session: &Session,
    credentials: Option<&Credentials>,
    image: &str,
    options: &Options,
    result: &mut ImageResult,
) -> Result<(), Failure> {
    let reference = image
        .parse::<Reference>()
        .map_err(|e| Problem::InvalidReference { image: image.to_owned(), detail: e.to_string() }.failure())?;
    // Authenticate for this repository here, not in oci-client: the realm rule applies ([`authorize`]), and
    // oci-client would otherwise fall back to an anonymous request when the token service refuses.
    let auth = grant(session, credentials, &reference).await?;
    let (mut manifest, mut digest) = fetch(&session.oci, &auth, &reference).await?;
    let mut media_type = manifest.media_type();
    if media_type == DOCKER_LIST || media_type == OCI_INDEX {
        let (entry, platform) = manifest.entry_for(&options.platform).map_err(|available| {
            result.digest = Some(digest.clone());
            result.media_type = Some(media_type.clone());
            Problem::PlatformMissing { platform: options.platform.clone(), available }.failure()
        })?;
        result.platform = Some(platform);
        // Same repository: the token of the first fetch serves.
        (manifest, digest) = fetch(&session.oci, &auth, &reference.clone_with_digest(entry)).await?;
        media_type = manifest.media_type();
    }
    let size = manifest.size();
    result.digest = Some(digest);
    result.size = Some(size);
    let judged = judge(&media_type, size, options);
    result.media_type = Some(media_type);
    judged.map_or(Ok(()), Err)
}

/// What oci-client is given for `reference`: nothing for anonymous access or an open registry, the credentials for
/// a Basic registry (sent to the registry's own host only), and for a token registry the token [`authorize`]
/// obtained (put in oci-client's token cache for this repository), never the credentials.
async fn grant(
    session: &Session,
    credentials: Option<&Credentials>,
    reference: &Reference,
) -> Result<RegistryAuth, Failure> {
    let Some(creds) = credentials else { return Ok(RegistryAuth::Anonymous) };
    let scope = format!("repository:{}:pull", reference.repository());
    match authorize(&session.http, reference.resolve_registry(), Some(&scope), Some(creds)).await {
        Ok(Grant::Open) => Ok(RegistryAuth::Anonymous),
        Ok(Grant::Basic) => {
            // Known for this repository from now on: oci-client asks the registry's challenge no more.
            let basic = RegistryTokenType::Basic(creds.username.clone(), creds.password.clone());
            session.oci.tokens.insert(reference, RegistryOperation::Pull, basic).await;
            Ok(RegistryAuth::Basic(creds.username.clone(), creds.password.clone()))
        }
        Ok(Grant::Bearer(token)) => {
            let token = RegistryTokenType::Bearer(RegistryToken::Token { token });
            session.oci.tokens.insert(reference, RegistryOperation::Pull, token).await;
            Ok(RegistryAuth::Anonymous)
        }
        Err(f) => Err(f),
    }
}

async fn fetch(
    client: &oci_client::Client,
    auth: &RegistryAuth,
    reference: &Reference,
) -> Result<(Manifest, String), Failure> {
    let (body, digest) =
        client.pull_manifest_raw(reference, auth, &ACCEPT).await.map_err(|e| classify(&e, reference))?;
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| Problem::ManifestUnreadable { detail: format!("not JSON regcred can read: {e}") }.failure())?;
    Ok((manifest, digest))
}

/// What the registry's refusal of a manifest means, as a [`Problem`].
fn classify(err: &OciDistributionError, reference: &Reference) -> Failure {
    use OciDistributionError as E;
    let registry = reference.registry().to_owned();
    let repository = format!("{registry}/{}", reference.repository());
    let denied = |detail: String| Problem::PullDenied { repository: repository.clone(), detail };
    let tag_not_found = || Problem::TagNotFound {
        repository: repository.clone(),
        tag: reference.digest().or(reference.tag()).unwrap_or("latest").to_owned(),
    };
    let failed = |detail: String| Problem::RegistryFailed { target: format!("registry {registry}"), detail };
    let problem = match err {
        E::AuthenticationFailure(m) => denied(format!("the token service refused: {}", m.trim())),
        E::UnauthorizedError { .. } => denied("HTTP 401 Unauthorized".into()),
        E::RegistryError { envelope, .. } => {
            let has = |code: &dyn Fn(&OciErrorCode) -> bool| envelope.errors.iter().any(|e| code(&e.code));
            if has(&|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                denied(envelope.to_string())
            } else if has(&|c| matches!(c, OciErrorCode::NameUnknown)) {
                Problem::RepositoryNotFound { repository: repository.clone(), registry }
            } else if has(&|c| {
                matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NotFound | OciErrorCode::BlobUnknown)
            }) {
                tag_not_found()
            } else if has(&|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                Problem::RateLimited { registry }
            } else {
                failed(envelope.to_string())
            }
        }
        E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => tag_not_found(),
        E::ServerError { code: 401 | 403, message, .. } => denied(message.trim().to_owned()),
        E::ServerError { code: 429, .. } => Problem::RateLimited { registry },
        E::RequestError(e) => return transport(e, &format!("registry {registry}")),
        E::UnsupportedMediaTypeError(t) => Problem::NotAnImageManifest { media_type: t.clone() },
        other => failed(other.to_string()),
    };
    problem.failure()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
