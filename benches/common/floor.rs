//! The floor of the admission benchmarks: a webhook that computes nothing, an HTTPS server in the bench's own
//! process answering at once with the patch regcred gives (add `imagePullSecrets: [<secret>]`). What any webhook
//! with that answer costs on this machine, regcred or not. It serves the namespaces labelled
//! `floor-bench=<test id>`.
#![allow(dead_code, clippy::unwrap_used)]

use kube::api::Api;
use serde_json::json;

use crate::support::{self, TestEnv};

/// Serves a webhook that answers at once with regcred's answer for these Pods (add `imagePullSecrets: [pull]`),
/// over HTTPS on a free loopback port; returns the port and the CA (its own self-signed certificate).
async fn noop_webhook(secret: &'static str) -> (u16, String) {
    use axum::routing::post;
    regcred::install_crypto_provider();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.pem().into_bytes(), key.serialize_pem().into_bytes())
            .await
            .unwrap();
    let app = axum::Router::new().route(
        "/mutate",
        post(move |body: axum::body::Bytes| async move {
            let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let patch = json!([{"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": secret}]}]);
            let patch = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, patch.to_string());
            axum::Json(json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch},
            }))
        }),
    );
    let port = support::webhook::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::spawn(axum_server::bind_rustls(addr, config).serve(app.into_make_service()));
    (port, cert.pem())
}

/// Serves the floor webhook and registers it for the namespaces labelled `floor-bench=<env.id>`.
pub async fn register(env: &TestEnv, secret: &'static str) {
    let (port, ca) = noop_webhook(secret).await;
    let floor_config = format!("regcred-floor-{}", env.id);
    let config: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration =
        serde_json::from_value(json!({
            "metadata": {"name": floor_config},
            "webhooks": [{
                "name": "noop.regcred.dev",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/mutate"),
                    "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca),
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"floor-bench": env.id}},
            }],
        }))
        .unwrap();
    support::apply(&Api::all(env.client.clone()), &config).await;
    env.cleanup::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>(&floor_config);
}
