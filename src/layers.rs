//! The layering of the crate's modules, checked: every `crate::` path in a module's code (comments and test
//! modules aside) names a module of a lower layer, so there is no import cycle and no layer reaches into one
//! above it. The table in `lib.rs` and the README's Architecture section describe the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, lowest layer first; modules on one line may not use each other.
const LAYERS: &[&[&str]] = &[
    &["api", "glob", "client"],
    &["names", "registry"],
    &["config"],
    &["telemetry", "memory"],
    &["credentials"],
    &["resolve"],
    &["state"],
    &["secrets"],
    &["images"],
    &["webhook"],
    &["metrics"],
    &["controller"],
    &["errors"],
    &["cli"],
];

/// The crate root's own items (`crate::run`, `crate::install_crypto_provider`): below nothing, usable by all.
const ROOT_ITEMS: &[&str] = &["install_crypto_provider", "run"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The modules each top-level module's code names through `crate::`.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
            if ["lib", "main", "layers"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                        None => vec![rest],
                    };
                    for name in names {
                        let name: String =
                            name.trim().chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                        if !name.is_empty() && name != module {
                            graph.entry(module.clone()).or_default().insert(name);
                        }
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let graph = uses();
    assert!(graph.len() > 8, "the source tree was not read: {graph:?}");
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(own) = rank(module) else {
            wrong.push(format!("{module} is in no layer: add it to LAYERS"));
            continue;
        };
        for name in used.iter().filter(|n| !ROOT_ITEMS.contains(&n.as_str())) {
            match rank(name) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!("{module} uses {name}, which is not below it")),
                None => wrong.push(format!("{module} uses {name}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n(the graph: {graph:#?})", wrong.join("\n"));
}
