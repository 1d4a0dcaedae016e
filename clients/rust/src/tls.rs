//! TLS for the blocking [`crate::Client`] (feature `tls`): rustls with the `ring` provider,
//! TLS 1.3 only, the daemon's certificate checked against CA certificates from a PEM file and
//! against the name the caller expects; optionally a client certificate for daemons that
//! require one (`--tls-client-ca`).
//!
//! TLS wraps the same frames as plain TCP; no ALPN is offered.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::{ClientError, Result};

/// How to speak TLS to one daemon.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub config: Arc<rustls::ClientConfig>,
    /// The name the daemon's certificate must carry (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, path: &Path, error: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!("TLS: {what} {}: {error}", path.display()))
}

impl TlsOptions {
    /// Trusts the CA certificates in `ca_file` (PEM) and expects `server_name` in the
    /// daemon's certificate. `client_identity`: a certificate chain and key (PEM files) to
    /// present when the daemon requires client certificates.
    pub fn new(
        ca_file: &Path,
        server_name: &str,
        client_identity: Option<(&Path, &Path)>,
    ) -> Result<TlsOptions> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| tls_error("reading the CA file", ca_file, e))?
        {
            let cert = cert.map_err(|e| tls_error("parsing the CA file", ca_file, e))?;
            roots.add(cert).map_err(|e| tls_error("a CA certificate in", ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(tls_error("no certificate in", ca_file, "empty"));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Protocol(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match client_identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| tls_error("reading the client certificate", cert, e))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| tls_error("parsing the client certificate", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error("reading the client key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Protocol(format!("TLS: client certificate: {e}")))?
            }
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Protocol(format!("TLS: server name {server_name:?}: {e}")))?;
        Ok(TlsOptions { config: Arc::new(config), server_name })
    }
}

/// Runs the handshake on `stream` (blocking, within its timeouts).
pub(crate) fn connect(
    options: &TlsOptions,
    stream: std::net::TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let connection =
        rustls::ClientConnection::new(Arc::clone(&options.config), options.server_name.clone())
            .map_err(|e| ClientError::Protocol(format!("TLS: {e}")))?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                ClientError::Protocol(format!("TLS handshake: {e}"))
            } else {
                ClientError::Io(e)
            }
        })?;
    }
    Ok(tls)
}
