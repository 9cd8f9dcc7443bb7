//! The annotated example's keys, set or commented out, each with its line and value.
//!
//! A line `key = value` is a key, and so is `# key = value` (and `# # key = value` inside a
//! commented-out block); `[table]` and `[[array]]` headers count commented out too. A value
//! that is not the default is marked so by a trailing comment starting with `# example`.

use super::schema::{Key, Schema, Seg, Stated, KIND_KEY};

/// One key as the example shows it.
pub struct Shown {
    pub line: usize,
    /// Its concrete path: `sinks.kafka.topic`, `routes[2].alerts`.
    pub path: String,
    pub value: toml::Value,
    /// The key's reference, if there is one (the value may be an entry of a table-valued key).
    pub key: Option<KeyRef>,
    /// Marked `# example`: not the default.
    pub example: bool,
}

/// A key of the reference, and whether the line sets it whole (not one entry of its table).
pub struct KeyRef {
    pub index: usize,
    pub whole: bool,
}

/// `line` without one or two levels of `# `, when what remains is a header or a key.
fn uncommented(line: &str) -> Option<&str> {
    let mut text = line.trim();
    for _ in 0..2 {
        if let Some(rest) = text.strip_prefix('#') {
            text = rest.trim_start();
        }
    }
    if text.starts_with('[') && text.ends_with(']') {
        return Some(text);
    }
    toml::from_str::<toml::Table>(text)
        .ok()
        .filter(|t| t.len() == 1)?;
    Some(text)
}

/// The example with every commented-out header and key uncommented.
pub fn all_keys(text: &str) -> Result<toml::Table, String> {
    let lines: Vec<&str> = text.lines().map(|l| uncommented(l).unwrap_or("")).collect();
    toml::from_str(&lines.join("\n")).map_err(|e| format!("uncommented, it is no TOML: {e}"))
}

/// Every key line of `text`, resolved against `schema` (sink kinds from `all`).
pub fn shown(text: &str, all: &toml::Table, schema: &Schema) -> Vec<Shown> {
    let keys: Vec<&Key> = schema.keys().collect();
    let mut header: Vec<String> = Vec::new();
    let mut items: std::collections::HashMap<String, usize> = Default::default();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(text) = uncommented(line) else {
            continue;
        };
        if let Some(inner) = text.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            let count = items.entry(inner.to_string()).or_insert(0);
            header = vec![format!("{inner}[{count}]")];
            *count += 1;
            continue;
        }
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            header = split_dotted(inner);
            continue;
        }
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            continue;
        };
        // The dotted key down to its value (through the single-key tables of `a.b = v`).
        let mut segments = header.clone();
        let (mut name, mut value) = table.into_iter().next().expect("one key");
        segments.push(name.clone());
        while let toml::Value::Table(t) = &value {
            if t.len() != 1 || resolve(&segments, all, &keys).is_some() {
                break;
            }
            let (k, v) = t.clone().into_iter().next().expect("one key");
            name = k;
            segments.push(name.clone());
            value = v;
        }
        let key = resolve(&segments, all, &keys);
        out.push(Shown {
            line: n + 1,
            path: segments.join("."),
            value,
            key,
            example: line
                .split_once('=')
                .is_some_and(|(_, rest)| rest.contains("# example")),
        });
    }
    out
}

/// `a."b.c".d` → `a`, `b.c`, `d`.
fn split_dotted(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("a segment").push(c),
        }
    }
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// The reference key a concrete path names: `routes[2]` is an item, a segment under a table
/// of tables a NAME (of the kind `all` gives it), and segments past a key entries of its table.
fn resolve(segments: &[String], all: &toml::Table, keys: &[&Key]) -> Option<KeyRef> {
    // Each segment as the reference's path has it.
    let mut concrete: Vec<Seg> = Vec::new();
    let mut kind = None;
    let mut at: Option<&toml::Value> = None;
    for (i, segment) in segments.iter().enumerate() {
        let (name, index) = match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((name, index)) => (name.to_string(), index.parse::<usize>().ok()),
            None => (segment.clone(), None),
        };
        // The table this segment is in, in the uncommented example.
        let here = match at {
            None => all.get(&name),
            Some(v) => v.get(&name),
        };
        let expects_name = keys.iter().any(|k| {
            k.path.len() > concrete.len() + 1
                && k.path[..concrete.len()] == concrete[..]
                && k.path[concrete.len()] == Seg::Key(name.clone())
                && k.path[concrete.len() + 1] == Seg::Name
        });
        concrete.push(Seg::Key(name));
        at = here;
        if let Some(index) = index {
            concrete.push(Seg::Item);
            at = at.and_then(|v| v.get(index));
        } else if expects_name && i + 1 < segments.len() {
            // `sinks` then `kafka`: the entry `kafka`, of its kind.
            let entry = &segments[i + 1];
            at = at.and_then(|v| v.get(entry));
            kind = at
                .and_then(|v| v.get(KIND_KEY))
                .and_then(|v| v.as_str())
                .map(String::from);
            concrete.push(Seg::Name);
            return finish(&concrete, &segments[i + 2..], kind.as_deref(), keys);
        }
        if let Some(found) = find(&concrete, kind.as_deref(), keys) {
            return Some(KeyRef {
                index: found,
                whole: i + 1 == segments.len(),
            });
        }
    }
    None
}

/// The rest of a path under a `[sinks.NAME]` entry of `kind`.
fn finish(prefix: &[Seg], rest: &[String], kind: Option<&str>, keys: &[&Key]) -> Option<KeyRef> {
    let mut concrete = prefix.to_vec();
    for (i, segment) in rest.iter().enumerate() {
        concrete.push(Seg::Key(segment.clone()));
        let found = find(&concrete, kind, keys).or_else(|| find(&concrete, None, keys));
        if let Some(index) = found {
            return Some(KeyRef {
                index,
                whole: i + 1 == rest.len(),
            });
        }
    }
    None
}

fn find(path: &[Seg], kind: Option<&str>, keys: &[&Key]) -> Option<usize> {
    keys.iter()
        .position(|k| k.path == path && k.kind.as_deref() == kind)
}

/// Whether a shown value is the key's stated default (`None`: the key has no literal one).
pub fn is_default(key: &Key, value: &toml::Value) -> Option<bool> {
    let Stated::Literal { toml, .. } = &key.default else {
        return None;
    };
    let stated: toml::Table = toml::from_str(&format!("v = {toml}")).ok()?;
    Some(stated.get("v") == Some(value))
}
