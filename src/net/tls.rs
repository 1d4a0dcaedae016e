//! TLS on the client port: rustls with the `ring` provider, TLS 1.3 only, certificate and key
//! from PEM files, client certificates required when a client CA is given. TLS wraps the
//! same frames; there is no ALPN (the port speaks one protocol).
//!
//! Loads files at start; the handshake itself runs in the network threads (`conn.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every TLS config of the daemon uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration from PEM files: `cert` (the chain, leaf first), `key`
/// (PKCS#8, PKCS#1 or SEC1), and optionally `client_ca` (clients must then present a
/// certificate that chains to one of its certificates).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key {}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading the TLS client CA {}", path.display()))?
            {
                let ca = ca.with_context(|| format!("parsing {}", path.display()))?;
                roots.add(ca).with_context(|| format!("a CA certificate in {}", path.display()))?;
            }
            anyhow::ensure!(!roots.is_empty(), "no certificate in {}", path.display());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    Ok(Arc::new(config))
}
