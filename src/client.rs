//! The Kubernetes API client regcred runs with: kube's own stack (base URI, retries of 429/503/504,
//! authentication, extra headers, connect/read/write timeouts), with a connection pool that lets go of idle
//! connections.
//!
//! kube's default client speaks HTTP/1.1, so every request in flight holds a TLS connection of its own, and its
//! pool keeps idle connections for 90 s. After a large sync (128 writes in flight) that was 138 connections and
//! about 4 MiB of buffers held by an idle operator (`make bench`). Here idle connections close after 10 s.
//!
//! HTTP/2 was measured too: one connection for everything made the 30,000-Secret sync 3.2x slower than the raw
//! baseline (the apiserver serves one connection's streams through one reader), so regcred stays on HTTP/1.1, as
//! kube does.
//!
//! Writes whose answer nothing reads go through [`send_undecoded`].

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::ServiceBuilder;
use tower::retry::RetryLayer;

/// How long an idle connection to the apiserver is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client from the kubeconfig (or the in-cluster configuration), like `kube::Client::try_default`.
pub async fn infer() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    from_config(config)
}

/// As [`infer`], without retries: for requests whose refusal is the answer, such as an eviction a
/// PodDisruptionBudget refuses with 429 (which the default client would retry for minutes).
pub async fn infer_without_retries() -> Result<Client, kube::Error> {
    let mut config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.default_retry = false;
    from_config(config)
}

/// A client for `config`. Configurations this stack does not cover (a proxy, a TLS server name override, exec or
/// auth-provider credentials, whose client certificates can expire) get kube's default client instead.
pub fn from_config(config: Config) -> Result<Client, kube::Error> {
    let special = config.proxy_url.is_some()
        || config.tls_server_name.is_some()
        || config.auth_info.exec.is_some()
        || config.auth_info.auth_provider.is_some();
    if special {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Without a timer the pool drops expired connections only when it is next used: never, when idle.
        .pool_timer(TokioTimer::new())
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}

/// Sends a write (`verb` names it, as kube's own [`kube::Api`] methods do) and returns the apiserver's answer
/// undecoded: decoding the whole object, managedFields and all, costs CPU and allocations on every write, for a
/// caller that reads little or nothing of it. Errors are kube's own, as from [`kube::Api`].
pub async fn send_undecoded(
    client: &Client,
    request: kube::Result<http::Request<Vec<u8>>>,
    verb: &'static str,
) -> kube::Result<String> {
    let mut request = request?;
    request.extensions_mut().insert(verb);
    client.request_text(request).await
}
