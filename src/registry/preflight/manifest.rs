//! Reading manifests, pure: which media types are image manifests, what an index holds for a platform, and
//! whether a manifest's type and size pass a profile's options.

use serde::Deserialize;

use super::phrase::Problem;
use super::{DOCKER_MANIFEST, Failure, ManifestKind, OCI_INDEX, OCI_MANIFEST, Options};

/// The format of an image manifest's media type; `None` for an index or anything that is not an image manifest.
pub(super) fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        DOCKER_MANIFEST => Some(ManifestKind::Docker),
        OCI_MANIFEST => Some(ManifestKind::Oci),
        _ => None,
    }
}

/// The subset of a manifest or index this module reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl Manifest {
    /// The declared media type, or what the shape says when it is omitted (OCI allows that).
    pub(super) fn media_type(&self) -> String {
        match (&self.media_type, &self.manifests) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => OCI_INDEX.into(),
            (None, None) => OCI_MANIFEST.into(),
        }
    }

    pub(super) fn size(&self) -> u64 {
        self.config.as_ref().map_or(0, |c| c.size) + self.layers.iter().flatten().map(|l| l.size).sum::<u64>()
    }

    /// The digest of the index entry for `platform` (`os/arch` matches any variant; `os/arch/variant` only it).
    pub(super) fn entry_for(&self, platform: &str) -> Result<(String, String), Vec<String>> {
        let entries = self.manifests.as_deref().unwrap_or_default();
        let found = entries.iter().filter_map(|e| Some((e, e.platform.as_ref()?))).find(|(_, p)| {
            let name = p.name();
            name == platform || format!("{}/{}", p.os, p.architecture) == platform
        });
        match found {
            Some((e, p)) => Ok((e.digest.clone(), p.name())),
            None => Err(entries.iter().filter_map(|e| e.platform.as_ref().map(Platform::name)).collect()),
        }
    }
}

/// Judges a resolved image manifest against the options.
pub(super) fn judge(media_type: &str, size: u64, options: &Options) -> Option<Failure> {
    let Some(kind) = manifest_kind(media_type) else {
        return Some(Problem::NotAnImageManifest { media_type: media_type.to_owned() }.failure());
    };
    if !options.accepted.is_empty() && !options.accepted.contains(&kind) {
        let accepted = options
            .accepted
            .iter()
            .map(|k| match k {
                ManifestKind::Docker => "Docker v2".to_owned(),
                ManifestKind::Oci => "OCI".to_owned(),
            })
            .collect();
        return Some(Problem::ManifestTypeRefused { media_type: media_type.to_owned(), accepted }.failure());
    }
    match options.max_size {
        Some(max) if size > max => Some(Problem::TooLarge { size, max }.failure()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::preflight::Reason;

    #[test]
    fn manifests_are_judged_by_type_and_size() {
        let opts =
            |accepted: Vec<ManifestKind>, max: Option<u64>| Options { accepted, max_size: max, ..Default::default() };
        assert_eq!(judge(DOCKER_MANIFEST, 10, &opts(vec![], None)), None);
        assert_eq!(judge(OCI_MANIFEST, 10, &opts(vec![ManifestKind::Oci], Some(10))), None);
        let rejected = judge(DOCKER_MANIFEST, 10, &opts(vec![ManifestKind::Oci], None)).unwrap();
        assert_eq!(rejected.reason, Reason::UnsupportedManifestType);
        assert!(rejected.message.contains("accepts only OCI"), "{}", rejected.message);
        assert_eq!(judge(OCI_MANIFEST, 11, &opts(vec![], Some(10))).unwrap().reason, Reason::ImageTooLarge);
        let schema1 = judge("application/vnd.docker.distribution.manifest.v1+prettyjws", 1, &opts(vec![], None));
        assert_eq!(schema1.unwrap().reason, Reason::UnsupportedManifestType);
    }

    #[test]
    fn indexes_resolve_to_the_platform_or_say_what_they_have() {
        let index: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": "sha256:arm", "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": "sha256:amd", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        }))
        .unwrap();
        assert_eq!(index.media_type(), OCI_INDEX);
        assert_eq!(index.entry_for("linux/amd64"), Ok(("sha256:amd".into(), "linux/amd64".into())));
        assert_eq!(index.entry_for("linux/arm64"), Ok(("sha256:arm".into(), "linux/arm64/v8".into())));
        assert_eq!(index.entry_for("linux/arm64/v8").map(|e| e.0), Ok("sha256:arm".into()));
        assert_eq!(index.entry_for("windows/amd64"), Err(vec!["linux/arm64/v8".to_owned(), "linux/amd64".to_owned()]));
        let image: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": "sha256:c", "size": 100},
            "layers": [{"digest": "sha256:l1", "size": 1000}, {"digest": "sha256:l2", "size": 24}],
        }))
        .unwrap();
        assert_eq!((image.media_type().as_str(), image.size()), (OCI_MANIFEST, 1124));
    }
}
