//! The configuration's keys as the code declares them: `src/config/*.rs` parsed with `syn`, and
//! the serde-visible fields walked from `Config` (honouring `skip`, `rename`, `rename_all`,
//! `flatten` and `default`), each with its doc comment and the default that comment states.

use std::collections::HashMap;

use syn::{Fields, GenericArgument, Item, PathArguments, Type};

use super::attrs::{doc_of, parse_stated, plural, renamed, split_default, Serde};

/// One segment of a key's path.
#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    Key(String),
    /// An entry of a table of tables: `[sinks.NAME]`.
    Name,
    /// An item of an array of tables: `[[routes]]`.
    Item,
}

/// `sinks.NAME.topic`, `routes[].redact.drop`.
pub fn show(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Name => out.push_str(".NAME"),
            Seg::Item => out.push_str("[]"),
        }
    }
    out
}

/// What a key's doc comment says of its default.
#[derive(Clone, Debug, PartialEq)]
pub enum Stated {
    /// Serde requires the key.
    Required,
    /// A TOML value, and what follows it (` (about 28 h)`).
    Literal { toml: String, remark: String },
    /// Words: `none`, `host name and pid`.
    Text(String),
}

#[derive(Debug)]
pub struct Key {
    pub path: Vec<Seg>,
    /// The sink kind whose key it is.
    pub kind: Option<String>,
    pub ty: String,
    pub default: Stated,
    pub doc: String,
}

#[derive(Debug)]
pub struct Table {
    pub path: Vec<Seg>,
    pub kind: Option<String>,
    pub doc: String,
    pub keys: Vec<Key>,
}

/// The tables in the order the reference shows them, and what is wrong with the docs.
#[derive(Default)]
pub struct Schema {
    pub tables: Vec<Table>,
    pub problems: Vec<String>,
    /// The root struct's doc.
    pub intro: String,
}

impl Schema {
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.tables.iter().flat_map(|t| t.keys.iter())
    }
}

/// The key a `[sinks.NAME]` table names its kind with: loading reads `kind = "K"` as the
/// externally tagged variant `K` (see `tag_sinks` in `src/config/section.rs`).
pub const KIND_KEY: &str = "kind";

/// What the type column says of the leaf types that are no config struct or enum.
const TYPE_NAMES: &[(&str, &str)] = &[
    ("String", "string"),
    ("PathBuf", "path"),
    ("Duration", "duration"),
    ("Secret", "string (secret)"),
    ("WebhookUrl", "URL"),
    ("bool", "boolean"),
    ("u16", "integer"),
    ("u32", "integer"),
    ("u64", "integer"),
    ("usize", "integer"),
    ("f64", "number"),
    ("GroupSize", "`\"auto\"` or integer"),
];

/// A struct or enum of the config module, and the file it is in.
struct Decl {
    file: String,
    item: Item,
}

