//! Debian's docker-registry (distribution 2.8) started for a test: TLS from a test CA, and either htpasswd (Basic)
//! or token authentication behind the small token server in `tests/fixtures/token_server.py`. Tests push their own
//! images through the distribution API.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::process::{Child, Command};

use super::{free_port, repo_root, suffix, wait_for};

pub const USER: &str = "puller";
pub const PASSWORD: &str = "correct-horse";

/// How the registry authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// htpasswd: a Basic challenge.
    Basic,
    /// A Bearer challenge: clients get a token from the token server (HTTPS) with their Basic credentials.
    Token,
    /// [`Auth::Token`] with a token server on plain `http://`: a realm that must never receive credentials.
    TokenOverHttp,
}

/// A running registry. Stopped when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA that signed the registry's certificate (PEM).
    pub ca_pem: String,
    pub auth: Auth,
    pub dir: PathBuf,
    host: String,
    registry: Option<Child>,
    /// The token server, its port and its URL scheme.
    token_server: Option<(Child, u16, &'static str)>,
    config: PathBuf,
    /// Another CA the test's pushes trust (a token realm on another server).
    realm_ca: Option<String>,
}

fn venv_python() -> PathBuf {
    let venv = std::env::var("REGCRED_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/regcred/venv"));
    venv.join("bin/python")
}

