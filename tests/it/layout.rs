//! The import rules of the source tree, checked over its `crate::` paths (comments and test
//! modules aside): `dns` and `backend` never import each other, `catalog` imports neither,
//! `config` imports no area (only the plain data of `catalog::model`), and `catalog/model.rs`
//! uses no I/O or wire crate.

use std::path::{Path, PathBuf};

/// `(folder under src/, paths it must not name, paths allowed although they match)`.
const RULES: &[(&str, &[&str], &[&str])] = &[
    ("dns", &["crate::backend"], &[]),
    ("backend", &["crate::dns"], &[]),
    ("catalog", &["crate::dns", "crate::backend"], &[]),
    (
        "config",
        &["crate::dns", "crate::backend", "crate::catalog", "crate::telemetry", "crate::http", "crate::app"],
        &["crate::catalog::model"],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// The code of a file: comment lines and its `#[cfg(test)] mod tests` left out.
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = Vec::new();
    let mut previous = "";
    for (at, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if previous == "#[cfg(test)]" && trimmed.starts_with("mod tests") {
            break;
        }
        previous = trimmed;
        if !trimmed.starts_with("//") {
            lines.push((at + 1, line.to_owned()));
        }
    }
    lines
}

/// The paths `crate::…` names: itself, or each member of a `crate::{a, b::c}` group.
fn named(path: &str) -> Vec<String> {
    match path.strip_prefix("crate::{") {
        Some(group) => {
            let group = group.split('}').next().unwrap_or_default();
            group.split(',').map(|member| format!("crate::{}", member.trim())).collect()
        }
        None => vec![path.to_owned()],
    }
}

#[test]
fn areas_import_only_what_the_layout_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (area, banned, allowed) in RULES {
        let mut files = Vec::new();
        sources(&root.join(area), &mut files);
        assert!(!files.is_empty(), "src/{area} has sources");
        for file in files {
            for (line, text) in code(&file) {
                let mut rest = text.as_str();
                while let Some(at) = rest.find("crate::") {
                    if named(&rest[at..]).iter().any(|path| {
                        banned.iter().any(|b| path.starts_with(b)) && !allowed.iter().any(|a| path.starts_with(a))
                    }) {
                        broken.push(format!("{}:{line}: {}", file.display(), text.trim()));
                    }
                    rest = &rest[at + "crate::".len()..];
                }
            }
        }
    }
    let model = std::fs::read_to_string(root.join("catalog/model.rs")).unwrap();
    for crate_name in ["hickory_proto", "tokio", "reqwest", "serde_json"] {
        if model.contains(&format!("{crate_name}::")) {
            broken.push(format!("src/catalog/model.rs uses {crate_name}"));
        }
    }
    assert!(broken.is_empty(), "imports against the layout:\n{}", broken.join("\n"));
}

/// The check itself: a line that breaks a rule is found.
#[test]
fn the_layout_check_finds_a_forbidden_import() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(
        &file,
        "// crate::dns in a comment\nuse crate::dns::Settings;\n#[cfg(test)]\nmod tests {\n    use crate::dns::X;\n}\n",
    )
    .unwrap();
    let lines = code(&file);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].1.contains("crate::dns::Settings") && lines[1].1 == "#[cfg(test)]");
    assert_eq!(named("crate::{dns, backend::x}; rest"), ["crate::dns", "crate::backend::x"]);
}
