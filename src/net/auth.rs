//! Who may do what: tokens and their roles, the listening policy checked at start, and the
//! per-address throttling of failed hellos.
//!
//! Knows tokens, roles and peer addresses; never the ledger state. Token comparison is in
//! constant time and always looks at every configured token, so the time a hello takes says
//! nothing about which token came close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::protocol::{self, Operation};

/// Shortest token accepted without `--insecure`: 32 bytes, what
/// `head -c 32 /dev/urandom | base64` gives as 44 characters.
pub const TOKEN_MIN_BYTES: usize = 32;
/// Most tokens in one token file.
pub const TOKENS_MAX: usize = 64;
/// Largest token file read.
pub const TOKEN_FILE_MAX_BYTES: usize = 64 * 1024;

/// What a connection may do, fixed by the token its hello presented. Each role allows what
/// the one before it allows, and more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `status`, lookups, `get_account_transfers`, `get_account_balances`.
    ReadOnly,
    /// Read-only, plus `change_events` (follow every change of the ledger).
    Follower,
    /// Everything: also `create_accounts`, `create_transfers`, `set_account_limits`.
    ReadWrite,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::ReadOnly, Role::Follower, Role::ReadWrite];

    /// The name used in token files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Follower => "follower",
            Role::ReadWrite => "read-write",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The least role that may run `operation`.
    pub fn needed_for(operation: Operation) -> Role {
        match operation {
            Operation::CreateAccounts
            | Operation::CreateTransfers
            | Operation::SetAccountLimits => Role::ReadWrite,
            Operation::ChangeEvents => Role::Follower,
            Operation::Hello
            | Operation::LookupAccounts
            | Operation::LookupTransfers
            | Operation::LookupAccountLimits
            | Operation::GetAccountTransfers
            | Operation::GetAccountBalances
            | Operation::Status => Role::ReadOnly,
        }
    }

    pub fn allows(self, operation: Operation) -> bool {
        self >= Role::needed_for(operation)
    }
}

/// The tokens a daemon accepts, each with its role. Empty: no authentication (every
/// connection is `read-write`), allowed on loopback or with `--insecure` only.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Role, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        let roles: Vec<&str> = self.entries.iter().map(|(r, _)| r.name()).collect();
        f.debug_struct("Tokens").field("roles", &roles).finish()
    }
}

