//! The project's docs stay true to the code and to themselves: every link in
//! README.md and docs/ leads to a file (and heading) that exists; the help of
//! every command cites no document users do not have, and the guarantees it
//! names are stated in docs/guarantees.md; and every function, type or test
//! that docs/guarantees.md names as keeping or checking a guarantee exists.

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

#[test]
fn every_function_type_and_test_the_guarantees_page_names_exists() {
    let root = repo();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let sources: Vec<(String, String)> =
        files.iter().map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), read(p))).collect();
    let page = read(&root.join("docs/guarantees.md"));
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
    assert!(named.len() > 20, "docs/guarantees.md names too few items to check: {named:?}");
    let mut missing = Vec::new();
    for token in &named {
        let segs: Vec<&str> = token.split("::").collect();
        let last = segs[segs.len() - 1];
        // `module::...::item` is looked for in the files named `module.rs`;
        // `Type::item` in every file that defines `Type`.
        let first = segs[0];
        let found = sources.iter().any(|(stem, text)| {
            let in_scope = if first.starts_with(|c: char| c.is_ascii_uppercase()) {
                has_ident(text, first)
                    && (text.contains(&format!("struct {first}")) || text.contains(&format!("impl {first}")))
            } else {
                stem == first
            };
            in_scope && has_ident(text, last)
        });
        if !found {
            missing.push(token.clone());
        }
    }
    assert!(missing.is_empty(), "docs/guarantees.md names code that does not exist: {missing:?}");
}

#[test]
fn the_reply_contract_page_quotes_the_contract_every_prompt_ends_with() {
    let page = read(&repo().join("docs/reply-contract.md"));
    let quoted = page
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(text, _)| text)
        .expect("docs/reply-contract.md quotes the contract in a ```text block");
    let told = lemming_provider::contract::instructions(lemming_provider::Structured::None);
    assert_eq!(quoted, told, "docs/reply-contract.md quotes another contract than the prompt's");
}
