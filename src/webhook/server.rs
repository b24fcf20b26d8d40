//! The HTTPS server of the webhook, and the loop that keeps its certificate and the webhook configuration's
//! `caBundle` current.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use base64::Engine;
use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tracing::{info, warn};

use super::Webhook;
use super::certs::{self, Material, Step};
use super::review::Review;
use crate::names::FIELD_MANAGER;
use crate::resolve::Sources as _;

/// The apiserver's limit on a request body (`MaxRequestBodyBytes`, 3 MiB): no object it admits is larger as sent.
pub const APISERVER_REQUEST_LIMIT: usize = 3 * 1024 * 1024;
/// The largest AdmissionReview accepted. An UPDATE's review carries two objects, `object` (at most what a client
/// may send, [`APISERVER_REQUEST_LIMIT`]) and `oldObject` (as stored, which was itself sent under that limit), both
/// as JSON; plus 1 MiB for the review's envelope (userInfo, options) and for JSON being longer than a protobuf
/// request. Anything larger cannot come from the apiserver and is refused (413) before it is read whole.
pub const BODY_LIMIT: usize = 2 * APISERVER_REQUEST_LIMIT + 1024 * 1024;

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files (for example mounted from a cert-manager Secret), reloaded when their content changes.
    Files { cert: PathBuf, key: PathBuf },
    /// A CA and certificate regcred creates and rotates, kept in Secret `secret` in its namespace, and trusted
    /// through the `caBundle` of the MutatingWebhookConfiguration `configuration` (`None`: regcred serves no
    /// webhook, only its credential endpoint) and, for nodes, through the ConfigMap `ca_config_map` (key
    /// [`CA_KEY`]) in its namespace, when set.
    SelfManaged {
        secret: String,
        configuration: Option<String>,
        ca_config_map: Option<String>,
        dns_names: Vec<String>,
        lifetime: Duration,
    },
}

/// The key of the CA ConfigMap that holds the PEM bundle (public certificates only: the current CA and, during a
/// rotation, the previous).
pub const CA_KEY: &str = "ca.crt";

/// The serving TLS of this replica, from one certificate kept current: the webhook's, with client certificates
/// when `--webhook-client-ca-file` asks for them, and the same certificate without client certificates, for the
/// credential endpoint (the kubelet's provider presents a ServiceAccount token, not a certificate).
pub struct Tls {
    acceptor: Acceptor,
}

impl Tls {
    /// The same certificate, asking no client certificate; reloaded with the webhook's.
    pub fn without_client_certificates(&self) -> RustlsConfig {
        self.acceptor.plain.clone()
    }
}

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("webhook TLS: {0}")]
    Tls(String),
    #[error("webhook server on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

fn router(webhook: Arc<Webhook>) -> Router {
    Router::new().route("/mutate", post(mutate)).layer(DefaultBodyLimit::max(BODY_LIMIT)).with_state(webhook)
}

async fn mutate(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let response = answer(&webhook, &body).await;
    webhook.stats.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// Decodes an AdmissionReview and answers it: a 400 for anything that is not one, never a panic (fuzzed by
/// `make soak`). The admission's deadline runs from here: the body has arrived, and decoding it counts.
pub async fn answer(webhook: &Webhook, body: &[u8]) -> Response {
    let until = super::deadline::work_until(tokio::time::Instant::now(), webhook.deadline);
    let review: Review = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => {
            webhook.stats.malformed.inc();
            return (StatusCode::BAD_REQUEST, format!("malformed AdmissionReview: {e}")).into_response();
        }
    };
    let Some(request) = review.into_request() else {
        webhook.stats.malformed.inc();
        return (StatusCode::BAD_REQUEST, "AdmissionReview without a request").into_response();
    };
    let response = webhook.admit_by(&request, until).await;
    review_json(&response)
}

/// The answer as JSON (see [`super::Response::to_json`]).
fn review_json(response: &super::Response) -> Response {
    match response.to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer: {e}")).into_response(),
    }
}

