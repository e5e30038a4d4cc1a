//! The project's docs stay true to the code and to themselves: every link in
//! README.md and docs/ leads to a file (and heading) that exists; the help of
//! every command cites no document users do not have, and the guarantees it
//! names are stated in docs/guarantees.md; and every function, type, module
//! or test that a page names as code (docs/guarantees.md as keeping or
//! checking a guarantee, docs/architecture.md in its map) exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fixture::{clean_command, run};

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let root = repo();
    let mut out = vec![root.join("README.md")];
    for e in fs::read_dir(root.join("docs")).expect("docs/") {
        let p = e.expect("a docs/ entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped,
/// spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown page's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of a markdown page.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn every_link_in_the_readme_and_the_docs_leads_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            if !dest.exists() {
                broken.push(format!("{}: ({target}): no such file", page.display()));
                continue;
            }
            if !anchor.is_empty()
                && dest.extension().is_some_and(|x| x == "md")
                && !anchors(&read(&dest)).contains(anchor)
            {
                broken.push(format!("{}: ({target}): no such heading in {}", page.display(), dest.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The `docs/NAME.md` paths a text mentions.
fn doc_paths(text: &str) -> Vec<String> {
    text.match_indices("docs/")
        .filter_map(|(i, _)| {
            let name: String = text[i + 5..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            name.strip_suffix('.')
                .unwrap_or(&name)
                .ends_with(".md")
                .then(|| format!("docs/{}", name.trim_end_matches('.')))
        })
        .collect()
}

/// The guarantees (`G1`…`G8`) a text names.
fn guarantees_named(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(1))
        .filter(|&i| {
            b[i] == b'G'
                && (b'1'..=b'8').contains(&b[i + 1])
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
                && b.get(i + 2).is_none_or(|c| !c.is_ascii_alphanumeric())
        })
        .map(|i| text[i..i + 2].to_string())
        .collect()
}

#[test]
fn help_and_docs_cite_only_documents_users_have_and_every_guarantee_they_name_is_stated() {
    let root = repo();
    let stated = read(&root.join("docs/guarantees.md"));
    let top = run(&mut clean_command(&["--help"])).ok();
    let commands: Vec<String> = top
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 10, "no commands in --help\n{top}");
    let mut texts = vec![("lemming --help".to_string(), top.stdout.clone())];
    for c in &commands {
        texts.push((format!("lemming {c} --help"), run(&mut clean_command(&[c, "--help"])).ok().stdout));
    }
    for page in pages() {
        texts.push((page.display().to_string(), read(&page)));
    }
    let mut wrong = Vec::new();
    for (what, text) in &texts {
        for outside in ["DESIGN", "§"] {
            if text.contains(outside) {
                wrong.push(format!("{what} cites {outside:?}, a document users do not have"));
            }
        }
        for doc in doc_paths(text) {
            if !root.join(&doc).exists() {
                wrong.push(format!("{what} points to {doc}, which does not exist"));
            }
        }
        for g in guarantees_named(text) {
            if !stated.contains(&format!("\n### {g}: ")) {
                wrong.push(format!("{what} names {g}, which docs/guarantees.md does not state"));
            }
        }
    }
    let fsck = &texts.iter().find(|(w, _)| w == "lemming fsck --help").expect("fsck --help").1;
    assert!(fsck.contains("docs/guarantees.md"), "fsck --help names guarantees without saying where they are\n{fsck}");
    for n in 1..=8 {
        let g = format!("G{n}");
        let Some(at) = stated.find(&format!("\n### {g}: ")) else {
            wrong.push(format!("docs/guarantees.md does not state {g}"));
            continue;
        };
        let section = &stated[at + 1..];
        let end =
            ["\n## ", "\n### "].iter().filter_map(|h| section[4..].find(h)).min().map_or(section.len(), |e| e + 4);
        let section = &section[..end];
        if !section.contains("Checked by") {
            wrong.push(format!("docs/guarantees.md states {g} without saying what checks it"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every `.rs` file of the workspace's crates (sources and tests).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `text` has the identifier `name` (or, for `prefix*`, one that
/// starts with `prefix`) as a whole word.
fn has_ident(text: &str, name: &str) -> bool {
    let (word, prefix) = match name.strip_suffix('*') {
        Some(p) => (p, true),
        None => (name, false),
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back().is_none_or(|c| !ident(c));
        let after = text[i + word.len()..].chars().next().is_none_or(|c| !ident(c));
        before && (after || prefix)
    })
}

/// The backquoted code paths (`module::item`, `Type::method`,
/// `lemming_engine::module`) that a page names and that do not exist, and
/// how many it names.
fn named_code_missing(page: &str) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    rust_files(&repo().join("crates"), &mut files);
    // A module's name: its file's stem, or its folder's for a `mod.rs` and
    // for the submodules of `module.rs` in `module/` (`turn::tests::x` is in `turn/tests.rs`).
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let folder = p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
            let parent_module = p.parent().unwrap().with_extension("rs").exists();
            let module = match stem.as_str() {
                "mod" => folder,
                "tests" if parent_module => folder,
                _ => stem,
            };
            (module, read(p))
        })
        .collect();
    let mut named = BTreeSet::new();
    for (i, _) in page.match_indices('`') {
        let rest = &page[i + 1..];
        let Some(end) = rest.find('`') else { break };
        let token = &rest[..end];
        let path_like = token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '*'));
        if token.contains("::") && path_like {
            named.insert(token.to_string());
        }
    }
    let mut missing = Vec::new();
    for token in &named {
        let segs: Vec<&str> = token.split("::").collect();
        // A crate's name only says where the module is.
        let segs = if segs[0].starts_with("lemming_") && segs.len() > 1 { &segs[1..] } else { &segs[..] };
        let last = segs[segs.len() - 1];
        // `module::...::item` is looked for in the files named `module.rs`;
        // `Type::item` in every file that defines `Type`; a lone `module` is a module.
        let first = segs[0];
        let found = sources.iter().any(|(module, text)| {
            if segs.len() == 1 {
                return module == first;
            }
            let in_scope = if first.starts_with(|c: char| c.is_ascii_uppercase()) {
                has_ident(text, first)
                    && ["struct", "enum", "trait", "impl"].iter().any(|k| text.contains(&format!("{k} {first}")))
            } else {
                module == first
            };
            in_scope && has_ident(text, last)
        });
        if !found {
            missing.push(token.clone());
        }
    }
    (named.len(), missing)
}

#[test]
fn every_function_type_and_test_the_guarantees_page_names_exists() {
    let (named, missing) = named_code_missing(&read(&repo().join("docs/guarantees.md")));
    assert!(named > 20, "docs/guarantees.md names too few items to check: {named}");
    assert!(missing.is_empty(), "docs/guarantees.md names code that does not exist: {missing:?}");
}

/// The crate and module map and the way of a message through a turn name
/// the code they describe: each name is there.
#[test]
fn every_module_type_and_function_the_other_pages_name_exists() {
    let mut missing = Vec::new();
    for page in pages() {
        let (_, gone) = named_code_missing(&read(&page));
        missing.extend(gone.into_iter().map(|g| format!("{}: {g}", page.display())));
    }
    assert!(missing.is_empty(), "the docs name code that does not exist: {missing:?}");
}

/// The module map of docs/architecture.md lists every module of the engine,
/// and nothing else.
#[test]
fn the_module_map_lists_every_engine_module() {
    let root = repo();
    let lib = read(&root.join("crates/engine/src/lib.rs"));
    let modules: BTreeSet<String> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';')).map(String::from).collect();
    assert!(modules.len() > 20, "no modules in lib.rs: {modules:?}");
    let page = read(&root.join("docs/architecture.md"));
    let map = &page[page.find("| module | owns |").expect("the module map")..];
    let mapped: BTreeSet<String> = map
        .lines()
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .flat_map(|l| l.split('|').nth(1).unwrap_or("").split(',').map(|m| m.trim().trim_matches('`').to_string()))
        .collect();
    assert_eq!(mapped, modules, "docs/architecture.md's module map and crates/engine/src/lib.rs differ");
}

#[test]
fn the_reply_contract_page_quotes_the_contract_every_prompt_ends_with() {
    let page = read(&repo().join("docs/reply-contract.md"));
    let quoted = page
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(text, _)| text)
        .expect("docs/reply-contract.md quotes the contract in a ```text block");
    let told = lemming_provider::contract::instructions(
        lemming_provider::Structured::None,
        &[],
        lemming_provider::ToolMode::Contract,
    );
    assert_eq!(quoted, told, "docs/reply-contract.md quotes another contract than the prompt's");
}
