//! The HTTPS server of the credential endpoint: the HTTP glue around [`super::Endpoint::ask`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use tracing::{debug, info, warn};

use super::stats::result;
use super::{Endpoint, Reply};
use crate::api::kubelet::ENDPOINT_PATH;

/// The largest request accepted: the kubelet's request is an image name and a few annotations.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Every request is answered within this, under the provider's own timeout (5 s): 503 when the apiserver has not
/// reviewed the token by then.
pub const DEADLINE: Duration = Duration::from_secs(4);

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential endpoint on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

/// The endpoint's routes: `POST /credential-provider/v1`, nothing else.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new().route(ENDPOINT_PATH, post(credentials)).layer(DefaultBodyLimit::max(BODY_LIMIT)).with_state(endpoint)
}

/// The bearer token of `headers`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn credentials(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(DEADLINE, endpoint.ask(bearer(&headers), &body)).await;
    let response = match reply {
        Ok(Reply::Answer(answer)) => {
            endpoint.stats.request(if answer.auth.is_empty() { result::EMPTY } else { result::SERVED });
            match serde_json::to_vec(&answer.response()) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding the answer: {e}")),
            }
        }
        Ok(Reply::Refused(why)) => {
            endpoint.stats.request(result::REFUSED);
            debug!(reason = %why, "credential provider request refused");
            plain(StatusCode::UNAUTHORIZED, &why.to_string())
        }
        Ok(Reply::Malformed(why)) => {
            endpoint.stats.request(result::MALFORMED);
            plain(StatusCode::BAD_REQUEST, &why)
        }
        Ok(Reply::Unavailable(why)) => {
            endpoint.stats.request(result::UNAVAILABLE);
            warn!(reason = %why, "credential provider request not answered");
            plain(StatusCode::SERVICE_UNAVAILABLE, &why)
        }
        Err(_) => {
            endpoint.stats.request(result::UNAVAILABLE);
            warn!("credential provider request not answered by its deadline");
            plain(StatusCode::SERVICE_UNAVAILABLE, "regcred could not answer within its deadline")
        }
    };
    endpoint.stats.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// One plain line: what the provider logs for the kubelet.
fn plain(status: StatusCode, line: &str) -> Response {
    let line: String = line.lines().next().unwrap_or_default().chars().take(300).collect();
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{line}\n")).into_response()
}

/// Serves the endpoint on `addr` with `tls` (the webhook's certificate, no client certificate) until `shutdown`
/// completes, then drains open requests.
pub async fn serve(
    endpoint: Arc<Endpoint>,
    addr: SocketAddr,
    tls: RustlsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| Error::Serve { addr, source })?;
    let server = axum_server::from_tcp_rustls(listener, tls).map_err(|source| Error::Serve { addr, source })?;
    endpoint.stats.serving.send_replace(true);
    info!(%addr, audience = %endpoint.reviews.audience(), "credential endpoint serving");
    server
        .handle(handle)
        .serve(router(endpoint).into_make_service())
        .await
        .map_err(|source| Error::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[allow(clippy::unused_async)] // the view's watches are spawned: it needs the runtime a test's await gives
    async fn endpoint() -> Arc<Endpoint> {
        // Nothing listens there: these requests must be answered without the API.
        let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let (view, _feeds) = crate::state::View::detached("regcred-system", 2.0 / 3.0);
        Arc::new(Endpoint::new(client, view, crate::api::kubelet::DEFAULT_AUDIENCE, Duration::from_secs(60)))
    }

    async fn post(endpoint: &Arc<Endpoint>, auth: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut request = Request::post(ENDPOINT_PATH).header("content-type", "application/json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response =
            router(endpoint.clone()).oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn tokens_that_cannot_pass_are_refused_in_one_line_without_asking_the_apiserver() {
        let endpoint = endpoint().await;
        let body = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r.example.com/app"}"#;
        for auth in [None, Some("Basic dTpw"), Some("Bearer "), Some("Bearer not-a-jwt")] {
            let (status, text) = post(&endpoint, auth, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(!text.contains("dTpw") && !text.contains("not-a-jwt"), "{text}");
        }
        assert_eq!(endpoint.stats.requests_with(result::REFUSED), 4);
        let (status, _) = post(&endpoint, Some("Bearer x.y.z"), "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = post(&endpoint, Some("Bearer x.y.z"), &" ".repeat(BODY_LIMIT + 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
