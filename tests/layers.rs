//! The layering `src/lib.rs` states, checked on the source: every `crate::NAME` a module
//! names is in a layer below its own. Layers are the groups of `pub mod` lines between
//! `// --` comments in lib.rs, top to bottom.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn layers(lib: &str) -> HashMap<String, usize> {
    let mut level = 0;
    let mut map = HashMap::new();
    for line in lib.lines() {
        if line.starts_with("// --") {
            level += 1;
        } else if let Some(name) = line.strip_prefix("pub mod ") {
            map.insert(name.trim_end_matches(';').to_string(), level);
        }
    }
    map
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

/// Every `crate::NAME` in `text` (comments included: a doc link upward is a dependency too).
fn crate_paths(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .filter(|(i, _)| {
            !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn no_module_uses_one_beside_or_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let map = layers(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(map.len() > 10, "lib.rs lists its layers: {map:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let module = top.trim_end_matches(".rs");
        let Some(&own) = map.get(module) else {
            assert!(
                ["lib", "main"].contains(&module),
                "{} is not listed in lib.rs",
                rel.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in crate_paths(&text) {
            if used == module {
                continue;
            }
            match map.get(&used) {
                Some(&level) if level > own => {}
                Some(_) => wrong.push(format!("{} uses crate::{used}", rel.display())),
                None => {}
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "upward or sideways uses:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_reads_paths_and_layers() {
    let map = layers("// -- a\npub mod top;\n// -- b\npub mod low;\npub mod other;\n");
    assert_eq!(map["top"], 1);
    assert_eq!(map["other"], 2);
    assert_eq!(
        crate_paths("use crate::db::Db; x::crate::no; crate::media::{a}"),
        ["db", "media"]
    );
}
