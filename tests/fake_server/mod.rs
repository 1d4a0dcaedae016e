//! A tiny in-test stand-in for `ledgerd`: loopback only, one thread per connection, a toy
//! in-memory ledger behind a mutex. It follows the wire protocol exactly (that is what the
//! tests exercise) and the ledger rules only as far as the client tests need.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use ledgerd::protocol::{
    decode_ids, encode_create_result, encode_frame, encode_records, frame_begin, frame_finish,
    token_eq, validate_request_body, verify_checksum, ChangeEventsReply, Header, HelloReply,
    HelloRequest, Operation, Status, StatusReply, HEADER_SIZE, PROTOCOL_VERSION,
};
use ledgerd::types::{
    Account, AccountFilter, AccountFilterFlags, AccountLimit, CreateResult, ResultCode, Transfer,
    TransferFlags,
};

#[derive(Default)]
pub struct Ledger {
    pub accounts: BTreeMap<u128, Account>,
    pub transfers: BTreeMap<u128, Transfer>,
    pub limits: BTreeMap<u128, AccountLimit>,
    pub sequence: u64,
    pub clock: u64,
    /// (operation, record count) of every request after hello, in arrival order.
    pub requests: Vec<(u16, usize)>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub ledger: Arc<Mutex<Ledger>>,
}

#[derive(Clone, Default)]
pub struct Config {
    pub token: Option<Vec<u8>>,
    pub requests_in_flight_max: u32,
}

impl FakeServer {
    pub fn start() -> FakeServer {
        FakeServer::start_with(Config { token: None, requests_in_flight_max: 8 })
    }

    pub fn start_with(config: Config) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let shared = ledger.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let ledger = shared.clone();
                let config = config.clone();
                std::thread::spawn(move || serve(stream, &ledger, &config));
            }
        });
        FakeServer { addr, ledger }
    }
}

