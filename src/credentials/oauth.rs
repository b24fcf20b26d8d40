//! What every token exchange shares: an HTTP client bound to the operator's allow-list ([`Http`], whose
//! [`Http::send`] is the one way a credential leaves regcred), one request whose failure says which step failed,
//! and the JWTs the protocols use (Entra ID client assertions signed PS256, Google JWT-bearer grants RS256,
//! reading a token's `exp`).
//!
//! Each protocol (Entra ID, ACR's exchange, Google STS and IAM Credentials, the GCE metadata server, Quay's robot
//! federation, the OAuth 2.0 JWT-bearer grant of a service-account key) is one documented HTTP request; they
//! are written here over reqwest (see Cargo.toml for why not an SDK).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jiff::Timestamp;
use serde_json::Value;

use super::egress::Endpoints;
use super::tokens::{EndpointTls, MintError};
use crate::registry::preflight::{crypto_provider, error_chain, untrusted_tls};

/// How long one request to a token endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// At most this much of an endpoint's error answer goes into status.
const MAX_DETAIL: usize = 300;

/// A step of a token exchange: what it is called in messages and the reasons its failures get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    /// The endpoint answered and refused (4xx).
    pub refused: &'static str,
    /// The endpoint could not be reached, timed out or failed (5xx).
    pub unreachable: &'static str,
}

/// An HTTP client for credential requests, bound to the hosts it may reach: the only way regcred sends a
/// credential ([`Http::send`] checks every request against the operator's allow-list first).
pub struct Http {
    client: reqwest::Client,
    endpoints: Endpoints,
}

/// An HTTPS client for token endpoints on the operator's allow-list: the system's roots (plus `SSL_CERT_FILE`),
/// or for an endpoint that is the registry itself its `spec.tls`.
pub fn client(tls: Option<&EndpointTls>, endpoints: &Endpoints) -> Result<Http, MintError> {
    let ca_pem = tls.and_then(|t| t.ca_pem.as_deref());
    let insecure = tls.is_some_and(|t| t.insecure_skip_verify);
    Ok(Http { client: build(ca_pem, insecure, true)?, endpoints: endpoints.clone() })
}

/// [`client`] for a request to `url` on a registry's own host (ACR's exchange, Quay's federation), with the
/// profile's TLS settings (`tls`) only where they can matter: a private registry. On a public cloud's documented
/// host ([`crate::config::DEFAULT_ENDPOINTS`]) the system's roots alone are trusted, whatever the profile says, so
/// that no profile can make regcred's token or an Entra ID token go to whoever answers for that host.
pub fn registry_client(url: &str, tls: &EndpointTls, endpoints: &Endpoints) -> Result<Http, MintError> {
    client(profile_tls_applies(url).then_some(tls), endpoints)
}

/// Whether a profile's TLS settings may apply to a request to `url`: not on the public clouds' documented hosts.
fn profile_tls_applies(url: &str) -> bool {
    Endpoints::default().check_str(url, "").is_err()
}

/// A plain-HTTP client for the GCE metadata server at `host` (the operator's `GCE_METADATA_HOST`) and nowhere
/// else, never through `HTTP(S)_PROXY`: the metadata server answers only on the Pod's own network, and its tokens
/// must not cross a proxy.
pub fn metadata_client(host: &str) -> Result<Http, MintError> {
    Ok(Http { client: build(None, false, false)?, endpoints: Endpoints::metadata_server(host) })
}

/// regcred's token-endpoint client (rustls with ring). It follows no redirect: a credential goes to the URL that
/// was checked, never to one an answer names. (The registry preflight's `https_client` follows redirects, which
/// registries use for blobs; hence a builder of its own.)
fn build(ca_pem: Option<&str>, insecure: bool, proxy: bool) -> Result<reqwest::Client, MintError> {
    crypto_provider().map_err(|why| MintError::new("MintFailed", format!("building the HTTP client: {why}")))?;
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("regcred/", env!("CARGO_PKG_VERSION")));
    if !proxy {
        builder = builder.no_proxy();
    }
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| MintError::new("TLSUntrusted", format!("spec.tls.caBundle is not valid PEM: {e}")))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| MintError::new("MintFailed", format!("building the HTTP client: {}", error_chain(&e))))
}

