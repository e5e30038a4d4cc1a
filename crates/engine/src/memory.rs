//! Agent memory: `agents/<name>/memory/<key>.json`, one JSON value per key.
//!
//! Operations from replies (`set`, `append`, `merge`, `delete`) are first
//! turned into a plan, the final value of every touched key, which is journaled
//! with the reply. Applying a plan only writes or removes files, so a repeated
//! turn applies it again without appending twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{PathError, WithPath};
use crate::fsx::Batch;

/// Keys: `^[a-z0-9][a-z0-9_.-]{0,63}$` without `..`.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
        && !key.contains("..")
}

/// The final value of each touched key (`None` = deleted).
pub type Plan = BTreeMap<String, Option<Value>>;

/// The memory folder of an agent.
pub fn dir(root: &Path, agent: &str) -> PathBuf {
    crate::org::Layout::new(root).memory_dir(agent)
}

/// Reads one key.
pub fn get(dir: &Path, key: &str) -> Option<Value> {
    let bytes = crate::fsx::read_small(&dir.join(format!("{key}.json")), crate::mailbox::READ_LIMIT).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Every key and value, sorted by key, and apart, why each key file (or the
/// folder) that cannot be read or is not JSON was left out, naming its path.
pub fn all_checked(dir: &Path) -> (Vec<(String, Value)>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let files = match crate::fsx::list_json(dir) {
        Ok(files) => files,
        Err(e) => return (good, vec![e.to_string()]),
    };
    for f in files {
        let Some(key) = f.strip_suffix(".json") else { continue };
        let p = dir.join(&f);
        let read = crate::fsx::read_small(&p, crate::mailbox::READ_LIMIT)
            .map_err(|e| e.source.to_string())
            .and_then(|b| b.ok_or_else(|| "removed while it was read".to_string()))
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| format!("not JSON ({e})")));
        match read {
            Ok(v) => good.push((key.to_string(), v)),
            Err(e) => bad.push(format!("{}: {e}", p.display())),
        }
    }
    good.sort_by(|a, b| a.0.cmp(&b.0));
    (good, bad)
}

