//! Snapshots: checksummed images of the state at a journal sequence, in `DIR/snapshots/`.
//!
//! Knows bytes, a sequence number and the journal record checksum at that sequence (which
//! proves the snapshot belongs to this journal), never accounts. Files are written atomically:
//! temporary file, fsync, rename, fsync of the directory. journal-format.md §7 gives the layout.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

/// Name of the snapshot directory inside the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
/// First 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"LDGRSNAP";
/// Snapshot format version.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Size of the header; the body starts right after it, 16-byte aligned.
pub const SNAPSHOT_HEADER_SIZE: usize = 64;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot body: the file mapped read-only (the page cache holds it, not the process's own
/// memory), seen from the body's first byte. The body starts at offset 64 of a page-aligned
/// mapping, so it is 16-byte aligned and rkyv archives can be accessed in place.
pub struct SnapshotBody {
    map: Option<memmap2::Mmap>,
}

impl std::ops::Deref for SnapshotBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[SNAPSHOT_HEADER_SIZE..],
            None => &[],
        }
    }
}

impl std::fmt::Debug for SnapshotBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotBody({} bytes)", self.len())
    }
}

/// Errors of `load`.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("snapshot {path} rejected by the caller (sequence {sequence})")]
    Rejected { path: PathBuf, sequence: u64 },
}

/// A verified snapshot.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub path: PathBuf,
    /// Journal sequence the image reflects (every record up to and including it applied).
    pub sequence: u64,
    /// `Journal::checksum_of(sequence)` when the snapshot was taken.
    pub record_checksum: u128,
    pub body: SnapshotBody,
}

/// The 64-byte header: see journal-format.md §7.
fn encode_header(
    sequence: u64,
    record_checksum: u128,
    body_len: u64,
    body_checksum: u64,
) -> [u8; SNAPSHOT_HEADER_SIZE] {
    let mut h = [0u8; SNAPSHOT_HEADER_SIZE];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..10].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(SNAPSHOT_HEADER_SIZE as u16).to_le_bytes());
    // 12..16 reserved, zero.
    h[16..24].copy_from_slice(&sequence.to_le_bytes());
    h[24..32].copy_from_slice(&body_len.to_le_bytes());
    h[32..48].copy_from_slice(&record_checksum.to_le_bytes());
    // Body checksum: the low 64 bits of xxh3-128 would do; a separate xxh3-64 keeps it simple.
    h[48..56].copy_from_slice(&body_checksum.to_le_bytes());
    let header_sum = xxh3_64(&h[0..56]);
    h[56..64].copy_from_slice(&header_sum.to_le_bytes());
    h
}

/// Counts and checksums what passes through it on the way to `inner`.
struct Summing<W> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes a whole snapshot file (header and body) into memory. Used by `write_snapshot` and
/// by tests that pin the format.
pub fn encode(sequence: u64, record_checksum: u128, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_SIZE + body.len());
    out.extend_from_slice(&encode_header(
        sequence,
        record_checksum,
        body.len() as u64,
        xxh3_64(body),
    ));
    out.extend_from_slice(body);
    out
}

/// `DIR/snapshots/{sequence:020}.snap`.
pub fn snapshot_path(data_dir: &Path, sequence: u64) -> PathBuf {
    data_dir.join(SNAPSHOT_DIR).join(format!("{sequence:020}{SUFFIX}"))
}

/// Writes `DIR/snapshots/{sequence:020}.snap` atomically and durably; returns its path.
pub fn write_snapshot(
    data_dir: &Path,
    sequence: u64,
    record_checksum: u128,
    body: &[u8],
) -> io::Result<PathBuf> {
    write_snapshot_streamed(data_dir, sequence, record_checksum, |w| w.write_all(body))
}

