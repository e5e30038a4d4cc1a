//! Folders held open: the file tools' operations named relative to a folder's
//! descriptor (`openat`, `mkdirat`, `renameat`, `fstatat`), never by a path
//! that is walked again.
//!
//! A path checked once can change before it is used: a program the agent
//! started earlier may swap a folder on it for a symbolic link to somewhere
//! else. Once a [`Dir`] is open it stays the folder that was checked, and
//! every name given to it is one component opened without following a link,
//! so nothing done through it can leave it.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::fsx::EntryKind;

/// An open folder.
#[derive(Debug)]
pub(crate) struct Dir(OwnedFd);

/// What `fstatat` says of a name, without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `None` for a regular file, else what it is.
    pub kind: Option<EntryKind>,
    /// Its size in bytes.
    pub len: u64,
}

impl Stat {
    /// Whether it is a folder.
    pub fn is_dir(&self) -> bool {
        self.kind == Some(EntryKind::Directory)
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.kind.is_none()
    }

    fn of(st: &libc::stat) -> Stat {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFDIR => Some(EntryKind::Directory),
            libc::S_IFLNK => Some(EntryKind::Symlink),
            libc::S_IFIFO => Some(EntryKind::Fifo),
            libc::S_IFSOCK => Some(EntryKind::Socket),
            libc::S_IFCHR => Some(EntryKind::CharDevice),
            libc::S_IFBLK => Some(EntryKind::BlockDevice),
            _ => Some(EntryKind::Other),
        };
        Stat { kind, len: u64::try_from(st.st_size).unwrap_or(0) }
    }
}

/// `name` as a C string: one path component, never empty, `.`, `..` or with a `/`.
fn component(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a single file name"));
    }
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the name contains a NUL byte"))
}

/// The result of a libc call that returns -1 on error.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The flags of every open: no link followed, not inherited by children.
const BASE: libc::c_int = libc::O_NOFOLLOW | libc::O_CLOEXEC;

impl Dir {
    /// Opens the folder at `path` (its last component must not be a link).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
        // SAFETY: `c` is a valid C string; the descriptor returned is owned here.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | BASE) })?;
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens the folder `name` in this one. A link there is not followed: it
    /// fails (`ELOOP` or `ENOTDIR`).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = component(name)?;
        // SAFETY: a valid descriptor and C string; the result is owned here.
        let fd =
            check(unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | BASE) })?;
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens the file `name` in this folder with `flags` (plus `O_NOFOLLOW`
    /// and `O_CLOEXEC`), creating it with mode 0666 (less the umask) when
    /// `flags` has `O_CREAT`.
    pub fn open_file(&self, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
        let c = component(name)?;
        let mode: libc::c_uint = 0o666;
        // SAFETY: a valid descriptor and C string; the result is owned here.
        let fd = check(unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags | BASE, mode) })?;
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// What `name` in this folder is, without following a link.
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        let c = component(name)?;
        // SAFETY: `stat` is plain data, filled by fstatat before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, C string and out pointer.
        check(unsafe { libc::fstatat(self.0.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(Stat::of(&st))
    }

    /// Creates the folder `name` in this one (mode 0777 less the umask).
    pub fn mkdir(&self, name: &OsStr) -> io::Result<()> {
        let c = component(name)?;
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::mkdirat(self.0.as_raw_fd(), c.as_ptr(), 0o777) }).map(drop)
    }

    /// Renames `from` onto `to`, both in this folder (a link at `to` is
    /// replaced, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        let fd = self.0.as_raw_fd();
        // SAFETY: a valid descriptor and C strings.
        check(unsafe { libc::renameat(fd, f.as_ptr(), fd, t.as_ptr()) }).map(drop)
    }

    /// Removes the file (or link) `name` from this folder.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = component(name)?;
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// The names in this folder (without `.` and `..`), in no order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // fdopendir takes the descriptor it is given: give it a copy of ours.
        let copy = self.0.try_clone()?;
        // SAFETY: `copy` is a valid descriptor, handed over to the stream on success.
        let stream = unsafe { libc::fdopendir(copy.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(copy);
        // A copy shares its offset: start from the first entry.
        // SAFETY: `stream` is a valid, open directory stream.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        loop {
            // SAFETY: `stream` is valid; the entry it returns is read before the next call.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `d_name` is a NUL-terminated name inside the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        // SAFETY: `stream` is valid and closed once (it closes the copied descriptor).
        unsafe { libc::closedir(stream) };
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    #[test]
    fn names_are_single_components() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        for bad in ["", ".", "..", "a/b", "/etc"] {
            assert_eq!(d.stat(OsStr::new(bad)).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn links_are_never_followed_and_the_folder_stays_the_one_opened() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("f"), "secret").unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        symlink(&out, root.join("l")).unwrap();
        symlink(out.join("f"), root.join("lf")).unwrap();
        let d = Dir::open(&root).unwrap();
        assert!(d.open_dir(OsStr::new("l")).is_err());
        assert!(d.open_file(OsStr::new("lf"), libc::O_RDONLY).is_err());
        assert_eq!(d.stat(OsStr::new("l")).unwrap().kind, Some(EntryKind::Symlink));
        // The folder opened is kept even when its name is moved and a link put there.
        let sub = d.open_dir(OsStr::new("d")).unwrap();
        std::fs::rename(root.join("d"), root.join("moved")).unwrap();
        symlink(&out, root.join("d")).unwrap();
        sub.open_file(OsStr::new("new"), libc::O_WRONLY | libc::O_CREAT).unwrap().write_all(b"x").unwrap();
        assert!(root.join("moved/new").exists() && !out.join("new").exists());
        let mut names = sub.names().unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("new")]);
        let mut s = String::new();
        sub.open_file(OsStr::new("new"), libc::O_RDONLY).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
        sub.rename(OsStr::new("new"), OsStr::new("renamed")).unwrap();
        assert_eq!(sub.stat(OsStr::new("renamed")).unwrap(), Stat { kind: None, len: 1 });
        sub.unlink(OsStr::new("renamed")).unwrap();
        sub.mkdir(OsStr::new("m")).unwrap();
        assert!(sub.stat(OsStr::new("m")).unwrap().is_dir());
        // Listing twice gives the same names (the copy's offset is rewound).
        assert_eq!(sub.names().unwrap(), sub.names().unwrap());
    }
}
