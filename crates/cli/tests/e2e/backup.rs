//! `lemming backup` and `lemming restore`: a backup taken while the daemon
//! runs and people send restores into an org that fsck finds clean, where
//! every message is delivered exactly once; hard links stay links; restore
//! refuses a folder that is not empty, hostile entries and a truncated
//! archive, and leaves nothing behind.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::fixture::{clean_command, run, wait_until, Output, TestOrg};

/// `lemming ARGS` run from `dir`, with no org around.
fn lemming_in(dir: &Path, args: &[&str]) -> Output {
    run(clean_command(args).current_dir(dir))
}

/// The ids of the message files in the folders `agents/*/<mailbox>/*/` of
/// the org at `root` (tmp/ excepted), with how many times each is there.
fn ids_in(root: &Path, mailbox: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for agent in std::fs::read_dir(root.join("agents")).unwrap() {
        let dir = agent.unwrap().path().join(mailbox);
        for sub in std::fs::read_dir(&dir).into_iter().flatten() {
            let sub = sub.unwrap().path();
            if sub.file_name().unwrap() == "tmp" || !sub.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&sub).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                if let Some(id) = name.strip_suffix(".json") {
                    *out.entry(id.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// The names of the files and folders directly in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Checks a backup taken while mail moved: it restores into an org fsck finds
/// clean, and after a step every message the human had sent by then is in
/// exactly one inbox. Returns how many there were.
#[track_caller]
fn restores_clean_and_delivers_once(tmp: &Path, archive: &str, sent: &[String]) -> usize {
    let dir = format!("restored-{archive}");
    let restored = tmp.join(&dir);
    let out = lemming_in(tmp, &["restore", archive, &dir]).ok();
    assert!(out.stdout.contains("fsck: 0 violation(s)"), "{out}");
    let human: Vec<String> = ["new", "sent"]
        .iter()
        .flat_map(|sub| names(&restored.join("agents/human/outbox").join(sub)))
        .filter_map(|n| n.strip_suffix(".json").map(String::from))
        .collect();
    assert!(human.iter().all(|id| sent.contains(id)), "a message nobody sent");
    // Every message in an outbox of the backup with one recipient (the human's
    // notes, the agents' replies), except those refused into dead letters.
    let mut single = Vec::new();
    for agent in names(&restored.join("agents")) {
        for sub in ["new", "sent"] {
            let dir = restored.join("agents").join(&agent).join("outbox").join(sub);
            for name in names(&dir) {
                let msg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
                let to = match &msg["to"] {
                    serde_json::Value::Array(v) => v.len(),
                    _ => 1,
                };
                let id = name.strip_suffix(".json").unwrap().to_string();
                let dead = names(&restored.join("org/state/dead")).iter().any(|d| d.starts_with(&id));
                if to == 1 && !dead {
                    single.push(id);
                }
            }
        }
    }
    assert!(human.iter().all(|id| single.contains(id)));
    run(clean_command(&["step"]).env("LEMMING_ORG", &restored)).ok();
    let inboxes = ids_in(&restored, "inbox");
    for id in &single {
        assert_eq!(inboxes.get(id), Some(&1), "{archive}: {id} is in {:?} inboxes after a step", inboxes.get(id));
    }
    let fsck = run(clean_command(&["fsck"]).env("LEMMING_ORG", &restored)).ok();
    assert!(fsck.stdout.contains("fsck: 0 violations"), "{fsck}");
    human.len()
}

#[test]
fn a_backup_taken_while_the_daemon_runs_and_people_send_restores_clean_and_delivers_each_message_once() {
    let org = TestOrg::new();
    // Turns that take a while, back to back: a backup is likely to come in the middle of one.
    org.edit("org/models.toml", "provider = \"mock\"", "provider = \"slow\"");
    let models = org.read("org/models.toml");
    org.write("org/models.toml", format!("{models}\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 100\n"));
    let mut d = org.spawn_run(&["--turn-seconds", "0.05"]);
    d.wait_ready();
    // A stream of sends, before, during and after the backups.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, root) = (stop.clone(), org.root.clone());
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let out = run(clean_command(&["send", "manager", &format!("note {i}")]).env("LEMMING_ORG", &root));
                sent.push(out.ok().stdout.trim().to_string());
            }
            sent
        })
    };
    assert!(wait_until(Duration::from_secs(30), || org.turn() >= 4 && ids_in(&org.root, "outbox").len() >= 10));
    let mut archives = Vec::new();
    for i in 0..6 {
        let name = format!("org-{i}.tar.gz");
        let backup = org.lemming_ok(&["backup", org.tmp.path().join(&name).to_str().unwrap()]);
        assert!(backup.stdout.starts_with("backup: ") && backup.stdout.contains(" files ("), "{backup}");
        archives.push(name);
        std::thread::sleep(Duration::from_millis(70 + 30 * i));
    }
    // Sends went on after the backups, and the daemon answered them.
    let turn = org.turn();
    assert!(wait_until(Duration::from_secs(30), || org.turn() >= turn + 2), "turns stopped after the backup\n{d}");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    d.assert_running("after the backups");
    assert!(sent.len() >= 10, "{sent:?}");
    let mut counts = Vec::new();
    for a in &archives {
        counts.push(restores_clean_and_delivers_once(org.tmp.path(), a, &sent));
    }
    assert!(counts[0] >= 1 && counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(*counts.last().unwrap() < sent.len(), "the backups hold the sends made after them: {counts:?}");
}

#[test]
fn hard_links_survive_the_round_trip() {
    let org = TestOrg::new();
    let id = org.send("manager", "hello");
    org.step();
    let sent = org.path(&format!("agents/human/outbox/sent/{id}.json"));
    let delivered = org.path(&format!("agents/manager/inbox/cur/{id}.json"));
    assert_eq!(std::fs::metadata(&sent).unwrap().ino(), std::fs::metadata(&delivered).unwrap().ino());
    let out = org.lemming_ok(&["--json", "backup", "../b.tar.gz"]).json();
    assert!(out["links"].as_u64().unwrap() >= 1, "{out}");
    lemming_in(org.tmp.path(), &["restore", "b.tar.gz", "r"]).ok();
    let r = org.tmp.path().join("r");
    let sent = std::fs::metadata(r.join(format!("agents/human/outbox/sent/{id}.json"))).unwrap();
    let delivered = std::fs::metadata(r.join(format!("agents/manager/inbox/cur/{id}.json"))).unwrap();
    assert_eq!(sent.ino(), delivered.ino(), "the delivered copy is no longer a link of the sent one");
    assert!(sent.nlink() >= 2);
}

#[test]
fn backup_refuses_an_existing_file_unless_forced() {
    let org = TestOrg::new();
    let file = org.tmp.path().join("b.tar.gz");
    std::fs::write(&file, "old").unwrap();
    org.lemming(&["backup", file.to_str().unwrap()]).fails_with(1).stderr_has(&["already exists", "--force"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"old");
    org.lemming_ok(&["backup", "--force", file.to_str().unwrap()]);
    lemming_in(org.tmp.path(), &["restore", "b.tar.gz", "r"]).ok();
}

/// One entry of a hand-made archive: its type, raw name, link target and contents.
type Entry<'a> = (tar::EntryType, &'a [u8], Option<&'a str>, &'a [u8]);

/// A gzip-compressed tar with a valid manifest, then `entries` as given, names
/// written raw (the tar crate itself refuses `..`).
fn crafted(path: &Path, entries: &[Entry]) {
    let files = entries.iter().filter(|e| e.0 != tar::EntryType::Directory).count();
    let manifest =
        format!(r#"{{"format":1,"lemming_version":"0","created_at":"2026-01-01T00:00:00Z","turn":0,"files":{files}}}"#);
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut all: Vec<Entry> = vec![(tar::EntryType::Regular, b"lemming-backup.json", None, manifest.as_bytes())];
    all.extend_from_slice(entries);
    for (kind, name, link, data) in all {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[track_caller]
fn refused(tmp: &Path, archive: &str, needles: &[&str]) {
    let out = lemming_in(tmp, &["restore", archive, "r"]);
    out.fails_with(1).stderr_has(needles);
    assert!(!tmp.join("r").exists(), "the target was written");
    let left: Vec<String> = names(tmp).into_iter().filter(|n| n.contains("restor")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn restore_refuses_hostile_entries_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let ok: &[Entry] = &[(Directory, b"org", None, b""), (Regular, b"org/a", None, b"a")];
    crafted(&t.join("ok.tar.gz"), ok);
    crafted(&t.join("parent.tar.gz"), &[(Regular, b"org/a", None, b"a"), (Regular, b"../x", None, b"x")]);
    crafted(&t.join("deep.tar.gz"), &[(Regular, b"org/../../x", None, b"x")]);
    crafted(&t.join("absolute.tar.gz"), &[(Regular, b"/tmp/lemming-restore-test-x", None, b"x")]);
    crafted(&t.join("symlink.tar.gz"), &[(Symlink, b"org/evil", Some("/etc/passwd"), b"")]);
    crafted(&t.join("link.tar.gz"), &[(Link, b"org/evil", Some("/etc/passwd"), b"")]);
    crafted(
        &t.join("dangling.tar.gz"),
        &[(Link, b"org/evil", Some("org/later"), b""), (Regular, b"org/later", None, b"")],
    );
    refused(t, "parent.tar.gz", &["entry 3 `../x`", "..", "nothing was written"]);
    refused(t, "deep.tar.gz", &["entry 2", "outside the folder"]);
    refused(t, "absolute.tar.gz", &["entry 2", "absolute"]);
    assert!(!Path::new("/tmp/lemming-restore-test-x").exists());
    refused(t, "symlink.tar.gz", &["entry 2 `org/evil`", "symbolic link"]);
    refused(t, "link.tar.gz", &["entry 2", "absolute"]);
    refused(t, "dangling.tar.gz", &["entry 2", "not a file earlier in the archive"]);
    // A file that is not an archive, and one that does not start with a manifest.
    std::fs::write(t.join("text.tar.gz"), "not an archive").unwrap();
    refused(t, "text.tar.gz", &["text.tar.gz", "corrupt at entry 1"]);
    // The crafted archive without its hostile entries restores (its org is no org: fsck says so).
    let out = lemming_in(t, &["restore", "ok.tar.gz", "r"]);
    assert_eq!(std::fs::read(t.join("r/org/a")).unwrap(), b"a", "{out}");
}

#[test]
fn restore_refuses_a_folder_that_is_not_empty_and_a_truncated_archive() {
    let org = TestOrg::new();
    for i in 0..20 {
        org.send("manager", &format!("message {i} {}", "x".repeat(2000)));
    }
    org.step();
    let t = org.tmp.path();
    org.lemming_ok(&["backup", "../b.tar.gz"]);
    std::fs::create_dir(t.join("full")).unwrap();
    std::fs::write(t.join("full/keep"), "mine").unwrap();
    lemming_in(t, &["restore", "b.tar.gz", "full"]).fails_with(1).stderr_has(&["full is not empty"]);
    assert_eq!(names(&t.join("full")), ["keep"]);
    // An empty folder is fine.
    std::fs::create_dir(t.join("empty")).unwrap();
    lemming_in(t, &["restore", "b.tar.gz", "empty"]).ok();
    assert!(t.join("empty/org/org.toml").is_file());

    let whole = std::fs::read(t.join("b.tar.gz")).unwrap();
    for cut in [whole.len() / 2, whole.len() - 4] {
        std::fs::write(t.join("cut.tar.gz"), &whole[..cut]).unwrap();
        refused(t, "cut.tar.gz", &["cut.tar.gz is truncated or corrupt at entry", "nothing was written"]);
    }
    let before: Vec<PathBuf> = names(t).into_iter().map(PathBuf::from).collect();
    assert!(!before.iter().any(|n| n.to_string_lossy().contains("restoring")), "{before:?}");
}
