//! What `lemming status` keeps of its last read, to read less the next time:
//! `org/state/cache/agents.bin` (postcard: compact, and quick to read back).
//! For each agent, facts that each come from one file or folder (its resume
//! as parsed, its unread and pending counts, its last run), each kept with
//! that file's identity, size and times as they were before it was read.
//!
//! A fact is used only while its file's identity, size and times are still
//! those. It is kept only once the file has not changed for [`SETTLED`]: a
//! change within the same tick of the file system's clock leaves the times as
//! they were, so a file changed just now may change again unseen.
//!
//! Derived: a cache that does not parse, is of another format or version, or
//! is gone, means reading everything again; deleting it is always safe.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::name::{AgentName, Names};
use crate::resume::{Access, NameList, Reference, Resume, ResumeFile, Schedule, Written};

/// How long a file must have been left alone for a fact of it to be kept.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The largest cache read (a few hundred bytes per agent).
const LIMIT: u64 = 256 << 20;

/// A file's identity, size and times: when any of them changed, so may have
/// what it holds. The device, the inode, the size, then the times of the
/// last write and of the last change of any kind (never before the write),
/// in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Key(u64, u64, u64, i64, i64);

impl Key {
    /// The key of `rel` in the folder `dir` when it is a folder (`folder`)
    /// or a regular file, not a link.
    fn at(dir: &std::fs::File, rel: &[&str], folder: bool) -> Option<Key> {
        let st = stat_at(dir, rel).ok()?;
        let kind = if folder { libc::S_IFDIR } else { libc::S_IFREG };
        if st.st_mode & libc::S_IFMT != kind {
            return None;
        }
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let key = Key(
            st.st_dev as u64,
            st.st_ino as u64,
            st.st_size as u64,
            ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        );
        Some(key)
    }

    /// Whether the file was last changed at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(changed) = u64::try_from(self.4) else { return false };
        let changed = SystemTime::UNIX_EPOCH + Duration::from_nanos(changed);
        now.duration_since(changed).is_ok_and(|d| d >= SETTLED)
    }
}

/// What `fstatat` says of the path made of `parts` in the folder `dir`, not
/// following a link. One call from the agents' folder, its path put together
/// on the stack: `status` asks for five files of every agent.
fn stat_at(dir: &std::fs::File, parts: &[&str]) -> std::io::Result<libc::stat> {
    use std::os::fd::AsRawFd;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = [0u8; 256];
    let on_heap;
    let path = match buf.get_mut(..len + 1) {
        Some(room) => {
            let mut at = 0;
            for p in parts {
                room[at..at + p.len()].copy_from_slice(p.as_bytes());
                at += p.len();
            }
            std::ffi::CStr::from_bytes_with_nul(room).map_err(std::io::Error::other)?
        }
        None => {
            on_heap = std::ffi::CString::new(parts.concat())?;
            on_heap.as_c_str()
        }
    };
    // SAFETY: `st` is plain data that fstatat fills; `path` is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// A fact, and the key of its file before it was read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fact<T>(Key, T);

/// A resume as parsed, without its name (the folder's) and without what
/// the rest is derived from: who it may write to and read from, and the
/// names the org checks, come from the lists as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Parsed {
    title: String,
    description: String,
    model: Option<String>,
    instructions: String,
    every: u64,
    offset: u64,
    wake: crate::resume::Wake,
    send_to: Vec<String>,
    read_from: Vec<String>,
    tools: Vec<String>,
    commands: Vec<String>,
    shared: crate::resume::Shared,
    credits: f64,
    node: Option<String>,
}

/// What is known of one agent: its resume as parsed, its unread and pending
/// counts, and the turn of its last run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Facts(Option<Fact<Parsed>>, Option<Fact<usize>>, Option<Fact<usize>>, Option<Fact<Option<u64>>>);

/// The file, read in place: names and facts are borrowed from its bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Saved<'a> {
    format: u32,
    /// Facts are lemming's reading of the files: another version may read them otherwise.
    version: &'a str,
    /// Each agent's [`Facts`], encoded apart: each is decoded by the thread
    /// that reads that agent, when it does. Sorted by name.
    #[serde(borrow)]
    agents: Vec<(&'a str, &'a [u8])>,
}

/// What the last read kept, by agent: the file's bytes, and where in them
/// each agent's facts are, sorted by name. Nothing is copied out of the
/// file until it is asked for: a large org's is megabytes.
#[derive(Debug, Default)]
struct Store {
    bytes: Vec<u8>,
    names: Vec<Box<str>>,
    kept: Vec<Mutex<Kept>>,
}

