//! regcred: a Kubernetes operator that gives every workload the container-registry credentials it needs.
//!
//! The modules are layers, each using only those below it. The order is stated once, in `src/layers.rs`, whose
//! tests check every `crate::` path against it and check that the docs' Architecture (what each module owns) and
//! Layout (every folder) say the same.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod credentials;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod glob;
pub mod images;
pub mod kubelet_plugin;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod operator;
pub mod quantity;
pub mod registry;
pub mod resolve;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod webhook;

#[cfg(test)]
mod layers;

/// Installs ring as rustls' process-wide crypto provider. regcred's TLS clients and servers (the webhook, the
/// registry preflight's reqwest and oci-client, the token exchanges) are built without one, so that regcred
/// carries one TLS stack: `main` calls this once, before anything runs, and tests that build TLS clients call it
/// in their own setup. Harmless when a provider is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
