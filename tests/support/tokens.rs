//! Token endpoints that speak the real protocols, started by the tests themselves: moto in server mode for AWS
//! (STS and ECR), and a small OAuth 2.0 token endpoint for GCP's JWT-bearer grant.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::process::{Child, Command};

/// moto's server, installed by `tools/python-tools.sh` (`make tools`); `REGCRED_MOTO_SERVER` overrides the path.
pub fn moto_server_path() -> PathBuf {
    if let Ok(p) = std::env::var("REGCRED_MOTO_SERVER") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/regcred/venv/bin/moto_server")
}

/// A moto server on a free loopback port, killed when dropped.
pub struct Moto {
    _child: Child,
    pub endpoint: String,
}

impl Moto {
    pub async fn start() -> Self {
        let path = moto_server_path();
        assert!(path.exists(), "{} is missing: run `make tools` (make test does)", path.display());
        let port = super::free_port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        super::wait_for("moto to listen", Duration::from_secs(60), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Self { _child: child, endpoint }
    }

    /// Environment for an operator that talks to this moto only.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ENDPOINT_URL", self.endpoint.clone())]
    }
}

/// One access token the GCP endpoint issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub expires_at: std::time::SystemTime,
}

/// A local OAuth 2.0 token endpoint for GCP service-account keys (HTTPS, as Google's): it accepts the JWT-bearer
/// grant regcred posts to the key's `token_uri` as Google does (signed RS256 by the key, for this endpoint, living
/// an hour at most, with the read-only storage scope), and answers with a fresh access token living `lifetime`.
#[derive(Clone)]
pub struct GcpTokenEndpoint {
    pub token_uri: String,
    /// The CA of its TLS certificate.
    pub ca_pem: String,
    pub lifetime_secs: Arc<AtomicU64>,
    /// While set, every request fails with 503.
    pub failing: Arc<AtomicBool>,
    /// While set, every grant is refused (401 invalid_grant), as for a revoked key.
    pub denying: Arc<AtomicBool>,
    pub issued: Arc<Mutex<HashMap<String, Issued>>>,
}

impl GcpTokenEndpoint {
    pub async fn start(lifetime_secs: u64) -> Self {
        let state = Arc::new(Mutex::new(None::<GcpTokenEndpoint>));
        let handler_state = state.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let endpoint = handler_state.lock().unwrap().clone().unwrap();
                async move { endpoint.answer(&body) }
            }),
        );
        let (addr, ca_pem) = super::cloud::serve_tls("127.0.0.1", app).await;
        let endpoint = Self {
            token_uri: format!("https://{addr}/token"),
            ca_pem,
            lifetime_secs: Arc::new(AtomicU64::new(lifetime_secs)),
            failing: Arc::default(),
            denying: Arc::default(),
            issued: Arc::default(),
        };
        *state.lock().unwrap() = Some(endpoint.clone());
        endpoint
    }

    fn answer(&self, body: &str) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        if self.failing.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"temporarily_unavailable"}"#.into());
        }
        if self.denying.load(Ordering::SeqCst) {
            return (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_grant","error_description":"revoked"}"#.into());
        }
        let form: HashMap<String, String> = url_form(body);
        if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return (StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#.into());
        }
        let assertion = form.get("assertion").map(String::as_str).unwrap_or_default();
        let claims = verified_grant(assertion)
            .filter(|c| c["aud"] == self.token_uri.as_str() && c["scope"] == super::cloud::READ_ONLY);
        let Some(claims) = claims else {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature, audience, scope or lifetime."}"#
                    .into(),
            );
        };
        let lifetime = self.lifetime_secs.load(Ordering::SeqCst);
        let mut issued = self.issued.lock().unwrap();
        let token = format!("ya29.test-{}-{}", claims["iss"].as_str().unwrap_or("?").len(), issued.len() + 1);
        issued
            .insert(token.clone(), Issued { expires_at: std::time::SystemTime::now() + Duration::from_secs(lifetime) });
        let answer = serde_json::json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"});
        (StatusCode::OK, answer.to_string())
    }

    /// regcred's environment for keys whose `token_uri` is this endpoint (or one of `more`): its CA trusted, its
    /// host on the allow-list of credential endpoints, as an operator would set them.
    pub fn operator_env(&self, env: &super::TestEnv, more: &[&str]) -> Vec<(&'static str, String)> {
        let mut hosts = vec![self.token_uri.as_str()];
        hosts.extend_from_slice(more);
        vec![("SSL_CERT_FILE", super::cloud::ca_file(env, &[&self.ca_pem])), super::cloud::allow(&hosts)]
    }

    /// A service-account key whose `token_uri` is this endpoint.
    pub fn key_json(&self) -> String {
        self.key_json_for(&self.token_uri)
    }

    /// A service-account key whose `token_uri` is `token_uri`.
    pub fn key_json_for(&self, token_uri: &str) -> String {
        let pem = std::fs::read_to_string(super::repo_root().join("tests/fixtures/gcp-test-key.pem")).unwrap();
        serde_json::json!({
            "type": "service_account",
            "project_id": "regcred-test",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": "puller@regcred-test.iam.gserviceaccount.com",
            "client_id": "1000000000000",
            "token_uri": token_uri,
        })
        .to_string()
    }

    pub fn mints(&self) -> usize {
        self.issued.lock().unwrap().len()
    }
}

