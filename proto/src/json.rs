//! JSON mapping of records and replies, shared by the `ledger` command-line client (tables,
//! `--json`, `exec`) and the replay tool's exports.
//!
//! Field names are exactly those of SPEC §3 and `crate::types`. Integers stay exact: u128
//! fields are written and read as JSON integers (never through floats). Flags are arrays of snake_case names. Omitted input fields are 0; unknown fields
//! are an error. This module knows records and JSON, nothing about sockets.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::protocol::{ChangeEvent, ChangeEventKind, ChangeEventsReply, Status, StatusReply};
use crate::types::{
    Account, AccountBalance, AccountFlags, AccountLimit, CreateResult, ResultCode, Transfer,
    TransferFlags,
};

// ---- u128 and flags ----

/// Reads a u128 from a JSON integer, exactly, up to 2^128 - 1.
pub fn de_u128<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u128;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a non-negative integer below 2^128, or a decimal string of one")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
            Ok(v.into())
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<u128, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u128, E> {
            u128::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<u128, E> {
            u128::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u128, E> {
            Err(E::custom(format!("{v} is not an exact integer (write it without a fraction or exponent, or as a string)")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
            v.parse::<u128>().map_err(|e| E::custom(format!("{v:?}: {e}")))
        }
    }
    // serde_json reads the digits straight into a u128 here; `deserialize_any` would go
    // through f64 above 2^64 and lose precision.
    d.deserialize_u128(V)
}

/// Reads a list of ids, each as [`de_u128`] does.
pub fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u128>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "de_u128")] u128);
    Ok(Vec::<Id>::deserialize(d)?.into_iter().map(|id| id.0).collect())
}

/// Flags as JSON: an array of names (or, for tests and tools, the raw bits as an integer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagsJson {
    Names(Vec<String>),
    Bits(u32),
}

impl Default for FlagsJson {
    fn default() -> Self {
        FlagsJson::Names(Vec::new())
    }
}

impl FlagsJson {
    /// The names of the bits set in `bits`; a bit without a name is written as its number.
    pub fn from_bits<T: Copy + Into<u32>>(bits: T, names: &[(&str, T)]) -> FlagsJson {
        let bits: u32 = bits.into();
        let mut out: Vec<String> = names
            .iter()
            .filter(|(_, bit)| bits & (*bit).into() != 0)
            .map(|(name, _)| name.to_string())
            .collect();
        let known = names.iter().fold(0u32, |acc, (_, bit)| acc | (*bit).into());
        if bits & !known != 0 {
            out.push(format!("0x{:x}", bits & !known));
        }
        FlagsJson::Names(out)
    }

    /// The bits; an unknown name is an error (unknown raw bits pass, for the daemon to refuse).
    pub fn to_bits<T: Copy + Into<u32>>(&self, names: &[(&str, T)]) -> Result<u32, String> {
        match self {
            FlagsJson::Bits(b) => Ok(*b),
            FlagsJson::Names(list) => list.iter().try_fold(0u32, |acc, name| {
                names
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, bit)| acc | (*bit).into())
                    .ok_or_else(|| {
                        let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                        format!("unknown flag {name:?} (known: {})", known.join(", "))
                    })
            }),
        }
    }
}

/// Parses a comma-separated flag list (the CLI's `--flags a,b`).
pub fn parse_flag_list<T: Copy + Into<u32>>(
    list: &str,
    names: &[(&str, T)],
) -> Result<u32, String> {
    let names_list =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    FlagsJson::Names(names_list).to_bits(names)
}

fn narrow<T: TryFrom<u32>>(bits: u32, what: &str) -> Result<T, String> {
    T::try_from(bits).map_err(|_| format!("{what} flags 0x{bits:x} do not fit"))
}

// ---- records ----