/// The serving TLS of `source` (and of `client_ca`, a PEM file, when given), with the tasks that keep it current:
/// one certificate for the webhook and the credential endpoint.
pub async fn tls(webhook: &Arc<Webhook>, source: &TlsSource, client_ca: Option<&Path>) -> Result<Tls, Error> {
    Ok(Tls { acceptor: acceptor(webhook, source, client_ca).await? })
}

/// Serves the webhook on `addr` with `tls` (see [`tls`]) until `shutdown` completes, then drains open requests.
/// With a client CA, only clients whose certificate that CA signed (the apiserver) get past the TLS handshake.
pub async fn serve(
    webhook: Arc<Webhook>,
    addr: SocketAddr,
    tls: Tls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let acceptor = tls.acceptor;
    let client_certificates =
        acceptor.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).client_ca.is_some();
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    // Bound before it counts as serving: readiness (and so the Service's endpoints) waits for the listener.
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| Error::Serve { addr, source })?;
    let server = axum_server::from_tcp_rustls(listener, acceptor.config.clone())
        .map_err(|source| Error::Serve { addr, source })?;
    webhook.stats.serving.send_replace(true);
    info!(%addr, client_certificates, "webhook serving");
    server
        .handle(handle)
        .serve(router(webhook).into_make_service())
        .await
        .map_err(|source| Error::Serve { addr, source })
}