/// The claims of a JWT-bearer grant Google would take: RS256-signed by the test key, `exp` at most an hour
/// after `iat`, not expired.
fn verified_grant(jwt: &str) -> Option<serde_json::Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use rustls_pki_types::pem::PemObject as _;
    let [h, c, sig] = jwt.split('.').collect::<Vec<_>>()[..] else { return None };
    let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&B64URL.decode(c).ok()?).ok()?;
    let pem = std::fs::read(super::repo_root().join("tests/fixtures/gcp-test-key.pem")).ok()?;
    let rustls_pki_types::PrivateKeyDer::Pkcs8(der) = rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem).ok()?
    else {
        return None;
    };
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok()?;
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(),
    );
    if header["alg"] != "RS256" || public.verify(format!("{h}.{c}").as_bytes(), &B64URL.decode(sig).ok()?).is_err() {
        return None;
    }
    let (iat, exp) = (claims["iat"].as_i64()?, claims["exp"].as_i64()?);
    let now = jiff::Timestamp::now().as_second();
    (exp > now && exp - iat <= 3600 && iat <= now + 60).then_some(claims)
}

/// Every value of `key` in a form body (`application/x-www-form-urlencoded`), in order.
pub fn url_form_all(body: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(body.as_bytes()).filter(|(k, _)| k == key).map(|(_, v)| v.into_owned()).collect()
}

/// A form body's fields (the last value of a repeated key).
pub fn url_form(body: &str) -> HashMap<String, String> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

/// A local ECR Public endpoint: it answers the SDK's real GetAuthorizationToken request (AWS JSON 1.1 over
/// HTTP, SigV4-signed) after checking it is signed for `ecr-public` in us-east-1, the only region that mints
/// ECR Public tokens. moto has no ECR Public.
#[derive(Clone)]
pub struct EcrPublicEndpoint {
    pub endpoint: String,
    pub requests: Arc<AtomicU64>,
}

impl EcrPublicEndpoint {
    pub async fn start() -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Self { endpoint, requests: Arc::default() };
        let seen = state.requests.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let target_ok = header("x-amz-target") == "SpencerFrontendService.GetAuthorizationToken";
                    let signed_ok = header("authorization").contains("/us-east-1/ecr-public/aws4_request");
                    if !(target_ok && signed_ok) {
                        return (StatusCode::BAD_REQUEST, r#"{"__type":"InvalidParameterException"}"#.to_owned());
                    }
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:public-token-{n}"));
                    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                        + 12 * 3600;
                    let body =
                        serde_json::json!({"authorizationData": {"authorizationToken": token, "expiresAt": expires}});
                    (StatusCode::OK, body.to_string())
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        state
    }
}

