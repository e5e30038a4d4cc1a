//! Config files as text: reading them safely, and a field-by-field reader over
//! TOML that reports every problem in a file (wrong types, unknown fields,
//! values out of range), each with line, column and a fix that fits it.
//!
//! Reading: a config file must be a regular file inside the org (a symlink to
//! a file elsewhere, a FIFO or a device is refused without being read) and
//! UTF-8 text. A diagnostic never quotes a file that is refused, and its caret
//! snippet shows control characters as `\u{fffd}` and masks what looks like a key.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::{Range, RangeInclusive};
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::error::{Diagnostic, PathError};
use crate::fsx::Entry;

/// Reads a config file of the org at `root`: a regular file (not a FIFO, a
/// device or a folder) that lies inside the org once links are resolved, and
/// holds UTF-8 text. Nothing of a refused file is ever put in a diagnostic.
/// To read many files of one org, a [`Reader`] spares most of the checks.
pub fn read(path: &Path, root: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
    Reader::new(root).read(path, limit)
}

/// Reads the config files of one org as [`read`] does, remembering which
/// folders under the root it found to be plain folders (not links). A file
/// that is itself a regular file, reached from the root through such folders
/// only, is inside the org without resolving a link: it is read with one
/// look at its name, then through its descriptor
/// ([`crate::fsx::read_listed_entry`]), five system calls in all rather than
/// fourteen. Any other file (a link, a FIFO, a missing file, a
/// path through a linked folder) takes the full check of [`read`], which
/// resolves every link, and gets the same answer and the same problems.
///
/// A folder is looked at once per reader: make one per load, so that a
/// folder replaced by a link since an earlier load is seen.
pub struct Reader {
    root: PathBuf,
    /// Folders under `root` (relative to it) that were plain folders.
    plain: RefCell<HashSet<PathBuf>>,
}

impl Reader {
    /// A reader for the org at `root`.
    pub fn new(root: &Path) -> Reader {
        Reader { root: root.to_path_buf(), plain: RefCell::default() }
    }

    /// The text of the config file at `path` (see [`read`]).
    pub fn read(&self, path: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
        let root = if self.root.as_os_str().is_empty() { Path::new(".") } else { &self.root };
        if self.within_plain_folders(root, path)
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
        {
            // Read through its descriptor; gone or replaced since the look,
            // it takes the full check, which says what it is now.
            let entry = crate::fsx::read_listed_entry(path, limit);
            if matches!(entry, Ok(Entry::File { .. } | Entry::TooLarge { .. })) {
                return from_entry(path, limit, entry);
            }
        }
        read_resolved(path, root, limit)
    }

    /// Takes the folders `names` of `parent` (relative to the root) as plain
    /// folders: a listing just found each to be a folder by its entry's type,
    /// which is never that of a link.
    pub fn listed(&self, parent: &Path, names: &[String]) {
        self.plain.borrow_mut().extend(names.iter().map(|n| parent.join(n)));
    }

    /// Whether `path` is `root` joined with plain names, every folder between
    /// them a plain folder (looked at once, then remembered).
    fn within_plain_folders(&self, root: &Path, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(root) else { return false };
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return false;
        }
        let mut plain = self.plain.borrow_mut();
        let mut at = PathBuf::new();
        for folder in rel.parent().into_iter().flat_map(Path::components) {
            at.push(folder);
            if plain.contains(&at) {
                continue;
            }
            match std::fs::symlink_metadata(root.join(&at)) {
                Ok(m) if m.file_type().is_dir() => {
                    plain.insert(at.clone());
                }
                _ => return false,
            }
        }
        true
    }
}

/// [`read`] with every link on the way resolved: the file must lie inside the
/// canonical root.
fn read_resolved(path: &Path, root: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
    let refuse = |m: String, help: &str| Err(vec![Diagnostic::file(path, m).help(help)]);
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return refuse(format!("cannot read: {e}"), "the file must exist and be readable"),
    };
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot read: {e}"), "the file must exist and be readable"),
    };
    let inside = root.canonicalize().map(|r| real.starts_with(r)).unwrap_or(false);
    if !inside {
        let what = if meta.file_type().is_symlink() { "a symbolic link to a file" } else { "a file" };
        return refuse(
            format!("is {what} outside the org ({}); it is not read", real.display()),
            "config files must lie inside the org folder: replace the link with a copy of the file",
        );
    }
    read_checked(path, &real, limit)
}

