//! Snapshot images of the whole state, and the state hash.
//!
//! Image bytes: a 16-byte header (`magic@0 [u8; 8] = "LDGIMAGE"`, `version@8 u32 LE`,
//! `body_len@12 u32 LE`), then the rkyv archive of [`Image`] (root at its end). The body is
//! validated with bytecheck and then checked for consistency before the state is rebuilt.
//! Id indexes and per-account transfer lists are rebuilt from the record vectors (they are a
//! pure function of them), so the image stays small and cannot disagree with itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::digest::StateSums;
use super::{
    AccountExt, BatchEvent, Capacity, StateMachine, TransferState, MARK_CREATION_EVICTED,
    MARK_FINISH_EVICTED, SIDE_CREDIT, SIDE_DEBIT, WARM_AHEAD_EVENTS,
};
use crate::event::FailedId;
use crate::types::{
    Account, AccountBalance, AccountFlags, AccountLimit, ResultCode, Transfer, TransferFlags,
};

/// Version of the image body layout; bump on any change to [`Part`] or the framing.
/// Version 1 was one archive of the whole state, which rkyv's 32-bit relative pointers cap
/// at 2 GiB (about 16M transfers); version 2 had no eviction (no marks, finished queue,
/// failed-id timestamps or evicted sums). Neither is read any more: recovery then uses an
/// older snapshot or replays the journal.
pub const IMAGE_VERSION: u32 = 3;

const IMAGE_MAGIC: [u8; 8] = *b"LDGIMAGE";
/// `magic@0 [u8; 8]`, `version@8 u32 LE`, `parts@12 u32 LE`.
const IMAGE_HEADER_SIZE: usize = 16;
/// `len@0 u64 LE` (archive bytes, without padding), 8 reserved zero bytes.
const PART_HEADER_SIZE: usize = 16;
/// Archives start 16-byte aligned: each is zero-padded to a multiple of it.
const PART_ALIGN: usize = 16;
/// How many accounts ahead loading prefetches the id index.
const IMAGE_PREFETCH_AHEAD: usize = 16;
/// Most records in one part: 1M transfers make a 128 MiB archive, far inside rkyv's 2 GiB.
#[cfg(not(test))]
const PART_RECORDS_MAX: usize = 1 << 20;
/// Unit tests split every image into many parts.
#[cfg(test)]
pub(super) const PART_RECORDS_MAX: usize = 3;

/// Why image bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("image magic is {0:02x?}, not LDGIMAGE")]
    Magic([u8; 8]),
    #[error("image version {found}, this build reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("image part {part} at byte {offset}: {reason}")]
    Length { part: u32, offset: usize, reason: String },
    #[error("image part {part} failed validation: {reason}")]
    Archive { part: u32, reason: String },
    #[error("image is inconsistent: {0}")]
    Inconsistent(String),
}

/// Part of the balance history of one `history` account (long histories span several).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct HistoryImage {
    account: u32,
    rows: Vec<AccountBalance>,
    sides: Vec<u8>,
}

/// A pending transfer's deadline, or a finished pending transfer's change (`at` is then its
/// timestamp); `transfer` is the position in the image's transfers.
#[derive(Clone, Copy, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ExpiryImage {
    expires_at_ns: u64,
    transfer: u32,
}

/// One archive of the image. The state is written as a sequence of parts, each holding at
/// most [`PART_RECORDS_MAX`] records, in this order (kinds never go back): `Meta` once, then
/// accounts, limits, history, transfers, expiries and failed ids, each in canonical
/// (insertion) order. `Meta` holds the totals the other parts must add up to, so a body cut
/// at a part boundary is refused, not loaded as a smaller ledger.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum Part {
    Meta(Totals),
    Accounts(Vec<Account>),
    /// Limits that were set, one per account at most.
    Limits(Vec<AccountLimit>),
    History(HistoryImage),
    /// Transfers in memory with the [`TransferState`] of each in its low 4 bits and its
    /// eviction marks (`MARK_*`) above: first those whose creation was evicted, then the others
    /// in creation order (the order of the account lists).
    Transfers(Vec<Transfer>, Vec<u8>),
    /// Live expiry entries, in expiry order.
    Expiries(Vec<ExpiryImage>),
    /// Finished pending transfers whose change is not evicted yet, in timestamp order.
    Finished(Vec<ExpiryImage>),
    /// Failed ids in memory, in the order they failed, with the timestamp of each.
    Failed(Vec<FailedId>, Vec<u64>),
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
struct Totals {
    clock_ns: u64,
    accounts: u64,
    limits: u64,
    history_rows: u64,
    /// Transfers in the image.
    transfers: u64,
    expiries: u64,
    finished: u64,
    /// Failed ids in the image.
    failed: u64,
    /// Transfers and failed ids ever, in the image or evicted.
    transfers_created: u64,
    failed_remembered: u64,
    evicted_through_ns: u64,
    /// State-hash terms of the evicted transfers and failed ids.
    evicted_transfers_sum: u128,
    evicted_failed_sum: u128,
}

