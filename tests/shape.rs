//! The workspace's shape, checked: dependencies point inward (from the
//! binary through the API surfaces and the service to the store and the
//! core; the client and the API's types stand apart from the server), no module of any crate imports, directly or through others, a
//! module that imports it, and no source file grows past one reader's sitting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Transport, database and metrics libraries.
const TRANSPORT: &[&str] = &["tonic", "prost", "hyper", "axum", "h2"];
const DATABASE: &[&str] = &["sea-orm", "sqlx", "latchkey-migrations"];
const METRICS: &[&str] = &["prometheus"];
/// The server's own crates.
const SERVER: &[&str] = &[
    "latchkey-core",
    "latchkey-store",
    "latchkey-service",
    "latchkey-api",
];

/// Each crate and what it must not depend on, even indirectly.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let all = |groups: &[&[&'static str]]| groups.concat();
    vec![
        (
            "latchkey-core",
            all(&[
                TRANSPORT,
                DATABASE,
                METRICS,
                &[
                    "latchkey-store",
                    "latchkey-service",
                    "latchkey-api",
                    "latchkey",
                ],
            ]),
        ),
        (
            "latchkey-migrations",
            all(&[TRANSPORT, METRICS, &["latchkey-core", "latchkey-store"]]),
        ),
        (
            "latchkey-store",
            all(&[
                TRANSPORT,
                METRICS,
                &["latchkey-service", "latchkey-api", "latchkey"],
            ]),
        ),
        (
            "latchkey-service",
            all(&[TRANSPORT, METRICS, &["latchkey-api", "latchkey"]]),
        ),
        ("latchkey-api", all(&[METRICS, &["latchkey"]])),
        // The published pair a service embeds: the API's types, and the
        // client over them; nothing of the server.
        (
            "latchkey-proto",
            all(&[
                DATABASE,
                METRICS,
                &[
                    "latchkey-core",
                    "latchkey-client",
                    "latchkey-api",
                    "latchkey",
                ],
            ]),
        ),
        (
            "latchkey-client",
            all(&[DATABASE, METRICS, SERVER, &["latchkey"]]),
        ),
    ]
}

/// Every package in Cargo.lock and the names of its dependencies. The lock
/// file is the union over the workspace's features and dev-dependencies, so
/// what it reaches from a crate includes what that crate really builds with.
fn lock_graph() -> BTreeMap<String, BTreeSet<String>> {
    let lock = std::fs::read_to_string(Path::new(ROOT).join("Cargo.lock")).unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name = String::new();
    let mut in_deps = false;
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            in_deps = false;
        } else if let Some(n) = line.strip_prefix("name = ") {
            name = n.trim_matches('"').to_owned();
            graph.entry(name.clone()).or_default();
        } else if line == "dependencies = [" {
            in_deps = true;
        } else if in_deps && line == "]" {
            in_deps = false;
        } else if in_deps {
            let dep = line.trim_matches(|c| c == '"' || c == ',');
            let dep = dep.split_whitespace().next().unwrap_or_default();
            graph.get_mut(&name).unwrap().insert(dep.to_owned());
        }
    }
    graph
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(n) = stack.pop() {
        if seen.insert(n.clone()) {
            stack.extend(graph.get(&n).into_iter().flatten().cloned());
        }
    }
    seen.remove(from);
    seen
}