/// Reads `real`, the file `path` names once links are resolved, as a mailbox
/// entry is read: a link swapped in since is not followed, a FIFO or device is
/// not opened, the size is checked on the open descriptor and at most `limit`
/// bytes are read. Problems name `path`.
fn read_checked(path: &Path, real: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
    from_entry(path, limit, crate::fsx::read_entry(real, limit))
}

/// The text of config file `path` from what reading it found, or its problem.
fn from_entry(path: &Path, limit: u64, entry: Result<Entry, PathError>) -> Result<String, Vec<Diagnostic>> {
    let refuse = |m: String, help: &str| Err(vec![Diagnostic::file(path, m).help(help)]);
    let bytes = match entry {
        Ok(Entry::File { bytes, .. }) => bytes,
        Ok(Entry::TooLarge { size, .. }) => {
            return refuse(
                format!("the file is {size} bytes; the limit is {limit} bytes"),
                "shorten it (the size limits of config files are in docs/operating.md)",
            )
        }
        Ok(Entry::NotRegular { kind, .. }) => {
            return refuse(
                format!("is {}, not a regular file; it is not read", kind.describe()),
                "replace it with a TOML file",
            )
        }
        Ok(Entry::Gone) => return refuse("cannot read: it was removed".into(), "the file must exist and be readable"),
        Err(e) => return refuse(format!("cannot read: {}", e.source), "the file must be readable by lemming"),
    };
    utf8(path, bytes)
}

/// The text of a config file's bytes; bytes that are not UTF-8 are refused
/// with the line and column of the first bad byte.
pub fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, Vec<Diagnostic>> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let good = std::str::from_utf8(&e.as_bytes()[..at]).unwrap_or_default();
            let line = good.matches('\n').count() + 1;
            let column = good.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            let mut d = Diagnostic::file(path, "is not UTF-8 text; it is not shown")
                .help("config files are UTF-8 TOML; save the file as UTF-8");
            d.line = Some(line);
            d.column = Some(column);
            Err(vec![d])
        }
    }
}

/// A parsed TOML file whose checks collect every problem.
pub struct Doc<'a> {
    path: &'a Path,
    /// The text shown in snippets: the file with secrets masked (same byte offsets).
    shown: String,
    doc: ImDocument<&'a str>,
    errs: RefCell<Vec<Diagnostic>>,
    /// Strings never to be repeated in a message (values of secrets).
    secrets: RefCell<Vec<String>>,
}

impl<'a> Doc<'a> {
    /// Parses `text`; a syntax error is the one problem reported (the parser
    /// cannot go past it).
    pub fn parse(path: &'a Path, text: &'a str) -> Result<Doc<'a>, Vec<Diagnostic>> {
        match ImDocument::parse(text) {
            Ok(doc) => Ok(Doc {
                path,
                shown: text.to_string(),
                doc,
                errs: RefCell::new(Vec::new()),
                secrets: RefCell::new(Vec::new()),
            }),
            Err(e) => Err(vec![syntax(path, text, e.message(), e.span())]),
        }
    }

    /// The top-level table.
    pub fn root(&self) -> Table<'_> {
        Table { doc: self, name: String::new(), span: None, table: self.doc.as_table(), seen: RefCell::default() }
    }

    /// Hides the bytes of `span` in every snippet, and its text in every message.
    pub fn mask(&mut self, span: Range<usize>) {
        let span = span.start.min(self.shown.len())..span.end.min(self.shown.len());
        if let Some(value) = self.doc.raw().get(span.clone()) {
            let inner = value.trim_matches(['"', '\'']);
            if inner.len() >= 4 {
                self.secrets.get_mut().push(inner.to_string());
            }
        }
        // Byte for byte, so that every offset still points at the same place.
        let mut bytes = std::mem::take(&mut self.shown).into_bytes();
        for b in &mut bytes[span] {
            *b = b'*';
        }
        self.shown = String::from_utf8_lossy(&bytes).into_owned();
    }

    /// A diagnostic at `span` (a whole-file one when `None`).
    pub fn at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.path, &self.shown, span, message)
    }

    /// Records a problem.
    pub fn push(&self, d: Diagnostic) {
        self.errs.borrow_mut().push(d);
    }

    /// Whether any problem was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errs.borrow().is_empty()
    }

    /// Every problem recorded, in file order, with masked values scrubbed from their text.
    pub fn finish(self) -> Vec<Diagnostic> {
        let secrets = self.secrets.into_inner();
        let mut errs = self.errs.into_inner();
        errs.sort_by_key(|d| (d.line, d.column));
        for d in &mut errs {
            for s in &secrets {
                d.message = d.message.replace(s.as_str(), "[redacted]");
                d.help = d.help.take().map(|h| h.replace(s.as_str(), "[redacted]"));
            }
        }
        errs
    }

    /// Every string in the file (values and keys, at any depth), each with
    /// the dotted path of the key that holds it.
    pub fn strings(&self) -> Vec<StrAt> {
        let mut out = Vec::new();
        walk(self.doc.as_table(), "", &mut out);
        out
    }
}