impl ArchivedPart {
    /// Position of the kind in the image order.
    fn rank(&self) -> u8 {
        match self {
            ArchivedPart::Meta(_) => 0,
            ArchivedPart::Accounts(_) => 1,
            ArchivedPart::Limits(_) => 2,
            ArchivedPart::History(_) => 3,
            ArchivedPart::Transfers(..) => 4,
            ArchivedPart::Expiries(_) => 5,
            ArchivedPart::Finished(_) => 6,
            ArchivedPart::Failed(..) => 7,
        }
    }
}

/// Writes parts of an image body, one archive at a time.
struct PartWriter<'a> {
    out: &'a mut dyn std::io::Write,
    scratch: rkyv::util::AlignedVec<16>,
    parts: u32,
}

impl PartWriter<'_> {
    fn put(&mut self, part: &Part) -> std::io::Result<()> {
        // The serializer appends: start each part on an empty buffer.
        self.scratch.clear();
        let buffer = std::mem::take(&mut self.scratch);
        self.scratch = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(part, buffer)
            .expect("a part of at most PART_RECORDS_MAX records always serializes");
        let len = self.scratch.len();
        self.out.write_all(&(len as u64).to_le_bytes())?;
        self.out.write_all(&[0u8; 8])?;
        self.out.write_all(&self.scratch)?;
        let padding = len.next_multiple_of(PART_ALIGN) - len;
        self.out.write_all(&[0u8; PART_ALIGN][..padding])?;
        self.parts = self.parts.checked_add(1).expect("parts fit u32");
        Ok(())
    }
}

fn inconsistent(message: impl Into<String>) -> ImageError {
    ImageError::Inconsistent(message.into())
}

impl StateMachine {
    /// Writes a versioned image of the whole state into `out` (cleared first), as parts of
    /// bounded size (see [`Part`]).
    pub fn write_image(&self, out: &mut rkyv::util::AlignedVec<16>) {
        out.clear();
        self.write_image_to(out).expect("writing to memory cannot fail");
    }

