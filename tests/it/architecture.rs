//! The relay's top-level modules depend on each other in one direction only: no cycles.
//!
//! A top-level module is a file or folder directly under `src/` (`src/poll.rs` or `src/poll/`);
//! `lib.rs` and `main.rs` are the crate's root and binary and belong to no module. The test
//! reads the source as text (comments and string literals blanked out first) and takes an edge
//! `a -> b` from every path that leaves `a` for `b`: `crate::b::…`, `$crate::b::…`, each item of
//! a `use crate::{b::…, c}` group, and `super::…` chains that climb to the crate's root
//! (`super::` that stays inside a top-level module is no edge). Imports of `#[cfg(test)]` code
//! count like any other: tests are not allowed to close a cycle either.
//!
//! The binary's modules (`main.rs`, `cli`) reach the library by its name: `mxc_relay::b::…`
//! makes an edge too, so `cli` shows on the top layer.
//!
//! `src/` is one graph; each `crates/*/src/` is another, checked the same way.
//!
//! A failure lists the cycles (every edge that lies on a cycle shows in at least one), each
//! edge with the files, lines and paths that make it. Without a cycle the test prints the
//! layers (a module's layer is one more than the highest layer it depends on): the order from
//! the leaves (`filter`, `signature` …) through `config`, `store`, `poll` and `pipeline` to `cli`.
//!
//! The other rules the code is held to, on the same trees: `limits` (no source file over 600
//! lines, no function outside tests over 120) and `clock` (the wall clock read only by
//! `mxc::SystemClock`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

mod clock;
mod limits;

/// One path that makes an edge: where it is, and how it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    file: String,
    line: usize,
    path: String,
}

/// from -> to -> the paths that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Use>>>;

#[test]
fn top_level_modules_form_a_dag() {
    let mut failures = Vec::new();
    for (name, dir) in trees() {
        let src = dir.join("src");
        let files = read_tree(&src, &name);
        assert!(!files.is_empty(), "no .rs file under {}", src.display());
        let graph = graph(&files, &["crate", &lib_name(&dir)]);
        let cycles = cycles(&graph);
        if cycles.is_empty() {
            println!("{name}: layers, lowest first");
            for (i, layer) in layers(&graph).iter().enumerate() {
                println!("  {i}: {}", layer.join(", "));
            }
        } else {
            failures.push(format!(
                "{name}: {} cycle(s) between top-level modules\n{}",
                cycles.len(),
                describe(&graph, &cycles)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The trees the checks read: `src/` (the relay) and each `crates/*/src/`, as (the tree's
/// path from the workspace's root, the crate's folder).
fn trees() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trees = vec![(String::from("src"), root.to_path_buf())];
    let mut crates: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("the workspace's crates/ folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    assert!(!crates.is_empty(), "no crate under crates/");
    crates.sort();
    for dir in crates {
        let name = dir
            .join("src")
            .strip_prefix(root)
            .unwrap_or(&dir)
            .display()
            .to_string();
        trees.push((name, dir));
    }
    trees
}

/// Every `.rs` file of every tree, as (path from the workspace's root, text).
fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (name, dir) in trees() {
        for (rel, text) in read_tree(&dir.join("src"), &name) {
            files.push((format!("{name}/{rel}"), text));
        }
    }
    files
}

/// The library's name: the package's, `-` made `_` (what the binary calls it).
fn lib_name(dir: &Path) -> String {
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let name = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .map(|l| l.trim().trim_matches('"'))
        .next()
        .unwrap_or("");
    name.replace('-', "_")
}

/// Every `.rs` file under `src`, as (path from `src` with `/` separators, text). `label` only
/// names the tree in messages.
fn read_tree(src: &Path, label: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{label}: {e}")).path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap_or(&path);
                let rel: Vec<String> = rel
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                let text =
                    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files.push((rel.join("/"), text));
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to and the depth of the file's own module (`poll.rs`
/// and `poll/mod.rs`: 1, `poll/sweep.rs`: 2); `None` for the crate's root and binaries.
fn module_of(rel: &str) -> Option<(String, usize)> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["lib.rs" | "main.rs"] | ["bin", ..] => None,
        [file] => Some((file.strip_suffix(".rs")?.to_string(), 1)),
        [dir, .., last] => {
            let depth = if *last == "mod.rs" {
                parts.len() - 1
            } else {
                parts.len()
            };
            Some((dir.to_string(), depth))
        }
        [] => None,
    }
}

/// The graph of top-level modules that `files` (path from `src`, text) make. `roots`: what a
/// path to the crate's root starts with (`crate`, and the library's name for its binary).
fn graph(files: &[(String, String)], roots: &[&str]) -> Graph {
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(rel, _)| module_of(rel))
        .map(|m| m.0)
        .collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for (rel, text) in files {
        let Some((from, depth)) = module_of(rel) else {
            continue;
        };
        for (to, line, path) in paths_to_root(&strip(text), depth, roots) {
            if to != from && modules.contains(&to) {
                let file = format!("{rel}:{line}");
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .push(Use { file, line, path });
            }
        }
    }
    graph
}

/// `text` with comments and the insides of string and char literals replaced by spaces
/// (newlines kept, so lines still count).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if !ident_before && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{…}'); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The tokens of stripped text, each with its line (1-based).
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Token::Ident(c[start..i].iter().collect()), line));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Punct(c[i]), line));
            i += 1;
        }
    }
    out
}

