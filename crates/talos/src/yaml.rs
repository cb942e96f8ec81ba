//! The YAML the machine-config documents are written in: block mappings and sequences of
//! strings and booleans, indented by two, as upstream's own patches look. Small and
//! deterministic: what goes in comes out in the same order, and any string that is not plainly
//! safe is double-quoted with escapes, so no value can change the document's structure.

use std::fmt::Write as _;

/// A YAML node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Str(String),
    Bool(bool),
    /// Keys in the order written.
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
}

impl Node {
    pub fn str(s: impl Into<String>) -> Self {
        Node::Str(s.into())
    }

    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Self {
        Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// Several documents, separated by `---` lines, each ending in a newline.
pub fn documents(docs: &[Node]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&document(doc));
    }
    out
}

/// One document: a mapping at the top level (what a config document is).
pub fn document(node: &Node) -> String {
    let mut out = String::new();
    match node {
        Node::Map(entries) => map(&mut out, entries, 0),
        Node::List(items) => list(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn map(out: &mut String, entries: &[(String, Node)], indent: usize) {
    for (key, value) in entries {
        let _ = write!(out, "{:indent$}{}:", "", key_text(key));
        child(out, value, indent);
    }
}

fn list(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        let _ = write!(out, "{:indent$}-", "");
        match item {
            // A mapping in a list item starts on the dash's line, the rest aligned with it.
            Node::Map(entries) if !entries.is_empty() => {
                let mut inner = String::new();
                map(&mut inner, entries, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            Node::Map(_) => out.push_str(" {}\n"),
            Node::List(inner) if !inner.is_empty() => {
                out.push('\n');
                list(out, inner, indent + 2);
            }
            Node::List(_) => out.push_str(" []\n"),
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a scalar on the same line, a collection indented below it.
fn child(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            map(out, entries, indent + 2);
        }
        Node::Map(_) => out.push_str(" {}\n"),
        Node::List(items) if !items.is_empty() => {
            out.push('\n');
            list(out, items, indent + 2);
        }
        Node::List(_) => out.push_str(" []\n"),
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

/// A scalar's text; collections are written by `child` and `list` before this is reached.
fn scalar_text(node: &Node) -> String {
    match node {
        Node::Bool(b) => b.to_string(),
        Node::Str(s) => string(s, false),
        Node::Map(_) | Node::List(_) => String::new(),
    }
}

fn key_text(key: &str) -> String {
    string(key, true)
}

/// A string as written: plain when it cannot be read as anything else, else double-quoted.
fn string(s: &str, is_key: bool) -> String {
    if is_plain(s, is_key) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

/// Plain (unquoted) only for `A-Z a-z 0-9 . _ / -` and, outside keys, `:` (URLs, `host:port`)
/// not at the end; starting with a letter or digit; and not a word or number YAML would read
/// as a boolean, null or number.
fn is_plain(s: &str, is_key: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-') || (!is_key && c == ':')
    };
    if !first.is_ascii_alphanumeric() || !s.chars().all(allowed) || s.ends_with(':') {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "nan" | "inf"
    ) {
        return false;
    }
    // Starting with a digit, it could be a number or a date in YAML 1.1 or 1.2 (`1.5`, `0x1f`,
    // `1e3`, `1_000`, `1:30`, `2024-01-01`) unless a letter no number has is in it (`3GiB`).
    !first.is_ascii_digit()
        || s.chars()
            .any(|c| c.is_ascii_alphabetic() && !"abcdefoxABCDEFOX".contains(c))
}

/// A double-quoted YAML string: `\` and `"` escaped, every control character as an escape.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use yaml_rust2::{Yaml, YamlLoader};

    fn parse(text: &str) -> Vec<Yaml> {
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn any_string_reads_back_as_itself() {
        for s in [
            "plain",
            "v1alpha1",
            "3GiB",
            "system_disk",
            "http://127.0.0.1:3172",
            "http://[::1]:3172",
            "host:5000",
            "",
            "true",
            "False",
            "yes",
            "off",
            "null",
            "~",
            "1",
            "1.5",
            "0.28.8",
            "0x1f",
            "1e3",
            "1_000",
            "1:30",
            "2024-01-01",
            ".inf",
            "-x",
            "- x",
            "a: b",
            "a #b",
            "#x",
            "*",
            "&a",
            "!tag",
            "'q'",
            "\"dq\"",
            "back\\slash",
            "new\nline",
            "tab\there",
            "nul\0",
            "end:",
            "[x]",
            "{x}",
            "é",
        ] {
            let doc = Node::map([(s, Node::str(s))]);
            let text = document(&doc);
            let parsed = parse(&text);
            assert_eq!(parsed.len(), 1, "{text}");
            let hash = parsed[0].as_hash().unwrap_or_else(|| panic!("{text}"));
            assert_eq!(hash.len(), 1, "{text}");
            let (k, v) = hash.iter().next().unwrap();
            assert_eq!(k, &Yaml::String(s.to_owned()), "key {s:?}: {text}");
            assert_eq!(v, &Yaml::String(s.to_owned()), "value {s:?}: {text}");
        }
    }

    #[test]
    fn nesting_lists_and_documents() {
        let doc = Node::map([
            (
                "a",
                Node::map([("b", Node::Bool(true)), ("c", Node::Bool(false))]),
            ),
            (
                "l",
                Node::List(vec![
                    Node::map([("url", Node::str("x")), ("o", Node::Bool(true))]),
                    Node::str("s"),
                    Node::List(vec![Node::str("in")]),
                    Node::Map(vec![]),
                    Node::List(vec![]),
                ]),
            ),
            ("e", Node::Map(vec![])),
            ("f", Node::List(vec![])),
        ]);
        let text = documents(&[doc.clone(), doc]);
        assert_eq!(
            text.split("---\n").next().unwrap(),
            "a:\n  b: true\n  c: false\nl:\n  - url: x\n    o: true\n  - s\n  -\n    - in\n  - {}\n  - []\ne: {}\nf: []\n"
        );
        let parsed = parse(&text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], parsed[1]);
        let l = parsed[0]["l"].as_vec().unwrap();
        assert_eq!(l[0]["url"].as_str(), Some("x"));
        assert_eq!(l[0]["o"].as_bool(), Some(true));
        assert_eq!(l[2][0].as_str(), Some("in"));
        assert_eq!(parsed[0]["a"]["c"].as_bool(), Some(false));
    }
}