/// An [`Account`] as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountJson {
    #[serde(deserialize_with = "de_u128")]
    pub id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub debits_pending: u128,
    #[serde(deserialize_with = "de_u128")]
    pub debits_posted: u128,
    #[serde(deserialize_with = "de_u128")]
    pub credits_pending: u128,
    #[serde(deserialize_with = "de_u128")]
    pub credits_posted: u128,
    #[serde(deserialize_with = "de_u128")]
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub reserved: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: FlagsJson,
    pub timestamp: u64,
}

impl AccountJson {
    pub fn from_account(a: &Account) -> AccountJson {
        AccountJson {
            id: a.id,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
            user_data_128: a.user_data_128,
            user_data_64: a.user_data_64,
            user_data_32: a.user_data_32,
            reserved: a.reserved,
            ledger: a.ledger,
            code: a.code,
            flags: FlagsJson::from_bits(a.flags, &AccountFlags::NAMES),
            timestamp: a.timestamp,
        }
    }

    pub fn to_account(&self) -> Result<Account, String> {
        Ok(Account {
            id: self.id,
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
            user_data_128: self.user_data_128,
            user_data_64: self.user_data_64,
            user_data_32: self.user_data_32,
            reserved: self.reserved,
            ledger: self.ledger,
            code: self.code,
            flags: narrow(self.flags.to_bits(&AccountFlags::NAMES)?, "account")?,
            timestamp: self.timestamp,
        })
    }
}

/// A [`Transfer`] as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferJson {
    #[serde(deserialize_with = "de_u128")]
    pub id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub debit_account_id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub credit_account_id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub amount: u128,
    #[serde(deserialize_with = "de_u128")]
    pub pending_id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: FlagsJson,
    pub timestamp: u64,
}

impl TransferJson {
    pub fn from_transfer(t: &Transfer) -> TransferJson {
        TransferJson {
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount: t.amount,
            pending_id: t.pending_id,
            user_data_128: t.user_data_128,
            user_data_64: t.user_data_64,
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: FlagsJson::from_bits(t.flags, &TransferFlags::NAMES),
            timestamp: t.timestamp,
        }
    }

    pub fn to_transfer(&self) -> Result<Transfer, String> {
        Ok(Transfer {
            id: self.id,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount,
            pending_id: self.pending_id,
            user_data_128: self.user_data_128,
            user_data_64: self.user_data_64,
            user_data_32: self.user_data_32,
            timeout: self.timeout,
            ledger: self.ledger,
            code: self.code,
            flags: narrow(self.flags.to_bits(&TransferFlags::NAMES)?, "transfer")?,
            timestamp: self.timestamp,
        })
    }
}

/// An [`AccountLimit`] as JSON (`reserved` is always zero and not mapped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountLimitJson {
    #[serde(deserialize_with = "de_u128")]
    pub account_id: u128,
    #[serde(deserialize_with = "de_u128")]
    pub limit: u128,
    pub timestamp: u64,
}

impl AccountLimitJson {
    pub fn from_limit(l: &AccountLimit) -> Self {
        AccountLimitJson { account_id: l.account_id, limit: l.limit, timestamp: l.timestamp }
    }
    pub fn to_limit(&self) -> AccountLimit {
        AccountLimit {
            account_id: self.account_id,
            limit: self.limit,
            timestamp: self.timestamp,
            reserved: [0; 24],
        }
    }
}

/// An [`AccountBalance`] row as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccountBalanceJson {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub timestamp: u64,
}

impl AccountBalanceJson {
    pub fn from_balance(b: &AccountBalance) -> Self {
        AccountBalanceJson {
            debits_pending: b.debits_pending,
            debits_posted: b.debits_posted,
            credits_pending: b.credits_pending,
            credits_posted: b.credits_posted,
            timestamp: b.timestamp,
        }
    }
}

/// One create result; `result` is the code's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateResultJson {
    pub index: u32,
    pub result: &'static str,
}