    /// Streams the image into `out` part by part: what it holds beyond the state is one part
    /// (at most [`PART_RECORDS_MAX`] records) and the limits and expiries.
    pub fn write_image_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        assert!(!self.in_chain);
        // Transfers in image order: creation evicted first, then the account lists' order.
        let listed: Vec<u32> = self.creation_order.iter().copied().collect();
        let mut order: Vec<u32> = (0..self.transfers.len() as u32)
            .filter(|&i| {
                self.transfers[i as usize].id != 0
                    && self.slot_marks[i as usize] & MARK_CREATION_EVICTED != 0
            })
            .collect();
        order.extend_from_slice(&listed);
        let mut position = vec![u32::MAX; self.transfers.len()];
        for (p, &slot) in order.iter().enumerate() {
            position[slot as usize] = p as u32;
        }
        let mut expiries: Vec<ExpiryImage> = self
            .expiries
            .iter()
            .filter_map(|Reverse((at, id))| {
                let slot = self.live_expiry(*id)?;
                Some(ExpiryImage { expires_at_ns: *at, transfer: position[slot as usize] })
            })
            .collect();
        expiries.sort_unstable_by_key(|e| (e.expires_at_ns, e.transfer));
        expiries.dedup_by_key(|e| (e.expires_at_ns, e.transfer));
        let finished: Vec<ExpiryImage> = self
            .finished
            .iter()
            .map(|&(ts, slot)| ExpiryImage { expires_at_ns: ts, transfer: position[slot as usize] })
            .collect();
        let limits: Vec<AccountLimit> = self
            .accounts
            .iter()
            .zip(&self.account_ext)
            .filter(|(_, ext)| ext.limit_timestamp != 0)
            .map(|(a, ext)| AccountLimit {
                account_id: a.id,
                limit: ext.limit,
                timestamp: ext.limit_timestamp,
                reserved: [0; 24],
            })
            .collect();
        let totals = Totals {
            clock_ns: self.clock_ns,
            accounts: self.accounts.len() as u64,
            limits: limits.len() as u64,
            history_rows: self.account_ext.iter().map(|e| e.history.len() as u64).sum(),
            transfers: order.len() as u64,
            expiries: expiries.len() as u64,
            finished: finished.len() as u64,
            failed: self.failed_order.len() as u64,
            transfers_created: self.transfers_created,
            failed_remembered: self.failed_remembered,
            evicted_through_ns: self.evicted_through_ns,
            evicted_transfers_sum: self.evicted_sums.transfers,
            evicted_failed_sum: self.evicted_sums.failed,
        };
        // The header says how many parts follow, so count them first.
        let parts_of = |n: usize| n.div_ceil(PART_RECORDS_MAX);
        let parts = 1
            + parts_of(self.accounts.len())
            + parts_of(limits.len())
            + self.account_ext.iter().map(|e| parts_of(e.history.len())).sum::<usize>()
            + parts_of(order.len())
            + parts_of(expiries.len())
            + parts_of(finished.len())
            + parts_of(self.failed_order.len());
        let parts = u32::try_from(parts).expect("parts fit u32");
        out.write_all(&IMAGE_MAGIC)?;
        out.write_all(&IMAGE_VERSION.to_le_bytes())?;
        out.write_all(&parts.to_le_bytes())?;
        let mut w = PartWriter { out, scratch: rkyv::util::AlignedVec::new(), parts: 0 };
        w.put(&Part::Meta(totals))?;
        for chunk in self.accounts.chunks(PART_RECORDS_MAX) {
            w.put(&Part::Accounts(chunk.to_vec()))?;
        }
        for chunk in limits.chunks(PART_RECORDS_MAX) {
            w.put(&Part::Limits(chunk.to_vec()))?;
        }
        for (index, ext) in self.account_ext.iter().enumerate() {
            for start in (0..ext.history.len()).step_by(PART_RECORDS_MAX) {
                let end = (start + PART_RECORDS_MAX).min(ext.history.len());
                w.put(&Part::History(HistoryImage {
                    account: index as u32,
                    rows: ext.history.range(start..end).copied().collect(),
                    sides: ext.history_sides.range(start..end).copied().collect(),
                }))?;
            }
        }
        for chunk in order.chunks(PART_RECORDS_MAX) {
            let transfers = chunk.iter().map(|&i| self.transfers[i as usize]).collect();
            let states = chunk
                .iter()
                .map(|&i| self.transfer_states[i as usize] as u8 | self.slot_marks[i as usize] << 4)
                .collect();
            w.put(&Part::Transfers(transfers, states))?;
        }
        for chunk in expiries.chunks(PART_RECORDS_MAX) {
            w.put(&Part::Expiries(chunk.to_vec()))?;
        }
        for chunk in finished.chunks(PART_RECORDS_MAX) {
            w.put(&Part::Finished(chunk.to_vec()))?;
        }
        let failed: Vec<(u64, u32)> = self.failed_order.iter().copied().collect();
        for chunk in failed.chunks(PART_RECORDS_MAX) {
            let records = chunk.iter().map(|&(_, i)| self.failed[i as usize]).collect();
            let timestamps = chunk.iter().map(|&(ts, _)| ts).collect();
            w.put(&Part::Failed(records, timestamps))?;
        }
        assert_eq!(w.parts, parts, "the parts written are the parts counted");
        Ok(())
    }

    /// Validates image bytes (header, each part's framing and bytecheck, order and
    /// consistency, the totals) and rebuilds the state.
    pub fn from_image(bytes: &[u8]) -> Result<Self, ImageError> {
        if bytes.len() < IMAGE_HEADER_SIZE {
            return Err(ImageError::TooShort(bytes.len()));
        }
        let magic: [u8; 8] = bytes[0..8].try_into().expect("8 bytes");
        if magic != IMAGE_MAGIC {
            return Err(ImageError::Magic(magic));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != IMAGE_VERSION {
            return Err(ImageError::Version { found: version, expected: IMAGE_VERSION });
        }
        let parts = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        // The archives need 16-byte alignment; copy if the caller's buffer lacks it.
        let aligned;
        let bytes = if (bytes.as_ptr() as usize).is_multiple_of(PART_ALIGN) {
            bytes
        } else {
            let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            aligned = v;
            &aligned[..]
        };
        let mut loader = Loader::new(bytes.len());
        let mut offset = IMAGE_HEADER_SIZE;
        for part in 0..parts {
            let framing = |reason: &str| ImageError::Length { part, offset, reason: reason.into() };
            let rest = &bytes[offset..];
            if rest.len() < PART_HEADER_SIZE {
                return Err(framing("the part header is cut"));
            }
            let len = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes"));
            if rest[8..PART_HEADER_SIZE] != [0u8; 8] {
                return Err(framing("reserved part header bytes are not zero"));
            }
            let len = usize::try_from(len).map_err(|_| framing("length past the address space"))?;
            let body = &rest[PART_HEADER_SIZE..];
            if len > body.len() || len.next_multiple_of(PART_ALIGN) > body.len() {
                return Err(framing("the archive is cut"));
            }
            let archive = rkyv::access::<ArchivedPart, rkyv::rancor::BoxedError>(&body[..len])
                .map_err(|e| ImageError::Archive { part, reason: e.to_string() })?;
            loader.apply(archive)?;
            offset += PART_HEADER_SIZE + len.next_multiple_of(PART_ALIGN);
        }
        if offset != bytes.len() {
            return Err(ImageError::Length {
                part: parts,
                offset,
                reason: format!("{} bytes after the last part", bytes.len() - offset),
            });
        }
        loader.finish()
    }
}

