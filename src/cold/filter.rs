//! The in-memory id filters of the cold index and their file, `DATA/index/filter`.
//!
//! Two atomic Bloom filters (fastbloom), one over transfer ids and one over failed ids, sized
//! from the configured capacities for about 1% false positives. Readers on any thread test
//! bits while the indexer sets them. Ids are hashed with xxh3 (no random seed), so a filter
//! saved by one process answers the same in the next.
//!
//! File layout (little endian): `magic "LDGRCFLT"`, `version u32`, `hashes u32`,
//! `watermark.sequence u64`, `watermark.transfers u64`, `watermark.failed u64`,
//! `transfer words u64`, `failed words u64`, then the transfer filter's words, the failed
//! filter's words, and an xxh3-64 checksum of everything before it. Written to a temporary
//! file and renamed over the old one; not fsynced: a file torn by a crash fails its checksum
//! and is rebuilt, never trusted.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use fastbloom::AtomicBloomFilter;
use xxhash_rust::xxh3::xxh3_64;

use super::Watermark;

const MAGIC: [u8; 8] = *b"LDGRCFLT";
const VERSION: u32 = 1;
/// Hash functions per id: optimal for 1% false positives.
const HASHES: u32 = 7;
/// Bits per id for 1% false positives with `HASHES` hashes (-ln(0.01) / ln(2)^2).
const BITS_PER_ID: f64 = 9.6;
/// Smallest filter, in ids: tiny capacities still get a useful filter.
const IDS_MIN: u64 = 1 << 12;
const HEADER_SIZE: usize = 8 + 4 + 4 + 3 * 8 + 2 * 8;

/// One filter over u128 ids.
#[derive(Debug)]
pub(super) struct IdFilter {
    bloom: AtomicBloomFilter,
    words: usize,
}

impl IdFilter {
    /// A filter for `capacity` ids at about 1% false positives.
    pub(super) fn with_capacity(capacity: u64) -> IdFilter {
        let bits = (capacity.max(IDS_MIN) as f64 * BITS_PER_ID).ceil() as usize;
        let words = bits.div_ceil(64);
        IdFilter::from_words(vec![0; words])
    }

    fn from_words(words: Vec<u64>) -> IdFilter {
        let n = words.len();
        IdFilter { bloom: AtomicBloomFilter::from_vec(words).hashes(HASHES), words: n }
    }

    #[inline]
    fn hash(id: u128) -> u64 {
        xxh3_64(&id.to_le_bytes())
    }

    #[inline]
    pub(super) fn insert(&self, id: u128) {
        self.bloom.insert_hash(Self::hash(id));
    }

    #[inline]
    pub(super) fn contains(&self, id: u128) -> bool {
        self.bloom.contains_hash(Self::hash(id))
    }

    fn write_words(&self, out: &mut Vec<u8>) {
        for word in self.bloom.iter() {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
}

/// Writes both filters, covering everything indexed up to `watermark`, to `path` atomically.
/// The caller guarantees that every id of records up to `watermark` was inserted before.
pub(super) fn save(
    path: &Path,
    watermark: Watermark,
    transfers: &IdFilter,
    failed: &IdFilter,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(HEADER_SIZE + 8 * (transfers.words + failed.words) + 8);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&HASHES.to_le_bytes());
    out.extend_from_slice(&watermark.sequence.to_le_bytes());
    out.extend_from_slice(&watermark.transfers.to_le_bytes());
    out.extend_from_slice(&watermark.failed.to_le_bytes());
    out.extend_from_slice(&(transfers.words as u64).to_le_bytes());
    out.extend_from_slice(&(failed.words as u64).to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_SIZE);
    transfers.write_words(&mut out);
    failed.write_words(&mut out);
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    crate::journal::private_file(&file)?;
    file.write_all(&out)?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Reads the filters saved at `path`. `Err` names what is wrong (missing, damaged, another
/// version, or sized for other capacities than `transfers_max` / `failed_ids_max`).
pub(super) fn load(
    path: &Path,
    transfers_max: u64,
    failed_ids_max: u64,
) -> Result<(Watermark, IdFilter, IdFilter), String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < HEADER_SIZE + 8 {
        return Err(format!("{}: {} bytes, shorter than a header", path.display(), bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let le64 = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let le32 = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    if u64::from_le_bytes(sum.try_into().expect("8 bytes")) != xxh3_64(body) {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    if body[..8] != MAGIC || le32(8) != VERSION || le32(12) != HASHES {
        return Err(format!("{}: unknown magic, version or hash count", path.display()));
    }
    // The file does not keep the watermark's timestamp: only its sequence is compared.
    let watermark =
        Watermark { sequence: le64(16), transfers: le64(24), failed: le64(32), timestamp: 0 };
    let (t_words, f_words) = (le64(40) as usize, le64(48) as usize);
    let expected = (
        IdFilter::with_capacity(transfers_max).words,
        IdFilter::with_capacity(failed_ids_max).words,
    );
    if (t_words, f_words) != expected {
        return Err(format!(
            "{}: sized for other capacities ({t_words} and {f_words} words, {} and {} wanted)",
            path.display(),
            expected.0,
            expected.1
        ));
    }
    if body.len() != HEADER_SIZE + 8 * (t_words + f_words) {
        return Err(format!("{}: length does not match its header", path.display()));
    }
    let words = |from: usize, n: usize| -> Vec<u64> {
        body[from..from + 8 * n]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect()
    };
    let transfers = IdFilter::from_words(words(HEADER_SIZE, t_words));
    let failed = IdFilter::from_words(words(HEADER_SIZE + 8 * t_words, f_words));
    Ok((watermark, transfers, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_filters_load_with_the_same_answers_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("filter");
        let (t, f) = (IdFilter::with_capacity(10_000), IdFilter::with_capacity(100));
        for id in 0..5_000u128 {
            t.insert(id * 7 + 3);
        }
        f.insert(u128::MAX - 1);
        let wm = Watermark { sequence: 9, transfers: 5_000, failed: 1, timestamp: 0 };
        save(&path, wm, &t, &f).unwrap();
        let (wm2, t2, f2) = load(&path, 10_000, 100).unwrap();
        assert_eq!(wm2, wm);
        assert!((0..5_000u128).all(|id| t2.contains(id * 7 + 3)));
        assert!(f2.contains(u128::MAX - 1));
        let false_positives = (1..=10_000u128).filter(|id| t2.contains(id << 64)).count();
        assert!(false_positives < 300, "{false_positives} false positives in 10000");
        assert!(load(&path, 20_000, 100).is_err(), "other capacities");
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_SIZE + 3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path, 10_000, 100).unwrap_err().contains("checksum"));
        fs::remove_file(&path).unwrap();
        assert!(load(&path, 10_000, 100).is_err());
    }
}
