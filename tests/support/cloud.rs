//! Local endpoints that speak the clouds' identity protocols as documented, and check what regcred sends:
//! - [`Entra`]: Entra ID's v2.0 token endpoint (client credentials with a federated ServiceAccount token, a client
//!   secret, or a certificate's signed assertion), each verified (the federated token by a TokenReview against
//!   the real apiserver, the assertion by its RSA signature);
//! - [`CloudRegistry`]: a registry (docker-registry) behind a TLS front that is its token service, like ACR,
//!   GCR and Quay: ACR's `/oauth2/exchange` and `/oauth2/token`, Quay's `/oauth2/federation/robot/token`, and the
//!   distribution token flow, which accepts only the tokens these endpoints issued (and the test's push user);
//! - [`Gcp`]: the GCE metadata server, Google STS and IAM Credentials' `generateAccessToken`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::registry::{PASSWORD, Registry, USER, tls_material};

/// Access tokens issued, with when they expire (seconds).
pub type Issued = Arc<Mutex<HashMap<String, i64>>>;

pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn form(body: &str) -> HashMap<String, String> {
    super::tokens::url_form(body)
}

/// ACR's Entra ID scope in the public cloud: the only one the local exchange accepts, as a registry with
/// ARM-audience authentication disabled (a built-in Azure Policy) does.
pub const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";

/// Writes the CA bundles regcred must trust for the token endpoints (as `SSL_CERT_FILE` points at on a cluster).
pub fn ca_file(env: &super::TestEnv, pems: &[&str]) -> String {
    let dir = std::env::temp_dir().join("regcred-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("ca-{}.pem", env.id));
    std::fs::write(&path, pems.concat()).unwrap();
    path.display().to_string()
}

/// `HOST:PORT` of a URL: what the tests add to regcred's allow-list of credential endpoints.
pub fn host_port(url: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port_or_known_default().unwrap())
}

/// The environment that allows regcred to send credentials to `urls` (as an operator would:
/// `--extra-allowed-endpoints`, chart value `credentials.extraAllowedEndpoints`).
pub fn allow(urls: &[&str]) -> (&'static str, String) {
    let hosts: Vec<String> = urls
        .iter()
        .map(|u| host_port(&if u.contains("://") { (*u).to_owned() } else { format!("https://{u}") }))
        .collect();
    ("REGCRED_EXTRA_ALLOWED_ENDPOINTS", hosts.join(","))
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(B64.decode(value).ok()?).ok()?;
    decoded.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// An unsigned JWT-shaped token with `exp`, as the clouds' tokens carry their expiry (regcred reads it).
fn opaque_jwt(kind: &str, n: u64, exp: i64) -> String {
    let header = B64URL.encode(r#"{"alg":"none"}"#);
    let claims = B64URL.encode(json!({"kind": kind, "n": n, "exp": exp, "jti": super::suffix()}).to_string());
    format!("{header}.{claims}.{}", B64URL.encode(format!("sig-{kind}-{n}")))
}

/// Serves `app` with TLS for `host` on a free port; returns the address and the CA that signed the certificate.
pub async fn serve_tls(host: &str, app: axum::Router) -> (SocketAddr, String) {
    regcred::install_crypto_provider();
    let (ca, cert, key) = tls_material(host);
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await.unwrap();
    let listener = std::net::TcpListener::bind((host, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(listener, config).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
    (addr, ca)
}

/// Whether `token` is a valid token of ServiceAccount `subject` for `audience`, as the apiserver says.
pub async fn review(client: &kube::Client, token: &str, audience: &str, subject: &str) -> Result<(), String> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![audience.to_owned()]) },
        ..Default::default()
    };
    let out = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?;
    let status = out.status.unwrap_or_default();
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(format!("not authenticated for audience {audience}: {:?}", status.error));
    }
    if user != subject {
        return Err(format!("token of {user}, not {subject}"));
    }
    Ok(())
}

