//! Snapshot images of the whole state, and the state hash.
//!
//! Image bytes: a 16-byte header (`magic@0 [u8; 8] = "LDGIMAGE"`, `version@8 u32 LE`,
//! `body_len@12 u32 LE`), then the rkyv archive of [`Image`] (root at its end). The body is
//! validated with bytecheck and then checked for consistency before the state is rebuilt.
//! Id indexes and per-account transfer lists are rebuilt from the record vectors (they are a
//! pure function of them), so the image stays small and cannot disagree with itself.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{AccountExt, StateMachine, TransferState, SIDE_CREDIT, SIDE_DEBIT};
use crate::event::FailedId;
use crate::types::{Account, AccountBalance, AccountFlags, AccountLimit, ResultCode, Transfer};

/// Version of the image body layout; bump on any change to [`Image`].
pub const IMAGE_VERSION: u32 = 1;

const IMAGE_MAGIC: [u8; 8] = *b"LDGIMAGE";
const IMAGE_HEADER_SIZE: usize = 16;

/// Why image bytes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("image magic is {0:02x?}, not LDGIMAGE")]
    Magic([u8; 8]),
    #[error("image version {found}, this build reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("image body length {header} in the header, {actual} bytes present")]
    Length { header: usize, actual: usize },
    #[error("image body failed validation: {0}")]
    Archive(String),
    #[error("image is inconsistent: {0}")]
    Inconsistent(String),
}

/// The balance history of one `history` account.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct HistoryImage {
    account: u32,
    rows: Vec<AccountBalance>,
    sides: Vec<u8>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ExpiryImage {
    expires_at_ns: u64,
    transfer: u32,
}

/// The whole state, in canonical (insertion) order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Image {
    clock_ns: u64,
    accounts: Vec<Account>,
    /// Limits that were set, one per account at most.
    limits: Vec<AccountLimit>,
    history: Vec<HistoryImage>,
    transfers: Vec<Transfer>,
    /// [`TransferState`] of each transfer.
    transfer_states: Vec<u8>,
    /// Live expiry entries, in expiry order.
    expiries: Vec<ExpiryImage>,
    failed: Vec<FailedId>,
}

fn inconsistent(message: impl Into<String>) -> ImageError {
    ImageError::Inconsistent(message.into())
}

