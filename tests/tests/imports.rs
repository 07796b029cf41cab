//! No import circles anywhere in the workspace: no source file refers to a file that refers back
//! to it, directly or around a loop.
//!
//! Crates cannot form circles (cargo refuses them); files inside a crate can, and a circle is
//! where a reader following one connection or one event goes round in rings. This test reads
//! every crate's sources the way the compiler finds them (from each crate root through `mod x;`
//! declarations), resolves every `crate::`, `super::` and `self::` path (in `use` items and
//! inline) to the file that defines it, following `pub use` re-exports, and fails naming each
//! circle with a reference that makes it. A parent declaring `mod child;` is not a reference;
//! a parent using an item of its child is, and so is a child using an item of its parent.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One file of a crate's module tree.
#[derive(Debug)]
struct ModFile {
    /// Its module path from the crate root (empty for the root).
    path: Vec<String>,
    /// Child modules declared with `mod x;`, by name, to their file index.
    children: BTreeMap<String, usize>,
    /// `pub use` / `use` bindings: name -> the absolute path it stands for.
    bindings: BTreeMap<String, Vec<String>>,
    /// Every internal path this file refers to, made absolute, with the line it is on.
    refs: Vec<(Vec<String>, usize)>,
    /// The file on disk.
    file: PathBuf,
}

/// A token of Rust source, as much as this needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Path,  // ::
    Open,  // {
    Close, // }
    Semi,  // ;
    Comma, // ,
    Star,  // *
    Other,
}

/// Tokens with their line numbers; comments, strings and chars are skipped.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if b[i] == b'\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if i < b.len() && b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push((Tok::Other, line));
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && !b[..i]
                    .last()
                    .is_some_and(|p| p.is_ascii_alphanumeric() || *p == b'_') =>
            {
                // A raw string: r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push((Tok::Ident("r".into()), line));
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && b[j + 1..].iter().take(hashes).all(|h| *h == b'#') {
                        j += 1 + hashes;
                        break;
                    }
                    if b[j] == b'\n' {
                        line += 1;
                    }
                    j += 1;
                }
                i = j;
                out.push((Tok::Other, line));
            }
            b'\'' => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    i += 1;
                }
                out.push((Tok::Other, line));
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push((Tok::Path, line));
                i += 2;
            }
            b'{' => {
                out.push((Tok::Open, line));
                i += 1;
            }
            b'}' => {
                out.push((Tok::Close, line));
                i += 1;
            }
            b';' => {
                out.push((Tok::Semi, line));
                i += 1;
            }
            b',' => {
                out.push((Tok::Comma, line));
                i += 1;
            }
            b'*' => {
                out.push((Tok::Star, line));
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                // b"..." and br"..." are strings, not identifiers.
                let word = &src[start..i];
                if (word == "b" || word == "br") && b.get(i) == Some(&b'"') {
                    continue;
                }
                out.push((Tok::Ident(word.to_owned()), line));
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    out.push((Tok::Other, line));
                }
                i += 1;
            }
        }
    }
    out
}

/// What one file says: `mod x;` declarations, use trees, inline paths.
#[derive(Debug, Default)]
struct Parsed {
    /// `mod x;` (file modules), outside inline modules.
    mods: Vec<String>,
    /// (path as written, binding name or None for globs, inline module depth, line).
    uses: Vec<(Vec<String>, Option<String>, usize, usize)>,
    /// Inline paths (`a::b...` not preceded by `::`): (segments, inline depth, line). Those
    /// that start with neither crate/super/self nor a child module or binding of the file are
    /// other crates' and are left out when resolved.
    paths: Vec<(Vec<String>, usize, usize)>,
}

/// Expands a use tree starting at `toks[i]` with `prefix`; returns the index after it.
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(id)) => {
                path.push(id.clone());
                i += 1;
                match toks.get(i).map(|t| &t.0) {
                    Some(Tok::Path) => i += 1,
                    Some(Tok::Ident(kw)) if kw == "as" => {
                        let alias = match toks.get(i + 1).map(|t| &t.0) {
                            Some(Tok::Ident(a)) => a.clone(),
                            _ => String::new(),
                        };
                        out.push((path, Some(alias)));
                        return i + 2;
                    }
                    _ => {
                        let name = path.last().cloned();
                        // `use a::{self}` binds `a`.
                        if name.as_deref() == Some("self") {
                            path.pop();
                            let n = path.last().cloned();
                            out.push((path, n));
                        } else {
                            out.push((path, name));
                        }
                        return i;
                    }
                }
            }
            Some(Tok::Star) => {
                out.push((path, None));
                return i + 1;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        None => return i,
                        _ => i = use_tree(toks, i, path.clone(), out),
                    }
                }
            }
            _ => return i,
        }
    }
}