/// As [`write_snapshot`], with the body written by `write_body` straight into the file (through
/// a buffer), counted and checksummed on the way: no copy of the whole body is held in memory.
/// The header, which needs the body's length and checksum, is written last, at offset 0.
pub fn write_snapshot_streamed(
    data_dir: &Path,
    sequence: u64,
    record_checksum: u128,
    write_body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<PathBuf> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let dir = data_dir.join(SNAPSHOT_DIR);
    if crate::journal::private_dir(&dir)? {
        File::open(data_dir)?.sync_all()?;
    }
    let path = snapshot_path(data_dir, sequence);
    let tmp = dir.join(format!("{sequence:020}{TEMP_SUFFIX}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::journal::FILE_MODE)
        .open(&tmp)?;
    crate::journal::private_file(&f)?;
    // A zero header first (a file left by a crash here never loads: its magic is wrong).
    f.write_all(&[0u8; SNAPSHOT_HEADER_SIZE])?;
    let mut body = Summing {
        inner: io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, &mut f),
        hasher: xxhash_rust::xxh3::Xxh3::new(),
        len: 0,
    };
    write_body(&mut body)?;
    body.flush()?;
    let (len, checksum) = (body.len, body.hasher.digest());
    drop(body);
    f.write_all_at(&encode_header(sequence, record_checksum, len, checksum), 0)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    File::open(&dir)?.sync_all()?;
    Ok(path)
}

/// Buffer between a streamed body and its file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Snapshot files in `DIR/snapshots`, newest (highest sequence) first. A missing directory
/// means no snapshots.
pub fn list_snapshots(data_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = data_dir.join(SNAPSHOT_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else { continue };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(seq) = digits.parse::<u64>() {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Reads and verifies one snapshot file (header checksum, length, body checksum).
pub fn load(path: &Path) -> Result<LoadedSnapshot, SnapshotError> {
    let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    let invalid = |reason: String| SnapshotError::Invalid { path: path.to_path_buf(), reason };
    let mut f = File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut h = [0u8; SNAPSHOT_HEADER_SIZE];
    if file_len < SNAPSHOT_HEADER_SIZE as u64 {
        return Err(invalid(format!("file is {file_len} bytes, shorter than the header")));
    }
    f.read_exact(&mut h).map_err(io)?;
    if h[0..8] != SNAPSHOT_MAGIC {
        return Err(invalid("bad magic".into()));
    }
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    if u64_at(56) != xxh3_64(&h[0..56]) {
        return Err(invalid("header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != SNAPSHOT_VERSION {
        return Err(invalid(format!("unsupported version {version}")));
    }
    let sequence = u64_at(16);
    let body_len = u64_at(24);
    let record_checksum = u128::from_le_bytes(h[32..48].try_into().expect("16 bytes"));
    if file_len != SNAPSHOT_HEADER_SIZE as u64 + body_len {
        return Err(invalid(format!(
            "file is {file_len} bytes, header says {} ({} + body {body_len})",
            SNAPSHOT_HEADER_SIZE as u64 + body_len,
            SNAPSHOT_HEADER_SIZE
        )));
    }
    usize::try_from(file_len).map_err(|_| invalid("file too large to map".into()))?;
    let body = if body_len == 0 {
        SnapshotBody { map: None }
    } else {
        // SAFETY: snapshot files are written once under a temporary name and renamed into
        // place, never modified after; removing one (pruning) does not affect a mapping.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        if map.len() as u64 != file_len {
            return Err(invalid(format!("file changed size while being mapped ({})", map.len())));
        }
        // Read once, front to back (the checksum), then accessed part by part.
        let _ = map.advise(memmap2::Advice::Sequential);
        SnapshotBody { map: Some(map) }
    };
    debug_assert!((body.as_ptr() as usize).is_multiple_of(16) || body.is_empty());
    let computed = xxh3_64(&body);
    if computed != u64_at(48) {
        return Err(invalid(format!(
            "body checksum mismatch (stored {:#018x}, computed {computed:#018x})",
            u64_at(48)
        )));
    }
    Ok(LoadedSnapshot { path: path.to_path_buf(), sequence, record_checksum, body })
}

/// The newest snapshot that loads and that `accept` takes (e.g. its `record_checksum` matches
/// the journal), falling back to older ones; also every snapshot passed over and why.
pub fn load_newest(
    data_dir: &Path,
    mut accept: impl FnMut(&LoadedSnapshot) -> bool,
) -> (Option<LoadedSnapshot>, Vec<(PathBuf, SnapshotError)>) {
    let mut skipped = Vec::new();
    let list = match list_snapshots(data_dir) {
        Ok(l) => l,
        Err(source) => {
            let path = data_dir.join(SNAPSHOT_DIR);
            skipped.push((path.clone(), SnapshotError::Io { path, source }));
            return (None, skipped);
        }
    };
    for (sequence, path) in list {
        match load(&path) {
            Ok(s) if accept(&s) => return (Some(s), skipped),
            Ok(_) => {
                skipped.push((path.clone(), SnapshotError::Rejected { path, sequence }));
            }
            Err(e) => skipped.push((path, e)),
        }
    }
    (None, skipped)
}

/// Keeps the `keep` newest snapshots and removes older ones and leftover temporary files.
pub fn prune(data_dir: &Path, keep: usize) -> io::Result<()> {
    let dir = data_dir.join(SNAPSHOT_DIR);
    if !dir.exists() {
        return Ok(());
    }
    let mut removed = false;
    for (_, path) in list_snapshots(data_dir)?.into_iter().skip(keep) {
        fs::remove_file(path)?;
        removed = true;
    }
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(TEMP_SUFFIX)) {
            fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        File::open(&dir)?.sync_all()?;
    }
    Ok(())
}
