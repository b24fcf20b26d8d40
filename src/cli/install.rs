//! `regcred install-credential-provider`: what the chart's opt-in node DaemonSet runs on every node. It places
//! regcred-credential-provider in the kubelet's provider bin directory, the CA bundle and a CredentialProviderConfig
//! (checked as the kubelet checks it) in the kubelet's config directory, keeps the CA bundle current, and on
//! uninstall removes exactly what it placed (crate::kubelet_plugin::node has the rules).
//!
//! Uninstall or rolling update: both stop the Pod with SIGTERM. It is an uninstall when its DaemonSet is gone or
//! being deleted (`helm uninstall`, or `nodeInstaller.enabled=false`), or when it may no longer read it (its
//! ServiceAccount or Role went with the release: Helm deletes them in the same breath); else the DaemonSet stays and
//! the files stay for the next Pod (an update, an eviction, a node shutdown).
//!
//! The kubelet reads its credential provider config only when it starts: placing the files changes nothing until
//! the kubelet restarts (the installer says so in its log; docs/credential-provider.md says how).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::Api;

use crate::kubelet_plugin::config::{self, Settings};
use crate::kubelet_plugin::node::{self, CA_FILE, CONFIG_FILE, MANIFEST_FILE, Manifest};
use crate::kubelet_plugin::{BINARY, parse_timeout};

/// How often the CA bundle's source is compared with the copy on the node (a ConfigMap volume changes within a
/// minute or so of the ConfigMap).
const CA_POLL: Duration = Duration::from_secs(15);

/// Options of `regcred install-credential-provider`.
#[derive(Args, Debug, Clone)]
pub struct InstallArgs {
    /// The kubelet's --image-credential-provider-bin-dir on the node (mounted at the same path).
    #[arg(
        long = "bin-dir",
        env = "REGCRED_INSTALL_BIN_DIR",
        default_value = "/usr/libexec/kubernetes/kubelet-plugins/credential-provider/exec"
    )]
    pub bin_dir: PathBuf,

    /// The directory the kubelet's --image-credential-provider-config names, on the node (mounted at the same
    /// path); the config is written there as regcred-credential-provider.yaml.
    #[arg(
        long = "config-dir",
        env = "REGCRED_INSTALL_CONFIG_DIR",
        default_value = "/etc/kubernetes/image-credential-provider"
    )]
    pub config_dir: PathBuf,

    /// The plugin binary to copy (in regcred's image).
    #[arg(long, env = "REGCRED_INSTALL_SOURCE", default_value = "/usr/local/bin/regcred-credential-provider")]
    pub source: PathBuf,

    /// The CA bundle (PEM) to place beside the config: the mounted `<fullname>-ca` ConfigMap's ca.crt.
    #[arg(long = "ca-source", env = "REGCRED_INSTALL_CA_SOURCE")]
    pub ca_source: PathBuf,

    /// regcred's Service: its ClusterIP is read from the environment variable the kubelet sets for it,
    /// `<NAME>_SERVICE_HOST` (upper case, `-` as `_`), unless --server-ip gives it.
    #[arg(long, env = "REGCRED_INSTALL_SERVICE")]
    pub service: String,

    /// regcred's Service ClusterIP, instead of the environment.
    #[arg(long = "server-ip", env = "REGCRED_INSTALL_SERVER_IP")]
    pub server_ip: Option<std::net::IpAddr>,

    /// The Service's `credentials` port.
    #[arg(long, env = "REGCRED_INSTALL_PORT", default_value_t = 8444)]
    pub port: u16,

    /// The name regcred's serving certificate holds: `<fullname>.<namespace>.svc`.
    #[arg(long = "server-name", env = "REGCRED_INSTALL_SERVER_NAME")]
    pub server_name: String,

    /// The ServiceAccount token audience the kubelet requests (regcred's --credential-provider-audience).
    #[arg(long, env = "REGCRED_INSTALL_AUDIENCE", default_value = crate::api::kubelet::DEFAULT_AUDIENCE)]
    pub audience: String,

    /// Images the kubelet asks regcred about, comma-separated (`host[:port][/path]`, `*` within a host label).
    #[arg(long = "match-images", env = "REGCRED_INSTALL_MATCH_IMAGES", value_delimiter = ',', required = true)]
    pub match_images: Vec<String>,

    /// How long the kubelet keeps an answer that carries no cacheDuration (regcred's always carry one).
    #[arg(long = "default-cache-duration", env = "REGCRED_INSTALL_DEFAULT_CACHE_DURATION", default_value = "0s")]
    pub default_cache_duration: String,

    /// The plugin's --timeout.
    #[arg(long = "plugin-timeout", env = "REGCRED_INSTALL_PLUGIN_TIMEOUT", default_value = "5s", value_parser = check_timeout)]
    pub plugin_timeout: String,

    /// The installer's own DaemonSet, looked up on SIGTERM to tell an uninstall from an update.
    #[arg(long, env = "REGCRED_INSTALL_DAEMONSET")]
    pub daemonset: String,

    /// The DaemonSet's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
}

