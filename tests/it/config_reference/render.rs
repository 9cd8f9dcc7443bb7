//! The reference as Markdown: a section per table, a row per key (its path, type, default and
//! meaning).

use super::schema::{show, Schema, Seg, Stated, Table};

/// The file's first lines: what it is and how it is made.
const HEADER: &str = "\
# Configuration reference

<!-- Generated from the doc comments of src/config/*.rs by tests/it/config_reference.rs: edit
     those, then run `MXC_RELAY_BLESS=1 cargo nextest run --test it -E 'test(/^config_reference::/)'`. -->
";

pub fn markdown(schema: &Schema) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    out.push_str(&paragraphs(&schema.intro, "\n\n"));
    out.push_str("\n\nSections:");
    for table in schema.tables.iter().filter(|t| t.kind.is_none()) {
        let heading = heading(table);
        out.push_str(&format!(" [{heading}](#{}),", anchor(&heading)));
    }
    out.pop();
    out.push_str(".\n");
    for table in &schema.tables {
        let level = if table.kind.is_some() { "###" } else { "##" };
        out.push_str(&format!("\n{level} {}\n\n", heading(table)));
        let doc = without_heading(&table.doc);
        if !doc.is_empty() {
            out.push_str(&paragraphs(&doc, "\n\n"));
            out.push_str("\n\n");
        }
        if table.keys.is_empty() {
            continue;
        }
        out.push_str("| Key | Type | Default | Meaning |\n|---|---|---|---|\n");
        for key in &table.keys {
            let default = match &key.default {
                Stated::Required => "required".to_string(),
                Stated::Literal { toml, remark } if remark.is_empty() => format!("`{toml}`"),
                Stated::Literal { toml, remark } => format!("`{toml}` {remark}"),
                Stated::Text(text) => text.clone(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                show(&key.path),
                cell(&key.ty),
                cell(&default),
                cell(&paragraphs(&key.doc, "<br><br>"))
            ));
        }
    }
    out
}

/// `` `[mxc]` ``, `` `[[routes]]` ``, `` `[sinks.NAME]` with `kind = "file"` ``.
fn heading(table: &Table) -> String {
    let dotted: Vec<&str> = table
        .path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Name => Some("NAME"),
            Seg::Item => None,
        })
        .collect();
    let header = if table.path.last() == Some(&Seg::Item) {
        format!("`[[{}]]`", dotted.join("."))
    } else {
        format!("`[{}]`", dotted.join("."))
    };
    match &table.kind {
        Some(kind) => format!("{header} with `kind = \"{kind}\"`"),
        None => header,
    }
}

/// The anchor GitHub gives a heading: lower case, spaces as `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A struct's doc without its opening `` `[mxc]`: ``, which the heading says.
fn without_heading(doc: &str) -> String {
    if let Some(rest) = doc.strip_prefix("`[") {
        if let Some(end) = rest.find("]`: ") {
            let rest = &rest[end + "]`: ".len()..];
            let mut chars = rest.chars();
            return match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            };
        }
    }
    doc.to_string()
}

/// Lines joined into paragraphs, the paragraphs by `between`; rustdoc links become plain code.
fn paragraphs(doc: &str, between: &str) -> String {
    let text = doc
        .split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(between);
    unlink(&text)
}

/// ``[`X`]`` and ``[`X`](path)`` → `` `X` ``.
fn unlink(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start..].find("`]") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&rest[start + 1..start + len + 1]);
        rest = &rest[start + len + 2..];
        if rest.starts_with('(') {
            if let Some(close) = rest.find(')') {
                rest = &rest[close + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
