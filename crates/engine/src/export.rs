//! `lemming export`: a thread, an agent's mail or the whole org's, rendered
//! to Markdown, JSON or one self-contained HTML file for people outside the
//! org. Every message is taken once, with every place it is in (whose inbox,
//! unread, read or archived; whose sent mail; the dead letters).
//!
//! Every byte of a message is untrusted: the Markdown puts bodies in code
//! fences longer than any run of backticks they hold and escapes the other
//! fields; the HTML escapes everything, holds its style inline, runs no
//! script and references nothing outside itself (its policy forbids loading
//! anything at all).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{PathError, WithPath};
use crate::mailbox::{Place, State};
use crate::message::Message;
use crate::org::{agent_folders, Org};
use crate::views::{self, ViewError};

/// The version of the JSON export's schema (`"format"`).
pub const FORMAT: &str = "lemming-export/1";

/// Which messages to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One conversation (a thread id, or the id of any of its messages),
    /// replies under the message they answer.
    Thread(String),
    /// What an agent received (its inbox: unread, read, archived) and sent
    /// (every message from it that left its outbox: delivered, or a dead letter).
    Agent(String),
    /// Every message of the org.
    All,
}

/// What the export is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown.
    Md,
    /// JSON (schema [`FORMAT`]).
    Json,
    /// One self-contained HTML file.
    Html,
}

/// An exported message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The fields of the message file.
    #[serde(flatten)]
    pub message: Message,
    /// How deep it sits under the messages it answers (a thread only; else 0).
    pub depth: usize,
    /// The id of the exported message it answers, in a thread (else null).
    pub parent: Option<String>,
    /// Every place it is in.
    pub places: Vec<Place>,
}

/// The messages of an export, in order: by time (`created_at`, then id),
/// and for a thread depth first, each reply under the message it answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// What was exported.
    pub scope: Scope,
    /// The thread's id, for a thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The messages.
    pub messages: Vec<Entry>,
    /// Files or folders that could not be read, as `path: error`; the rest is exported.
    pub unreadable: Vec<String>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The thread or agent is unknown, or the mail cannot be read.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The output file exists.
    #[error("{} exists already; pass --force to replace it, or choose another file", .0.display())]
    Exists(PathBuf),
    /// Writing the output failed.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Gathers the messages `scope` names.
pub fn collect(org: &Org, scope: &Scope) -> Result<Record, ExportError> {
    if let Scope::Thread(id) = scope {
        let v = views::thread(org, id)?;
        let messages = v
            .messages
            .into_iter()
            .map(|m| Entry { message: m.message, depth: m.depth, parent: m.parent, places: m.places })
            .collect();
        let unreadable = v.unreadable.iter().map(ToString::to_string).collect();
        return Ok(Record { format: FORMAT, scope: scope.clone(), thread: Some(v.thread), messages, unreadable });
    }
    if let Scope::Agent(a) = scope {
        if !org.broken.contains_key(a.as_str()) {
            org.agent(a).map_err(ViewError::from)?;
        }
    }
    let scanned = org.mail().scan(&agent_folders(&org.layout), true, &|_| true);
    let wanted = |m: &Message, places: &[Place]| match scope {
        Scope::Agent(a) => m.from == *a || places.iter().any(|p| p.agent.as_deref() == Some(a.as_str())),
        _ => true,
    };
    let mut messages: Vec<Entry> = scanned
        .messages
        .into_values()
        .filter(|l| wanted(&l.message, &l.places))
        .map(|l| Entry { message: l.message, depth: 0, parent: None, places: l.places })
        .collect();
    messages.sort_by(|a, b| (a.message.created_at, &a.message.id).cmp(&(b.message.created_at, &b.message.id)));
    let unreadable = scanned.unreadable.iter().map(ToString::to_string).collect();
    Ok(Record { format: FORMAT, scope: scope.clone(), thread: None, messages, unreadable })
}