fn check_timeout(s: &str) -> Result<String, String> {
    parse_timeout(s).map(|_| s.to_owned())
}

/// SHA-256 of `bytes`, hex.
fn sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

/// The ClusterIP of regcred's Service.
fn server_ip(args: &InstallArgs) -> Result<std::net::IpAddr, String> {
    if let Some(ip) = args.server_ip {
        return Ok(ip);
    }
    let var = format!("{}_SERVICE_HOST", args.service.to_ascii_uppercase().replace('-', "_"));
    let value = std::env::var(&var).map_err(|_| {
        format!("{var} is not set: the kubelet sets it for a Service that existed when the Pod started (the Pod restarts until it does), or give --server-ip")
    })?;
    value.parse().map_err(|_| format!("{var}=`{value}` is not an IP address"))
}

/// The config this node gets, or every reason the kubelet would refuse it.
fn render(args: &InstallArgs) -> Result<String, String> {
    let ip = server_ip(args)?;
    let settings = Settings {
        match_images: args.match_images.clone(),
        default_cache_duration: args.default_cache_duration.clone(),
        server: format!("https://{}", std::net::SocketAddr::new(ip, args.port)),
        server_name: args.server_name.clone(),
        ca_file: path_string(&args.config_dir.join(CA_FILE)),
        timeout: args.plugin_timeout.clone(),
        audience: args.audience.clone(),
    };
    let rendered = config::render(&settings);
    let problems = config::problems(&rendered);
    if !problems.is_empty() {
        return Err(format!(
            "the kubelet would refuse this CredentialProviderConfig (nothing written): {}",
            problems.join("; ")
        ));
    }
    serde_yaml::to_string(&rendered).map_err(|e| format!("cannot write the config: {e}"))
}