impl Tokens {
    /// Parses a token file.
    ///
    /// Either one line holding one token (no blank inside; the historical format, role
    /// `read-write`), or lines `ROLE TOKEN` with ROLE one of `read-only`, `follower`,
    /// `read-write`. Blank lines and lines starting with `#` are ignored; a trailing `\r` is
    /// cut. A token is 1..=256 bytes without blanks; the same token twice is an error.
    pub fn parse(text: &[u8]) -> Result<Tokens, String> {
        if text.len() > TOKEN_FILE_MAX_BYTES {
            return Err(format!("longer than {TOKEN_FILE_MAX_BYTES} bytes"));
        }
        let lines: Vec<(usize, &[u8])> = text
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_ascii()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with(b"#"))
            .collect();
        let mut entries: Vec<(Role, Vec<u8>)> = Vec::new();
        let single = lines.len() == 1 && !lines[0].1.iter().any(u8::is_ascii_whitespace);
        for (number, line) in lines {
            let (role, token) = if single {
                (Role::ReadWrite, line)
            } else {
                let split = line.iter().position(u8::is_ascii_whitespace).ok_or_else(|| {
                    format!("line {number}: expected \"ROLE TOKEN\" (roles: read-only, follower, read-write)")
                })?;
                let role = std::str::from_utf8(&line[..split])
                    .ok()
                    .and_then(Role::from_name)
                    .ok_or_else(|| {
                        format!("line {number}: unknown role (read-only, follower or read-write)")
                    })?;
                (role, line[split..].trim_ascii())
            };
            if token.iter().any(u8::is_ascii_whitespace) {
                return Err(format!("line {number}: a token cannot contain blanks"));
            }
            if token.is_empty() || token.len() > protocol::HELLO_TOKEN_MAX {
                return Err(format!(
                    "line {number}: a token is 1..={} bytes",
                    protocol::HELLO_TOKEN_MAX
                ));
            }
            if entries.iter().any(|(_, t)| t == token) {
                return Err(format!("line {number}: the same token appears twice"));
            }
            entries.push((role, token.to_vec()));
        }
        if entries.is_empty() {
            return Err("no token in the file".into());
        }
        if entries.len() > TOKENS_MAX {
            return Err(format!("more than {TOKENS_MAX} tokens"));
        }
        Ok(Tokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shortest token's length.
    pub fn shortest(&self) -> Option<usize> {
        self.entries.iter().map(|(_, t)| t.len()).min()
    }

    /// The role of `presented`, or `None` when it matches no token. With no tokens
    /// configured, everyone is `read-write`. Compares with every token, in constant time
    /// each, whatever matches first.
    /// The first read-write token of the file: the one replicas present to each other.
    pub fn first_read_write(&self) -> Option<&[u8]> {
        self.entries.iter().find(|(role, _)| *role == Role::ReadWrite).map(|(_, t)| t.as_slice())
    }

    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        if self.entries.is_empty() {
            return Some(Role::ReadWrite);
        }
        let mut found = None;
        for (role, token) in &self.entries {
            if protocol::token_eq(token, presented) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Refuses the combinations that would expose the ledger: a non-loopback address without a
/// token, and tokens shorter than [`TOKEN_MIN_BYTES`], unless the operator said `--insecure`.
/// Returns the warnings to log when `insecure` let something through.
pub fn check_listen_policy(
    listen: SocketAddr,
    tokens: &Tokens,
    tls: bool,
    insecure: bool,
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    if tokens.is_empty() && !listen.ip().is_loopback() {
        let message = format!(
            "refusing to listen on {listen} without a token: anyone who can reach it could \
             move money. Give --auth-token-file FILE (generate a token with \
             `head -c 32 /dev/urandom | base64`), listen on a loopback address, or pass \
             --insecure to accept unauthenticated clients"
        );
        if !insecure {
            return Err(message);
        }
        warnings.push(format!("--insecure: listening on {listen} without a token"));
    }
    if let Some(shortest) = tokens.shortest().filter(|&n| n < TOKEN_MIN_BYTES) {
        let message = format!(
            "an auth token is {shortest} bytes; at least {TOKEN_MIN_BYTES} are required \
             (generate one with `head -c 32 /dev/urandom | base64`), or pass --insecure"
        );
        if !insecure {
            return Err(message);
        }
        warnings.push(format!("--insecure: an auth token is only {shortest} bytes"));
    }
    if !tokens.is_empty() && !tls && !listen.ip().is_loopback() {
        warnings.push(format!(
            "tokens travel in clear text on {listen}: give --tls-cert and --tls-key, or keep \
             the network private"
        ));
    }
    Ok(warnings)
}

/// Failed hellos from one address before it is throttled.
pub const AUTH_FAILURES_BEFORE_THROTTLE: u32 = 5;
/// The first throttle window; each further failure doubles it, up to the maximum.
pub const AUTH_THROTTLE_FIRST: Duration = Duration::from_secs(1);
pub const AUTH_THROTTLE_MAX: Duration = Duration::from_secs(60);
/// An address with no failure for this long is forgotten.
pub const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Most addresses remembered; past it the entries closest to expiry are forgotten first.
pub const AUTH_ADDRESSES_MAX: usize = 16_384;

struct Failures {
    count: u32,
    last: Instant,
    throttled_until: Option<Instant>,
}

/// Failed hellos per peer address: after [`AUTH_FAILURES_BEFORE_THROTTLE`] failures, hellos
/// from the address are refused with `auth_throttled` (without looking at the token) for a
/// window that doubles with every further failure, from 1 s to 60 s. A successful hello
/// forgets the address.
#[derive(Default)]
pub struct Throttle {
    addresses: HashMap<IpAddr, Failures>,
}

impl Throttle {
    /// Whether hellos from `ip` are refused right now.
    pub fn is_throttled(&self, ip: IpAddr, now: Instant) -> bool {
        self.addresses.get(&ip).and_then(|f| f.throttled_until).is_some_and(|until| now < until)
    }

    /// Records a hello with a wrong or missing token; returns whether the address is
    /// throttled now. (A hello refused while throttled is not a failure: its token was not
    /// looked at, so it taught the peer nothing.)
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.addresses.len() >= AUTH_ADDRESSES_MAX && !self.addresses.contains_key(&ip) {
            self.forget_old(now);
            if self.addresses.len() >= AUTH_ADDRESSES_MAX {
                // Keep the table bounded: forget the address whose window ends first.
                if let Some(victim) = self
                    .addresses
                    .iter()
                    .min_by_key(|(_, f)| f.throttled_until.unwrap_or(f.last))
                    .map(|(ip, _)| *ip)
                {
                    self.addresses.remove(&victim);
                }
            }
        }
        let entry = self.addresses.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            throttled_until: None,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= AUTH_FAILURES_BEFORE_THROTTLE {
            let doublings = (entry.count - AUTH_FAILURES_BEFORE_THROTTLE).min(16);
            let window = AUTH_THROTTLE_FIRST.saturating_mul(1 << doublings).min(AUTH_THROTTLE_MAX);
            entry.throttled_until = Some(now + window);
            true
        } else {
            false
        }
    }

    pub fn succeeded(&mut self, ip: IpAddr) {
        self.addresses.remove(&ip);
    }

    /// Drops addresses with no failure for [`AUTH_FAILURE_MEMORY`] and no window running.
    pub fn forget_old(&mut self, now: Instant) {
        self.addresses.retain(|_, f| {
            f.throttled_until.is_some_and(|until| now < until)
                || now.duration_since(f.last) < AUTH_FAILURE_MEMORY
        });
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_single_and_with_roles() {
        let single = Tokens::parse(b"0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(single.role_of(b"0123456789abcdef0123456789abcdef"), Some(Role::ReadWrite));
        assert_eq!(single.role_of(b"0123456789abcdef0123456789abcdeX"), None);
        assert_eq!(single.role_of(b""), None);

        let roles = Tokens::parse(
            b"# comment\nread-only  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\nread-write bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nfollower cccccccccccccccccccccccccccccccc\n",
        )
        .unwrap();
        assert_eq!(roles.role_of(&[b'a'; 32]), Some(Role::ReadOnly));
        assert_eq!(roles.role_of(&[b'b'; 32]), Some(Role::ReadWrite));
        assert_eq!(roles.role_of(&[b'c'; 32]), Some(Role::Follower));
        assert_eq!(roles.shortest(), Some(32));

        assert!(Tokens::parse(b"").is_err());
        assert!(Tokens::parse(b"admin x\n").is_err());
        assert!(Tokens::parse(b"read-only x\nread-write x\n").is_err());
        assert!(Tokens::parse(b"read-only a b\n").is_err());
        assert!(Tokens::parse(&[b'x'; 300]).is_err());
        assert_eq!(Tokens::default().role_of(b"anything"), Some(Role::ReadWrite));
    }

    #[test]
    fn roles_allow_what_they_should() {
        assert!(Role::ReadOnly.allows(Operation::LookupAccounts));
        assert!(Role::ReadOnly.allows(Operation::Status));
        assert!(!Role::ReadOnly.allows(Operation::ChangeEvents));
        assert!(!Role::ReadOnly.allows(Operation::CreateTransfers));
        assert!(Role::Follower.allows(Operation::ChangeEvents));
        assert!(!Role::Follower.allows(Operation::SetAccountLimits));
        for op in Operation::ALL {
            assert!(Role::ReadWrite.allows(*op));
        }
    }

    #[test]
    fn listen_policy() {
        let any: SocketAddr = "0.0.0.0:7400".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        let none = Tokens::default();
        let short = Tokens::parse(b"short").unwrap();
        let long = Tokens::parse(&[b'k'; 32]).unwrap();
        assert!(check_listen_policy(lo, &none, false, false).unwrap().is_empty());
        assert!(check_listen_policy(any, &none, false, false).unwrap_err().contains("--insecure"));
        assert_eq!(check_listen_policy(any, &none, false, true).unwrap().len(), 1);
        assert!(check_listen_policy(lo, &short, false, false).is_err());
        assert!(check_listen_policy(lo, &short, false, true).is_ok());
        assert!(check_listen_policy(any, &long, true, false).unwrap().is_empty());
        assert_eq!(check_listen_policy(any, &long, false, false).unwrap().len(), 1);
    }

    #[test]
    fn throttle_after_failures_doubles_and_forgets() {
        let mut t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..AUTH_FAILURES_BEFORE_THROTTLE - 1 {
            assert!(!t.failed(ip, now));
        }
        assert!(!t.is_throttled(ip, now));
        assert!(t.failed(ip, now));
        assert!(t.is_throttled(ip, now));
        assert!(!t.is_throttled(ip, now + AUTH_THROTTLE_FIRST));
        t.failed(ip, now);
        assert!(t.is_throttled(ip, now + AUTH_THROTTLE_FIRST));
        assert!(!t.is_throttled(ip, now + AUTH_THROTTLE_FIRST * 2));
        for _ in 0..40 {
            t.failed(ip, now);
        }
        assert!(t.is_throttled(ip, now + AUTH_THROTTLE_MAX - Duration::from_millis(1)));
        assert!(!t.is_throttled(ip, now + AUTH_THROTTLE_MAX));
        t.succeeded(ip);
        assert!(!t.is_throttled(ip, now));
        t.failed(ip, now);
        t.forget_old(now + AUTH_FAILURE_MEMORY);
        assert!(t.is_empty());
    }
}
