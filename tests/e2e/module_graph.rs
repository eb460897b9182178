//! The modules of each crate form no circle: reading the sources, each top-level module's
//! `crate::…` paths (outside comments) give the edges of the crate's module graph, and a depth-first
//! walk looks for a cycle. A module's children count as the module itself, so a facade and the
//! files under it may use each other; two sibling modules may not, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each crate's source root, the binary's first.
fn source_roots() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![root.join("src")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(|entry| Some(entry.ok()?.path().join("src")))
        .filter(|src| src.is_dir())
        .collect();
    crates.sort();
    roots.extend(crates);
    roots
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level module a file belongs to (`engine` for `src/engine/persist.rs`); `None` for the
/// crate root (`lib.rs`, `main.rs`), which declares the modules and may use any of them.
fn top_module(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!["lib", "main"].contains(&name)).then(|| name.to_string())
}

/// The modules named by `crate::name` and `crate::{a, b::c}` in code (comments and the unit
/// tests at the end of a file left out: tests may reach anywhere).
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in source.lines().take_while(|line| line.trim() != "#[cfg(test)]") {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inside = group.split('}').next().unwrap_or("");
                for item in inside.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    named.insert(name);
                }
            } else {
                let name: String =
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                named.insert(name);
            }
        }
    }
    named.retain(|name| !name.is_empty());
    named
}

/// The crate's module graph: each top-level module with the other top-level modules it uses.
fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = rust_files(root);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(root, f)).collect();
    for file in &files {
        let Some(module) = top_module(root, file) else { continue };
        if file.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(file).expect("read source");
        let uses = graph.entry(module.clone()).or_default();
        for used in crate_paths(&source) {
            if used != module && modules.contains(&used) {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A cycle of the graph, as the modules around it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_two_modules_of_a_crate_use_each_other_directly_or_in_a_loop() {
    let roots = source_roots();
    assert!(roots.len() >= 5, "the binary and four crates: {roots:?}");
    for root in roots {
        let graph = module_graph(&root);
        assert!(graph.len() >= 3, "{}: {graph:?}", root.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: modules in a circle: {}", root.display(), cycle.join(" -> "));
        }
    }
}

#[test]
fn the_check_finds_a_circle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("page", vec!["scores"]),
        ("scores", vec!["server"]),
        ("server", vec!["page", "render"]),
        ("render", vec![]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a circle");
    assert_eq!(cycle, ["page", "scores", "server", "page"]);
    let paths = crate_paths("use crate::{a, b::c};\n// crate::commented\nlet x = crate::d::e();");
    assert_eq!(paths.into_iter().collect::<Vec<_>>(), ["a", "b", "d"]);
}
