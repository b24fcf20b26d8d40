//! The plain-HTTP operations endpoint: `/metrics` (a Prometheus registry, in the OpenMetrics text format),
//! `/healthz` (the process serves) and `/readyz` (whatever its owner says readiness is). It knows nothing of
//! what it serves: the controller and the webhook register their own metrics in the registry it is given, and
//! the composition above them ([`crate::operator`]) says what ready means.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tracing::info;

/// Whether the process is ready to serve: `Err` says why not (the text `/readyz` answers with).
pub type Readiness = Box<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// What the endpoint serves.
pub struct Endpoint {
    registry: Registry,
    ready: Readiness,
}

impl Endpoint {
    pub fn new(registry: Registry, ready: Readiness) -> Self {
        Self { registry, ready }
    }

    /// The text exposition of every metric registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The endpoint's routes.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(endpoint)
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (plain HTTP) until `shutdown` completes.
pub async fn serve(
    endpoint: Arc<Endpoint>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "metrics and health serving");
    axum::serve(listener, router(endpoint)).with_graceful_shutdown(shutdown).await
}

async fn render(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], endpoint.render())
}

async fn ready(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    match (endpoint.ready)() {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt as _;

    async fn get(endpoint: &Arc<Endpoint>, path: &str) -> (StatusCode, String) {
        let response = router(endpoint.clone()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn it_serves_what_is_registered_and_the_readiness_it_is_told() {
        let mut registry = Registry::with_prefix("regcred");
        let counter = Counter::<u64>::default();
        registry.register("things", "Things counted", counter.clone());
        counter.inc_by(3);
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let readiness: Readiness =
            Box::new(move || if flag.load(Ordering::Acquire) { Ok(()) } else { Err("caches are not synced yet") });
        let endpoint = Arc::new(Endpoint::new(registry, readiness));
        let (status, text) = get(&endpoint, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("regcred_things_total 3"), "{text}");
        assert_eq!(get(&endpoint, "/healthz").await, (StatusCode::OK, "ok".into()));
        assert_eq!(
            get(&endpoint, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet".into())
        );
        ready.store(true, Ordering::Release);
        assert_eq!(get(&endpoint, "/readyz").await, (StatusCode::OK, "ok".into()));
    }
}
