//! A small YAML writer: block mappings and sequences, every string
//! double-quoted (so nothing is misread as a number, a bool or a null), and
//! `#` comments attached to mapping entries. Enough for compose files and
//! Kubernetes manifests; no anchors, no flow style beyond `[]` and `{}`.
//!
//! Owns: YAML layout. Must not touch: what the documents mean.

use super::quote::{yaml_key, yaml_str};

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Y {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Y>),
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping, with comment lines written above it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) comments: Vec<String>,
    pub(crate) key: String,
    pub(crate) value: Y,
}

impl Y {
    pub(crate) fn str(s: impl Into<String>) -> Y {
        Y::Str(s.into())
    }

    pub(crate) fn int(n: impl TryInto<i64>) -> Y {
        Y::Int(n.try_into().unwrap_or(i64::MAX))
    }

    pub(crate) fn strs<I, S>(items: I) -> Y
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Y::Seq(items.into_iter().map(|s| Y::Str(s.into())).collect())
    }
}

/// Builds a mapping entry by entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct MapBuilder(Vec<Entry>);

impl MapBuilder {
    pub(crate) fn new() -> MapBuilder {
        MapBuilder(Vec::new())
    }

    pub(crate) fn put(mut self, key: &str, value: Y) -> MapBuilder {
        self.0.push(Entry {
            comments: Vec::new(),
            key: key.to_string(),
            value,
        });
        self
    }

    /// Adds `key: value` with comment lines above it.
    pub(crate) fn put_commented(
        mut self,
        comments: Vec<String>,
        key: &str,
        value: Y,
    ) -> MapBuilder {
        self.0.push(Entry {
            comments,
            key: key.to_string(),
            value,
        });
        self
    }

    pub(crate) fn push(&mut self, key: &str, value: Y) {
        self.0.push(Entry {
            comments: Vec::new(),
            key: key.to_string(),
            value,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn build(self) -> Y {
        Y::Map(self.0)
    }
}

/// The document `value` (a mapping, usually), ending in a newline.
pub(crate) fn to_string(value: &Y) -> String {
    let mut out = String::new();
    match value {
        Y::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
        Y::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(v: &Y) -> String {
    match v {
        Y::Str(s) => yaml_str(s),
        Y::Int(n) => n.to_string(),
        Y::Bool(b) => b.to_string(),
        Y::Seq(_) => "[]".to_string(),
        Y::Map(_) => "{}".to_string(),
    }
}

fn write_comments(out: &mut String, comments: &[String], indent: usize) {
    for c in comments {
        if c.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str("#\n");
        }
        for line in c.lines() {
            out.push_str(&" ".repeat(indent));
            if line.is_empty() {
                out.push_str("#\n");
            } else {
                out.push_str("# ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

fn write_map(out: &mut String, entries: &[Entry], indent: usize) {
    for e in entries {
        write_comments(out, &e.comments, indent);
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_key(&e.key));
        out.push(':');
        write_value_after_key(out, &e.value, indent);
    }
}

fn write_value_after_key(out: &mut String, v: &Y, indent: usize) {
    match v {
        Y::Map(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Y::Seq(s) if !s.is_empty() => {
            out.push('\n');
            write_seq(out, s, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Y], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Y::Map(m) if !m.is_empty() => {
                // The first entry goes on the dash's line; its comments above the dash.
                let first = &m[0];
                if !first.comments.is_empty() {
                    // Comments cannot sit between `-` and a key: put them first.
                    out.truncate(out.len() - 1 - indent);
                    write_comments(out, &first.comments, indent);
                    out.push_str(&" ".repeat(indent));
                    out.push('-');
                }
                out.push(' ');
                out.push_str(&yaml_key(&first.key));
                out.push(':');
                write_value_after_key(out, &first.value, indent + 2);
                write_map(out, &m[1..], indent + 2);
            }
            Y::Seq(s) if !s.is_empty() => {
                out.push('\n');
                write_seq(out, s, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_documents() {
        let doc = MapBuilder::new()
            .put_commented(
                vec!["a comment".into(), String::new()],
                "services",
                MapBuilder::new()
                    .put(
                        "api",
                        MapBuilder::new()
                            .put("image", Y::str("app:1"))
                            .put("command", Y::strs(["python3", "a b"]))
                            .put("replicas", Y::int(2))
                            .put("empty", Y::Seq(vec![]))
                            .put(
                                "list",
                                Y::Seq(vec![
                                    MapBuilder::new()
                                        .put("name", Y::str("A"))
                                        .put("value", Y::str("1"))
                                        .build(),
                                    MapBuilder::new()
                                        .put_commented(vec!["why".into()], "name", Y::str("B"))
                                        .build(),
                                ]),
                            )
                            .put("flag", Y::Bool(true))
                            .build(),
                    )
                    .build(),
            )
            .build();
        let want = "\
# a comment
#
services:
  api:
    image: \"app:1\"
    command:
      - \"python3\"
      - \"a b\"
    replicas: 2
    empty: []
    list:
      - name: \"A\"
        value: \"1\"
      # why
      - name: \"B\"
    flag: true
";
        assert_eq!(to_string(&doc), want);
    }
}
