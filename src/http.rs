//! The operator endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! A deliberately small HTTP/1.1 server: one request per connection, each connection on its
//! own short-lived thread (at most `HTTP_CONNECTIONS_MAX` at once), each with a deadline for
//! the whole exchange, so a slow client (a byte a second) holds one thread for at most
//! `REQUEST_DEADLINE` and never blocks `/healthz` for the others. Never on the request path
//! of the ledger: it only reads relaxed atomics.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Longest request head read.
const REQUEST_HEAD_MAX_BYTES: usize = 8 * 1024;
/// Time a client gets for the whole exchange: sending its request and reading the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed at once (a scraper retries).
pub const HTTP_CONNECTIONS_MAX: usize = 8;
/// How often the accept loop looks at the shutdown flag.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Serves until `shutdown` is set.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "metrics listener unusable");
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Relaxed) >= HTTP_CONNECTIONS_MAX {
                    tracing::debug!("operator endpoint busy; connection closed");
                    continue;
                }
                active.fetch_add(1, Relaxed);
                let (metrics, done) = (Arc::clone(&metrics), Arc::clone(&active));
                let spawned =
                    std::thread::Builder::new().name("ledgerd-http-conn".into()).spawn(move || {
                        if let Err(e) = answer(stream, &metrics) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                        done.fetch_sub(1, Relaxed);
                    });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Relaxed);
                    tracing::warn!(error = %e, "could not start an operator endpoint thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL_INTERVAL)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(ACCEPT_POLL_INTERVAL);
            }
        }
    }
}

/// Time left before `deadline`, as a socket timeout (never zero, which would mean "none").
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request deadline passed"));
    }
    Ok(left)
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    stream.set_nonblocking(false)?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        // Each read may wait only for what is left of the whole request's time.
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > REQUEST_HEAD_MAX_BYTES {
            return respond(
                &mut stream,
                deadline,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            );
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(
            &mut stream,
            deadline,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        );
    }
    let ready = metrics.ready.load(Relaxed) == 1;
    let problem = metrics.health_problem();
    // A cluster member serves its role only as a leader that may serve, or as a follower that
    // knows its leader (and sends clients there); healthy either way.
    let unready = problem.clone().or_else(|| {
        (metrics.replica.load(Relaxed) == 1 && metrics.replica_ready.load(Relaxed) == 0)
            .then(|| "no leader known to this replica (an election, or no quorum)\n".to_string())
    });
    let text = "text/plain";
    let unavailable = "503 Service Unavailable";
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            respond(&mut stream, deadline, "200 OK", "text/plain; version=0.0.4", &metrics.render())
        }
        "/healthz" => match problem {
            Some(problem) => respond(&mut stream, deadline, unavailable, text, &problem),
            None => respond(&mut stream, deadline, "200 OK", text, "ok\n"),
        },
        "/readyz" => match (ready, unready) {
            (true, None) => respond(&mut stream, deadline, "200 OK", text, "ready\n"),
            (false, _) => respond(
                &mut stream,
                deadline,
                unavailable,
                text,
                "not ready: starting or stopping\n",
            ),
            (true, Some(problem)) => {
                respond(&mut stream, deadline, unavailable, text, &format!("not ready: {problem}"))
            }
        },
        _ => respond(
            &mut stream,
            deadline,
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(left(deadline)?))?;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
