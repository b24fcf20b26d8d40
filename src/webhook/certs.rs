//! Serving certificates for the webhook: self-managed (a CA and a serving certificate kept in a Secret in
//! regcred's namespace, shared by every replica) or read from files (cert-manager) and reloaded when they change.
//!
//! Rotation never drops a request. The CA is replaced at two thirds of its life, and the new CA joins the
//! webhook's `caBundle` beside the old one before any certificate it signed is served. The serving certificate
//! is replaced at two thirds of its life, by a CA that has been in the bundle for at least [`PROPAGATION`], and
//! hot-swapped in the TLS acceptor (connections already open keep theirs).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long a new CA stays in the published bundle before it may sign the certificate being served: time for
/// the apiserver to see the new `caBundle`.
pub const PROPAGATION: Duration = Duration::from_secs(10);
/// The CA lives this many times as long as the serving certificates it signs.
pub const CA_LIFETIME_FACTOR: u32 = 8;

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const PREVIOUS_CA_CRT: &str = "previous-ca.crt";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_NOT_AFTER: &str = "regcred.dev/ca-not-after";
const CA_SINCE: &str = "regcred.dev/ca-since";
const CERT_NOT_AFTER: &str = "regcred.dev/cert-not-after";
const CERT_DNS_NAMES: &str = "regcred.dev/cert-dns-names";

/// Certificate errors.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate lifetime out of range")]
    Lifetime,
}

/// Everything the webhook's TLS needs, as stored in the Secret. Never logged: no Debug.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub ca_crt: String,
    pub ca_key: String,
    pub previous_ca_crt: Option<String>,
    pub tls_crt: String,
    pub tls_key: String,
    pub ca_not_after: Timestamp,
    /// When this CA entered the bundle.
    pub ca_since: Timestamp,
    pub cert_not_after: Timestamp,
    pub dns_names: Vec<String>,
}

impl Material {
    /// The PEM bundle the webhook configuration must trust: the current CA and, during a CA rotation, the previous.
    pub fn ca_bundle(&self) -> String {
        let mut bundle = self.ca_crt.clone();
        if let Some(prev) = &self.previous_ca_crt {
            bundle.push_str(prev);
        }
        bundle
    }

    /// Reads the material from its Secret; `None` if anything is missing or unreadable (it is then regenerated).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
        let ann = secret.metadata.annotations.as_ref()?;
        let time = |k: &str| ann.get(k).and_then(|v| v.parse::<Timestamp>().ok());
        Some(Self {
            ca_crt: text(CA_CRT)?,
            ca_key: text(CA_KEY)?,
            previous_ca_crt: text(PREVIOUS_CA_CRT),
            tls_crt: text(TLS_CRT)?,
            tls_key: text(TLS_KEY)?,
            ca_not_after: time(CA_NOT_AFTER)?,
            ca_since: time(CA_SINCE)?,
            cert_not_after: time(CERT_NOT_AFTER)?,
            dns_names: ann.get(CERT_DNS_NAMES)?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        })
    }

    /// The Secret holding this material (type `kubernetes.io/tls`, so tools recognise it).
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let mut data = BTreeMap::from([
            (CA_CRT.to_owned(), ByteString(self.ca_crt.clone().into_bytes())),
            (CA_KEY.to_owned(), ByteString(self.ca_key.clone().into_bytes())),
            (TLS_CRT.to_owned(), ByteString(self.tls_crt.clone().into_bytes())),
            (TLS_KEY.to_owned(), ByteString(self.tls_key.clone().into_bytes())),
        ]);
        if let Some(prev) = &self.previous_ca_crt {
            data.insert(PREVIOUS_CA_CRT.to_owned(), ByteString(prev.clone().into_bytes()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    crate::names::MANAGED_BY_LABEL.to_owned(),
                    "regcred-webhook".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (CA_NOT_AFTER.to_owned(), self.ca_not_after.to_string()),
                    (CA_SINCE.to_owned(), self.ca_since.to_string()),
                    (CERT_NOT_AFTER.to_owned(), self.cert_not_after.to_string()),
                    (CERT_DNS_NAMES.to_owned(), self.dns_names.join(",")),
                ])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// What the material needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing usable: a new CA and certificate.
    Bootstrap,
    /// The CA is two thirds through its life: a new CA joins the bundle; the certificate stays for now.
    RotateCa,
    /// The certificate is two thirds through its life (or names the wrong hosts): a new one from the current CA.
    RotateCert,
    Nothing,
}