/// How the Entra ID endpoint recognises the application.
#[derive(Clone)]
pub enum AppCredential {
    /// A ServiceAccount token of `subject` (the federated identity credential's subject).
    Federated {
        subject: String,
    },
    Secret(String),
    /// An RSA certificate's public key (SubjectPublicKeyInfo's RSA key, DER) and its SHA-256 thumbprint
    /// (`x5t#S256`).
    Certificate {
        public_key: Vec<u8>,
        x5t_s256: String,
    },
}

/// Entra ID's token endpoint for one tenant and application.
#[derive(Clone)]
pub struct Entra {
    pub authority: String,
    pub ca_pem: String,
    pub tenant: String,
    pub client_id: String,
    credential: Arc<Mutex<AppCredential>>,
    /// While set, every request is refused as an unknown federated identity would be.
    pub refusing: Arc<AtomicBool>,
    /// Access tokens issued, with their scope.
    pub issued: Arc<Mutex<HashMap<String, String>>>,
    admin: kube::Client,
}

impl Entra {
    pub async fn start(admin: &kube::Client, host: &str, credential: AppCredential) -> Self {
        Self::start_sharing(admin, host, credential, None).await
    }

    /// As [`Entra::start`], recording issued tokens in `issued` (shared with another endpoint of the tenant).
    pub async fn start_sharing(
        admin: &kube::Client,
        host: &str,
        credential: AppCredential,
        issued: Option<Arc<Mutex<HashMap<String, String>>>>,
    ) -> Self {
        let state = Arc::new(Mutex::new(None::<Entra>));
        let handler_state = state.clone();
        let app = axum::Router::new().route(
            "/{tenant}/oauth2/v2.0/token",
            axum::routing::post(move |axum::extract::Path(tenant): axum::extract::Path<String>, body: String| {
                let entra = handler_state.lock().unwrap().clone().unwrap();
                async move { entra.token(&tenant, &body).await }
            }),
        );
        let (addr, ca_pem) = serve_tls(host, app).await;
        let entra = Self {
            authority: format!("https://{addr}/"),
            ca_pem,
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "6b1e4a2c-3d5f-4e6a-8b7c-9d0e1f2a3b4c".into(),
            credential: Arc::new(Mutex::new(credential)),
            refusing: Arc::default(),
            issued: issued.unwrap_or_default(),
            admin: admin.clone(),
        };
        *state.lock().unwrap() = Some(entra.clone());
        entra
    }

    pub fn token_url(&self) -> String {
        format!("{}{}/oauth2/v2.0/token", self.authority, self.tenant)
    }

    async fn token(&self, tenant: &str, body: &str) -> Response {
        let refuse = |code: &str, why: &str| {
            answer(StatusCode::UNAUTHORIZED, json!({"error": code, "error_description": format!("AADSTS: {why}")}))
        };
        let f = form(body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        if self.refusing.load(Ordering::SeqCst) {
            return refuse("invalid_client", "AADSTS700213: No matching federated identity record found");
        }
        if tenant != self.tenant {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found"}),
            );
        }
        if get("grant_type") != "client_credentials" || get("client_id") != self.client_id || get("scope").is_empty() {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": "bad form"}),
            );
        }
        let credential = self.credential.lock().unwrap().clone();
        let assertion_type_ok =
            get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
        let verdict = match credential {
            AppCredential::Secret(secret) => {
                if get("client_secret") == secret {
                    Ok(())
                } else {
                    Err("AADSTS7000215: Invalid client secret provided".to_owned())
                }
            }
            // Entra ID refuses an assertion without its type (AADSTS50027-like).
            AppCredential::Federated { .. } | AppCredential::Certificate { .. } if !assertion_type_ok => {
                Err("AADSTS7000216: 'client_assertion_type' is required".to_owned())
            }
            AppCredential::Federated { subject } => {
                review(&self.admin, &get("client_assertion"), "api://AzureADTokenExchange", &subject).await
            }
            AppCredential::Certificate { public_key, x5t_s256 } => {
                verify_assertion(&get("client_assertion"), &public_key, &x5t_s256, &self.token_url(), &self.client_id)
            }
        };
        if let Err(why) = verdict {
            return refuse("invalid_client", &why);
        }
        let mut issued = self.issued.lock().unwrap();
        let token = format!("entra-access-{}", issued.len() + 1);
        issued.insert(token.clone(), get("scope"));
        answer(
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
    }
}

