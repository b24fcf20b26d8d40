//! `regcred check`: the registry preflight from a terminal, before a profile exists (or against one).

use std::io::Read as _;
use std::process::ExitCode;

use kube::api::Api;

use crate::api::RegistryProfile;
use crate::config::{CheckArgs, ManifestTypeArg, OutputFormat};
use crate::registry::preflight::{self, Credentials, ManifestKind, Options, Report, qualify};
use crate::registry::{config_key, resolve_server};
use crate::resolve::{self, Source};

use super::{BAD_INPUT, sources_of};

/// What the check needs, gathered from the flags (and the profile).
struct Request {
    registry: String,
    credentials: Option<Credentials>,
    images: Vec<String>,
    options: Options,
}

/// Runs `regcred check` (without `--manifest`); the exit status says how it went.
pub async fn run(args: CheckArgs) -> ExitCode {
    let request = match request(&args).await {
        Ok(request) => request,
        Err(message) => {
            eprintln!("regcred check: {message}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    let report =
        preflight::check(&request.registry, request.credentials.as_ref(), &request.images, &request.options).await;
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("regcred check: {e}"),
        },
        OutputFormat::Text => print!("{}", render(&report, request.credentials.as_ref())),
    }
    ExitCode::from(report.first_failure().map_or(0, |f| f.reason.exit_code()))
}

/// The readable report.
pub fn render(report: &Report, credentials: Option<&Credentials>) -> String {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    let mut out = String::new();
    let who = credentials.map_or("anonymous access".to_owned(), |c| format!("user {:?}", c.username));
    let _ = match &report.credentials {
        None => writeln!(out, "registry {}: ok ({who})", report.registry),
        Some(f) => writeln!(out, "registry {}: FAIL {}: {}", report.registry, f.reason.as_str(), f.message),
    };
    for image in &report.images {
        let _ = match &image.failure {
            None => writeln!(
                out,
                "  ok    {}  {}  {}  {} bytes{}",
                image.image,
                image.digest.as_deref().unwrap_or("-"),
                image.media_type.as_deref().unwrap_or("-"),
                image.size.unwrap_or_default(),
                image.platform.as_ref().map(|p| format!("  ({p})")).unwrap_or_default(),
            ),
            Some(f) => writeln!(out, "  FAIL  {}  {}: {}", image.image, f.reason.as_str(), f.message),
        };
    }
    let _ = match report.first_failure() {
        None => writeln!(out, "passed in {} ms", report.duration_ms),
        Some(f) => writeln!(out, "failed: {} (after {} ms)", f.reason.as_str(), report.duration_ms),
    };
    out
}

async fn request(args: &CheckArgs) -> Result<Request, String> {
    let mut options = Options {
        platform: args.platform.clone(),
        max_size: args.max_image_size,
        accepted: args
            .manifest_types
            .iter()
            .map(|t| match t {
                ManifestTypeArg::Docker => ManifestKind::Docker,
                ManifestTypeArg::Oci => ManifestKind::Oci,
            })
            .collect(),
        insecure_skip_verify: args.insecure_skip_verify,
        ..Options::default()
    };
    if let Some(path) = &args.ca_file {
        options.ca_pem =
            Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?);
    }
    if let Some(name) = &args.profile {
        return from_profile(args, name, options).await;
    }
    let registry = match (&args.registry, args.images.first()) {
        (Some(r), _) => r.clone(),
        (None, Some(image)) => registry_of(image),
        (None, None) => return Err("give an image to check, --registry, or --profile".into()),
    };
    let credentials = if let Some(username) = &args.username {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password).map_err(|e| format!("reading the password from stdin: {e}"))?;
        let password = password.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err("--password-stdin: standard input was empty".into());
        }
        Some(Credentials { username: username.clone(), password })
    } else if let Some(path) = &args.docker_config {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read --docker-config {}: {e}", path.display()))?;
        let config = crate::credentials::DockerConfig(crate::credentials::SecretBytes::new(bytes));
        let key = config_key(&registry);
        let host = crate::registry::host_of(&registry).to_owned();
        let found = [key.as_str(), host.as_str(), &format!("https://{host}")].into_iter().find_map(|k| config.login(k));
        Some(found.ok_or_else(|| format!("{} has no credentials for {registry}", path.display()))?)
    } else {
        None
    };
    Ok(Request { registry, credentials, images: args.images.clone(), options })
}

