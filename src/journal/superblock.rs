//! `DATA/superblock`: the durable record of what the journal must hold.
//!
//! Written when the ledger is created, after every segment roll-over and by a confirmed repair;
//! never on the per-request path. It names the ledger (a random id that every segment header
//! repeats), the first segment and sequence of the journal, the newest segment created and a
//! sequence that was durable when it was written, so that a start can tell a complete journal
//! from one that lost its directory, its oldest or newest segments, or acknowledged records.
//! Two copies (offsets 0 and 4096), written alternately and each checksummed, so a torn write
//! of one leaves the other; the valid copy with the higher generation wins. The reserved bytes
//! leave room for what later versions record here (for example disk indexes).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::format::{le_u128, le_u16, le_u64, FORMAT_VERSION};

/// File name inside the data directory.
pub const SUPERBLOCK_FILE: &str = "superblock";
/// First 8 bytes of each copy.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"LDGRSUPR";
/// Bytes of one copy.
pub const SUPERBLOCK_SIZE: usize = 128;
/// Copies in the file, one per 4 KiB block.
pub const SUPERBLOCK_COPIES: usize = 2;
const COPY_STRIDE: u64 = 4096;

// Field offsets within a copy.
const MAGIC: usize = 0;
const VERSION: usize = 8;
const SIZE: usize = 10;
const RESERVED: usize = 12;
const GENERATION: usize = 16;
const LEDGER_ID: usize = 24;
const FIRST_SEGMENT: usize = 40;
const FIRST_SEQUENCE: usize = 48;
const FIRST_CHAIN_IN: usize = 56;
const LAST_SEGMENT: usize = 72;
const DURABLE_SEQUENCE: usize = 80;
const DURABLE_CHECKSUM: usize = 88;
const RESERVED_2: usize = 104;
const CHECKSUM: usize = 120;
const _: () = assert!(CHECKSUM + 8 == SUPERBLOCK_SIZE);

/// What the journal must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Write number: 1 for the first, +1 per write.
    pub generation: u64,
    /// Random id of this ledger, repeated in every segment header.
    pub ledger_id: u128,
    /// Index of the oldest segment of the journal.
    pub first_segment_index: u64,
    /// Sequence of the first record of that segment.
    pub first_sequence: u64,
    /// Checksum of record `first_sequence - 1` (0 for a journal starting at 1).
    pub first_chain_in: u128,
    /// Index of the newest segment created.
    pub last_segment_index: u64,
    /// A sequence that was durable when this was written (records up to it must exist).
    pub durable_sequence: u64,
    /// Checksum of record `durable_sequence` (0 for sequence 0).
    pub durable_checksum: u128,
}

impl Superblock {
    /// A new ledger: a fresh random id, one segment (0), nothing durable yet.
    pub fn new(ledger_id: u128) -> Superblock {
        Superblock {
            generation: 0,
            ledger_id,
            first_segment_index: 0,
            first_sequence: 1,
            first_chain_in: 0,
            last_segment_index: 0,
            durable_sequence: 0,
            durable_checksum: 0,
        }
    }

    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[MAGIC..VERSION].copy_from_slice(&SUPERBLOCK_MAGIC);
        b[VERSION..SIZE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[SIZE..RESERVED].copy_from_slice(&(SUPERBLOCK_SIZE as u16).to_le_bytes());
        b[GENERATION..LEDGER_ID].copy_from_slice(&self.generation.to_le_bytes());
        b[LEDGER_ID..FIRST_SEGMENT].copy_from_slice(&self.ledger_id.to_le_bytes());
        b[FIRST_SEGMENT..FIRST_SEQUENCE].copy_from_slice(&self.first_segment_index.to_le_bytes());
        b[FIRST_SEQUENCE..FIRST_CHAIN_IN].copy_from_slice(&self.first_sequence.to_le_bytes());
        b[FIRST_CHAIN_IN..LAST_SEGMENT].copy_from_slice(&self.first_chain_in.to_le_bytes());
        b[LAST_SEGMENT..DURABLE_SEQUENCE].copy_from_slice(&self.last_segment_index.to_le_bytes());
        b[DURABLE_SEQUENCE..DURABLE_CHECKSUM].copy_from_slice(&self.durable_sequence.to_le_bytes());
        b[DURABLE_CHECKSUM..RESERVED_2].copy_from_slice(&self.durable_checksum.to_le_bytes());
        let sum = xxh3_64(&b[..CHECKSUM]);
        b[CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, String> {
        let b = b.get(..SUPERBLOCK_SIZE).ok_or("superblock copy cut short")?;
        if b[MAGIC..VERSION] != SUPERBLOCK_MAGIC {
            return Err("bad superblock magic".into());
        }
        if le_u64(&b[CHECKSUM..]) != xxh3_64(&b[..CHECKSUM]) {
            return Err("superblock checksum mismatch".into());
        }
        let version = le_u16(&b[VERSION..SIZE]);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported superblock version {version}"));
        }
        if usize::from(le_u16(&b[SIZE..RESERVED])) != SUPERBLOCK_SIZE
            || b[RESERVED..GENERATION].iter().any(|&x| x != 0)
            || b[RESERVED_2..CHECKSUM].iter().any(|&x| x != 0)
        {
            return Err("unsupported superblock layout".into());
        }
        Ok(Superblock {
            generation: le_u64(&b[GENERATION..LEDGER_ID]),
            ledger_id: le_u128(&b[LEDGER_ID..FIRST_SEGMENT]),
            first_segment_index: le_u64(&b[FIRST_SEGMENT..FIRST_SEQUENCE]),
            first_sequence: le_u64(&b[FIRST_SEQUENCE..FIRST_CHAIN_IN]),
            first_chain_in: le_u128(&b[FIRST_CHAIN_IN..LAST_SEGMENT]),
            last_segment_index: le_u64(&b[LAST_SEGMENT..DURABLE_SEQUENCE]),
            durable_sequence: le_u64(&b[DURABLE_SEQUENCE..DURABLE_CHECKSUM]),
            durable_checksum: le_u128(&b[DURABLE_CHECKSUM..RESERVED_2]),
        })
    }
}

/// `DATA/superblock`.
pub fn superblock_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SUPERBLOCK_FILE)
}