/// A certificate's client assertion as Entra ID's current documentation asks for it: PS256, `x5t#S256`.
fn verify_assertion(jwt: &str, public_key: &[u8], x5t_s256: &str, aud: &str, client_id: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else { return Err("the assertion is not a JWT".into()) };
    let header: Value =
        serde_json::from_slice(&B64URL.decode(h).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let claims: Value =
        serde_json::from_slice(&B64URL.decode(c).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if header["alg"] != "PS256" || header["x5t#S256"] != x5t_s256 {
        return Err(format!("AADSTS700027: unknown certificate or algorithm: {header}"));
    }
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PSS_2048_8192_SHA256, public_key);
    key.verify(format!("{h}.{c}").as_bytes(), &B64URL.decode(s).map_err(|e| e.to_string())?)
        .map_err(|_| "AADSTS700027: the assertion's signature does not verify".to_owned())?;
    let fresh =
        claims["exp"].as_i64().is_some_and(|e| e > now()) && claims["nbf"].as_i64().is_some_and(|n| n <= now() + 60);
    if claims["aud"] != aud
        || claims["iss"] != client_id
        || claims["sub"] != client_id
        || !fresh
        || claims["jti"].as_str().is_none()
    {
        return Err(format!("AADSTS50027: bad assertion claims: {claims}"));
    }
    Ok(())
}

/// What a token presented to the registry's token service may do.
#[derive(Clone, Debug)]
struct Grant {
    push: bool,
    /// Repositories it may pull; `None`: any.
    repositories: Option<BTreeSet<String>>,
}

/// Tokens the front has issued, and the credentials issued elsewhere it accepts.
#[derive(Default)]
struct Ledger {
    /// ACR refresh tokens.
    refresh: HashMap<String, i64>,
    /// ACR repository-scoped access tokens.
    scoped: HashMap<String, (BTreeSet<String>, i64)>,
    /// Quay robot tokens.
    robot: HashMap<String, i64>,
}

/// A registry behind a TLS front that is its token service, as ACR, GCR and Quay are.
#[derive(Clone)]
pub struct CloudRegistry {
    /// `HOST:PORT` of the front: the registry's name for regcred and the kubelet.
    pub addr: String,
    pub ca_pem: String,
    ledger: Arc<Mutex<Ledger>>,
    backend: Arc<std::sync::OnceLock<(String, reqwest::Client)>>,
    /// Entra ID tokens the exchange accepts (tenant checked too).
    pub entra: Arc<Mutex<Option<Entra>>>,
    /// GCP access tokens `oauth2accesstoken` may present.
    pub gcp_tokens: Arc<Mutex<Option<Issued>>>,
    /// Quay robot federation: the robot and the ServiceAccount subject it trusts.
    pub quay: Arc<Mutex<Option<(String, String)>>>,
    admin: kube::Client,
    /// How long ACR refresh tokens and Quay robot tokens live.
    pub lifetime_secs: Arc<AtomicU64>,
    /// While set, the exchange and the federation refuse.
    pub refusing: Arc<AtomicBool>,
    /// Exchanges (ACR) and federations (Quay) answered: mints as the cloud counts them.
    pub mints: Arc<AtomicU64>,
    /// Each token the exchange or the federation issued, and when.
    pub issues: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    signer_key: Arc<Vec<u8>>,
    signer_x5c: String,
    registry: Arc<std::sync::OnceLock<Registry>>,
}

impl CloudRegistry {
    pub async fn start(admin: &kube::Client, host: &str) -> Self {
        let signer_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "regcred test cloud token signer");
        let signer = params.self_signed(&signer_key).unwrap();
        let state = Arc::new(Mutex::new(None::<CloudRegistry>));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let front = handler_state.lock().unwrap().clone().unwrap();
                async move { front.handle(method, uri, headers, body).await }
            },
        );
        let (addr, ca_pem) = serve_tls(host, app).await;
        let front = Self {
            addr: addr.to_string(),
            ca_pem,
            ledger: Arc::default(),
            backend: Arc::default(),
            entra: Arc::default(),
            gcp_tokens: Arc::default(),
            quay: Arc::default(),
            admin: admin.clone(),
            lifetime_secs: Arc::new(AtomicU64::new(3 * 3600)),
            refusing: Arc::default(),
            mints: Arc::default(),
            issues: Arc::default(),
            signer_key: Arc::new(signer_key.serialize_der()),
            signer_x5c: B64.encode(signer.der()),
            registry: Arc::default(),
        };
        *state.lock().unwrap() = Some(front.clone());
        let dir = std::env::temp_dir().join("regcred-tests").join(format!("cloud-{}", super::suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let signer_path = dir.join("signer.crt");
        std::fs::write(&signer_path, signer.pem()).unwrap();
        let realm = format!("https://{}/oauth2/token", front.addr);
        let registry = Registry::start_behind(host, &realm, &front.ca_pem, &front.addr, &signer_path).await;
        regcred::install_crypto_provider();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(registry.ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        front.backend.set((registry.addr.clone(), http)).unwrap();
        assert!(front.registry.set(registry).is_ok());
        front
    }

    /// Pushes an image (through the registry itself, as the push user).
    pub async fn push_image(&self, repo_tag: &str) {
        self.registry.get().unwrap().push_image(repo_tag, false, 64, "amd64").await;
    }

    /// The registry behind the front.
    pub fn registry(&self) -> &Registry {
        self.registry.get().unwrap()
    }

    async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
        let path = uri.path().to_owned();
        let text = String::from_utf8_lossy(&body).into_owned();
        match (method.clone(), path.as_str()) {
            (Method::POST, "/oauth2/exchange") => self.exchange(&form(&text)),
            (Method::POST, "/oauth2/token") => {
                let f = form(&text);
                match f.get("grant_type").map(String::as_str) {
                    Some("refresh_token") => self.scoped(&text),
                    Some("password") => {
                        let creds = (
                            f.get("username").cloned().unwrap_or_default(),
                            f.get("password").cloned().unwrap_or_default(),
                        );
                        self.registry_token(Some(creds), &f)
                    }
                    _ => answer(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"})),
                }
            }
            (Method::GET, "/oauth2/token") => {
                let query = form(uri.query().unwrap_or_default());
                self.registry_token(basic(&headers), &query)
            }
            (Method::GET, "/oauth2/federation/robot/token") => self.federate(basic(&headers)).await,
            _ => self.proxy(method, &uri, headers, body).await,
        }
    }

    fn lifetime(&self) -> i64 {
        i64::try_from(self.lifetime_secs.load(Ordering::SeqCst)).unwrap()
    }

    fn exchange(&self, f: &HashMap<String, String>) -> Response {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let entra = self.entra.lock().unwrap().clone();
        // Only an Entra ID token for ACR's own audience.
        let known = entra.as_ref().is_some_and(|e| {
            e.issued.lock().unwrap().get(&get("access_token")).is_some_and(|scope| scope == ACR_SCOPE)
                && get("tenant") == e.tenant
        });
        if self.refusing.load(Ordering::SeqCst)
            || get("grant_type") != "access_token"
            || get("service") != self.addr
            || !known
        {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "the access token is not valid for this registry"}]}),
            );
        }
        let n = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
        let exp = now() + self.lifetime();
        let token = opaque_jwt("acr-refresh", n, exp);
        self.ledger.lock().unwrap().refresh.insert(token.clone(), exp);
        self.issues.lock().unwrap().push((token.clone(), std::time::Instant::now()));
        answer(StatusCode::OK, json!({"refresh_token": token}))
    }

    /// `/oauth2/token`: one `scope` parameter per repository, each `repository:NAME:pull`; anything else (a
    /// space-joined list, a malformed scope) is refused as ACR refuses it.
    fn scoped(&self, body: &str) -> Response {
        let f = form(body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let mut repos = BTreeSet::new();
        for scope in super::tokens::url_form_all(body, "scope") {
            let parts: Vec<&str> = scope.split(':').collect();
            let name_ok = |n: &str| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b))
            };
            match parts.as_slice() {
                ["repository", name, "pull"] if name_ok(name) => {
                    repos.insert((*name).to_owned());
                }
                _ => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({"errors": [{"code": "UNSUPPORTED", "message": format!("malformed scope {scope:?}")}]}),
                    );
                }
            }
        }
        let mut ledger = self.ledger.lock().unwrap();
        if ledger.refresh.get(&get("refresh_token")).is_none_or(|exp| *exp <= now()) {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad refresh token"}]}),
            );
        }
        let exp = now() + self.lifetime().min(75 * 60);
        let token = opaque_jwt("acr-access", ledger.scoped.len() as u64 + 1, exp);
        ledger.scoped.insert(token.clone(), (repos, exp));
        answer(StatusCode::OK, json!({"access_token": token}))
    }

    async fn federate(&self, creds: Option<(String, String)>) -> Response {
        let refuse = |why: String| answer(StatusCode::UNAUTHORIZED, json!({"error": why}));
        let Some((robot, token)) = creds else { return refuse("no credentials".into()) };
        let Some((want_robot, subject)) = self.quay.lock().unwrap().clone() else {
            return refuse("no federation".into());
        };
        if self.refusing.load(Ordering::SeqCst) || robot != want_robot {
            return refuse(format!("robot {robot} has no federation for this token"));
        }
        // regcred's default audience: the registry host, as the profile names it.
        if let Err(why) = review(&self.admin, &token, &self.addr, &subject).await {
            return refuse(format!("federation refused: {why}"));
        }
        let n = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
        let exp = now() + self.lifetime();
        let token = opaque_jwt("quay-robot", n, exp);
        self.ledger.lock().unwrap().robot.insert(token.clone(), exp);
        self.issues.lock().unwrap().push((token.clone(), std::time::Instant::now()));
        answer(StatusCode::OK, json!({"token": token}))
    }

    fn grant_for(&self, user: &str, password: &str) -> Option<Grant> {
        let t = now();
        let ledger = self.ledger.lock().unwrap();
        if user == USER && password == PASSWORD {
            return Some(Grant { push: true, repositories: None });
        }
        if user == ACR_USER {
            if ledger.refresh.get(password).is_some_and(|e| *e > t) {
                return Some(Grant { push: false, repositories: None });
            }
            if let Some((repos, _)) = ledger.scoped.get(password).filter(|(_, e)| *e > t) {
                return Some(Grant { push: false, repositories: Some(repos.clone()) });
            }
        }
        if user == "oauth2accesstoken" {
            let tokens = self.gcp_tokens.lock().unwrap().clone()?;
            if tokens.lock().unwrap().get(password).is_some_and(|e| *e > t) {
                return Some(Grant { push: false, repositories: None });
            }
        }
        let quay = self.quay.lock().unwrap().clone();
        if quay.is_some_and(|(robot, _)| robot == user) && ledger.robot.get(password).is_some_and(|e| *e > t) {
            return Some(Grant { push: false, repositories: None });
        }
        None
    }

    fn registry_token(&self, creds: Option<(String, String)>, query: &HashMap<String, String>) -> Response {
        let grant = creds.and_then(|(u, p)| self.grant_for(&u, &p));
        let Some(grant) = grant else {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
            );
        };
        let mut access = Vec::new();
        for scope in query.get("scope").map(String::as_str).unwrap_or_default().split_whitespace() {
            let mut parts = scope.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if grant.repositories.as_ref().is_some_and(|r| !r.contains(name)) {
                continue;
            }
            let actions: Vec<&str> = actions.split(',').filter(|a| grant.push || *a == "pull").collect();
            access.push(json!({"type": kind, "name": name, "actions": actions}));
        }
        let t = now();
        let claims = json!({
            "iss": "regcred-test-cloud", "sub": "puller", "aud": self.addr, "exp": t + 300, "nbf": t - 10, "iat": t,
            "jti": super::suffix(), "access": access,
        });
        let header = json!({"alg": "ES256", "typ": "JWT", "x5c": [self.signer_x5c]});
        let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.signer_key,
            &rng,
        )
        .unwrap();
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", B64URL.encode(sig.as_ref()));
        answer(StatusCode::OK, json!({"token": token, "access_token": token, "expires_in": 300}))
    }

    async fn proxy(&self, method: Method, uri: &Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
        let (addr, http) = self.backend.get().unwrap().clone();
        let url = format!("https://{addr}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        let mut request = http.request(method, url).body(body);
        for (k, v) in &headers {
            if k != "host" {
                request = request.header(k, v);
            }
        }
        let Ok(response) = request.send().await else { return StatusCode::BAD_GATEWAY.into_response() };
        let status = response.status();
        let mut out = HeaderMap::new();
        for (k, v) in response.headers() {
            if k != "transfer-encoding" && k != "connection" {
                out.insert(k.clone(), v.clone());
            }
        }
        let bytes = response.bytes().await.unwrap_or_default();
        (status, out, bytes).into_response()
    }
}

