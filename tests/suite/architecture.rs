//! The layer rules of docs/design.md's architecture section, checked from the source rather than
//! by eye: which file of `src/` names which (`crate::…`, `$crate::…` and `super::…` paths
//! outside comments and test modules, `use` groups included), then
//! - no two files depend on each other, directly or around a loop (a cycle of files);
//! - `src/mqtt/` (the sans-IO protocol core) names nothing outside itself but the error type
//!   and the topic rules.
//!
//! A path is charged to the file of the longest module prefix it names: `crate::mqtt::packet::X`
//! is `src/mqtt/v5/mod.rs` even when `X` is re-exported there from another file, so a
//! re-export can close a loop too — name the defining file to avoid one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, by module path (`src/a/b.rs` and `src/a/b/mod.rs` are
/// `["a", "b"]`, `src/lib.rs` is `[]`).
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().with_extension("");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
                segs.pop();
            }
            (segs, p)
        })
        .collect()
}

/// The source without comments and without the test module at its end.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string ("http://…") is kept: it is not a path anyway.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    i
}

/// The module paths a piece of code names: each `crate::` / `super::` path, with a `use`
/// group's members as paths of their own.
fn named_paths(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let starts = (rest.starts_with(b"crate::") || rest.starts_with(b"super::"))
            && (i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut segs: Vec<String> = Vec::new();
        let mut j = i;
        let mut base = here.to_vec();
        let mut absolute = false;
        // Leading `crate` / `super`s.
        loop {
            let end = ident_end(s, j);
            // Identifiers are ASCII: a valid slice.
            let word = std::str::from_utf8(&s[j..end]).unwrap();
            if word == "crate" && segs.is_empty() && !absolute {
                absolute = true;
                base.clear();
            } else if word == "super" && segs.is_empty() {
                base.pop();
            } else {
                segs.push(word.to_string());
            }
            j = end;
            if s[j..].starts_with(b"::") && j + 2 < s.len() {
                j += 2;
                if s[j] == b'{' {
                    // A group: each member's first segment.
                    let close = s[j..]
                        .iter()
                        .position(|&b| b == b'}')
                        .map_or(s.len(), |k| j + k);
                    for member in code[j + 1..close].split(',') {
                        let first = member.trim().trim_start_matches('{');
                        let first = first.split("::").next().unwrap_or("").trim();
                        let mut p = base.clone();
                        p.extend(segs.iter().cloned());
                        if !first.is_empty() && first != "self" {
                            p.push(first.to_string());
                        }
                        out.push(p);
                    }
                    j = close;
                    break;
                }
                if !(s[j].is_ascii_alphabetic() || s[j] == b'_') {
                    break;
                }
            } else {
                let mut p = base.clone();
                p.extend(segs.iter().cloned());
                out.push(p);
                break;
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// File → files it names.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&root);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (path, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        // `super` of `a/b.rs` (module a::b) and of `a/b/mod.rs` (module a::b) is `a`.
        let here = path.clone();
        let targets = edges.entry(file.clone()).or_default();
        for named in named_paths(&code(&text), &here) {
            let target = (0..=named.len())
                .rev()
                .find_map(|k| mods.get(&named[..k]))
                .expect("the crate root at least");
            if target != file && !target.ends_with("lib.rs") {
                targets.insert(target.clone());
            }
        }
    }
    edges
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a PathBuf) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn short(p: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[test]
fn no_file_of_src_depends_on_itself_around_a_loop() {
    let edges = graph();
    let found = cycles(&edges);
    let mut report = String::new();
    for comp in &found {
        report.push_str("a cycle:\n");
        for a in comp {
            for b in &edges[a] {
                if comp.contains(b) {
                    report.push_str(&format!("  {} -> {}\n", short(a), short(b)));
                }
            }
        }
    }
    assert!(found.is_empty(), "{report}");
}

#[test]
fn the_protocol_core_names_only_the_error_type_and_the_topic_rules() {
    let edges = graph();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mqtt = root.join("mqtt");
    let allowed = [root.join("error.rs"), root.join("topic.rs")];
    let mut wrong = Vec::new();
    for (a, targets) in &edges {
        if a.starts_with(&mqtt) {
            for b in targets {
                if !b.starts_with(&mqtt) && !allowed.contains(b) {
                    wrong.push(format!("{} -> {}", short(a), short(b)));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The checker sees what it must: a loop made on purpose is found, and the paths of a `use`
/// group, `super::` and `$crate::` are all followed.
#[test]
fn the_checker_finds_what_it_looks_for() {
    let here: Vec<String> = vec!["net".into(), "tcp".into()];
    let paths = named_paths(
        "use crate::error::{Error, Result};\nlet x = super::websocket::map_io(a);\n\
         $crate::options::LastWill; use super::{proxy, tls::x};",
        &here,
    );
    let has = |p: &[&str]| {
        paths
            .iter()
            .any(|q| q.iter().map(String::as_str).eq(p.iter().copied()))
    };
    assert!(
        has(&["error", "Error"]) && has(&["error", "Result"]),
        "{paths:?}"
    );
    assert!(has(&["net", "websocket", "map_io"]), "{paths:?}");
    assert!(has(&["options", "LastWill"]), "{paths:?}");
    assert!(has(&["net", "proxy"]) && has(&["net", "tls"]), "{paths:?}");
    assert_eq!(
        code("a // crate::x\n#[cfg(test)]\nmod tests { crate::y }"),
        "a "
    );
    let mut edges = BTreeMap::new();
    let (a, b, c) = (PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c"));
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([c.clone()]));
    edges.insert(c.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(cycles(&edges).len(), 1);
    edges.get_mut(&c).unwrap().clear();
    assert!(cycles(&edges).is_empty());
}

/// Functions of `src/` (outside test modules) longer than this many lines must be listed in
/// [`LONG_FUNCTIONS`] with the reason they stay whole.
const MAX_FUNCTION_LINES: usize = 80;

/// `(file, function, reason)`: the long functions that stay long, and why.
const LONG_FUNCTIONS: &[(&str, &str, &str)] = &[
    ("src/error.rs", "fmt", "one arm per error variant, each a sentence; split, the messages would be scattered"),
    ("src/options.rs", "validate", "one check per option in the order of the docs; each is two lines"),
    ("src/provider/aws_iot.rs", "build", "each auth mode's refusals in one place, as docs/guide.md's table lists them"),
    ("src/mqtt/codec.rs", "feed_shared", "the framer's hot loop: partial packet, whole packets sliced, skip — one state machine"),
    ("src/net/tls_words.rs", "server_certificate_problem", "one match arm per certificate problem rustls reports, each a sentence saying what to do: a table in code form"),
    ("src/pubsub.rs", "publish_nowait", "checks, outbox acceptance and fan-out to providers in the order the guarantees need"),
    ("src/outbox/mod.rs", "open", "lock, replay, binding check, rewrite: the order is the crash-safety argument"),
    ("src/connection/mod.rs", "open", "the caller's side of the first connect and the thread's start, in order"),
    ("src/outbox/log.rs", "replay_stream", "the record loop and the torn-tail decision share the bytes read; the decision is the format's rule"),
];

/// Every function's length in lines, by file: `(file, name, lines)`.
fn function_lengths() -> Vec<(String, String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for file in modules(&root).values() {
        let text = std::fs::read_to_string(file).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let rest = ["pub(crate) ", "pub(super) ", "pub ", "const ", "unsafe "]
                .iter()
                .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
            let Some(sig) = rest.strip_prefix("fn ") else {
                continue;
            };
            if line.trim_end().ends_with(';') {
                continue;
            }
            let name: String = sig
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
                out.push((short(file), name, end + 2));
            }
        }
    }
    out
}

#[test]
fn no_function_is_long_without_a_stated_reason() {
    let mut unexplained = Vec::new();
    for (file, name, n) in function_lengths() {
        if n > MAX_FUNCTION_LINES
            && !LONG_FUNCTIONS
                .iter()
                .any(|(f, g, why)| *f == file && *g == name && !why.is_empty())
        {
            unexplained.push(format!("{file}: {name} is {n} lines"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "split these, or list them in LONG_FUNCTIONS with the reason:\n{}",
        unexplained.join("\n")
    );
    // The list holds only functions that are still long.
    for (f, g, _) in LONG_FUNCTIONS {
        assert!(
            function_lengths()
                .iter()
                .any(|(file, name, n)| file == f && name == g && *n > MAX_FUNCTION_LINES),
            "{f}: {g} is no longer long: take it off the list"
        );
    }
}
