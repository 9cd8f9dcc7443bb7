//! Sizes a reader can take in: no source file over [`MAX_FILE_LINES`] lines, and no function
//! outside tests over [`MAX_FN_LINES`] (from its `fn` line to its closing brace), over the
//! trees the cycle check reads (`src/`, each `crates/*/src/`).
//!
//! Functions are found in the text with comments and literals blanked ([`super::strip`]), so
//! braces in strings do not count. Tests are what `#[cfg(test)]`, `#[test]` or
//! `#[tokio::test]` marks: the item under the attribute (a module, a function, an impl), and
//! the file of a `#[cfg(test)] mod name;`. A failure lists every offender with its place and
//! length, longest first.

use std::collections::BTreeSet;

use super::{sources, strip, tokens, Token};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

#[test]
fn no_source_file_is_over_600_lines() {
    let mut over: Vec<(usize, String)> = sources()
        .into_iter()
        .map(|(path, text)| (text.lines().count(), path))
        .filter(|(lines, _)| *lines > MAX_FILE_LINES)
        .collect();
    over.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let list: Vec<String> = over
        .iter()
        .map(|(lines, path)| format!("  {path}: {lines} lines"))
        .collect();
    assert!(
        over.is_empty(),
        "{} source file(s) over {MAX_FILE_LINES} lines (split each by concern):\n{}",
        over.len(),
        list.join("\n")
    );
}

#[test]
fn no_function_outside_tests_is_over_120_lines() {
    let files = sources();
    let test_files = test_module_files(&files);
    let mut over: Vec<(usize, String)> = Vec::new();
    for (path, text) in &files {
        if test_files.iter().any(|t| is_in(path, t)) {
            continue;
        }
        for f in functions(text).into_iter().filter(|f| !f.test) {
            if f.lines > MAX_FN_LINES {
                over.push((f.lines, format!("{path}:{}  {}", f.line, f.name)));
            }
        }
    }
    over.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let list: Vec<String> = over
        .iter()
        .map(|(lines, at)| format!("  {at}: {lines} lines"))
        .collect();
    assert!(
        over.is_empty(),
        "{} function(s) outside tests over {MAX_FN_LINES} lines, from `fn` to the closing brace (split each into named steps):\n{}",
        over.len(),
        list.join("\n")
    );
}

/// A function found in a file.
#[derive(Debug, PartialEq, Eq)]
struct Function {
    name: String,
    /// The line of its `fn` (1-based).
    line: usize,
    /// From the `fn` line to the line of its closing brace, both counted.
    lines: usize,
    /// Inside an item marked as a test.
    test: bool,
}

/// Every function with a body in `text` (nested ones too), in order.
fn functions(text: &str) -> Vec<Function> {
    let toks = tokens(&strip(text));
    let tests: Vec<(usize, usize)> = test_items(&toks).into_iter().map(|t| t.span).collect();
    let mut out = Vec::new();
    for (i, (tok, line)) in toks.iter().enumerate() {
        if *tok != Token::Ident("fn".into()) {
            continue;
        }
        // `fn name`: not `fn(…)` (a pointer type) nor `fn $name` (a macro's pattern).
        let Some((Token::Ident(name), _)) = toks.get(i + 1) else {
            continue;
        };
        // A declaration without a body (in a trait, or `extern`) ends at its `;`.
        let Some(end) = item_end(&toks, i + 2).filter(|e| toks[*e].0 == Token::Punct('}')) else {
            continue;
        };
        out.push(Function {
            name: name.clone(),
            line: *line,
            lines: toks[end].1 - line + 1,
            test: tests.iter().any(|(from, to)| (*from..=*to).contains(&i)),
        });
    }
    out
}

/// An item under a test attribute: the tokens it spans (from its attribute to its closing
/// brace or semicolon), and its name if it is a module declared without a body.
struct TestItem {
    span: (usize, usize),
    module_file: Option<String>,
}