/// A create reply (failures only) expanded to one result per event, `ok` included.
pub fn expand_results(event_count: usize, failed: &[CreateResult]) -> Vec<CreateResultJson> {
    let mut failed = failed.iter().peekable();
    (0..event_count)
        .map(|i| {
            let result = match failed.next_if(|r| r.index as usize == i) {
                Some(r) => r.result,
                None => ResultCode::Ok,
            };
            CreateResultJson { index: i as u32, result: result.name() }
        })
        .collect()
}

/// The `status` reply as JSON: `state_hash` as 32 lowercase hex digits.
#[derive(Clone, Debug, Serialize)]
pub struct StatusJson {
    pub sequence: u64,
    pub snapshot_sequence: u64,
    pub state_hash: String,
    pub accounts: u64,
    pub transfers: u64,
    pub pending_transfers: u64,
    pub failed_ids: u64,
    pub account_limits: u64,
    pub clock_ns: u64,
    pub uptime_ns: u64,
    pub connections: u32,
    /// `standalone`, `follower`, `candidate` or `leader`.
    pub role: &'static str,
    pub replica: u8,
    pub term: u64,
    pub commit: u64,
    /// The leader's position in the cluster; `null` when unknown or standalone.
    pub leader: Option<u32>,
}

impl StatusJson {
    pub fn from_status(s: &StatusReply) -> Self {
        StatusJson {
            sequence: s.sequence,
            snapshot_sequence: s.snapshot_sequence,
            state_hash: format!("{:032x}", s.state_hash),
            accounts: s.accounts,
            transfers: s.transfers,
            pending_transfers: s.pending_transfers,
            failed_ids: s.failed_ids,
            account_limits: s.account_limits,
            clock_ns: s.clock_ns,
            uptime_ns: s.uptime_ns,
            connections: s.connections,
            role: s.role.name(),
            replica: s.replica,
            term: s.term,
            commit: s.commit,
            leader: (s.leader != crate::protocol::LEADER_UNKNOWN).then_some(s.leader),
        }
    }
}

/// One change event as JSON; only the parts its kind uses are present.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeEventJson {
    pub sequence: u64,
    pub index: u32,
    pub kind: &'static str,
    pub timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debit_account: Option<AccountJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_account: Option<AccountJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<AccountLimitJson>,
}

impl ChangeEventJson {
    pub fn from_event(e: &ChangeEvent) -> Self {
        use ChangeEventKind as K;
        let is_transfer = !matches!(e.kind, K::AccountCreated | K::LimitSet);
        ChangeEventJson {
            sequence: e.sequence,
            index: e.index,
            kind: e.kind.name(),
            timestamp: e.timestamp,
            transfer: is_transfer.then(|| TransferJson::from_transfer(&e.transfer)),
            account: (!is_transfer).then(|| AccountJson::from_account(&e.debit_account)),
            debit_account: is_transfer.then(|| AccountJson::from_account(&e.debit_account)),
            credit_account: is_transfer.then(|| AccountJson::from_account(&e.credit_account)),
            limit: (e.kind == K::LimitSet).then(|| AccountLimitJson::from_limit(&e.limit)),
        }
    }
}

/// The `change_events` reply as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeEventsJson {
    pub next_sequence: u64,
    pub next_index: u32,
    pub head_sequence: u64,
    pub events: Vec<ChangeEventJson>,
}

impl ChangeEventsJson {
    pub fn from_reply(r: &ChangeEventsReply) -> Self {
        ChangeEventsJson {
            next_sequence: r.next_sequence,
            next_index: r.next_index,
            head_sequence: r.head_sequence,
            events: r.events.iter().map(ChangeEventJson::from_event).collect(),
        }
    }
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

/// `{"error": message}` (plus `"status"` when the daemon refused the request).
pub fn error_line(message: &str, status: Option<Status>) -> String {
    serde_json::to_string(&ErrorJson { error: message, status: status.map(Status::name) })
        .expect("strings serialize")
}
