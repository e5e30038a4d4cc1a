//! Embeds the example orgs: lists every file under the repository's
//! `examples/orgs/<name>/` into `$OUT_DIR/templates.rs` (one `include_str!`
//! each), so that a folder added there becomes a template of `lemming init
//! --template` with no list to keep up to date by hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let orgs = manifest.join("../../examples/orgs");
    let orgs = orgs.canonicalize().unwrap_or(orgs);
    println!("cargo:rerun-if-changed={}", orgs.display());
    if !orgs.is_dir() {
        println!("cargo:warning={} is missing: lemming init will know only the default org", orgs.display());
    }
    let mut out = String::from("/// The example orgs of `examples/orgs/`, by name: (name, files).\n");
    out.push_str("pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[\n");
    for (name, dir) in entries(&orgs).into_iter().filter(|(_, p)| p.is_dir()) {
        let mut files = Vec::new();
        collect(&dir, "", &mut files);
        assert!(!files.is_empty(), "{} holds no files: remove it or fill it", dir.display());
        writeln!(out, "    ({name:?}, &[").unwrap();
        for (rel, path) in files {
            let path = path.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", path.display()));
            writeln!(out, "        ({rel:?}, include_str!({path:?})),").unwrap();
        }
        out.push_str("    ]),\n");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("templates.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}

/// A folder's entries in name order, without hidden ones (names that start with a dot).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = rd
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| (name, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Every file under `dir` as (path relative to the template, absolute path),
/// in name order; each folder is watched, so that a new file rebuilds.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    for (name, path) in entries(dir) {
        let rel = format!("{prefix}{name}");
        if path.is_dir() {
            collect(&path, &format!("{rel}/"), out);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            out.push((rel, path));
        }
    }
}