/// Every key and value, sorted by key.
pub fn all(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = crate::fsx::list_json(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| {
            let key = f.strip_suffix(".json")?.to_string();
            let v = get(dir, &key)?;
            Some((key, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Applies operations (as JSON from a reply) to the current memory, giving the
/// plan and the reason for every operation that failed. A failed operation
/// changes nothing; the others still apply.
pub fn plan(dir: &Path, ops: &[Value]) -> (Plan, Vec<String>) {
    plan_on(|key| get(dir, key), ops)
}

/// [`plan`] on the memory that `current` gives, key by key (`None`: no such key).
pub fn plan_on(current: impl Fn(&str) -> Option<Value>, ops: &[Value]) -> (Plan, Vec<String>) {
    let mut plan: Plan = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let Some(key) = op.get("key").and_then(Value::as_str) else {
            errors.push(format!("memory op {i}: missing `key`"));
            continue;
        };
        if !valid_key(key) {
            errors.push(format!(
                "memory op {i}: invalid key {key:?} (keys use a-z, 0-9, '_', '.', '-', start with a letter or digit, at most 64)"
            ));
            continue;
        }
        let current = match plan.get(key) {
            Some(v) => v.clone(),
            None => current(key),
        };
        let value = op.get("value").cloned();
        let next = match (kind, value) {
            ("set", Some(v)) => Some(v),
            ("delete", _) => None,
            ("append", Some(v)) => match current {
                None => Some(Value::Array(vec![v])),
                Some(Value::Array(mut a)) => {
                    a.push(v);
                    Some(Value::Array(a))
                }
                Some(_) => {
                    errors.push(format!("memory op {i}: cannot append to `{key}`: it is not a list"));
                    continue;
                }
            },
            ("merge", Some(Value::Object(new))) => match current {
                None => Some(Value::Object(new)),
                Some(Value::Object(mut old)) => {
                    old.extend(new);
                    Some(Value::Object(old))
                }
                Some(_) => {
                    errors.push(format!("memory op {i}: cannot merge into `{key}`: it is not an object"));
                    continue;
                }
            },
            ("merge", Some(_)) => {
                errors.push(format!("memory op {i}: `merge` needs an object value"));
                continue;
            }
            ("set" | "append" | "merge", None) => {
                errors.push(format!("memory op {i}: `{kind}` needs a `value`"));
                continue;
            }
            (other, _) => {
                errors.push(format!("memory op {i}: unknown op {other:?} (use set, append, merge or delete)"));
                continue;
            }
        };
        plan.insert(key.to_string(), next);
    }
    (plan, errors)
}

/// Queues the plan's writes and removals. The memory folder is created (and
/// made durable) now if the plan writes to it.
pub fn apply(b: &mut Batch, dir: &Path, tmp: &Path, plan: &Plan) -> Result<(), PathError> {
    if plan.values().any(Option::is_some) && !dir.is_dir() {
        std::fs::create_dir_all(dir).with_path(dir)?;
        crate::fsx::sync_dir(dir.parent().unwrap_or(dir))?;
    }
    for (key, value) in plan {
        let path = dir.join(format!("{key}.json"));
        match value {
            Some(v) => b.write(tmp, path, serde_json::to_vec_pretty(v).expect("JSON values serialize")),
            None => b.remove(path),
        }
    }
    Ok(())
}

/// A short summary of memory for the prompt: each key with its value cut to 200 characters.
pub fn summary(dir: &Path) -> String {
    let items = all(dir);
    if items.is_empty() {
        return "(empty)".into();
    }
    let mut out = String::new();
    for (k, v) in items.iter().take(50) {
        let s = v.to_string();
        let cut: String = s.chars().take(200).collect();
        out.push_str(&format!("- {k}: {cut}{}\n", if cut.len() < s.len() { " …" } else { "" }));
    }
    if items.len() > 50 {
        out.push_str(&format!("- … and {} more keys\n", items.len() - 50));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fifo_or_a_link_to_dev_zero_among_the_keys_is_left_out_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("good.json"), "1").unwrap();
        let fifo = std::ffi::CString::new(d.path().join("pipe.json").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero.json")).unwrap();
        assert_eq!(all(d.path()), vec![("good".to_string(), json!(1))]);
        let (good, bad) = all_checked(d.path());
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().any(|b| b.contains("pipe.json") && b.contains("FIFO")), "{bad:?}");
    }

    #[test]
    fn ops_give_the_documented_results() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("list.json"), "[1]").unwrap();
        std::fs::write(d.path().join("obj.json"), r#"{"a":1}"#).unwrap();
        std::fs::write(d.path().join("gone.json"), "1").unwrap();
        let ops = vec![
            json!({"op":"append","key":"list","value":2}),
            json!({"op":"merge","key":"obj","value":{"b":2}}),
            json!({"op":"set","key":"goal","value":"ship"}),
            json!({"op":"append","key":"goal","value":"x"}),
            json!({"op":"delete","key":"gone"}),
            json!({"op":"set","key":"../etc","value":1}),
            json!({"op":"frobnicate","key":"k","value":1}),
            json!({"op":"append","key":"fresh","value":"a"}),
        ];
        let (plan, errors) = plan(d.path(), &ops);
        assert_eq!(plan["list"], Some(json!([1, 2])));
        assert_eq!(plan["obj"], Some(json!({"a":1,"b":2})));
        assert_eq!(plan["goal"], Some(json!("ship")));
        assert_eq!(plan["gone"], None);
        assert_eq!(plan["fresh"], Some(json!(["a"])));
        assert_eq!(errors.len(), 3, "{errors:?}");
        let mut b = Batch::new();
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        apply(&mut b, d.path(), &tmp, &plan).unwrap();
        b.commit(d.path()).unwrap();
        assert_eq!(get(d.path(), "list"), Some(json!([1, 2])));
        assert!(get(d.path(), "gone").is_none());
        // Applying the same plan again changes nothing.
        let mut b = Batch::new();
        apply(&mut b, d.path(), &tmp, &plan).unwrap();
        b.commit(d.path()).unwrap();
        assert_eq!(get(d.path(), "list"), Some(json!([1, 2])));
        assert!(summary(d.path()).contains("- goal: \"ship\""));
    }

    #[test]
    fn a_first_write_creates_the_folder_and_same_named_writes_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let (a, b) = (d.path().join("a/memory"), d.path().join("b/memory"));
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        std::fs::create_dir_all(d.path().join("b")).unwrap();
        let mut batch = Batch::new();
        // Two agents set the same key in one turn: both writes go through one tmp folder.
        apply(&mut batch, &a, &tmp, &plan(&a, &[json!({"op":"set","key":"goal","value":"a"})]).0).unwrap();
        apply(&mut batch, &b, &tmp, &plan(&b, &[json!({"op":"set","key":"goal","value":"b"})]).0).unwrap();
        batch.commit(d.path()).unwrap();
        assert_eq!(get(&a, "goal"), Some(json!("a")));
        assert_eq!(get(&b, "goal"), Some(json!("b")));
    }
}