/// Decides the next step. Pure: `now` and the lifetimes are inputs.
pub fn next_step(material: Option<&Material>, now: Timestamp, cert_lifetime: Duration, dns_names: &[String]) -> Step {
    let Some(m) = material else { return Step::Bootstrap };
    let remaining = |until: Timestamp| now.duration_until(until).as_secs_f64();
    let lifetime = cert_lifetime.as_secs_f64();
    let ca_lifetime = lifetime * f64::from(CA_LIFETIME_FACTOR);
    if remaining(m.ca_not_after) <= 0.0 || remaining(m.cert_not_after) <= 0.0 {
        return Step::Bootstrap;
    }
    if remaining(m.ca_not_after) < ca_lifetime / 3.0 && m.previous_ca_crt.is_none() {
        return Step::RotateCa;
    }
    let cert_due = remaining(m.cert_not_after) < lifetime / 3.0 || m.dns_names != dns_names;
    let ca_published = now.duration_since(m.ca_since).as_secs_f64() >= PROPAGATION.as_secs_f64();
    if cert_due && ca_published {
        return Step::RotateCert;
    }
    Step::Nothing
}

/// Applies `step` to the material, generating keys as needed.
pub fn apply(
    step: Step,
    material: Option<&Material>,
    now: Timestamp,
    cert_lifetime: Duration,
    dns_names: &[String],
) -> Result<Option<Material>, CertError> {
    let ca_lifetime = cert_lifetime.checked_mul(CA_LIFETIME_FACTOR).ok_or(CertError::Lifetime)?;
    match (step, material) {
        (Step::Nothing, _) => Ok(None),
        (Step::Bootstrap, _) | (_, None) => {
            let (ca_crt, ca_key, ca_not_after) = new_ca(now, ca_lifetime)?;
            let (tls_crt, tls_key, cert_not_after) =
                issue(&ca_crt, &ca_key, ca_not_after, now, cert_lifetime, dns_names)?;
            Ok(Some(Material {
                ca_crt,
                ca_key,
                previous_ca_crt: None,
                tls_crt,
                tls_key,
                ca_not_after,
                ca_since: now,
                cert_not_after,
                dns_names: dns_names.to_vec(),
            }))
        }
        (Step::RotateCa, Some(m)) => {
            let (ca_crt, ca_key, ca_not_after) = new_ca(now, ca_lifetime)?;
            Ok(Some(Material {
                previous_ca_crt: Some(m.ca_crt.clone()),
                ca_crt,
                ca_key,
                ca_not_after,
                ca_since: now,
                ..m.clone()
            }))
        }
        (Step::RotateCert, Some(m)) => {
            let (tls_crt, tls_key, cert_not_after) =
                issue(&m.ca_crt, &m.ca_key, m.ca_not_after, now, cert_lifetime, dns_names)?;
            // Every certificate in service is now signed by the current CA: the previous one can leave the bundle.
            Ok(Some(Material {
                tls_crt,
                tls_key,
                cert_not_after,
                previous_ca_crt: None,
                dns_names: dns_names.to_vec(),
                ..m.clone()
            }))
        }
    }
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| CertError::Lifetime)
}

fn add(now: Timestamp, d: Duration) -> Result<Timestamp, CertError> {
    let d = jiff::SignedDuration::try_from(d).map_err(|_| CertError::Lifetime)?;
    now.checked_add(d).map_err(|_| CertError::Lifetime)
}