fn parse(src: &str) -> Parsed {
    let toks = tokenize(src);
    let mut p = Parsed::default();
    // Brace depth at which each open inline module started.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let ident = |i: usize| match toks.get(i).map(|t| &t.0) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        match tok {
            Tok::Open => {
                depth += 1;
                i += 1;
            }
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => match (ident(i + 1), toks.get(i + 2).map(|t| &t.0)) {
                (Some(name), Some(Tok::Semi)) if inline.is_empty() => {
                    p.mods.push(name.to_owned());
                    i += 3;
                }
                (Some(_), Some(Tok::Open)) => {
                    inline.push(depth);
                    depth += 1;
                    i += 3;
                }
                _ => i += 1,
            },
            Tok::Ident(w)
                if w == "use"
                    && !matches!(toks.get(i.wrapping_sub(1)).map(|t| &t.0), Some(Tok::Path)) =>
            {
                let mut trees = Vec::new();
                let mut j = i + 1;
                if matches!(toks.get(j).map(|t| &t.0), Some(Tok::Path)) {
                    j += 1;
                }
                let end = use_tree(&toks, j, Vec::new(), &mut trees);
                for (path, name) in trees {
                    p.uses.push((path, name, inline.len(), line));
                }
                i = end;
            }
            Tok::Ident(w)
                if matches!(toks.get(i + 1).map(|t| &t.0), Some(Tok::Path))
                    && !matches!(toks.get(i.wrapping_sub(1)).map(|t| &t.0), Some(Tok::Path)) =>
            {
                let mut segs = vec![w.clone()];
                let mut j = i + 1;
                while matches!(toks.get(j).map(|t| &t.0), Some(Tok::Path)) {
                    match ident(j + 1) {
                        Some(s) => {
                            segs.push(s.to_owned());
                            j += 2;
                        }
                        None => break,
                    }
                }
                p.paths.push((segs, inline.len(), line));
                i = j;
            }
            _ => i += 1,
        }
    }
    p
}

