//! The id indexes: compact open-addressing tables from an id to the record's index in one of
//! the state machine's record vectors (`accounts`, `transfers`, `failed`).
//!
//! Each slot is one `u64`: the low 32 bits hold `index + 1` (0 marks an empty slot), the high
//! 32 bits a tag (the low 32 bits of the id's 64-bit hash). The home slot is taken from the
//! hash's top bits, so tag and position are independent: a probe rejects a slot on the tag
//! alone with probability 1 - 2^-32, and the id itself (read from the records) is compared
//! only on a tag match. A lookup of a new id therefore touches one cache line of the table and
//! nothing else, and the table costs 8 bytes per slot (at most 4/3 slots per id) instead of
//! the 33 bytes per bucket of a `HashMap<u128, u32>`.
//!
//! Linear probing, load factor at most 3/4, deletion by backward shift (no tombstones). The
//! keys are not stored: every operation that needs a key reads it through `keys`, the
//! records (`keys[index].id`). An index that is not (yet) in `keys`, like the id
//! `create_transfer` claims before the record is pushed, or whose record has id 0 (a slot
//! freed by eviction, reused by the next record), never compares equal.
//!
//! **Growth never stalls.** When the table passes 3/4 full, a table twice its size is
//! allocated (zeroed lazily by the kernel) and the old one is kept, read-only, beside it;
//! every later insert first moves the next [`MIGRATE_SLOTS`] slots of the old table into the
//! new one. Lookups try the new table, then the old one, where only the slots at or past the
//! migration cursor still count (the ones before it were moved). An entry removed from the
//! part of the old table not yet moved becomes a tombstone there, so that the probes through
//! it stay intact. The old table has at most 3/4 as many entries as the new one has slots, so
//! moving 8 slots per insert ends the migration long before the new table fills: no insert
//! ever rehashes more than a few entries, where doubling in place rehashed millions (hundreds
//! of milliseconds at 10M transfers).

use std::marker::PhantomData;

use crate::event::FailedId;
use crate::types::{Account, Transfer};

/// A record with a u128 id, as the index reads keys from.
pub(super) trait Keyed {
    fn key(&self) -> u128;
}

impl Keyed for Transfer {
    #[inline]
    fn key(&self) -> u128 {
        self.id
    }
}

impl Keyed for Account {
    #[inline]
    fn key(&self) -> u128 {
        self.id
    }
}

impl Keyed for FailedId {
    #[inline]
    fn key(&self) -> u128 {
        self.id
    }
}

/// Smallest table: 16 slots.
const BITS_MIN: u32 = 4;

/// Old-table slots moved into the new table per insert while a migration runs.
const MIGRATE_SLOTS: usize = 8;

/// Most records an index can address: `index + 1` must fit the slot's low 32 bits and differ
/// from a tombstone's.
pub(crate) const RECORDS_MAX: u64 = u32::MAX as u64 - 1;

/// An entry removed from the part of an old table that is not moved yet.
const TOMBSTONE: u64 = u64::MAX;

/// The table being emptied into a new one, twice its size.
struct Migration {
    slots: Vec<u64>,
    bits: u32,
    /// Slots below it were moved (or were empty); from it on, entries still live here.
    cursor: usize,
}

pub(super) struct IdIndex<T> {
    slots: Vec<u64>,
    /// `slots.len() == 1 << bits`.
    bits: u32,
    /// Entries in both tables.
    len: usize,
    old: Option<Migration>,
    /// Slot of the last insert while nothing else changed the table since: removing that
    /// entry again is then a plain clear (the table returns to its exact earlier state).
    last_insert: Option<usize>,
    records: PhantomData<fn(&T)>,
}

#[inline]
fn hash(id: u128) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(id)
}

#[inline]
fn key_of<T: Keyed>(keys: &[T], index: u32) -> Option<u128> {
    // Id 0 marks a slot whose record was evicted (or not written yet): no record.
    keys.get(index as usize).map(Keyed::key).filter(|&id| id != 0)
}

#[inline]
fn home(bits: u32, h: u64) -> usize {
    (h >> (64 - bits)) as usize
}

#[inline]
fn entry_index(s: u64) -> u32 {
    (s as u32).wrapping_sub(1)
}
/// A zeroed slot array. Large ones ask for transparent huge pages: probes land on random
/// slots, and with 4 KiB pages nearly every probe of a big table is a TLB miss (and its first
/// touch a page fault).
fn zeroed_slots(n: usize) -> Vec<u64> {
    let slots = vec![0u64; n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<u64>();
        if bytes >= 2 * HUGE {
            let start = slots.as_ptr() as usize;
            let aligned = (start + HUGE - 1) & !(HUGE - 1);
            let len = (start + bytes - aligned) & !(HUGE - 1);
            // SAFETY: advice on whole pages inside the vector's own allocation; it changes
            // how the kernel backs the memory, never its contents.
            unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        }
    }
    slots
}

