//! A slow apiserver: an HTTPS proxy in front of the real one that, once switched on, holds regcred's own admission
//! lookups and writes (a GET of one Namespace, a Secret's creation, any request on one Secret) for a set delay
//! before passing them on. Lists and
//! watches pass at once, so regcred's caches stay current; only what an admission may wait on is slow.
//!
//! The proxy ends TLS with a certificate of its own (its CA is in the kubeconfig it writes for regcred) and forwards
//! each request to the real apiserver as the ServiceAccount of the kubeconfig it was given: regcred keeps exactly
//! the chart's rights.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

struct Proxy {
    apiserver: kube::Client,
    delay: Duration,
    slow: AtomicBool,
    held: AtomicUsize,
}

/// The running proxy; stops when dropped.
pub struct SlowApiserver {
    /// A kubeconfig for regcred: this proxy, as the ServiceAccount of the one the proxy was started with.
    pub kubeconfig: PathBuf,
    proxy: Arc<Proxy>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl SlowApiserver {
    /// A proxy in front of the apiserver of `kubeconfig` (a ServiceAccount's token, see
    /// [`super::super::service_account_kubeconfig`]), holding admission lookups for `delay` once [`Self::slow`].
    pub async fn start(kubeconfig: &Path, delay: Duration) -> Self {
        regcred::install_crypto_provider();
        let apiserver = super::super::client_from(kubeconfig).await;
        let proxy = Arc::new(Proxy { apiserver, delay, slow: AtomicBool::new(false), held: AtomicUsize::new(0) });
        let (ca, cert, key) = issue();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap().handle(handle.clone());
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { server.serve(app.into_make_service()).await });

        // regcred's kubeconfig: the same token, this proxy's address and CA.
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(kubeconfig).unwrap()).expect("a kubeconfig written as JSON");
        config["clusters"][0]["cluster"] = serde_json::json!({
            "server": format!("https://{addr}"),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
        });
        let path = kubeconfig.with_extension("slow.kubeconfig");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        Self { kubeconfig: path, proxy, handle }
    }

    /// From now on (`true`) or no longer, hold regcred's admission lookups.
    pub fn slow(&self, on: bool) {
        self.proxy.slow.store(on, Ordering::SeqCst);
    }

    /// How many requests were held.
    pub fn held(&self) -> usize {
        self.proxy.held.load(Ordering::SeqCst)
    }
}

impl Drop for SlowApiserver {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Whether a request is one an admission may wait on: a GET of one Namespace, the creation of a Secret or any
/// request on one (the lookup of a pull Secret a Pod names, the making of regcred's own in a new namespace). Never
/// a list or watch.
fn held(method: &Method, uri: &Uri) -> bool {
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    !watch
        && match parts.as_slice() {
            ["api", "v1", "namespaces", _] => method == Method::GET,
            ["api", "v1", "namespaces", _, "secrets"] => method == Method::POST,
            ["api", "v1", "namespaces", _, "secrets", _] => true,
            _ => false,
        }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    if proxy.slow.load(Ordering::SeqCst) && held(request.method(), request.uri()) {
        proxy.held.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(proxy.delay).await;
    }
    let (mut parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    // The proxy's client adds the address and the credentials.
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap();
    parts.version = axum::http::Version::HTTP_11;
    let request = axum::http::Request::from_parts(parts, kube::client::Body::from(body.to_vec()));
    match proxy.apiserver.send(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// A CA and a serving certificate for 127.0.0.1 it signed, as PEM: (ca.crt, tls.crt, tls.key).
pub fn issue() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}
