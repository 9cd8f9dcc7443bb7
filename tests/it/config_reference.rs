//! One source for the configuration reference: `docs/configuration-reference.md` is generated
//! from the doc comments of `src/config/*.rs` (parsed with `syn`, walked from `Config`), and
//! checked: every key has its doc and states its default, each stated default is the code's,
//! and the annotated example `config/mxc-relay.toml` shows every key, at its default unless
//! marked `# example`. After changing a doc comment:
//! `MXC_RELAY_BLESS=1 cargo nextest run --test it -E 'test(/^config_reference::/)'`.

mod attrs;
mod example;
mod render;
mod schema;

use std::path::Path;

use mxc_relay::config::Config;
use schema::{show, Key, Schema, Seg, Stated};

const REFERENCE: &str = "docs/configuration-reference.md";
const EXAMPLE: &str = "config/mxc-relay.toml";
const BLESS: &str = "MXC_RELAY_BLESS";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The schema, or a failure listing what the docs lack.
fn schema() -> Schema {
    let schema = schema::Reader::read(&root().join("src/config")).schema("Config");
    assert!(
        schema.problems.is_empty(),
        "the config structs' doc comments are the reference; fix these:\n  {}",
        schema.problems.join("\n  ")
    );
    schema
}

/// The lines where `old` and `new` differ (a longest-common-subsequence diff), for a message.
fn diff(old: &str, new: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // common[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out, mut shown) = (0, 0, String::new(), 0);
    while (i < old.len() || j < new.len()) && shown < 40 {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push_str(&format!("{:>5} - {}\n", i + 1, old[i]));
            (i, shown) = (i + 1, shown + 1);
        } else {
            out.push_str(&format!("{:>5} + {}\n", j + 1, new[j]));
            (j, shown) = (j + 1, shown + 1);
        }
    }
    out
}

#[test]
fn the_reference_is_generated_from_the_doc_comments() {
    let rendered = render::markdown(&schema());
    let path = root().join(REFERENCE);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk == rendered {
        return;
    }
    if std::env::var_os(BLESS).is_some() {
        std::fs::write(&path, &rendered).expect("the reference written");
        return;
    }
    panic!(
        "{REFERENCE} is not what the doc comments of src/config/*.rs make:\n{}run with {BLESS}=1 to regenerate",
        diff(&on_disk, &rendered)
    );
}

/// The smallest configuration that loads: one XMID, one sink, one route.
const MINIMAL: &str = r#"
[pollers]
xmids = ["X1"]
[sinks.out]
kind = "stdout"
[[routes]]
sink = "out"
"#;

/// A sink of each kind with only what it requires, for the keys of that kind.
const SINKS: &[(&str, &str)] = &[
    ("stdout", ""),
    ("file", "path = \"events.jsonl\""),
    ("kafka", "brokers = \"localhost:9092\""),
    ("webhook", "url = \"https://hooks.example.com/mxc\""),
];

/// `text` loaded (its secrets not required: the defaults are the question), every field as
/// `Debug` shows it.
fn loaded(text: &str) -> Result<String, String> {
    Config::from_toml_without_secrets(text, "test.toml", &|_| None)
        .map(|c| format!("{c:#?}"))
        .map_err(|e| e.to_string())
}

/// The minimal configuration around `key` (its sink's kind), and the same with `key` set.
fn around(key: &Key, value: &toml::Value) -> Result<(toml::Table, toml::Table), String> {
    let mut base: toml::Table = toml::from_str(MINIMAL).expect("the minimal configuration");
    if let Some(kind) = &key.kind {
        let (_, body) = SINKS
            .iter()
            .find(|(k, _)| k == kind)
            .ok_or_else(|| format!("no minimal sink of kind {kind:?} in SINKS: add one"))?;
        let sink: toml::Table =
            toml::from_str(&format!("kind = \"{kind}\"\n{body}")).expect("a minimal sink");
        base["sinks"]["out"] = toml::Value::Table(sink);
    }
    let mut with = base.clone();
    let mut at = &mut with;
    let (last, parents) = key.path.split_last().expect("a key has a name");
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => at
                .entry(k.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            Seg::Name => at
                .get_mut("out")
                .ok_or("a table of tables other than sinks")?,
            // The array's first item was taken with the array.
            Seg::Item => continue,
        };
        at = match next {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => match items.first_mut() {
                Some(toml::Value::Table(t)) => t,
                _ => return Err("the minimal route is no table".into()),
            },
            _ => return Err("a key under a value".into()),
        };
    }
    let Seg::Key(name) = last else {
        return Err("a key path ending in NAME or []".into());
    };
    if at.insert(name.clone(), value.clone()).is_some() {
        return Err("the minimal configuration sets it itself: state no literal default".into());
    }
    Ok((base, with))
}

#[test]
fn every_stated_default_is_what_the_code_defaults_to() {
    let schema = schema();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for key in schema.keys() {
        let Stated::Literal { toml, .. } = &key.default else {
            continue;
        };
        let shown = show(&key.path);
        let value =
            toml::from_str::<toml::Table>(&format!("v = {toml}")).expect("checked")["v"].clone();
        let (base, with) = match around(key, &value) {
            Ok(pair) => pair,
            Err(e) => {
                wrong.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let (a, b) = (loaded(&base.to_string()), loaded(&with.to_string()));
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => checked += 1,
            (Ok(a), Ok(b)) => wrong.push(format!(
                "{shown}: the doc says the default is `{toml}`, but setting it changes the loaded configuration:\n{}",
                diff(&a, &b)
            )),
            (Err(e), _) => wrong.push(format!("{shown}: the minimal configuration fails: {e}")),
            (_, Err(e)) => wrong.push(format!("{shown} = {toml}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "stated defaults that are not the code's (the last line `Default: …` of the field's doc comment, in src/config):\n{}",
        wrong.join("\n")
    );
    assert!(checked > 50, "only {checked} defaults checked");
}

#[test]
fn the_annotated_example_shows_every_key_at_its_default() {
    // That it loads and validates: config::the_annotated_example_is_valid_with_a_key_from_the_environment.
    let schema = schema();
    let keys: Vec<&Key> = schema.keys().collect();
    let text = std::fs::read_to_string(root().join(EXAMPLE)).expect("the example");
    let all = example::all_keys(&text).unwrap_or_else(|e| panic!("{EXAMPLE}: {e}"));
    let mut wrong = Vec::new();
    let mut seen = vec![false; keys.len()];
    for line in example::shown(&text, &all, &schema) {
        let at = format!("{EXAMPLE}:{} `{}`", line.line, line.path);
        let Some(found) = line.key else {
            wrong.push(format!("{at}: no such key in {REFERENCE}"));
            continue;
        };
        seen[found.index] = true;
        if !found.whole {
            continue;
        }
        let key = keys[found.index];
        match (example::is_default(key, &line.value), line.example) {
            (Some(false), false) => wrong.push(format!(
                "{at}: shows {}, the default is {}: show the default, or mark the line `# example`",
                line.value,
                match &key.default {
                    Stated::Literal { toml, .. } => toml.as_str(),
                    _ => "",
                }
            )),
            (Some(true), true) => {
                wrong.push(format!("{at}: marked `# example` but shows the default"))
            }
            _ => {}
        }
    }
    for (key, seen) in keys.iter().zip(seen) {
        if !seen {
            let kind = key
                .kind
                .as_ref()
                .map(|k| format!(" (kind {k})"))
                .unwrap_or_default();
            wrong.push(format!(
                "{}{kind}: in {REFERENCE} but not in {EXAMPLE} (set, or commented out as `# key = value`)",
                show(&key.path)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
