//! Snapshots: round trip, pinned header bytes, fallback past damaged or rejected files, pruning.

use std::fs;

use ledgerd::snapshot::{
    self, list_snapshots, load, load_newest, prune, write_snapshot, SnapshotError,
};

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + 5) as u8).collect()
}

#[test]
fn round_trip_aligned_body() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_snapshot(tmp.path(), 42, 0xABCD, &body(1000)).unwrap();
    assert_eq!(path, tmp.path().join("snapshots").join("00000000000000000042.snap"));
    assert_eq!(fs::metadata(&path).unwrap().len(), 64 + 1000);
    let s = load(&path).unwrap();
    assert_eq!((s.sequence, s.record_checksum), (42, 0xABCD));
    assert_eq!(&s.body[..], &body(1000)[..]);
    assert_eq!(s.body.as_ptr() as usize % 16, 0);
    // An empty body is valid.
    let p0 = write_snapshot(tmp.path(), 0, 0, &[]).unwrap();
    assert!(load(&p0).unwrap().body.is_empty());
    // No temporary files remain.
    let names: Vec<_> = fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".snap")), "{names:?}");
}

#[test]
fn a_streamed_body_makes_the_same_file_as_one_written_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = body(3 << 20);
    // Pieces of odd sizes, larger and smaller than the write buffer.
    let path = snapshot::write_snapshot_streamed(tmp.path(), 9, 0x77, |w| {
        for piece in whole.chunks(1_500_007) {
            w.write_all(&piece[..1])?;
            w.write_all(&piece[1..])?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(fs::read(&path).unwrap(), snapshot::encode(9, 0x77, &whole));
    assert_eq!(&load(&path).unwrap().body[..], &whole[..]);
    // A body writer that fails leaves no snapshot behind.
    let failed = snapshot::write_snapshot_streamed(tmp.path(), 10, 0x78, |w| {
        w.write_all(b"partial")?;
        Err(std::io::Error::other("the image could not be written"))
    });
    assert!(failed.is_err());
    assert_eq!(list_snapshots(tmp.path()).unwrap().len(), 1);
}

#[test]
fn golden_header() {
    let bytes = snapshot::encode(7, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10, b"abc");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let expected = concat!(
        "4c444752534e4150",                 // magic "LDGRSNAP"
        "0100",                             // version 1
        "4000",                             // header size 64
        "00000000",                         // reserved
        "0700000000000000",                 // sequence 7
        "0300000000000000",                 // body length 3
        "100f0e0d0c0b0a090807060504030201", // record checksum, u128 LE
        "50392f89945faf78", // xxh3-64 of the body (XXH3_64("abc") = 0x78af5f94892f3950)
        "152e7d86e2bfaa9b", // xxh3-64 of bytes 0..56
        "616263",           // body
    );
    assert_eq!(hex, expected);
}

#[test]
fn damaged_newest_falls_back_to_older() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 10, 1, &body(100)).unwrap();
    write_snapshot(tmp.path(), 20, 2, &body(200)).unwrap();
    let newest = write_snapshot(tmp.path(), 30, 3, &body(300)).unwrap();
    let seqs: Vec<u64> = list_snapshots(tmp.path()).unwrap().iter().map(|s| s.0).collect();
    assert_eq!(seqs, vec![30, 20, 10]);

    let mut bytes = fs::read(&newest).unwrap();
    bytes[64 + 150] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    let err = load(&newest).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid { .. }) && err.to_string().contains("body"));

    let (got, skipped) = load_newest(tmp.path(), |_| true);
    let got = got.unwrap();
    assert_eq!((got.sequence, got.record_checksum), (20, 2));
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, newest);

    // Rejected by the caller (e.g. its record checksum does not match the journal): older one.
    let (got, skipped) = load_newest(tmp.path(), |s| s.sequence != 20);
    assert_eq!(got.unwrap().sequence, 10);
    assert_eq!(skipped.len(), 2);
    assert!(matches!(skipped[1].1, SnapshotError::Rejected { sequence: 20, .. }));

    // A truncated file and a damaged header are skipped as well.
    fs::write(&newest, &bytes[..40]).unwrap();
    let mut hdr = fs::read(tmp.path().join("snapshots/00000000000000000020.snap")).unwrap();
    hdr[16] ^= 1;
    fs::write(tmp.path().join("snapshots/00000000000000000020.snap"), &hdr).unwrap();
    let (got, skipped) = load_newest(tmp.path(), |_| true);
    assert_eq!(got.unwrap().sequence, 10);
    assert_eq!(skipped.len(), 2);

    // None at all: nothing loads, every failure reported.
    let (got, skipped) = load_newest(tmp.path(), |_| false);
    assert!(got.is_none());
    assert_eq!(skipped.len(), 3);
}

#[test]
fn no_snapshot_directory() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(list_snapshots(tmp.path()).unwrap().is_empty());
    let (got, skipped) = load_newest(tmp.path(), |_| true);
    assert!(got.is_none() && skipped.is_empty());
    prune(tmp.path(), 2).unwrap();
}

#[test]
fn prune_keeps_newest() {
    let tmp = tempfile::tempdir().unwrap();
    for seq in [5, 1, 9, 3, 7] {
        write_snapshot(tmp.path(), seq, seq.into(), &body(10)).unwrap();
    }
    fs::write(tmp.path().join("snapshots/00000000000000000011.snap.tmp"), b"partial").unwrap();
    prune(tmp.path(), 2).unwrap();
    let seqs: Vec<u64> = list_snapshots(tmp.path()).unwrap().iter().map(|s| s.0).collect();
    assert_eq!(seqs, vec![9, 7]);
    assert!(!tmp.path().join("snapshots/00000000000000000011.snap.tmp").exists());
}
