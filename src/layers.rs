//! The layering of the crate's modules, checked: every `crate::` path in a module's code (comments and test code
//! aside: test modules, module files named `tests.rs` and the [`TEST_ONLY`] modules) names a module of a lower
//! layer, so there is no import cycle and no layer reaches into one above it. The docs' Architecture page
//! (docs/architecture.md) draws the same order, and their Layout (docs/contributing/layout.md) lists every folder
//! (checked below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, lowest layer first; modules on one line may not use each other.
const LAYERS: &[&[&str]] = &[
    &["api", "glob", "client", "quantity"],
    &["names", "registry"],
    &["config"],
    &["telemetry", "memory", "metrics", "kubelet_plugin"],
    &["credentials"],
    &["resolve"],
    &["state"],
    &["secrets"],
    &["images"],
    &["controller", "webhook"],
    &["operator"],
    &["cli"],
];

/// Test code, set aside like the test modules: the fixtures exist only in test builds (`cfg(test)` or the feature
/// `fixtures`), so no layer's own code can use them (`cargo build` would fail), and the tests of every layer may.
const TEST_ONLY: &[&str] = &["fixtures"];

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
            let test_file = path.file_name() == Some("tests.rs".as_ref());
            if ["lib", "main", "layers"].contains(&module.as_str()) || TEST_ONLY.contains(&module.as_str()) || test_file
            {
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
                        if !name.is_empty() && name != module && !TEST_ONLY.contains(&name.as_str()) {
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
        for name in used {
            match rank(name) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!("{module} uses {name}, which is not below it")),
                None => wrong.push(format!("{module} uses {name}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}\n(the graph: {graph:#?})", wrong.join("\n"));
}

/// The order as the docs' Architecture draws it: the top layer first, modules of one layer side by side.
fn diagram() -> String {
    LAYERS.iter().rev().map(|layer| layer.join(" · ")).collect::<Vec<_>>().join(" ─► ")
}

/// The section of the docs page `page` (relative to the project's root) under `heading`, up to the next heading of
/// the same or a higher level.
fn section(page: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).unwrap();
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("{page} has no {heading:?}"));
    let body = &text[start + heading.len() + 2..];
    let end = body
        .match_indices("\n#")
        .find(|(i, _)| body[i + 1..].chars().take_while(|c| *c == '#').count() <= level)
        .map_or(body.len(), |(i, _)| i);
    body[..end].to_owned()
}

/// Every folder of the project (hidden ones, build output and local state aside), relative to its root.
fn folders() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || name.starts_with('.') || name == "target" {
                continue;
            }
            found.push(entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            stack.push(entry.path());
        }
    }
    found.sort();
    found
}

/// The map a newcomer reads says what the code says: the docs' Architecture draws the order of [`LAYERS`] and
/// names every module in it, and their Layout names every folder (a nested one in its parent's row).
#[test]
fn the_docs_draw_these_layers_and_list_every_folder() {
    let architecture = section("docs/architecture.md", "## Layers");
    let mut wrong = Vec::new();
    if !architecture.contains(&diagram()) {
        wrong.push(format!("the Architecture's layer line is not the order in src/layers.rs; it is:\n {}", diagram()));
    }
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        if !architecture.contains(&format!("`{module}`")) {
            wrong.push(format!("the Architecture does not say what `{module}` owns"));
        }
    }
    let layout = section("docs/contributing/layout.md", "## Folders");
    let rows: Vec<&str> = layout.lines().filter(|l| l.starts_with('|')).collect();
    for folder in folders() {
        let (top, name) = (folder.split('/').next().unwrap(), folder.rsplit('/').next().unwrap());
        let listed = rows.iter().any(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            first.contains(&format!("`{folder}`"))
                || first.contains(&format!("`{folder}/`"))
                || (first.contains(&format!("`{top}"))
                    && (row.contains(&format!("`{name}")) || row.contains(&format!(" {name}/"))))
        });
        if !listed {
            wrong.push(format!("the Layout does not list {folder}/"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
