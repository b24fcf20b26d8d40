//! What the node installer places on a node and what it may remove again: the files, the record it keeps of
//! them (the manifest, with each file's SHA-256 as written), and the order of removal on uninstall, decided
//! from plain data so it can be table-tested.
//!
//! The kubelet's rules this follows (kubernetes' pkg/credentialprovider/plugin): with
//! `--image-credential-provider-config` set, a config path that is missing, a directory with no `*.json`,
//! `*.yaml` or `*.yml` file, a config with no provider, and a provider whose binary is missing from
//! `--image-credential-provider-bin-dir` each stop the kubelet at start. So the config goes last on install and
//! first on uninstall, the binary stays while any config names it, and the directory's last config is never
//! removed (the kubelet's flag must go first). Nothing the installer writes but the config ends in one of those
//! extensions: the kubelet would read it as a config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::BINARY;

/// The config file, in the kubelet's config directory.
pub const CONFIG_FILE: &str = "regcred-credential-provider.yaml";
/// The CA bundle, beside the config (an extension the kubelet does not read as config).
pub const CA_FILE: &str = "regcred-credential-provider-ca.crt";
/// The installer's record of what it wrote, beside the config (not `.json`: the kubelet would read it).
pub const MANIFEST_FILE: &str = "regcred-credential-provider.manifest";

/// What the installer wrote: each file's path on the node and the SHA-256 (hex) of what it wrote there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub files: BTreeMap<String, String>,
}

/// Whether a kubelet config directory entry is read by the kubelet as a config.
pub fn is_config_name(name: &str) -> bool {
    std::path::Path::new(name).extension().is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
}

/// Whether the installer may write `path` (whose content is `current`, if it exists) with content `new`: a file it
/// wrote and nobody changed, a missing file, or one already holding exactly `new`. Otherwise, why not.
pub fn may_write(manifest: &Manifest, path: &str, current: Option<&str>, new: &str) -> Result<(), String> {
    match current {
        None => Ok(()),
        Some(sha) if sha == new || manifest.files.get(path).is_some_and(|r| r == sha) => Ok(()),
        Some(_) if manifest.files.contains_key(path) => Err(format!(
            "{path} was changed since regcred's installer wrote it: it is left alone; remove it to let the installer write it again"
        )),
        Some(_) => Err(format!(
            "{path} exists and was not written by regcred's installer: it is left alone; remove it to let the installer write it"
        )),
    }
}

/// One placed file as uninstall finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    /// The SHA-256 recorded when it was written, if it was.
    pub recorded: Option<String>,
    /// The SHA-256 of what is there now, if anything.
    pub current: Option<String>,
}

impl Found {
    fn unchanged(&self) -> bool {
        self.recorded.is_some() && self.recorded == self.current
    }
}

/// What uninstall does with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Remove(String),
    Keep { path: String, why: String },
}

/// The node as uninstall finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub config: Found,
    pub ca: Found,
    pub binary: Found,
    /// Other config files in the config directory (the kubelet's merge of `*.json`, `*.yaml`, `*.yml`).
    pub other_configs: usize,
    /// Whether another config file names regcred's provider (then its binary must stay).
    pub others_name_binary: bool,
}