/// A table of text values, as written: each key and value with its span.
pub type StrMap = Vec<(Spanned<String>, Spanned<String>)>;

/// A string of a [`Doc`]: a value, or a key.
#[derive(Debug, Clone)]
pub struct StrAt {
    /// The dotted path of its key (`providers.local.headers.x-api-key`).
    pub path: String,
    /// The text.
    pub text: String,
    /// Where in the file.
    pub span: Range<usize>,
    /// Whether it is the key itself rather than a value.
    pub is_key: bool,
}

fn walk(t: &dyn TableLike, at: &str, out: &mut Vec<StrAt>) {
    for (k, item) in t.iter() {
        let path = if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
        if let Some(span) = t.key(k).and_then(|k| k.span()) {
            out.push(StrAt { path: path.clone(), text: k.to_string(), span, is_key: true });
        }
        match item {
            Item::Value(v) => walk_value(v, &path, out),
            Item::Table(t) => walk(t, &path, out),
            Item::ArrayOfTables(a) => a.iter().for_each(|t| walk(t, &path, out)),
            Item::None => {}
        }
    }
}

fn walk_value(v: &Value, path: &str, out: &mut Vec<StrAt>) {
    match v {
        Value::String(s) => {
            if let Some(span) = s.span() {
                out.push(StrAt { path: path.to_string(), text: s.value().clone(), span, is_key: false });
            }
        }
        Value::Array(a) => a.iter().for_each(|v| walk_value(v, path, out)),
        Value::InlineTable(t) => walk(t, path, out),
        _ => {}
    }
}