/// A GCP profile's spec: tokens minted from the service-account key in Secret `source` (regcred's namespace),
/// written as `secret_name` into the namespaces labelled `pull=yes`.
pub fn gcp_spec(h: &super::harness::Harness, source: &str, secret_name: &str) -> serde_json::Value {
    serde_json::json!({
        "provider": "gcr",
        "credentials": {"gcp": {"secretRef": {"name": source}}},
        "namespaces": h.select("yes"),
        "secretName": secret_name,
    })
}

/// What a kubelet-like observer saw while a GCP profile's tokens rotated through an outage.
#[derive(Debug)]
pub struct OutageRun {
    /// Tokens the endpoint issued during the run, counting the one in use at the start.
    pub mints: usize,
    /// Distinct tokens seen in the profile's Secrets.
    pub tokens_seen: usize,
    /// Reads of all the profile's Secrets.
    pub observations: usize,
    /// `namespace: token` for every Secret seen holding an expired token (empty when all went well).
    pub expired: Vec<String>,
    /// How long the endpoint failed.
    pub outage: Duration,
}

/// Reads every Secret of `profile` like kubelets would, every 250 ms for `watch`. After one and a third
/// lifetimes, the endpoint starts failing just before the next refresh is due and keeps failing for a quarter of
/// a lifetime: the last good token must carry every namespace through.
pub async fn rotate_through_outage(
    h: &super::harness::Harness,
    gcp: &GcpTokenEndpoint,
    profile: &str,
    lifetime: u64,
    watch: Duration,
) -> OutageRun {
    use kube::api::{Api, ListParams};
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::all(h.client());
    let profiles = Api::<regcred::api::RegistryProfile>::all(h.client());
    let ours = ListParams::default().labels(&format!("regcred.dev/profile={profile}"));
    let started = std::time::Instant::now();
    let mints_before = gcp.mints();
    let (mut seen, mut expired, mut observations) = (std::collections::BTreeSet::new(), Vec::new(), 0);
    let mut outage: Option<std::time::Instant> = None;
    let mut outage_len = Duration::ZERO;
    while started.elapsed() < watch {
        if outage.is_none() && started.elapsed() > Duration::from_secs(lifetime * 4 / 3) {
            let next = profiles.get(profile).await.ok().and_then(|p| p.status?.next_refresh_time);
            if next.is_some_and(|n| jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1) >= n.0) {
                outage = Some(std::time::Instant::now());
                gcp.failing.store(true, Ordering::SeqCst);
            }
        }
        if let Some(o) = outage
            && gcp.failing.load(Ordering::SeqCst)
            && o.elapsed() > Duration::from_secs(lifetime / 4)
        {
            gcp.failing.store(false, Ordering::SeqCst);
            outage_len = o.elapsed();
        }
        // A list the apiserver refuses (it may be restarting) is simply read again.
        if let Ok(list) = secrets.list(&ours).await {
            observations += 1;
            let now = std::time::SystemTime::now();
            let issued = gcp.issued.lock().unwrap().clone();
            for s in &list.items {
                let entry = &regcred::fixtures::auths(s)["gcr.io"];
                assert_eq!(entry["username"], "oauth2accesstoken");
                let token = entry["password"].as_str().unwrap().to_owned();
                let ns = s.metadata.namespace.clone().unwrap_or_default();
                let expires =
                    issued.get(&token).unwrap_or_else(|| panic!("a token the endpoint never issued: {token}"));
                if now >= expires.expires_at {
                    expired.push(format!("{ns}: {token}"));
                }
                seen.insert(token);
            }
        }
        // The kubelets' reading rate over the run (what is measured), not a wait for something.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gcp.failing.store(false, Ordering::SeqCst);
    OutageRun {
        mints: gcp.mints() - mints_before + 1,
        tokens_seen: seen.len(),
        observations,
        expired,
        outage: outage_len,
    }
}