/// The other config files of the directory (the kubelet merges them with ours), and whether one names regcred's
/// provider. A file that does not parse is the kubelet's problem, not regcred's: it is warned about.
fn other_configs(dir: &Path) -> Result<(usize, bool), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let (mut count, mut names_us) = (0, false);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == CONFIG_FILE || !node::is_config_name(&name) || entry.path().is_dir() {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        match serde_yaml::from_str::<config::CredentialProviderConfig>(&text) {
            Ok(other) => names_us |= other.providers.iter().any(|p| p.name == BINARY),
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "another file of the kubelet's credential provider config directory does not read as a CredentialProviderConfig: the kubelet will not start with it");
            }
        }
    }
    Ok((count, names_us))
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    match read_opt(&dir.join(MANIFEST_FILE))? {
        None => Ok(Manifest::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not the installer's record: {e}", dir.join(MANIFEST_FILE).display())),
    }
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename (the kubelet never sees half a file, and a
/// running plugin keeps its old copy), with `mode`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.regcred-tmp"));
    let result = (|| {
        // A new file, never through what is there already: a leftover, or a symlink someone planted at this
        // predictable name, is removed (not followed), and `create_new` refuses anything that appears meanwhile.
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("cannot write {}: {e}", target.display())
    })
}

/// Records `bytes` as written to `dir/name` in the manifest (before the file: a crash in between leaves a record
/// that no file matches, which uninstall then leaves alone), then writes it, if the installer may.
fn place(
    manifest: &mut Manifest,
    config_dir: &Path,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<bool, String> {
    let path = dir.join(name);
    let key = path_string(&path);
    let new = sha256(bytes);
    let current = read_opt(&path)?.map(|b| sha256(&b));
    node::may_write(manifest, &key, current.as_deref(), &new)?;
    if current.as_deref() == Some(new.as_str()) && manifest.files.get(&key) == Some(&new) {
        return Ok(false);
    }
    manifest.files.insert(key, new);
    let record = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    write_atomic(config_dir, MANIFEST_FILE, &record, 0o644)?;
    write_atomic(dir, name, bytes, mode)?;
    Ok(true)
}

/// Places the CA bundle, the binary and then the config (the config names the other two).
fn install(args: &InstallArgs, config_yaml: &str) -> Result<Manifest, String> {
    let (_, others_name_us) = other_configs(&args.config_dir)?;
    if others_name_us {
        return Err(format!(
            "another config in {} names the provider {BINARY}: the kubelet refuses a provider named twice across the directory's files (nothing written)",
            args.config_dir.display()
        ));
    }
    let mut manifest = read_manifest(&args.config_dir)?;
    let ca = std::fs::read(&args.ca_source)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", args.ca_source.display()))?;
    let binary = std::fs::read(&args.source).map_err(|e| format!("cannot read {}: {e}", args.source.display()))?;
    for (dir, name, bytes, mode) in [
        (&args.config_dir, CA_FILE, ca.as_slice(), 0o644),
        (&args.bin_dir, BINARY, binary.as_slice(), 0o755),
        (&args.config_dir, CONFIG_FILE, config_yaml.as_bytes(), 0o644),
    ] {
        if place(&mut manifest, &args.config_dir, dir, name, bytes, mode)? {
            tracing::info!(file = %dir.join(name).display(), "placed");
        }
    }
    Ok(manifest)
}

/// Whether SIGTERM means uninstall: the DaemonSet is gone or going, or the installer may no longer read it.
async fn is_uninstall(args: &InstallArgs) -> (bool, String) {
    let client = match crate::client::infer().await {
        Ok(client) => client,
        Err(e) => return (false, format!("no client to look up the DaemonSet ({e}): the files stay")),
    };
    let api = Api::<DaemonSet>::namespaced(client, &args.namespace);
    match api.get_opt(&args.daemonset).await {
        Ok(None) => (true, "the DaemonSet is gone".into()),
        Ok(Some(ds)) if ds.metadata.deletion_timestamp.is_some() => (true, "the DaemonSet is being deleted".into()),
        Ok(Some(_)) => (false, "the DaemonSet stays (an update or an eviction): the files stay".into()),
        Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => {
            (true, format!("the installer may no longer read its DaemonSet ({}): its release is going", e.code))
        }
        Err(e) => (false, format!("cannot look up the DaemonSet ({e}): the files stay")),
    }
}

/// Removes what the installer placed, as [`node::uninstall`] orders, and updates the record.
fn uninstall(args: &InstallArgs) -> Result<(), String> {
    let mut manifest = read_manifest(&args.config_dir)?;
    let (other_configs, others_name_binary) = other_configs(&args.config_dir)?;
    let found = |path: PathBuf| -> Result<node::Found, String> {
        let key = path_string(&path);
        Ok(node::Found {
            recorded: manifest.files.get(&key).cloned(),
            current: read_opt(&path)?.map(|b| sha256(&b)),
            path: key,
        })
    };
    let state = node::Node {
        config: found(args.config_dir.join(CONFIG_FILE))?,
        ca: found(args.config_dir.join(CA_FILE))?,
        binary: found(args.bin_dir.join(BINARY))?,
        other_configs,
        others_name_binary,
    };
    for step in node::uninstall(&state) {
        match step {
            node::Step::Remove(path) => {
                std::fs::remove_file(&path).map_err(|e| format!("cannot remove {path}: {e}"))?;
                manifest.files.remove(&path);
                tracing::info!(file = %path, "removed");
            }
            node::Step::Keep { path, why } => tracing::warn!(file = %path, reason = %why, "kept"),
        }
    }
    manifest.files.retain(|path, _| Path::new(path).exists());
    if manifest.files.is_empty() {
        let _ = std::fs::remove_file(args.config_dir.join(MANIFEST_FILE));
    } else {
        let record = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        write_atomic(&args.config_dir, MANIFEST_FILE, &record, 0o644)?;
    }
    Ok(())
}

/// The installer: place, keep the CA bundle current until SIGTERM, then remove what was placed if it is an
/// uninstall.
pub async fn run(args: InstallArgs) -> ExitCode {
    let config_yaml = match render(&args) {
        Ok(yaml) => yaml,
        Err(e) => return super::fail(&e),
    };
    if let Err(e) = install(&args, &config_yaml) {
        return super::fail(&e);
    }
    tracing::info!(
        config_dir = %args.config_dir.display(), bin_dir = %args.bin_dir.display(),
        "regcred-credential-provider is in place. The kubelet reads its credential provider config only when it starts: \
         restart the kubelet (with --image-credential-provider-config set to the config directory and \
         --image-credential-provider-bin-dir to the bin directory) for it to take effect"
    );
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return super::fail("cannot wait for SIGTERM");
    };
    let mut tick = tokio::time::interval(CA_POLL);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tick.tick() => refresh_ca(&args),
        }
    }
    let (uninstalling, why) = is_uninstall(&args).await;
    tracing::info!(uninstall = uninstalling, reason = %why, "stopping");
    if uninstalling && let Err(e) = uninstall(&args) {
        return super::fail(&e);
    }
    ExitCode::SUCCESS
}

