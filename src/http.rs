//! The operator endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! A deliberately small HTTP/1.1 server on its own thread: one request per connection,
//! bounded request size and time, never on the request path of the ledger.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// Longest request head read.
const REQUEST_HEAD_MAX_BYTES: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the shutdown flag.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Serves until `shutdown` is set.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "metrics listener unusable");
        return;
    }
    while !shutdown.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &metrics) {
                    tracing::debug!(error = %e, "metrics request failed");
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

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > REQUEST_HEAD_MAX_BYTES {
            return respond(
                &mut stream,
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
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET\n");
    }
    let ready = metrics.ready.load(Relaxed) == 1;
    let degraded = metrics.degraded.load(Relaxed) == 1;
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &metrics.render())
        }
        "/healthz" if degraded => {
            respond(&mut stream, "503 Service Unavailable", "text/plain", "journal unavailable\n")
        }
        "/healthz" => respond(&mut stream, "200 OK", "text/plain", "ok\n"),
        "/readyz" if ready && !degraded => respond(&mut stream, "200 OK", "text/plain", "ready\n"),
        "/readyz" => respond(&mut stream, "503 Service Unavailable", "text/plain", "not ready\n"),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
