//! ARCHITECTURE.md's "One record's path" matches the code: the block lists at most eight files,
//! each one exists, and the function named beside it (`Type::name` or `name`) is defined in
//! that file. A function moved or renamed, a file split, or a step added fails here until the
//! document says so.

use std::path::Path;

const MOST_FILES: usize = 8;

/// Each step of the path's block: (file, function).
fn steps(architecture: &str) -> Vec<(String, String)> {
    let section = architecture
        .split("## One record's path")
        .nth(1)
        .expect("ARCHITECTURE.md has a section \"One record's path\"");
    let block = section
        .split("```")
        .nth(1)
        .expect("the section \"One record's path\" has a code block");
    block
        .lines()
        .filter(|line| line.starts_with("src/") || line.starts_with("crates/"))
        .map(|line| {
            let mut words = line.split_whitespace();
            let file = words.next().unwrap_or_default().to_string();
            let function = words.next().unwrap_or_default().to_string();
            (file, function)
        })
        .collect()
}

#[test]
fn the_record_path_in_architecture_md_is_the_code_s() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository's root");
    let steps = steps(&architecture);
    assert!(
        (2..=MOST_FILES).contains(&steps.len()),
        "the record's path lists {} files; it may list at most {MOST_FILES}: {steps:?}",
        steps.len()
    );
    let mut problems = Vec::new();
    for (file, function) in &steps {
        let Ok(source) = std::fs::read_to_string(root.join(file)) else {
            problems.push(format!("{file}: no such file"));
            continue;
        };
        let name = function.rsplit("::").next().unwrap_or(function);
        let defined = source.lines().any(|line| {
            let line = line.trim_start();
            ["fn ", "async fn "].iter().any(|fn_| {
                line.split_once(fn_).is_some_and(|(before, after)| {
                    !before.contains("//")
                        && after.starts_with(name)
                        && after[name.len()..].starts_with(['(', '<'])
                })
            })
        });
        if !defined {
            problems.push(format!("{file}: no `fn {name}` (named as {function})"));
        }
        if let Some(ty) = function.rsplit_once("::").map(|(ty, _)| ty) {
            let has_type = ["struct ", "impl ", "impl<'_> ", "for "]
                .iter()
                .any(|k| source.contains(&format!("{k}{ty}")));
            if !has_type {
                problems.push(format!("{file}: no `{ty}` here (named as {function})"));
            }
        }
    }
    let mut files: Vec<&String> = steps.iter().map(|(f, _)| f).collect();
    files.sort();
    files.dedup();
    if files.len() != steps.len() {
        problems.push("a file is listed twice".into());
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's record path does not match the code:\n{}",
        problems.join("\n")
    );
}
