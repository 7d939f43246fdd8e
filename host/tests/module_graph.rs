//! The host's modules import only downwards (see `../shared/STYLE.md`, "Layers"): this test
//! reads every `crate::<module>` path in `host/src` (outside comments and `#[cfg(test)]`
//! blocks), builds the graph between top-level modules, and fails on any cycle between them
//! (transports, config and live state included), or on an import the layers forbid, naming
//! the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

/// The layered modules, bottom up: each may import only modules listed before it.
const LAYERS: &[&[&str]] = &[
    &["error", "value", "units", "pattern", "stats", "policy"],
    &["store"],
    &["plugins"],
    &["retention"],
    &["summary"],
    &["pubsub"],
    &["db"],
    &["query"],
    &["auth"],
    &["cmd"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module `path` (relative to `src/`) belongs to.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named by a `crate::` path in `code`, including the members of
/// `use crate::{a, b::c}` groups.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names in the group: depth-0 items before their first `::`.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(head(&item));
                        item.clear();
                    }
                    c => item.push(c),
                }
            }
            out.insert(head(&item));
        } else {
            out.insert(head(rest));
        }
    }
    out.retain(|m| m.starts_with(|c: char| c.is_ascii_lowercase()));
    out
}

fn head(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The code of a file without comments and without its `#[cfg(test)]` module (tests may
/// reach anywhere).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> std::io::Result<Graph> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap_or(&file).to_path_buf();
        let from = module_of(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file)?);
        let edges = graph.entry(from.clone()).or_default();
        for to in imports(&code) {
            if to != from {
                edges.entry(to).or_default().insert(rel.clone());
            }
        }
    }
    Ok(graph)
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges.keys() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.stack.contains(&w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn layered_modules_import_only_downwards() -> std::io::Result<()> {
    let graph = graph()?;
    let mut wrong = Vec::new();
    for (from, edges) in &graph {
        let Some(from_layer) = layer_of(from) else {
            continue;
        };
        for (to, files) in edges {
            // A module outside the layers (a transport, the server) sits above them all.
            let upward = layer_of(to).is_none_or(|to_layer| to_layer >= from_layer);
            let same_leaf = from_layer == 0 && layer_of(to) == Some(0);
            if upward && !same_leaf {
                wrong.push(format!("{from} -> {to} (in {files:?})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

#[test]
fn no_import_cycle_among_host_modules() -> std::io::Result<()> {
    let graph = graph()?;
    // The parser must see the edges it is meant to judge, or this test proves nothing.
    assert!(graph["cmd"].contains_key("db") && graph["query"].contains_key("summary"));
    assert!(graph["server"].contains_key("live") && graph["ws"].contains_key("session"));
    let bad = cycles(&graph);
    assert!(bad.is_empty(), "import cycles: {bad:?}");
    Ok(())
}

#[test]
fn the_parser_finds_grouped_and_nested_imports() {
    let found = imports(
        "use crate::{db::{Db, Durable}, error::Error};\nlet x = crate::value::now();\n\
         use crate::Config;",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["db", "error", "value"]
    );
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().entry(b.into()).or_default();
    }
    assert_eq!(
        cycles(&g),
        vec![BTreeSet::from(["a".to_string(), "b".into(), "c".into()])]
    );
}
