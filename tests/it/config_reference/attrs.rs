//! What the config structs' attributes say: `#[serde(...)]` (which keys there are, and under
//! which names) and `///` doc comments, with the `Default: …` statement that ends a key's.
//!
//! The convention: a key's doc comment ends with a line `Default: …`. A TOML value in
//! backticks first (``Default: `"30s"`.``) is a literal, which the tests check against the
//! code; other words (`Default: none.`, `Default: host name and pid.`) are shown as they are. A
//! key serde requires (no default) states none: the reference says "required".

use syn::{Attribute, Expr, Lit, Meta};

use super::schema::Stated;

/// `#[serde(...)]` of a field, a container or a variant.
#[derive(Default)]
pub struct Serde {
    pub skip: bool,
    pub flatten: bool,
    pub default: bool,
    pub rename: Option<String>,
    pub rename_all: Option<String>,
}

impl Serde {
    pub fn of(attrs: &[Attribute]) -> Result<Serde, String> {
        let mut out = Serde::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                let name = meta
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let value = if meta.input.peek(syn::Token![=]) {
                    Some(meta.value()?.parse::<syn::LitStr>()?.value())
                } else {
                    None
                };
                match name.as_str() {
                    "skip" | "skip_deserializing" => out.skip = true,
                    "flatten" => out.flatten = true,
                    "default" => out.default = true,
                    "rename" => out.rename = value,
                    "rename_all" => out.rename_all = value,
                    // How a value is read, not which keys there are.
                    "with" | "deserialize_with" | "deny_unknown_fields" => {}
                    other => return Err(meta.error(format!("serde({other}) is not handled"))),
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        }
        Ok(out)
    }
}

pub fn doc_of(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if let Meta::NameValue(nv) = &attr.meta {
            if nv.path.is_ident("doc") {
                if let Expr::Lit(lit) = &nv.value {
                    if let Lit::Str(s) = &lit.lit {
                        let text = s.value();
                        lines.push(text.strip_prefix(' ').unwrap_or(&text).to_string());
                    }
                }
            }
        }
    }
    lines.join("\n").trim().to_string()
}

/// The doc without its `Default: …` statement, and the statement (without `Default: `).
pub fn split_default(doc: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = doc.lines().collect();
    match lines.iter().rposition(|l| l.starts_with("Default: ")) {
        Some(i) => (
            lines[..i].join("\n").trim().to_string(),
            Some(lines[i..].join(" ")["Default: ".len()..].trim().to_string()),
        ),
        None => (doc.to_string(), None),
    }
}

/// `Default: ` `"30s"` `.` → a literal; other words → text.
pub fn parse_stated(statement: &str) -> Result<Stated, String> {
    let statement = statement.strip_suffix('.').unwrap_or(statement);
    if let Some(rest) = statement.strip_prefix('`') {
        let end = rest.find('`').ok_or("an unclosed `")?;
        let toml = rest[..end].to_string();
        toml::from_str::<toml::Table>(&format!("v = {toml}"))
            .map_err(|e| format!("`{toml}` is no TOML value: {}", e.message()))?;
        return Ok(Stated::Literal {
            toml,
            remark: rest[end + 1..].trim().to_string(),
        });
    }
    Ok(Stated::Text(statement.to_string()))
}

/// `PascalCase` variant → its serde name.
pub fn renamed(ident: &str, rule: Option<&str>) -> Result<String, String> {
    let snake = || {
        let mut out = String::new();
        for (i, c) in ident.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    match rule {
        None => Ok(ident.to_string()),
        Some("lowercase") => Ok(ident.to_lowercase()),
        Some("snake_case") => Ok(snake()),
        Some("kebab-case") => Ok(snake().replace('_', "-")),
        Some(other) => Err(format!("rename_all = {other:?} is not handled")),
    }
}

/// `list of strings`, `table of strings (secret)`.
pub fn plural(ty: &str) -> String {
    match ty.find(" (") {
        Some(i) => format!("{}s{}", &ty[..i], &ty[i..]),
        None if ty.starts_with('`') => ty.to_string(),
        None => format!("{ty}s"),
    }
}
