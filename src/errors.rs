//! Top-level errors of `regcred run`.

/// Why `regcred run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    Kubeconfig(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] crate::controller::Error),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::ServeError),
    #[error("cannot serve {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("a task of regcred failed: {0}")]
    Task(String),
}