impl StateMachine {
    /// A hash of the canonical ledger contents: accounts (with balances and limits), transfers
    /// and their pending status, and the failed-id memory, in insertion order. The clock,
    /// scratch space and derived indexes do not enter it, so reads, `exists` retries, replay
    /// and snapshot images all leave it unchanged.
    pub fn state_hash(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"ledgerd.state.v1");
        h.update(&(self.accounts.len() as u64).to_le_bytes());
        for (a, ext) in self.accounts.iter().zip(&self.account_ext) {
            h.update(&a.to_bytes());
            h.update(&ext.limit.to_le_bytes());
            h.update(&ext.limit_timestamp.to_le_bytes());
        }
        h.update(&(self.transfers.len() as u64).to_le_bytes());
        for (t, state) in self.transfers.iter().zip(&self.transfer_states) {
            h.update(&t.to_bytes());
            h.update(&[*state as u8]);
        }
        h.update(&(self.failed.len() as u64).to_le_bytes());
        for f in &self.failed {
            h.update(&f.id.to_le_bytes());
            h.update(&f.code.to_le_bytes());
        }
        h.digest128()
    }

    /// Writes a versioned image of the whole state into `out` (cleared first).
    pub fn write_image(&self, out: &mut rkyv::util::AlignedVec<16>) {
        assert!(!self.in_chain);
        let mut expiries: Vec<ExpiryImage> = self
            .expiries
            .iter()
            .filter(|Reverse((_, i))| self.transfer_states[*i as usize] == TransferState::Pending)
            .map(|Reverse((at, i))| ExpiryImage { expires_at_ns: *at, transfer: *i })
            .collect();
        expiries.sort_unstable_by_key(|e| (e.expires_at_ns, e.transfer));
        let mut limits = Vec::new();
        let mut history = Vec::new();
        for (index, (a, ext)) in self.accounts.iter().zip(&self.account_ext).enumerate() {
            if ext.limit_timestamp != 0 {
                limits.push(AccountLimit {
                    account_id: a.id,
                    limit: ext.limit,
                    timestamp: ext.limit_timestamp,
                    reserved: [0; 24],
                });
            }
            if !ext.history.is_empty() {
                history.push(HistoryImage {
                    account: index as u32,
                    rows: ext.history.clone(),
                    sides: ext.history_sides.clone(),
                });
            }
        }
        let image = Image {
            clock_ns: self.clock_ns,
            accounts: self.accounts.clone(),
            limits,
            history,
            transfers: self.transfers.clone(),
            transfer_states: self.transfer_states.iter().map(|s| *s as u8).collect(),
            expiries,
            failed: self.failed.clone(),
        };
        out.clear();
        out.extend_from_slice(&IMAGE_MAGIC);
        out.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let buffer = std::mem::take(out);
        *out = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&image, buffer)
            .expect("an image always serializes");
        let body_len = u32::try_from(out.len() - IMAGE_HEADER_SIZE).expect("image body < 4 GiB");
        out[12..16].copy_from_slice(&body_len.to_le_bytes());
    }

    /// Validates image bytes (header, bytecheck, consistency) and rebuilds the state.
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
        let body_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
        let body = &bytes[IMAGE_HEADER_SIZE..];
        if body_len != body.len() {
            return Err(ImageError::Length { header: body_len, actual: body.len() });
        }
        // The archive needs 16-byte alignment; copy if the caller's buffer lacks it.
        let aligned;
        let body = if (body.as_ptr() as usize).is_multiple_of(16) {
            body
        } else {
            let mut v = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
            v.extend_from_slice(body);
            aligned = v;
            &aligned[..]
        };
        let image = rkyv::access::<ArchivedImage, rkyv::rancor::BoxedError>(body)
            .map_err(|e| ImageError::Archive(e.to_string()))?;
        Self::rebuild(image)
    }

    fn rebuild(image: &ArchivedImage) -> Result<Self, ImageError> {
        let mut sm = StateMachine::with_capacity(image.accounts.len(), image.transfers.len());
        sm.clock_ns = image.clock_ns.to_native();
        for a in image.accounts.iter() {
            let a = Account::from(a);
            if a.id == 0 || sm.account_index.contains(a.id, &sm.accounts) {
                return Err(inconsistent(format!("account id {} zero or repeated", a.id)));
            }
            let claimed = sm.account_index.claim(a.id, sm.accounts.len() as u32, &sm.accounts);
            debug_assert!(claimed.is_ok());
            sm.accounts.push(a);
            sm.account_ext.push(AccountExt::default());
        }
        for l in image.limits.iter() {
            let l = AccountLimit::from(l);
            let index = sm.account_index.get(l.account_id, &sm.accounts).ok_or_else(|| {
                inconsistent(format!("limit of unknown account {}", l.account_id))
            })?;
            sm.apply_limit(index, &l);
        }
        for h in image.history.iter() {
            let index = h.account.to_native() as usize;
            let ok = index < sm.accounts.len()
                && sm.accounts[index].has(AccountFlags::HISTORY)
                && h.rows.len() == h.sides.len()
                && h.sides.iter().all(|s| *s == SIDE_DEBIT || *s == SIDE_CREDIT);
            if !ok {
                return Err(inconsistent(format!("history of account index {index}")));
            }
            let ext = &mut sm.account_ext[index];
            ext.history.extend(h.rows.iter().map(|r| AccountBalance {
                debits_pending: r.debits_pending.to_native(),
                debits_posted: r.debits_posted.to_native(),
                credits_pending: r.credits_pending.to_native(),
                credits_posted: r.credits_posted.to_native(),
                timestamp: r.timestamp.to_native(),
                reserved: r.reserved,
            }));
            ext.history_sides.extend(h.sides.iter().copied());
        }
        if image.transfer_states.len() != image.transfers.len() {
            return Err(inconsistent("transfer states and transfers differ in length"));
        }
        for (t, state) in image.transfers.iter().zip(image.transfer_states.iter()) {
            let t = Transfer::from(t);
            let state = TransferState::from_u8(*state)
                .ok_or_else(|| inconsistent(format!("transfer {} state {state}", t.id)))?;
            let dr = sm.account_index.get(t.debit_account_id, &sm.accounts);
            let cr = sm.account_index.get(t.credit_account_id, &sm.accounts);
            let (Some(dr), Some(cr)) = (dr, cr) else {
                return Err(inconsistent(format!("transfer {} names unknown accounts", t.id)));
            };
            if t.id == 0 || dr == cr || sm.transfer_index.contains(t.id, &sm.transfers) {
                return Err(inconsistent(format!("transfer {} id or accounts", t.id)));
            }
            let index = sm.transfers.len() as u32;
            let claimed = sm.transfer_index.claim(t.id, index, &sm.transfers);
            debug_assert!(claimed.is_ok());
            sm.transfers.push(t);
            sm.transfer_states.push(TransferState::Final);
            sm.set_state(index, state);
            sm.account_ext[dr as usize].transfers.push(index);
            sm.account_ext[cr as usize].transfers.push(index);
        }
        let mut expiries = Vec::with_capacity(image.expiries.len());
        for e in image.expiries.iter() {
            let index = e.transfer.to_native();
            let ok = (index as usize) < sm.transfers.len()
                && sm.transfer_states[index as usize] == TransferState::Pending;
            if !ok {
                return Err(inconsistent(format!("expiry of transfer index {index}")));
            }
            expiries.push(Reverse((e.expires_at_ns.to_native(), index)));
        }
        sm.expiries = BinaryHeap::from(expiries);
        for f in image.failed.iter() {
            let id = f.id.to_native();
            let code = ResultCode::from_u32(f.code.to_native())
                .filter(|c| c.is_transient())
                .ok_or_else(|| inconsistent(format!("failed id {id} code")))?;
            if sm.failed_index.contains(id, &sm.failed)
                || sm.transfer_index.contains(id, &sm.transfers)
            {
                return Err(inconsistent(format!("failed id {id} repeated or created")));
            }
            sm.remember_failed(FailedId::new(id, code));
        }
        Ok(sm)
    }
}
