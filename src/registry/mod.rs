//! Registry hosts: presets and the keys a dockerconfigjson is written under.

pub mod preflight;
pub mod reference;

use crate::api::Provider;

/// The key the kubelet matches Docker Hub images (`nginx`, `docker.io/library/nginx`) against.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Hosts that are all Docker Hub.
const DOCKER_HUB_HOSTS: [&str; 4] = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// The registry host a preset stands for when the profile names none.
pub fn default_server(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::DockerHub => Some("docker.io"),
        Provider::Ghcr => Some("ghcr.io"),
        Provider::Quay => Some("quay.io"),
        Provider::Gcr => Some("gcr.io"),
        Provider::EcrPublic => Some("public.ecr.aws"),
        Provider::Mcr => Some("mcr.microsoft.com"),
        Provider::Generic | Provider::ArtifactRegistry | Provider::Ecr | Provider::Acr => None,
    }
}

/// The registry a profile resolves to: its `server`, or its preset's default.
pub fn resolve_server(provider: Provider, server: Option<&str>) -> Option<String> {
    server.map(str::to_owned).or_else(|| default_server(provider).map(str::to_owned))
}

/// The host (with its port) of a registry named `host[:port][/path]`.
pub fn host_of(registry: &str) -> &str {
    registry.split('/').next().unwrap_or(registry)
}

/// Whether `server` (host, maybe with a path) is Docker Hub.
pub fn is_docker_hub(server: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&host_of(server))
}

/// The key under which credentials for `server` are written into a dockerconfigjson. Docker Hub uses its
/// historical index URL, which is what the kubelet (and Docker) look up for Docker Hub images; every other
/// registry uses its host (with port and path prefix), which the kubelet matches by host, port and path prefix.
pub fn config_key(server: &str) -> String {
    if is_docker_hub(server) && !server.contains('/') { DOCKER_HUB_KEY.to_owned() } else { server.to_owned() }
}

/// Whether the credentials written for `registry` (under its [`config_key`]) serve `image` (a full reference): the
/// kubelet's own matching, so regcred sends a profile's credentials exactly where the kubelet would. An image that
/// does not parse is served by nothing.
pub fn serves(registry: &str, image: &str) -> bool {
    let key = reference::CredentialKey::parse(&config_key(registry));
    reference::parse_memo(image).is_some_and(|i| key.matches(&i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_fill_the_default_server() {
        assert_eq!(resolve_server(Provider::DockerHub, None).as_deref(), Some("docker.io"));
        assert_eq!(resolve_server(Provider::Gcr, Some("eu.gcr.io")).as_deref(), Some("eu.gcr.io"));
        assert_eq!(resolve_server(Provider::Generic, None), None);
        assert_eq!(resolve_server(Provider::Ecr, None), None);
        assert_eq!(resolve_server(Provider::Mcr, None).as_deref(), Some("mcr.microsoft.com"));
    }

    #[test]
    fn docker_hub_is_keyed_by_its_index_url() {
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(config_key(host), DOCKER_HUB_KEY, "{host}");
        }
        assert_eq!(config_key("ghcr.io"), "ghcr.io");
        assert_eq!(config_key("registry.example.com:5000/team"), "registry.example.com:5000/team");
    }

    #[test]
    fn a_registry_serves_the_images_the_kubelet_would_send_its_credentials_for() {
        let cases = [
            ("registry.example.com:5000", "registry.example.com:5000/team/app:1", true),
            ("registry.example.com:5000", "registry.example.com/team/app:1", false),
            ("registry.example.com:5000", "other.host/x", false),
            ("registry.example.com/team", "registry.example.com/team/app", true),
            ("registry.example.com/team", "registry.example.com/other/app", false),
            ("docker.io", "docker.io/library/nginx", true),
            ("docker.io", "index.docker.io/org/app", true),
            ("docker.io", "ghcr.io/org/app", false),
            ("*.gcr.io", "eu.gcr.io/p/app", true),
            ("*.gcr.io", "gcr.io.evil.example/p/app", false),
            ("ghcr.io", "Not An Image", false),
        ];
        for (registry, image, want) in cases {
            assert_eq!(serves(registry, image), want, "{registry} {image}");
        }
    }
}