impl Http {
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends `request` if its host is allowed (otherwise `EndpointNotAllowed`, and nothing is sent) and returns
    /// the JSON it answers with, or the step's failure. The error's text is the endpoint's own explanation
    /// (`error_description`, `error.message`, ...), never what was sent.
    pub async fn send(&self, step: Step, request: reqwest::RequestBuilder) -> Result<Value, MintError> {
        let (_, request) = request.build_split();
        let request =
            request.map_err(|e| MintError::new("MintFailed", format!("{}: {}", step.name, error_chain(&e))))?;
        self.endpoints.check(request.url(), step.name)?;
        let response = self.client.execute(request).await.map_err(|e| transport(step, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport(step, &e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                MintError::new("InvalidResponse", format!("{} answered {status} without JSON", step.name))
            });
        }
        let detail = json.as_ref().map(explanation).unwrap_or_default();
        let detail = if detail.is_empty() { String::new() } else { format!(": {}", truncate(&detail)) };
        let reason = if status.is_client_error() { step.refused } else { step.unreachable };
        let verb = if status.is_client_error() { "refused" } else { "failed" };
        Err(MintError::new(reason, format!("{} {verb} ({status}){detail}", step.name)))
    }
}

/// A string field of an endpoint's answer, or InvalidResponse.
pub fn field<'a>(step: Step, answer: &'a Value, name: &str) -> Result<&'a str, MintError> {
    answer
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MintError::new("InvalidResponse", format!("{} answered without {name}", step.name)))
}

/// `now + expires_in` of an OAuth 2.0 answer (a number, or a string as some endpoints send).
pub fn expires_in(step: Step, answer: &Value, now: Timestamp) -> Result<Timestamp, MintError> {
    let secs = match answer.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    secs.filter(|s| (0..=366 * 86_400).contains(s))
        .and_then(|s| now.checked_add(jiff::SignedDuration::from_secs(s)).ok())
        .ok_or_else(|| MintError::new("InvalidResponse", format!("{} answered without a valid expires_in", step.name)))
}

/// What an error answer says: OAuth 2.0's `error` and `error_description`, Google's `error.message`, or the
/// distribution spec's `errors[].message`.
fn explanation(body: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    if let Some(message) = text(body.pointer("/error/message")) {
        return message;
    }
    let error = text(body.get("error"));
    let description = text(body.get("error_description"));
    match (error, description) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e,
        (None, Some(d)) => d,
        (None, None) => text(body.pointer("/errors/0/message")).unwrap_or_default(),
    }
}

fn truncate(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= MAX_DETAIL {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_DETAIL).collect();
    cut.push_str("...");
    cut
}

fn transport(step: Step, err: &reqwest::Error) -> MintError {
    let what = if err.is_timeout() { "timed out".to_owned() } else { error_chain(err) };
    if untrusted_tls(&what) {
        return MintError::new("TLSUntrusted", format!("{}: its TLS certificate is not trusted ({what})", step.name));
    }
    MintError::new(step.unreachable, format!("{} unreachable: {what}", step.name))
}

/// The claims of a JWT, unverified: for reading the expiry of a token an endpoint issued to regcred.
pub fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&B64URL.decode(payload.trim_end_matches('=')).ok()?).ok()
}

/// A JWT's `exp`.
pub fn expiry(token: &str) -> Option<Timestamp> {
    claims(token)?.get("exp")?.as_i64().and_then(|s| Timestamp::from_second(s).ok())
}

/// Why a private key or certificate cannot be used; the message names the key, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A JWT signature algorithm over an RSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256: Google's JWT-bearer grant.
    Rs256,
    /// RSASSA-PSS with SHA-256: Entra ID's certificate client assertions (its current documentation).
    Ps256,
}

/// Signs `header` (with `alg` and `typ: JWT` added) and `claims` with an RSA private key in PEM (PKCS#8
/// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn sign(alg: Alg, mut header: Value, claims: &Value, key_pem: &[u8]) -> Result<String, KeyError> {
    use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair};
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| KeyError("no PEM private key".into()))?;
    let pair = match &key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => return Err(KeyError("the private key is not an RSA key".into())),
    }
    .map_err(|e| KeyError(format!("the private key is not a usable RSA key ({e})")))?;
    let (name, encoding): (&str, &'static dyn RsaEncoding) = match alg {
        Alg::Rs256 => ("RS256", &RSA_PKCS1_SHA256),
        Alg::Ps256 => ("PS256", &RSA_PSS_SHA256),
    };
    header["alg"] = name.into();
    header["typ"] = "JWT".into();
    let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(encoding, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut signature)
        .map_err(|_| KeyError("signing with the private key failed".into()))?;
    Ok(format!("{input}.{}", B64URL.encode(signature)))
}

