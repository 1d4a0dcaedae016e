//! Segment files on disk: names, listing, creation (preallocate, header, fsync, rename, fsync
//! the directory) and the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::format::SegmentHeader;

/// Name of the journal directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// Name of the lock file inside the journal directory.
pub const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".seg";
const TEMP_SUFFIX: &str = ".seg.tmp";
const INDEX_DIGITS: usize = 20;

/// `DIR/journal/{index:020}.seg`.
pub fn segment_path(journal_dir: &Path, index: u64) -> PathBuf {
    journal_dir.join(format!("{index:020}{SEGMENT_SUFFIX}"))
}

fn temp_path(journal_dir: &Path, index: u64) -> PathBuf {
    journal_dir.join(format!("{index:020}{TEMP_SUFFIX}"))
}

/// Segment files in `journal_dir`, sorted by index. Other files are ignored.
pub fn list_segments(journal_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(journal_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(SEGMENT_SUFFIX) else { continue };
        if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(index) = digits.parse::<u64>() {
            out.push((index, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(i, _)| *i);
    Ok(out)
}

/// Removes segment files left half-created by a crash (`*.seg.tmp`).
pub fn remove_temp_files(journal_dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(journal_dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(TEMP_SUFFIX)) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Mode of every file the daemon writes in its data directory: the owner's only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the data directory and its subdirectories.
pub const DIR_MODE: u32 = 0o700;

/// Sets a file the daemon created to `FILE_MODE`, whatever the umask made of it.
pub fn private_file(file: &File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
}

/// Creates `dir` (and missing parents) if needed and sets it to `DIR_MODE`; returns whether
/// it was created.
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    let created = !dir.exists();
    if created {
        fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    }
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(created)
}

/// Makes directory entries (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Allocates `len` bytes of real blocks so that writes through a map never hit ENOSPC (SIGBUS).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    // SAFETY: plain syscall on an owned, open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Creates segment `header.index`: temp file, preallocate, header, fsync, rename, fsync dir.
/// Returns the open file (read + write).
pub fn create_segment(journal_dir: &Path, header: &SegmentHeader) -> io::Result<(PathBuf, File)> {
    let tmp = temp_path(journal_dir, header.index);
    let path = segment_path(journal_dir, header.index);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    private_file(&file)?;
    preallocate(&file, header.segment_size)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    fsync_dir(journal_dir)?;
    Ok((path, file))
}

/// Writes `a`, `b` and `c`, in order, at `offset` with `pwritev(2)`, retrying short writes.
/// No allocation: the hot append path calls it once per record.
pub fn write_all_at3(file: &File, a: &[u8], b: &[u8], c: &[u8], mut offset: u64) -> io::Result<()> {
    let mut bufs: [&[u8]; 3] = [a, b, c];
    let mut first = 0;
    loop {
        while first < 3 && bufs[first].is_empty() {
            first += 1;
        }
        if first == 3 {
            return Ok(());
        }
        let iov: [libc::iovec; 3] = std::array::from_fn(|k| libc::iovec {
            iov_base: bufs[k].as_ptr() as *mut libc::c_void,
            iov_len: bufs[k].len(),
        });
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: every iovec points into a live, borrowed slice of its stated length.
        let n = unsafe {
            libc::pwritev(file.as_raw_fd(), iov[first..].as_ptr(), (3 - first) as i32, off)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        let mut written = n as usize;
        offset += written as u64;
        while written > 0 {
            let take = written.min(bufs[first].len());
            bufs[first] = &bufs[first][take..];
            written -= take;
            if bufs[first].is_empty() {
                first += 1;
            }
        }
    }
}

/// An exclusive `flock` on `DIR/journal/LOCK`, held for the life of the returned file.
pub fn lock(journal_dir: &Path) -> io::Result<(PathBuf, File)> {
    let path = journal_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)?;
    private_file(&file)?;
    // SAFETY: plain syscall on an owned, open descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((path, file))
}