/// A CA and a certificate it signs for `host`: (ca pem, cert pem, key pem).
pub fn tls_material(host: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "regcred test registry CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Writes `dir/htpasswd` with `USER` and a bcrypt hash of `password`.
fn write_htpasswd(dir: &std::path::Path, password: &str) {
    let out = std::process::Command::new(venv_python())
        .args([
            "-c",
            "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(4)).decode())",
            USER,
            password,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "bcrypt: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
}

impl Registry {
    /// Starts a registry with `auth` on a free loopback port and waits until it answers.
    pub async fn start(auth: Auth) -> Self {
        Self::start_at(auth, "127.0.0.1").await
    }

    /// As [`Registry::start`], listening on `host` (an address of this machine, such as the host's end of the
    /// local node's link, where the node's container runtime reaches it).
    pub async fn start_at(auth: Auth, host: &str) -> Self {
        Self::start_with(auth, host, None).await
    }

    /// A registry on `host` whose tokens come from somewhere else: `realm` (a token endpoint that signs for
    /// `service` with the certificate at `signer`). Basic `USER`/`PASSWORD` must get push access there.
    pub async fn start_behind(
        host: &str,
        realm: &str,
        realm_ca: &str,
        service: &str,
        signer: &std::path::Path,
    ) -> Self {
        let external = json!({"token": {
            "realm": realm, "service": service, "issuer": "regcred-test-cloud", "rootcertbundle": signer,
        }});
        let mut registry = Self::start_with(Auth::Token, host, Some(external)).await;
        registry.realm_ca = Some(realm_ca.to_owned());
        registry
    }

    async fn start_with(auth: Auth, host: &str, external: Option<Value>) -> Self {
        assert!(
            std::process::Command::new("docker-registry").arg("--version").output().is_ok(),
            "docker-registry is missing: apt-get install docker-registry (.ci/run installs it)"
        );
        let dir = std::env::temp_dir().join("regcred-tests").join(format!("registry-{}", suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, cert_pem, key_pem) = tls_material(host);
        std::fs::write(dir.join("tls.crt"), &cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &key_pem).unwrap();
        let port = free_port();
        let mut token_server = None;
        write_htpasswd(&dir, PASSWORD);
        let auth_config = match auth {
            _ if external.is_some() => external.unwrap_or_default(),
            Auth::Basic => json!({"htpasswd": {"realm": "regcred-test", "path": dir.join("htpasswd")}}),
            Auth::Token | Auth::TokenOverHttp => {
                let scheme = if auth == Auth::Token { "https" } else { "http" };
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                params.distinguished_name.push(rcgen::DnType::CommonName, "regcred test token signer");
                let cert = params.self_signed(&key).unwrap();
                std::fs::write(dir.join("signer.crt"), cert.pem()).unwrap();
                std::fs::write(dir.join("signer.key"), key.serialize_pem()).unwrap();
                let token_port = free_port();
                let child = Command::new(venv_python())
                    .arg(repo_root().join("tests/fixtures/token_server.py"))
                    .arg(token_port.to_string())
                    .arg(dir.join("signer.crt"))
                    .arg(dir.join("signer.key"))
                    .args(["regcred-test-issuer", USER, PASSWORD, host])
                    .args(if auth == Auth::Token { vec![dir.join("tls.crt"), dir.join("tls.key")] } else { vec![] })
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("token-server.log")).unwrap())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                token_server = Some((child, token_port, scheme));
                json!({"token": {
                    "realm": format!("{scheme}://{host}:{token_port}/token"),
                    "service": "regcred-test-registry",
                    "issuer": "regcred-test-issuer",
                    "rootcertbundle": dir.join("signer.crt"),
                }})
            }
        };
        let config = json!({
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": false}},
            "storage": {"filesystem": {"rootdirectory": dir.join("data")}, "delete": {"enabled": true}},
            "http": {
                "addr": format!("{host}:{port}"),
                "tls": {"certificate": dir.join("tls.crt"), "key": dir.join("tls.key")},
            },
            "auth": auth_config,
        });
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        let mut registry = Self {
            addr: format!("{host}:{port}"),
            host: host.to_owned(),
            ca_pem,
            auth,
            dir,
            registry: None,
            token_server,
            config: config_path,
            realm_ca: None,
        };
        registry.resume().await;
        registry
    }

    /// Starts (again) the registry process and waits until `/v2/` answers.
    pub async fn resume(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.registry = Some(child);
        let http = self.http();
        let url = format!("https://{}/v2/", self.addr);
        // Each waits for its own server's answer, not any: a server that failed to bind its port must not pass
        // for one that did not.
        wait_for("the registry to answer", Duration::from_secs(30), || async {
            let response = http.get(&url).send().await.ok()?;
            response.headers().contains_key("docker-distribution-api-version").then_some(())
        })
        .await;
        if let Some((_, port, scheme)) = &self.token_server {
            let count = format!("{scheme}://{}:{port}/count", self.host);
            wait_for("the token server to answer", Duration::from_secs(30), || async {
                let body: Value = http.get(&count).send().await.ok()?.json().await.ok()?;
                body.get("requests").map(|_| ())
            })
            .await;
        }
    }

    /// The CAs a client of this registry trusts: its own, and its token realm's when that is elsewhere.
    pub fn trusted_pem(&self) -> String {
        format!("{}{}", self.ca_pem, self.realm_ca.as_deref().unwrap_or_default())
    }

    /// Changes `USER`'s password (htpasswd) and restarts the registry, which reads the file when it starts: from
    /// then on only `password` is accepted.
    pub async fn set_password(&mut self, password: &str) {
        assert_eq!(self.auth, Auth::Basic, "only the htpasswd registry rotates passwords");
        write_htpasswd(&self.dir, password);
        self.stop().await;
        self.resume().await;
    }

    /// Stops the registry process (the token server keeps running).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.registry.take() {
            child.kill().await.unwrap();
        }
    }

    fn http(&self) -> reqwest::Client {
        regcred::install_crypto_provider();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    /// The status of `GET /v2/` with `USER` and `password` (Basic), straight to the registry.
    pub async fn v2_status(&self, password: &str) -> u16 {
        let url = format!("https://{}/v2/", self.addr);
        self.http().get(url).basic_auth(USER, Some(password)).send().await.unwrap().status().as_u16()
    }

    /// Requests regcred (by its user agent) has made to the registry so far: distinct request ids in its log.
    pub fn requests(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        let ids: std::collections::BTreeSet<&str> = log
            .lines()
            .filter(|l| l.contains("useragent=regcred/"))
            .filter_map(|l| l.split("http.request.id=").nth(1)?.split_whitespace().next())
            .collect();
        ids.len()
    }

    /// The requests regcred has made so far, to the registry and to its token server, once the registry has logged
    /// every one it has answered. It logs each a moment after its answer, so this sends a marker request of its own
    /// after them and waits until the log holds it: what was answered before the marker was even sent is logged
    /// by then. The token server counts as it answers.
    pub async fn settled_requests(&self) -> (usize, usize) {
        let marker = format!("/v2/regcred-tests-marker-{}/tags/list", suffix());
        // Refused (no credentials), and logged like any request.
        let _ = self.http().get(format!("https://{}{marker}", self.addr)).send().await.unwrap();
        let log = self.dir.join("registry.log");
        wait_for("the registry to log the marker request", Duration::from_secs(10), || async {
            std::fs::read_to_string(&log).ok()?.contains(&marker).then_some(())
        })
        .await;
        (self.requests(), self.token_requests().await)
    }

    /// Requests the token server has answered so far (0 with Basic auth).
    pub async fn token_requests(&self) -> usize {
        let Some((_, port, scheme)) = &self.token_server else { return 0 };
        let url = format!("{scheme}://{}:{port}/count", self.host);
        let body: Value = self.http().get(url).send().await.unwrap().json().await.unwrap();
        body["requests"].as_u64().unwrap() as usize
    }

    fn client(&self) -> oci_client::Client {
        regcred::install_crypto_provider();
        oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Https,
            extra_root_certificates: [Some(&self.ca_pem), self.realm_ca.as_ref()]
                .into_iter()
                .flatten()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                })
                .collect(),
            ..Default::default()
        })
    }

    fn reference(&self, repo_tag: &str) -> Reference {
        format!("{}/{repo_tag}", self.addr).parse().unwrap()
    }

    /// Pushes a blob; returns its descriptor (`mediaType`, `digest`, `size`).
    async fn blob(&self, client: &oci_client::Client, repo_tag: &str, media_type: &str, data: Vec<u8>) -> Value {
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&data));
        let size = data.len();
        let reference = self.reference(repo_tag);
        let auth = RegistryAuth::Basic(USER.into(), PASSWORD.into());
        client.auth(&reference, &auth, oci_client::RegistryOperation::Push).await.unwrap();
        client.push_blob(&reference, data, &digest).await.unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": size})
    }

    /// Pushes a manifest under `repo:tag`; returns its descriptor.
    async fn manifest(&self, client: &oci_client::Client, repo_tag: &str, manifest: Value) -> Value {
        let media_type = manifest["mediaType"].as_str().unwrap().to_owned();
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&body));
        let size = body.len();
        let reference = self.reference(repo_tag);
        let auth = RegistryAuth::Basic(USER.into(), PASSWORD.into());
        client.auth(&reference, &auth, oci_client::RegistryOperation::Push).await.unwrap();
        client.push_manifest_raw(&reference, body, HeaderValue::from_str(&media_type).unwrap()).await.unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": size})
    }

    /// Pushes an image with one layer of `layer_size` bytes: a Docker v2 schema 2 manifest when `docker`,
    /// otherwise an OCI manifest. Returns the manifest's descriptor.
    pub async fn push_image(&self, repo_tag: &str, docker: bool, layer_size: usize, arch: &str) -> Value {
        let client = self.client();
        let (manifest_type, config_type, layer_type) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let config = serde_json::to_vec(
            &json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
        )
        .unwrap();
        let layer: Vec<u8> = (0..layer_size).map(|i| (i % 251) as u8).chain(arch.bytes()).collect();
        let config = self.blob(&client, repo_tag, config_type, config).await;
        let layer = self.blob(&client, repo_tag, layer_type, layer).await;
        let manifest = json!({"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": [layer]});
        self.manifest(&client, repo_tag, manifest).await
    }

    /// Pushes an OCI index under `repo:tag` with one small image per architecture (linux).
    pub async fn push_index(&self, repo_tag: &str, arches: &[&str]) -> Vec<Value> {
        let repo = repo_tag.split(':').next().unwrap();
        let mut entries = Vec::new();
        for arch in arches {
            let mut entry = self.push_image(&format!("{repo}:{arch}-only"), false, 64, arch).await;
            entry["platform"] = json!({"os": "linux", "architecture": arch});
            entries.push(entry);
        }
        let client = self.client();
        let index =
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
        self.manifest(&client, repo_tag, index).await;
        entries
    }
}

/// An attacker's listener: counts the TCP connections it accepts (and holds them). Its address, the count, and the
/// task (abort it when done).
pub async fn counting()
-> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (addr, count, task)
}
