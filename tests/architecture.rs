//! The layers of docs/ARCHITECTURE.md, checked: every module of the library imports only from
//! layers below its own (or from its own layer), so there are no import circles.
//!
//! The check reads the sources: every `crate::NAME` in code (comments and doc comments are
//! skipped, so intra-doc links may point anywhere) names the layer it reaches into.

use std::path::{Path, PathBuf};

/// The layer of a top-level module, bottom first. Modules of one rank are siblings and may not
/// import each other.
fn rank(module: &str) -> Option<(u8, &'static str)> {
    Some(match module {
        "error" | "scalar" | "rng" | "io" | "comm" => (0, "base"),
        "backend" => (1, "backend"),
        "data" => (2, "data"),
        "model" => (2, "model"),
        "solve" => (3, "solve"),
        "train" => (4, "train"),
        "experiments" => (5, "experiments"),
        _ => return None,
    })
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

/// The code of a line: without a trailing `//` comment, empty for a comment line.
fn code(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with("//") {
        return "";
    }
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

#[test]
fn every_module_imports_only_from_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "bin" || top == "lib" {
            continue; // the binary uses the public API; lib.rs only declares and re-exports
        }
        let Some((mine, my_name)) = rank(&top) else {
            violations.push(format!("{}: module `{top}` has no layer", rel.display()));
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        // `use crate::{a, b::c}` groups name several modules at once
        let mut in_group = false;
        for (no, line) in text.lines().enumerate() {
            let c = code(line);
            let mut targets: Vec<String> = Vec::new();
            let mut rest = c;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    in_group = !group.contains('}');
                    targets.extend(group.split(',').map(|s| s.trim().to_string()));
                } else {
                    targets.push(rest.to_string());
                }
            }
            if in_group && !c.contains("crate::") {
                targets.extend(c.split(',').map(|s| s.trim().to_string()));
                if c.contains('}') {
                    in_group = false;
                }
            }
            for t in targets {
                let name: String = t
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                    .collect();
                let Some((theirs, their_name)) = rank(&name) else {
                    continue; // an item of the crate root (a re-export) or not a module
                };
                if their_name == my_name {
                    continue;
                }
                if theirs >= mine {
                    violations.push(format!(
                        "{}:{}: layer `{my_name}` imports `crate::{name}` (layer `{their_name}`)",
                        rel.display(),
                        no + 1
                    ));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "imports against the layers of docs/ARCHITECTURE.md:\n{}",
        violations.join("\n")
    );
}