/// The export as bytes in `format`.
pub fn render(r: &Record, format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(r).expect("an export always serializes");
            v.push(b'\n');
            v
        }
        Format::Md => markdown(r).into_bytes(),
        Format::Html => html(r).into_bytes(),
    }
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside
/// it, fsynced, then put in place and the folder fsynced. An existing file
/// is refused unless `force` (the check and the placing are one step: a
/// file made meanwhile is never replaced).
pub fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<(), ExportError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.is_empty() {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "is not a file name");
        return Err(ExportError::Path(PathError { path: path.to_path_buf(), source: e }));
    }
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(ExportError::Exists(path.to_path_buf()));
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let placed = write_tmp(&tmp, bytes).and_then(|()| {
        if force {
            fs::rename(&tmp, path).with_path(path).map_err(ExportError::from)
        } else {
            // A hard link never replaces a name: a file made since the check is kept.
            let linked = match fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(ExportError::Exists(path.to_path_buf())),
                r => r.with_path(path).map_err(ExportError::from),
            };
            let _ = fs::remove_file(&tmp);
            linked
        }
    });
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    Ok(crate::fsx::sync_dir(dir)?)
}

fn write_tmp(tmp: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).open(tmp).with_path(tmp)?;
    f.write_all(bytes).with_path(tmp)?;
    f.sync_all().with_path(tmp)?;
    Ok(())
}

fn title(r: &Record) -> String {
    match (&r.scope, &r.thread) {
        (Scope::Thread(_), Some(t)) => format!("Thread {t}"),
        (Scope::Thread(t), None) => format!("Thread {t}"),
        (Scope::Agent(a), _) => format!("Mail of {a}"),
        (Scope::All, _) => "Every message of the org".to_string(),
    }
}

/// Where a message is, for people: `read by planner; archived by hr; sent by manager`.
fn where_is(places: &[Place]) -> String {
    let mut parts = Vec::new();
    for (state, verb) in [
        (State::Unread, "unread by"),
        (State::Read, "read by"),
        (State::Archived, "archived by"),
        (State::Sent, "sent by"),
        (State::Pending, "waiting in the outbox of"),
    ] {
        let who: Vec<&str> = places.iter().filter(|p| p.state == state).filter_map(|p| p.agent.as_deref()).collect();
        if !who.is_empty() {
            parts.push(format!("{verb} {}", who.join(", ")));
        }
    }
    if places.iter().any(|p| p.state == State::Dead) {
        parts.push("a dead letter".into());
    }
    parts.join("; ")
}

