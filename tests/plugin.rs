//! `regcred-credential-provider`, the real binary, against a real TLS server standing in for regcred's endpoint
//! (no cluster needed): what the kubelet gets on stdout and reads on stderr.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use regcred::api::kubelet::{API_VERSION, ENDPOINT_PATH, RESPONSE_KIND};
use tokio::io::AsyncWriteExt;

const NAME: &str = "regcred.regcred.svc";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.the-pods-token.signature";

/// Serves `app` over TLS for [`NAME`] on 127.0.0.1; the address and the CA file.
async fn serve(app: axum::Router, dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    regcred::install_crypto_provider();
    let (ca, cert, key) = support::registry::tls_material(NAME);
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes()).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(listener, config).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
    let ca_file = dir.join(format!("ca-{}.crt", addr.port()));
    std::fs::write(&ca_file, ca).unwrap();
    (addr, ca_file)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the plugin as the kubelet does: the request on stdin, the flags of the CredentialProviderConfig.
async fn plugin(addr: SocketAddr, name: &str, ca_file: &std::path::Path, extra: &[&str]) -> Run {
    let request = serde_json::json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest",
        "image": "10.250.0.1:5000/team/app", "serviceAccountToken": TOKEN});
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcred-credential-provider"))
        .args(["--server", &format!("https://{addr}"), "--server-name", name])
        .arg("--ca-file")
        .arg(ca_file)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!run.stderr.contains("the-pods-token") && !run.stderr.contains("hunter2"), "{}", run.stderr);
    run
}

fn answer() -> serde_json::Value {
    serde_json::json!({"apiVersion": API_VERSION, "kind": RESPONSE_KIND, "cacheKeyType": "Registry",
        "cacheDuration": "30s", "auth": {"10.250.0.1:5000": {"username": "u", "password": "hunter2"}}})
}

/// Fails closed: exit status 1, nothing on stdout, one line on stderr saying `why`.
fn refused(run: &Run, why: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stdout, "", "nothing for the kubelet");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.starts_with("regcred-credential-provider: ") && run.stderr.contains(why), "{}", run.stderr);
}

#[tokio::test]
async fn the_plugin_passes_regcreds_answer_on_and_fails_closed_on_anything_else() {
    let dir = tempdir();
    // regcred's endpoint as the contract has it: the token in the header, none in the body.
    let good = axum::Router::new().route(
        ENDPOINT_PATH,
        post(|headers: HeaderMap, body: String| async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let request: serde_json::Value = serde_json::from_str(&body).unwrap();
            if auth != format!("Bearer {TOKEN}") || request.get("serviceAccountToken").is_some() {
                return (StatusCode::BAD_REQUEST, "the token is not where the contract puts it".to_owned());
            }
            assert_eq!(request["image"], "10.250.0.1:5000/team/app");
            (StatusCode::OK, answer().to_string())
        }),
    );
    let (addr, ca) = serve(good, &dir).await;
    let run = plugin(addr, NAME, &ca, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap(), answer());
    assert_eq!(run.stderr, "");

    // The certificate is for regcred's Service name; any other name is a TLS failure.
    refused(&plugin(addr, "other.regcred.svc", &ca, &[]).await, "could not reach regcred");
    let run = plugin(addr, "other.regcred.svc", &ca, &[]).await;
    assert!(run.stderr.to_lowercase().contains("certificate"), "{}", run.stderr);
    // Only the CA file is trusted: another CA's certificate is refused.
    let (_, other_ca) = serve(axum::Router::new(), &dir).await;
    refused(&plugin(addr, NAME, &other_ca, &[]).await, "certificate");

    let refusing = axum::Router::new()
        .route(ENDPOINT_PATH, post(|| async { (StatusCode::UNAUTHORIZED, "token refused: the Pod is gone\n") }));
    let (addr, ca) = serve(refusing, &dir).await;
    refused(
        &plugin(addr, NAME, &ca, &[]).await,
        "refused the Pod's ServiceAccount token (401): token refused: the Pod is gone",
    );

    let garbage = axum::Router::new().route(ENDPOINT_PATH, post(|| async { "<html>hunter2</html>" }));
    let (addr, ca) = serve(garbage, &dir).await;
    refused(&plugin(addr, NAME, &ca, &[]).await, "not a CredentialProviderResponse");

    let huge = axum::Router::new().route(ENDPOINT_PATH, post(|| async { " ".repeat(2 * 1024 * 1024) }));
    let (addr, ca) = serve(huge, &dir).await;
    refused(&plugin(addr, NAME, &ca, &[]).await, "larger than 1024 KiB");

    // A regcred that never answers: the plugin gives up at --timeout, well before the kubelet's minute.
    let stuck = axum::Router::new().route(ENDPOINT_PATH, post(std::future::pending::<String>));
    let (addr, ca) = serve(stuck, &dir).await;
    refused(&plugin(addr, NAME, &ca, &["--timeout", "1s"]).await, "did not answer within 1s");

    refused(&plugin(addr, NAME, &dir.join("missing.crt"), &[]).await, "the CA file");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("regcred-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