/// The TLS acceptor of `tls` (and of `client_ca`, a PEM file, when given), with the tasks that keep its
/// certificate and its client CA current.
async fn acceptor(webhook: &Arc<Webhook>, tls: &TlsSource, client_ca: Option<&Path>) -> Result<Acceptor, Error> {
    let ca = match client_ca {
        Some(path) => Some(
            tokio::fs::read(path)
                .await
                .map_err(|e| Error::Tls(format!("reading the client CA {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let acceptor = match tls {
        TlsSource::Files { cert, key } => {
            let (c, k) = (tokio::fs::read(cert).await, tokio::fs::read(key).await);
            let (c, k) = c
                .and_then(|c| k.map(|k| (c, k)))
                .map_err(|e| Error::Tls(format!("reading {} and {}: {e}", cert.display(), key.display())))?;
            let acceptor = Acceptor::new(Pems { cert: c, key: k, client_ca: ca }).map_err(Error::Tls)?;
            tokio::spawn(reload_files(acceptor.clone(), cert.clone(), key.clone()));
            acceptor
        }
        TlsSource::SelfManaged { secret, configuration, ca_config_map, dns_names, lifetime } => {
            let keeper = CertKeeper {
                webhook: webhook.clone(),
                secret: secret.clone(),
                configuration: configuration.clone(),
                ca_config_map: ca_config_map.clone(),
                dns_names: dns_names.clone(),
                lifetime: *lifetime,
            };
            let material = keeper.converge().await.map_err(Error::Tls)?;
            let served = (material.tls_crt, material.tls_key);
            let pems = Pems { cert: served.0.clone().into_bytes(), key: served.1.clone().into_bytes(), client_ca: ca };
            let acceptor = Acceptor::new(pems).map_err(Error::Tls)?;
            tokio::spawn(keeper.run(acceptor.clone(), served));
            acceptor
        }
    };
    if let Some(path) = client_ca {
        tokio::spawn(reload_client_ca(acceptor.clone(), path.to_owned()));
    }
    Ok(acceptor)
}

/// The PEM material of the TLS served: never logged, no Debug.
#[derive(Clone)]
struct Pems {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// The CA client certificates must chain to; `None`: no client certificate asked for.
    client_ca: Option<Vec<u8>>,
}

/// The rustls configuration of `pems`: the serving certificate, and when there is a client CA, a verifier that
/// refuses any client without a certificate it signed.
fn server_config(pems: &Pems) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&pems.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the serving certificate is not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&pems.key).map_err(|e| format!("the serving key is not PEM: {e}"))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &pems.client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the client CA is not PEM: {e}"))?;
                roots.add(cert).map_err(|e| format!("the client CA: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("the client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| format!("the serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS acceptor's configuration and the material it was built from: a new certificate or client CA rebuilds
/// it whole, so a certificate swap never drops the client verification. `plain` serves the same certificate
/// without asking for client certificates (the credential endpoint).
#[derive(Clone)]
struct Acceptor {
    config: RustlsConfig,
    plain: RustlsConfig,
    current: Arc<std::sync::Mutex<Pems>>,
}

impl Acceptor {
    fn new(pems: Pems) -> Result<Self, String> {
        let config = RustlsConfig::from_config(Arc::new(server_config(&pems)?));
        let plain = RustlsConfig::from_config(Arc::new(server_config(&Pems { client_ca: None, ..pems.clone() })?));
        Ok(Self { config, plain, current: Arc::new(std::sync::Mutex::new(pems)) })
    }

    /// Serves `change` applied to the current material, from the next connection on; on error nothing changes.
    fn reload(&self, change: impl FnOnce(&mut Pems)) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = current.clone();
        change(&mut next);
        let plain = server_config(&Pems { client_ca: None, ..next.clone() })?;
        self.config.reload_from_config(Arc::new(server_config(&next)?));
        self.plain.reload_from_config(Arc::new(plain));
        *current = next;
        Ok(())
    }
}

/// Reloads file certificates when their content changes (cert-manager renews them in place).
async fn reload_files(acceptor: Acceptor, cert: PathBuf, key: PathBuf) {
    let read = || async { (tokio::fs::read(&cert).await.ok(), tokio::fs::read(&key).await.ok()) };
    let mut last = read().await;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = read().await;
        if now != last
            && let (Some(c), Some(k)) = &now
        {
            match acceptor.reload(|p| {
                p.cert.clone_from(c);
                p.key.clone_from(k);
            }) {
                Ok(()) => info!(cert = %cert.display(), "webhook certificate reloaded"),
                // Half-written files: keep serving the old certificate and try again.
                Err(e) => {
                    warn!(cert = %cert.display(), error = %e, "could not reload the webhook certificate");
                    continue;
                }
            }
            last = now;
        }
    }
}

/// Reloads the client CA when its file changes (a mounted ConfigMap or Secret is updated in place).
async fn reload_client_ca(acceptor: Acceptor, path: PathBuf) {
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = tokio::fs::read(&path).await.ok();
        if now != last
            && let Some(ca) = &now
        {
            match acceptor.reload(|p| p.client_ca = Some(ca.clone())) {
                Ok(()) => info!(ca = %path.display(), "webhook client CA reloaded"),
                Err(e) => {
                    warn!(ca = %path.display(), error = %e, "could not reload the webhook client CA");
                    continue;
                }
            }
            last = now;
        }
    }
}

/// Whether any webhook of `config` lacks `bundle` (PEM) as its caBundle.
fn bundle_differs(config: &MutatingWebhookConfiguration, bundle: &str) -> bool {
    config
        .webhooks
        .iter()
        .flatten()
        .any(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle.as_bytes()))
}

struct CertKeeper {
    webhook: Arc<Webhook>,
    secret: String,
    configuration: Option<String>,
    ca_config_map: Option<String>,
    dns_names: Vec<String>,
    lifetime: Duration,
}

impl CertKeeper {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.webhook.client.clone(), &self.webhook.operator_namespace)
    }

    /// Brings the Secret and the `caBundle` to where they should be; returns the material to serve.
    async fn converge(&self) -> Result<Material, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.converge_once().await {
                Ok(m) => return Ok(m),
                Err(e) if attempt < 5 => {
                    warn!(error = %e, attempt, "webhook certificate: retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn converge_once(&self) -> Result<Material, String> {
        // The API, not the cache: another replica may have just written it, and this runs rarely.
        let current = self.secrets().get_opt(&self.secret).await.map_err(|e| e.to_string())?;
        let material = current.as_ref().and_then(Material::from_secret);
        let now = jiff::Timestamp::now();
        let step = certs::next_step(material.as_ref(), now, self.lifetime, &self.dns_names);
        let next =
            certs::apply(step, material.as_ref(), now, self.lifetime, &self.dns_names).map_err(|e| e.to_string())?;
        let material = match next {
            None => material.ok_or("no certificate material")?,
            Some(next) => {
                // The bundle first: the apiserver (and the nodes) must trust a new CA before anything it signed is
                // served.
                let configuration = self.publish_bundle(&next.ca_bundle()).await?;
                self.publish_ca(&next.ca_bundle()).await?;
                let mut secret = next.to_secret(&self.secret, &self.webhook.operator_namespace);
                // Owned by the webhook configuration: uninstalling the chart removes the configuration, and the
                // garbage collector then removes the key material with it.
                secret.metadata.owner_references =
                    configuration.as_ref().and_then(|c| kube::Resource::controller_owner_ref(c, &())).map(|mut o| {
                        o.controller = None;
                        o.block_owner_deletion = None;
                        vec![o]
                    });
                match &current {
                    // Replace only the version read: if another replica rotated meanwhile, retry from its result.
                    Some(cur) => {
                        secret.metadata.resource_version = cur.metadata.resource_version.clone();
                        self.secrets()
                            .replace(&self.secret, &PostParams::default(), &secret)
                            .await
                            .map_err(|e| format!("updating Secret {}: {e}", self.secret))?;
                    }
                    None => {
                        self.secrets()
                            .create(&PostParams::default(), &secret)
                            .await
                            .map_err(|e| format!("creating Secret {}: {e}", self.secret))?;
                    }
                }
                if step != Step::Nothing {
                    info!(step = ?step, "webhook certificate material renewed");
                }
                next
            }
        };
        self.publish_bundle(&material.ca_bundle()).await?;
        self.publish_ca(&material.ca_bundle()).await?;
        Ok(material)
    }

    /// Puts `bundle` (public certificates only) in the CA ConfigMap, when there is one, writing only when it
    /// differs: nodes read it to trust the credential endpoint.
    async fn publish_ca(&self, bundle: &str) -> Result<(), String> {
        let Some(name) = &self.ca_config_map else { return Ok(()) };
        let api = Api::<ConfigMap>::namespaced(self.webhook.client.clone(), &self.webhook.operator_namespace);
        let current = api.get_opt(name).await.map_err(|e| format!("reading ConfigMap {name}: {e}"))?;
        if current.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get(CA_KEY)).map(String::as_str)
            == Some(bundle)
        {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {crate::names::PART_OF_LABEL: crate::names::MANAGED_BY_VALUE}},
            "data": {CA_KEY: bundle},
        });
        api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|e| format!("writing the CA bundle into ConfigMap {name}: {e}"))?;
        info!(config_map = %name, "CA bundle published for nodes");
        Ok(())
    }

    /// Puts the bundle of `material` back in the CA ConfigMap when it is not there (a ConfigMap deleted by hand).
    async fn keep_ca(&self, material: Option<&Material>) {
        if let Some(m) = material
            && let Err(e) = self.publish_ca(&m.ca_bundle()).await
        {
            warn!(error = %e, "CA bundle upkeep failed; will retry");
        }
    }

    /// Sets `caBundle` on every webhook of the configuration, writing only when it differs; returns the
    /// configuration as read (`None`: regcred serves no webhook).
    async fn publish_bundle(&self, bundle: &str) -> Result<Option<MutatingWebhookConfiguration>, String> {
        let Some(name) = &self.configuration else { return Ok(None) };
        let api = Api::<MutatingWebhookConfiguration>::all(self.webhook.client.clone());
        let config = api.get(name).await.map_err(|e| {
            format!("reading MutatingWebhookConfiguration {name} (create it, or install the chart): {e}")
        })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
        let webhooks = config.webhooks.clone().unwrap_or_default();
        if !bundle_differs(&config, bundle) {
            return Ok(Some(config));
        }
        let patch = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "webhooks": webhooks.iter().map(|w| serde_json::json!({
                "name": w.name,
                "clientConfig": {"caBundle": encoded},
            })).collect::<Vec<_>>(),
        });
        api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|e| format!("setting the caBundle of {name}: {e}"))?;
        info!(configuration = %name, "webhook caBundle updated");
        Ok(Some(config))
    }

    /// Re-checks periodically, whenever the Secret changes, and whenever the webhook configuration changes (a
    /// configuration deleted and re-created, by `helm upgrade` or a GitOps sync, comes back without a caBundle);
    /// swaps the served certificate in place.
    async fn run(self, acceptor: Acceptor, served: (String, String)) {
        let tick = (self.lifetime / 30).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let mut served = Some(served);
        let configurations = match &self.configuration {
            Some(name) => crate::state::streams::webhook_configuration(&self.webhook.client, name).boxed(),
            None => futures::stream::pending().boxed(),
        };
        let mut configurations = std::pin::pin!(configurations);
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        loop {
            let published = tokio::select! {
                _ = timer.tick() => None,
                event = configurations.next() => {
                    // The stream only ends with the process; keep the timer going regardless.
                    if event.is_none() {
                        timer.tick().await;
                    }
                    event
                }
            };
            // Cheap check from the cache first; converge (API calls) only when something is due or changed.
            let cached = self.webhook.view.secret(&self.secret).and_then(|s| Material::from_secret(&s));
            let due = certs::next_step(cached.as_ref(), jiff::Timestamp::now(), self.lifetime, &self.dns_names);
            let changed = cached.as_ref().map(|m| (m.tls_crt.clone(), m.tls_key.clone())) != served;
            let bundle_stale = match (&published, &cached) {
                (Some(c), Some(m)) => bundle_differs(c, &m.ca_bundle()),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if due == Step::Nothing && !changed && !bundle_stale {
                // On the timer, the nodes' copy of the CA too: a ConfigMap deleted by hand comes back.
                if published.is_none() {
                    self.keep_ca(cached.as_ref()).await;
                }
                continue;
            }
            match self.converge().await {
                Ok(m) => {
                    let pair = (m.tls_crt.clone(), m.tls_key.clone());
                    if served.as_ref() != Some(&pair) {
                        let (cert, key) = (pair.0.clone().into_bytes(), pair.1.clone().into_bytes());
                        match acceptor.reload(|p| {
                            p.cert = cert;
                            p.key = key;
                        }) {
                            Ok(()) => {
                                info!("webhook serving certificate swapped");
                                served = Some(pair);
                            }
                            Err(e) => warn!(error = %e, "could not load the new webhook certificate"),
                        }
                    }
                }
                Err(e) => warn!(error = %e, "webhook certificate upkeep failed; will retry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn webhook() -> Arc<Webhook> {
        // Nothing listens there: these requests must be answered without the API.
        webhook_at("http://127.0.0.1:9", crate::webhook::DEFAULT_DEADLINE).await
    }

    #[allow(clippy::unused_async)] // the view's watches are spawned: it needs the runtime a test's await gives
    async fn webhook_at(apiserver: &str, deadline: Duration) -> Arc<Webhook> {
        let config = kube::Config::new(apiserver.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let view = crate::state::View::start(
            &client,
            "regcred-system",
            None,
            2.0 / 3.0,
            crate::credentials::identity::Identity::detached("regcred-system"),
        );
        Arc::new(Webhook {
            client,
            view,
            operator_namespace: "regcred-system".into(),
            stats: crate::webhook::Stats::default(),
            checker: None,
            known_secrets: crate::webhook::known_secrets(),
            max_images: crate::webhook::MAX_IMAGES,
            deadline,
        })
    }

    async fn post(webhook: &Arc<Webhook>, body: String) -> (StatusCode, serde_json::Value) {
        let request =
            Request::post("/mutate").header("content-type", "application/json").body(Body::from(body)).unwrap();
        let response = router(webhook.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn review(kind: serde_json::Value, operation: &str, object: serde_json::Value) -> String {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "3f1c1c8e-0000-4000-8000-000000000001",
                "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team",
                "operation": operation,
                "userInfo": {},
                "object": object,
            }
        })
        .to_string()
    }

    #[tokio::test]
    async fn malformed_reviews_are_400_and_counted_never_a_crash() {
        let webhook = webhook().await;
        for body in ["", "{", "[]", "{\"apiVersion\": 1}", "{\"kind\": \"AdmissionReview\"}"] {
            let (status, _) = post(&webhook, body.into()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        }
        assert_eq!(webhook.stats.malformed.get(), 5);
    }

    #[tokio::test]
    async fn other_kinds_and_operations_pass_unchanged() {
        let webhook = webhook().await;
        let deployment = review(
            serde_json::json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            "CREATE",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
        );
        let update = review(
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            "UPDATE",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        );
        for body in [deployment, update] {
            let (status, answer) = post(&webhook, body).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(answer["response"]["allowed"], true);
            assert_eq!(answer["response"]["uid"], "3f1c1c8e-0000-4000-8000-000000000001");
            assert!(answer["response"].get("patch").is_none(), "{answer}");
        }
    }

    #[test]
    fn the_patch_goes_out_base64_encoded_as_the_api_defines_it() {
        let request = serde_json::from_str::<Review>(&review(
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            "CREATE",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod"}),
        ))
        .unwrap()
        .into_request()
        .unwrap();
        let patched = crate::webhook::Response::allow(&request)
            .with_patch(&crate::webhook::patch(false, &["pull".to_owned()]))
            .unwrap();
        let response = review_json(&patched);
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), BODY_LIMIT)).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let patch =
            base64::engine::general_purpose::STANDARD.decode(answer["response"]["patch"].as_str().unwrap()).unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "pull"}]}])
        );
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert_eq!(answer["response"]["uid"], "3f1c1c8e-0000-4000-8000-000000000001");
    }

    #[tokio::test]
    async fn very_large_pods_are_read_whole() {
        let webhook = webhook().await;
        let big = "x".repeat(2 * 1024 * 1024);
        let body = review(
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            "UPDATE",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"big": big}}}),
        );
        let (status, answer) = post(&webhook, body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], true);
    }

    #[tokio::test]
    async fn an_apiserver_that_never_answers_costs_an_admission_its_deadline_and_no_more() {
        // An apiserver that accepts connections and never answers: the namespace of a Pod the cache does not
        // know yet is looked up there. Without the deadline, the answer would wait for the client's read timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let webhook = webhook_at(&format!("http://{addr}"), Duration::from_millis(300)).await;
        let pod = review(
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            "CREATE",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        );
        let (status, answer) = post(&webhook, pod).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(webhook.stats.injections_cut.get(), 1);
        silent.abort();
    }

    // Two of the apiserver's largest objects fit, with room for the envelope, and no more than a mebibyte more.
    const _: () = assert!(BODY_LIMIT >= 2 * APISERVER_REQUEST_LIMIT + 512 * 1024);
    const _: () = assert!(BODY_LIMIT <= 2 * APISERVER_REQUEST_LIMIT + 1024 * 1024);

    #[tokio::test]
    async fn an_update_of_the_largest_object_is_read_and_a_larger_body_refused_unread() {
        let webhook = webhook().await;
        let largest = "x".repeat(APISERVER_REQUEST_LIMIT - 4096);
        let object = |n: &str| serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "annotations": {"a": largest}}});
        let mut body: serde_json::Value = serde_json::from_str(&review(
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            "UPDATE",
            object("p"),
        ))
        .unwrap();
        body["request"]["oldObject"] = object("p");
        let (status, answer) = post(&webhook, body.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], true);
        let (status, _) = post(&webhook, " ".repeat(BODY_LIMIT + 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(webhook.stats.requests.get(), 1, "the oversized body reached the handler");
    }
}
