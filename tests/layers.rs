//! The layer table of ARCHITECTURE.md is the rule for imports in `src/`: a module imports the
//! modules of lower layers and those listed before it in its own layer (reconcilers: none of
//! their peers). This test reads the table and every `crate::` path, so the two cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module of the table, with its layer and its place in that layer.
fn table(architecture: &str) -> BTreeMap<String, (u32, usize)> {
    let mut modules = BTreeMap::new();
    let start = architecture
        .find("| layer | modules, in import order |")
        .expect("ARCHITECTURE.md has the layer table");
    for row in architecture[start..].lines().skip(2) {
        if !row.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let layer: u32 = cells[1]
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a layer number in {row:?}"));
        let names = cells[2].split(',').map(|m| m.trim().trim_matches('`').to_owned());
        for (place, name) in names.enumerate() {
            assert!(
                modules.insert(name.clone(), (layer, place)).is_none(),
                "{name} listed twice"
            );
        }
    }
    modules
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The crate's modules each path in `code` names, after `prefix` (`crate::` inside the library,
/// `twilio_operator::` in its binaries). Comments and unit tests are left out.
fn imports(code: &str, prefix: &str) -> BTreeSet<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices(prefix) {
            let rest = &line[at + prefix.len()..];
            let group = rest
                .strip_prefix('{')
                .map(|g| g.split('}').next().unwrap_or_default());
            let names: Vec<&str> = match group {
                Some(group) => group
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or_default())
                    .collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn every_import_in_src_is_one_the_layer_table_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = table(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut refused = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let Some(&(layer, place)) = modules.get(&module) else {
            refused.push(format!(
                "{}: module {module} is not in the layer table",
                relative.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        let prefix = if module == "main" || module == "bin" {
            "twilio_operator::"
        } else {
            "crate::"
        };
        for imported in imports(&code, prefix).into_iter().filter(|i| *i != module) {
            let allowed = match modules.get(&imported) {
                Some(&(l, p)) => l < layer || (l == layer && p < place && layer != 3),
                // A crate root item (such as FINALIZER) belongs to no layer.
                None => imported.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            };
            if !allowed {
                refused.push(format!(
                    "{}: {module} (layer {layer}) imports {imported}",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "imports the layer table of ARCHITECTURE.md does not allow:\n{}",
        refused.join("\n")
    );
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let code = "use crate::a::B;\nuse crate::{b, c::D, self};\n// crate::commented\nlet x = crate::e::f();\n#[cfg(test)]\nuse crate::g;";
    let found: Vec<String> = imports(code, "crate::").into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "e"]);
}