#[test]
fn dependencies_point_inward() {
    let graph = lock_graph();
    let mut wrong = Vec::new();
    for (krate, forbidden) in rules() {
        assert!(graph.contains_key(krate), "{krate} is not in Cargo.lock");
        let deps = reachable(&graph, krate);
        for f in forbidden {
            if deps.contains(f) {
                wrong.push(format!("{krate} depends on {f}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The source roots: the binary's and each crate's.
fn source_roots() -> Vec<PathBuf> {
    let mut roots = vec![Path::new(ROOT).join("src")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    roots.extend(crates);
    roots
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `a/b.rs` and `a/b/mod.rs` are `a::b`,
/// `lib.rs` and `main.rs` the crate root (empty).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Source without comments, string and char literals, and `#[cfg(test)]`
/// modules (a test module reads its parent by design).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"r#\"") || b[i..].starts_with(b"r\"") {
            let hashes = usize::from(b[i + 1] == b'#');
            let close: &[u8] = if hashes == 1 { b"\"#" } else { b"\"" };
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\''
            && i + 2 < b.len()
            && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && b[i + 3] == b'\''))
        {
            i += if b[i + 1] == b'\\' { 4 } else { 3 };
            out.push_str("' '");
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a module names: `crate::…`, `super::…`, `self::…` and its child
/// modules' `name::…`, each with its first segments (a `{…}` group is
/// expanded one level), resolved against the module (and any inline module
/// the reference sits in).
fn references(code: &str, module: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut refs = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let word_at = |i: usize| -> String {
        chars[i..]
            .iter()
            .take_while(|c| is_ident(**c))
            .collect::<String>()
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if !is_ident(c) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let word = word_at(i);
        let after = i + word.len();
        if word == "pub" {
            // A re-export is the module's façade, not something it uses.
            let rest: String = chars[after..].iter().take(20).collect();
            let rest = rest.trim_start();
            if rest.starts_with("use ") || rest.starts_with("(crate) use ") {
                while i < chars.len() && chars[i] != ';' {
                    i += 1;
                }
                continue;
            }
        }
        if word == "mod" {
            let rest: String = chars[after..].iter().take(80).collect();
            let name = rest.trim_start();
            let name: String = name.chars().take_while(|c| is_ident(*c)).collect();
            let tail = rest.trim_start()[name.len()..].trim_start();
            if tail.starts_with('{') {
                inline.push((name, depth));
            }
            i = after;
            continue;
        }
        if !chars[after..].starts_with(&[':', ':']) {
            i = after;
            continue;
        }
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let mut base = match word.as_str() {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            w if inline.is_empty() && children.contains(w) => {
                let mut m = module.to_vec();
                m.push(w.to_owned());
                m
            }
            _ => {
                i = after;
                continue;
            }
        };
        let mut j = after + 2;
        // `super::super::…`
        while word == "super" && chars[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
            base.pop();
            j += 7;
        }
        let mut tails = Vec::new();
        if chars.get(j) == Some(&'{') {
            let mut level = 0;
            let mut start = j + 1;
            let mut k = j;
            while k < chars.len() {
                match chars[k] {
                    '{' => level += 1,
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            tails.push(chars[start..k].iter().collect::<String>());
                            break;
                        }
                    }
                    ',' if level == 1 => {
                        tails.push(chars[start..k].iter().collect::<String>());
                        start = k + 1;
                    }
                    _ => {}
                }
                k += 1;
            }
        } else {
            tails.push(
                chars[j..]
                    .iter()
                    .take_while(|c| is_ident(**c) || **c == ':')
                    .collect(),
            );
        }
        for tail in tails {
            let mut path = base.clone();
            path.extend(
                tail.trim()
                    .split("::")
                    .map(str::trim)
                    .take_while(|s| !s.is_empty() && s.chars().all(is_ident))
                    .map(str::to_owned),
            );
            refs.push(path);
        }
        i = j;
    }
    refs
}

#[test]
fn no_module_imports_itself_through_others() {
    let mut cycles = Vec::new();
    for root in source_roots() {
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        // A binary next to a library is a crate of its own: its modules are
        // named from it, not from the library.
        let crates_here: Vec<Vec<&PathBuf>> = {
            let (bins, libs): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(|f| {
                f.file_name().is_some_and(|n| n == "main.rs") && f.parent() == Some(&root)
            });
            let bin_modules: BTreeSet<PathBuf> = bins
                .iter()
                .flat_map(|b| declared_modules(&code_of(&std::fs::read_to_string(b).unwrap())))
                .map(|m| root.join(format!("{m}.rs")))
                .collect();
            let (bin_files, lib_files): (Vec<&PathBuf>, Vec<&PathBuf>) =
                libs.into_iter().partition(|f| bin_modules.contains(*f));
            vec![lib_files, bins.into_iter().chain(bin_files).collect()]
        };
        for files in crates_here {
            cycles.extend(cycles_in(&root, &files));
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// The modules a file declares with `mod name;`.
fn declared_modules(code: &str) -> BTreeSet<String> {
    code.split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            match words.as_slice() {
                [.., "mod", name] if name.chars().all(is_ident) => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// The import cycles among one crate's module files.
fn cycles_in(root: &Path, files: &[&PathBuf]) -> Vec<String> {
    let mut cycles = Vec::new();
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            (module_of(root, f), code_of(&text))
        })
        .collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code) in &modules {
        let children = declared_modules(code);
        for path in references(code, module, &children) {
            // The longest module the path names, if it is another file.
            let target = (0..=path.len())
                .rev()
                .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k));
            let Some(target) = target.filter(|t| *t != module) else {
                continue;
            };
            graph
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            // A module includes its submodules: when one file uses
            // another in a different branch, the branches' roots (the
            // children of the two files' closest common module) use
            // each other too.
            let common = module
                .iter()
                .zip(target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                graph
                    .entry(module[..=common].to_vec())
                    .or_default()
                    .insert(target[..=common].to_vec());
            }
        }
    }
    // A cycle: a way back to a module through another one.
    for start in graph.keys() {
        let mut stack = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((m, trail)) = stack.pop() {
            for next in graph.get(m).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail
                        .iter()
                        .copied()
                        .chain([next])
                        .map(|m| {
                            if m.is_empty() {
                                "crate".into()
                            } else {
                                m.join("::")
                            }
                        })
                        .collect();
                    cycles.push(format!("{}: {}", root.display(), names.join(" → ")));
                } else if seen.insert(next) {
                    let mut t = trail.clone();
                    t.push(next);
                    stack.push((next, t));
                }
            }
        }
    }
    cycles
}

/// The most lines a source file may have.
const MAX_LINES: usize = 600;

#[test]
fn no_source_file_is_too_long_to_read() {
    let mut long = Vec::new();
    for root in source_roots() {
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        for f in files {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            if lines > MAX_LINES {
                long.push(format!("{}: {lines} lines", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by concern (at most {MAX_LINES} lines each):\n{}",
        long.join("\n")
    );
}
