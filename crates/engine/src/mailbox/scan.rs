//! Reading the messages of many mailboxes at once, each message once, with
//! every place it is in: the record that `thread`, `export` and the message
//! browser show.
//!
//! A delivered message is one file with many names (the sender's
//! `outbox/sent/` copy and each inbox copy are hard links), all named
//! `<id>.json`: the folders are listed, and each name is read once. Reads run
//! on a few threads, and a caller that wants only some messages (one thread)
//! passes a test on the raw bytes that skips parsing the others.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use super::{message_id, Folder, FsMailStore};
use crate::error::{PathError, WithPath};
use crate::message::Message;

/// Where a copy of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In an inbox, unread (`inbox/new/`).
    Unread,
    /// In an inbox, read (`inbox/cur/`).
    Read,
    /// In an inbox, read and archived (`inbox/archive/`).
    Archived,
    /// In the sender's outbox, routed (`outbox/sent/`).
    Sent,
    /// In the sender's outbox, waiting to be routed (`outbox/new/`).
    Pending,
    /// A dead letter (`org/state/dead/`): refused or poisoned.
    Dead,
}

impl State {
    /// The word for it, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unread => "unread",
            State::Read => "read",
            State::Archived => "archived",
            State::Sent => "sent",
            State::Pending => "pending",
            State::Dead => "dead",
        }
    }
}

/// One place a message is in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Place {
    /// The agent whose inbox or outbox holds it (none for a dead letter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Which folder.
    pub state: State,
}

/// A message and every place it is in (sorted: by agent, then state).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The message.
    pub message: Message,
    /// Its places.
    pub places: Vec<Place>,
}

impl Located {
    /// The agents that hold it in this state, by name.
    pub fn agents(&self, state: State) -> Vec<String> {
        self.places.iter().filter(|p| p.state == state).filter_map(|p| p.agent.clone()).collect()
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Each message once, by id.
    pub messages: BTreeMap<String, Located>,
    /// Files or folders that could not be read; the rest is still there.
    pub unreadable: Vec<PathError>,
}

/// The folders a scan lists, in the order mail moves (so that a message
/// moving while it is listed is still seen once at least).
const FOLDERS: [(Folder, State); 5] = [
    (Folder::Unread, State::Unread),
    (Folder::Read, State::Read),
    (Folder::Archive, State::Archived),
    (Folder::Sent, State::Sent),
    (Folder::Pending, State::Pending),
];

/// Below this many files, one thread reads them all.
const PARALLEL_MIN: usize = 256;

/// A folder that a scan lists, open (names in it are opened relative to it).
struct Dir {
    path: PathBuf,
    place: Place,
    fd: Option<fs::File>,
}

/// A name to read, and the folders (indexes of [`Dir`]s) it is in, in the order mail moves.
struct Job {
    name: String,
    dirs: Vec<usize>,
}

impl FsMailStore {
    /// Every message in the inboxes (unread, read, archived) and sent mail
    /// of `agents`, and with `dead` every dead letter that is a message, each
    /// once with all its places. Only files whose bytes pass `keep` are
    /// parsed (`keep` must pass every file that holds a wanted message: it
    /// saves the parsing, not the reading). Files that are not messages, not
    /// regular files or larger than the read limit are passed over, as
    /// people's views do; fsck reports them.
    pub fn scan(&self, agents: &[String], dead: bool, keep: &(dyn Fn(&[u8]) -> bool + Sync)) -> Scanned {
        let mut out = Scanned::default();
        let mut dirs: Vec<Dir> = Vec::new();
        for agent in agents {
            for (folder, state) in FOLDERS {
                dirs.push(Dir {
                    path: self.dir(agent, folder),
                    place: Place { agent: Some(agent.clone()), state },
                    fd: None,
                });
            }
        }
        if dead {
            dirs.push(Dir { path: self.dead_path(), place: Place { agent: None, state: State::Dead }, fd: None });
        }
        let mut by_name: BTreeMap<String, Job> = BTreeMap::new();
        let mut jobs: Vec<Job> = Vec::new();
        for (i, dir) in dirs.iter_mut().enumerate() {
            let names = self.listed(&dir.path, &mut out.unreadable);
            if names.is_empty() {
                continue;
            }
            dir.fd = fs::File::open(&dir.path).ok();
            for name in names {
                if dir.place.state == State::Dead {
                    // A dead letter's name is its own id, not its message's.
                    jobs.push(Job { name, dirs: vec![i] });
                } else {
                    by_name.entry(name.clone()).or_insert_with(|| Job { name, dirs: vec![] }).dirs.push(i);
                }
            }
        }
        jobs.extend(by_name.into_values());
        for (read, errors) in self.read_all(&dirs, &jobs, keep) {
            out.unreadable.extend(errors);
            for (message, job) in read {
                let places = jobs[job].dirs.iter().map(|d| dirs[*d].place.clone());
                match out.messages.get_mut(&message.id) {
                    Some(l) => l.places.extend(places),
                    None => {
                        let places = places.collect();
                        out.messages.insert(message.id.clone(), Located { message, places });
                    }
                }
            }
        }
        for l in out.messages.values_mut() {
            l.places.sort();
            l.places.dedup();
        }
        out
    }