fn serve(mut stream: TcpStream, ledger: &Mutex<Ledger>, config: &Config) {
    let mut hello_done = false;
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; HEADER_SIZE];
        if stream.read_exact(&mut head).is_err() {
            return;
        }
        out.clear();
        let header = match Header::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                let reply = e.status();
                encode_frame(
                    &mut out,
                    Header::raw_operation(&head),
                    reply,
                    Header::raw_request_id(&head),
                    &[],
                );
                let _ = stream.write_all(&out);
                return;
            }
        };
        let mut body = vec![0u8; header.body_length as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let status = if !verify_checksum(&head, &body) {
            Err(Status::BadChecksum)
        } else {
            match Operation::from_u16(header.operation) {
                None => Err(Status::UnknownOperation),
                Some(op) => {
                    if !hello_done && op != Operation::Hello {
                        Err(Status::HelloRequired)
                    } else if hello_done && op == Operation::Hello {
                        Err(Status::HelloRepeated)
                    } else {
                        validate_request_body(op, &body).and_then(|count| {
                            if op == Operation::Hello {
                                let hello = HelloRequest::decode(&body)?;
                                if hello.version != PROTOCOL_VERSION {
                                    return Err(Status::UnsupportedVersion);
                                }
                                if let Some(token) = &config.token {
                                    if !token_eq(token, &hello.token) {
                                        return Err(Status::AuthFailed);
                                    }
                                }
                                hello_done = true;
                                let start = frame_begin(&mut out);
                                HelloReply {
                                    requests_in_flight_max: config.requests_in_flight_max,
                                    ..Default::default()
                                }
                                .encode(&mut out);
                                frame_finish(&mut out, start, op, Status::Ok, header.request_id);
                                return Ok(());
                            }
                            let mut ledger = ledger.lock().unwrap();
                            ledger.requests.push((op as u16, count));
                            let start = frame_begin(&mut out);
                            ledger.apply(op, &body, &mut out);
                            frame_finish(&mut out, start, op, Status::Ok, header.request_id);
                            Ok(())
                        })
                    }
                }
            }
        };
        if let Err(status) = status {
            out.clear();
            encode_frame(&mut out, header.operation, status, header.request_id, &[]);
            if stream.write_all(&out).is_err() || status.closes_connection() {
                return;
            }
            continue;
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

impl Ledger {
    fn apply(&mut self, op: Operation, body: &[u8], out: &mut Vec<u8>) {
        self.sequence += 1;
        match op {
            Operation::CreateAccounts => {
                for (i, chunk) in body.chunks_exact(128).enumerate() {
                    let a = Account::read_from(chunk);
                    let result = if a.id == 0 {
                        ResultCode::IdMustNotBeZero
                    } else if let Some(existing) = self.accounts.get(&a.id) {
                        if (Account { timestamp: 0, ..*existing }) == a {
                            ResultCode::Exists
                        } else {
                            ResultCode::ExistsWithDifferentFlags
                        }
                    } else {
                        self.clock += 1;
                        self.accounts.insert(a.id, Account { timestamp: self.clock, ..a });
                        ResultCode::Ok
                    };
                    push_result(out, i, result);
                }
            }
            Operation::CreateTransfers => {
                for (i, chunk) in body.chunks_exact(128).enumerate() {
                    let t = Transfer::read_from(chunk);
                    let result = self.transfer(t);
                    push_result(out, i, result);
                }
            }
            Operation::SetAccountLimits => {
                for (i, chunk) in body.chunks_exact(64).enumerate() {
                    let l = AccountLimit::read_from(chunk);
                    let result = if self.accounts.contains_key(&l.account_id) {
                        self.clock += 1;
                        self.limits
                            .insert(l.account_id, AccountLimit { timestamp: self.clock, ..l });
                        ResultCode::Ok
                    } else {
                        ResultCode::AccountNotFound
                    };
                    push_result(out, i, result);
                }
            }
            Operation::LookupAccounts => {
                let found: Vec<Account> =
                    decode_ids(body).filter_map(|id| self.accounts.get(&id).copied()).collect();
                encode_records(out, &found);
            }
            Operation::LookupTransfers => {
                let found: Vec<Transfer> =
                    decode_ids(body).filter_map(|id| self.transfers.get(&id).copied()).collect();
                encode_records(out, &found);
            }
            Operation::LookupAccountLimits => {
                let found: Vec<AccountLimit> =
                    decode_ids(body).filter_map(|id| self.limits.get(&id).copied()).collect();
                encode_records(out, &found);
            }
            Operation::GetAccountTransfers => {
                let f = AccountFilter::read_from(body);
                let found: Vec<Transfer> = self
                    .transfers
                    .values()
                    .filter(|t| {
                        (f.flags & AccountFilterFlags::DEBITS != 0
                            && t.debit_account_id == f.account_id)
                            || (f.flags & AccountFilterFlags::CREDITS != 0
                                && t.credit_account_id == f.account_id)
                    })
                    .take(f.limit as usize)
                    .copied()
                    .collect();
                encode_records(out, &found);
            }
            Operation::GetAccountBalances => {}
            Operation::ChangeEvents => {
                ChangeEventsReply::encode_prefix(out, self.sequence, 0, 0, self.sequence);
            }
            Operation::Status => StatusReply {
                sequence: self.sequence,
                state_hash: 0xabc,
                accounts: self.accounts.len() as u64,
                transfers: self.transfers.len() as u64,
                ..Default::default()
            }
            .encode(out),
            Operation::Hello => unreachable!(),
        }
    }

    fn transfer(&mut self, t: Transfer) -> ResultCode {
        if t.id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if self.transfers.contains_key(&t.id) {
            return ResultCode::Exists;
        }
        if !self.accounts.contains_key(&t.debit_account_id) {
            return ResultCode::DebitAccountNotFound;
        }
        if !self.accounts.contains_key(&t.credit_account_id) {
            return ResultCode::CreditAccountNotFound;
        }
        let pending = t.flags & TransferFlags::PENDING != 0;
        let debit = self.accounts.get_mut(&t.debit_account_id).unwrap();
        if pending {
            debit.debits_pending += t.amount;
        } else {
            debit.debits_posted += t.amount;
        }
        let credit = self.accounts.get_mut(&t.credit_account_id).unwrap();
        if pending {
            credit.credits_pending += t.amount;
        } else {
            credit.credits_posted += t.amount;
        }
        self.clock += 1;
        self.transfers.insert(t.id, Transfer { timestamp: self.clock, ..t });
        ResultCode::Ok
    }
}

fn push_result(out: &mut Vec<u8>, index: usize, result: ResultCode) {
    if result != ResultCode::Ok {
        encode_create_result(out, &CreateResult { index: index as u32, result });
    }
}