/// The scope regcred's GCP tokens carry: read-only storage, enough to pull from GCR and Artifact Registry.
pub const READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// GCP's identity endpoints: the GCE metadata server (plain HTTP, as on GKE), Google STS and IAM Credentials
/// (TLS). Every access token they issue is in `tokens`, which a [`CloudRegistry`] accepts for
/// `oauth2accesstoken`.
#[derive(Clone)]
pub struct Gcp {
    /// `HOST:PORT` for `GCE_METADATA_HOST`.
    pub metadata_host: String,
    pub sts_url: String,
    pub iam_base: String,
    pub ca_pem: String,
    /// The workload identity provider STS accepts, and the ServiceAccount subject it trusts.
    pub audience: String,
    pub subject: Arc<Mutex<String>>,
    /// The service account that may be impersonated.
    pub service_account: String,
    pub tokens: Arc<Mutex<HashMap<String, i64>>>,
    pub lifetime_secs: Arc<AtomicU64>,
    pub refusing_sts: Arc<AtomicBool>,
    pub denying_impersonation: Arc<AtomicBool>,
    /// Final access tokens issued (metadata server, impersonation, or STS when used directly).
    pub mints: Arc<AtomicU64>,
    /// The `scopes` each metadata-server token was asked for (empty: none asked, the account's own scopes).
    pub metadata_scopes: Arc<Mutex<Vec<String>>>,
    admin: kube::Client,
}

