//! The reads both business threads answer from the state (a single daemon's and a cluster
//! member's): lookups and account queries, with the scratch buffers they reuse.

use crate::protocol::{self, Operation};
use crate::state_machine::StateMachine;
use crate::types::{Account, AccountBalance, AccountFilter, AccountLimit, Transfer};

/// Buffers reused from request to request: the hot path does not allocate once warm.
#[derive(Default)]
pub struct Scratch {
    pub accounts: Vec<Account>,
    pub transfers: Vec<Transfer>,
    pub limits: Vec<AccountLimit>,
    pub ids: Vec<u128>,
    pub balances: Vec<AccountBalance>,
}

impl Scratch {
    /// Decodes a batch body the network layer validated into `out`.
    pub fn decode<R: protocol::Record>(body: &[u8], out: &mut Vec<R>) {
        out.clear();
        protocol::decode_records(body, out).expect("validated by the network layer");
    }
}

/// Answers the read `operation` (a lookup, `get_account_transfers` or
/// `get_account_balances`) from `state` into `out` (cleared first).
pub fn answer(
    state: &StateMachine,
    operation: Operation,
    body: &[u8],
    s: &mut Scratch,
    out: &mut Vec<u8>,
) {
    out.clear();
    let filter = || AccountFilter::read_from(&body[..AccountFilter::SIZE]);
    let ids = |s: &mut Scratch| {
        s.ids.clear();
        s.ids.extend(protocol::decode_ids(body));
    };
    match operation {
        Operation::LookupAccounts => {
            ids(s);
            state.lookup_accounts(&s.ids, &mut s.accounts);
            protocol::encode_records(out, &s.accounts);
        }
        Operation::LookupTransfers => {
            ids(s);
            state.lookup_transfers(&s.ids, &mut s.transfers);
            protocol::encode_records(out, &s.transfers);
        }
        Operation::LookupAccountLimits => {
            ids(s);
            state.lookup_account_limits(&s.ids, &mut s.limits);
            protocol::encode_records(out, &s.limits);
        }
        Operation::GetAccountTransfers => {
            state.get_account_transfers(&filter(), &mut s.transfers);
            protocol::encode_records(out, &s.transfers);
        }
        Operation::GetAccountBalances => {
            state.get_account_balances(&filter(), &mut s.balances);
            protocol::encode_records(out, &s.balances);
        }
        other => unreachable!("{} is not a read of the state", other.name()),
    }
}
