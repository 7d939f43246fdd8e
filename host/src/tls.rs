//! TLS (wss://) with rustls, from a PEM certificate chain and private key named in the config.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The `[tls]` section: with it, every listener speaks wss:// only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads the certificate and key and builds the acceptor (ring crypto, TLS 1.2 and 1.3).
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls certificate {}", config.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls certificate {}: no certificate in the file",
            config.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .with_context(|| format!("tls key {}", config.key.display()))?;
    // The provider is named, not taken from the process default, so that another crate
    // enabling a second provider cannot make this ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls certificate and key do not fit together")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
