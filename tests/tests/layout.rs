//! The host's module layout as docs/ARCHITECTURE.md describes it: its modules table lists
//! every top-level module bottom-up and every import goes up the table, no two files of one
//! module import each other in a circle, and every module is documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module name → the top-level modules its files name with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any, as the path of modules.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_no_cycle() {
    let graph = graph();
    assert!(graph.len() > 10, "found the host's modules: {:?}", graph.keys());
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle_from(&graph, m)).map(|c| c.join(" → ")).collect();
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

/// The modules of docs/ARCHITECTURE.md's modules table, in its order.
fn table() -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ARCHITECTURE.md")).unwrap();
    let start = doc.find("| module | concept |").expect("the modules table");
    let end = start + doc[start..].find("\n## ").expect("a section after the table");
    doc[start..end]
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn the_architecture_table_lists_every_module_and_every_import_goes_up_it() {
    let graph = graph();
    let table = table();
    let listed: BTreeSet<&String> = table.iter().collect();
    let modules: BTreeSet<&String> = graph.keys().collect();
    assert_eq!(listed, modules, "docs/ARCHITECTURE.md's modules table against host/src");
    let place = |m: &String| table.iter().position(|t| t == m);
    let mut downward = Vec::new();
    for (module, deps) in &graph {
        for dep in deps.iter().filter(|d| graph.contains_key(*d)) {
            if place(dep) > place(module) {
                downward.push(format!("{module} → {dep}"));
            }
        }
    }
    assert!(downward.is_empty(), "imports of a module listed further down the table: {downward:?}");
}

/// The `.rs` files of `dir` and below, each with how many `super::` lead back to `dir`.
fn files_under(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, usize)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, depth + 1, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let own = path.file_name().is_some_and(|n| n == "mod.rs");
            out.push((path, if own { depth } else { depth + 1 }));
        }
    }
}

/// The siblings (files and directories beside it, `mod.rs` aside) that `child` of module
/// directory `dir` (at `module`, a `::` path) names, outside its tests.
fn sibling_imports(dir: &Path, module: &str, child: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let path = dir.join(child);
    let mut files = Vec::new();
    if path.is_dir() {
        files_under(&path, 0, &mut files);
    } else {
        files.push((dir.join(format!("{child}.rs")), 1));
    }
    let mut found = BTreeSet::new();
    for (file, depth) in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for prefix in [format!("crate::{module}::"), "super::".repeat(depth)] {
            for (i, _) in code.match_indices(&prefix) {
                let rest = &code[i + prefix.len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => {
                        group.split('}').next().unwrap().split(|c: char| !c.is_alphanumeric() && c != '_').collect()
                    }
                    None => vec![rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap()],
                };
                found.extend(names.into_iter().filter(|n| *n != child && siblings.contains(*n)).map(str::to_owned));
            }
        }
    }
    found
}

#[test]
fn no_two_files_of_a_module_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut dirs = vec![src.clone()];
    let mut circles = Vec::new();
    while let Some(dir) = dirs.pop() {
        let mut siblings = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
                siblings.insert(name);
            } else if path.extension().is_some_and(|e| e == "rs") && name != "mod" {
                siblings.insert(name);
            }
        }
        if dir == src {
            continue; // top-level modules: the table test
        }
        let module = dir.strip_prefix(&src).unwrap().to_string_lossy().replace('/', "::");
        let graph: BTreeMap<String, BTreeSet<String>> =
            siblings.iter().map(|c| (c.clone(), sibling_imports(&dir, &module, c, &siblings))).collect();
        circles
            .extend(graph.keys().filter_map(|c| cycle_from(&graph, c)).map(|c| format!("{module}: {}", c.join(" → "))));
    }
    assert!(circles.is_empty(), "files of one module importing each other in a circle:\n{}", circles.join("\n"));
}

#[test]
fn every_module_file_starts_with_its_doc() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "modules without a //! doc: {undocumented:?}");
}

/// Every manifest in the repository (skipping build output and installed packages).
fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["target", "node_modules", ".git", "venv", ".venv"].contains(&name.as_str()) {
                manifests(&path, out);
            }
        } else if name == "Cargo.toml" || name == "package.json" {
            out.push(path);
        }
    }
}

#[test]
fn every_manifest_grants_the_licences_the_repository_ships() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
    let mut files = Vec::new();
    manifests(&root, &mut files);
    assert!(files.len() > 10, "found the manifests: {files:?}");
    let wrong: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let states =
                ["license = \"MIT OR Apache-2.0\"", "license.workspace = true", "\"license\": \"MIT OR Apache-2.0\""]
                    .iter()
                    .any(|line| text.contains(line));
            let is_workspace_only = text.contains("[workspace]") && !text.contains("[package]");
            !(states || is_workspace_only)
        })
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(wrong.is_empty(), "manifests that do not say MIT OR Apache-2.0: {wrong:?}");
}