/// The SHA-256 thumbprint of a PEM certificate's DER, base64url (JWT's `x5t#S256`, which Entra ID matches
/// against the application's registered certificates).
pub fn x5t_s256(certificate_pem: &[u8]) -> Result<String, KeyError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_slice(certificate_pem).map_err(|_| KeyError("no PEM certificate".into()))?;
    Ok(B64URL.encode(ring::digest::digest(&ring::digest::SHA256, &der)))
}

/// A fresh random id (JWT `jti`): a version 4 UUID, 32 hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails without an OS random source; a clock-derived id is still unique per mint.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos());
        bytes = nanos.unwrap_or_default().to_le_bytes();
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_fresh_version_4_uuids() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::try_parse(&a).unwrap();
        assert_eq!((a.len(), parsed.get_version_num()), (32, 4));
    }

    #[test]
    fn a_profiles_tls_settings_never_apply_to_a_public_clouds_host() {
        let cases = [
            ("https://shop.azurecr.io/oauth2/exchange", false),
            ("https://quay.io/oauth2/federation/robot/token", false),
            ("https://shop.azurecr.cn/oauth2/exchange", false),
            ("https://quay.example.com/oauth2/federation/robot/token", true),
            ("https://127.0.0.1:8443/oauth2/exchange", true),
        ];
        for (url, applies) in cases {
            assert_eq!(profile_tls_applies(url), applies, "{url}");
        }
    }

    const STEP: Step = Step { name: "Entra ID", refused: "EntraIdRefused", unreachable: "EntraIdUnreachable" };

    #[test]
    fn an_error_answer_says_what_the_endpoint_said_in_one_bounded_line() {
        let oauth = serde_json::json!({"error": "invalid_client", "error_description": "AADSTS700213: No matching\nfederated identity record"});
        assert_eq!(explanation(&oauth), "invalid_client: AADSTS700213: No matching\nfederated identity record");
        let google = serde_json::json!({"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied", "status": "PERMISSION_DENIED"}});
        assert_eq!(explanation(&google), "Permission 'iam.serviceAccounts.getAccessToken' denied");
        let registry = serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad token"}]});
        assert_eq!(explanation(&registry), "bad token");
        let long = "x".repeat(1000);
        assert_eq!(truncate(&long).len(), MAX_DETAIL + 3);
        assert!(!truncate("a\nb").contains('\n'));
    }

    #[test]
    fn expires_in_is_read_as_a_number_or_a_string_and_bounded() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |v: Value| expires_in(STEP, &serde_json::json!({"expires_in": v}), now);
        assert_eq!(at(3599.into()).unwrap(), Timestamp::from_second(1_800_003_599).unwrap());
        assert_eq!(at("3600".into()).unwrap(), Timestamp::from_second(1_800_003_600).unwrap());
        assert_eq!(at((-1).into()).unwrap_err().reason, "InvalidResponse");
        assert_eq!(expires_in(STEP, &serde_json::json!({}), now).unwrap_err().reason, "InvalidResponse");
    }

    #[test]
    fn a_jwt_is_signed_verifiably_and_its_expiry_read_back() {
        use rustls_pki_types::pem::PemObject as _;
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gcp-test-key.pem")).unwrap();
        let jwt = sign(Alg::Rs256, serde_json::json!({"kid": "k1"}), &serde_json::json!({"exp": 1_900_000_000}), &pem)
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("RS256"), Some("k1")));
        assert_eq!(expiry(&jwt), Timestamp::from_second(1_900_000_000).ok());
        // The signature verifies with the key's public half.
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem).unwrap();
        let rustls_pki_types::PrivateKeyDer::Pkcs8(der) = key else { panic!("pkcs8") };
        let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &B64URL.decode(parts[2]).unwrap()).unwrap();
        assert!(sign(Alg::Rs256, serde_json::json!({}), &serde_json::json!({}), b"not a key").is_err());
        // PS256 verifies with RSASSA-PSS.
        let jwt = sign(Alg::Ps256, serde_json::json!({}), &serde_json::json!({"a": 1}), &pem).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "PS256");
        let pss = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PSS_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(),
        );
        pss.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &B64URL.decode(parts[2]).unwrap()).unwrap();
        assert_eq!(expiry("not.a-jwt"), None);
    }
}
