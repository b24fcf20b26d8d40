//! Which namespaces a profile selects. Pure: the namespaces are plain data from the state layer's view.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::core::{Expression, Selector};

use crate::api::NamespaceSelection;
use crate::glob::glob_match;

/// Namespaces never selected unless a profile names them exactly (the operator's own is added at run time).
pub const PROTECTED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// What the selection needs to know about a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: nothing can be created in it any more.
    pub terminating: bool,
}

/// Whether a profile's `serviceAccounts.names` name this account (`*` globs): the one rule for ServiceAccount mode
/// and for the kubelet's credential provider.
pub fn names_match(patterns: &[String], account: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, account))
}

/// A namespace's labels, however they are stored: a map, or the compact cache's sorted pairs.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Pairs sorted by key, as [`crate::state::namespaces`] keeps them.
impl Labels for [(Arc<str>, Arc<str>)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self[i].1)
    }
}

/// Whether `labels` satisfy one requirement of a label selector (Kubernetes' semantics: `NotIn` and `!=` hold
/// when the key is absent).
fn satisfies(expression: &Expression, labels: &(impl Labels + ?Sized)) -> bool {
    match expression {
        Expression::In(key, values) => labels.label(key).is_some_and(|v| values.contains(v)),
        Expression::NotIn(key, values) => labels.label(key).is_none_or(|v| !values.contains(v)),
        Expression::Equal(key, value) => labels.label(key) == Some(value.as_str()),
        Expression::NotEqual(key, value) => labels.label(key) != Some(value.as_str()),
        Expression::Exists(key) => labels.label(key).is_some(),
        Expression::DoesNotExist(key) => labels.label(key).is_none(),
    }
}

/// A namespace selection, compiled once per profile generation (see [`super::Meaning`]).
#[derive(Debug, Clone)]
pub struct CompiledSelection {
    /// The label selector's requirements, all of which must hold (none: select every namespace).
    selector: Option<Vec<Expression>>,
    names: Vec<String>,
    exclude: Vec<String>,
    operator_namespace: String,
}

/// The label selector could not be understood (an unknown operator, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid namespace selector: {0}")]
pub struct InvalidSelector(pub String);

