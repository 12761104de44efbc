//! The layers, checked: reads every `crate::` path in src/ and fails on an
//! import from a lower layer to a higher one, from one door to another, or
//! on a circle between the modules of a layer or between the files of a
//! module.
//!
//! The layers, lowest first: `base` (the leaves), `engine`, `doors`, `app`.
//! A module may import its own layer's modules and every lower layer's; a
//! door imports no other door. Test modules (`#[cfg(test)] mod tests` at the
//! end of a file) are not checked: a test may build what it needs.
//!
//! Run it alone with `cargo test --lib layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 4] = ["base", "engine", "doors", "app"];

/// The layer of a module path (`engine::hub::outbox` is in `engine`).
fn rank(module: &[String]) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| module.first().map(String::as_str) == Some(l))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `src/engine/hub/mod.rs` is `engine::hub`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its trailing test module and its comments.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file's code (in `module`) names through `crate::` and
/// `super::` paths, as the first `depth` parts of each path (with 2,
/// `crate::engine::hub::Hub` names `engine::hub`; `super::{a, b}` names
/// `a` and `b` beside the module). `use crate::{a, b}` at the root and
/// `super::super` are not used in this crate: they are refused, so that no
/// import hides from this check.
fn imports(module: &[String], code: &str, depth: usize) -> Result<BTreeSet<Vec<String>>, String> {
    if code.contains("super::super") {
        return Err("`super::super`: name the module by its `crate::` path".into());
    }
    let mut found = BTreeSet::new();
    // `super::x` in module `a::b` is `a::x`.
    let parent = &module[..module.len().saturating_sub(1)];
    for (prefix, base) in [("crate::", &[][..]), ("super::", parent)] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            // `super::{a, b::c}` names `a` and `b` beside this module.
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(_) if prefix == "crate::" => {
                    return Err("a `crate::{...}` group: name each path whole".into());
                }
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for head in heads {
                let named = head.split("::").map(|p| {
                    p.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                });
                let path: Vec<String> = base
                    .iter()
                    .cloned()
                    .chain(named.take_while(|p| !p.is_empty() && p != "self"))
                    .take(depth)
                    .collect();
                found.insert(path);
            }
        }
    }
    Ok(found)
}

/// Whether `start` reaches itself by following `graph`'s imports.
fn reaches_itself(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    start: &Vec<String>,
) -> bool {
    let mut seen = BTreeSet::new();
    let mut next: Vec<&Vec<String>> = graph[start].iter().collect();
    while let Some(m) = next.pop() {
        if m == start {
            return true;
        }
        if seen.insert(m) {
            next.extend(graph.get(m).into_iter().flatten());
        }
    }
    false
}

#[test]
fn no_import_runs_up_a_layer_or_from_door_to_door_or_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    // Modules (a layer and its first part, `engine::hub`) and what each
    // imports of its own layer.
    let mut within: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    // Files and what each imports of the files beside it.
    let mut between_files: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(from) = rank(&module) else { continue };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let shown = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        let code = code_of(&text);
        // Files of one module importing each other (`frame` and `deflate`
        // in `base::codec`): a circle too, however deep the module.
        let siblings = imports(&module, &code, module.len()).unwrap_or_default();
        let parent = &module[..module.len().saturating_sub(1)];
        between_files.entry(module.clone()).or_default().extend(
            siblings
                .into_iter()
                .filter(|t| t.len() == module.len() && t.starts_with(parent) && *t != module),
        );
        let named = match imports(&module, &code, 2) {
            Ok(named) => named,
            Err(e) => {
                wrong.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let here: Vec<String> = module.iter().take(2).cloned().collect();
        for target in named {
            let Some(to) = rank(&target) else { continue };
            if to > from {
                wrong.push(format!(
                    "{shown}: {} imports {} ({} may not import {})",
                    module.join("::"),
                    target.join("::"),
                    LAYERS[from],
                    LAYERS[to]
                ));
            } else if to == from && target != here && target.len() == 2 {
                if LAYERS[from] == "doors" {
                    wrong.push(format!(
                        "{shown}: the door {} imports the door {}",
                        here.join("::"),
                        target.join("::")
                    ));
                }
                within.entry(here.clone()).or_default().insert(target);
            }
        }
    }
    // A circle between modules of one layer, or between the files of one
    // module: one that reaches itself.
    for graph in [&within, &between_files] {
        for start in graph.keys() {
            if reaches_itself(graph, start) {
                wrong.push(format!("{} is in an import circle", start.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}
