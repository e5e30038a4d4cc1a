//! Templates: every org `lemming init --template` can write validates, takes
//! the first message its README shows, and runs three turns on the mock with
//! mail moving and nothing refused; every folder of examples/orgs/ is one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixture::{clean_command, run, snapshot, TestOrg};

/// The repository's example orgs.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orgs")
}

/// `lemming init --list-templates --json`.
fn listed() -> Vec<Value> {
    let out = run(&mut clean_command(&["--json", "init", "--list-templates"])).ok();
    out.json().as_array().cloned().unwrap_or_else(|| panic!("--list-templates --json gave no list\n{out}"))
}

/// An org written by `lemming init --template NAME` into a temp folder.
fn init_template(name: &str) -> TestOrg {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(name);
    let out = run(clean_command(&["init", "--template", name, root.to_str().unwrap()]).current_dir(tmp.path())).ok();
    assert!(out.stdout.starts_with("Wrote "), "{out}");
    assert!(out.stderr.contains("Next: cd "), "init says nothing of what to do next\n{out}");
    TestOrg { tmp, root }
}

/// Every message file in the agents' inboxes (unread and read), by agent.
fn delivered(org: &TestOrg) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(org.path("agents")).unwrap() {
        let agent = e.unwrap().file_name().to_string_lossy().into_owned();
        let n = org.ids(&agent, "inbox", "new").len() + org.ids(&agent, "inbox", "cur").len();
        out.insert(agent, n);
    }
    out
}