/// Hints the CPU to load the cache line at `ptr` (any address: a prefetch never faults).
#[inline]
pub(super) fn prefetch_ptr<P>(ptr: *const P) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Hints the CPU to load the cache lines of `records[index]` (if in bounds).
#[inline]
pub(super) fn prefetch_record<R>(records: &[R], index: usize) {
    if let Some(r) = records.get(index) {
        let ptr = r as *const R as *const u8;
        prefetch_ptr(ptr);
        if std::mem::size_of::<R>() > 64 {
            prefetch_ptr(ptr.wrapping_add(64));
        }
    }
}

impl<T: Keyed> IdIndex<T> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let bits = Self::bits_for(capacity);
        IdIndex {
            slots: zeroed_slots(1 << bits),
            bits,
            len: 0,
            old: None,
            last_insert: None,
            records: PhantomData,
        }
    }

    fn bits_for(capacity: usize) -> u32 {
        // Load factor at most 3/4.
        let slots = capacity.saturating_mul(4) / 3 + 1;
        slots.next_power_of_two().trailing_zeros().max(BITS_MIN)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Hints the CPU to load the cache lines where `id`'s probes start.
    #[inline]
    pub(super) fn prefetch(&self, id: u128) {
        let h = hash(id);
        prefetch_ptr(self.slots.as_ptr().wrapping_add(home(self.bits, h)));
        if let Some(old) = &self.old {
            prefetch_ptr(old.slots.as_ptr().wrapping_add(home(old.bits, h)));
        }
    }

    /// The index of the first entry in `id`'s probes whose tag matches, without reading the
    /// record to confirm it: a guess, good for prefetching only.
    #[inline]
    pub(super) fn guess(&self, id: u128) -> Option<u32> {
        let h = hash(id);
        guess_in(&self.slots, self.bits, h, 0)
            .or_else(|| self.old.as_ref().and_then(|o| guess_in(&o.slots, o.bits, h, o.cursor)))
    }

    /// Slot of the new table holding `id`, or the empty slot where its probe ends.
    #[inline]
    fn find(&self, id: u128, h: u64, keys: &[T]) -> Result<usize, usize> {
        let tag = h as u32;
        let mask = self.mask();
        let mut slot = home(self.bits, h);
        loop {
            let s = self.slots[slot];
            if s == 0 {
                return Err(slot);
            }
            if (s >> 32) as u32 == tag && key_of(keys, entry_index(s)) == Some(id) {
                return Ok(slot);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Slot of the old table holding `id`, if a migration runs and has not moved it yet.
    #[inline]
    fn find_old(&self, id: u128, h: u64, keys: &[T]) -> Option<usize> {
        let old = self.old.as_ref()?;
        let tag = h as u32;
        let mask = old.slots.len() - 1;
        let mut slot = home(old.bits, h);
        loop {
            let s = old.slots[slot];
            if s == 0 {
                return None;
            }
            if s != TOMBSTONE && (s >> 32) as u32 == tag && key_of(keys, entry_index(s)) == Some(id)
            {
                // An id is in the old table at most once; below the cursor it was moved.
                return (slot >= old.cursor).then_some(slot);
            }
            slot = (slot + 1) & mask;
        }
    }

    #[inline]
    pub(super) fn get(&self, id: u128, keys: &[T]) -> Option<u32> {
        let h = hash(id);
        match self.find(id, h, keys) {
            Ok(slot) => Some(entry_index(self.slots[slot])),
            Err(_) => self.get_old(id, h, keys),
        }
    }

    #[inline]
    pub(super) fn contains(&self, id: u128, keys: &[T]) -> bool {
        self.get(id, keys).is_some()
    }

    /// Maps `id` to `index` unless `id` is present: then returns its index and changes nothing.
    /// `keys` must hold every indexed record (all but, at most, `index` itself).
    #[inline]
    pub(super) fn claim(&mut self, id: u128, index: u32, keys: &[T]) -> Result<(), u32> {
        assert!(u64::from(index) < RECORDS_MAX, "records fit the index");
        let h = hash(id);
        let empty = match self.find(id, h, keys) {
            Ok(slot) => return Err(entry_index(self.slots[slot])),
            Err(slot) => slot,
        };
        if let Some(index) = self.get_old(id, h, keys) {
            return Err(index);
        }
        let slot = if self.old.is_none() && (self.len + 1) * 4 <= self.slots.len() * 3 {
            empty
        } else {
            if self.old.is_none() {
                self.start_migration();
            }
            self.migrate(keys, MIGRATE_SLOTS);
            match self.find(id, h, keys) {
                Err(slot) => slot,
                Ok(_) => unreachable!("a migration moves only ids other than this absent one"),
            }
        };
        self.slots[slot] = (u64::from(h as u32) << 32) | u64::from(index + 1);
        self.len += 1;
        self.last_insert = Some(slot);
        assert!(
            self.len * 4 <= self.slots.len() * 3 || self.old.is_none(),
            "a migration ends before its new table fills"
        );
        Ok(())
    }

    fn get_old(&self, id: u128, h: u64, keys: &[T]) -> Option<u32> {
        let slot = self.find_old(id, h, keys)?;
        self.old.as_ref().map(|old| entry_index(old.slots[slot]))
    }

    /// Removes `id` if present; returns whether it was.
    pub(super) fn remove(&mut self, id: u128, keys: &[T]) -> bool {
        let h = hash(id);
        if let Some(slot) = self.last_insert.take() {
            let s = self.slots[slot];
            // The last change was inserting `id` here: undo it exactly.
            if s != 0 && (s >> 32) as u32 == h as u32 && self.holds(s, id, keys) {
                self.slots[slot] = 0;
                self.len -= 1;
                return true;
            }
        }
        let mut hole = match self.find(id, h, keys) {
            Ok(slot) => slot,
            Err(_) => {
                let Some(slot) = self.find_old(id, h, keys) else {
                    return false;
                };
                let old = self.old.as_mut().expect("found in the old table");
                old.slots[slot] = TOMBSTONE;
                self.len -= 1;
                return true;
            }
        };
        // Backward shift: move later entries of the cluster into the hole when their home
        // does not lie cyclically in (hole, slot].
        let mask = self.mask();
        let mut slot = hole;
        loop {
            slot = (slot + 1) & mask;
            let s = self.slots[slot];
            if s == 0 {
                break;
            }
            let key = key_of(keys, entry_index(s)).expect("an indexed id has a record");
            let home = home(self.bits, hash(key));
            let between = if hole <= slot {
                hole < home && home <= slot
            } else {
                hole < home || home <= slot
            };
            if !between {
                self.slots[hole] = s;
                hole = slot;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// Whether slot value `s` is `id`'s entry (its record may not be pushed yet when it is
    /// the last insert, so a missing record with the right tag counts as a match there).
    fn holds(&self, s: u64, id: u128, keys: &[T]) -> bool {
        match key_of(keys, entry_index(s)) {
            Some(key) => key == id,
            None => true,
        }
    }

    /// Puts a table twice the size in place and keeps the full one to be moved over.
    #[cold]
    fn start_migration(&mut self) {
        assert!(self.old.is_none(), "one migration at a time");
        let bits = self.bits + 1;
        let slots = std::mem::replace(&mut self.slots, zeroed_slots(1 << bits));
        self.old = Some(Migration { slots, bits: self.bits, cursor: 0 });
        self.bits = bits;
        self.last_insert = None;
    }

    /// Moves the next `count` slots of the old table into the new one (keys read from
    /// `keys`); drops the old table once all are moved.
    fn migrate(&mut self, keys: &[T], count: usize) {
        let Some(old) = self.old.as_mut() else {
            return;
        };
        self.last_insert = None;
        let end = old.cursor.saturating_add(count).min(old.slots.len());
        // The records of the next step's entries: their keys are needed one insert from now.
        for &s in &old.slots[end..end.saturating_add(count).min(old.slots.len())] {
            if s != 0 && s != TOMBSTONE {
                prefetch_record(keys, entry_index(s) as usize);
            }
        }
        let mask = self.slots.len() - 1;
        for &s in &old.slots[old.cursor..end] {
            if s == 0 || s == TOMBSTONE {
                continue;
            }
            let Some(key) = key_of(keys, entry_index(s)) else {
                // A claim whose record never came (only after a failed replay, whose state
                // is discarded anyway).
                self.len -= 1;
                continue;
            };
            let mut slot = home(self.bits, hash(key));
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = s;
        }
        old.cursor = end;
        if end == old.slots.len() {
            self.old = None;
        }
    }

    /// Where the running migration stands: `(old slots moved, old slots)`.
    #[cfg(test)]
    fn migration(&self) -> Option<(usize, usize)> {
        self.old.as_ref().map(|old| (old.cursor, old.slots.len()))
    }
}

/// As [`IdIndex::guess`], in one table whose slots below `cursor` no longer count.
#[inline]
fn guess_in(slots: &[u64], bits: u32, h: u64, cursor: usize) -> Option<u32> {
    let tag = h as u32;
    let mask = slots.len() - 1;
    let mut slot = home(bits, h);
    for _ in 0..8 {
        let s = slots[slot];
        if s == 0 {
            return None;
        }
        if s != TOMBSTONE && (s >> 32) as u32 == tag && slot >= cursor {
            return Some(entry_index(s));
        }
        slot = (slot + 1) & mask;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn transfer(id: u128) -> Transfer {
        Transfer { id, ..Default::default() }
    }

    #[test]
    fn matches_a_hash_map_through_growth_and_removals() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut keys: Vec<Transfer> = Vec::new();
        let mut index = IdIndex::<Transfer>::with_capacity(0);
        let mut model: HashMap<u128, u32> = HashMap::new();
        let mut removed_while_migrating = 0;
        for round in 0..20_000u32 {
            // Ids from a small range so that re-inserts and misses are frequent.
            let id = u128::from(rng.u32(1..30_000)) << (rng.u32(0..2) * 64);
            match rng.u8(0..10) {
                0..=5 => {
                    let next = keys.len() as u32;
                    let got = index.claim(id, next, &keys);
                    match model.get(&id) {
                        Some(&i) => assert_eq!(got, Err(i)),
                        None => {
                            assert_eq!(got, Ok(()));
                            // Sometimes give the claim back before its record exists.
                            if rng.bool() && round % 3 == 0 {
                                assert!(index.remove(id, &keys));
                            } else {
                                keys.push(transfer(id));
                                model.insert(id, next);
                            }
                        }
                    }
                }
                6..=7 => {
                    // Remove the last record (as a chain rollback does).
                    if let Some(last) = keys.last().copied() {
                        if model.get(&last.id) == Some(&(keys.len() as u32 - 1)) {
                            assert!(index.remove(last.id, &keys));
                            keys.pop();
                            model.remove(&last.id);
                        }
                    }
                }
                _ => {
                    // Remove an arbitrary id (general backward-shift deletion); its record
                    // stays in `keys` as a stale, unindexed record.
                    let migrating = index.migration().is_some();
                    let removed = index.remove(id, &keys);
                    assert_eq!(removed, model.remove(&id).is_some());
                    removed_while_migrating += usize::from(removed && migrating);
                }
            }
            assert_eq!(index.len(), model.len());
            if round % 1000 == 0 {
                for (&id, &i) in &model {
                    assert_eq!(index.get(id, &keys), Some(i));
                }
            }
            assert_eq!(index.get(id, &keys), model.get(&id).copied());
        }
        for (&id, &i) in &model {
            assert_eq!(index.get(id, &keys), Some(i));
        }
        assert!(removed_while_migrating > 10, "removals met migrations: {removed_while_migrating}");
    }

    #[test]
    fn growth_moves_a_few_slots_per_insert_and_ends() {
        let mut keys: Vec<Transfer> = Vec::new();
        let mut index = IdIndex::<Transfer>::with_capacity(0);
        let mut migrations = 0;
        let mut previous: Option<(usize, usize)> = None;
        for n in 0..200_000u128 {
            let id = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1;
            index.claim(id, keys.len() as u32, &keys).unwrap();
            keys.push(transfer(id));
            let now = index.migration();
            match (previous, now) {
                (None, Some((moved, _))) => {
                    migrations += 1;
                    assert!(moved <= MIGRATE_SLOTS, "a migration starts with one step");
                }
                (Some((before, total)), Some((after, total_now))) => {
                    assert_eq!(total, total_now);
                    assert!(after - before <= MIGRATE_SLOTS, "one step per insert");
                }
                (Some((before, total)), None) => {
                    assert!(total - before <= MIGRATE_SLOTS, "the last step ends it");
                }
                (None, None) => {}
            }
            previous = now;
            // Lookups are exact in the middle of a migration, in both tables.
            if n % 997 == 0 {
                for probe in (0..=n).step_by(101) {
                    let probe_id = probe.wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1;
                    assert_eq!(index.get(probe_id, &keys), Some(probe as u32));
                }
                assert_eq!(index.get(u128::MAX - n, &keys), None);
            }
            assert!(index.slots.len() * 3 >= index.len() * 4 || index.migration().is_some());
        }
        assert!(migrations >= 10, "the table grew from 16 slots by migrations: {migrations}");
        assert_eq!(index.len(), keys.len());
    }
}