fn new_ca(now: Timestamp, lifetime: Duration) -> Result<(String, String, Timestamp), CertError> {
    let not_after = add(now, lifetime)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("regcred webhook CA {}", now.as_second()));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // Backdated a minute for clock skew between replicas and the apiserver.
    params.not_before = offset(now)? - time::Duration::minutes(1);
    params.not_after = offset(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

fn issue(
    ca_crt: &str,
    ca_key: &str,
    ca_not_after: Timestamp,
    now: Timestamp,
    lifetime: Duration,
    dns_names: &[String],
) -> Result<(String, String, Timestamp), CertError> {
    let not_after = add(now, lifetime)?.min(ca_not_after);
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt, ca_key)?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_else(|| "regcred-webhook".into()));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = offset(now)? - time::Duration::minutes(1);
    params.not_after = offset(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["regcred-webhook.regcred-system.svc".into(), "127.0.0.1".into()]
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_lifecycle_rotates_cert_then_ca_and_never_serves_an_unpublished_ca() {
        let life = Duration::from_secs(90);
        let dns = names();
        let m = apply(Step::Bootstrap, None, at(0), life, &dns).unwrap().unwrap();
        assert!(Material::from_secret(&m.to_secret("s", "ns")).is_some_and(|back| back == m), "round-trips");
        assert_eq!(next_step(Some(&m), at(10), life, &dns), Step::Nothing);
        // Two thirds of the certificate's life: a new certificate from the same CA.
        assert_eq!(next_step(Some(&m), at(61), life, &dns), Step::RotateCert);
        // Other host names: a new certificate.
        assert_eq!(next_step(Some(&m), at(10), life, &["other".into()]), Step::RotateCert);
        // Two thirds of the CA's life (8 x 90 s): a new CA joins the bundle.
        let mut m = m;
        m.cert_not_after = at(700);
        assert_eq!(next_step(Some(&m), at(481), life, &dns), Step::RotateCa);
        let rotated = apply(Step::RotateCa, Some(&m), at(481), life, &dns).unwrap().unwrap();
        assert!(rotated.ca_bundle().contains(&m.ca_crt) && rotated.ca_bundle().contains(&rotated.ca_crt));
        assert_eq!(rotated.tls_crt, m.tls_crt, "the served certificate stays until the new CA is published");
        // Even when the certificate is due, the new CA signs only once it has been published long enough.
        let mut due = rotated.clone();
        due.cert_not_after = at(500);
        assert_eq!(next_step(Some(&due), at(485), life, &dns), Step::Nothing);
        assert_eq!(next_step(Some(&due), at(492), life, &dns), Step::RotateCert);
        let reissued = apply(Step::RotateCert, Some(&due), at(492), life, &dns).unwrap().unwrap();
        assert_eq!(reissued.previous_ca_crt, None, "the old CA leaves the bundle once nothing it signed is served");
        // Anything expired starts over.
        assert_eq!(next_step(Some(&reissued), at(100_000), life, &dns), Step::Bootstrap);
    }

    #[test]
    fn issued_certificates_are_accepted_by_rustls_as_signed_by_the_bundle() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        crate::install_crypto_provider();
        let m = apply(Step::Bootstrap, None, Timestamp::now(), Duration::from_secs(3600), &names()).unwrap().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(m.ca_bundle().as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into()).build().unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(m.tls_crt.as_bytes()).map(Result::unwrap).collect();
        let name = ServerName::try_from("regcred-webhook.regcred-system.svc").unwrap();
        verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now()).unwrap();
    }

    #[test]
    fn unreadable_secrets_are_regenerated_not_trusted() {
        let secret = Secret::default();
        assert!(Material::from_secret(&secret).is_none());
        assert_eq!(next_step(None, at(0), Duration::from_secs(60), &names()), Step::Bootstrap);
    }
}
