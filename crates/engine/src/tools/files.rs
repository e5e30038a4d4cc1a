//! The file tools: `read_file`, `write_file`, `list_files` and `search_files`,
//! confined to the agent's `workspace/` (and the org's `shared/` folder when
//! the agent is granted it), and the JSON schemas of every built-in tool.
//!
//! Every path argument goes through [`resolve`]: it is relative to the
//! workspace (`shared/…` names the shared folder), and absolute paths, `..`,
//! NUL bytes and symbolic links that point out of the folder are refused
//! before anything is opened. The path is then never walked by name again:
//! from a descriptor of the root, each folder is opened in turn without
//! following a symbolic link, and the file is opened, created, renamed or
//! listed relative to the folder that holds it. So a folder swapped for a link
//! after the check (by a program the agent started earlier) is refused, not
//! followed out. A whole write replaces the file atomically, through a
//! temporary file created exclusively in the same folder.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

pub use super::catalog::builtin_spec;
use super::dirfd::Dir;
use super::{Ctx, Outcome};
use crate::resume::Shared;

/// The longest path argument accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// The most files `search_files` reads in one call (the rest are not searched,
/// and the result says so).
pub const MAX_SEARCHED_FILES: usize = 10_000;

/// The deepest folder `search_files` descends into, below where it starts.
pub const MAX_SEARCH_DEPTH: usize = 32;

/// The longest matching line `search_files` shows, in bytes (the rest is cut).
pub const MAX_MATCH_LINE_BYTES: usize = 500;

/// Refuses an argument that `tool` does not take, naming the ones it does.
pub(crate) fn check_args(tool: &str, args: &Value, known: &[&str]) -> Result<(), String> {
    let empty = Map::new();
    for key in args.as_object().unwrap_or(&empty).keys() {
        if !known.contains(&key.as_str()) {
            let key: String = key.chars().take(64).collect();
            return Err(format!(
                "unknown argument `{}` for {tool} (it takes: {})",
                crate::term::line(&key),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// An optional string argument: `None` when absent or null.
pub(crate) fn optional_string<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("argument `{name}` must be a string, not {}", kind(other))),
    }
}

/// A required string argument.
pub(crate) fn required_string<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    optional_string(args, name)?.ok_or_else(|| format!("missing argument `{name}` (a string)"))
}

/// An optional boolean argument: `None` when absent or null.
pub(crate) fn optional_bool(args: &Value, name: &str) -> Result<Option<bool>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("argument `{name}` must be true, false or null, not {}", kind(other))),
    }
}

/// What a JSON value is, for errors.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `s` cut to at most `max` bytes at a character boundary, and whether it was cut.
pub(crate) fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// `output` as a tool's result, cut at the org's `max_output_bytes`.
pub(crate) fn capped(ctx: &Ctx<'_>, tool: &str, output: &str, truncated: bool) -> Outcome {
    let max = usize::try_from(ctx.org.settings.tools.max_output_bytes).unwrap_or(usize::MAX);
    let (out, cut_here) = cut(output, max);
    Outcome::ok(tool, out, truncated || cut_here)
}

/// Runs one of the file tools.
pub fn run(ctx: &Ctx<'_>, tool: &str, args: &Value) -> Outcome {
    let done = match tool {
        "read_file" => read_file(ctx, args),
        "write_file" => write_file(ctx, args),
        "list_files" => list_files(ctx, args),
        "search_files" => search_files(ctx, args),
        _ => Err(format!("`{tool}` is not a file tool")),
    };
    done.unwrap_or_else(|e| Outcome::err(tool, e))
}

/// What a file tool does at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it, list it or search it.
    Read,
    /// Write it (or create it).
    Write,
}

/// A path argument resolved inside the folder it is confined to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path on disk: inside `root`, with every component that exists
    /// resolved (no symbolic link is left in it).
    pub path: PathBuf,
    /// The folder it is confined to (canonical): the workspace or `shared/`.
    pub root: PathBuf,
    /// The path as the agent names it, normalised (`notes/a.md`,
    /// `shared/plan.md`; `.` for the workspace itself).
    pub shown: String,
    /// Whether it names the root itself.
    pub is_root: bool,
    /// Whether it exists.
    pub exists: bool,
}

