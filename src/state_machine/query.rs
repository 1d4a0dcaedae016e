//! Read-only queries: lookups by id and the account filters. Nothing here changes state.
//! Records no longer in memory come from the request's [`super::ColdHits`]: lookups fall back
//! to it, and the account filters merge its page with the records in memory by timestamp.

use super::{StateMachine, QUERY_RESULTS_MAX, SIDE_CREDIT, SIDE_DEBIT};
use crate::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, AccountLimit,
    Transfer, ID_INVALID_MAX,
};

/// A validated account filter: inclusive timestamp bounds, sides, order and the effective
/// limit. The one place the filter rules live: the disk index applies them too, so that a page
/// merged from memory and disk is the page memory alone would give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterScan {
    pub min: u64,
    pub max: u64,
    pub debits: bool,
    pub credits: bool,
    pub reversed: bool,
    pub limit: usize,
}

impl FilterScan {
    /// `None` for an invalid filter (which gives nothing).
    pub fn of(f: &AccountFilter) -> Option<FilterScan> {
        if f.account_id == 0 || f.account_id == ID_INVALID_MAX {
            return None;
        }
        if f.flags & !AccountFilterFlags::ALL != 0 || f.reserved != [0; 24] || f.limit == 0 {
            return None;
        }
        let debits = f.flags & AccountFilterFlags::DEBITS != 0;
        let credits = f.flags & AccountFilterFlags::CREDITS != 0;
        if !debits && !credits {
            return None;
        }
        let max = if f.timestamp_max == 0 { u64::MAX } else { f.timestamp_max };
        if f.timestamp_min > max {
            return None;
        }
        Some(FilterScan {
            min: f.timestamp_min,
            max,
            debits,
            credits,
            reversed: f.flags & AccountFilterFlags::REVERSED != 0,
            limit: (f.limit as usize).min(QUERY_RESULTS_MAX),
        })
    }
}

impl StateMachine {
    /// The accounts found, in request order (ids not found are skipped).
    pub fn lookup_accounts(&self, ids: &[u128], out: &mut Vec<Account>) {
        out.clear();
        out.extend(ids.iter().filter_map(|id| self.account(*id)).copied());
    }

    /// The transfers found, in request order (ids not found are skipped).
    pub fn lookup_transfers(&self, ids: &[u128], out: &mut Vec<Transfer>) {
        out.clear();
        out.extend(ids.iter().filter_map(|id| self.transfer_anywhere(*id)).map(|(t, _)| t));
    }

    /// The current limit of each account found, in request order: `limit` 0 and `timestamp`
    /// 0 for an account whose limit was never set.
    pub fn lookup_account_limits(&self, ids: &[u128], out: &mut Vec<AccountLimit>) {
        out.clear();
        for id in ids {
            if let Some(index) = self.account_index.get(*id, &self.accounts) {
                let ext = &self.account_ext[index as usize];
                out.push(AccountLimit {
                    account_id: *id,
                    limit: ext.limit,
                    timestamp: ext.limit_timestamp,
                    reserved: [0; 24],
                });
            }
        }
    }

    /// The account's transfers within the filter's timestamp range, on the chosen sides,
    /// oldest first (newest first with `REVERSED`), at most `limit` (capped at
    /// [`QUERY_RESULTS_MAX`]). An invalid filter or an unknown account gives nothing.
    pub fn get_account_transfers(&self, filter: &AccountFilter, out: &mut Vec<Transfer>) {
        out.clear();
        let Some((account, scan)) = self.scan(filter) else {
            return;
        };
        let list = &self.account_ext[account as usize].transfers;
        let ts = |i: &u32| self.transfers[*i as usize].timestamp;
        let lo = list.partition_point(|i| ts(i) < scan.min);
        let hi = list.partition_point(|i| ts(i) <= scan.max);
        let account_id = filter.account_id;
        let wanted = |i: &&u32| {
            let t = &self.transfers[**i as usize];
            (scan.debits && t.debit_account_id == account_id)
                || (scan.credits && t.credit_account_id == account_id)
        };
        let found = |i: &u32| self.transfers[*i as usize];
        let range = list.range(lo..hi.max(lo));
        if scan.reversed {
            out.extend(range.rev().filter(wanted).take(scan.limit).map(found));
        } else {
            out.extend(range.filter(wanted).take(scan.limit).map(found));
        }
        merge_cold(out, &self.cold.account_transfers, |t| t.timestamp, &scan);
    }

    /// The balance history rows of a `history` account, filtered like
    /// [`StateMachine::get_account_transfers`]. Other accounts give nothing.
    pub fn get_account_balances(&self, filter: &AccountFilter, out: &mut Vec<AccountBalance>) {
        out.clear();
        let Some((account, scan)) = self.scan(filter) else {
            return;
        };
        if !self.accounts[account as usize].has(AccountFlags::HISTORY) {
            return;
        }
        let ext = &self.account_ext[account as usize];
        let lo = ext.history.partition_point(|row| row.timestamp < scan.min);
        let hi = ext.history.partition_point(|row| row.timestamp <= scan.max);
        let wanted = |i: &usize| {
            let side = ext.history_sides[*i];
            (scan.debits && side == SIDE_DEBIT) || (scan.credits && side == SIDE_CREDIT)
        };
        let range = lo..hi.max(lo);
        let found = |i: usize| ext.history[i];
        if scan.reversed {
            out.extend(range.rev().filter(wanted).take(scan.limit).map(found));
        } else {
            out.extend(range.filter(wanted).take(scan.limit).map(found));
        }
        merge_cold(out, &self.cold.account_balances, |row| row.timestamp, &scan);
    }

    /// The validated filter and the account's index, if it exists.
    fn scan(&self, f: &AccountFilter) -> Option<(u32, FilterScan)> {
        let scan = FilterScan::of(f)?;
        Some((self.account_index.get(f.account_id, &self.accounts)?, scan))
    }
}

/// Merges a filter's page from memory (`out`) with its page from the disk index (`cold`), both
/// in the filter's order: the first `limit` records of the union, one per timestamp (a record
/// can be in both while it waits for eviction). Allocates only when there is a cold page.
fn merge_cold<T: Copy>(out: &mut Vec<T>, cold: &[T], ts: impl Fn(&T) -> u64, scan: &FilterScan) {
    if cold.is_empty() {
        return;
    }
    let hot = std::mem::take(out);
    out.reserve(scan.limit.min(hot.len() + cold.len()));
    let (mut h, mut c) = (0, 0);
    // `first(a, b)`: whether a comes before b in the filter's order.
    let first = |a: u64, b: u64| if scan.reversed { a > b } else { a < b };
    while out.len() < scan.limit && (h < hot.len() || c < cold.len()) {
        let next = match (hot.get(h), cold.get(c)) {
            (Some(x), Some(y)) if ts(x) == ts(y) => {
                c += 1;
                h += 1;
                *x
            }
            (Some(x), Some(y)) if first(ts(y), ts(x)) => {
                c += 1;
                *y
            }
            (Some(x), _) => {
                h += 1;
                *x
            }
            (None, Some(y)) => {
                c += 1;
                *y
            }
            (None, None) => unreachable!("the loop condition"),
        };
        debug_assert!(out.last().is_none_or(|p| first(ts(p), ts(&next))));
        out.push(next);
    }
}