/// Reads the superblock: `Ok(None)` when the file does not exist, `Err` (with the reason)
/// when it exists but no copy is valid.
pub fn read(data_dir: &Path) -> io::Result<Option<Result<Superblock, String>>> {
    let path = superblock_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<Superblock> = None;
    let mut reasons = Vec::new();
    for copy in 0..SUPERBLOCK_COPIES {
        let at = copy * COPY_STRIDE as usize;
        match Superblock::decode(bytes.get(at..).unwrap_or(&[])) {
            Ok(sb) if best.is_none_or(|b| sb.generation > b.generation) => best = Some(sb),
            Ok(_) => {}
            Err(reason) => reasons.push(format!("copy {copy}: {reason}")),
        }
    }
    Ok(Some(best.ok_or_else(|| {
        format!("superblock {} has no valid copy ({})", path.display(), reasons.join("; "))
    })))
}

/// Writes `sb` with the next generation into the copy that generation selects, and makes it
/// durable (`fdatasync`; on creation also the data directory). Returns the written value.
pub fn write(data_dir: &Path, sb: &Superblock) -> io::Result<Superblock> {
    let path = superblock_path(data_dir);
    let created = !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    if created {
        super::segment::private_file(&file)?;
        file.set_len(COPY_STRIDE * SUPERBLOCK_COPIES as u64)?;
    }
    let next = Superblock { generation: sb.generation + 1, ..*sb };
    let copy = next.generation % SUPERBLOCK_COPIES as u64;
    file.write_all_at(&next.encode(), copy * COPY_STRIDE)?;
    file.sync_data()?;
    if created {
        File::open(data_dir)?.sync_all()?;
    }
    Ok(next)
}

/// A random 128-bit ledger id from the kernel.
pub fn new_ledger_id() -> io::Result<u128> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer it is handed.
        let n = unsafe {
            libc::getrandom(
                bytes[filled..].as_mut_ptr() as *mut libc::c_void,
                bytes.len() - filled,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(u128::from_le_bytes(bytes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_newer_copy_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let mut sb = Superblock::new(42);
        sb = write(dir.path(), &sb).unwrap();
        assert_eq!(sb.generation, 1);
        sb.durable_sequence = 9;
        sb = write(dir.path(), &sb).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), Ok(sb));
        // Tear the newer copy: the older one is read.
        let path = superblock_path(dir.path());
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let copy = sb.generation % 2;
        f.write_all_at(&[0xff; 8], copy * COPY_STRIDE + 80).unwrap();
        let older = read(dir.path()).unwrap().unwrap().unwrap();
        assert_eq!((older.generation, older.durable_sequence), (1, 0));
        // Both torn: refused with a reason.
        f.write_all_at(&[0xff; 8], (1 - copy) * COPY_STRIDE + 80).unwrap();
        assert!(read(dir.path()).unwrap().unwrap().unwrap_err().contains("no valid copy"));
    }
}