impl Gcp {
    pub async fn start(admin: &kube::Client, host: &str) -> Self {
        let state = Arc::new(Mutex::new(None::<Gcp>));
        let (s1, s2, s3) = (state.clone(), state.clone(), state.clone());
        let metadata = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/{account}/token",
            axum::routing::get(
                move |axum::extract::Path(account): axum::extract::Path<String>,
                      axum::extract::RawQuery(query): axum::extract::RawQuery,
                      headers: HeaderMap| {
                    let gcp = s1.lock().unwrap().clone().unwrap();
                    async move { gcp.metadata_token(&account, query.as_deref().unwrap_or_default(), &headers) }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
        let metadata_host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, metadata).await.unwrap() });
        let apis = axum::Router::new()
            .route(
                "/v1/token",
                axum::routing::post(move |body: String| {
                    let gcp = s2.lock().unwrap().clone().unwrap();
                    async move { gcp.sts(&body).await }
                }),
            )
            .route(
                "/v1/projects/-/serviceAccounts/{rest}",
                axum::routing::post(
                    move |axum::extract::Path(rest): axum::extract::Path<String>, headers: HeaderMap, body: String| {
                        let gcp = s3.lock().unwrap().clone().unwrap();
                        async move { gcp.impersonate(&rest, &headers, &body) }
                    },
                ),
            );
        let (addr, ca_pem) = serve_tls(host, apis).await;
        let gcp = Self {
            metadata_host,
            sts_url: format!("https://{addr}/v1/token"),
            iam_base: format!("https://{addr}/v1/projects/-/serviceAccounts"),
            ca_pem,
            audience: "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/regcred/providers/cluster".into(),
            subject: Arc::default(),
            service_account: "puller@regcred-test.iam.gserviceaccount.com".into(),
            tokens: Arc::default(),
            lifetime_secs: Arc::new(AtomicU64::new(3600)),
            refusing_sts: Arc::default(),
            metadata_scopes: Arc::default(),
            denying_impersonation: Arc::default(),
            mints: Arc::default(),
            admin: admin.clone(),
        };
        *state.lock().unwrap() = Some(gcp.clone());
        gcp
    }

    pub fn impersonation_url(&self) -> String {
        format!("{}/{}:generateAccessToken", self.iam_base, self.service_account)
    }

    fn issue(&self, kind: &str) -> (String, i64) {
        let lifetime = i64::try_from(self.lifetime_secs.load(Ordering::SeqCst)).unwrap();
        let n = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("ya29.{kind}-{n}-{}", super::suffix());
        self.tokens.lock().unwrap().insert(token.clone(), now() + lifetime);
        (token, lifetime)
    }

    fn metadata_token(&self, account: &str, query: &str, headers: &HeaderMap) -> Response {
        if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
            return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
        }
        if account != "default" {
            return (StatusCode::NOT_FOUND, "no such service account").into_response();
        }
        // `scopes`: a comma-separated list of OAuth scope URLs, as the metadata server takes it.
        let scopes = form(query).get("scopes").cloned().unwrap_or_default();
        if !scopes.is_empty() && !scopes.split(',').all(|s| s.starts_with("https://www.googleapis.com/auth/")) {
            return (StatusCode::BAD_REQUEST, "invalid scopes").into_response();
        }
        self.metadata_scopes.lock().unwrap().push(scopes);
        let (token, lifetime) = self.issue("mds");
        answer(StatusCode::OK, json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}))
    }

    async fn sts(&self, body: &str) -> Response {
        let f = form(body);
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let bad =
            |why: &str| answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_grant", "error_description": why}));
        if self.refusing_sts.load(Ordering::SeqCst) {
            return bad("The audience in ID Token does not match the expected audience.");
        }
        let scope = get("scope");
        let shape = get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange"
            && get("requested_token_type") == "urn:ietf:params:oauth:token-type:access_token"
            && get("subject_token_type") == "urn:ietf:params:oauth:token-type:jwt"
            && (scope == CLOUD_PLATFORM || scope == READ_ONLY);
        if !shape || get("audience") != self.audience {
            return bad("malformed token exchange or unknown provider");
        }
        let subject = self.subject.lock().unwrap().clone();
        let token_audience = format!("https:{}", self.audience);
        if let Err(why) = review(&self.admin, &get("subject_token"), &token_audience, &subject).await {
            return bad(&why);
        }
        // The scope travels with the token: impersonation needs cloud-platform, as IAM Credentials does.
        let (token, lifetime) = self.issue(if scope == CLOUD_PLATFORM { "sts-cp" } else { "sts" });
        answer(
            StatusCode::OK,
            json!({
                "access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer", "expires_in": lifetime,
            }),
        )
    }

    fn impersonate(&self, rest: &str, headers: &HeaderMap, body: &str) -> Response {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let federated =
            bearer.contains(".sts-cp-") && self.tokens.lock().unwrap().get(bearer).is_some_and(|e| *e > now());
        let body: Value = serde_json::from_str(body).unwrap_or_default();
        // generateAccessToken's `scope` is a list (a string is a 400 from the real API).
        if !body["scope"].is_array() {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid value at 'scope'"}}),
            );
        }
        let denied = self.denying_impersonation.load(Ordering::SeqCst)
            || !federated
            || rest != format!("{}:generateAccessToken", self.service_account)
            || body["scope"] != json!([READ_ONLY]);
        if denied {
            return answer(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
                "message": format!("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist): {rest}")}}),
            );
        }
        let (token, lifetime) = self.issue("iam");
        let expire = jiff::Timestamp::from_second(now() + lifetime).unwrap();
        answer(StatusCode::OK, json!({"accessToken": token, "expireTime": expire.to_string()}))
    }
}