/// The items of `toks` that a test attribute marks.
fn test_items(toks: &[(Token, usize)]) -> Vec<TestItem> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some((attribute, after)) = attribute_at(toks, i) else {
            i += 1;
            continue;
        };
        let marks_test = attribute == "cfg(test)"
            || attribute == "test"
            || attribute == "tokio::test"
            || attribute.starts_with("tokio::test(");
        if !marks_test {
            i = after;
            continue;
        }
        // Past any further attributes, to the item itself.
        let mut start = after;
        while let Some((_, next)) = attribute_at(toks, start) {
            start = next;
        }
        let Some(end) = item_end(toks, start) else {
            break;
        };
        let words: Vec<&str> = toks[start..end]
            .iter()
            .filter_map(|(t, _)| match t {
                Token::Ident(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        let module_file = match (words.as_slice(), &toks[end].0) {
            ([.., "mod", name], Token::Punct(';')) => Some(name.to_string()),
            _ => None,
        };
        out.push(TestItem {
            span: (i, end),
            module_file,
        });
        i = end + 1;
    }
    out
}

/// The outer attribute at `i` (`#[…]`) as its tokens' text without spaces, and the index
/// after its `]`.
fn attribute_at(toks: &[(Token, usize)], i: usize) -> Option<(String, usize)> {
    if toks.get(i)?.0 != Token::Punct('#') || toks.get(i + 1)?.0 != Token::Punct('[') {
        return None;
    }
    let mut depth = 0;
    let mut text = String::new();
    for (j, (tok, _)) in toks.iter().enumerate().skip(i + 1) {
        match tok {
            Token::Punct('[') => depth += 1,
            Token::Punct(']') if depth == 1 => return Some((text, j + 1)),
            Token::Punct(']') => depth -= 1,
            _ => {}
        }
        if j > i + 1 {
            text.push_str(&match tok {
                Token::Ident(s) => s.clone(),
                Token::PathSep => "::".into(),
                Token::Punct(c) => c.to_string(),
            });
        }
    }
    None
}

/// Where the item whose tokens start at `start` ends: the `;` that closes it, or the brace
/// that closes its body (the first `{` outside parentheses and brackets).
fn item_end(toks: &[(Token, usize)], start: usize) -> Option<usize> {
    let mut nesting = 0usize;
    for (j, (tok, _)) in toks.iter().enumerate().skip(start) {
        match tok {
            Token::Punct('(' | '[') => nesting += 1,
            Token::Punct(')' | ']') => nesting = nesting.saturating_sub(1),
            Token::Punct(';') if nesting == 0 => return Some(j),
            Token::Punct('{') if nesting == 0 => return matching_brace(toks, j),
            _ => {}
        }
    }
    None
}

fn matching_brace(toks: &[(Token, usize)], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, (tok, _)) in toks.iter().enumerate().skip(open) {
        match tok {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') if depth == 1 => return Some(j),
            Token::Punct('}') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The files of modules that exist only in tests (`#[cfg(test)] mod name;`): `dir/name.rs`,
/// and `dir/name/` for `name/mod.rs` and their children.
fn test_module_files(files: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, text) in files {
        let toks = tokens(&strip(text));
        for name in test_items(&toks).into_iter().filter_map(|t| t.module_file) {
            let dir = match path.rsplit_once('/') {
                Some((dir, "lib.rs" | "main.rs" | "mod.rs")) => dir.to_string(),
                _ => path.trim_end_matches(".rs").to_string(),
            };
            out.insert(format!("{dir}/{name}.rs"));
            out.insert(format!("{dir}/{name}/"));
        }
    }
    out
}

/// Whether `path` is the file `test`, or under the folder `test` (ending in `/`).
fn is_in(path: &str, test: &str) -> bool {
    if test.ends_with('/') {
        path.starts_with(test)
    } else {
        path == test
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(text: &str) -> Vec<(String, usize, usize, bool)> {
        functions(text)
            .into_iter()
            .map(|f| (f.name, f.line, f.lines, f.test))
            .collect()
    }

    fn row(name: &str, line: usize, lines: usize, test: bool) -> (String, usize, usize, bool) {
        (name.to_string(), line, lines, test)
    }

    #[test]
    fn a_function_counts_from_fn_to_its_closing_brace() {
        let body = "    let x = 1;\n".repeat(3);
        let text = format!(
            "/// Doc.\npub(crate) async fn run<T>(a: [u8; 2], f: fn(u8) -> u8) -> Result<(), ()>\nwhere\n    T: Clone,\n{{\n{body}}}\n"
        );
        assert_eq!(named(&text), vec![row("run", 2, 8, false)]);
    }

    #[test]
    fn braces_in_strings_comments_and_chars_do_not_count() {
        let text = "fn a() {\n    let s = \"}}}\";\n    // }\n    let c = '}';\n    let r = r#\"{\"#;\n}\nfn b() {}\n";
        assert_eq!(
            named(text),
            vec![row("a", 1, 6, false), row("b", 7, 1, false)]
        );
    }

    #[test]
    fn declarations_pointer_types_and_macro_patterns_are_no_functions() {
        let text = "trait T {\n    fn f(&self) -> u8;\n}\ntype F = fn(u8);\nmacro_rules! m { ($n:ident) => { fn $n() {} } }\nimpl T for () {\n    fn f(&self) -> u8 { 0 }\n}\n";
        assert_eq!(named(text), vec![row("f", 7, 1, false)]);
    }

    #[test]
    fn tests_are_marked_and_nested_functions_found() {
        let text = "fn outer() {\n    fn inner() {}\n}\n#[cfg(test)]\nmod tests {\n    fn helper() {}\n    #[test]\n    fn t() {}\n}\n#[tokio::test(start_paused = true)]\n#[ignore]\nasync fn slow() {}\n#[cfg(test)]\nimpl X { fn only_in_tests() {} }\n#[cfg(not(test))]\nfn not_a_test() {}\n";
        assert_eq!(
            named(text),
            vec![
                row("outer", 1, 3, false),
                row("inner", 2, 1, false),
                row("helper", 6, 1, true),
                row("t", 8, 1, true),
                row("slow", 12, 1, true),
                row("only_in_tests", 14, 1, true),
                row("not_a_test", 16, 1, false),
            ]
        );
    }

    #[test]
    fn a_module_only_in_tests_takes_its_files_along() {
        let files = vec![
            (
                "src/store/mod.rs".to_string(),
                "mod engine;\n#[cfg(test)]\npub(crate) mod testing;\n#[cfg(test)]\nmod inline {}\n"
                    .to_string(),
            ),
            (
                "src/poll.rs".to_string(),
                "#[cfg(test)] mod fixtures;".to_string(),
            ),
        ];
        let test_files: Vec<String> = test_module_files(&files).into_iter().collect();
        assert_eq!(
            test_files,
            vec![
                "src/poll/fixtures.rs",
                "src/poll/fixtures/",
                "src/store/testing.rs",
                "src/store/testing/",
            ]
        );
        assert!(is_in("src/store/testing.rs", "src/store/testing.rs"));
        assert!(is_in("src/poll/fixtures/data.rs", "src/poll/fixtures/"));
        assert!(!is_in("src/store/engine.rs", "src/store/testing.rs"));
    }
}
