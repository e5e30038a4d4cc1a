//! `lemming init`: writes the default org (embedded in the binary) into a folder.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{PathError, WithPath};

/// The default org's files: (path relative to the org, contents).
pub const DEFAULT_ORG: &[(&str, &str)] = &[
    ("org/org.toml", include_str!("../../../org/org.toml")),
    ("org/models.toml", include_str!("../../../org/models.toml")),
    ("agents/manager/resume.toml", include_str!("../../../agents/manager/resume.toml")),
    ("agents/planner/resume.toml", include_str!("../../../agents/planner/resume.toml")),
    ("agents/hr/resume.toml", include_str!("../../../agents/hr/resume.toml")),
    ("agents/coder_01/resume.toml", include_str!("../../../agents/coder_01/resume.toml")),
    ("agents/janitor/resume.toml", include_str!("../../../agents/janitor/resume.toml")),
    ("agents/human/resume.toml", include_str!("../../../agents/human/resume.toml")),
    (".gitignore", "# Runtime folders of this org.\n/agents/*/inbox/\n/agents/*/outbox/\n/agents/*/memory/\n/agents/*/logs/\n/agents/*/workspace/\n/org/state/\n"),
];

/// Why `init` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The folder has files in it.
    #[error("{} is not empty; lemming init refuses to overwrite anything\n  help: choose a new or empty folder", .0.display())]
    NotEmpty(PathBuf),
    /// A write failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Writes the default org into `dir`, which must be missing or empty.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    if dir.exists() {
        let mut rd = fs::read_dir(dir).with_path(dir)?;
        if rd.next().is_some() {
            return Err(InitError::NotEmpty(dir.to_path_buf()));
        }
    }
    let mut written = Vec::new();
    for (rel, text) in DEFAULT_ORG {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_path(parent)?;
        }
        fs::write(&path, text).with_path(&path)?;
        written.push(path);
    }
    Ok(written)
}