/// Every path in stripped `text` that starts at the crate's root, as (first segment, line,
/// the path as written). `depth` is the depth of the file's module, for `super::` chains;
/// inline `mod name { … }` blocks add one each. `roots`: see [`graph`].
fn paths_to_root(text: &str, depth: usize, roots: &[&str]) -> Vec<(String, usize, String)> {
    let toks = tokens(text);
    let ident = |i: usize| match toks.get(i) {
        Some((Token::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Token| toks.get(i).map(|x| &x.0) == Some(t);
    let mut out: Vec<(String, usize, String)> = Vec::new();
    let mut braces = 0usize;
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Token::Punct('{') => braces += 1,
            Token::Punct('}') => {
                braces = braces.saturating_sub(1);
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
            }
            Token::Ident(kw)
                if kw == "mod" && ident(i + 1).is_some() && is(i + 2, &Token::Punct('{')) =>
            {
                inline_mods.push(braces);
            }
            Token::Ident(kw)
                if (kw == "super" || roots.contains(&kw.as_str()))
                    && (i == 0 || !is(i - 1, &Token::PathSep)) =>
            {
                let line = toks[i].1;
                let mut j = i;
                let mut written = String::new();
                let at_root = if kw != "super" {
                    if i > 0 && is(i - 1, &Token::Punct('$')) {
                        written.push('$');
                    }
                    written.push_str(kw);
                    written.push_str("::");
                    j += 1;
                    true
                } else {
                    let mut supers = 0;
                    while ident(j) == Some("super") && is(j + 1, &Token::PathSep) {
                        supers += 1;
                        written.push_str("super::");
                        j += 2;
                    }
                    j -= 1;
                    supers == depth + inline_mods.len()
                };
                if !at_root || !is(j, &Token::PathSep) {
                    i += 1;
                    continue;
                }
                j += 1;
                if is(j, &Token::Punct('{')) {
                    // A group: the first segment of each of its items.
                    let mut level = 0;
                    let mut item: Option<(usize, String)> = None;
                    j += 1;
                    while j < toks.len() {
                        let (tok, tok_line) = &toks[j];
                        let end = level == 0 && matches!(tok, Token::Punct(',' | '}'));
                        if end {
                            if let Some((at, text)) = item.take() {
                                out[at].2 = format!("{written}{text}");
                            }
                            if *tok == Token::Punct('}') {
                                break;
                            }
                        } else {
                            match tok {
                                Token::Punct('{') => level += 1,
                                Token::Punct('}') => level -= 1,
                                _ => {}
                            }
                            match (&mut item, tok) {
                                (Some((_, text)), _) => text.push_str(&show(tok)),
                                (None, Token::Ident(name)) if name != "self" => {
                                    out.push((name.clone(), *tok_line, String::new()));
                                    item = Some((out.len() - 1, name.clone()));
                                }
                                _ => {}
                            }
                        }
                        j += 1;
                    }
                } else if let Some(name) = ident(j) {
                    let mut path = written.clone();
                    while let Some((tok @ (Token::Ident(_) | Token::PathSep), _)) = toks.get(j) {
                        path.push_str(&show(tok));
                        j += 1;
                    }
                    if path.ends_with("::") && is(j, &Token::Punct('{')) {
                        // `a::{B, c::D}`, as written.
                        let mut level = 0;
                        while let Some((tok, _)) = toks.get(j) {
                            path.push_str(&show(tok));
                            j += 1;
                            match tok {
                                Token::Punct('{') => level += 1,
                                Token::Punct('}') if level == 1 => break,
                                Token::Punct('}') => level -= 1,
                                _ => {}
                            }
                        }
                    }
                    out.push((name.to_string(), line, path));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn show(tok: &Token) -> String {
    match tok {
        Token::Ident(s) => s.clone(),
        Token::PathSep => "::".into(),
        Token::Punct(c) if *c == ',' => ", ".into(),
        Token::Punct(c) => c.to_string(),
    }
}

/// Every cycle of the graph, each once, as the modules along it (first module repeated at
/// the end). For each edge inside a strongly connected component, the shortest way back
/// closes a cycle: every edge that is part of some cycle shows in at least one.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for component in components(graph) {
        if component.len() < 2 {
            continue;
        }
        for from in &component {
            for to in graph[from].keys().filter(|to| component.contains(*to)) {
                let Some(back) = shortest_path(graph, &component, to, from) else {
                    continue;
                };
                // from -> to -> … -> from, without the repeated `from`.
                let mut cycle = vec![from.clone(), to.clone()];
                cycle.extend(back);
                cycle.pop();
                let start = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, m)| *m)
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(start);
                cycle.push(cycle[0].clone());
                found.insert(cycle);
            }
        }
    }
    let mut found: Vec<Vec<String>> = found.into_iter().collect();
    found.sort_by_key(Vec::len);
    found
}

/// The strongly connected components (Tarjan).
fn components(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph[v].keys() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The modules after `from` on a shortest path to `to` inside `within` (`to` included).
fn shortest_path(
    graph: &Graph,
    within: &BTreeSet<String>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to.to_string()];
            let mut at = to;
            while let Some(p) = previous.get(at).filter(|p| **p != from) {
                path.push(p.to_string());
                at = p;
            }
            path.reverse();
            return Some(path);
        }
        for w in graph[v].keys().filter(|w| within.contains(*w)) {
            if w != from && !previous.contains_key(w.as_str()) {
                previous.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

fn describe(graph: &Graph, cycles: &[Vec<String>]) -> String {
    // The edges on most cycles first: one wrong import often closes many.
    let mut on_cycles: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for cycle in cycles {
        for pair in cycle.windows(2) {
            *on_cycles.entry((&pair[0], &pair[1])).or_default() += 1;
        }
    }
    let mut ranked: Vec<_> = on_cycles.into_iter().collect();
    ranked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let ranked: Vec<String> = ranked
        .iter()
        .take(5)
        .map(|((from, to), n)| format!("{from} -> {to} ({n})"))
        .collect();
    let mut out = format!("  edges on the most cycles: {}\n", ranked.join(", "));
    for cycle in cycles {
        out.push_str(&format!("  cycle: {}\n", cycle.join(" -> ")));
        for pair in cycle.windows(2) {
            out.push_str(&format!("    {} -> {}:\n", pair[0], pair[1]));
            for u in &graph[&pair[0]][&pair[1]] {
                out.push_str(&format!("      {}  {}\n", u.file, u.path));
            }
        }
    }
    out
}

/// The modules by layer, lowest first: a module with no dependency is on layer 0, any other
/// one layer above its highest dependency. Only for a graph without cycles.
fn layers(graph: &Graph) -> Vec<Vec<String>> {
    fn layer<'a>(graph: &'a Graph, m: &'a str, memo: &mut BTreeMap<&'a str, usize>) -> usize {
        if let Some(l) = memo.get(m) {
            return *l;
        }
        let l = graph[m]
            .keys()
            .map(|d| layer(graph, d, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(m, l);
        l
    }
    let mut memo = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in graph.keys() {
        let l = layer(graph, m, &mut memo);
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(m.clone());
    }
    out
}

#[cfg(test)]
mod graph_tests {
    use super::*;

    fn graph(list: &[(&str, &str)]) -> Graph {
        let files: Vec<(String, String)> = list
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        super::graph(&files, &["crate", "the_lib"])
    }

    fn edges(graph: &Graph) -> Vec<(String, String)> {
        graph
            .iter()
            .flat_map(|(f, tos)| tos.keys().map(move |t| (f.clone(), t.clone())))
            .collect()
    }

    #[test]
    fn a_cycle_is_found_with_the_paths_that_make_it() {
        let graph = graph(&[
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a.rs", "use crate::b::Thing;\n"),
            ("b/mod.rs", "mod inner;\n"),
            ("b/inner.rs", "\n\nuse crate::{c::Other, a};\n"),
            ("c.rs", "fn f() -> crate::a::X { crate::a::X { y: 1 } }"),
        ]);
        let found = cycles(&graph);
        assert_eq!(found, vec![vec!["a", "b", "a"], vec!["a", "b", "c", "a"]]);
        let text = describe(&graph, &found);
        assert!(
            text.contains("edges on the most cycles: a -> b (2)"),
            "{text}"
        );
        assert!(text.contains("a.rs:1  crate::b::Thing"), "{text}");
        assert!(text.contains("b/inner.rs:3  crate::a"), "{text}");
        assert!(text.contains("c.rs:1  crate::a::X\n"), "{text}");
        assert!(
            !text.contains("y: 1"),
            "a struct literal is no group: {text}"
        );
    }

    #[test]
    fn a_dag_has_no_cycle_and_layers_in_order() {
        let graph = graph(&[
            ("config.rs", "pub struct Config;"),
            (
                "store/mod.rs",
                "use crate::config::Config; use super::store::Gone;",
            ),
            ("pipeline.rs", "use crate::{config, store::Store};"),
            ("main.rs", "mod cli; use the_lib::config::Config;"),
            ("cli/mod.rs", "use the_lib::pipeline; use crate::cli::run;"),
            ("cli/run.rs", "use super::super::store::Store;"),
        ]);
        assert!(cycles(&graph).is_empty());
        assert_eq!(
            layers(&graph),
            vec![vec!["config"], vec!["store"], vec!["pipeline"], vec!["cli"]]
        );
    }

    #[test]
    fn super_inside_a_module_comments_and_strings_make_no_edge() {
        let graph = graph(&[
            ("a/mod.rs", "mod x;\nmod tests { use super::x; use super::super::b::B; }"),
            ("a/x.rs", "use super::y; // crate::b::Y\nconst S: &str = \"crate::b::Z\"; const R: &str = r#\"crate::b\"#;"),
            ("b.rs", "/* use crate::a::A; */ fn f<'a>(c: char) -> bool { c == '\\'' } pub(crate) fn g() {}"),
        ]);
        assert_eq!(edges(&graph), vec![("a".to_string(), "b".to_string())]);
        assert_eq!(graph["a"]["b"][0].path, "super::super::b::B");
    }

    #[test]
    fn macros_and_nested_groups_count() {
        let graph = graph(&[
            ("a.rs", "macro_rules! m { () => { $crate::b::f() } }"),
            ("b.rs", "use crate::{\n    c::{self, D},\n    self,\n};"),
            ("c.rs", ""),
        ]);
        assert_eq!(
            edges(&graph),
            vec![("a".into(), "b".into()), ("b".into(), "c".into())]
        );
        assert_eq!(graph["b"]["c"][0].line, 2);
    }
}