/// Resolves the path argument `arg` of a file tool for `access`, confined to
/// the calling agent's workspace (created if missing) or, for `shared/…`, to
/// the org's shared folder when `permissions.shared` grants `access`.
///
/// Refused, with an error that says why: NUL bytes, absolute paths, any `..`
/// component, `shared/…` when not granted, and a symbolic link anywhere on
/// the path that points out of the folder (or nowhere). A link that points
/// inside the folder is followed, and [`Target::path`] is where it leads.
pub fn resolve(ctx: &Ctx<'_>, arg: &str, access: Access) -> Result<Target, String> {
    if arg.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    if arg.len() > MAX_PATH_BYTES {
        return Err(format!("the path is {} bytes long; the limit is {MAX_PATH_BYTES}", arg.len()));
    }
    let quoted = || crate::term::line(arg).into_owned();
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(arg).components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "`{}`: `..` is not allowed in paths; name files from your workspace down (shared/… for the \
                     org's shared folder)",
                    quoted()
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{}` is an absolute path: paths are relative to your workspace (shared/… for the org's shared \
                     folder)",
                    quoted()
                ))
            }
        }
    }
    let layout = &ctx.org.layout;
    let in_shared = parts.first() == Some(&OsStr::new("shared"));
    let (root, rel, label) = if in_shared {
        let granted = match access {
            Access::Read => ctx.resume.shared != Shared::None,
            Access::Write => ctx.resume.shared == Shared::Write,
        };
        if !granted {
            let (what, need) = match access {
                Access::Read => ("read", "\"read\" or \"write\""),
                Access::Write => ("write", "\"write\""),
            };
            let now = match ctx.resume.shared {
                Shared::None => "none",
                Shared::Read => "read",
                Shared::Write => "write",
            };
            return Err(format!(
                "not permitted: {} may not {what} the org's shared folder (permissions.shared is {now}; it needs \
                 {need})",
                ctx.agent
            ));
        }
        (layout.shared_dir(), &parts[1..], "the org's shared folder")
    } else {
        (layout.workspace(ctx.agent), &parts[..], "your workspace")
    };
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {label}: {e}"))?;
    let root = fs::canonicalize(&root).map_err(|e| format!("cannot open {label}: {e}"))?;
    let prefix = if in_shared { "shared/" } else { "" };
    let shown_upto = |n: usize| -> String {
        let names: Vec<String> = rel[..n].iter().map(|p| p.to_string_lossy().into_owned()).collect();
        crate::term::line(&format!("{prefix}{}", names.join("/"))).into_owned()
    };
    let mut path = root.clone();
    let mut exists = true;
    for (i, part) in rel.iter().enumerate() {
        let next = path.join(part);
        if !exists {
            path = next;
            continue;
        }
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(&next) {
                Ok(to) if to.starts_with(&root) => path = to,
                Ok(_) => {
                    return Err(format!(
                        "`{}` is a symbolic link that points outside {label}; it is not followed",
                        shown_upto(i + 1)
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "`{}` is a symbolic link that points nowhere or out of reach; it is not followed",
                        shown_upto(i + 1)
                    ))
                }
            },
            Ok(m) => {
                if !m.is_dir() && i + 1 < rel.len() {
                    return Err(format!("`{}` is a file, not a folder", shown_upto(i + 1)));
                }
                path = next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                exists = false;
                path = next;
            }
            Err(e) => return Err(format!("`{}`: {e}", shown_upto(i + 1))),
        }
    }
    let shown = match (rel.is_empty(), in_shared) {
        (true, false) => ".".to_string(),
        (true, true) => "shared".to_string(),
        (false, _) => shown_upto(rel.len()),
    };
    Ok(Target { path, root, shown, is_root: rel.is_empty(), exists })
}

/// `read_file {path}`.
fn read_file(ctx: &Ctx<'_>, args: &Value) -> Result<Outcome, String> {
    check_args("read_file", args, &["path"])?;
    let arg = required_string(args, "path")?;
    if arg.trim().is_empty() {
        return Err("argument `path` is empty: name a file, relative to your workspace".into());
    }
    let t = resolve(ctx, arg, Access::Read)?;
    read_target(ctx, &t)
}

/// Reads the resolved file `t`, through the folder that holds it.
fn read_target(ctx: &Ctx<'_>, t: &Target) -> Result<Outcome, String> {
    if t.is_root {
        return Err(format!("`{}` is a folder: list it with list_files", t.shown));
    }
    let (dir, name) = open_parent(t, false).map_err(|e| walk_error(t, e, MISSING))?;
    let limit = ctx.org.settings.tools.max_read_bytes;
    let file = open_existing(&dir, &name, &t.shown, libc::O_RDONLY)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("`{}`: {e}", t.shown))?;
    let truncated = bytes.len() as u64 > limit;
    if truncated {
        bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    if bytes.contains(&0) {
        return Err(format!(
            "`{}` looks like a binary file (it contains NUL bytes); read_file reads text files only",
            t.shown
        ));
    }
    let text = String::from_utf8_lossy(if truncated { whole_chars(&bytes) } else { &bytes }).into_owned();
    Ok(capped(ctx, "read_file", &text, truncated))
}

/// `bytes` without a character cut short at its end (a read that stopped at a limit).
fn whole_chars(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 != 0x80 {
            let len = match b {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if len > back { &bytes[..bytes.len() - back] } else { bytes };
        }
    }
    bytes
}

/// What a read of a missing file says after its name.
const MISSING: &str = "does not exist (list_files shows what does)";

/// The folders and the file name of `t` below its root, as resolved (no
/// symbolic link is left in them).
fn below_root(t: &Target) -> Vec<OsString> {
    let rel = t.path.strip_prefix(&t.root).unwrap_or(Path::new(""));
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            _ => None,
        })
        .collect()
}

/// Opens the folder that holds `t` and gives it with `t`'s file name.
///
/// The walk starts at `t`'s root and opens one folder at a time, never
/// following a symbolic link: `resolve` already followed the links that stay
/// inside, so a link met now was put there after the check, and the walk
/// fails (`ELOOP` or `ENOTDIR`) rather than leave the root. With `create`,
/// missing folders are made (made durable with the rest of the call's writes:
/// see [`replace`]).
fn open_parent(t: &Target, create: bool) -> std::io::Result<(Dir, OsString)> {
    let mut parts = below_root(t);
    let name = parts.pop().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut dir = Dir::open(&t.root)?;
    for part in &parts {
        dir = match dir.open_dir(part) {
            Ok(d) => d,
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                match dir.mkdir(part) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                dir.open_dir(part)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok((dir, name))
}

/// Whether `e` says that a name opened as a folder is a link or a file.
fn not_a_folder(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// The error of a failed walk to `t` as the agent is told: `missing` follows
/// the name when a folder on the path does not exist.
fn walk_error(t: &Target, e: std::io::Error, missing: &str) -> String {
    if not_a_folder(&e) {
        replaced(&t.shown)
    } else if e.kind() == std::io::ErrorKind::NotFound {
        format!("`{}` {missing}", t.shown)
    } else {
        format!("`{}`: {e}", t.shown)
    }
}

/// A folder on the path to `shown` changed between its check and its use.
fn replaced(shown: &str) -> String {
    format!(
        "`{shown}` changed while it was being used: a folder on its path was replaced (by a symbolic link or a \
         file); it was not followed and nothing was done"
    )
}

/// Opens the regular file `name` in `dir` with `flags`, never following a
/// symbolic link there; the error names it as the agent does (`shown`).
fn open_regular_at(dir: &Dir, name: &OsStr, shown: &str, flags: libc::c_int) -> Result<fs::File, String> {
    let file = match dir.open_file(name, flags | libc::O_NONBLOCK) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("`{shown}` is a symbolic link, not a regular file; it was not followed"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("`{shown}` {MISSING}")),
        Err(e) => return Err(format!("`{shown}`: {e}")),
    };
    let m = file.metadata().map_err(|e| format!("`{shown}`: {e}"))?;
    if m.is_dir() {
        return Err(format!("`{shown}` is a folder: list it with list_files"));
    }
    if !m.is_file() {
        let kind = crate::fsx::EntryKind::of(m.file_type()).describe();
        return Err(format!("`{shown}` is {kind}, not a regular file; it was not read"));
    }
    Ok(file)
}

/// Opens the existing regular file `name` in `dir` like [`open_regular_at`],
/// saying first when it is a folder or missing.
fn open_existing(dir: &Dir, name: &OsStr, shown: &str, flags: libc::c_int) -> Result<fs::File, String> {
    match dir.stat(name) {
        Ok(s) if s.is_dir() => return Err(format!("`{shown}` is a folder: list it with list_files")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("`{shown}` {MISSING}")),
        Err(e) => return Err(format!("`{shown}`: {e}")),
    }
    open_regular_at(dir, name, shown, flags)
}

/// `write_file {path, content, append?}`.
fn write_file(ctx: &Ctx<'_>, args: &Value) -> Result<Outcome, String> {
    check_args("write_file", args, &["path", "content", "append"])?;
    let arg = required_string(args, "path")?;
    let content = required_string(args, "content")?;
    let append = optional_bool(args, "append")?.unwrap_or(false);
    if arg.trim().is_empty() {
        return Err("argument `path` is empty: name a file, relative to your workspace".into());
    }
    let limit = ctx.org.settings.tools.max_write_bytes;
    if content.len() as u64 > limit {
        return Err(format!(
            "argument `content` is {} bytes; the limit is {limit} (tools.max_write_bytes in org.toml)",
            content.len()
        ));
    }
    let t = resolve(ctx, arg, Access::Write)?;
    write_target(&t, content, append)
}

/// Writes (or appends) `content` to the resolved file `t`, through the folder
/// that holds it (made if missing).
fn write_target(t: &Target, content: &str, append: bool) -> Result<Outcome, String> {
    if t.is_root {
        return Err(format!("`{}` is a folder; name a file inside it", t.shown));
    }
    let (dir, name) = open_parent(t, true).map_err(|e| {
        if not_a_folder(&e) {
            replaced(&t.shown)
        } else {
            format!("cannot create the folders of `{}`: {e}", t.shown)
        }
    })?;
    let existing = dir.stat(&name).ok();
    if existing.is_some_and(|s| s.is_dir()) {
        return Err(format!("`{}` is a folder; name a file inside it", t.shown));
    }
    let n = content.len();
    if append {
        let mut f = match existing {
            Some(_) => open_existing(&dir, &name, &t.shown, libc::O_WRONLY | libc::O_APPEND)?,
            None => open_regular_at(&dir, &name, &t.shown, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT)?,
        };
        crate::fault::disk_full()
            .and_then(|()| f.write_all(content.as_bytes()))
            .map_err(|e| format!("cannot append to `{}`: {e}", t.shown))?;
        return Ok(Outcome::ok("write_file", format!("appended {n} bytes to {}", t.shown), false));
    }
    // A whole write: a temporary file in the same folder, renamed onto the
    // name (a rename replaces a link put there, never follows it).
    replace(&dir, &name, content.as_bytes(), tmp_names()).map_err(|e| format!("cannot write `{}`: {e}", t.shown))?;
    Ok(Outcome::ok("write_file", format!("wrote {n} bytes to {}", t.shown), false))
}

/// Temporary names for a whole write, unique in this process: a few are
/// tried in turn, in case something already holds one.
fn tmp_names() -> impl Iterator<Item = OsString> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (0..8).map(|_| {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!(".write_file.{n}.{}.tmp", std::process::id()))
    })
}

/// Replaces `name` in `dir` with `bytes` atomically: a new temporary file
/// (the first of `tmp_names` that is free; created exclusively, so a link
/// planted at its name is never followed) is written and renamed onto `name`.
///
/// Nothing here is fsynced: the turn makes every tool's writes durable at
/// once, with one `syncfs` after its calls ran and before their results are
/// journaled (a call cut short by a crash before that is `interrupted`), so
/// a hundred agents writing a file each cost one flush, not two hundred.
fn replace(
    dir: &Dir,
    name: &OsStr,
    bytes: &[u8],
    tmp_names: impl IntoIterator<Item = OsString>,
) -> std::io::Result<()> {
    let mut tried = 0;
    let (tmp, mut f) = 'found: {
        for tmp in tmp_names {
            tried += 1;
            match dir.open_file(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) {
                Ok(f) => break 'found (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("the {tried} temporary names tried beside it are all taken"),
        ));
    };
    let written = crate::fault::disk_full().and_then(|()| f.write_all(bytes)).and_then(|()| dir.rename(&tmp, name));
    if written.is_err() {
        let _ = dir.unlink(&tmp);
    }
    written
}

/// Opens the folder `t` names; `Err` says why it cannot be listed.
fn open_folder(t: &Target) -> Result<Dir, String> {
    if t.is_root {
        return Dir::open(&t.root).map_err(|e| format!("cannot open `{}`: {e}", t.shown));
    }
    let (parent, name) = open_parent(t, false).map_err(|e| walk_error(t, e, "does not exist"))?;
    match parent.stat(&name) {
        Ok(s) if s.is_dir() => {}
        Ok(s) if s.kind == Some(crate::fsx::EntryKind::Symlink) => return Err(replaced(&t.shown)),
        Ok(_) => return Err(format!("`{}` is a file, not a folder: read it with read_file", t.shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("`{}` does not exist", t.shown)),
        Err(e) => return Err(format!("`{}`: {e}", t.shown)),
    }
    parent.open_dir(&name).map_err(|e| walk_error(t, e, "does not exist"))
}

/// `list_files {path?}`.
fn list_files(ctx: &Ctx<'_>, args: &Value) -> Result<Outcome, String> {
    check_args("list_files", args, &["path"])?;
    let arg = optional_string(args, "path")?.unwrap_or("");
    let t = resolve(ctx, arg, Access::Read)?;
    list_target(ctx, &t)
}

/// Lists the resolved folder `t`, through its descriptor.
fn list_target(ctx: &Ctx<'_>, t: &Target) -> Result<Outcome, String> {
    let dir = open_folder(t)?;
    let mut entries: Vec<(String, String)> = Vec::new();
    for name in dir.names().map_err(|e| format!("cannot list `{}`: {e}", t.shown))? {
        let shown = crate::term::line(&name.to_string_lossy()).into_owned();
        let line = match dir.stat(&name) {
            Ok(s) if s.is_dir() => format!("{shown}/"),
            Ok(s) if s.is_file() => format!("{shown} ({} bytes)", s.len),
            Ok(s) => format!("{shown} ({})", s.kind.unwrap_or(crate::fsx::EntryKind::Other).describe()),
            Err(_) => continue,
        };
        entries.push((shown, line));
    }
    if entries.is_empty() {
        return Ok(Outcome::ok("list_files", format!("`{}` is empty", t.shown), false));
    }
    entries.sort();
    let max = ctx.org.settings.tools.max_entries;
    let more = entries.len().saturating_sub(max);
    let mut out: String = entries.iter().take(max).map(|(_, l)| format!("{l}\n")).collect();
    if more > 0 {
        out.push_str(&format!("… and {more} more (tools.max_entries is {max})\n"));
    }
    Ok(capped(ctx, "list_files", &out, more > 0))
}

/// `search_files {pattern, path?}`.
fn search_files(ctx: &Ctx<'_>, args: &Value) -> Result<Outcome, String> {
    check_args("search_files", args, &["pattern", "path"])?;
    let pattern = required_string(args, "pattern")?;
    if pattern.is_empty() {
        return Err("argument `pattern` is empty: give the text to look for".into());
    }
    let arg = optional_string(args, "path")?.unwrap_or("");
    let t = resolve(ctx, arg, Access::Read)?;
    search_target(ctx, &t, pattern)
}

/// Searches the resolved file or folder `t` for `pattern`, through descriptors.
fn search_target(ctx: &Ctx<'_>, t: &Target, pattern: &str) -> Result<Outcome, String> {
    let limits = &ctx.org.settings.tools;
    let mut s = Search {
        pattern,
        max_matches: limits.max_entries,
        max_file_bytes: limits.max_read_bytes,
        max_output: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
        out: String::new(),
        matches: 0,
        files: 0,
        binary: 0,
        large: 0,
        too_deep: false,
        stopped: None,
    };
    let shown = if t.shown == "." { String::new() } else { t.shown.clone() };
    if t.is_root {
        let dir = Dir::open(&t.root).map_err(|e| format!("cannot open `{}`: {e}", t.shown))?;
        s.folder(&dir, &shown, 0);
    } else {
        let (parent, name) = open_parent(t, false).map_err(|e| walk_error(t, e, "does not exist"))?;
        match parent.stat(&name) {
            Ok(m) if m.is_dir() => {
                let dir = parent.open_dir(&name).map_err(|e| walk_error(t, e, "does not exist"))?;
                s.folder(&dir, &shown, 0);
            }
            Ok(m) if m.is_file() => s.file(&parent, &name, &shown),
            Ok(m) if m.kind == Some(crate::fsx::EntryKind::Symlink) => return Err(replaced(&t.shown)),
            Ok(_) => return Err(format!("`{}` is neither a file nor a folder", t.shown)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("`{}` does not exist", t.shown));
            }
            Err(e) => return Err(format!("`{}`: {e}", t.shown)),
        }
    }
    let mut out = std::mem::take(&mut s.out);
    if s.matches == 0 {
        out = format!("no matches for `{}` under `{}`\n", crate::term::line(pattern), t.shown);
    }
    if s.binary > 0 || s.large > 0 {
        out.push_str(&format!(
            "(skipped: {} binary file(s), {} file(s) over {} bytes)\n",
            s.binary, s.large, s.max_file_bytes
        ));
    }
    if s.too_deep {
        out.push_str(&format!("(folders more than {MAX_SEARCH_DEPTH} deep were not searched)\n"));
    }
    if let Some(why) = s.stopped {
        out.push_str(&format!("(stopped: {why})\n"));
    }
    Ok(capped(ctx, "search_files", &out, s.stopped.is_some() || s.too_deep))
}

/// One `search_files` walk.
struct Search<'a> {
    pattern: &'a str,
    max_matches: usize,
    max_file_bytes: u64,
    max_output: usize,
    out: String,
    matches: usize,
    files: usize,
    binary: usize,
    large: usize,
    /// Whether folders too deep were left out.
    too_deep: bool,
    /// Why the walk stopped early, if it did.
    stopped: Option<&'static str>,
}

impl Search<'_> {
    /// Searches the open folder `dir` (shown as `shown`), depth first in name
    /// order, never following a symbolic link (a subfolder swapped for one
    /// during the walk fails to open and is skipped).
    fn folder(&mut self, dir: &Dir, shown: &str, depth: usize) {
        if depth > MAX_SEARCH_DEPTH {
            self.too_deep = true;
            return;
        }
        let Ok(mut names) = dir.names() else { return };
        names.sort();
        for name in names {
            if self.stopped.is_some() {
                return;
            }
            let lossy = name.to_string_lossy();
            let child = if shown.is_empty() { lossy.into_owned() } else { format!("{shown}/{lossy}") };
            match dir.stat(&name) {
                Ok(m) if m.is_dir() => {
                    if let Ok(sub) = dir.open_dir(&name) {
                        self.folder(&sub, &child, depth + 1);
                    }
                }
                Ok(m) if m.is_file() => self.file(dir, &name, &child),
                _ => {}
            }
        }
    }

    /// Searches the regular file `name` in `dir`: skipped when larger than
    /// the read limit or binary.
    fn file(&mut self, dir: &Dir, name: &OsStr, shown: &str) {
        if self.files >= MAX_SEARCHED_FILES {
            self.stopped = Some("too many files; search a folder further down");
            return;
        }
        self.files += 1;
        let Ok(f) = open_regular_at(dir, name, shown, libc::O_RDONLY) else { return };
        let mut bytes = Vec::new();
        if f.take(self.max_file_bytes.saturating_add(1)).read_to_end(&mut bytes).is_err() {
            return;
        }
        if bytes.len() as u64 > self.max_file_bytes {
            self.large += 1;
            return;
        }
        if bytes.contains(&0) {
            self.binary += 1;
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        let shown = crate::term::line(shown);
        for (i, line) in text.lines().enumerate() {
            if !line.contains(self.pattern) {
                continue;
            }
            if self.matches >= self.max_matches {
                self.stopped = Some("too many matches (tools.max_entries)");
                return;
            }
            if self.out.len() > self.max_output {
                self.stopped = Some("the output is full (tools.max_output_bytes)");
                return;
            }
            self.matches += 1;
            let (shown_line, cut_line) = cut(line, MAX_MATCH_LINE_BYTES);
            let ellipsis = if cut_line { " …" } else { "" };
            self.out.push_str(&format!("{shown}:{}: {}{ellipsis}\n", i + 1, crate::term::line(shown_line)));
        }
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! An org in a temp folder and a [`Ctx`] over it, for the tools' tests.

    use super::*;
    use crate::org::Org;
    use crate::resume::Resume;

    /// The default org, loaded, with `manager` granted every built-in tool.
    pub(crate) struct Fixture {
        _dir: tempfile::TempDir,
        pub org: Org,
        pub resume: Resume,
    }

    impl Fixture {
        pub(crate) fn new() -> Fixture {
            let (dir, root) = crate::testing::new_org();
            let org = Org::load(&root).unwrap();
            let mut resume = org.agents.values().find(|r| r.name.as_str() == "manager").unwrap().clone();
            resume.tools = super::super::BUILTIN.iter().map(|s| s.to_string()).collect();
            resume.shared = Shared::None;
            Fixture { _dir: dir, org, resume: *resume }
        }

        pub(crate) fn ctx(&self) -> Ctx<'_> {
            Ctx { org: &self.org, agent: "manager", resume: &self.resume, turn: 1, now: chrono::Utc::now() }
        }

        /// `manager`'s workspace (created).
        pub(crate) fn ws(&self) -> PathBuf {
            let p = self.org.layout.workspace("manager");
            fs::create_dir_all(&p).unwrap();
            p
        }

        /// The org's shared folder (created).
        pub(crate) fn shared(&self) -> PathBuf {
            let p = self.org.layout.shared_dir();
            fs::create_dir_all(&p).unwrap();
            p
        }

        /// Runs `tool` with `args` through [`super::super::run`], as the turn does.
        pub(crate) fn call(&self, tool: &str, args: Value) -> Outcome {
            let call = super::super::Call { id: "c1".into(), tool: tool.into(), args };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(super::super::run(&self.ctx(), &call))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::symlink;

    fn error(o: &Outcome) -> &str {
        assert!(!o.ok, "expected a failure, got {o:?}");
        o.error.as_deref().unwrap()
    }

    fn output(o: &Outcome) -> &str {
        assert!(o.ok, "expected success, got {o:?}");
        o.output.as_deref().unwrap()
    }

    /// Every file tool's call with the path argument `p`.
    fn calls(p: &str) -> Vec<(&'static str, Value)> {
        vec![
            ("read_file", json!({"path": p})),
            ("write_file", json!({"path": p, "content": "evil"})),
            ("write_file", json!({"path": p, "content": "evil", "append": true})),
            ("list_files", json!({"path": p})),
            ("search_files", json!({"pattern": "secret", "path": p})),
        ]
    }

    /// Walks a schema, checking the shape OpenAI's strict mode accepts.
    fn check_strict(schema: &Value, at: &str) {
        let types: Vec<&str> = match &schema["type"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|t| t.as_str().unwrap()).collect(),
            other => panic!("{at}: no type ({other})"),
        };
        if types.contains(&"object") {
            let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{at}: no properties"));
            let required: Vec<&str> =
                schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            let mut req = required.clone();
            keys.sort();
            req.sort();
            assert_eq!(keys, req, "{at}: every property must be required");
            assert_eq!(schema["additionalProperties"], json!(false), "{at}");
            for (k, v) in props {
                check_strict(v, &format!("{at}.{k}"));
            }
        }
        if types.contains(&"array") {
            check_strict(&schema["items"], &format!("{at}[]"));
        }
    }

    #[test]
    fn every_builtin_has_a_strict_spec_with_a_valid_name() {
        for name in super::super::BUILTIN {
            let spec = builtin_spec(name).unwrap_or_else(|| panic!("no spec for {name}"));
            assert_eq!(spec.name, name);
            let b = spec.name.as_bytes();
            assert!(
                (1..=64).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')),
                "{name} is no valid function name"
            );
            assert!(!spec.description.is_empty() && !spec.description.contains('\n'));
            assert_eq!(spec.parameters["type"], "object", "{name}");
            check_strict(&spec.parameters, name);
        }
        assert!(builtin_spec("nope").is_none());
    }

    #[test]
    fn the_strict_walk_catches_a_schema_that_is_not_strict() {
        let loose =
            json!({"type":"object","properties":{"a":{"type":"string"}},"required":[],"additionalProperties":false});
        assert!(std::panic::catch_unwind(|| check_strict(&loose, "t")).is_err());
        let open = json!({"type":"object","properties":{},"required":[]});
        assert!(std::panic::catch_unwind(|| check_strict(&open, "t")).is_err());
    }

    #[test]
    fn specs_name_the_documented_arguments() {
        let props = |n: &str| -> Vec<String> {
            let mut v: Vec<String> =
                builtin_spec(n).unwrap().parameters["properties"].as_object().unwrap().keys().cloned().collect();
            v.sort();
            v
        };
        assert_eq!(props("write_file"), ["append", "content", "path"]);
        assert_eq!(props("run_command"), ["args", "program"]);
        assert_eq!(props("hire_agent"), ["credits", "instructions", "model", "name", "read_from", "send_to", "title"]);
        let hire = builtin_spec("hire_agent").unwrap().parameters;
        assert_eq!(hire["properties"]["model"]["type"], json!(["string", "null"]));
        assert_eq!(hire["properties"]["send_to"]["type"], "array");
        assert_eq!(
            builtin_spec("list_files").unwrap().parameters["properties"]["path"]["type"],
            json!(["string", "null"])
        );
    }

    #[test]
    fn write_then_read_round_trips_and_creates_folders() {
        let f = Fixture::new();
        let o = f.call("write_file", json!({"path": "notes/day1.md", "content": "hello\nworld\n"}));
        assert_eq!(output(&o), "wrote 12 bytes to notes/day1.md");
        assert_eq!(fs::read_to_string(f.ws().join("notes/day1.md")).unwrap(), "hello\nworld\n");
        let o = f.call("read_file", json!({"path": "./notes/day1.md"}));
        assert_eq!(output(&o), "hello\nworld\n");
        assert!(!o.truncated);
        // A whole write replaces; append adds; null `append` is a whole write.
        f.call("write_file", json!({"path": "notes/day1.md", "content": "a", "append": null}));
        let o = f.call("write_file", json!({"path": "notes/day1.md", "content": "b", "append": true}));
        assert_eq!(output(&o), "appended 1 bytes to notes/day1.md");
        assert_eq!(fs::read_to_string(f.ws().join("notes/day1.md")).unwrap(), "ab");
        // Append creates a missing file.
        f.call("write_file", json!({"path": "log.txt", "content": "x", "append": true}));
        assert_eq!(fs::read_to_string(f.ws().join("log.txt")).unwrap(), "x");
        // No temporary file is left beside them.
        let names: Vec<_> = fs::read_dir(f.ws().join("notes")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("day1.md")]);
    }

    #[test]
    fn bad_arguments_are_named() {
        let f = Fixture::new();
        assert!(error(&f.call("read_file", json!({}))).contains("missing argument `path`"));
        assert!(error(&f.call("read_file", json!({"path": 3}))).contains("`path` must be a string"));
        assert!(error(&f.call("read_file", json!({"file": "x"}))).contains("unknown argument `file`"));
        assert!(error(&f.call("read_file", json!({"path": ""}))).contains("`path` is empty"));
        assert!(error(&f.call("write_file", json!({"path": "", "content": "x"}))).contains("`path` is empty"));
        assert!(error(&f.call("write_file", json!({"path": "a"}))).contains("missing argument `content`"));
        assert!(error(&f.call("write_file", json!({"path": "a", "content": "x", "append": "yes"})))
            .contains("`append` must be true, false or null"));
        assert!(error(&f.call("search_files", json!({"pattern": ""}))).contains("`pattern` is empty"));
        assert!(error(&f.call("read_file", json!({"path": "missing.md"}))).contains("does not exist"));
        assert!(error(&f.call("list_files", json!({"path": "missing"}))).contains("does not exist"));
        assert!(error(&f.call("read_file", json!({"path": "a\0b"}))).contains("NUL"));
        let long = "a/".repeat(3000);
        assert!(error(&f.call("read_file", json!({"path": long}))).contains("the limit is 4096"));
    }

    #[test]
    fn refusals_go_through_run() {
        let mut f = Fixture::new();
        f.resume.tools = vec!["read_file".into()];
        let o = f.call("write_file", json!({"path": "a", "content": "x"}));
        assert!(error(&o).starts_with("not permitted"), "{o:?}");
        assert!(!f.ws().join("a").exists());
        let o = f.call("delete_everything", json!({}));
        assert!(error(&o).starts_with("unknown tool"), "{o:?}");
        let o = f.call("read_file", json!(["x"]));
        assert!(error(&o).contains("must be a JSON object"), "{o:?}");
    }

    #[test]
    fn escapes_are_refused_by_every_file_tool() {
        let f = Fixture::new();
        let sibling = f.org.layout.workspace("planner");
        fs::create_dir_all(&sibling).unwrap();
        fs::write(sibling.join("x"), "secret").unwrap();
        let outside = f.org.layout.root.parent().unwrap().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("x.txt"), "secret").unwrap();
        symlink(&outside, f.ws().join("out_dir")).unwrap();
        symlink(outside.join("x.txt"), f.ws().join("out_file")).unwrap();
        symlink(sibling.join("x"), f.ws().join("to_sibling")).unwrap();
        symlink(&sibling, f.ws().join("sibling_dir")).unwrap();
        symlink(outside.join("nowhere"), f.ws().join("dangling")).unwrap();
        let escapes = [
            ("../../x.txt", "`..` is not allowed"),
            ("/etc/passwd", "absolute path"),
            ("shared/../agents/planner/workspace/x", "`..` is not allowed"),
            ("notes/../../planner/workspace/x", "`..` is not allowed"),
            ("../planner/workspace/x", "`..` is not allowed"),
            ("out_dir", "points outside your workspace"),
            ("out_dir/x.txt", "points outside your workspace"),
            ("out_file", "points outside your workspace"),
            ("to_sibling", "points outside your workspace"),
            ("sibling_dir/x", "points outside your workspace"),
            ("./sibling_dir/new.txt", "points outside your workspace"),
            ("dangling", "points nowhere"),
        ];
        for (p, why) in escapes {
            for (tool, args) in calls(p) {
                let o = f.call(tool, args.clone());
                assert!(error(&o).contains(why), "{tool} {args}: {o:?}");
            }
        }
        // Nothing outside changed, nothing was created.
        assert_eq!(fs::read_to_string(outside.join("x.txt")).unwrap(), "secret");
        assert_eq!(fs::read_to_string(sibling.join("x")).unwrap(), "secret");
        assert_eq!(fs::read_dir(&sibling).unwrap().count(), 1);
        assert!(!outside.join("nowhere").exists());
        assert!(!f.org.layout.root.parent().unwrap().join("x.txt").exists());
    }

    #[test]
    fn a_link_that_points_inside_is_followed() {
        let f = Fixture::new();
        fs::create_dir_all(f.ws().join("real")).unwrap();
        fs::write(f.ws().join("real/a.txt"), "inside secret").unwrap();
        symlink(f.ws().join("real"), f.ws().join("alias")).unwrap();
        symlink("real/a.txt", f.ws().join("a_link")).unwrap();
        assert_eq!(output(&f.call("read_file", json!({"path": "alias/a.txt"}))), "inside secret");
        assert_eq!(output(&f.call("read_file", json!({"path": "a_link"}))), "inside secret");
        assert!(output(&f.call("list_files", json!({"path": "alias"}))).contains("a.txt (13 bytes)"));
        assert!(
            output(&f.call("search_files", json!({"pattern": "secret", "path": "alias"}))).contains("alias/a.txt:1:")
        );
        // Writing through the inside link writes the file it points to; the link stays.
        output(&f.call("write_file", json!({"path": "a_link", "content": "new"})));
        assert_eq!(fs::read_to_string(f.ws().join("real/a.txt")).unwrap(), "new");
        assert!(fs::symlink_metadata(f.ws().join("a_link")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn shared_needs_its_permission() {
        let mut f = Fixture::new();
        fs::write(f.shared().join("plan.md"), "the secret plan").unwrap();
        for (tool, args) in calls("shared/plan.md") {
            let o = f.call(tool, args);
            let e = error(&o);
            assert!(e.starts_with("not permitted") && e.contains("permissions.shared"), "{tool}: {e}");
        }
        assert!(error(&f.call("list_files", json!({"path": "shared"}))).contains("not permitted"));
        f.resume.shared = Shared::Read;
        assert_eq!(output(&f.call("read_file", json!({"path": "shared/plan.md"}))), "the secret plan");
        assert!(output(&f.call("list_files", json!({"path": "shared"}))).contains("plan.md (15 bytes)"));
        assert!(output(&f.call("search_files", json!({"pattern": "secret", "path": "shared"})))
            .contains("shared/plan.md:1: the secret plan"));
        for args in
            [json!({"path": "shared/plan.md", "content": "x"}), json!({"path": "shared/new.md", "content": "x"})]
        {
            let e = f.call("write_file", args);
            assert!(error(&e).contains("not permitted") && error(&e).contains("permissions.shared is read"), "{e:?}");
        }
        assert_eq!(fs::read_to_string(f.shared().join("plan.md")).unwrap(), "the secret plan");
        f.resume.shared = Shared::Write;
        assert_eq!(
            output(&f.call("write_file", json!({"path": "shared/new/a.md", "content": "x"}))),
            "wrote 1 bytes to shared/new/a.md"
        );
        assert_eq!(fs::read_to_string(f.shared().join("new/a.md")).unwrap(), "x");
        assert!(error(&f.call("write_file", json!({"path": "shared", "content": "x"}))).contains("is a folder"));
        // shared/ is confined like the workspace: no way from it into a workspace.
        symlink(f.ws(), f.shared().join("ws")).unwrap();
        for (tool, args) in calls("shared/ws/x") {
            assert!(error(&f.call(tool, args)).contains("points outside the org's shared folder"));
        }
        for (tool, args) in calls("shared/../agents/planner/workspace/x") {
            assert!(error(&f.call(tool, args)).contains("`..`"));
        }
    }

    #[test]
    fn a_link_swapped_in_after_resolving_is_not_followed() {
        let f = Fixture::new();
        let outside = f.org.layout.root.parent().unwrap().join("victim.txt");
        fs::write(&outside, "keep").unwrap();
        fs::write(f.ws().join("a.txt"), "mine").unwrap();
        let t = resolve(&f.ctx(), "a.txt", Access::Write).unwrap();
        // The name is replaced by a link between the check and the open.
        fs::remove_file(&t.path).unwrap();
        symlink(&outside, &t.path).unwrap();
        let (dir, name) = open_parent(&t, false).unwrap();
        let e = open_existing(&dir, &name, &t.shown, libc::O_WRONLY | libc::O_APPEND).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let e = open_existing(&dir, &name, &t.shown, libc::O_RDONLY).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        for append in [true, false] {
            // Through the whole tool path too: an append refuses the link, a whole write replaces it.
            let r = write_target(&t, "evil", append);
            assert!(r.is_ok() != append, "{append}: {r:?}");
        }
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&t.path).unwrap(), "evil");
    }

    /// An org whose `manager` workspace has the folder `d` (holding `name`
    /// with "mine"), and a folder outside it holding `name` with "secret".
    fn swap_fixture(name: &str) -> (Fixture, PathBuf) {
        let f = Fixture::new();
        fs::create_dir_all(f.ws().join("d")).unwrap();
        fs::write(f.ws().join("d").join(name), "mine").unwrap();
        let outside = f.org.layout.root.parent().unwrap().join("home");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join(name), "secret").unwrap();
        (f, outside)
    }

    /// Replaces the workspace folder `d` by a link to `outside`, as a program
    /// the agent started earlier could between the check and the use.
    fn swap(f: &Fixture, outside: &Path) {
        fs::rename(f.ws().join("d"), f.ws().join("d_real")).unwrap();
        symlink(outside, f.ws().join("d")).unwrap();
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_resolving_is_not_followed() {
        // read_file: the check passes on the real folder, the read meets the link.
        let (f, outside) = swap_fixture("id_rsa");
        let t = resolve(&f.ctx(), "d/id_rsa", Access::Read).unwrap();
        swap(&f, &outside);
        let e = read_target(&f.ctx(), &t).unwrap_err();
        assert!(e.contains("changed while it was being used") && !e.contains("secret"), "{e}");

        // write_file, whole and append, to an existing and a new file.
        for (file, append) in [(".bashrc", false), (".bashrc", true), ("new", false), ("new", true)] {
            let (f, outside) = swap_fixture(".bashrc");
            let t = resolve(&f.ctx(), &format!("d/{file}"), Access::Write).unwrap();
            swap(&f, &outside);
            let e = write_target(&t, "evil", append).unwrap_err();
            assert!(e.contains("changed while it was being used"), "{file} {append}: {e}");
            assert_eq!(fs::read_to_string(outside.join(".bashrc")).unwrap(), "secret");
            let mut names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            assert_eq!(names, vec![std::ffi::OsString::from(".bashrc")], "{file} {append}");
            assert_eq!(fs::read_to_string(f.ws().join("d_real/.bashrc")).unwrap(), "mine");
        }

        // Missing folders made by a write: the swap is on a folder the walk would create into.
        let (f, outside) = swap_fixture("x");
        fs::create_dir_all(f.ws().join("d/sub")).unwrap();
        let t = resolve(&f.ctx(), "d/sub/deeper/new", Access::Write).unwrap();
        swap(&f, &outside);
        assert!(write_target(&t, "evil", false).unwrap_err().contains("changed while it was being used"));
        assert!(!outside.join("sub").exists());

        // list_files and search_files of the folder, and of a folder below it.
        let (f, outside) = swap_fixture("notes.txt");
        fs::create_dir_all(f.ws().join("d/inner")).unwrap();
        let targets: Vec<Target> = ["d", "d/inner"].map(|p| resolve(&f.ctx(), p, Access::Read).unwrap()).into();
        swap(&f, &outside);
        for t in &targets {
            let p = &t.shown;
            let e = list_target(&f.ctx(), t).unwrap_err();
            assert!(e.contains("changed while it was being used") && !e.contains("notes"), "{p}: {e}");
            let e = search_target(&f.ctx(), t, "secret").unwrap_err();
            assert!(e.contains("changed while it was being used"), "{p}: {e}");
        }
        // A search of the whole workspace that meets the link does not follow it.
        let o = f.call("search_files", json!({"pattern": "secret"}));
        assert!(output(&o).starts_with("no matches"), "{o:?}");
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let (f, outside) = swap_fixture("a.txt");
        let t = resolve(&f.ctx(), "d/a.txt", Access::Write).unwrap();
        let (dir, name) = open_parent(&t, true).unwrap();
        // The first temporary name tried is a link to a file outside, the
        // second a link to where a file outside would be made.
        symlink(outside.join("a.txt"), f.ws().join("d/.t1")).unwrap();
        symlink(outside.join("made"), f.ws().join("d/.t2")).unwrap();
        let names = ["t1", "t2", "t3"].map(|n| std::ffi::OsString::from(format!(".{n}")));
        replace(&dir, &name, b"new", names.clone()).unwrap();
        assert_eq!(fs::read_to_string(f.ws().join("d/a.txt")).unwrap(), "new");
        assert_eq!(fs::read_to_string(outside.join("a.txt")).unwrap(), "secret");
        assert!(!outside.join("made").exists());
        assert!(fs::symlink_metadata(f.ws().join("d/.t1")).unwrap().file_type().is_symlink());
        assert!(!f.ws().join("d/.t3").exists(), "the temporary file is renamed away");
        // When every name is taken, nothing is written and the error says why.
        let e = replace(&dir, &name, b"newer", names[..2].to_vec()).unwrap_err();
        assert!(e.to_string().contains("temporary names"), "{e}");
        assert_eq!(fs::read_to_string(f.ws().join("d/a.txt")).unwrap(), "new");
        assert_eq!(fs::read_to_string(outside.join("a.txt")).unwrap(), "secret");
    }

    #[test]
    fn read_file_cuts_at_the_limit_on_a_character_boundary_and_refuses_binary() {
        let mut f = Fixture::new();
        f.org.settings.tools.max_read_bytes = 5;
        fs::write(f.ws().join("u.txt"), "abcdé and more").unwrap();
        let o = f.call("read_file", json!({"path": "u.txt"}));
        assert_eq!(output(&o), "abcd");
        assert!(o.truncated);
        fs::write(f.ws().join("exact.txt"), "abcde").unwrap();
        let o = f.call("read_file", json!({"path": "exact.txt"}));
        assert_eq!((output(&o), o.truncated), ("abcde", false));
        f.org.settings.tools.max_read_bytes = 1000;
        f.org.settings.tools.max_output_bytes = 3;
        let o = f.call("read_file", json!({"path": "u.txt"}));
        assert_eq!((output(&o), o.truncated), ("abc", true));
        f.org.settings.tools.max_output_bytes = 1000;
        fs::write(f.ws().join("bin"), b"\x7fELF\0\0\x01").unwrap();
        assert!(error(&f.call("read_file", json!({"path": "bin"}))).contains("binary"));
        fs::write(f.ws().join("latin1"), b"caf\xe9").unwrap();
        assert_eq!(output(&f.call("read_file", json!({"path": "latin1"}))), "caf\u{fffd}");
        fs::create_dir_all(f.ws().join("dir")).unwrap();
        assert!(error(&f.call("read_file", json!({"path": "dir"}))).contains("is a folder"));
    }

    #[test]
    fn whole_chars_drops_only_a_character_cut_short() {
        assert_eq!(whole_chars("abé".as_bytes()), "abé".as_bytes());
        assert_eq!(whole_chars(&"abé".as_bytes()[..3]), b"ab");
        assert_eq!(whole_chars(&"a😀".as_bytes()[..4]), b"a");
        assert_eq!(whole_chars("a😀".as_bytes()), "a😀".as_bytes());
        assert_eq!(whole_chars(b""), b"");
    }

    #[test]
    fn write_file_keeps_its_limit_and_refuses_folders() {
        let mut f = Fixture::new();
        f.org.settings.tools.max_write_bytes = 4;
        let e = f.call("write_file", json!({"path": "a.txt", "content": "12345"}));
        assert!(error(&e).contains("5 bytes; the limit is 4"), "{e:?}");
        assert!(!f.ws().join("a.txt").exists());
        output(&f.call("write_file", json!({"path": "a.txt", "content": "1234"})));
        fs::create_dir_all(f.ws().join("d")).unwrap();
        assert!(error(&f.call("write_file", json!({"path": "d", "content": "x"}))).contains("is a folder"));
        assert!(error(&f.call("write_file", json!({"path": ".", "content": "x"}))).contains("is a folder"));
        assert!(error(&f.call("write_file", json!({"path": "a.txt/b", "content": "x"})))
            .contains("is a file, not a folder"));
    }

    #[test]
    fn list_files_sorts_marks_folders_and_caps() {
        let mut f = Fixture::new();
        assert_eq!(output(&f.call("list_files", json!({}))), "`.` is empty");
        fs::write(f.ws().join("b.txt"), "12").unwrap();
        fs::create_dir_all(f.ws().join("a_dir/inner")).unwrap();
        fs::write(f.ws().join("c.md"), "").unwrap();
        symlink("b.txt", f.ws().join("d_link")).unwrap();
        let o = f.call("list_files", json!({"path": null}));
        assert_eq!(output(&o), "a_dir/\nb.txt (2 bytes)\nc.md (0 bytes)\nd_link (a symbolic link)\n");
        assert_eq!(output(&f.call("list_files", json!({"path": "a_dir"}))), "inner/\n");
        assert!(error(&f.call("list_files", json!({"path": "b.txt"}))).contains("is a file"));
        f.org.settings.tools.max_entries = 2;
        let o = f.call("list_files", json!({}));
        assert_eq!(output(&o), "a_dir/\nb.txt (2 bytes)\n… and 2 more (tools.max_entries is 2)\n");
        assert!(o.truncated);
        f.org.settings.tools.max_output_bytes = 8;
        let o = f.call("list_files", json!({}));
        assert_eq!((output(&o), o.truncated), ("a_dir/\nb", true));
    }

    #[test]
    fn search_files_finds_literal_lines_and_skips_what_it_should() {
        let mut f = Fixture::new();
        fs::create_dir_all(f.ws().join("src/deep")).unwrap();
        fs::write(f.ws().join("a.txt"), "one TODO\nnone\nTODO: two\ntodo lower\n").unwrap();
        fs::write(f.ws().join("src/deep/b.rs"), "// TODO(x) [.*]\n").unwrap();
        fs::write(f.ws().join("bin"), b"TODO\0").unwrap();
        let outside = f.org.layout.root.parent().unwrap().join("out");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("o.txt"), "TODO outside").unwrap();
        symlink(&outside, f.ws().join("out_link")).unwrap();
        let o = f.call("search_files", json!({"pattern": "TODO"}));
        assert_eq!(
            output(&o),
            "a.txt:1: one TODO\na.txt:3: TODO: two\nsrc/deep/b.rs:1: // TODO(x) [.*]\n(skipped: 1 binary file(s), 0 file(s) over 262144 bytes)\n"
        );
        // Literal: regex characters are plain text.
        assert_eq!(
            output(&f.call("search_files", json!({"pattern": "[.*]", "path": "src"}))),
            "src/deep/b.rs:1: // TODO(x) [.*]\n"
        );
        assert_eq!(output(&f.call("search_files", json!({"pattern": "two", "path": "a.txt"}))), "a.txt:3: TODO: two\n");
        assert!(output(&f.call("search_files", json!({"pattern": "absent"}))).starts_with("no matches for `absent`"));
        f.org.settings.tools.max_read_bytes = 20;
        let o = f.call("search_files", json!({"pattern": "TODO"}));
        assert!(output(&o).contains("1 file(s) over 20 bytes") && !output(&o).contains("a.txt"), "{o:?}");
        f.org.settings.tools.max_read_bytes = 1000;
        f.org.settings.tools.max_entries = 2;
        let o = f.call("search_files", json!({"pattern": "TODO"}));
        assert!(o.truncated);
        assert_eq!(output(&o).lines().filter(|l| !l.starts_with('(')).count(), 2, "{o:?}");
        assert!(output(&o).contains("(stopped: too many matches"));
    }

    #[test]
    fn search_files_cuts_long_lines_and_its_output() {
        let mut f = Fixture::new();
        fs::write(f.ws().join("long.txt"), format!("x{}\n", "é".repeat(400))).unwrap();
        let o = f.call("search_files", json!({"pattern": "x"}));
        let line = output(&o).lines().next().unwrap();
        assert!(line.ends_with(" …") && line.len() < MAX_MATCH_LINE_BYTES + 20, "{line}");
        f.org.settings.tools.max_output_bytes = 10;
        let o = f.call("search_files", json!({"pattern": "x"}));
        assert!(o.truncated && output(&o).len() <= 10);
    }
}
