//! The floor of the admission benchmarks: a webhook that computes nothing, answering at once with the patch
//! regcred gives (add `imagePullSecrets: [<secret>]`). What any webhook with that answer costs on this machine,
//! regcred or not.
//!
//! It is placed as regcred is: a process of its own (this benchmark's binary started again with
//! [`FLAG`], built with the same profile as regcred), on loopback, HTTPS through the same stack (axum,
//! axum-server, rustls with ring, ALPN h2 and http/1.1, an ECDSA P-256 certificate as regcred's self-managed one),
//! a multi-threaded tokio runtime with one glibc arena, and regcred's logging set up from the same environment
//! ([`crate::common::LOG_ENV`]). The apiserver calls it through a configuration rendered from the chart exactly as
//! regcred's (see `admit.rs`).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

/// The first argument that makes this binary the floor webhook.
pub const FLAG: &str = "--floor-webhook";

/// When this process was started as the floor webhook ([`Floor::start`]), serves it until killed and never
/// returns. Call it first in the benchmark's `main`, before any runtime or thread starts.
pub fn serve_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(FLAG) {
        return;
    }
    let [port, cert, key, secret] = [2, 3, 4, 5].map(|i| args.get(i).cloned().unwrap_or_default());
    crate::common::child_logging();
    regcred::memory::one_arena();
    let runtime = crate::common::runtime();
    runtime.block_on(serve(port.parse().unwrap(), cert.into(), key.into(), secret));
    std::process::exit(0);
}

/// What the floor answers, decoded from a review as little as can be: the request's uid.
#[derive(serde::Deserialize)]
struct Review {
    request: Request,
}

#[derive(serde::Deserialize)]
struct Request {
    uid: String,
}

async fn serve(port: u16, cert: PathBuf, key: PathBuf, secret: String) {
    use axum::routing::post;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    regcred::install_crypto_provider();
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let patch = json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": secret}]}]);
    let patch: Arc<str> = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, patch.to_string()).into();
    let app = axum::Router::new().route(
        "/mutate",
        post(move |body: axum::body::Bytes| {
            let patch = patch.clone();
            async move {
                let uid = serde_json::from_slice::<Review>(&body).map(|r| r.request.uid).unwrap_or_default();
                axum::Json(json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": &*patch},
                }))
            }
        }),
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    tracing::info!(port, "floor webhook serving");
    axum_server::from_tcp_rustls(listener, tls).unwrap().serve(app.into_make_service()).await.unwrap();
}

/// The floor webhook's process, serving on a loopback port with a certificate of its own. Killed when dropped.
pub struct Floor {
    pub process: crate::common::Helper,
    pub port: u16,
    /// The CA the apiserver must trust (the certificate itself, self-signed), PEM.
    pub ca_pem: String,
}

impl Floor {
    /// Starts the floor webhook answering with `secret` and waits until it accepts connections.
    pub async fn start(secret: &str) -> Self {
        regcred::install_crypto_provider();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join("regcred-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let id = std::process::id();
        let (cert_path, key_path) = (dir.join(format!("floor-{id}.crt")), dir.join(format!("floor-{id}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = crate::common::Helper::spawn(
            "floor",
            &[FLAG, &port.to_string(), cert_path.to_str().unwrap(), key_path.to_str().unwrap(), secret],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the floor webhook did not start: {}", process.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { process, port, ca_pem: cert.pem() }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/mutate", self.port)
    }
}