fn when(m: &Message) -> String {
    m.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One line of untrusted text for Markdown: control characters and line
/// breaks as spaces, and every character Markdown or HTML could read as
/// markup (inside a line) escaped with a backslash.
fn md_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push(' ');
        } else {
            if "\\`*_[]<>#|!(){}&\"~$".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

fn markdown(r: &Record) -> String {
    let mut s = format!("# {}\n\n", md_line(&title(r)));
    let _ = writeln!(s, "{} message(s), exported by lemming ({FORMAT}).\n", r.messages.len());
    for e in &r.messages {
        let m = &e.message;
        let quote = "> ".repeat(e.depth);
        let mut block = String::new();
        let subject = m.subject.as_deref().map(|t| format!(": {}", md_line(t))).unwrap_or_default();
        let _ = writeln!(block, "**{}** to {}{subject}", md_line(&m.from), md_line(&m.to.0.join(", ")));
        let _ = writeln!(block);
        let mut facts = vec![format!("{}", md_line(&when(m))), format!("id {}", md_line(&m.id))];
        if let Some(p) = &m.reply_to {
            facts.push(format!("reply to {}", md_line(p)));
        }
        if m.kind != crate::message::Kind::Message {
            facts.push(md_line(m.kind.as_str()));
        }
        facts.push(md_line(&where_is(&e.places)));
        let _ = writeln!(block, "{}", facts.join(" · "));
        let _ = writeln!(block);
        // A fence longer than any run of backticks in the body: nothing in it is markup.
        let longest = m.body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        let _ = writeln!(block, "{fence}text");
        for line in m.body.lines() {
            let _ = writeln!(block, "{}", line.replace(|c: char| c.is_control() && c != '\t', " "));
        }
        let _ = writeln!(block, "{fence}");
        for line in block.lines() {
            let _ = writeln!(s, "{}{line}", if line.is_empty() { quote.trim_end() } else { &quote });
        }
        s.push_str("\n---\n\n");
    }
    s
}

/// Text for HTML: the five characters that could be markup escaped, control
/// characters (but line breaks and tabs) dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;\
color:#1d1d1f;background:#fafafa}h1{font-size:1.4rem}.n{color:#666}article{background:#fff;border:1px solid #ddd;\
border-left:4px solid #7a9;border-radius:6px;padding:.6rem .9rem;margin:.7rem 0}article.dead{border-left-color:#c55}\
article.archived{border-left-color:#aaa}.head{font-weight:600}.meta{color:#666;font-size:.85rem;margin:.2rem 0 .4rem}\
pre{white-space:pre-wrap;word-wrap:break-word;font:14px/1.4 ui-monospace,monospace;margin:0}a{color:#357}";

fn html(r: &Record) -> String {
    let title = esc(&title(r));
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Nothing may be loaded: no script, no image, no font, no frame, no form target.
    s.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         form-action 'none'; base-uri 'none'\">\n",
    );
    let _ = writeln!(s, "<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        s,
        "<h1>{title}</h1>\n<p class=\"n\">{} message(s), exported by lemming ({FORMAT}).</p>",
        r.messages.len()
    );
    for e in &r.messages {
        let m = &e.message;
        let class = if e.places.iter().any(|p| p.state == State::Dead) {
            " dead"
        } else if e.places.iter().any(|p| p.state == State::Archived) {
            " archived"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<article id=\"m-{}\" class=\"msg{class}\" style=\"margin-left:{}rem\">",
            esc(&m.id),
            (e.depth.min(12) as f64) * 1.5
        );
        let subject = m.subject.as_deref().map(|t| format!(": {}", esc(t))).unwrap_or_default();
        let _ = writeln!(s, "<div class=\"head\">{} → {}{subject}</div>", esc(&m.from), esc(&m.to.0.join(", ")));
        let mut meta = vec![esc(&when(m)), format!("id {}", esc(&m.id))];
        if let Some(p) = &m.reply_to {
            // Only to a message of this file: an anchor, never an address.
            if r.messages.iter().any(|o| o.message.id == *p) {
                meta.push(format!("reply to <a href=\"#m-{}\">{}</a>", esc(p), esc(p)));
            } else {
                meta.push(format!("reply to {}", esc(p)));
            }
        }
        if m.kind != crate::message::Kind::Message {
            meta.push(esc(m.kind.as_str()));
        }
        meta.push(esc(&where_is(&e.places)));
        let _ = writeln!(s, "<div class=\"meta\">{}</div>", meta.join(" · "));
        let _ = writeln!(s, "<pre>{}</pre>\n</article>", esc(&m.body));
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::{send, SendOptions};
    use crate::views::testing::{deliver, org_after_one_turn};

    const NASTY: &str = "hi</pre></style><script>alert('x')</script>\n<img src=\"https://evil.example/x.png\">\n\
                         ```\n# not a heading\n<link rel=stylesheet href=//evil.example/s.css>";

    fn nasty_org() -> (tempfile::TempDir, Org, Message) {
        let (dir, org) = org_after_one_turn();
        let answer = org.mail().unread_skipping("human").unwrap().messages.pop().unwrap();
        let reply = SendOptions {
            reply_to: Some(answer.id.clone()),
            subject: Some("<b>bold</b> & \"quoted\"".into()),
            ..Default::default()
        };
        let m = send(&org, "human", "manager", NASTY, reply).unwrap();
        deliver(&dir, "manager", &m);
        std::fs::remove_file(org.mail().message_path("human", crate::mailbox::Folder::Pending, &m.id)).unwrap();
        (dir, org, m)
    }

    #[test]
    fn html_escapes_every_byte_of_a_message_and_references_nothing_outside() {
        let (_dir, org, m) = nasty_org();
        let r = collect(&org, &Scope::Thread(m.id.clone())).unwrap();
        assert_eq!(r.messages.len(), 3);
        let html = String::from_utf8(render(&r, Format::Html)).unwrap();
        // The only markup is ours: one style element, no script, nothing loaded.
        let in_text = |i: usize| html[html[..i].rfind('\n').map_or(0, |n| n + 1)..i].contains("&lt;");
        assert_eq!(html.matches("<style>").count(), 1);
        assert_eq!(html.matches("</style>").count(), 1);
        assert!(!html.contains("<script") && !html.contains("</script"), "{html}");
        assert!(html.contains("&lt;/style&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"), "{html}");
        assert_eq!(html.matches("<pre>").count(), 3);
        assert_eq!(html.matches("</pre>").count(), 3, "the body's </pre> is text");
        for bad in ["<img", "<link", "url(", "@import", "<iframe", "<object", "<base", "<meta http-equiv=\"refresh"] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
        for (i, _) in html.match_indices("evil.example") {
            assert!(in_text(i), "{}", &html[i.saturating_sub(40)..i + 12]);
        }
        // Every address of ours is an anchor inside the file; the body's are text
        // (after an escaped `<` on their line, in no tag).
        for (i, _) in html.match_indices("href=") {
            assert!(html[i..].starts_with("href=\"#m-") || in_text(i), "{}", &html[i..i + 40]);
        }
        assert!(html.contains("href=\"#m-"), "a reply links to the message it answers");
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn markdown_fences_bodies_and_escapes_the_other_fields() {
        let (_dir, org, m) = nasty_org();
        let md = String::from_utf8(render(&collect(&org, &Scope::Thread(m.id.clone())).unwrap(), Format::Md)).unwrap();
        // The body's own ``` cannot close the fence: ours is longer.
        assert!(md.contains("> > ````text\n> > hi</pre>"), "{md}");
        assert!(md.contains("> > # not a heading\n"), "the body stays in its fence: {md}");
        assert!(md.contains("\\<b\\>bold\\</b\\> \\& \\\"quoted\\\""), "{md}");
        assert!(md.starts_with("# Thread "));
    }

    #[test]
    fn json_holds_each_message_once_with_its_places_in_order() {
        let (dir, org, m) = nasty_org();
        let other = send(&org, "human", "manager", "elsewhere", SendOptions::default()).unwrap();
        deliver(&dir, "manager", &other);
        let all = collect(&org, &Scope::All).unwrap();
        let ids: Vec<&str> = all.messages.iter().map(|e| e.message.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "each message once: {ids:?}");
        assert_eq!(ids.len(), 4);
        let times: Vec<_> = all.messages.iter().map(|e| e.message.created_at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "by time");
        let v: serde_json::Value = serde_json::from_slice(&render(&all, Format::Json)).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["scope"], "all");
        let nasty = v["messages"].as_array().unwrap().iter().find(|e| e["id"] == m.id.as_str()).unwrap();
        assert_eq!(nasty["body"], NASTY);
        assert_eq!(nasty["places"], serde_json::json!([{"agent": "manager", "state": "unread"}]));
        assert_eq!(nasty["depth"], 0);

        let planner = collect(&org, &Scope::Agent("planner".into())).unwrap();
        assert!(planner.messages.is_empty());
        let v: serde_json::Value = serde_json::from_slice(&render(&planner, Format::Json)).unwrap();
        assert_eq!(v["scope"], serde_json::json!({"agent": "planner"}));
        let manager = collect(&org, &Scope::Agent("manager".into())).unwrap();
        assert_eq!(manager.messages.len(), 4, "received three, sent one");
        let human = collect(&org, &Scope::Agent("human".into())).unwrap();
        assert_eq!(human.messages.len(), 4, "sent three, received one");
        let thread = collect(&org, &Scope::Thread(m.id.clone())).unwrap();
        assert_eq!(thread.messages.iter().map(|e| e.depth).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(matches!(collect(&org, &Scope::Agent("nobody".into())), Err(ExportError::View(_))));
        assert!(matches!(collect(&org, &Scope::Thread("nope".into())), Err(ExportError::View(_))));
    }

    #[test]
    fn the_file_is_written_whole_and_never_replaced_without_force() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.html");
        write_file(&p, b"first", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let e = write_file(&p, b"second", false).unwrap_err();
        assert!(matches!(e, ExportError::Exists(_)) && e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_file(&p, b"second", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["out.html"], "no temporary file is left");
        assert!(write_file(&d.path().join("no/such/dir/x.md"), b"x", false).is_err());
    }
}