/// The removals, in order (config, CA, binary), and what is kept and why. A file is removed only if the installer
/// wrote it and it is unchanged; the config is kept when it is the directory's last one; the binary and the CA are
/// kept while a config names them.
pub fn uninstall(node: &Node) -> Vec<Step> {
    let keep = |found: &Found, why: &str| Step::Keep { path: found.path.clone(), why: why.to_owned() };
    let mut steps = Vec::new();
    let config_stays = if node.config.current.is_none() {
        false
    } else if !node.config.unchanged() {
        steps.push(keep(&node.config, "not written by the installer, or changed since"));
        true
    } else if node.other_configs == 0 {
        steps.push(keep(
            &node.config,
            "the directory's only config: a kubelet started with --image-credential-provider-config and no config \
             does not start; remove that flag (and restart the kubelet) first, then this file",
        ));
        true
    } else {
        steps.push(Step::Remove(node.config.path.clone()));
        false
    };
    for (found, what) in [(&node.ca, "the CA bundle"), (&node.binary, "the binary")] {
        if found.current.is_none() {
            continue;
        }
        if config_stays {
            steps.push(keep(found, &format!("{what} of a config that stays")));
        } else if !found.unchanged() {
            steps.push(keep(found, "not written by the installer, or changed since"));
        } else if what == "the binary" && node.others_name_binary {
            steps.push(keep(found, &format!("another config names {BINARY}: the kubelet would not start without it")));
        } else {
            steps.push(Step::Remove(found.path.clone()));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(path: &str, recorded: Option<&str>, current: Option<&str>) -> Found {
        Found { path: path.into(), recorded: recorded.map(Into::into), current: current.map(Into::into) }
    }

    fn node(config: Option<&str>, ca: Option<&str>, binary: Option<&str>, others: usize) -> Node {
        Node {
            config: found("c", Some("c1"), config),
            ca: found("a", Some("a1"), ca),
            binary: found("b", Some("b1"), binary),
            other_configs: others,
            others_name_binary: false,
        }
    }

    fn removed(steps: &[Step]) -> Vec<&str> {
        steps.iter().filter_map(|s| if let Step::Remove(p) = s { Some(p.as_str()) } else { None }).collect()
    }

    #[test]
    fn uninstall_removes_only_unchanged_files_it_wrote_config_first_and_never_the_last_config() {
        let all = Some;
        // Another config remains: all three go, the config first.
        assert_eq!(removed(&uninstall(&node(all("c1"), all("a1"), all("b1"), 1))), ["c", "a", "b"]);
        // The directory's only config: nothing goes (the binary stays with the config naming it).
        let steps = uninstall(&node(all("c1"), all("a1"), all("b1"), 0));
        assert!(removed(&steps).is_empty(), "{steps:?}");
        assert!(matches!(&steps[0], Step::Keep { why, .. } if why.contains("only config")), "{steps:?}");
        // Someone edited the config: it and what it names stay.
        assert!(removed(&uninstall(&node(all("edited"), all("a1"), all("b1"), 3))).is_empty());
        // The config is gone already: the rest goes, but not a binary someone replaced.
        assert_eq!(removed(&uninstall(&node(None, all("a1"), all("other"), 0))), ["a"]);
        // Another config names regcred's provider: its binary stays.
        let mut shared = node(all("c1"), all("a1"), all("b1"), 1);
        shared.others_name_binary = true;
        assert_eq!(removed(&uninstall(&shared)), ["c", "a"]);
        // A file the installer never recorded is never removed.
        let mut unrecorded = node(None, all("a1"), all("b1"), 0);
        unrecorded.binary.recorded = None;
        assert_eq!(removed(&uninstall(&unrecorded)), ["a"]);
    }

    #[test]
    fn the_installer_writes_only_over_its_own_unchanged_files() {
        let manifest = Manifest { files: BTreeMap::from([("p".to_owned(), "old".to_owned())]) };
        assert_eq!(may_write(&manifest, "p", None, "new"), Ok(()));
        assert_eq!(may_write(&manifest, "p", Some("old"), "new"), Ok(()));
        assert_eq!(may_write(&manifest, "q", Some("new"), "new"), Ok(()), "the same content changes nothing");
        assert!(may_write(&manifest, "p", Some("edited"), "new").unwrap_err().contains("changed since"));
        assert!(may_write(&manifest, "q", Some("theirs"), "new").unwrap_err().contains("not written by"));
        assert!(is_config_name("a.yaml") && is_config_name(".x.json") && !is_config_name(MANIFEST_FILE));
        assert!(!is_config_name(CA_FILE) && is_config_name(CONFIG_FILE));
    }
}
