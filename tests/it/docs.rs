//! The repository stands alone: no file points outside it, every item id a file cites (`S3.5`,
//! `K7`, `H3.6`, and test names such as `s3_5_…` or `kong_k7_…`) is defined in `docs/`, and
//! every relative link in a Markdown file leads to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where item ids are defined: a bold `**S3.5**` or a heading `## S3`.
const DEFINITIONS: &[&str] = &["docs/behaviour.md", "docs/consul-api.md"];

/// Citations left to change, as `(file, name of the outside document)`; each entry must still be
/// needed (the test fails once the text is gone, so the list only shrinks). None are left.
const PENDING: &[(&str, &str)] = &[];

// Names of documents that live outside the repository, split so that this file does not
// match itself.
const KONG_DOC: &str = concat!("kong", ".md");
const SPEC_DOC: &str = concat!("consul-dns", "-spec");
const API_DOC: &str = concat!("consul-http", "-api");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the fuzzer keeps the inputs it made: bytes, not prose, so neither citations nor
/// references.
const FUZZ_CORPUS: &str = "fuzz/corpus/";

/// The tracked files that are text (the fuzz corpora aside), with their contents.
fn tracked_text_files() -> Vec<(String, String)> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git runs (the repository checks need a git checkout)");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8(out.stdout).expect("file names are UTF-8");
    list.split('\0')
        .filter(|p| !p.is_empty() && !p.starts_with(FUZZ_CORPUS))
        .filter_map(|p| std::fs::read_to_string(root().join(p)).ok().map(|text| (p.to_string(), text)))
        .collect()
}

/// Strings that name places outside the repository: the parent directory's reference folder,
/// absolute paths of the machine it was written on, documents that live elsewhere.
fn outside_markers() -> Vec<String> {
    // Assembled at run time, so that this file does not match itself.
    vec![
        ["..", "/shared"].concat(),
        ["/wo", "rk/"].concat(),
        KONG_DOC.to_string(),
        SPEC_DOC.to_string(),
        API_DOC.to_string(),
    ]
}

#[test]
fn no_tracked_file_points_outside_the_repository() {
    let files = tracked_text_files();
    let mut found = Vec::new();
    for (path, text) in &files {
        for marker in outside_markers() {
            let pending = PENDING.iter().any(|(p, m)| p == path && *m == marker);
            for (n, line) in text.lines().enumerate().filter(|(_, l)| l.contains(&marker)) {
                if !pending {
                    found.push(format!("{path}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "references outside the repository:\n{}", found.join("\n"));
    for (path, marker) in PENDING {
        let text = &files.iter().find(|(p, _)| p == path).map(|(_, t)| t.as_str()).unwrap_or("");
        assert!(text.contains(marker), "{path} no longer mentions {marker}: remove it from PENDING");
    }
}

#[test]
fn every_cited_item_is_defined_in_docs() {
    let mut defined = BTreeSet::new();
    for doc in DEFINITIONS {
        let text = std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("## ") {
                defined.extend(ids_in(rest).into_iter().take(1));
            }
            for (i, _) in line.match_indices("**") {
                defined.extend(ids_in(&line[i + 2..]).into_iter().take(1).filter(|id| line[i + 2..].starts_with(id)));
            }
        }
    }
    assert!(defined.contains("S3.5") && defined.contains("K7") && defined.contains("H3.6"), "{defined:?}");
    let mut undefined = Vec::new();
    for (path, text) in tracked_text_files() {
        for (n, line) in text.lines().enumerate() {
            let cited = ids_in(line).into_iter().chain(test_name_ids(line));
            for id in cited.filter(|id| !defined.contains(id)) {
                undefined.push(format!("{path}:{}: {id}", n + 1));
            }
        }
    }
    assert!(undefined.is_empty(), "cited but not defined in docs/:\n{}", undefined.join("\n"));
}

#[test]
fn relative_markdown_links_lead_to_files_in_the_repository() {
    let mut broken = Vec::new();
    for (path, text) in tracked_text_files().into_iter().filter(|(p, _)| p.ends_with(".md")) {
        let dir = Path::new(&path).parent().unwrap_or(Path::new(""));
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap_or(target.len())];
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            let resolved = normalize(&dir.join(file));
            match resolved {
                Some(p) if root().join(&p).exists() => {}
                _ => broken.push(format!("{path}: {target}")),
            }
        }
    }
    assert!(broken.is_empty(), "links to files that are not in the repository:\n{}", broken.join("\n"));
}

/// `a/../b` → `b`; `None` when the path climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            std::path::Component::Normal(p) => out.push(p),
            _ => return None,
        }
    }
    Some(out)
}

/// Item ids in `text`: `S`, `H` or `K` at the start of a word, digits, and optionally a dot and
/// more digits (`S3.5`, `K7`, `H3.6`; `S2.6b` cites `S2.6`).
fn ids_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut ids = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !(starts_word && matches!(b, b'S' | b'H' | b'K')) {
            continue;
        }
        let digits = |from: usize| bytes[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let major = digits(i + 1);
        if major == 0 {
            continue;
        }
        let mut end = i + 1 + major;
        if bytes.get(end) == Some(&b'.') && digits(end + 1) > 0 {
            end += 1 + digits(end + 1);
        }
        ids.push(text[i..end].to_string());
    }
    ids
}

/// Ids cited by test names: `fn s3_5_…` → `S3.5`, `fn s9_…` → `S9`, `fn kong_k7_…` → `K7`.
fn test_name_ids(line: &str) -> Vec<String> {
    let Some(name) = line.trim_start().strip_prefix("fn ") else { return vec![] };
    let (letter, rest) = if let Some(rest) = name.strip_prefix("kong_k") {
        ('K', rest)
    } else if let Some(rest) = name.strip_prefix('s') {
        ('S', rest)
    } else {
        return vec![];
    };
    let numbers: Vec<&str> =
        rest.split('_').take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).collect();
    match numbers.as_slice() {
        [] => vec![],
        [major] => vec![format!("{letter}{major}")],
        [major, minor, ..] => vec![format!("{letter}{major}.{minor}")],
    }
}
