//! The kubelet's CredentialProviderConfig (`kubelet.config.k8s.io/v1`) with regcred's provider, as the node
//! installer writes it, and the kubelet's own checks of it (kubernetes' pkg/credentialprovider/plugin/config.go),
//! made before the file is written: a config the kubelet refuses stops the kubelet at its next start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::kubelet::API_VERSION as PROVIDER_API_VERSION;

use super::BINARY;

/// The config's own API group and version.
pub const CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1";
/// The config's kind.
pub const CONFIG_KIND: &str = "CredentialProviderConfig";
/// The versions of the config's group the kubelet reads.
const CONFIG_VERSIONS: [&str; 3] =
    ["kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"];
/// The provider API versions the kubelet speaks.
const PROVIDER_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];
/// The token caches the kubelet knows.
const CACHE_TYPES: [&str; 2] = ["ServiceAccount", "Token"];

/// A CredentialProviderConfig: the kubelet refuses unknown fields, so this has exactly its fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialProviderConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub providers: Vec<Provider>,
}

/// One provider of a CredentialProviderConfig.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(default)]
    pub match_images: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cache_duration: Option<String>,
    #[serde(default)]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_attributes: Option<TokenAttributes>,
}

/// An environment variable of a provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// KEP-4412: the ServiceAccount token the kubelet requests for the provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenAttributes {
    #[serde(default)]
    pub service_account_token_audience: String,
    #[serde(default)]
    pub cache_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_service_account: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_service_account_annotation_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_service_account_annotation_keys: Vec<String>,
}

/// What regcred's provider entry is made of (the chart's values and the Service's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Images the kubelet asks regcred about (`host[:port][/path]`, `*` per host label).
    pub match_images: Vec<String>,
    /// How long the kubelet keeps an answer without a `cacheDuration` (regcred's answers carry one).
    pub default_cache_duration: String,
    /// `https://IP:PORT` of regcred's Service.
    pub server: String,
    /// `<fullname>.<namespace>.svc`.
    pub server_name: String,
    /// Where the CA bundle is on the node.
    pub ca_file: String,
    /// The plugin's `--timeout`.
    pub timeout: String,
    /// The tokens' audience, regcred's.
    pub audience: String,
}

/// The config with regcred's one provider.
pub fn render(settings: &Settings) -> CredentialProviderConfig {
    CredentialProviderConfig {
        api_version: CONFIG_API_VERSION.into(),
        kind: CONFIG_KIND.into(),
        providers: vec![Provider {
            name: BINARY.into(),
            match_images: settings.match_images.clone(),
            default_cache_duration: Some(settings.default_cache_duration.clone()),
            api_version: PROVIDER_API_VERSION.into(),
            args: vec![
                "--server".into(),
                settings.server.clone(),
                "--server-name".into(),
                settings.server_name.clone(),
                "--ca-file".into(),
                settings.ca_file.clone(),
                "--timeout".into(),
                settings.timeout.clone(),
            ],
            env: Vec::new(),
            token_attributes: Some(TokenAttributes {
                service_account_token_audience: settings.audience.clone(),
                cache_type: "ServiceAccount".into(),
                require_service_account: Some(true),
                required_service_account_annotation_keys: Vec::new(),
                optional_service_account_annotation_keys: Vec::new(),
            }),
        }],
    }
}