    /// The names of a folder's regular `<id>.json` files (none when it is missing).
    fn listed(&self, dir: &std::path::Path, errors: &mut Vec<PathError>) -> Vec<String> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
            Err(e) => {
                errors.push(PathError { path: dir.to_path_buf(), source: e });
                return vec![];
            }
        };
        let mut names = Vec::new();
        for entry in rd.flatten() {
            // The type from the listing: no look at the file itself.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                if !name.starts_with('.') && message_id(&name).is_some() {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Reads the jobs on a few threads: per thread, the messages read (with
    /// the index of their job) and the errors.
    #[allow(clippy::type_complexity)]
    fn read_all(
        &self,
        dirs: &[Dir],
        jobs: &[Job],
        keep: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Vec<(Vec<(Message, usize)>, Vec<PathError>)> {
        let threads = if jobs.len() < PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4)
        };
        let chunk = jobs.len().div_ceil(threads).max(1);
        let work = |first: usize, jobs: &[Job]| {
            let (mut read, mut errors) = (Vec::new(), Vec::new());
            // One buffer per thread, reused: most files are passed over unparsed.
            let mut buf = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                match self.read_job(dirs, job, &mut buf) {
                    Ok(true) if keep(&buf) => {
                        if let Ok(m) = Message::parse(&buf) {
                            read.push((m, first + i));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e),
                }
            }
            (read, errors)
        };
        if threads == 1 {
            return vec![work(0, jobs)];
        }
        std::thread::scope(|s| {
            let handles: Vec<_> =
                jobs.chunks(chunk).enumerate().map(|(n, c)| s.spawn(move || work(n * chunk, c))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        })
    }

    /// Reads a job's file into `buf`: its first name that can still be read
    /// (mail moves on while it is read). `false` when none can.
    fn read_job(&self, dirs: &[Dir], job: &Job, buf: &mut Vec<u8>) -> Result<bool, PathError> {
        for d in &job.dirs {
            if self.read_listed(&dirs[*d], &job.name, buf)? {
                return Ok(true);
            }
        }
        // Moved on from every name listed: look once more where it goes next.
        let (Some(id), Some(last)) = (message_id(&job.name), job.dirs.last().map(|d| &dirs[*d])) else {
            return Ok(false);
        };
        let Some(agent) = &last.place.agent else { return Ok(false) };
        let next: &[Folder] = match last.place.state {
            State::Unread => &[Folder::Read, Folder::Archive],
            State::Read => &[Folder::Archive],
            _ => &[],
        };
        for folder in next {
            let dir = Dir { path: self.dir(agent, *folder), place: last.place.clone(), fd: None };
            if self.read_listed(&dir, &crate::mailbox::message_file(id), buf)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads the file `name` of a listed folder into `buf`: never through a
    /// link, never blocking, at most the read limit (`false` when it is
    /// gone, too large or not a regular file). The name is opened relative
    /// to the open folder, then looked at once on the open file, and most
    /// often read in one call: the buffer holds its size and a byte more, so
    /// that a file that grew is seen.
    fn read_listed(&self, dir: &Dir, name: &str, buf: &mut Vec<u8>) -> Result<bool, PathError> {
        let path = || dir.path.join(name);
        let mut file = match open_in(dir, name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            // A link (ELOOP) or a socket (ENXIO) put there since it was listed: passed over.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENXIO)) => return Ok(false),
            Err(e) => return Err(e).with_path(path()),
        };
        let m = file.metadata().with_path(path())?;
        if !m.file_type().is_file() || m.len() > self.read_limit {
            return Ok(false);
        }
        let size = m.len() as usize;
        buf.clear();
        buf.resize(size + 1, 0);
        let mut n = 0;
        // Up to the size it had (one call, most often), or its end if it shrank.
        while n < size {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_path(path()),
            }
        }
        if n == size + 1 {
            // It grew since it was looked at: the rest, up to the limit.
            let rest = self.read_limit.saturating_add(1).saturating_sub(n as u64);
            (&mut file).take(rest).read_to_end(buf).with_path(path())?;
            n = buf.len();
        }
        buf.truncate(n);
        Ok(buf.len() as u64 <= self.read_limit)
    }
}

/// Opens `name` in a listed folder for reading: relative to the open folder
/// when there is one (no walk of the whole path), never following a link,
/// never blocking.
fn open_in(dir: &Dir, name: &str) -> std::io::Result<fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let Some(fd) = &dir.fd else {
        use std::os::unix::fs::OpenOptionsExt;
        return fs::OpenOptions::new().read(true).custom_flags(flags).open(dir.path.join(name));
    };
    let c = std::ffi::CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated name and `fd` an open folder that outlives the call.
    let raw = unsafe { libc::openat(fd.as_raw_fd(), c.as_ptr(), flags) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor this call just opened and nothing else owns.
    Ok(unsafe { fs::File::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsx::Batch;
    use crate::mailbox::MailStore;
    use crate::message::To;

    fn msg(id: &str, from: &str, to: &[&str], thread: &str) -> Message {
        let mut m =
            Message::parse(format!(r#"{{"id":"{id}","from":"{from}","to":"x","body":"hi"}}"#).as_bytes()).unwrap();
        m.to = To(to.iter().map(|s| s.to_string()).collect());
        m.thread = thread.into();
        m
    }

    /// Routes a message as the router does: the outbox file is hard-linked
    /// into each inbox, then moved to sent.
    fn route(s: &FsMailStore, m: &Message) {
        s.send_now(&m.from, m).unwrap();
        let p = s.pending(&m.from).unwrap().into_iter().find(|p| p.show() == format!("{}.json", m.id)).unwrap();
        let crate::mailbox::Outgoing::Message(c) = s.read_pending(&p, 1 << 20).unwrap() else { panic!() };
        let mut b = Batch::new();
        for to in &m.to.0 {
            s.deliver_pending(&mut b, &p, &c, to);
        }
        s.commit(b).unwrap();
        let mut b = Batch::new();
        s.mark_sent(&mut b, &p);
        s.commit(b).unwrap();
    }

    #[test]
    fn each_message_once_with_every_place_it_is_in() {
        let d = tempfile::tempdir().unwrap();
        let s = FsMailStore::new(d.path());
        let agents: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        for a in &agents {
            s.ensure(a).unwrap();
        }
        route(&s, &msg("m1", "a", &["b", "c"], "t1"));
        route(&s, &msg("m2", "b", &["a"], "t2"));
        s.consume_now("b", "m1").unwrap();
        let mut b = Batch::new();
        assert_eq!(s.archive_read(&mut b, "b", 9, 1).unwrap(), 1);
        s.commit(b).unwrap();
        // A dead letter holding a message, and one that is only a note.
        let dead = s.dead_path();
        fs::write(dead.join("m3-poison-c.json"), msg("m3", "a", &["c"], "t1").to_bytes()).unwrap();
        fs::write(dead.join("x.json"), "{\"note\":\"nothing\"}").unwrap();
        fs::write(s.dir("c", Folder::Unread).join("junk.json"), "{").unwrap();

        let all = s.scan(&agents, true, &|_| true);
        assert!(all.unreadable.is_empty(), "{:?}", all.unreadable);
        let places = |id: &str| -> Vec<(Option<&str>, State)> {
            all.messages[id].places.iter().map(|p| (p.agent.as_deref(), p.state)).collect()
        };
        assert_eq!(all.messages.keys().collect::<Vec<_>>(), ["m1", "m2", "m3"]);
        assert_eq!(places("m1"), [(Some("a"), State::Sent), (Some("b"), State::Archived), (Some("c"), State::Unread)]);
        assert_eq!(places("m2"), [(Some("a"), State::Unread), (Some("b"), State::Sent)]);
        assert_eq!(places("m3"), [(None, State::Dead)]);
        assert_eq!(all.messages["m1"].agents(State::Unread), ["c"]);

        // `keep` passes over the files it refuses; without `dead`, no dead letter is read.
        let t1 = s.scan(&agents, false, &|b| b.windows(2).any(|w| w == b"t1"));
        assert_eq!(t1.messages.keys().collect::<Vec<_>>(), ["m1"]);
    }

    #[test]
    fn many_files_are_read_on_threads_with_the_same_result() {
        let d = tempfile::tempdir().unwrap();
        let s = FsMailStore::new(d.path());
        s.ensure("a").unwrap();
        let mut b = Batch::new();
        for i in 0..(PARALLEL_MIN * 2) {
            s.deliver(&mut b, "a", &msg(&format!("m{i:04}"), "b", &["a"], if i % 3 == 0 { "x" } else { "y" }));
        }
        s.commit(b).unwrap();
        let all = s.scan(&["a".to_string()], false, &|_| true);
        assert_eq!(all.messages.len(), PARALLEL_MIN * 2);
        let x = s.scan(&["a".to_string()], false, &|b| b.windows(3).any(|w| w == b"\"x\""));
        assert_eq!(x.messages.len(), (PARALLEL_MIN * 2).div_ceil(3));
        assert!(x.messages.values().all(|l| l.message.thread == "x"));
    }
}