#[test]
fn every_template_validates_takes_its_first_message_and_runs_three_turns_on_the_mock() {
    let list = listed();
    assert!(list.len() >= 9, "the default org and at least eight examples: {list:#?}");
    for t in &list {
        let name = t["name"].as_str().expect("a template's name");
        let first = &t["first_message"];
        let (to, body) = (
            first["to"].as_str().unwrap_or_else(|| panic!("{name}: no first message: {t}")),
            first["body"].as_str().unwrap(),
        );
        let org = init_template(name);
        if name != "default" {
            // The README says which agent you talk to, and it is the one the first message goes to.
            let readme = org.read("README.md");
            assert!(
                readme.contains(&format!("The entry agent is `{to}`.")),
                "{name}: its README does not name the entry agent {to}"
            );
        }

        let out = org.lemming_ok(&["validate"]);
        assert!(out.stderr.is_empty(), "{name}: validate warns\n{out}");

        let id = org.send(to, body);
        let out = org.lemming_ok(&["--json", "step", "-n", "3"]);
        let reports = out.json();
        let ran: Vec<Vec<String>> = reports
            .as_array()
            .unwrap_or_else(|| panic!("{name}: step --json gave no list\n{out}"))
            .iter()
            .map(|r| r["ran"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect())
            .collect();
        assert_eq!(ran.len(), 3, "{name}: three turns, three reports\n{out}");
        assert!(ran[0].iter().any(|a| a == to), "{name}: {to} did not run on turn 1: {ran:?}");
        let runs: usize = ran.iter().map(Vec::len).sum();
        assert!(runs >= 2, "{name}: three turns show no traffic after the first reply: {ran:?}");

        // The entry agent answered the human, and mail reached others than the two of them.
        let inbox = org.inbox_json("human");
        assert!(
            inbox.iter().any(|m| m["from"] == to && m["reply_to"] == id.as_str()),
            "{name}: no answer from {to} in the human's inbox: {inbox:#?}"
        );
        let moved = delivered(&org);
        let total: usize = moved.values().sum();
        assert!(total >= 4, "{name}: too little mail moved: {moved:?}");

        // Nothing was refused or lost, and the record on disk is sound.
        assert_eq!(org.status_json()["dead_letters"], 0, "{name}: the first message caused dead letters");
        let fsck = org.lemming_ok(&["fsck"]);
        assert!(fsck.stdout.contains("fsck: 0 violations"), "{name}\n{fsck}");

        // The mock's forwarding goes quiet: nine more turns leave no agent with unread mail.
        org.lemming_ok(&["step", "-n", "9"]);
        for agent in delivered(&org).keys().filter(|a| *a != "human") {
            let unread = org.ids(agent, "inbox", "new");
            assert!(
                unread.is_empty(),
                "{name}: after 12 turns {agent} still has mail: the first message loops\n{unread:?}"
            );
        }
    }
}

#[test]
fn the_solo_assistant_uses_its_tools_on_the_first_message() {
    let org = init_template("solo-assistant");
    let first = listed().into_iter().find(|t| t["name"] == "solo-assistant").expect("solo-assistant is listed");
    org.send(first["first_message"]["to"].as_str().unwrap(), first["first_message"]["body"].as_str().unwrap());
    org.lemming_ok(&["step", "-n", "2"]);
    assert_eq!(org.read("agents/assistant/workspace/todo.md"), "- renew passport\n- book the dentist\n");
    let inbox = org.inbox_json("human");
    assert!(inbox.iter().any(|m| m["body"].as_str().unwrap().starts_with("tool write_file ok")), "{inbox:#?}");
}

#[test]
fn every_example_folder_is_embedded_whole_and_there_are_at_least_eight() {
    let mut folders = BTreeSet::new();
    for e in fs::read_dir(examples()).expect("examples/orgs/") {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            folders.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    assert!(folders.len() >= 8, "at least eight example orgs: {folders:?}");
    let names: BTreeSet<String> = listed().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    let mut expected = folders.clone();
    expected.insert("default".into());
    assert_eq!(names, expected, "the templates are not the folders of examples/orgs/ and the default org");

    // Each template writes exactly its folder's files, byte for byte, and a .gitignore.
    for name in &folders {
        let org = init_template(name);
        let mut written = snapshot(&org.root);
        assert!(written.remove(".gitignore").is_some(), "{name}: no .gitignore");
        assert_eq!(
            written,
            snapshot(&examples().join(name)),
            "{name}: the embedded files differ from examples/orgs/{name}"
        );
    }
}

#[test]
fn templates_are_listed_with_their_description_and_an_unknown_one_is_refused_with_the_list() {
    let out = run(&mut clean_command(&["init", "--list-templates"])).ok();
    for t in listed() {
        let row = out.stdout.lines().find(|l| l.split_whitespace().next() == t["name"].as_str());
        let row = row.unwrap_or_else(|| panic!("{} is not listed\n{out}", t["name"]));
        assert!(row.ends_with(t["description"].as_str().unwrap()), "{row}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    let out = run(clean_command(&["init", "--template", "chess-club", dir.to_str().unwrap()]).current_dir(tmp.path()))
        .fails_with(1);
    out.stderr_has(&["unknown template `chess-club`", "--list-templates"]);
    for t in listed() {
        out.stderr_has(&[t["name"].as_str().unwrap()]);
    }
    assert!(!dir.exists(), "a refused init created its folder");

    // A template never writes over anything.
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    let before = snapshot(&dir);
    run(clean_command(&["init", "--template", "debate", dir.to_str().unwrap()]).current_dir(tmp.path()))
        .fails_with(1)
        .stderr_has(&["not empty"]);
    assert_eq!(snapshot(&dir), before, "init changed a folder it refused");

    // Listing writes nothing, so it takes no folder.
    run(clean_command(&["init", "--list-templates", dir.to_str().unwrap()]).current_dir(tmp.path())).fails_with(2);
    run(&mut clean_command(&["init", "--list-templates", "--template", "debate"])).fails_with(2);
}

/// A template's org/models.toml switched to its commented real model, as its
/// comment says: the mock tables deleted, the block after the intro uncommented.
fn switched_to_the_real_model(models: &str) -> Option<String> {
    let lines: Vec<&str> = models.lines().collect();
    let intro =
        lines.iter().position(|l| l.starts_with("# A real model instead") || l.starts_with("# A local model"))?;
    let header_end = lines.iter().position(|l| l.trim().is_empty())?;
    let block = intro + lines[intro..].iter().position(|l| *l == "#")? + 1;
    let uncommented = lines[block..].iter().map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l));
    Some(lines[..header_end].iter().copied().chain([""]).chain(uncommented).collect::<Vec<_>>().join("\n"))
}

#[test]
fn the_real_model_each_example_comments_out_is_valid_once_uncommented() {
    for t in listed().iter().filter(|t| t["name"] != "default") {
        let name = t["name"].as_str().unwrap();
        let org = init_template(name);
        let real = switched_to_the_real_model(&org.read("org/models.toml"))
            .unwrap_or_else(|| panic!("{name}: org/models.toml shows no commented real model"));
        assert!(!real.contains("provider = \"mock\""), "{name}: the switch left the mock in\n{real}");
        org.write("org/models.toml", &real);
        let out = org.lemming(&["validate"]);
        assert_eq!(out.code, Some(0), "{name}: the commented real model is not valid\n{real}\n{out}");
        // Every agent's key is served by the real provider.
        let models = org.lemming_ok(&["--json", "models"]).json();
        for m in models.as_array().unwrap() {
            assert_ne!(m["kind"], "mock", "{name}: key {} is still the mock", m["key"]);
        }
    }
}