/// Rebuilds a state from the parts of an image, checking each against what came before.
struct Loader {
    sm: StateMachine,
    totals: Option<Totals>,
    /// Image bytes: no part can hold more records than this, whatever its totals claim.
    image_len: usize,
    rank: u8,
    limits: u64,
    history_rows: u64,
    history_account: u32,
    expiries: Vec<Reverse<(u64, u128)>>,
}

impl Loader {
    fn new(image_len: usize) -> Loader {
        Loader {
            sm: StateMachine::new(),
            totals: None,
            image_len,
            rank: 0,
            limits: 0,
            history_rows: 0,
            history_account: 0,
            expiries: Vec::new(),
        }
    }

    fn apply(&mut self, part: &ArchivedPart) -> Result<(), ImageError> {
        let rank = part.rank();
        match (self.totals.is_some(), rank) {
            (false, 0) => {}
            (false, _) => return Err(inconsistent("the first part is not the totals")),
            (true, 0) => return Err(inconsistent("a second totals part")),
            (true, _) if rank < self.rank => {
                return Err(inconsistent(format!("part kind {rank} after kind {}", self.rank)))
            }
            (true, _) => {}
        }
        self.rank = rank;
        let sm = &mut self.sm;
        match part {
            ArchivedPart::Meta(t) => {
                let t: Totals = rkyv::deserialize::<Totals, rkyv::rancor::Error>(t)
                    .expect("plain integers deserialize");
                // Capacity hints only, bounded by what the bytes can hold.
                let most = |n: u64, size: usize| n.min((self.image_len / size) as u64) as usize;
                *sm = StateMachine::with_capacity(
                    most(t.accounts, Account::SIZE),
                    most(t.transfers, Transfer::SIZE),
                );
                sm.clock_ns = t.clock_ns;
                self.totals = Some(t);
            }
            ArchivedPart::Accounts(accounts) => {
                for (i, a) in accounts.iter().enumerate() {
                    // The index slot of a later account, so that its cache miss overlaps.
                    if let Some(ahead) = accounts.get(i + IMAGE_PREFETCH_AHEAD) {
                        sm.account_index.prefetch(ahead.id.to_native());
                    }
                    let a = Account::from(a);
                    if sm.accounts.len() as u64 >= Capacity::MAX.accounts {
                        return Err(inconsistent("more accounts than an index can hold"));
                    }
                    // One probe: the claim finds a repeated id.
                    let index = sm.accounts.len() as u32;
                    if a.id == 0 || sm.account_index.claim(a.id, index, &sm.accounts).is_err() {
                        return Err(inconsistent(format!("account id {} zero or repeated", a.id)));
                    }
                    sm.accounts.push(a);
                    sm.account_ext.push(AccountExt::default());
                    sm.account_keys.push(0);
                }
            }
            ArchivedPart::Limits(limits) => {
                for l in limits.iter() {
                    let l = AccountLimit::from(l);
                    let index =
                        sm.account_index.get(l.account_id, &sm.accounts).ok_or_else(|| {
                            inconsistent(format!("limit of unknown account {}", l.account_id))
                        })?;
                    if sm.account_ext[index as usize].limit_timestamp != 0 {
                        return Err(inconsistent(format!(
                            "account {} limit repeated",
                            l.account_id
                        )));
                    }
                    sm.apply_limit(index, &l);
                    self.limits += 1;
                }
            }
            ArchivedPart::History(h) => {
                let index = h.account.to_native();
                let ok = (index as usize) < sm.accounts.len()
                    && index >= self.history_account
                    && sm.accounts[index as usize].has(AccountFlags::HISTORY)
                    && h.rows.len() == h.sides.len()
                    && h.sides.iter().all(|s| *s == SIDE_DEBIT || *s == SIDE_CREDIT);
                if !ok {
                    return Err(inconsistent(format!("history of account index {index}")));
                }
                self.history_account = index;
                let ext = &mut sm.account_ext[index as usize];
                ext.history.extend(h.rows.iter().map(|r| AccountBalance {
                    debits_pending: r.debits_pending.to_native(),
                    debits_posted: r.debits_posted.to_native(),
                    credits_pending: r.credits_pending.to_native(),
                    credits_posted: r.credits_posted.to_native(),
                    timestamp: r.timestamp.to_native(),
                    reserved: r.reserved,
                }));
                ext.history_sides.extend(h.sides.iter().copied());
                self.history_rows += h.rows.len() as u64;
            }
            ArchivedPart::Transfers(transfers, states) => {
                if states.len() != transfers.len() {
                    return Err(inconsistent("transfer states and transfers differ in length"));
                }
                for (i, (t, state)) in transfers.iter().zip(states.iter()).enumerate() {
                    // What later transfers need (their id slot, their accounts, the ends of
                    // the accounts' lists), as the batch path warms it: the misses overlap.
                    for (stage, ahead) in WARM_AHEAD_EVENTS.iter().enumerate() {
                        if let Some(later) = transfers.get(i + ahead) {
                            Transfer::warm(sm, &Transfer::from(later), stage);
                        }
                    }
                    let t = Transfer::from(t);
                    let marks = *state >> 4;
                    let state = TransferState::from_u8(*state & 0x0f)
                        .ok_or_else(|| inconsistent(format!("transfer {} state {state}", t.id)))?;
                    let listed = match marks {
                        0 => true,
                        MARK_CREATION_EVICTED if t.has(TransferFlags::PENDING) => false,
                        _ => return Err(inconsistent(format!("transfer {} marks {marks}", t.id))),
                    };
                    if !listed && !sm.creation_order.is_empty() {
                        return Err(inconsistent(format!("transfer {} out of order", t.id)));
                    }
                    let dr = sm.account_index.get(t.debit_account_id, &sm.accounts);
                    let cr = sm.account_index.get(t.credit_account_id, &sm.accounts);
                    let (Some(dr), Some(cr)) = (dr, cr) else {
                        return Err(inconsistent(format!(
                            "transfer {} names unknown accounts",
                            t.id
                        )));
                    };
                    if t.id == 0 || dr == cr {
                        return Err(inconsistent(format!("transfer {} id or accounts", t.id)));
                    }
                    if sm.transfers.len() as u64 >= Capacity::MAX.transfers {
                        return Err(inconsistent("more transfers than an index can hold"));
                    }
                    let index = sm.transfers.len() as u32;
                    if sm.transfer_index.claim(t.id, index, &sm.transfers).is_err() {
                        return Err(inconsistent(format!("transfer id {} repeated", t.id)));
                    }
                    sm.transfers.push(t);
                    sm.transfer_states.push(TransferState::Final);
                    sm.slot_marks.push(marks);
                    sm.set_state(index, state);
                    if listed {
                        sm.creation_order.push_back(index);
                        sm.account_ext[dr as usize].transfers.push_back(index);
                        sm.account_ext[cr as usize].transfers.push_back(index);
                    }
                }
            }
            ArchivedPart::Expiries(expiries) => {
                for e in expiries.iter() {
                    let index = e.transfer.to_native();
                    let ok = (index as usize) < sm.transfers.len()
                        && sm.transfer_states[index as usize] == TransferState::Pending;
                    if !ok {
                        return Err(inconsistent(format!("expiry of transfer index {index}")));
                    }
                    let id = sm.transfers[index as usize].id;
                    self.expiries.push(Reverse((e.expires_at_ns.to_native(), id)));
                }
            }
            ArchivedPart::Finished(finished) => {
                for f in finished.iter() {
                    let (ts, index) = (f.expires_at_ns.to_native(), f.transfer.to_native());
                    let ok = (index as usize) < sm.transfers.len()
                        && !matches!(
                            sm.transfer_states[index as usize],
                            TransferState::Pending | TransferState::Final
                        )
                        && sm.finished.back().is_none_or(|(last, _)| *last < ts)
                        && sm.slot_marks[index as usize] & MARK_FINISH_EVICTED == 0;
                    if !ok {
                        return Err(inconsistent(format!("finished transfer index {index}")));
                    }
                    sm.finished.push_back((ts, index));
                }
            }
            ArchivedPart::Failed(failed, timestamps) => {
                if failed.len() != timestamps.len() {
                    return Err(inconsistent("failed ids and their timestamps differ in length"));
                }
                for (f, ts) in failed.iter().zip(timestamps.iter()) {
                    let ts = ts.to_native();
                    if sm.failed_order.back().is_some_and(|(last, _)| *last > ts) {
                        return Err(inconsistent("failed ids out of order"));
                    }
                    let id = f.id.to_native();
                    let code = ResultCode::from_u32(f.code.to_native())
                        .filter(|c| c.is_transient())
                        .ok_or_else(|| inconsistent(format!("failed id {id} code")))?;
                    if sm.failed_index.contains(id, &sm.failed)
                        || sm.transfer_index.contains(id, &sm.transfers)
                    {
                        return Err(inconsistent(format!("failed id {id} repeated or created")));
                    }
                    if sm.failed.len() as u64 >= Capacity::MAX.failed_ids {
                        return Err(inconsistent("more failed ids than an index can hold"));
                    }
                    sm.remember_failed(FailedId::new(id, code), ts);
                }
            }
        }
        Ok(())
    }