/// The registry an image reference names (Docker Hub when it names none).
fn registry_of(image: &str) -> String {
    let qualified = qualify(image, "docker.io");
    qualified.split('/').next().unwrap_or("docker.io").to_owned()
}

/// Registry, credentials, images and options from a RegistryProfile and its Secrets.
async fn from_profile(args: &CheckArgs, name: &str, mut options: Options) -> Result<Request, String> {
    let client = crate::client::infer().await.map_err(|e| format!("no usable kubeconfig for --profile: {e}"))?;
    let profile = Api::<RegistryProfile>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| format!("cannot read RegistryProfile {name}: {e}"))?;
    let spec = &profile.spec;
    let registry = resolve_server(spec.provider, spec.server.as_deref())
        .ok_or_else(|| format!("profile {name} has no registry (spec.server)"))?;
    let key = config_key(&registry);
    if let Some(v) = &spec.validation {
        let from_profile = Options::for_profile(v, spec.tls.as_ref());
        options.max_size = options.max_size.or(from_profile.max_size);
        if options.accepted.is_empty() {
            options.accepted = from_profile.accepted;
        }
        if args.platform == Options::default().platform {
            options.platform = from_profile.platform;
        }
    }
    if let Some(tls) = &spec.tls {
        options.ca_pem = options.ca_pem.or_else(|| tls.ca_bundle.clone());
        options.insecure_skip_verify |= tls.insecure_skip_verify == Some(true);
    }
    let images = if args.images.is_empty() {
        spec.validation.as_ref().map(|v| v.images.clone()).unwrap_or_default()
    } else {
        args.images.clone()
    };
    // The same resolver as the controller's, over the Secrets it would read in regcred's namespace.
    let sources = sources_of(&client, &args.namespace, &profile).await?;
    // What the profile's Secrets hold now; for short-lived tokens, the copy the leader keeps in regcred's own
    // namespace (never from a tenant's namespace, where a Secret with regcred's labels could be forged).
    let source = resolve::source(&profile, Some(&registry), &sources);
    let config = match resolve::in_force_from(&profile, &source, &sources, None, jiff::Timestamp::now()).content {
        Ok(content) => content.map(|c| c.config),
        Err(_) if matches!(source, Ok(Source::Token(_))) => {
            return Err(format!(
                "profile {name} mints its tokens and none is in {} yet: nothing to check with",
                args.namespace
            ));
        }
        Err(u) => return Err(format!("the credentials of {name} do not resolve ({}): {}", u.reason, u.message)),
    };
    let credentials = match &config {
        Some(c) => Some(c.login(&key).ok_or_else(|| format!("the credentials of {name} have no entry for {key}"))?),
        None => None,
    };
    Ok(Request { registry, credentials, images, options })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::preflight::{Failure, ImageResult, Reason};

    #[test]
    fn the_registry_comes_from_the_first_image() {
        assert_eq!(registry_of("127.0.0.1:5000/team/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/org/app@sha256:abc"), "ghcr.io");
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
    }

    #[test]
    fn the_text_report_says_what_passed_and_what_failed() {
        let report = Report {
            registry: "r.example.com".into(),
            credentials: None,
            images: vec![
                ImageResult {
                    image: "r.example.com/a:1".into(),
                    digest: Some("sha256:d".into()),
                    size: Some(5),
                    ..Default::default()
                },
                ImageResult {
                    image: "r.example.com/b:1".into(),
                    failure: Some(Failure { reason: Reason::ImageNotFound, message: "no tag".into() }),
                    ..Default::default()
                },
            ],
            duration_ms: 12,
        };
        let creds = Credentials { username: "bot".into(), password: "hunter2".into() };
        let text = render(&report, Some(&creds));
        assert!(text.contains("registry r.example.com: ok (user \"bot\")"), "{text}");
        assert!(text.contains("ok    r.example.com/a:1  sha256:d"), "{text}");
        assert!(text.contains("FAIL  r.example.com/b:1  ImageNotFound: no tag"), "{text}");
        assert!(text.ends_with("failed: ImageNotFound (after 12 ms)\n"), "{text}");
        assert!(!text.contains("hunter2"));
    }
}