/// A TOML syntax error with a fix that fits the usual mistakes.
fn syntax(path: &Path, text: &str, message: &str, span: Option<Range<usize>>) -> Diagnostic {
    let message = message.trim().to_string();
    let line = span.as_ref().map(|s| {
        let start = text[..s.start.min(text.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let end = text[start..].find('\n').map(|i| start + i).unwrap_or(text.len());
        &text[start..end]
    });
    let bare = line.and_then(|l| l.split_once('=')).map(|(k, v)| (k.trim(), v.trim()));
    let help = if message.contains("duplicate key") {
        "each key may appear once per table; remove or rename the repeated one".to_string()
    } else if message.contains("invalid table header") || message.contains("expected `]`") {
        "a table header is a name in brackets on a line of its own, e.g. [schedule]".to_string()
    } else if let Some((key, value)) = bare
        .filter(|(_, v)| message.contains("invalid string") && !v.is_empty() && !v.starts_with(['"', '\'', '[', '{']))
    {
        format!("text needs quotes: {key} = \"{}\"", value.split('#').next().unwrap_or("").trim())
    } else if message.contains("invalid basic string") || message.contains("invalid literal string") {
        "close the string with the quote it opened with, on the same line (use \"\"\" for text over several lines)"
            .to_string()
    } else if message.contains("expected `=`") || message.contains("key with no value") {
        "write each setting as key = value".to_string()
    } else {
        "fix the TOML syntax at the marked place (text needs quotes, lists [brackets], tables a [header])".to_string()
    };
    Diagnostic::at(path, text, span, message).help(help)
}

/// One table of a [`Doc`]: typed getters that record a problem for every
/// value of the wrong type or out of range, and unknown keys at the end.
pub struct Table<'d> {
    doc: &'d Doc<'d>,
    /// The dotted name of the table (empty at the top).
    name: String,
    span: Option<Range<usize>>,
    table: &'d dyn TableLike,
    seen: RefCell<Vec<String>>,
}

/// The shape of a value, for messages.
fn shape(item: &Item) -> &'static str {
    match item {
        Item::Value(Value::String(_)) => "text",
        Item::Value(Value::Integer(_)) => "a whole number",
        Item::Value(Value::Float(_)) => "a number with a fraction",
        Item::Value(Value::Boolean(_)) => "true or false",
        Item::Value(Value::Datetime(_)) => "a date",
        Item::Value(Value::Array(_)) | Item::ArrayOfTables(_) => "a list",
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table",
        Item::None => "nothing",
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

/// A TOML item as JSON; what JSON cannot hold goes to `bad` with its span and dotted name.
fn item_json(item: &Item, at: &str, bad: &mut Vec<(Option<Range<usize>>, String)>) -> serde_json::Value {
    match item {
        Item::Value(v) => value_json(v, at, bad),
        Item::Table(t) => table_json(t, at, bad),
        Item::ArrayOfTables(a) => a.iter().map(|t| table_json(t, at, bad)).collect(),
        Item::None => serde_json::Value::Null,
    }
}

fn table_json(t: &dyn TableLike, at: &str, bad: &mut Vec<(Option<Range<usize>>, String)>) -> serde_json::Value {
    t.iter().map(|(k, v)| (k.to_string(), item_json(v, &format!("{at}.{k}"), bad))).collect()
}

fn value_json(v: &Value, at: &str, bad: &mut Vec<(Option<Range<usize>>, String)>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::String(s) => J::String(s.value().clone()),
        Value::Integer(i) => J::from(*i.value()),
        Value::Float(f) => match serde_json::Number::from_f64(*f.value()) {
            Some(n) => J::Number(n),
            None => {
                bad.push((v.span(), at.to_string()));
                J::Null
            }
        },
        Value::Boolean(b) => J::Bool(*b.value()),
        Value::Datetime(_) => {
            bad.push((v.span(), at.to_string()));
            J::Null
        }
        Value::Array(a) => a.iter().map(|x| value_json(x, at, bad)).collect(),
        Value::InlineTable(t) => table_json(t, at, bad),
    }
}

/// The edit distance between `a` and `b`, in characters.
fn dist(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest of `known` to `word`, if it is close (for "did you mean").
fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().map(|k| (dist(word, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 4)).min().map(|(_, k)| k)
}

impl<'d> Table<'d> {
    /// The table's dotted name, for messages (`schedule`, `providers.local`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The span of the table's header, or of its key, for problems of the whole table.
    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// The doc, to record problems found by the caller.
    pub fn doc(&self) -> &'d Doc<'d> {
        self.doc
    }

    fn field(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// The item under `key`, marking it as read.
    fn get(&self, key: &str) -> Option<(&'d Item, Option<Range<usize>>)> {
        self.seen.borrow_mut().push(key.to_string());
        let item = self.table.get(key)?;
        let span = item_span(item).or_else(|| self.table.key(key).and_then(|k| k.span()));
        Some((item, span))
    }

    /// The source text of a value (masked when secret), for help messages.
    fn raw(&self, span: &Option<Range<usize>>) -> String {
        span.as_ref().and_then(|s| self.doc.shown.get(s.clone())).unwrap_or("").trim().to_string()
    }

    fn wrong(&self, key: &str, item: &Item, span: Option<Range<usize>>, expected: &str, help: String) {
        self.doc.push(self.doc.at(span, format!("`{key}` must be {expected}, not {}", shape(item))).help(help));
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// The span of `key`'s value (or of the key).
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let item = self.table.get(key)?;
        item_span(item).or_else(|| self.table.key(key).and_then(|k| k.span()))
    }

    /// A text value.
    pub fn str(&self, key: &str) -> Option<Spanned<String>> {
        let (item, span) = self.get(key)?;
        match item.as_str() {
            Some(s) => Some(Spanned::new(span.unwrap_or(0..0), s.to_string())),
            None => {
                let raw = self.raw(&span);
                let help = match item {
                    Item::Value(Value::Array(a)) if a.len() == 1 && a.get(0).is_some_and(|v| v.is_str()) => {
                        format!("use the text without brackets: {key} = {}", raw.trim_matches(['[', ']', ' ']))
                    }
                    Item::Value(_) => format!("put the value in quotes: {key} = \"{}\"", raw.replace('"', "\\\"")),
                    _ => format!("write {key} = \"...\""),
                };
                self.wrong(key, item, span, "text in quotes", help);
                None
            }
        }
    }

    /// A required text value; its absence is a problem with `help`.
    pub fn req_str(&self, key: &str, help: &str) -> Option<Spanned<String>> {
        if !self.has(key) {
            self.seen.borrow_mut().push(key.to_string());
            let span = self.span.clone();
            let what = if self.name.is_empty() { String::new() } else { format!(" in [{}]", self.name) };
            self.doc.push(self.doc.at(span, format!("missing `{key}`{what}")).help(help));
            return None;
        }
        self.str(key)
    }

    /// `true` or `false`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        let (item, span) = self.get(key)?;
        if let Some(b) = item.as_bool() {
            return Some(b);
        }
        let raw = self.raw(&span);
        let unquoted = raw.trim_matches(['"', '\'']);
        let help = if matches!(unquoted, "true" | "false") {
            format!("remove the quotes: {key} = {unquoted}")
        } else {
            format!("write {key} = true or {key} = false")
        };
        self.wrong(key, item, span, "true or false", help);
        None
    }

    /// A whole number in `range`; `example` is the fix shown when it is out of range.
    pub fn int(&self, key: &str, range: RangeInclusive<i64>, example: &str) -> Option<Spanned<i64>> {
        let (item, span) = self.get(key)?;
        let v = match item {
            Item::Value(Value::Integer(i)) => *i.value(),
            _ => {
                let raw = self.raw(&span);
                let unquoted = raw.trim_matches(['"', '\'']);
                let help = match item {
                    Item::Value(Value::String(_)) if unquoted.parse::<i64>().is_ok() => {
                        format!("remove the quotes: {key} = {unquoted}")
                    }
                    Item::Value(Value::Float(f)) if f.value().is_finite() => {
                        format!("use a whole number: {key} = {}", f.value().round().max(*range.start() as f64))
                    }
                    _ => example.to_string(),
                };
                self.wrong(key, item, span, "a whole number", help);
                return None;
            }
        };
        if !range.contains(&v) {
            let bounds = if *range.end() == i64::MAX {
                format!("{} or more", range.start())
            } else {
                format!("from {} to {}", range.start(), range.end())
            };
            self.doc.push(self.doc.at(span, format!("`{key}` must be {bounds}, not {v}")).help(example.to_string()));
            return None;
        }
        Some(Spanned::new(span.unwrap_or(0..0), v))
    }

    /// A number (whole or not) with `min < v` (or `min <= v` when `min_included`)
    /// and `v <= max`; never NaN or infinite.
    pub fn float(&self, key: &str, min: f64, min_included: bool, max: f64, example: &str) -> Option<Spanned<f64>> {
        let (item, span) = self.get(key)?;
        let v = match item {
            Item::Value(Value::Float(f)) => *f.value(),
            Item::Value(Value::Integer(i)) => *i.value() as f64,
            _ => {
                let raw = self.raw(&span);
                let unquoted = raw.trim_matches(['"', '\'']);
                let help = match item {
                    Item::Value(Value::String(_)) if unquoted.parse::<f64>().is_ok_and(f64::is_finite) => {
                        format!("remove the quotes: {key} = {unquoted}")
                    }
                    _ => example.to_string(),
                };
                self.wrong(key, item, span, "a number", help);
                return None;
            }
        };
        let low_ok = if min_included { v >= min } else { v > min };
        if !(v.is_finite() && low_ok && v <= max) {
            let bounds = match (min_included, max == MAX_SECS_F) {
                (_, true) => format!("more than {min} and at most a year"),
                (true, false) => format!("a number from {min} to {max}"),
                (false, false) => format!("more than {min} and at most {max}"),
            };
            let raw = self.raw(&span);
            self.doc.push(self.doc.at(span, format!("`{key}` must be {bounds}, not {raw}")).help(example.to_string()));
            return None;
        }
        Some(Spanned::new(span.unwrap_or(0..0), v))
    }

    /// A list of text values.
    pub fn str_list(&self, key: &str) -> Option<Spanned<Vec<Spanned<String>>>> {
        let (item, span) = self.get(key)?;
        let Some(array) = item.as_array() else {
            let raw = self.raw(&span);
            let help = match item {
                Item::Value(Value::String(s)) => {
                    format!("use a list: {key} = [\"{}\"]", s.value().replace('"', "\\\""))
                }
                Item::Value(_) => format!("use a list of text: {key} = [\"{}\"]", raw.trim_matches(['"', '\''])),
                _ => format!("use a list: {key} = [\"...\"]"),
            };
            self.wrong(key, item, span, "a list of text", help);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push(Spanned::new(v.span().unwrap_or(0..0), s.to_string())),
                None => {
                    ok = false;
                    let raw = v.span().and_then(|s| self.doc.shown.get(s)).unwrap_or("").trim().to_string();
                    self.doc.push(
                        self.doc
                            .at(v.span(), format!("`{key}` is a list of text; this item is not text"))
                            .help(format!("put the item in quotes: \"{raw}\"")),
                    );
                }
            }
        }
        ok.then(|| Spanned::new(span.unwrap_or(0..0), out))
    }

    /// A table of text values (`{ "Name" = "value" }`), keys with their spans.
    pub fn str_map(&self, key: &str, example: &str) -> Option<Spanned<StrMap>> {
        let (item, span) = self.get(key)?;
        let Some(t) = item.as_table_like() else {
            self.wrong(key, item, span, "a table", example.to_string());
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in t.iter() {
            let kspan = t.key(k).and_then(|k| k.span()).unwrap_or(0..0);
            match v.as_str() {
                Some(s) => {
                    out.push((Spanned::new(kspan, k.to_string()), Spanned::new(item_span(v).unwrap_or(0..0), s.into())))
                }
                None => {
                    ok = false;
                    self.doc.push(
                        self.doc
                            .at(item_span(v), format!("`{key}.{k}` must be text in quotes, not {}", shape(v)))
                            .help(example.to_string()),
                    );
                }
            }
        }
        ok.then(|| Spanned::new(span.unwrap_or(0..0), out))
    }

    /// The value under `key` as JSON (tables, lists, text, numbers, booleans);
    /// a date or a number that is not finite is a problem.
    pub fn json(&self, key: &str) -> Option<Spanned<serde_json::Value>> {
        let (item, span) = self.get(key)?;
        let mut bad = Vec::new();
        let v = item_json(item, &self.field(key), &mut bad);
        for (at, field) in &bad {
            self.doc.push(
                self.doc
                    .at(
                        at.clone().or(span.clone()),
                        format!("`{field}` cannot be JSON (a date, or a number that is not finite)"),
                    )
                    .help("use text, a number, true or false, a list or a table"),
            );
        }
        bad.is_empty().then(|| Spanned::new(span.unwrap_or(0..0), v))
    }

    /// The sub-table under `key` (`[key]` or `key = { … }`); `None` when absent
    /// or not a table (then a problem is recorded).
    pub fn table(&self, key: &str) -> Option<Table<'d>> {
        let (item, span) = self.get(key)?;
        let name = self.field(key);
        match item.as_table_like() {
            Some(t) => Some(Table {
                doc: self.doc,
                span: span.or_else(|| self.table.key(key).and_then(|k| k.span())),
                name,
                table: t,
                seen: RefCell::default(),
            }),
            None => {
                let help = format!("write [{name}] on a line of its own, with its fields on the lines below it");
                self.wrong(key, item, span, "a table", help);
                None
            }
        }
    }

    /// Every entry of this table as a sub-table (`[providers.NAME]`), in file order.
    pub fn tables(&self) -> Vec<(String, Table<'d>)> {
        let keys: Vec<String> = self.table.iter().map(|(k, _)| k.to_string()).collect();
        keys.into_iter().filter_map(|k| self.table(&k).map(|t| (k, t))).collect()
    }

    /// The keys present, in file order.
    pub fn keys(&self) -> Vec<String> {
        self.table.iter().map(|(k, _)| k.to_string()).collect()
    }

    /// Records every key not read by a getter as unknown, suggesting the
    /// closest of `known`.
    pub fn deny_unknown(&self, known: &[&str]) {
        let seen = self.seen.borrow();
        for (k, _) in self.table.iter() {
            if seen.iter().any(|s| s == k) {
                continue;
            }
            let span = self.table.key(k).and_then(|k| k.span());
            let help = match closest(k, known) {
                Some(c) => format!("did you mean `{c}`? (fields here: {})", known.join(", ")),
                None => format!("remove it; the fields here are: {}", known.join(", ")),
            };
            let place = if self.name.is_empty() { String::new() } else { format!(" in [{}]", self.name) };
            self.doc.push(self.doc.at(span, format!("unknown field `{k}`{place}")).help(help));
        }
    }
}

/// The longest duration in seconds any setting accepts (one year).
pub const MAX_SECS_F: f64 = lemming_provider::config::MAX_SECS;

/// The largest amount of credits any setting accepts (credits, budgets,
/// prices), and the ledger's bound on every amount.
pub const MAX_CREDITS: f64 = 1e12;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, f: impl FnOnce(&Table)) -> Vec<Diagnostic> {
        let path = Path::new("f.toml");
        let doc = Doc::parse(path, text).unwrap();
        f(&doc.root());
        doc.finish()
    }

    #[test]
    fn reports_every_type_error_with_a_fitting_fix() {
        let errs = check("a = \"*\"\nb = \"3\"\nc = 1.5\nd = \"true\"\ne = 7\nzz = 1\n", |t| {
            assert!(t.str_list("a").is_none());
            assert!(t.int("b", 0..=10, "b = 3").is_none());
            assert!(t.int("c", 0..=10, "c = 1").is_none());
            assert!(t.bool("d").is_none());
            assert!(t.str("e").is_none());
            t.deny_unknown(&["a", "b", "c", "d", "e", "z"]);
        });
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(errs.len(), 6, "{shown:#?}");
        assert_eq!(errs.iter().map(|d| d.line.unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(errs[0].help.as_deref(), Some("use a list: a = [\"*\"]"));
        assert_eq!(errs[1].help.as_deref(), Some("remove the quotes: b = 3"));
        assert_eq!(errs[2].help.as_deref(), Some("use a whole number: c = 2"));
        assert_eq!(errs[3].help.as_deref(), Some("remove the quotes: d = true"));
        assert_eq!(errs[4].help.as_deref(), Some("put the value in quotes: e = \"7\""));
        assert!(errs[5].help.as_deref().unwrap().starts_with("did you mean `z`?"), "{}", errs[5]);
    }

    #[test]
    fn ranges_are_checked_and_nan_refused() {
        let errs = check("a = -1\nb = nan\nc = 3.0\nd = inf\n", |t| {
            assert!(t.int("a", 0..=5, "a = 1").is_none());
            assert!(t.float("b", 0.0, true, 10.0, "b = 1").is_none());
            assert_eq!(*t.float("c", 0.0, false, 10.0, "c = 1").unwrap().get_ref(), 3.0);
            assert!(t.float("d", 0.0, true, f64::MAX, "d = 1").is_none());
        });
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].message.contains("from 0 to 5, not -1"), "{}", errs[0]);
    }

    #[test]
    fn syntax_help_fits_a_bare_word() {
        let errs = Doc::parse(Path::new("f"), "model = default\n").err().unwrap();
        assert_eq!(errs[0].help.as_deref(), Some("text needs quotes: model = \"default\""), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(1));
    }

    #[test]
    fn masked_values_never_show() {
        let text = "k = \"hunter2-secret\"\nn = 5\n";
        let mut doc = Doc::parse(Path::new("f"), text).unwrap();
        doc.mask(4..20);
        {
            let t = doc.root();
            t.int("k", 0..=1, "k = 1");
            doc.push(doc.at(Some(4..20), "about hunter2-secret"));
        }
        for d in doc.finish() {
            let s = d.to_string();
            assert!(!s.contains("hunter2"), "{s}");
        }
    }

    /// The reader's short way answers as the full check does, word for word:
    /// through a linked folder out of the org or into it, for a link, a
    /// folder, a missing file and a file over the limit.
    #[test]
    fn a_reader_answers_as_the_full_check() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("org");
        let outside = tmp.path().join("elsewhere");
        for d in [root.join("agents/plain"), root.join("agents/real"), outside.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        for d in [root.join("agents/plain"), root.join("agents/real"), outside.clone()] {
            std::fs::write(d.join("resume.toml"), "a = 1\n").unwrap();
        }
        std::fs::write(root.join("agents/plain/big.toml"), "#".repeat(100)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("agents/out")).unwrap();
        std::os::unix::fs::symlink(root.join("agents/real"), root.join("agents/in")).unwrap();
        std::os::unix::fs::symlink(root.join("agents/real/resume.toml"), root.join("agents/plain/link.toml")).unwrap();
        let reader = Reader::new(&root);
        let shown = |r: Result<String, Vec<Diagnostic>>| match r {
            Ok(text) => format!("ok: {text}"),
            Err(e) => e.iter().map(|d| format!("{d} / {:?}", d.help)).collect(),
        };
        let cases = [
            ("agents/plain/resume.toml", "ok: a = 1\n"),
            ("agents/plain/big.toml", "the file is 100 bytes; the limit is 50 bytes"),
            ("agents/plain/link.toml", "ok: a = 1\n"),
            ("agents/plain", "is a directory, not a regular file"),
            ("agents/plain/gone.toml", "cannot read: No such file"),
            ("agents/out/resume.toml", "is a file outside the org"),
            ("agents/in/resume.toml", "ok: a = 1\n"),
        ];
        // Twice: the second time the folders are known to be plain.
        for _ in 0..2 {
            for (rel, want) in cases {
                let path = root.join(rel);
                let quick = shown(reader.read(&path, 50));
                assert!(quick.contains(want), "{rel}: {quick}");
                assert_eq!(quick, shown(read_resolved(&path, &root, 50)), "{rel}");
            }
        }
        // The file outside is never quoted.
        std::fs::write(outside.join("resume.toml"), "secret = 1\n").unwrap();
        assert!(!shown(reader.read(&root.join("agents/out/resume.toml"), 50)).contains("secret"));
    }

    #[test]
    fn refuses_links_out_of_the_org_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("org");
        std::fs::create_dir_all(&root).unwrap();
        let outside = tmp.path().join("secret.txt");
        std::fs::write(&outside, "root:$6$hash:19000:0:99999:7:::\n").unwrap();
        let link = root.join("resume.toml");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let e = read(&link, &root, 1 << 20).unwrap_err();
        let shown = e[0].to_string();
        assert!(shown.contains("outside the org") && !shown.contains("root:$6"), "{shown}");
        // A link inside the org is read.
        std::fs::write(root.join("real.toml"), "a = 1\n").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(root.join("real.toml"), &link).unwrap();
        assert_eq!(read(&link, &root, 1 << 20).unwrap(), "a = 1\n");
        // A FIFO neither blocks nor is read.
        let fifo = root.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read(&fifo, &root, 1 << 20).unwrap_err()[0].message.contains("FIFO"));
        // Binary content is not shown.
        std::fs::write(root.join("bin.toml"), b"a = 1\n\xff\xfe secret").unwrap();
        let e = read(&root.join("bin.toml"), &root, 1 << 20).unwrap_err();
        assert_eq!((e[0].line, e[0].snippet.as_ref()), (Some(2), None));
        assert!(!e[0].to_string().contains("secret"));
    }
}