/// What the kubelet would refuse in `config` (one line each; empty when it would load it), as its
/// `validateCredentialProviderConfig` checks it with the ServiceAccount-token feature on (the default since 1.34),
/// plus a few entries it accepts but that can never match an image (an empty host, a scheme), and regcred's own
/// provider's arguments (the plugin parses them at every pull and would fail every one).
pub fn problems(config: &CredentialProviderConfig) -> Vec<String> {
    let mut out = Vec::new();
    if !CONFIG_VERSIONS.contains(&config.api_version.as_str()) || config.kind != CONFIG_KIND {
        out.push(format!(
            "apiVersion/kind are `{}`/`{}`, not {CONFIG_API_VERSION} {CONFIG_KIND}",
            config.api_version, config.kind
        ));
    }
    if config.providers.is_empty() {
        out.push("providers: at least 1 item is required".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for provider in &config.providers {
        provider_problems(provider, &mut out);
        if !seen.insert(provider.name.as_str()) {
            out.push(format!("providers.name: duplicate provider `{}`", provider.name));
        }
    }
    out
}

fn provider_problems(provider: &Provider, out: &mut Vec<String>) {
    let name = &provider.name;
    if name.is_empty() || name.contains('/') || name.contains(' ') || name == "." || name == ".." {
        out.push(format!("providers.name `{name}`: not a file name (empty, `/`, a space, `.` or `..`)"));
    }
    if !PROVIDER_VERSIONS.contains(&provider.api_version.as_str()) {
        out.push(format!(
            "providers[{name}].apiVersion `{}`: not one of {}",
            provider.api_version,
            PROVIDER_VERSIONS.join(", ")
        ));
    }
    if provider.match_images.is_empty() {
        out.push(format!("providers[{name}].matchImages: at least 1 item is required"));
    }
    for image in &provider.match_images {
        if let Err(why) = check_match_image(image) {
            out.push(format!("providers[{name}].matchImages `{image}`: {why}"));
        }
    }
    match provider.default_cache_duration.as_deref() {
        None => out.push(format!("providers[{name}].defaultCacheDuration is required")),
        Some(d) if go_duration(d).is_none() => {
            out.push(format!("providers[{name}].defaultCacheDuration `{d}`: not a duration such as 0s, 30s or 5m"));
        }
        Some(_) => {}
    }
    if let Some(attributes) = &provider.token_attributes {
        token_problems(name, &provider.api_version, attributes, out);
    }
    if name == BINARY
        && let Err(why) = check_own_args(&provider.args)
    {
        out.push(format!("providers[{name}].args: {why}"));
    }
}

fn token_problems(name: &str, api_version: &str, attributes: &TokenAttributes, out: &mut Vec<String>) {
    let at = format!("providers[{name}].tokenAttributes");
    if attributes.service_account_token_audience.is_empty() {
        out.push(format!("{at}.serviceAccountTokenAudience is required"));
    }
    if attributes.require_service_account.is_none() {
        out.push(format!("{at}.requireServiceAccount is required"));
    }
    if api_version != PROVIDER_API_VERSION {
        out.push(format!("{at}: only for apiVersion {PROVIDER_API_VERSION}"));
    }
    let required = &attributes.required_service_account_annotation_keys;
    let optional = &attributes.optional_service_account_annotation_keys;
    if attributes.require_service_account == Some(false) && !required.is_empty() {
        out.push(format!("{at}.requiredServiceAccountAnnotationKeys: requireServiceAccount cannot be false"));
    }
    for (field, keys) in
        [("requiredServiceAccountAnnotationKeys", required), ("optionalServiceAccountAnnotationKeys", optional)]
    {
        let mut seen = std::collections::BTreeSet::new();
        for key in keys {
            if !qualified_name(&key.to_ascii_lowercase()) {
                out.push(format!("{at}.{field} `{key}`: not a qualified name (prefix/name)"));
            }
            if !seen.insert(key) {
                out.push(format!("{at}.{field} `{key}`: duplicate"));
            }
        }
    }
    if let Some(both) = required.iter().find(|k| optional.contains(k)) {
        out.push(format!("{at}: annotation key `{both}` cannot be both required and optional"));
    }
    if !CACHE_TYPES.contains(&attributes.cache_type.as_str()) {
        out.push(format!("{at}.cacheType `{}`: not one of {}", attributes.cache_type, CACHE_TYPES.join(", ")));
    }
}

/// A `matchImages` entry as the kubelet reads it (Go's url.Parse of `https://` + the entry): `host[:port][/path]`,
/// where a port is digits and `*` globs stand for whole or partial host labels. Stricter than the kubelet in
/// refusing what can never match an image: an empty host, a scheme, a user, a query or a fragment.
pub fn check_match_image(image: &str) -> Result<(), String> {
    if image.contains("://") {
        return Err("no scheme: host[:port][/path]".into());
    }
    if image.chars().any(|c| c.is_control() || c == ' ' || c == '%') {
        return Err("spaces, control characters and `%` are not allowed".into());
    }
    if image.contains(['@', '?', '#']) {
        return Err("no user, query or fragment: host[:port][/path]".into());
    }
    let host_port = image.split('/').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (host_port, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("port `{port}` is not a number (ports are never globbed)"));
    }
    if host.is_empty() {
        return Err("no host".into());
    }
    let label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*');
    let ipv6 =
        host.starts_with('[') && host.ends_with(']') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    if !ipv6 && !host.split('.').all(label) {
        return Err(format!("host `{host}` is not DNS labels or an IP address (`*` globs within a label)"));
    }
    Ok(())
}

/// A Go duration (`time.ParseDuration`, as metav1.Duration reads it): `0`, or numbers with units (`1h30m`,
/// `1.5s`, `300ms`), not negative.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A Kubernetes qualified name (`[prefix/]name`: a DNS subdomain prefix, a name of at most 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric).
fn qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

/// regcred's provider's arguments parse as the plugin parses them.
fn check_own_args(args: &[String]) -> Result<(), String> {
    use clap::Parser;
    super::Args::try_parse_from(std::iter::once(BINARY).chain(args.iter().map(String::as_str)))
        .map(|_| ())
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            match_images: vec!["10.250.0.1:5000".into(), "*.registry.example".into()],
            default_cache_duration: "0s".into(),
            server: "https://10.96.0.10:8444".into(),
            server_name: "regcred.regcred.svc".into(),
            ca_file: "/etc/kubernetes/image-credential-provider/regcred-credential-provider-ca.crt".into(),
            timeout: "5s".into(),
            audience: crate::api::kubelet::DEFAULT_AUDIENCE.into(),
        }
    }

    #[test]
    fn the_rendered_config_is_the_one_that_worked_on_the_local_node_and_the_kubelet_would_load_it() {
        let config = render(&settings());
        assert_eq!(problems(&config), Vec::<String>::new());
        let yaml: serde_json::Value = serde_yaml::from_str(&serde_yaml::to_string(&config).unwrap()).unwrap();
        assert_eq!(
            yaml,
            serde_json::json!({"apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
                "providers": [{"name": "regcred-credential-provider",
                    "matchImages": ["10.250.0.1:5000", "*.registry.example"], "defaultCacheDuration": "0s",
                    "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                    "args": ["--server", "https://10.96.0.10:8444", "--server-name", "regcred.regcred.svc",
                        "--ca-file", "/etc/kubernetes/image-credential-provider/regcred-credential-provider-ca.crt",
                        "--timeout", "5s"],
                    "tokenAttributes": {"serviceAccountTokenAudience": "credential-provider.regcred.dev",
                        "cacheType": "ServiceAccount", "requireServiceAccount": true}}]})
        );
    }

    #[test]
    fn what_the_kubelet_refuses_is_refused_with_the_field_named() {
        type Edit = fn(&mut CredentialProviderConfig);
        let cases: [(Edit, &str); 13] = [
            (|c| c.providers.clear(), "providers: at least 1 item"),
            (|c| c.kind = "KubeletConfiguration".into(), "not kubelet.config.k8s.io/v1 CredentialProviderConfig"),
            (|c| c.providers[0].name = "a/b".into(), "not a file name"),
            (|c| c.providers.push(c.providers[0].clone()), "duplicate provider"),
            (|c| c.providers[0].api_version = "v1".into(), "apiVersion `v1`"),
            (|c| c.providers[0].match_images.clear(), "matchImages: at least 1 item"),
            (|c| c.providers[0].match_images[0] = "reg.example:*".into(), "ports are never globbed"),
            (|c| c.providers[0].default_cache_duration = None, "defaultCacheDuration is required"),
            (|c| c.providers[0].default_cache_duration = Some("-1m".into()), "defaultCacheDuration `-1m`"),
            (|c| c.providers[0].token_attributes.as_mut().unwrap().cache_type = "Pod".into(), "cacheType `Pod`"),
            (
                |c| c.providers[0].token_attributes.as_mut().unwrap().require_service_account = None,
                "requireServiceAccount is required",
            ),
            (
                |c| c.providers[0].token_attributes.as_mut().unwrap().service_account_token_audience.clear(),
                "serviceAccountTokenAudience is required",
            ),
            (|c| c.providers[0].args[1] = "regcred.regcred.svc:8444".into(), "args: invalid value"),
        ];
        for (edit, expected) in cases {
            let mut config = render(&settings());
            edit(&mut config);
            let found = problems(&config).join("\n");
            assert!(found.contains(expected), "expected {expected:?} in {found:?}");
        }
    }

    #[test]
    fn match_images_read_as_the_kubelet_reads_them() {
        for good in
            ["10.250.0.1:5000", "*.dkr.ecr.*.amazonaws.com", "registry.example/team", "[fd00::1]:5000", "ghcr.io"]
        {
            assert_eq!(check_match_image(good), Ok(()), "{good}");
        }
        for bad in ["", "https://ghcr.io", "ghcr.io:", "ghcr.io:x", "a..b", "a b", "u@ghcr.io", ":5000"] {
            assert!(check_match_image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_gos() {
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "5", "-1s", "1d", "s", "1 s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
        assert!(qualified_name("example.com/role-arn") && qualified_name("a_b") && !qualified_name("Example.com/x"));
    }
}