/// Copies the CA bundle again when its source changed (a rotated CA), if the copy on the node is still the
/// installer's.
fn refresh_ca(args: &InstallArgs) {
    let result = (|| {
        let ca =
            std::fs::read(&args.ca_source).map_err(|e| format!("cannot read {}: {e}", args.ca_source.display()))?;
        let mut manifest = read_manifest(&args.config_dir)?;
        place(&mut manifest, &args.config_dir, &args.config_dir, CA_FILE, &ca, 0o644)
    })();
    match result {
        Ok(true) => tracing::info!(file = %args.config_dir.join(CA_FILE).display(), "CA bundle updated"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "the CA bundle was not updated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> InstallArgs {
        InstallArgs {
            bin_dir: dir.join("bin"),
            config_dir: dir.join("config"),
            source: dir.join("plugin"),
            ca_source: dir.join("ca.crt"),
            service: "regcred".into(),
            server_ip: Some("10.96.0.10".parse().unwrap()),
            port: 8444,
            server_name: "regcred.regcred.svc".into(),
            audience: crate::api::kubelet::DEFAULT_AUDIENCE.into(),
            match_images: vec!["10.250.0.1:5000".into()],
            default_cache_duration: "0s".into(),
            plugin_timeout: "5s".into(),
            daemonset: "regcred-credential-provider".into(),
            namespace: "regcred".into(),
        }
    }

    #[test]
    fn install_places_three_files_and_uninstall_removes_them_unless_the_config_is_the_last_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("regcred-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = args(&dir);
        for d in [&args.bin_dir, &args.config_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&args.source, b"\x7fELF plugin").unwrap();
        std::fs::write(&args.ca_source, b"-----BEGIN CERTIFICATE-----").unwrap();
        let yaml = render(&args).unwrap();
        assert!(
            yaml.contains("https://10.96.0.10:8444") && yaml.contains("regcred-credential-provider-ca.crt"),
            "{yaml}"
        );
        install(&args, &yaml).unwrap();
        let mode = std::fs::metadata(args.bin_dir.join(BINARY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Again: nothing changes, nothing refused.
        install(&args, &yaml).unwrap();

        // The only config of the directory: uninstall keeps everything (the kubelet would not start).
        uninstall(&args).unwrap();
        assert!(args.config_dir.join(CONFIG_FILE).exists() && args.bin_dir.join(BINARY).exists());
        // With another provider's config beside it, it removes its own files and its record, and nothing else.
        std::fs::write(
            args.config_dir.join("ecr.yaml"),
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders: []\n",
        )
        .unwrap();
        uninstall(&args).unwrap();
        let left: Vec<String> = std::fs::read_dir(&args.config_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["ecr.yaml"]);
        assert!(!args.bin_dir.join(BINARY).exists());

        // A binary someone else put there is neither overwritten nor removed.
        std::fs::write(args.bin_dir.join(BINARY), b"theirs").unwrap();
        assert!(install(&args, &yaml).unwrap_err().contains("not written by regcred's installer"));
        assert_eq!(std::fs::read(args.bin_dir.join(BINARY)).unwrap(), b"theirs");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_the_kubelet_would_refuse_is_never_written() {
        let dir = std::env::temp_dir().join(format!("regcred-install-bad-{}", std::process::id()));
        let mut args = args(&dir);
        args.match_images = vec!["https://ghcr.io".into()];
        args.default_cache_duration = "1d".into();
        let err = render(&args).unwrap_err();
        assert!(
            err.contains("matchImages `https://ghcr.io`: no scheme") && err.contains("defaultCacheDuration `1d`"),
            "{err}"
        );
        args.server_ip = None;
        args.service = "regcred-missing-svc".into();
        assert!(render(&args).unwrap_err().contains("REGCRED_MISSING_SVC_SERVICE_HOST is not set"));
    }
}
