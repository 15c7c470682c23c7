//! The module structure of `stategrad-core`, checked: the only import circle is the inherent
//! one (a tensor records on the tape, the tape holds primitives over tensors and the states
//! they read, a state holds a tree of tensors), and no source file outgrows its concern.
//!
//! A module's imports are the `crate::name` paths in its code (comments and its in-file unit
//! tests left out); the circles are the strongly connected components of that graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The circle that is allowed: these modules are one concern seen from four sides.
const INHERENT: &[&str] = &["prim", "state", "tensor", "tensor_tree", "trace"];

/// Files that may exceed the size budget, with why.
const LARGE_FILES: &[(&str, &str)] = &[];

const LINE_BUDGET: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comment lines and without a trailing `#[cfg(test)] mod tests`.
fn code_of(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifier names following `crate::` (and inside `crate::{..}` groups).
fn imports(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn core_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "tests" {
            continue;
        }
        let deps = imports(&code_of(&fs::read_to_string(f).unwrap()));
        graph.entry(module.clone()).or_default().extend(deps);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (m, deps) in graph.iter_mut() {
        deps.retain(|d| d != m && modules.contains(d));
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    comp.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.found.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn the_only_import_circle_in_core_is_the_inherent_one() {
    let graph = core_graph();
    assert!(graph.len() > 10, "core's modules were not found: {graph:?}");
    let inherent: BTreeSet<String> = INHERENT.iter().map(|s| s.to_string()).collect();
    for circle in circles(&graph) {
        let edges: Vec<String> = circle
            .iter()
            .flat_map(|m| {
                graph[m]
                    .iter()
                    .filter(|d| circle.contains(*d))
                    .map(move |d| format!("{m} -> {d}"))
            })
            .collect();
        assert!(
            circle.is_subset(&inherent),
            "an import circle beyond {INHERENT:?}: {circle:?}, edges {edges:?}"
        );
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let mut graph = BTreeMap::new();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    graph.insert("a".to_string(), set(&["b"]));
    graph.insert("b".to_string(), set(&["c"]));
    graph.insert("c".to_string(), set(&["a"]));
    graph.insert("d".to_string(), set(&["a"]));
    assert_eq!(circles(&graph), vec![set(&["a", "b", "c"])]);
    assert_eq!(
        imports("use crate::{tensor::Tensor, prim};\nlet x = crate::trace::f();"),
        set(&["prim", "tensor", "trace"])
    );
}

#[test]
fn no_core_source_file_outgrows_the_budget() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("tests") || LARGE_FILES.iter().any(|(n, _)| f.ends_with(n)) {
            continue;
        }
        let lines = fs::read_to_string(&f).unwrap().lines().count();
        assert!(
            lines <= LINE_BUDGET,
            "{} has {lines} lines (budget {LINE_BUDGET}): split it by concern",
            f.display()
        );
    }
}