impl CompiledSelection {
    /// Compiles a profile's selection; `operator_namespace` is protected like `kube-system`.
    pub fn new(spec: &NamespaceSelection, operator_namespace: &str) -> Result<Self, InvalidSelector> {
        let selector = spec
            .selector
            .clone()
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| InvalidSelector(e.to_string()))?
            .map(|s| s.into_iter().collect());
        Ok(Self {
            selector,
            names: spec.names.clone(),
            exclude: spec.exclude.clone(),
            operator_namespace: operator_namespace.to_owned(),
        })
    }

    /// Whether the namespace receives the profile's Secret.
    pub fn selects(&self, ns: &NamespaceInfo) -> bool {
        self.selects_parts(&ns.name, &ns.labels, ns.terminating)
    }

    /// [`CompiledSelection::selects`] over borrowed parts: a reconcile runs it over every cached namespace.
    pub fn selects_parts(&self, name: &str, labels: &(impl Labels + ?Sized), terminating: bool) -> bool {
        if terminating || self.exclude.iter().any(|g| glob_match(g, name)) {
            return false;
        }
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        if PROTECTED_NAMESPACES.contains(&name) || name == self.operator_namespace {
            return false;
        }
        self.names.iter().any(|g| glob_match(g, name))
            || self.selector.as_ref().is_some_and(|s| s.iter().all(|e| satisfies(e, labels)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use crate::fixtures::namespace_info as ns;

    fn sel(selector: Option<LabelSelector>, names: &[&str], exclude: &[&str]) -> NamespaceSelection {
        NamespaceSelection {
            selector,
            names: names.iter().map(|s| (*s).into()).collect(),
            exclude: exclude.iter().map(|s| (*s).into()).collect(),
        }
    }

    #[allow(clippy::unnecessary_wraps)]
    fn all() -> Option<LabelSelector> {
        Some(LabelSelector::default())
    }

    #[test]
    fn empty_selector_selects_all_but_protected_namespaces() {
        let spec = sel(all(), &[], &[]);
        let c = CompiledSelection::new(&spec, "regcred-system").unwrap();
        assert!(c.selects(&ns("default", &[])));
        assert!(c.selects(&ns("team-a", &[])));
        for protected in ["kube-system", "kube-public", "kube-node-lease", "regcred-system"] {
            assert!(!c.selects(&ns(protected, &[])), "{protected}");
        }
    }

    #[test]
    fn protected_namespaces_need_their_exact_name() {
        let globbed = sel(None, &["kube-*", "*"], &[]);
        let c = CompiledSelection::new(&globbed, "regcred-system").unwrap();
        assert!(!c.selects(&ns("kube-system", &[])));
        assert!(c.selects(&ns("kubeflow", &[])));
        let exact = sel(None, &["kube-system", "regcred-system"], &[]);
        let c = CompiledSelection::new(&exact, "regcred-system").unwrap();
        assert!(c.selects(&ns("kube-system", &[])));
        assert!(c.selects(&ns("regcred-system", &[])));
    }

    #[test]
    fn labels_names_and_excludes_combine() {
        let spec = sel(
            Some(LabelSelector {
                match_labels: Some([("pull".to_string(), "yes".to_string())].into()),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["sandbox".into()]),
                }]),
            }),
            &["legacy-*"],
            &["*-tmp"],
        );
        let c = CompiledSelection::new(&spec, "regcred").unwrap();
        assert!(c.selects(&ns("a", &[("pull", "yes")])));
        assert!(!c.selects(&ns("b", &[("pull", "yes"), ("tier", "sandbox")])));
        assert!(!c.selects(&ns("c", &[("pull", "no")])));
        assert!(c.selects(&ns("legacy-shop", &[])));
        assert!(!c.selects(&ns("legacy-tmp", &[])));
        assert!(!c.selects(&ns("x-tmp", &[("pull", "yes")])));
    }

    #[test]
    fn exclude_wins_even_over_exact_names_and_terminating_namespaces_are_skipped() {
        let spec = sel(None, &["shop"], &["shop"]);
        assert!(!CompiledSelection::new(&spec, "r").unwrap().selects(&ns("shop", &[])));
        let spec = sel(all(), &[], &[]);
        let mut n = ns("going", &[]);
        n.terminating = true;
        assert!(!CompiledSelection::new(&spec, "r").unwrap().selects(&n));
    }

    /// The matcher over compact labels agrees with kube's own over maps, for every operator, present or absent.
    #[test]
    fn label_matching_agrees_with_kube_for_maps_and_compact_pairs() {
        use kube::core::SelectorExt;
        let set = |vs: &[&str]| vs.iter().map(|v| (*v).to_owned()).collect();
        let expressions = [
            Expression::In("tier".into(), set(&["web", "api"])),
            Expression::NotIn("tier".into(), set(&["sandbox"])),
            Expression::Equal("team".into(), "a".into()),
            Expression::NotEqual("team".into(), "a".into()),
            Expression::Exists("pull".into()),
            Expression::DoesNotExist("pull".into()),
        ];
        let label_sets: [&[(&str, &str)]; 6] = [
            &[],
            &[("tier", "web")],
            &[("tier", "sandbox"), ("team", "a")],
            &[("pull", ""), ("team", "b"), ("tier", "api")],
            &[("a", "1"), ("pull", "yes"), ("team", "a"), ("z", "2")],
            &[("team", "ab")],
        ];
        for labels in label_sets {
            let map: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            let pairs: Vec<(Arc<str>, Arc<str>)> =
                map.iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
            for e in &expressions {
                let kube = e.matches(&map);
                assert_eq!(satisfies(e, &map), kube, "{e} on {labels:?} (map)");
                assert_eq!(satisfies(e, pairs.as_slice()), kube, "{e} on {labels:?} (pairs)");
            }
        }
    }

    #[test]
    fn an_invalid_selector_is_an_error_not_a_panic() {
        let spec = sel(
            Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Near".into(),
                    values: None,
                }]),
            }),
            &[],
            &[],
        );
        assert!(CompiledSelection::new(&spec, "r").is_err());
    }
}