/// What a field's type makes of it.
enum Class<'a> {
    Leaf(String),
    Struct(&'a Decl),
    /// An enum whose variants carry keys: a table per kind.
    Kinds(&'a Decl),
    Map(Box<Class<'a>>),
    List(Box<Class<'a>>),
}

pub struct Reader {
    decls: HashMap<String, Decl>,
}

impl Reader {
    /// Every struct and enum of the `.rs` files in `dir`.
    pub fn read(dir: &std::path::Path) -> Reader {
        let mut decls = HashMap::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("the config module's directory")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).expect("a config source file");
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = format!("src/config/{}", path.file_name().unwrap().to_string_lossy());
            for item in file.items {
                let ident = match &item {
                    Item::Struct(s) => s.ident.to_string(),
                    Item::Enum(e) => e.ident.to_string(),
                    _ => continue,
                };
                decls.insert(
                    ident,
                    Decl {
                        file: name.clone(),
                        item,
                    },
                );
            }
        }
        Reader { decls }
    }

    /// The schema of `root`'s fields.
    pub fn schema(&self, root: &str) -> Schema {
        let mut schema = Schema::default();
        let Some(Decl {
            item: Item::Struct(s),
            file,
        }) = self.decls.get(root)
        else {
            schema
                .problems
                .push(format!("no struct {root} in src/config"));
            return schema;
        };
        schema.intro = doc_of(&s.attrs);
        // The root is read section by section, each with its defaults.
        let mut top = Table {
            path: Vec::new(),
            kind: None,
            doc: String::new(),
            keys: Vec::new(),
        };
        let mut nested = Vec::new();
        self.fields(
            &mut schema,
            &mut top,
            &mut nested,
            &s.fields,
            true,
            file,
            root,
        );
        if !top.keys.is_empty() {
            schema.problems.push(format!(
                "{root} has keys outside a section: {:?}",
                top.keys.iter().map(|k| show(&k.path)).collect::<Vec<_>>()
            ));
        }
        self.nested(&mut schema, nested);
        schema
    }

    /// A table per nested struct, in field order (each followed by its own nested ones).
    fn nested(&self, schema: &mut Schema, nested: Vec<Nested<'_>>) {
        for n in nested {
            match n.class {
                Class::Struct(decl) => self.table(schema, n.path, n.kind, n.doc, decl),
                Class::Kinds(decl) => self.kinds(schema, n.path, n.doc, decl),
                _ => unreachable!("only tables are nested"),
            }
        }
    }

    fn table(
        &self,
        schema: &mut Schema,
        path: Vec<Seg>,
        kind: Option<String>,
        doc: String,
        decl: &Decl,
    ) {
        let Item::Struct(s) = &decl.item else {
            unreachable!("a struct")
        };
        let container = match Serde::of(&s.attrs) {
            Ok(c) => c,
            Err(e) => {
                schema
                    .problems
                    .push(format!("{}: {}: {e}", decl.file, s.ident));
                Serde::default()
            }
        };
        let mut table = Table {
            path,
            kind,
            doc,
            keys: Vec::new(),
        };
        let mut nested = Vec::new();
        let owner = s.ident.to_string();
        self.fields(
            schema,
            &mut table,
            &mut nested,
            &s.fields,
            container.default,
            &decl.file,
            &owner,
        );
        schema.tables.push(table);
        self.nested(schema, nested);
    }

    /// `[sinks.NAME]`: its `kind`, then a table per kind.
    fn kinds(&self, schema: &mut Schema, path: Vec<Seg>, doc: String, decl: &Decl) {
        let Item::Enum(e) = &decl.item else {
            unreachable!("an enum")
        };
        let rule = match Serde::of(&e.attrs) {
            Ok(c) => c.rename_all,
            Err(err) => {
                schema
                    .problems
                    .push(format!("{}: {}: {err}", decl.file, e.ident));
                None
            }
        };
        let mut names = Vec::new();
        for v in &e.variants {
            match renamed(&v.ident.to_string(), rule.as_deref()) {
                Ok(n) => names.push(n),
                Err(err) => schema.problems.push(format!("{}: {err}", decl.file)),
            }
        }
        let mut kind_path = path.clone();
        kind_path.push(Seg::Key(KIND_KEY.into()));
        let choices: Vec<String> = names.iter().map(|n| format!("`\"{n}\"`")).collect();
        schema.tables.push(Table {
            path: path.clone(),
            kind: None,
            doc,
            keys: vec![Key {
                path: kind_path,
                kind: None,
                ty: format!("one of {}", choices.join(", ")),
                default: Stated::Required,
                doc: "The kind of destination, which decides the other keys (below).".into(),
            }],
        });
        for (v, name) in e.variants.iter().zip(names) {
            let doc = doc_of(&v.attrs);
            let owner = format!("{}::{}", e.ident, v.ident);
            if doc.is_empty() {
                schema
                    .problems
                    .push(format!("{}: {owner}: no doc comment", decl.file));
            }
            match &v.fields {
                Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                    match self.classify(&f.unnamed[0].ty) {
                        Ok(Class::Struct(inner)) => {
                            self.table(schema, path.clone(), Some(name), doc, inner)
                        }
                        _ => schema.problems.push(format!(
                            "{}: {owner}: a kind's one field must be a config struct",
                            decl.file
                        )),
                    }
                }
                fields => {
                    let mut table = Table {
                        path: path.clone(),
                        kind: Some(name),
                        doc,
                        keys: Vec::new(),
                    };
                    let mut nested = Vec::new();
                    self.fields(
                        schema,
                        &mut table,
                        &mut nested,
                        fields,
                        false,
                        &decl.file,
                        &owner,
                    );
                    schema.tables.push(table);
                    self.nested(schema, nested);
                }
            }
        }
    }

    /// The keys of `fields` into `table`; their sub-tables into `nested`.
    #[allow(clippy::too_many_arguments)]
    fn fields<'a>(
        &'a self,
        schema: &mut Schema,
        table: &mut Table,
        nested: &mut Vec<Nested<'a>>,
        fields: &'a Fields,
        container_default: bool,
        file: &str,
        owner: &str,
    ) {
        for field in fields.iter() {
            let Some(ident) = &field.ident else { continue };
            let at = format!("{file}: {owner}.{ident}");
            let serde = match Serde::of(&field.attrs) {
                Ok(s) => s,
                Err(e) => {
                    schema.problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if serde.skip {
                continue;
            }
            let doc = doc_of(&field.attrs);
            let class = match self.classify(&field.ty) {
                Ok(c) => c,
                Err(e) => {
                    schema.problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if serde.flatten {
                match class {
                    Class::Struct(decl) => {
                        let Item::Struct(s) = &decl.item else {
                            continue;
                        };
                        let inner = Serde::of(&s.attrs).map(|c| c.default).unwrap_or(false);
                        let owner = s.ident.to_string();
                        self.fields(schema, table, nested, &s.fields, inner, &decl.file, &owner);
                    }
                    _ => schema
                        .problems
                        .push(format!("{at}: flatten of no config struct")),
                }
                continue;
            }
            let name = serde.rename.clone().unwrap_or_else(|| ident.to_string());
            let mut path = table.path.clone();
            path.push(Seg::Key(name));
            if let Some(ty) = class.leaf() {
                let key = key(
                    schema,
                    path,
                    &table.kind,
                    ty,
                    &doc,
                    container_default || serde.default,
                    &at,
                );
                table.keys.push(key);
                continue;
            }
            let class = match class {
                Class::Map(inner) => {
                    path.push(Seg::Name);
                    *inner
                }
                Class::List(inner) => {
                    path.push(Seg::Item);
                    *inner
                }
                other => other,
            };
            let own = match &class {
                Class::Struct(decl) | Class::Kinds(decl) => match &decl.item {
                    Item::Struct(s) => doc_of(&s.attrs),
                    Item::Enum(e) => doc_of(&e.attrs),
                    _ => String::new(),
                },
                _ => {
                    schema
                        .problems
                        .push(format!("{at}: a map or list of maps or lists"));
                    continue;
                }
            };
            // The type's own doc describes the table; the field's, where the type has none.
            let doc = if own.is_empty() { doc } else { own };
            if doc.is_empty() {
                schema.problems.push(format!(
                    "{}: no doc comment, on the field or its type ({at})",
                    show(&path)
                ));
            }
            nested.push(Nested {
                path,
                kind: table.kind.clone(),
                doc,
                class,
            });
        }
    }

    fn classify(&self, ty: &Type) -> Result<Class<'_>, String> {
        let Type::Path(p) = ty else {
            return Err("a type that is no path".into());
        };
        let seg = p.path.segments.last().ok_or("an empty type path")?;
        let name = seg.ident.to_string();
        let args: Vec<&Type> = match &seg.arguments {
            PathArguments::AngleBracketed(a) => a
                .args
                .iter()
                .filter_map(|g| match g {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        match (name.as_str(), args.as_slice()) {
            ("Option" | "Box", [t]) => return self.classify(t),
            ("Vec", [t]) => return Ok(Class::List(Box::new(self.classify(t)?))),
            ("BTreeMap" | "HashMap", [_, t]) => return Ok(Class::Map(Box::new(self.classify(t)?))),
            _ => {}
        }
        if let Some((_, shown)) = TYPE_NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(Class::Leaf(shown.to_string()));
        }
        match self.decls.get(&name) {
            Some(decl @ Decl { item: Item::Struct(_), .. }) => Ok(Class::Struct(decl)),
            Some(decl @ Decl { item: Item::Enum(e), .. }) => {
                if !e.variants.iter().all(|v| matches!(v.fields, Fields::Unit)) {
                    return Ok(Class::Kinds(decl));
                }
                let rule = Serde::of(&e.attrs)?.rename_all;
                let names = e
                    .variants
                    .iter()
                    .map(|v| renamed(&v.ident.to_string(), rule.as_deref()).map(|n| format!("`\"{n}\"`")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Class::Leaf(format!("one of {}", names.join(", "))))
            }
            _ => Err(format!(
                "no type name for {name}: add one to TYPE_NAMES in tests/it/config_reference/schema.rs"
            )),
        }
    }
}

/// A sub-table found among a table's fields, walked after it.
struct Nested<'a> {
    path: Vec<Seg>,
    kind: Option<String>,
    doc: String,
    class: Class<'a>,
}

impl Class<'_> {
    /// The type column of a key (a value, a list or table of values), or `None` for a table.
    fn leaf(&self) -> Option<String> {
        match self {
            Class::Leaf(t) => Some(t.clone()),
            Class::Map(inner) => match &**inner {
                Class::Leaf(t) => Some(format!("table of {}", plural(t))),
                _ => None,
            },
            Class::List(inner) => match &**inner {
                Class::Leaf(t) => Some(format!("list of {}", plural(t))),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A key, with what its doc says of it (and what is missing from the doc, as a problem).
fn key(
    schema: &mut Schema,
    path: Vec<Seg>,
    kind: &Option<String>,
    ty: String,
    doc: &str,
    has_default: bool,
    at: &str,
) -> Key {
    let shown = show(&path);
    let (body, statement) = split_default(doc);
    if body.is_empty() {
        schema
            .problems
            .push(format!("{shown}: no doc comment ({at})"));
    }
    let default = match (has_default, statement) {
        (false, None) => Stated::Required,
        (false, Some(_)) => {
            schema.problems.push(format!(
                "{shown}: serde requires it (no default), yet its doc states a default ({at})"
            ));
            Stated::Required
        }
        (true, None) => {
            schema.problems.push(format!(
                "{shown}: its doc comment states no default: end it with a line `Default: …` ({at})"
            ));
            Stated::Text("?".into())
        }
        (true, Some(statement)) => parse_stated(&statement).unwrap_or_else(|e| {
            schema
                .problems
                .push(format!("{shown}: its stated default: {e} ({at})"));
            Stated::Text(statement)
        }),
    };
    Key {
        path,
        kind: kind.clone(),
        ty,
        default,
        doc: body,
    }
}