    /// The state, once the parts add up to the totals.
    fn finish(mut self) -> Result<StateMachine, ImageError> {
        let totals = self.totals.ok_or_else(|| inconsistent("no totals part"))?;
        let sm = &self.sm;
        let found = Totals {
            clock_ns: sm.clock_ns,
            accounts: sm.accounts.len() as u64,
            limits: self.limits,
            history_rows: self.history_rows,
            transfers: sm.transfers.len() as u64,
            expiries: self.expiries.len() as u64,
            finished: sm.finished.len() as u64,
            failed: sm.failed.len() as u64,
            // Taken from the totals below, after the checks that they can be right.
            transfers_created: totals.transfers_created,
            failed_remembered: totals.failed_remembered,
            evicted_through_ns: totals.evicted_through_ns,
            evicted_transfers_sum: totals.evicted_transfers_sum,
            evicted_failed_sum: totals.evicted_failed_sum,
        };
        let evicted_fits = totals.transfers_created >= found.transfers
            && totals.failed_remembered >= found.failed
            && totals.evicted_through_ns <= totals.clock_ns;
        if found != totals || !evicted_fits {
            return Err(inconsistent(format!(
                "the parts hold {found:?}, the totals say {totals:?}"
            )));
        }
        self.sm.expiries = BinaryHeap::from(std::mem::take(&mut self.expiries));
        self.sm.transfers_created = totals.transfers_created;
        self.sm.failed_remembered = totals.failed_remembered;
        self.sm.evicted_through_ns = totals.evicted_through_ns;
        self.sm.evicted_sums = StateSums {
            accounts: 0,
            transfers: totals.evicted_transfers_sum,
            failed: totals.evicted_failed_sum,
        };
        self.sm.reset_digest();
        Ok(self.sm)
    }
}