/// Makes a path as written absolute, from a file at `module` and `inline` modules deep inside
/// it. Paths into other crates (or std) give None.
fn absolute(written: &[String], module: &[String], inline: usize) -> Option<Vec<String>> {
    let first = written.first()?;
    match first.as_str() {
        "crate" => Some(written[1..].to_vec()),
        "super" | "self" => {
            // Inside an inline module, `super` first climbs out of it (back into this file).
            let mut here: Vec<String> = module.to_vec();
            let mut inline_left = inline;
            let mut rest = written;
            while let Some(s) = rest.first() {
                match s.as_str() {
                    "super" => {
                        if inline_left > 0 {
                            inline_left -= 1;
                        } else {
                            here.pop()?;
                        }
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            if inline_left > 0 {
                // Still inside this file's inline module: a reference to this file.
                return Some(module.to_vec());
            }
            here.extend(rest.iter().cloned());
            Some(here)
        }
        _ => None,
    }
}

/// [`absolute`], or a path that starts from a child module or a name bound by a `use` of the
/// file; None for other crates' paths.
fn relative(written: &[String], f: &ModFile, inline: usize) -> Option<Vec<String>> {
    if let Some(abs) = absolute(written, &f.path, inline) {
        return Some(abs);
    }
    let first = written.first()?;
    if f.children.contains_key(first) {
        let mut abs = f.path.clone();
        abs.extend(written.iter().cloned());
        return Some(abs);
    }
    let bound = f.bindings.get(first)?;
    let mut abs = bound.clone();
    abs.extend(written[1..].iter().cloned());
    Some(abs)
}

/// One crate's module tree, from one root file.
fn load_tree(root: &Path) -> Vec<ModFile> {
    let mut files: Vec<ModFile> = Vec::new();
    let mut queue = vec![(
        root.to_path_buf(),
        Vec::<String>::new(),
        None::<(usize, String)>,
    )];
    let mut parsed_all = Vec::new();
    while let Some((file, path, parent)) = queue.pop() {
        let src = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let parsed = parse(&src);
        let index = files.len();
        if let Some((p, name)) = parent {
            files[p].children.insert(name, index);
        }
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let is_root = path.is_empty() || stem == "mod";
        let dir = if is_root {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            file.with_extension("")
        };
        for m in &parsed.mods {
            let a = dir.join(format!("{m}.rs"));
            let b = dir.join(m).join("mod.rs");
            let child = if a.exists() { a } else { b };
            let mut child_path = path.clone();
            child_path.push(m.clone());
            if child.exists() {
                queue.push((child, child_path, Some((index, m.clone()))));
            }
        }
        files.push(ModFile {
            path,
            children: BTreeMap::new(),
            bindings: BTreeMap::new(),
            refs: Vec::new(),
            file,
        });
        parsed_all.push(parsed);
    }
    for (f, parsed) in files.iter_mut().zip(parsed_all) {
        // Two passes over the uses: a use may start from a name an earlier (or later) one
        // binds, or from a child module (`use relay::End;` in the parent).
        let mut pending = parsed.uses;
        for _ in 0..2 {
            let mut left = Vec::new();
            for (written, name, inline, line) in pending {
                match relative(&written, f, inline) {
                    Some(abs) => {
                        if let (Some(name), 0) = (name, inline) {
                            f.bindings.insert(name, abs.clone());
                        }
                        f.refs.push((abs, line));
                    }
                    None => left.push((written, name, inline, line)),
                }
            }
            pending = left;
        }
        for (written, inline, line) in parsed.paths {
            if let Some(abs) = relative(&written, f, inline) {
                f.refs.push((abs, line));
            }
        }
    }
    files
}

/// The file that defines what `path` names: the deepest module along it, following re-exports.
fn resolve(files: &[ModFile], path: &[String], hops: usize) -> usize {
    let mut at = files
        .iter()
        .position(|f| f.path.is_empty())
        .unwrap_or_default();
    for (k, seg) in path.iter().enumerate() {
        if let Some(&child) = files[at].children.get(seg) {
            at = child;
            continue;
        }
        if hops < 8
            && let Some(target) = files[at].bindings.get(seg)
            && target.as_slice() != &path[..=k]
        {
            let mut full = target.clone();
            full.extend(path[k + 1..].iter().cloned());
            return resolve(files, &full, hops + 1);
        }
        break;
    }
    at
}

/// Strongly connected components of more than one file (Tarjan).
fn circles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct T<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T<'_>, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in t.edges[v].iter() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let n = edges.len();
    let mut t = T {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Every crate root of the workspace: libraries, binaries, integration tests, benches, fuzz
/// targets.
fn roots(workspace: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![workspace.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    dirs.push(p);
                }
                continue;
            }
            if !name.ends_with(".rs") {
                continue;
            }
            let parent = p
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let in_crate_dir = |d: &str| {
                p.ancestors()
                    .nth(2)
                    .is_some_and(|c| c.join("Cargo.toml").exists())
                    && parent == d
            };
            let root = (in_crate_dir("src") && (name == "lib.rs" || name == "main.rs"))
                || parent == "bin"
                || ((in_crate_dir("tests") || in_crate_dir("benches") || parent == "fuzz_targets")
                    && p.ancestors().nth(1).is_some());
            if root {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf();
    let mut report = Vec::new();
    let mut seen = 0;
    for root in roots(&workspace) {
        // A test file's `mod common;` makes common/mod.rs part of that root's tree.
        let files = load_tree(&root);
        seen += files.len();
        let mut edges = vec![BTreeSet::new(); files.len()];
        let mut why: BTreeMap<(usize, usize), (Vec<String>, usize)> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for (path, line) in &f.refs {
                let to = resolve(&files, path, 0);
                if to != i {
                    edges[i].insert(to);
                    why.entry((i, to)).or_insert((path.clone(), *line));
                }
            }
        }
        for comp in circles(&edges) {
            let rel = |i: usize| {
                files[i]
                    .file
                    .strip_prefix(&workspace)
                    .unwrap_or(&files[i].file)
                    .display()
                    .to_string()
            };
            let mut lines = vec![format!(
                "circle: {}",
                comp.iter().map(|&i| rel(i)).collect::<Vec<_>>().join(", ")
            )];
            for &a in &comp {
                for &b in &comp {
                    if let Some((path, line)) = why.get(&(a, b)) {
                        lines.push(format!(
                            "  {}:{} refers to crate::{} in {}",
                            rel(a),
                            line,
                            path.join("::"),
                            rel(b)
                        ));
                    }
                }
            }
            report.push(lines.join("\n"));
        }
    }
    assert!(
        seen > 50,
        "read only {seen} files: the workspace walk is broken"
    );
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_circle_through_a_parent_and_follows_re_exports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("tap")).expect("dirs");
    fs::write(
        src.join("lib.rs"),
        "pub mod tap;\npub mod stats;\npub use stats::Counter;\n",
    )
    .expect("write");
    fs::write(
        src.join("stats.rs"),
        "pub struct Counter;\n// crate::tap::Tap in a comment\nconst S: &str = \"crate::tap\";\n",
    )
    .expect("write");
    fs::write(
        src.join("tap/mod.rs"),
        "mod relay;\npub struct Tap;\nfn f() { relay::go(); self::relay::go() }\n",
    )
    .expect("write");
    fs::write(
        src.join("tap/relay.rs"),
        "use super::Tap;\nuse crate::Counter;\npub fn go() {}\n#[cfg(test)]\nmod tests { use super::*; }\n",
    )
    .expect("write");
    let files = load_tree(&src.join("lib.rs"));
    let by = |p: &str| {
        files
            .iter()
            .position(|f| f.path.join("::") == p)
            .expect("module")
    };
    let mut edges = vec![BTreeSet::new(); files.len()];
    for (i, f) in files.iter().enumerate() {
        for (path, _) in &f.refs {
            let to = resolve(&files, path, 0);
            if to != i {
                edges[i].insert(to);
            }
        }
    }
    // relay -> tap (super::Tap), tap -> relay (self::relay::go); relay -> stats through the
    // root's re-export, not -> lib.rs; nothing from the comment or the string.
    assert!(edges[by("tap::relay")].contains(&by("tap")));
    assert!(edges[by("tap::relay")].contains(&by("stats")));
    assert!(!edges[by("tap::relay")].contains(&by("")));
    assert!(edges[by("stats")].is_empty());
    let c = circles(&edges);
    assert_eq!(c.len(), 1);
    let mut want = vec![by("tap"), by("tap::relay")];
    want.sort();
    assert_eq!(c[0], want);
}
