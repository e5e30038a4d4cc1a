//! The resume editor: a person reads an agent's `resume.toml` as it is on
//! disk and replaces it with a new text, which is judged as `lemming
//! validate` would judge the org with that text in place
//! ([`Org::check_resume`]). An accepted text is written atomically and
//! durably and audited (`edit_resume`); a refused one writes nothing and
//! comes back with its problems, each with its line and column. A running
//! daemon picks the new file up on its next turn.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::error::{PathError, WithPath};
use crate::events::Problem;
use crate::org::{agent_folders, Org, UnknownAgent};
use crate::suggest::{self, Kind};
use crate::{audit, fsx, name::AgentName, resume};

/// Why a resume could not be read or replaced.
#[derive(Debug, thiserror::Error)]
pub enum EditResumeError {
    /// No agent folder has this name (the message names the closest ones).
    #[error(transparent)]
    UnknownAgent(#[from] UnknownAgent),
    /// The text is not a valid resume for this agent: nothing was written.
    #[error("the resume is invalid ({} problem(s)); nothing was written", .0.len())]
    Invalid(Vec<Problem>),
    /// The file on disk cannot be read as a config file (a link out of the
    /// org, not UTF-8, too large); its problems.
    #[error("the resume cannot be read ({} problem(s))", .0.len())]
    Unreadable(Vec<Problem>),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The path of the resume of the agent folder `agent`, once the name is
/// checked against the name rule and the agent folders (valid or not): a
/// name that is not a folder's never becomes a path.
pub fn resume_path(org: &Org, agent: &str) -> Result<PathBuf, UnknownAgent> {
    AgentName::new(agent).map_err(|e| UnknownAgent { message: e.to_string() })?;
    let folders = agent_folders(&org.layout);
    if folders.binary_search_by(|f| f.as_str().cmp(agent)).is_err() {
        let message = suggest::unknown(Kind::Agent, agent, folders.iter().map(String::as_str));
        return Err(UnknownAgent { message });
    }
    Ok(org.layout.agent_dir(agent).join("resume.toml"))
}

/// The text of an agent's `resume.toml` as it is on disk, read as the loader
/// reads config files (never through a link out of the org, at most
/// [`resume::MAX_RESUME_BYTES`]). A held agent's (invalid) resume reads too.
pub fn read_resume(org: &Org, agent: &str) -> Result<String, EditResumeError> {
    let path = resume_path(org, agent)?;
    crate::config::read(&path, &org.layout.root, resume::MAX_RESUME_BYTES)
        .map_err(|d| EditResumeError::Unreadable(d.iter().map(|d| Problem::of(d, &org.layout.root)).collect()))
}

/// Replaces an agent's `resume.toml` with `bytes` when they are a valid
/// resume for it ([`Org::check_resume`]): written atomically and durably,
/// then audited as `edit_resume` by [`audit::PERSON`]. When they are not,
/// nothing is written and the problems are returned.
pub fn write_resume(org: &Org, agent: &str, bytes: Vec<u8>, at: DateTime<Utc>) -> Result<(), EditResumeError> {
    let path = resume_path(org, agent)?;
    let size = bytes.len();
    if let Err(d) = org.check_resume(agent, bytes.clone()) {
        return Err(EditResumeError::Invalid(d.iter().map(|d| Problem::of(d, &org.layout.root)).collect()));
    }
    // The agent's folder was listed as a folder, not a link; make sure it
    // still is one before writing into it.
    let dir = org.layout.agent_dir(agent);
    let meta = std::fs::symlink_metadata(&dir).with_path(&dir)?;
    if !meta.is_dir() {
        return Err(UnknownAgent { message: format!("agents/{agent} is no longer a folder") }.into());
    }
    let done = fsx::write_atomic(&org.layout.state_tmp(), &path, &bytes);
    let what = serde_json::json!({ "agent": agent, "bytes": size });
    let outcome = done.as_ref().map(|_| ());
    audit::record(&org.layout, audit::Entry::new(at, audit::PERSON, "edit_resume", what, outcome));
    Ok(done?)
}

/// `text` (a resume) with its top-level `model` set to `key`, everything
/// else kept as written: comments above, beside and below it, key order,
/// layout. A `model` line is added after the other top-level keys when there
/// is none. Returns the model it named before (`None`: no `model` line, or
/// not a string). Fails only when `text` is not TOML.
pub fn with_model(text: &str, key: &str) -> Result<(String, Option<String>), String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.message().to_string())?;
    let root = doc.as_table_mut();
    let before = root.get("model").and_then(|i| i.as_str()).map(str::to_string);
    match root.get_mut("model").and_then(|i| i.as_value_mut()) {
        Some(v) => {
            // The decor holds the spaces around the value and the comment beside it.
            let decor = v.decor().clone();
            *v = toml_edit::Value::from(key);
            *v.decor_mut() = decor;
        }
        None => {
            root.insert("model", toml_edit::value(key));
        }
    }
    Ok((doc.to_string(), before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::new_org;

    fn manager(root: &std::path::Path) -> String {
        std::fs::read_to_string(root.join("agents/manager/resume.toml")).unwrap()
    }

    #[test]
    fn a_valid_resume_is_written_and_audited() {
        let (_d, root) = new_org();
        let org = Org::load(&root).unwrap();
        let new = manager(&root).replace("title = \"Manager\"", "title = \"Boss\"");
        let at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        write_resume(&org, "manager", new.clone().into_bytes(), at).unwrap();
        assert_eq!(manager(&root), new);
        assert_eq!(Org::load(&root).unwrap().agent("manager").unwrap().title, "Boss");
        let log = audit::read(&org.layout).unwrap();
        let e = log.last().unwrap();
        assert_eq!((e.who.as_str(), e.action.as_str(), e.outcome.as_str()), (audit::PERSON, "edit_resume", audit::OK));
        assert_eq!(e.what["agent"], "manager");
        assert_eq!(e.at, at);
        assert_eq!(read_resume(&org, "manager").unwrap(), new);
    }

    #[test]
    fn an_invalid_resume_writes_nothing_and_says_where_and_why() {
        let (_d, root) = new_org();
        let org = Org::load(&root).unwrap();
        let before = manager(&root);
        let at = Utc::now();
        // The 1-based line and column of `needle` in `text`, plus `plus` columns.
        let pos = |text: &str, needle: &str, plus: usize| {
            let at = text.find(needle).unwrap();
            let line = text[..at].matches('\n').count() + 1;
            (line, at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1 + plus)
        };
        let syntax = before.replace("every = 1", "every = = 1");
        let unknown = before.replace("wake = \"mail\"", "wake = \"mail\"\ncolour = 1");
        let model = before.replace("model = \"default\"", "model = \"nope\"");
        // Each text, what its problem says, and where (line, column) when checked.
        type Case<'a> = (String, &'a str, Option<(usize, usize)>);
        let cases: [Case; 6] = [
            (syntax.clone(), "", Some(pos(&syntax, "every = = 1", 8))),
            (unknown.clone(), "colour", Some(pos(&unknown, "colour", 0))),
            (model.clone(), "unknown model key `nope`", Some(pos(&model, "\"nope\"", 0))),
            (before.replace("\"recall\"]", "\"recall\", \"fly\"]"), "unknown tool `fly`", None),
            (before.replace("\"janitor\"]\nread_from", "\"cfo\"]\nread_from"), "`cfo` in `send_to` is no agent", None),
            (before.replace("name = \"manager\"", "name = \"boss\""), "boss", None),
        ];
        for (text, says, at_pos) in cases {
            let Err(EditResumeError::Invalid(p)) = write_resume(&org, "manager", text.into_bytes(), at) else {
                panic!("accepted: {says}")
            };
            assert!(p.iter().any(|p| p.message.contains(says)), "{says}: {p:?}");
            assert!(p.iter().all(|p| p.file == "agents/manager/resume.toml"), "{p:?}");
            if let Some((line, column)) = at_pos {
                assert_eq!((p[0].line, p[0].column), (Some(line), Some(column)), "{says}: {p:?}");
            }
            assert_eq!(manager(&root), before, "nothing is written");
        }
        let Err(EditResumeError::Invalid(p)) = write_resume(&org, "manager", vec![b'a', 0xff], at) else { panic!() };
        assert!(p[0].message.contains("not UTF-8"), "{p:?}");
        let big = vec![b'#'; resume::MAX_RESUME_BYTES as usize + 1];
        let Err(EditResumeError::Invalid(p)) = write_resume(&org, "manager", big, at) else { panic!() };
        assert!(p[0].message.contains("the limit is 262144 bytes"), "{p:?}");
        assert_eq!(manager(&root), before);
        assert!(audit::read(&org.layout).unwrap().is_empty(), "a refused edit changes nothing, so nothing is audited");
    }

    #[test]
    fn names_that_are_no_agent_folder_never_become_a_path() {
        let (_d, root) = new_org();
        let org = Org::load(&root).unwrap();
        for bad in ["..", "../org", "a/b", "a\0b", "nobody", "Manager", ""] {
            let e = read_resume(&org, bad).unwrap_err();
            assert!(matches!(e, EditResumeError::UnknownAgent(_)), "{bad:?}: {e}");
            assert!(write_resume(&org, bad, b"x".to_vec(), Utc::now()).is_err());
        }
        let e = read_resume(&org, "nobody").unwrap_err().to_string();
        assert!(e.contains("known: coder_01, hr, human, janitor, manager, planner"), "{e}");
        let e = read_resume(&org, "mangaer").unwrap_err().to_string();
        assert_eq!(e, "unknown agent `mangaer` (known: manager, coder_01, hr, human, janitor, planner)");
    }

    #[test]
    fn a_held_agent_can_be_read_and_fixed() {
        let (_d, root) = new_org();
        let good = manager(&root);
        std::fs::write(root.join("agents/manager/resume.toml"), "name = ").unwrap();
        let org = Org::load(&root).unwrap();
        assert!(org.broken.contains_key("manager"));
        assert_eq!(read_resume(&org, "manager").unwrap(), "name = ");
        write_resume(&org, "manager", good.clone().into_bytes(), Utc::now()).unwrap();
        assert!(Org::load(&root).unwrap().broken.is_empty());
    }

    #[test]
    fn with_model_changes_only_the_value() {
        let text = "# who\nname = \"a\"\n# above\nmodel   =  \"default\"  # beside\n# below\n\n[schedule]\nevery = 1\n";
        let (out, before) = with_model(text, "fast").unwrap();
        assert_eq!(out, text.replace("\"default\"", "\"fast\""));
        assert_eq!(before.as_deref(), Some("default"));
        let (out, before) = with_model("name = \"a\" # n\n\n[schedule]\nevery = 1\n", "fast").unwrap();
        assert_eq!(out, "name = \"a\" # n\nmodel = \"fast\"\n\n[schedule]\nevery = 1\n");
        assert_eq!(before, None);
        assert!(with_model("name = = 1", "x").is_err());
    }
}