impl Store {
    /// The file's `bytes`, when they are a cache of this format and version.
    fn read(bytes: Vec<u8>) -> Option<Store> {
        let saved = postcard::from_bytes::<Saved>(&bytes).ok()?;
        if saved.format != FORMAT || saved.version != env!("CARGO_PKG_VERSION") {
            return None;
        }
        let mut agents: Vec<(Box<str>, std::ops::Range<usize>)> = saved
            .agents
            .into_iter()
            .filter_map(|(name, raw)| {
                // Where in the file the decoder found it.
                let start = (raw.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
                Some((Box::from(name), start..start + raw.len()))
            })
            .collect();
        // A cache is a file too: sorted here unless it already is.
        if !agents.is_sorted_by(|a, b| a.0 <= b.0) {
            agents.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let (names, kept) = agents.into_iter().map(|(n, raw)| (n, Mutex::new(Kept::saved(raw)))).unzip();
        Some(Store { bytes, names, kept })
    }

    /// What was kept of `agent`.
    fn get(&self, agent: &str) -> Option<&Mutex<Kept>> {
        let i = self.names.binary_search_by(|n| (**n).cmp(agent)).ok()?;
        self.kept.get(i)
    }
}

/// What the last read kept of one agent.
#[derive(Debug, Default)]
struct Kept {
    /// Where its facts are in the file, until they are first asked for.
    raw: Option<std::ops::Range<usize>>,
    facts: Facts,
    /// The key of the resume this read took from here, once the org accepted it.
    used: Option<Key>,
}

impl Kept {
    fn saved(raw: std::ops::Range<usize>) -> Kept {
        Kept { raw: Some(raw), ..Kept::default() }
    }

    /// Its facts, decoded from the file's `bytes` the first time.
    fn facts(&mut self, bytes: &[u8]) -> &mut Facts {
        if let Some(raw) = self.raw.take() {
            self.facts = bytes.get(raw).and_then(|b| postcard::from_bytes(b).ok()).unwrap_or_default();
        }
        &mut self.facts
    }
}

/// Changes whenever what is saved changes meaning.
const FORMAT: u32 = 3;

/// One read of an org through what the last one kept ([`ViewCache::load`]),
/// or none ([`ViewCache::off`]). Shared by the threads that read the agents.
#[derive(Debug)]
pub struct ViewCache {
    /// The `agents/` folder, whose files are looked at; none when off.
    agents: Option<std::fs::File>,
    /// When this read began: what is settled is judged against it.
    at: SystemTime,
    /// What the last read kept.
    saved: Store,
    /// What this read learned (facts the saved ones did not have).
    learned: Mutex<HashMap<String, Facts>>,
}

/// Where one kind of fact is in [`Facts`].
type Slot<T> = fn(&mut Facts) -> &mut Option<Fact<T>>;

const RESUME: Slot<Parsed> = |f| &mut f.0;
const UNREAD: Slot<usize> = |f| &mut f.1;
const PENDING: Slot<usize> = |f| &mut f.2;
const LAST_RUN: Slot<Option<u64>> = |f| &mut f.3;

/// What [`ViewCache::resume`] found.
pub enum ResumeLookup {
    /// The resume as parsed when its file was as it is now: once the org
    /// accepts it, hand the key to [`ViewCache::used`].
    Hit(Box<ResumeFile>, FileKey),
    /// Not known: read and parse it, then hand it to [`ViewCache::parsed`]
    /// with this key (taken before the read).
    Miss(Option<FileKey>),
}

/// The identity, size and times of a file before it was read.
#[derive(Debug, Clone, Copy)]
pub struct FileKey(Key);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ViewCache {
    /// No cache: every fact is read from the files, and nothing is saved.
    pub fn off() -> ViewCache {
        ViewCache { agents: None, at: SystemTime::now(), saved: Store::default(), learned: Mutex::new(HashMap::new()) }
    }

    /// What the last read of the org at `layout` kept; nothing when it kept
    /// nothing or what it kept cannot be used.
    pub fn load(layout: &Layout) -> ViewCache {
        ViewCache::load_at(layout, SystemTime::now())
    }

    /// [`ViewCache::load`], judging what is settled as of `at`.
    pub(crate) fn load_at(layout: &Layout, at: SystemTime) -> ViewCache {
        let bytes = crate::fsx::read_small(&path(layout), LIMIT).ok().flatten();
        let saved = bytes.and_then(Store::read).unwrap_or_default();
        let agents = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(layout.root.join("agents"))
            .ok();
        ViewCache { agents, saved, at, ..ViewCache::off() }
    }

    /// Keeps the facts of this read for the next, when it learned any, for
    /// the agents the org has: those with a resume in use (`agents`) and
    /// those held for a broken one (`broken`). Derived and only a shortcut:
    /// a failure is logged, never an error.
    pub fn save<B>(self, layout: &Layout, agents: &BTreeMap<AgentName, Box<Resume>>, broken: &BTreeMap<String, B>) {
        let mut learned = self.learned.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.agents.is_none() || learned.is_empty() {
            return;
        }
        let known = |name: &str| agents.contains_key(name) || broken.contains_key(name);
        let Store { bytes, names, kept } = self.saved;
        let mut facts_of: HashMap<&str, Facts> = HashMap::new();
        // Agents kept as they were, not asked for and nothing new.
        let mut unchanged: Vec<(&str, &[u8])> = Vec::with_capacity(names.len());
        for (name, kept) in names.iter().zip(kept) {
            // Agents gone are forgotten.
            if !known(name) {
                continue;
            }
            let mut kept = kept.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(raw) = kept.raw.clone().filter(|_| !learned.contains_key(&**name)) {
                unchanged.extend(bytes.get(raw).map(|raw| (&**name, raw)));
                continue;
            }
            let mut facts = std::mem::take(kept.facts(&bytes));
            // A resume taken from here is the org's now.
            if let (Some(key), Some(r)) = (kept.used, agents.get(&**name)) {
                facts.0 = Some(Fact(key, Parsed::of(r)));
            }
            facts_of.insert(name, facts);
        }
        for (name, new) in learned.iter_mut() {
            if !known(name) {
                continue;
            }
            let facts = facts_of.entry(name).or_default();
            let Facts(resume, unread, pending, last_run) = std::mem::take(new);
            facts.0 = resume.or(facts.0.take());
            facts.1 = unread.or(facts.1.take());
            facts.2 = pending.or(facts.2.take());
            facts.3 = last_run.or(facts.3.take());
        }
        let encoded: Vec<(&str, Vec<u8>)> =
            facts_of.into_iter().filter_map(|(name, facts)| Some((name, postcard::to_stdvec(&facts).ok()?))).collect();
        let mut out = unchanged;
        out.extend(encoded.iter().map(|(name, raw)| (*name, raw.as_slice())));
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let saved = Saved { format: FORMAT, version: env!("CARGO_PKG_VERSION"), agents: out };
        let Ok(bytes) = postcard::to_stdvec(&saved) else { return };
        if let Err(e) = crate::fsx::write_derived(&layout.state_tmp(), &path(layout), &bytes) {
            tracing::debug!(error = %e, "cannot keep what status read for the next one");
        }
    }

    /// The key of `rel` in the folder of `agent` when it is a folder
    /// (`folder`) or a regular file, not a link.
    fn key(&self, agent: &str, rel: &str, folder: bool) -> Option<Key> {
        Key::at(self.agents.as_ref()?, &[agent, "/", rel], folder)
    }

    /// The saved fact of `agent` in `slot` when its file's key is still `key`.
    fn hit<T: Copy>(&self, agent: &str, slot: Slot<T>, key: Key) -> Option<T> {
        let mut kept = lock(self.saved.get(agent)?);
        match slot(kept.facts(&self.saved.bytes)) {
            Some(Fact(k, v)) if *k == key => Some(*v),
            _ => None,
        }
    }

    /// Keeps `value`, read after `key` was taken, when its file is settled.
    fn learn<T>(&self, agent: &str, slot: Slot<T>, key: Option<Key>, value: T) {
        if let Some(key) = key.filter(|k| k.settled(self.at)) {
            *slot(lock(&self.learned).entry(agent.to_string()).or_default()) = Some(Fact(key, value));
        }
    }

    /// A count or turn of `rel` in the folder of `agent` (a folder when
    /// `folder`) in `slot`: the saved one while it is unchanged, else what
    /// `read` says.
    fn fact<T: Copy, E>(
        &self,
        agent: &str,
        slot: Slot<T>,
        rel: &str,
        folder: bool,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let key = self.key(agent, rel, folder);
        if let Some(v) = key.and_then(|k| self.hit(agent, slot, k)) {
            return Ok(v);
        }
        let v = read()?;
        self.learn(agent, slot, key, v);
        Ok(v)
    }

    /// How many entries `agent`'s unread mail folder holds, as `count` says.
    pub fn unread<E>(&self, agent: &str, count: impl FnOnce() -> Result<usize, E>) -> Result<usize, E> {
        self.fact(agent, UNREAD, crate::mailbox::UNREAD_FOLDER, true, count)
    }

    /// How many entries `agent`'s folder of mail to route holds, as `count` says.
    pub fn pending<E>(&self, agent: &str, count: impl FnOnce() -> Result<usize, E>) -> Result<usize, E> {
        self.fact(agent, PENDING, crate::mailbox::PENDING_FOLDER, true, count)
    }

    /// The turn of the last run in `agent`'s activity log, as `last` says.
    pub fn last_run<E>(&self, agent: &str, last: impl FnOnce() -> Result<Option<u64>, E>) -> Result<Option<u64>, E> {
        self.fact(agent, LAST_RUN, crate::layout::ACTIVITY_LOG, false, last)
    }

    /// Whether `rel` in the folder of `agent` is known not to exist: one
    /// `fstatat` says so. Never when off (nothing is looked at).
    pub fn absent(&self, agent: &str, rel: &str) -> bool {
        let Some(agents) = &self.agents else { return false };
        matches!(stat_at(agents, &[agent, "/", rel]), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// The resume of the agent `folder`, at `path`, as last parsed, when the
    /// file is as it was then (and what was saved is a sound resume of that
    /// folder). Each resume is taken once.
    pub fn resume(&self, folder: &str, path: &Path, names: &Names) -> ResumeLookup {
        let key = self.key(folder, "resume.toml", false);
        // Taken out, not copied: the org owns it now, and what is saved of it
        // is made again from the org's ([`ViewCache::used`]).
        let taken = key.and_then(|k| {
            let mut kept = lock(self.saved.get(folder)?);
            let facts = kept.facts(&self.saved.bytes);
            facts.0.take_if(|f| f.0 == k).map(|f| f.1)
        });
        match (taken.and_then(|p| sound(p, folder, path, names)), key) {
            (Some(f), Some(key)) => ResumeLookup::Hit(Box::new(f), FileKey(key)),
            _ => ResumeLookup::Miss(key.map(FileKey)),
        }
    }

    /// Notes that the org accepted the resume of `folder` taken at `key`:
    /// [`ViewCache::save`] keeps it as the org has it.
    pub fn used(&self, folder: &str, key: FileKey) {
        if let Some(kept) = self.saved.get(folder) {
            lock(kept).used = Some(key.0);
        }
    }

    /// Keeps `f`, the resume of `folder` parsed from its file as it was at `key`.
    pub fn parsed(&self, folder: &str, key: Option<FileKey>, f: &ResumeFile) {
        self.learn(folder, RESUME, key.map(|k| k.0), Parsed::of(&f.resume));
    }
}

impl Parsed {
    fn of(r: &Resume) -> Parsed {
        Parsed {
            title: r.title.clone(),
            description: r.description.clone(),
            model: r.model.clone(),
            instructions: r.instructions.clone(),
            every: r.schedule.every,
            offset: r.schedule.offset,
            wake: r.schedule.wake,
            send_to: r.send_to_written(),
            read_from: r.read_from_written(),
            tools: r.tools.clone(),
            commands: r.commands.clone(),
            shared: r.shared,
            credits: r.credits,
            node: r.node.as_ref().map(|n| n.to_string()),
        }
    }
}

/// `org/state/cache/agents.bin`.
fn path(layout: &Layout) -> std::path::PathBuf {
    layout.cache_dir().join("agents.bin")
}

/// The resume file that `p` was parsed from, when it could have come from
/// parsing a resume of `folder`: what the org relies on holds (a schedule
/// that fires, amounts in range, valid names). A cache is a file too.
fn sound(p: Parsed, folder: &str, path: &Path, names: &Names) -> Option<ResumeFile> {
    let max = crate::resume::MAX_EVERY as u64;
    let fine = (1..=max).contains(&p.every)
        && p.offset <= max
        && crate::ledger::valid_amount(p.credits)
        && p.instructions.len() <= crate::resume::MAX_INSTRUCTIONS_BYTES;
    if !fine {
        return None;
    }
    let name = names.name(folder).ok()?;
    let mut refs = Vec::new();
    let mut reference = |field, value: &str| refs.push(Reference { field, value: value.to_string(), span: 0..0 });
    for t in &p.tools {
        reference("tools", t);
    }
    if let Some(m) = &p.model {
        reference("model", m);
    }
    let node = match p.node {
        Some(n) => {
            reference("node", &n);
            Some(AgentName::new(&n).ok()?)
        }
        None => None,
    };
    // As the resume's parse does: "*" is anyone, "@name" a group the org
    // resolves, and every other entry a name. An agent of the org needs no
    // checking ([`crate::org::check_refs`] would find it): most entries of
    // a large org's lists are, and each reference is a copy of its name.
    let mut access = |field: &'static str, written: &[String]| -> Option<Access> {
        if written.iter().any(|w| w == "*") {
            return Some(Access::Anyone);
        }
        let mut set = Vec::with_capacity(written.len());
        for w in written {
            if let Some(name) = names.shared(w) {
                set.push(name);
                continue;
            }
            match w.strip_prefix('@') {
                Some(group) => {
                    AgentName::new(group).ok()?;
                }
                None => set.push(AgentName::new(w).ok()?),
            }
            reference(field, w);
        }
        Some(Access::Only(NameList::new(set)))
    };
    let send_to = access("send_to", &p.send_to)?;
    let read_from = access("read_from", &p.read_from)?;
    let (send_to_written, read_from_written) = (Written::of(p.send_to, &send_to), Written::of(p.read_from, &read_from));
    let resume = Resume {
        name,
        title: p.title,
        description: p.description,
        model: p.model,
        instructions: p.instructions,
        schedule: Schedule { every: p.every, offset: p.offset, wake: p.wake },
        send_to,
        read_from,
        send_to_written,
        read_from_written,
        tools: p.tools,
        commands: p.commands,
        shared: p.shared,
        credits: p.credits,
        node,
    };
    Some(ResumeFile { path: path.to_path_buf(), text: String::new(), resume, refs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(10)
    }

    #[test]
    fn a_file_is_settled_only_once_left_alone_long_enough() {
        let (_d, root) = crate::testing::new_org();
        let agents = std::fs::File::open(root.join("agents")).unwrap();
        let key = Key::at(&agents, &["manager/resume.toml"], false).expect("a resume is a regular file");
        assert!(!key.settled(SystemTime::now()), "just written");
        assert!(!key.settled(SystemTime::now() + SETTLED / 2));
        assert!(key.settled(SystemTime::now() + SETTLED));
        assert!(!Key(0, 0, 0, 0, -1).settled(later()), "a time before 1970 is never settled");
        assert_eq!(Key::at(&agents, &["manager/resume.toml"], true), None, "not a folder");
        assert_eq!(Key::at(&agents, &["manager/inbox/new"], false), None, "not a file");
        std::os::unix::fs::symlink(root.join("agents/manager/resume.toml"), root.join("agents/manager/link")).unwrap();
        assert_eq!(Key::at(&agents, &["manager/", "link"], false), None, "a link is not followed");
        assert_eq!(Key::at(&agents, &["manager/missing"], false), None);
        // A path too long to put together on the stack.
        let deep = format!("{}/{}", "d".repeat(200), "f".repeat(100));
        std::fs::create_dir_all(root.join("agents/manager").join("d".repeat(200))).unwrap();
        std::fs::write(root.join("agents/manager").join(&deep), "x").unwrap();
        assert_eq!(Key::at(&agents, &["manager/", &deep], false).map(|k| k.2), Some(1));
        assert_eq!(Key::at(&agents, &["manager/", &deep, "\0"], false), None, "not a path");
        let cache = ViewCache::load_at(&Layout::new(&root), later());
        assert!(cache.absent("manager", "missing") && !cache.absent("manager", &deep));
        assert!(!cache.absent("manager", "d\0"), "not known to be absent");
        assert!(!ViewCache::off().absent("manager", "missing"), "off: nothing is looked at");
    }

    #[test]
    fn a_fact_is_read_again_only_when_its_file_changed() {
        let (_d, root) = crate::testing::new_org();
        let layout = Layout::new(&root);
        let reads = std::cell::Cell::new(0);
        let count = |n: usize| {
            reads.set(reads.get() + 1);
            Ok::<usize, ()>(n)
        };
        let org = crate::org::Org::load(&root).unwrap();
        std::fs::create_dir_all(root.join("agents/manager/inbox/new")).unwrap();
        let cache = ViewCache::load_at(&layout, later());
        assert_eq!(cache.unread("manager", || count(3)), Ok(3));
        cache.save(&layout, &org.agents, &org.broken);
        let cache = ViewCache::load_at(&layout, later());
        assert_eq!(cache.unread("manager", || count(4)), Ok(3), "the folder is unchanged: the kept count");
        assert_eq!(reads.get(), 1);
        // A new entry changes the folder.
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(root.join("agents/manager/inbox/new/x.json"), "{}").unwrap();
        assert_eq!(cache.unread("manager", || count(4)), Ok(4));
        assert_eq!(reads.get(), 2);
        // What was read just now is not kept: it may change again in the same tick.
        let now = ViewCache::load_at(&layout, SystemTime::now());
        assert_eq!(now.unread("manager", || count(5)), Ok(5));
        assert!(lock(&now.learned).is_empty(), "{:?}", now.learned);
        // Off: every fact is read.
        assert_eq!(ViewCache::off().unread("manager", || count(6)), Ok(6));
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn a_kept_resume_is_used_only_when_sound() {
        let (_d, root) = crate::testing::new_org();
        let layout = Layout::new(&root);
        let org = crate::org::Org::load(&root).unwrap();
        let cache = ViewCache::load_at(&layout, later());
        let path = layout.agent_dir("manager").join("resume.toml");
        let ResumeLookup::Miss(key) = cache.resume("manager", &path, &Names::default()) else {
            panic!("nothing kept yet")
        };
        let manager = &org.agents["manager"];
        let folders = crate::org::agent_folders(&layout);
        let names = Names::new(folders.iter().map(String::as_str));
        let file =
            ResumeFile { path: path.clone(), text: String::new(), resume: (**manager).clone(), refs: Vec::new() };
        cache.parsed("manager", key, &file);
        cache.save(&layout, &org.agents, &org.broken);
        let kept = |edit: &dyn Fn(&mut Parsed)| {
            let mut cache = ViewCache::load_at(&layout, later());
            let Store { bytes, names: saved, kept } = &mut cache.saved;
            let kept = kept[saved.iter().position(|n| &**n == "manager").unwrap()].get_mut().unwrap();
            edit(&mut kept.facts(bytes).0.as_mut().unwrap().1);
            match cache.resume("manager", &path, &names) {
                ResumeLookup::Hit(f, _) => Some(f.resume),
                ResumeLookup::Miss(_) => None,
            }
        };
        let same = kept(&|_| {}).expect("kept and unchanged");
        // Rebuilt with the org's names, not copies of them.
        let shared = |n: &str| names.name(n).unwrap();
        assert!(same.name.is_shared_with(&shared("manager")));
        let crate::resume::Access::Only(listed) = &same.send_to else { panic!("manager writes to named agents") };
        assert!(!listed.is_empty() && listed.iter().all(|n| n.is_shared_with(&shared(n.as_str()))));
        assert_eq!((same.title.as_str(), &same.send_to_written), (manager.title.as_str(), &manager.send_to_written));
        assert!(kept(&|p| p.every = 0).is_none(), "a schedule that never fires");
        assert!(kept(&|p| p.credits = f64::INFINITY).is_none());
        assert!(kept(&|p| p.send_to.push("../x".into())).is_none(), "not a name");
        assert!(kept(&|p| p.read_from.push("@Bad".into())).is_none(), "not a group's name");
        let anyone = kept(&|p| p.send_to.push("*".into())).unwrap();
        assert_eq!(anyone.send_to, Access::Anyone);
        // A cache that is not one, or of another version, is nothing.
        for junk in [b"".as_slice(), b"\x01\x02", &[0xff; 64]] {
            std::fs::write(path_of(&layout), junk).unwrap();
            assert!(ViewCache::load_at(&layout, later()).saved.names.is_empty());
        }
        let other = Saved { format: FORMAT, version: "0.0.0", agents: vec![("manager", &[])] };
        std::fs::write(path_of(&layout), postcard::to_stdvec(&other).unwrap()).unwrap();
        assert!(ViewCache::load_at(&layout, later()).saved.names.is_empty());
    }

    fn path_of(layout: &Layout) -> std::path::PathBuf {
        path(layout)
    }
}
